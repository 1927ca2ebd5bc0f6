//! What changed in the directory behind Roster's back between two passes, without keeping a
//! copy of it: a digest of every account, group and tombstone entry, by lower-cased DN (at
//! 10,000 accounts a copy is tens of MiB held between passes).

use std::collections::{BTreeMap, BTreeSet};

use crate::plan::Observed;

pub type Fingerprints = BTreeMap<String, u64>;

pub fn fingerprints(o: &Observed) -> Fingerprints {
    use std::hash::{Hash, Hasher};
    o.accounts
        .values()
        .chain(o.groups.values())
        .chain(o.tombstones.values())
        .map(|e| {
            // Fixed keys: the digests of two passes of one process must be comparable.
            let mut h = std::hash::DefaultHasher::new();
            // Which version it is (entryCSN, entryUUID) is not what it says.
            for (k, v) in &e.attrs {
                if k != "entrycsn" && k != "entryuuid" {
                    (k, v).hash(&mut h);
                }
            }
            (e.dn.to_ascii_lowercase(), h.finish())
        })
        .collect()
}

/// The DNs (lower-cased) of entries that differ between what the last pass left (`seen`) and
/// what this pass found (`now`): added, removed or modified by someone else.
pub fn changed_behind(seen: &Fingerprints, now: &Observed) -> BTreeSet<String> {
    let now = fingerprints(now);
    seen.keys()
        .chain(now.keys())
        .filter(|dn| seen.get(*dn) != now.get(*dn))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Entry;

    fn entry(dn: &str, attrs: &[(&str, &[&str])]) -> Entry {
        Entry {
            dn: dn.into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| ((*k).into(), v.iter().map(|s| (*s).into()).collect()))
                .collect(),
        }
    }

    #[test]
    fn drift_is_every_entry_added_removed_or_changed_since_the_last_pass() {
        let mut before = Observed::default();
        for (uid, shell) in [
            ("ada", "/bin/bash"),
            ("bob", "/bin/bash"),
            ("eve", "/bin/sh"),
        ] {
            before.accounts.insert(
                uid.into(),
                entry(
                    &format!("uid={uid},ou=People,dc=x"),
                    &[("loginshell", &[shell])],
                ),
            );
        }
        before.groups.insert(
            "physics".into(),
            entry(
                "cn=physics,ou=groups,dc=x",
                &[("memberuid", &["ada", "bob"])],
            ),
        );
        let seen = fingerprints(&before);
        assert!(changed_behind(&seen, &before).is_empty());

        let mut now = before.clone();
        now.accounts.remove("eve");
        now.accounts
            .get_mut("bob")
            .unwrap()
            .attrs
            .insert("loginshell".into(), vec!["/bin/zsh".into()]);
        now.groups
            .get_mut("physics")
            .unwrap()
            .attrs
            .insert("memberuid".into(), vec!["bob".into(), "ada".into()]);
        now.tombstones
            .insert("Account:old".into(), entry("cn=Account:old,ou=t,dc=x", &[]));
        let changed: Vec<String> = changed_behind(&seen, &now).into_iter().collect();
        assert_eq!(
            changed,
            [
                "cn=account:old,ou=t,dc=x",
                "cn=physics,ou=groups,dc=x",
                "uid=bob,ou=people,dc=x",
                "uid=eve,ou=people,dc=x",
            ]
        );
    }
}
