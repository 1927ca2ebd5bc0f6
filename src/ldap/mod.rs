//! The directory: Roster's schema, connecting (with verified TLS), and the start-up checks.
//! The LDAP backend proper (observe/apply) builds on this.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};

use crate::config::{Config, ConfigError, TlsMode};

pub mod apply;
mod backend;
mod conn;
pub use backend::{Ldap, SiteInput};
pub mod feed;
pub mod observe;
pub use crate::plan::directory::{Entry, Observed, Owner};
pub use apply::ApplyReport;

/// Roster's own schema (DESIGN.md §5.1) in cn=config form.
pub const ROSTER_SCHEMA: &str = include_str!("schema/roster.ldif");
/// The openssh-lpk schema (`ldapPublicKey`, `sshPublicKey`), which Debian's slapd lacks.
pub const OPENSSH_LPK_SCHEMA: &str = include_str!("schema/openssh-lpk.ldif");

/// Standard classes Roster writes besides its own.
const STANDARD_CLASSES: &[&str] = &[
    "inetOrgPerson",
    "posixAccount",
    "shadowAccount",
    "posixGroup",
    "ldapPublicKey",
];

/// The schema text `roster ldap-schema` prints.
pub fn schema_ldif(with_openssh_lpk: bool) -> String {
    let mut out = String::new();
    if with_openssh_lpk {
        out.push_str(OPENSSH_LPK_SCHEMA);
        out.push('\n');
    }
    out.push_str(ROSTER_SCHEMA);
    out
}

/// Names declared (`NAME '…'`) in a schema text: Roster's attribute types and object classes.
pub fn declared_names(schema: &str) -> Vec<String> {
    // Undo LDIF line folding first, then pick every NAME '…'.
    let unfolded = schema.replace("\n ", "");
    unfolded
        .split("NAME '")
        .skip(1)
        .filter_map(|rest| rest.split('\'').next())
        .map(str::to_string)
        .collect()
}

