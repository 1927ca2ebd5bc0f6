//! Bulk observation of the directory: one paged subtree search for every POSIX account and
//! group, tombstone and counter below the base DN. Never one search per object.

use std::collections::BTreeMap;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Scope, SearchEntry};

use super::{Directory, DirectoryError};
use crate::plan::directory::{Entry, Observed};

/// The attributes Roster reads; `pwdAccountLockedTime` is operational and must be named.
pub const OBSERVED_ATTRS: &[&str] = &[
    "objectClass",
    "uid",
    "cn",
    "sn",
    "givenName",
    "displayName",
    "mail",
    "o",
    "ou",
    "telephoneNumber",
    "uidNumber",
    "gidNumber",
    "homeDirectory",
    "loginShell",
    "sshPublicKey",
    "shadowExpire",
    "memberUid",
    "description",
    "pwdAccountLockedTime",
    "rosterOwner",
    "rosterState",
    "rosterDeactivatedAt",
    "rosterPurgeAt",
    "rosterGoneAt",
    "rosterDeactivateAt",
    "rosterSourceUID",
    "rosterRecordUID",
    "rosterIdentity",
    "rosterKind",
    "rosterAdopted",
    "rosterCounterValue",
    "rosterSlurmAccount",
    "rosterNoticeSent",
    "createTimestamp",
    // Which version of an entry a reading holds, and which entry (a DN taken again is another
    // entry): a change feed's late message never replaces a newer reading (`crate::ldap::feed`).
    "entryCSN",
    "entryUUID",
];

/// The filter of everything Roster reads from the directory.
pub const OBSERVED_FILTER: &str = "(|(objectClass=posixAccount)(objectClass=posixGroup)(objectClass=rosterTombstone)(objectClass=rosterCounter))";

/// An entry as Roster keeps it: attribute names lower-cased; binary-looking values (not UTF-8)
/// kept lossily (Roster never writes such values).
pub(super) fn entry(se: SearchEntry) -> Entry {
    let mut attrs: BTreeMap<String, Vec<String>> = se
        .attrs
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    for (k, vs) in se.bin_attrs {
        attrs.entry(k.to_ascii_lowercase()).or_default().extend(
            vs.into_iter()
                .map(|v| String::from_utf8_lossy(&v).into_owned()),
        );
    }
    Entry { dn: se.dn, attrs }
}

impl Directory {
    /// Reads everything below `base` in one paged search (one instrumented call, `observe`).
    pub async fn observe(
        &mut self,
        base: &str,
        page_size: i32,
    ) -> Result<Observed, DirectoryError> {
        crate::backend::call(
            "ldap",
            "observe",
            self.observe_all(base, page_size),
            Result::is_ok,
        )
        .await
    }

    async fn observe_all(
        &mut self,
        base: &str,
        page_size: i32,
    ) -> Result<Observed, DirectoryError> {
        let filter = OBSERVED_FILTER;
        let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
            Box::new(EntriesOnly::new()),
            Box::new(PagedResults::new(page_size)),
        ];
        let uri = self.uri.clone();
        let unreachable = |e: ldap3::LdapError| DirectoryError::Unreachable {
            uri: uri.clone(),
            message: e.to_string(),
        };
        let mut stream = self
            .ldap
            .raw()
            .streaming_search_with(
                adapters,
                base,
                Scope::Subtree,
                filter,
                OBSERVED_ATTRS.to_vec(),
            )
            .await
            .map_err(unreachable)?;
        let mut observed = Observed::default();
        while let Some(raw) = stream.next().await.map_err(unreachable)? {
            observed.file(entry(SearchEntry::construct(raw)));
        }
        let result = stream.finish().await;
        match result.rc {
            0 => Ok(observed),
            32 => Err(DirectoryError::MissingContainers {
                missing: vec![base.to_string()],
            }),
            rc => Err(DirectoryError::Operation {
                operation: "search",
                dn: base.to_string(),
                message: format!("result code {rc}: {}", result.text),
            }),
        }
    }
}

impl Directory {
    /// Reads the entries at `dns` again into `observed` (one base search each: an entry gone,
    /// or no longer one Roster reads, is removed), and, with `counters`, every counter in that
    /// container (one search): what a pass wrote, at the cost of what it wrote, instead of
    /// the whole directory. False when a name held twice is involved: observe afresh then.
    pub async fn reread(
        &mut self,
        observed: &mut Observed,
        dns: &[&str],
        counters: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        let mut exact = true;
        for &dn in dns {
            match self.read_observed(dn, Scope::Base, OBSERVED_FILTER).await? {
                Some(mut found) => match found.pop() {
                    Some(e) => exact &= observed.refile(e),
                    None => exact &= observed.unfile(dn),
                },
                None => exact &= observed.unfile(dn),
            }
        }
        if let Some(container) = counters {
            let below = format!(",{}", container.to_ascii_lowercase());
            let found = self
                .read_observed(container, Scope::OneLevel, "(objectClass=rosterCounter)")
                .await?
                .unwrap_or_default();
            observed
                .counters
                .retain(|_, e| !e.dn.to_ascii_lowercase().ends_with(&below));
            for e in found {
                exact &= observed.file(e);
            }
        }
        Ok(exact)
    }

    /// The observed entries of one search; `None` when its base does not exist.
    async fn read_observed(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
    ) -> Result<Option<Vec<Entry>>, DirectoryError> {
        let ldap3::SearchResult(entries, result) = self
            .ldap
            .search("reread", base, scope, filter, OBSERVED_ATTRS.to_vec())
            .await
            .map_err(|e| DirectoryError::Unreachable {
                uri: self.uri.clone(),
                message: e.to_string(),
            })?;
        match result.rc {
            0 => Ok(Some(
                entries
                    .into_iter()
                    .map(|e| entry(SearchEntry::construct(e)))
                    .collect(),
            )),
            32 => Ok(None),
            rc => Err(DirectoryError::Operation {
                operation: "reread",
                dn: base.to_string(),
                message: format!("result code {rc}: {}", result.text),
            }),
        }
    }
}
