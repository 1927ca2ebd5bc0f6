//! The directory as the planner sees it: entries with lower-cased attribute names, the bulk
//! observation of accounts, groups, tombstones and counters, and typed views of Roster's own
//! attributes (owner, lifecycle state). The LDAP backend fills it; nothing here talks to a server.

use std::collections::{BTreeMap, BTreeSet};

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

    /// `entryCSN`: the server's change sequence number of this version of the entry (slapd;
    /// ordered as strings). Directories without one say nothing.
    pub fn csn(&self) -> Option<&str> {
        self.first("entryCSN")
    }

    /// `entryUUID`: the entry's identity, which a DN taken again by a new entry does not share.
    pub fn uuid(&self) -> Option<&str> {
        self.first("entryUUID")
    }

    /// Whether this reading is older than `other` (both carry an `entryCSN`).
    pub fn older_than(&self, other: &Entry) -> bool {
        matches!((self.csn(), other.csn()), (Some(a), Some(b)) if a < b)
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
    /// Files an entry read from the directory under its kind, as a bulk observation does with
    /// each. False when it joined a duplicate (a name held twice): which of the two is filed
    /// then depends on the order they were read in.
    pub fn file(&mut self, entry: Entry) -> bool {
        if entry.has_class("rosterTombstone") {
            if let Some(cn) = entry.first("cn") {
                self.tombstones.insert(cn.to_string(), entry);
            }
        } else if entry.has_class("rosterCounter") {
            if let Some(cn) = entry.first("cn") {
                self.counters.insert(cn.to_string(), entry);
            }
        } else if entry.has_class("posixAccount") {
            if let Some(uid) = entry.first("uid").map(str::to_string) {
                let taken = self.accounts.contains_key(&uid);
                insert_unique(&mut self.accounts, &mut self.duplicate_accounts, uid, entry);
                return !taken;
            }
        } else if entry.has_class("posixGroup")
            && let Some(cn) = entry.first("cn").map(str::to_string)
        {
            let taken = self.groups.contains_key(&cn);
            insert_unique(&mut self.groups, &mut self.duplicate_groups, cn, entry);
            return !taken;
        }
        true
    }

    /// Where the entry at `dn` is filed: its map and name. The name is tried from the DN's
    /// first RDN value (`uid=ada,…` is filed as `ada` wherever Roster's own entries are), so
    /// finding it costs a lookup; an entry filed under another name is found by a scan.
    fn locate(&self, dn: &str) -> Option<(Section, String)> {
        let same = |e: &Entry| e.dn.eq_ignore_ascii_case(dn);
        let maps = [
            (Section::Accounts, &self.accounts),
            (Section::Groups, &self.groups),
            (Section::Tombstones, &self.tombstones),
            (Section::Counters, &self.counters),
        ];
        let rdn_value = dn
            .split(',')
            .next()
            .and_then(|rdn| rdn.split_once('='))
            .map(|(_, v)| v);
        if let Some(v) = rdn_value.filter(|v| !v.contains('\\')) {
            for (section, map) in maps {
                if map.get(v).is_some_and(same) {
                    return Some((section, v.to_string()));
                }
            }
        }
        maps.into_iter().find_map(|(section, map)| {
            map.iter()
                .find(|(_, e)| same(e))
                .map(|(k, _)| (section, k.clone()))
        })
    }

    /// The entry filed for `dn`, if any.
    pub fn at(&self, dn: &str) -> Option<&Entry> {
        let (section, name) = self.locate(dn)?;
        self.section(section).get(&name)
    }

    fn section(&self, s: Section) -> &BTreeMap<String, Entry> {
        match s {
            Section::Accounts => &self.accounts,
            Section::Groups => &self.groups,
            Section::Tombstones => &self.tombstones,
            Section::Counters => &self.counters,
        }
    }

    /// Removes the entry at `dn`, whatever its kind. False when a duplicate held it (the
    /// observation cannot say which entry takes its place): observe afresh.
    pub fn unfile(&mut self, dn: &str) -> bool {
        let in_duplicates = self
            .duplicate_accounts
            .values()
            .chain(self.duplicate_groups.values())
            .flatten()
            .any(|d| d.eq_ignore_ascii_case(dn));
        if in_duplicates {
            return false;
        }
        if let Some((section, name)) = self.locate(dn) {
            let map = match section {
                Section::Accounts => &mut self.accounts,
                Section::Groups => &mut self.groups,
                Section::Tombstones => &mut self.tombstones,
                Section::Counters => &mut self.counters,
            };
            map.remove(&name);
        }
        true
    }

    /// Files `entry` in place of whatever was at its DN (the entry as read again). False when
    /// a duplicate name is involved: observe afresh.
    pub fn refile(&mut self, entry: Entry) -> bool {
        let dn = entry.dn.clone();
        self.unfile(&dn) && self.file(entry)
    }

    /// Every entry filed, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.accounts
            .values()
            .chain(self.groups.values())
            .chain(self.tombstones.values())
            .chain(self.counters.values())
    }

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

#[derive(Clone, Copy)]
enum Section {
    Accounts,
    Groups,
    Tombstones,
    Counters,
}

/// Keeps the first entry of a name and records every DN of a name seen more than once.
pub(crate) fn insert_unique(
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

/// `rosterOwner` parsed: `<managerId>/<namespace>/<Kind>/<name>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner<'a> {
    pub manager: &'a str,
    pub namespace: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
}

impl Entry {
    /// `rosterOwner` split into its parts, if the entry is Roster's and the value is well formed.
    pub fn owned_by(&self) -> Option<Owner<'_>> {
        let mut parts = self.owner()?.splitn(4, '/');
        Some(Owner {
            manager: parts.next()?,
            namespace: parts.next()?,
            kind: parts.next()?,
            name: parts.next()?,
        })
    }

    /// Whether the entry is Roster's, of this Roster installation (`managerId`).
    pub fn is_managed_by(&self, manager: &str) -> bool {
        self.owned_by().is_some_and(|o| o.manager == manager)
    }

    /// `rosterState: Deactivated` (locked; expiry, removal or a lapsed guest).
    pub fn is_deactivated(&self) -> bool {
        self.first("rosterState") == Some("Deactivated")
    }

    /// `rosterGoneAt` is recorded: the object is no longer declared (or gone from its source).
    pub fn is_gone(&self) -> bool {
        self.first("rosterGoneAt").is_some()
    }

    /// Deactivated because it was removed (not because it expired): Slurm and Gold keep such an
    /// account's records blocked until the purge.
    pub fn is_removed(&self) -> bool {
        self.is_deactivated() && self.is_gone()
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
