//! The ldap3 handle behind the instrumented wrapper: every request Roster makes to the site's
//! directory goes through these methods, each named by the operation it serves. A result code
//! the caller expects (noSuchObject for a read of what may not exist …) counts as a success.

use std::collections::HashSet;

use ldap3::result::{LdapResult, Result, SearchResult};
use ldap3::{Ldap, Mod, Scope};

use crate::backend::call;

const LDAP: &str = "ldap";

/// Whether an answer is a success: result code 0 or one of `expected`.
fn ok(r: &Result<LdapResult>, expected: &[u32]) -> bool {
    matches!(r, Ok(r) if r.rc == 0 || expected.contains(&r.rc))
}

pub struct Conn(pub(super) Ldap);

impl Conn {
    pub async fn bind(&mut self, dn: &str, password: &str) -> Result<LdapResult> {
        call(LDAP, "bind", self.0.simple_bind(dn, password), |r| {
            ok(r, &[])
        })
        .await
    }

    pub async fn search(
        &mut self,
        operation: &str,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: Vec<&str>,
    ) -> Result<SearchResult> {
        call(
            LDAP,
            operation,
            self.0.search(base, scope, filter, attrs),
            |r| matches!(r, Ok(s) if s.1.rc == 0 || s.1.rc == 32),
        )
        .await
    }

    pub async fn add(
        &mut self,
        operation: &str,
        dn: &str,
        attrs: Vec<(&str, HashSet<&str>)>,
        expected: &[u32],
    ) -> Result<LdapResult> {
        call(LDAP, operation, self.0.add(dn, attrs), |r| ok(r, expected)).await
    }

    pub async fn modify(
        &mut self,
        operation: &str,
        dn: &str,
        mods: Vec<Mod<&str>>,
        expected: &[u32],
    ) -> Result<LdapResult> {
        call(LDAP, operation, self.0.modify(dn, mods), |r| {
            ok(r, expected)
        })
        .await
    }

    pub async fn delete(&mut self, operation: &str, dn: &str) -> Result<LdapResult> {
        // An entry already gone is fine (a purge interrupted earlier).
        call(LDAP, operation, self.0.delete(dn), |r| ok(r, &[32])).await
    }

    /// The raw handle, for the one paged search of the observation (which wraps itself whole).
    pub(super) fn raw(&mut self) -> &mut Ldap {
        &mut self.0
    }
}