/// Why talking to the directory failed.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("cannot reach the directory at {uri}: {message}")]
    Unreachable { uri: String, message: String },
    #[error("the directory refused the bind as {dn}: {message}")]
    Bind { dn: String, message: String },
    #[error("TLS to {uri}: {message}")]
    Tls { uri: String, message: String },
    #[error(
        "the directory lacks Roster's LDAP schema (missing: {}); print it with `roster ldap-schema` and load it, e.g. `roster ldap-schema | ldapadd -Y EXTERNAL -H ldapi:///` (an outdated one: replace its olcAttributeTypes and olcObjectClasses in cn=config with ldapmodify)",
        .missing.join(", ")
    )]
    SchemaMissing { missing: Vec<String> },
    #[error("the directory has no entry {}: create {} (Roster keeps its entries there)", .missing.join(", "), if .missing.len() == 1 { "it" } else { "them" })]
    MissingContainers { missing: Vec<String> },
    #[error("{operation} on {dn} failed: {message}")]
    Operation {
        operation: &'static str,
        dn: String,
        message: String,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// A bound connection to the directory.
pub struct Directory {
    ldap: conn::Conn,
    pub uri: String,
}

impl Directory {
    /// Connects and binds as configured. The password is read here and kept nowhere else.
    pub async fn connect(config: &Config) -> Result<Directory, DirectoryError> {
        let uri = config.ldap.uri.clone();
        let timeout = Duration::from_secs(config.ldap.timeout_seconds);
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(timeout)
            .set_starttls(config.ldap.tls.mode == TlsMode::StartTls);
        if let Some(ca) = &config.ldap.tls.ca_file {
            let tls = tls_config(&config.resolve(ca)).map_err(|message| DirectoryError::Tls {
                uri: uri.clone(),
                message,
            })?;
            settings = settings.set_config(tls);
        }
        let password = config.bind_password()?;
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &uri)
            .await
            .map_err(|e| connect_error(config, &uri, e))?;
        ldap3::drive!(conn);
        ldap.with_timeout(timeout);
        let mut ldap = conn::Conn(ldap);
        let bind = ldap
            .bind(&config.ldap.bind_dn, &password)
            .await
            .map_err(|e| DirectoryError::Unreachable {
                uri: uri.clone(),
                message: e.to_string(),
            })?;
        if bind.rc != 0 {
            let message = if bind.rc == 49 {
                "invalid credentials (wrong bind DN or password, or the account is locked)"
                    .to_string()
            } else {
                format!("result code {}: {}", bind.rc, bind.text)
            };
            return Err(DirectoryError::Bind {
                dn: config.ldap.bind_dn.clone(),
                message,
            });
        }
        Ok(Directory { ldap, uri })
    }

    /// Names of every object class and attribute type the directory knows, lower-cased.
    pub async fn schema_names(&mut self) -> Result<BTreeSet<String>, DirectoryError> {
        Ok(self.schema().await?.0)
    }

    /// Every name the directory's schema knows (lower-cased), and its object class definitions.
    async fn schema(&mut self) -> Result<(BTreeSet<String>, Vec<String>), DirectoryError> {
        let root = self.search_base("", &["subschemaSubentry"]).await?;
        let subschema = root
            .and_then(|e| {
                e.attrs
                    .get("subschemaSubentry")
                    .and_then(|v| v.first().cloned())
            })
            .unwrap_or_else(|| "cn=Subschema".to_string());
        let entry = self
            .search_base(&subschema, &["objectClasses", "attributeTypes"])
            .await?
            .ok_or_else(|| DirectoryError::Operation {
                operation: "read schema",
                dn: subschema.clone(),
                message: "no subschema entry".into(),
            })?;
        let mut names = BTreeSet::new();
        for attr in ["objectClasses", "attributeTypes"] {
            for def in entry.attrs.get(attr).into_iter().flatten() {
                names.extend(definition_names(def).map(|n| n.to_ascii_lowercase()));
            }
        }
        let classes = entry
            .attrs
            .get("objectClasses")
            .cloned()
            .unwrap_or_default();
        Ok((names, classes))
    }

    /// Fails unless the directory knows Roster's schema and the standard classes it writes.
    pub async fn check_schema(&mut self) -> Result<(), DirectoryError> {
        let (known, classes) = self.schema().await?;
        let mut missing: Vec<String> = declared_names(ROSTER_SCHEMA)
            .into_iter()
            .chain(STANDARD_CLASSES.iter().map(|s| s.to_string()))
            .filter(|n| !known.contains(&n.to_ascii_lowercase()))
            .collect();
        // A schema loaded from an older Roster: its classes allow fewer attributes.
        for ours in ROSTER_SCHEMA
            .replace("\n ", "")
            .split("olcObjectClasses: ")
            .skip(1)
        {
            let Some(name) = definition_names(ours).next() else {
                continue;
            };
            let Some(theirs) = classes
                .iter()
                .find(|d| definition_names(d).any(|n| n.eq_ignore_ascii_case(name)))
            else {
                continue;
            };
            let have: BTreeSet<String> = class_attributes(theirs)
                .iter()
                .map(|a| a.to_ascii_lowercase())
                .collect();
            let lacking: Vec<String> = class_attributes(ours)
                .into_iter()
                .filter(|a| !have.contains(&a.to_ascii_lowercase()))
                .collect();
            if !lacking.is_empty() {
                missing.push(format!(
                    "{name} is outdated and lacks {}",
                    lacking.join(", ")
                ));
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(DirectoryError::SchemaMissing { missing })
        }
    }

    /// Fails unless the containers Roster writes under exist.
    pub async fn check_containers(&mut self, config: &Config) -> Result<(), DirectoryError> {
        let mut missing = Vec::new();
        for dn in [
            config.people_dn(),
            config.groups_dn(),
            config.tombstones_dn(),
            config.counters_dn(),
        ] {
            if self.search_base(&dn, &["1.1"]).await?.is_none() {
                missing.push(dn);
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(DirectoryError::MissingContainers { missing })
        }
    }

    /// Reads one entry; `None` when it does not exist.
    pub async fn search_base(
        &mut self,
        dn: &str,
        attrs: &[&str],
    ) -> Result<Option<SearchEntry>, DirectoryError> {
        let result = self
            .ldap
            .search("read", dn, Scope::Base, "(objectClass=*)", attrs.to_vec())
            .await
            .map_err(|e| DirectoryError::Unreachable {
                uri: self.uri.clone(),
                message: e.to_string(),
            })?;
        match result.1.rc {
            0 => Ok(result.0.into_iter().next().map(SearchEntry::construct)),
            32 => Ok(None),
            rc => Err(DirectoryError::Operation {
                operation: "read",
                dn: dn.to_string(),
                message: format!("result code {rc}: {}", result.1.text),
            }),
        }
    }
}

/// The names in one schema definition: `( oid NAME 'a' …)` or `( oid NAME ( 'a' 'b' ) …)`.
fn definition_names(def: &str) -> impl Iterator<Item = &str> {
    let after = def.split_once(" NAME ").map(|(_, r)| r).unwrap_or("");
    let list = if let Some(rest) = after.strip_prefix('(') {
        rest.split(')').next().unwrap_or("")
    } else {
        after.split(' ').next().unwrap_or("")
    };
    list.split('\'').map(str::trim).filter(|s| !s.is_empty())
}

/// The attributes an object class definition allows (MUST and MAY).
fn class_attributes(def: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut listing = false;
    for token in def.split(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | '$')) {
        match token {
            "" => {}
            "MUST" | "MAY" => listing = true,
            t if t.chars().all(|c| c.is_ascii_uppercase() || c == '-') => listing = false,
            t if listing => {
                out.insert(t.to_string());
            }
            _ => {}
        }
    }
    out
}

/// Why connecting failed: the server's certificate refused (saying what it was checked
/// against), StartTLS refused, or the directory not reached at all.
fn connect_error(config: &Config, uri: &str, e: ldap3::LdapError) -> DirectoryError {
    use rustls::CertificateError as C;
    let tls = |message: String| DirectoryError::Tls {
        uri: uri.to_string(),
        message,
    };
    let refused = match &e {
        ldap3::LdapError::Io { source } => source
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    if let Some(refused) = refused {
        let trust = match &config.ldap.tls.ca_file {
            Some(ca) => format!(
                "the CA(s) in ldap.tls.caFile {}",
                config.resolve(ca).display()
            ),
            None => "the system's trusted CAs (ldap.tls.caFile is not set)".to_string(),
        };
        return tls(match refused {
            rustls::Error::InvalidCertificate(C::UnknownIssuer) => format!(
                "the server's certificate is not signed by {trust}; the bind password was not sent ({refused})"
            ),
            rustls::Error::InvalidCertificate(
                C::NotValidForName | C::NotValidForNameContext { .. },
            ) => format!(
                "the server's certificate is not valid for the host in ldap.uri; the bind password was not sent ({refused})"
            ),
            _ => {
                format!("the server's certificate was refused (checked against {trust}): {refused}")
            }
        });
    }
    match e {
        ldap3::LdapError::LdapResult { result } if config.ldap.tls.mode == TlsMode::StartTls => {
            tls(format!(
                "the server refused StartTLS (result code {}: {})",
                result.rc, result.text
            ))
        }
        ldap3::LdapError::Rustls { .. } | ldap3::LdapError::DNSName { .. } => tls(e.to_string()),
        e => DirectoryError::Unreachable {
            uri: uri.to_string(),
            message: e.to_string(),
        },
    }
}

/// A rustls client configuration trusting exactly the CAs in `ca_file`.
fn tls_config(ca_file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let pem = std::fs::read_to_string(ca_file)
        .map_err(|e| format!("cannot read CA file {}: {e}", ca_file.display()))?;
    crate::tls::trusting(&pem, &ca_file.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_declares_every_class_and_attribute_of_the_design() {
        let names = declared_names(ROSTER_SCHEMA);
        for n in [
            "rosterManaged",
            "rosterTombstone",
            "rosterCounter",
            "rosterOwner",
            "rosterState",
            "rosterDeactivatedAt",
            "rosterPurgeAt",
            "rosterSourceUID",
            "rosterRecordUID",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing from roster.ldif");
        }
        assert_eq!(
            declared_names(OPENSSH_LPK_SCHEMA),
            ["sshPublicKey", "ldapPublicKey"]
        );
    }

    #[test]
    fn definition_names_reads_single_and_multiple_names() {
        let one = "( 2.5.4.3 NAME 'cn' SUP name )";
        assert_eq!(definition_names(one).collect::<Vec<_>>(), ["cn"]);
        let two = "( 2.5.4.4 NAME ( 'sn' 'surname' ) SUP name )";
        assert_eq!(definition_names(two).collect::<Vec<_>>(), ["sn", "surname"]);
    }

    #[test]
    fn class_attributes_reads_must_and_may_lists() {
        let def = "( 1.2 NAME 'x' SUP top STRUCTURAL MUST ( cn $ rosterOwner ) MAY description X-ORIGIN 'y' )";
        assert_eq!(
            class_attributes(def).into_iter().collect::<Vec<_>>(),
            ["cn", "description", "rosterOwner"]
        );
    }
}
