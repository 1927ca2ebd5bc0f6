//! Bulk observation of the directory: one paged subtree search for every POSIX account and
//! group, tombstone and counter below the base DN. Never one search per object.

use std::collections::{BTreeMap, BTreeSet};

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Scope, SearchEntry};

use super::{Directory, DirectoryError};

/// One directory entry with lower-cased attribute names and values in directory order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub dn: String,
    pub attrs: BTreeMap<String, Vec<String>>,
}

impl Entry {
    /// All values of an attribute (name in any case).
    pub fn values(&self, attr: &str) -> &[String] {
        // Lower-cased on the stack: this runs for every attribute a plan looks at (millions of
        // times at 10,000 accounts), and a heap copy each time showed in the profile.
        let mut buf = [0u8; 64];
        let found = match buf.get_mut(..attr.len()) {
            Some(lower) => {
                lower.copy_from_slice(attr.as_bytes());
                lower.make_ascii_lowercase();
                // Lower-casing ASCII bytes keeps UTF-8 valid.
                std::str::from_utf8(lower)
                    .ok()
                    .and_then(|key| self.attrs.get(key))
            }
            None => self.attrs.get(&attr.to_ascii_lowercase()),
        };
        found.map(Vec::as_slice).unwrap_or(&[])
    }

    /// The first value of an attribute.
    pub fn first(&self, attr: &str) -> Option<&str> {
        self.values(attr).first().map(String::as_str)
    }

    pub fn has_class(&self, class: &str) -> bool {
        self.values("objectClass")
            .iter()
            .any(|c| c.eq_ignore_ascii_case(class))
    }

    pub fn number(&self, attr: &str) -> Option<u32> {
        self.first(attr).and_then(|v| v.parse().ok())
    }

    /// `rosterOwner`, if the entry carries Roster's marker.
    pub fn owner(&self) -> Option<&str> {
        if self.has_class("rosterManaged") || self.has_class("rosterTombstone") {
            self.first("rosterOwner")
        } else {
            None
        }
    }
}

/// What the directory holds that Roster's plans depend on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// POSIX accounts anywhere below the base DN, by `uid`.
    pub accounts: BTreeMap<String, Entry>,
    /// POSIX groups anywhere below the base DN, by `cn`.
    pub groups: BTreeMap<String, Entry>,
    /// Tombstones, by `cn` (`<Kind>:<name>`).
    pub tombstones: BTreeMap<String, Entry>,
    /// Counters, by `cn`.
    pub counters: BTreeMap<String, Entry>,
    /// Usernames held by more than one POSIX account entry, with every DN: a broken directory
    /// Roster refuses to guess in.
    pub duplicate_accounts: BTreeMap<String, Vec<String>>,
    /// Group names held by more than one POSIX group entry, with every DN.
    pub duplicate_groups: BTreeMap<String, Vec<String>>,
}

impl Observed {
    /// uid numbers taken by an account or reserved by a tombstone.
    pub fn uids_in_use(&self) -> BTreeSet<u32> {
        self.accounts
            .values()
            .filter_map(|e| e.number("uidNumber"))
            .chain(
                self.tombstones
                    .values()
                    .filter_map(|e| e.number("uidNumber")),
            )
            .collect()
    }

    /// gid numbers taken by a group or reserved by a tombstone.
    pub fn gids_in_use(&self) -> BTreeSet<u32> {
        self.groups
            .values()
            .filter_map(|e| e.number("gidNumber"))
            .chain(
                self.tombstones
                    .values()
                    .filter_map(|e| e.number("gidNumber")),
            )
            .collect()
    }
}

/// Keeps the first entry of a name and records every DN of a name seen more than once.
fn insert_unique(
    map: &mut BTreeMap<String, Entry>,
    dups: &mut BTreeMap<String, Vec<String>>,
    name: String,
    entry: Entry,
) {
    match map.get(&name) {
        None => {
            map.insert(name, entry);
        }
        Some(first) => {
            let dns = dups.entry(name).or_insert_with(|| vec![first.dn.clone()]);
            dns.push(entry.dn);
        }
    }
}

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
    "createTimestamp",
];

impl Directory {
    /// Reads everything below `base` in one paged search.
    pub async fn observe(
        &mut self,
        base: &str,
        page_size: i32,
    ) -> Result<Observed, DirectoryError> {
        let filter = "(|(objectClass=posixAccount)(objectClass=posixGroup)(objectClass=rosterTombstone)(objectClass=rosterCounter))";
        let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
            Box::new(EntriesOnly::new()),
            Box::new(PagedResults::new(page_size)),
        ];
        let unreachable = |e: ldap3::LdapError| DirectoryError::Unreachable {
            uri: self.uri.clone(),
            message: e.to_string(),
        };
        let mut stream = self
            .ldap
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
            let se = SearchEntry::construct(raw);
            let mut attrs: BTreeMap<String, Vec<String>> = se
                .attrs
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect();
            // Binary-looking values (not UTF-8) are kept lossily; Roster never writes such values.
            for (k, vs) in se.bin_attrs {
                attrs.entry(k.to_ascii_lowercase()).or_default().extend(
                    vs.into_iter()
                        .map(|v| String::from_utf8_lossy(&v).into_owned()),
                );
            }
            let entry = Entry { dn: se.dn, attrs };
            if entry.has_class("rosterTombstone") {
                if let Some(cn) = entry.first("cn") {
                    observed.tombstones.insert(cn.to_string(), entry);
                }
            } else if entry.has_class("rosterCounter") {
                if let Some(cn) = entry.first("cn") {
                    observed.counters.insert(cn.to_string(), entry);
                }
            } else if entry.has_class("posixAccount") {
                if let Some(uid) = entry.first("uid").map(str::to_string) {
                    insert_unique(
                        &mut observed.accounts,
                        &mut observed.duplicate_accounts,
                        uid,
                        entry,
                    );
                }
            } else if entry.has_class("posixGroup")
                && let Some(cn) = entry.first("cn").map(str::to_string)
            {
                insert_unique(
                    &mut observed.groups,
                    &mut observed.duplicate_groups,
                    cn,
                    entry,
                );
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_names_are_found_in_any_case_and_any_length() {
        let long = "x".repeat(80);
        let e = Entry {
            dn: "uid=ada,ou=people,dc=x".into(),
            attrs: [
                ("uidnumber".to_string(), vec!["20001".to_string()]),
                (long.clone(), vec!["long".to_string()]),
                ("ünïcode".to_string(), vec!["u".to_string()]),
            ]
            .into_iter()
            .collect(),
        };
        assert_eq!(e.number("uidNumber"), Some(20001));
        assert_eq!(e.first("UIDNUMBER"), Some("20001"));
        assert_eq!(e.first(&long.to_uppercase()), Some("long"));
        assert_eq!(
            e.first("ÜNÏCODE"),
            None,
            "only ASCII letters fold, as in LDAP"
        );
        assert_eq!(e.first("ünÏcode"), None);
        assert_eq!(e.first("ünïcode"), Some("u"));
        assert!(e.values("gidNumber").is_empty());
    }
}
