//! The declared state a pass converges to: the site (declared objects plus what guests and
//! imports stand for) and the planner's policy (what is being removed, and how). File mode
//! builds it from manifests; the operator from its reflector stores with [`Declared::from_stores`],
//! a pure function.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kube::{Resource, ResourceExt};

use crate::api::{Account, DeletionPolicy, FINALIZER, Guest, Person, Project};
use crate::config::Config;
use crate::guest::Expansion;
use crate::import::engine::Outcome as ImportOutcome;
use crate::plan::{Kind, Observed, Policy};
use crate::site::{Key, Site};

/// What one pass converges to.
pub struct Declared<'c> {
    pub site: Site,
    pub policy: Policy<'c>,
    /// The guests' derived Persons and Accounts, conditions and timers.
    pub guests: Expansion,
    /// Objects being deleted that hold Roster's finalizer (operator mode).
    pub deleting: Vec<(Kind, Key)>,
    /// Username counters of the imports that ran into this site (file mode), stored once the
    /// directory holds the names.
    pub counters: BTreeMap<String, Vec<(String, u32)>>,
    /// An import could not run or was aborted (file mode): the run is not converged.
    pub imports_blocked: bool,
}

/// The operator's caches at the start of a pass.
#[derive(Clone, Copy)]
pub struct Stores<'s> {
    pub accounts: &'s [Arc<Account>],
    pub projects: &'s [Arc<Project>],
    pub people: &'s [Arc<Person>],
    pub guests: &'s [Arc<Guest>],
}

fn finalized_by_roster(m: &kube::api::ObjectMeta) -> bool {
    m.finalizers.iter().flatten().any(|f| f == FINALIZER)
}

fn duration(v: Option<&String>) -> Option<std::time::Duration> {
    v.and_then(|v| crate::api::parse_duration(v).ok())
}

impl<'c> Declared<'c> {
    /// A site as declared, nothing removed yet.
    pub fn new(site: Site, policy: Policy<'c>) -> Declared<'c> {
        Declared {
            site,
            policy,
            guests: Expansion::default(),
            deleting: vec![],
            counters: BTreeMap::new(),
            imports_blocked: false,
        }
    }

    /// The declared state from the operator's caches. An object being deleted (with Roster's
    /// finalizer) is removed with its deletion policy; an imported Account marked gone from its
    /// source is removed with the source's grace periods; a guest's derived Person and Account
    /// are planned from the Guest (and, once the Guest is gone, the Account counts as removed);
    /// Guests are expanded and those an import took over are superseded.
    pub fn from_stores(
        stores: Stores<'_>,
        config: &'c Config,
        now: jiff::Timestamp,
    ) -> Declared<'c> {
        let mut d = Declared::new(Site::default(), Policy::new(config));
        let guest_keys: BTreeSet<Key> = stores.guests.iter().map(|g| Key::of(g.as_ref())).collect();
        // The Guest a Person or Account was derived from (its label), if that Guest exists.
        // (An object an import took over from a guest is the import's now.)
        let derived = |m: &kube::api::ObjectMeta| -> Option<bool> {
            if m.annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(crate::api::SOURCE_UID_ANNOTATION))
            {
                return None;
            }
            let name = m.labels.as_ref()?.get(crate::guest::GUEST_LABEL)?;
            let ns = m.namespace.clone().unwrap_or_default();
            Some(guest_keys.contains(&Key::new(ns, name)))
        };
        let p = &mut d.policy;
        for a in stores.accounts {
            let key = Key::of(a.as_ref());
            if a.meta().deletion_timestamp.is_some() {
                if finalized_by_roster(a.meta()) {
                    p.removed.insert(key.clone(), a.spec.deletion_policy);
                    if let Some(t) = duration(a.spec.purge_after.as_ref()) {
                        p.purge_after.insert(key.clone(), t);
                    }
                    d.deleting.push((Kind::Account, key));
                }
            } else if a.annotations().contains_key(crate::api::GONE_AT_ANNOTATION) {
                // An imported record gone from its source: removed with the source's grace.
                p.removed.insert(key.clone(), DeletionPolicy::Deactivate);
                let after = |k: &str| duration(a.annotations().get(k));
                if let Some(t) = after(crate::api::PURGE_AFTER_ANNOTATION) {
                    p.purge_after.insert(key.clone(), t);
                }
                if let Some(t) = after(crate::api::DEACTIVATE_AFTER_ANNOTATION) {
                    p.deactivate_after.insert(key, t);
                }
            } else if let Some(guest_exists) = derived(a.meta()) {
                // A guest's account is planned from the Guest; once the Guest is gone (its
                // dependants about to be collected) it counts as removed, never as declared.
                if !guest_exists {
                    p.removed.insert(key.clone(), DeletionPolicy::Deactivate);
                    if let Some(t) = duration(a.spec.purge_after.as_ref()) {
                        p.purge_after.insert(key, t);
                    }
                }
            } else {
                d.site.accounts.insert(key, (**a).clone());
            }
        }
        for pr in stores.projects {
            let key = Key::of(pr.as_ref());
            if pr.meta().deletion_timestamp.is_some() {
                if finalized_by_roster(pr.meta()) {
                    p.removed_projects
                        .insert(key.clone(), pr.spec.deletion_policy);
                    d.deleting.push((Kind::Project, key));
                }
            } else {
                d.site.projects.insert(key, (**pr).clone());
            }
        }
        for h in stores.people {
            let key = Key::of(h.as_ref());
            if h.meta().deletion_timestamp.is_some() {
                if finalized_by_roster(h.meta()) {
                    d.deleting.push((Kind::Person, key));
                }
            } else if derived(h.meta()).is_none() {
                d.site.people.insert(key, (**h).clone());
            }
        }
        // Guests stand for Persons and Accounts. A Guest counts as established once its status
        // names its account (the 12-month rule counts from the accepted validUntil).
        let mut guests = BTreeMap::new();
        let mut deleting_guests = BTreeSet::new();
        let mut known = BTreeMap::new();
        for g in stores.guests {
            let key = Key::of(g.as_ref());
            if g.meta().deletion_timestamp.is_some() {
                if !finalized_by_roster(g.meta()) {
                    continue;
                }
                deleting_guests.insert(key.clone());
                d.deleting.push((Kind::Guest, key.clone()));
            }
            if let Some(st) = g.status.as_ref().filter(|s| s.account.is_some()) {
                let accepted = st
                    .accepted_valid_until
                    .as_deref()
                    .and_then(|v| crate::api::parse_valid_until(v).ok());
                known.insert(key.clone(), accepted);
            }
            guests.insert(key, (**g).clone());
        }
        d.site.guests = guests;
        // A guest whose person an import brought is superseded; its account is the import's.
        let imported: BTreeSet<(String, String)> = stores
            .accounts
            .iter()
            .filter(|a| {
                a.annotations()
                    .contains_key(crate::api::SOURCE_UID_ANNOTATION)
            })
            .map(|a| (a.namespace().unwrap_or_default(), a.spec.username.clone()))
            .collect();
        let expansion = crate::guest::expand(
            &d.site.guests,
            &d.site,
            config,
            now,
            &known,
            &deleting_guests,
        );
        d.add_guests(expansion, &imported);
        d
    }

    /// The guests' expansion, less the guests an import took over (`imported`: namespace and
    /// username of every imported Account), merged into the site and the policy.
    pub fn add_guests(&mut self, mut guests: Expansion, imported: &BTreeSet<(String, String)>) {
        guests.supersede(&self.site.guests, imported);
        guests.merge_into(
            &mut self.site,
            &mut self.policy.removed,
            &mut self.policy.purge_after,
        );
        self.guests = guests;
    }

    /// What one import run stands for (file mode): its Persons and Accounts, what is gone from
    /// the source, and its username counters.
    pub fn add_import(&mut self, o: ImportOutcome) {
        self.site.people.extend(o.people);
        self.site.accounts.extend(o.accounts);
        self.policy.removed.extend(o.removed);
        self.policy.purge_after.extend(o.purge_after);
        self.policy.deactivate_after.extend(o.deactivate_after);
        self.counters.extend(o.counters);
    }

    /// An import that did not run (unreachable, aborted, a dry run): what it imported before is
    /// kept from `--prune` — an unreachable or aborted source is never an empty one.
    pub fn keep_imported(&mut self, source_uid: &str, observed: &Observed) {
        for e in observed.accounts.values() {
            if e.first("rosterSourceUID") != Some(source_uid) {
                continue;
            }
            if let Some(o) = e.owned_by().filter(|o| o.kind == "Account") {
                self.policy.keep.insert(Key::new(o.namespace, o.name));
            }
        }
    }

    /// (namespace, username) of every imported Account of the site.
    pub fn imported_accounts(&self) -> BTreeSet<(String, String)> {
        self.site
            .accounts
            .iter()
            .filter(|(_, a)| {
                a.metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|n| n.contains_key(crate::api::SOURCE_UID_ANNOTATION))
            })
            .map(|(k, a)| (k.namespace.clone(), a.spec.username.clone()))
            .collect()
    }

    /// Whether a guest breaks a rule or an import could not run.
    pub fn blocked(&self) -> bool {
        self.imports_blocked || self.guests.outcomes.values().any(|o| o.invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CONFIG: &str = r#"
managerId: dev
ldap:
  uri: ldap://127.0.0.1:389
  bindDN: cn=admin,dc=test
  bindPasswordFile: pw
  baseDN: dc=test
uidRange: {min: 20000, max: 29999}
gidRange: {min: 20000, max: 29999}
"#;

    fn object<K: serde::de::DeserializeOwned>(
        kind: &str,
        meta: serde_json::Value,
        spec: serde_json::Value,
    ) -> Arc<K> {
        let mut meta = meta;
        meta["namespace"] = json!("physics");
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "roster.io/v1alpha1", "kind": kind, "metadata": meta, "spec": spec,
            }))
            .unwrap_or_else(|e| panic!("{kind}: {e}")),
        )
    }

    fn person(name: &str, meta: serde_json::Value) -> Arc<Person> {
        let mut meta = meta;
        meta["name"] = json!(name);
        object(
            "Person",
            meta,
            json!({"givenName": "G", "familyName": name}),
        )
    }

    fn account(name: &str, meta: serde_json::Value, extra: serde_json::Value) -> Arc<Account> {
        let mut meta = meta;
        meta["name"] = json!(name);
        let mut spec = json!({"person": name, "username": name});
        for (k, v) in extra.as_object().into_iter().flatten() {
            spec[k] = v.clone();
        }
        object("Account", meta, spec)
    }

    #[test]
    fn the_declared_state_from_the_caches() {
        let config = Config::parse(CONFIG, "/".into()).unwrap();
        let now: jiff::Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let deleting =
            json!({"deletionTimestamp": "2026-11-30T00:00:00Z", "finalizers": [FINALIZER]});
        let accounts = vec![
            account("ada", json!({}), json!({})),
            // Being deleted with Roster's finalizer: removed, with its policy and purge delay.
            account(
                "bob",
                deleting.clone(),
                json!({"deletionPolicy": "PurgeImmediately", "purgeAfter": "30d"}),
            ),
            // Being deleted without it (never Roster's to finish): neither declared nor removed.
            account(
                "cy",
                json!({"deletionTimestamp": "2026-11-30T00:00:00Z", "finalizers": ["other/x"]}),
                json!({}),
            ),
            // Gone from its import's source: removed with the source's grace periods.
            account(
                "dee",
                json!({"annotations": {
                    crate::api::SOURCE_UID_ANNOTATION: "hr",
                    crate::api::GONE_AT_ANNOTATION: "2026-11-29T00:00:00Z",
                    crate::api::PURGE_AFTER_ANNOTATION: "90d",
                    crate::api::DEACTIVATE_AFTER_ANNOTATION: "7d",
                }}),
                json!({}),
            ),
            // Derived from a Guest that no longer exists: removed, never declared.
            account(
                "orphan",
                json!({"labels": {crate::guest::GUEST_LABEL: "gone"}}),
                json!({"purgeAfter": "10d"}),
            ),
            // Derived from a Guest that exists: planned from the Guest, not from the cache.
            account(
                "mvisitor",
                json!({"labels": {crate::guest::GUEST_LABEL: "mvisitor"}}),
                json!({"projects": ["optics"]}),
            ),
            // Imported, and the same username a Guest asks for: the import's, the Guest superseded.
            account(
                "eve",
                json!({"annotations": {crate::api::SOURCE_UID_ANNOTATION: "hr"}}),
                json!({}),
            ),
        ];
        let people = vec![
            person("ada", json!({})),
            person("bob", deleting.clone()),
            person(
                "mvisitor",
                json!({"labels": {crate::guest::GUEST_LABEL: "mvisitor"}}),
            ),
            person(
                "eve",
                json!({"annotations": {crate::api::SOURCE_UID_ANNOTATION: "hr"}}),
            ),
        ];
        let projects: Vec<Arc<Project>> = vec![
            object(
                "Project",
                json!({"name": "optics"}),
                json!({"leaders": ["ada"], "members": ["ada"]}),
            ),
            object(
                "Project",
                json!({"name": "old", "deletionTimestamp": "2026-11-30T00:00:00Z", "finalizers": [FINALIZER]}),
                json!({"deletionPolicy": "Deactivate"}),
            ),
        ];
        let guest = |name: &str, username: &str| -> Arc<Guest> {
            object(
                "Guest",
                json!({"name": name}),
                json!({
                    "type": "Personal", "host": "ada", "validUntil": "2027-01-31",
                    "person": {"givenName": "M", "familyName": "V"},
                    "account": {"username": username, "projects": ["optics"]},
                }),
            )
        };
        let guests = vec![guest("mvisitor", "mvisitor"), guest("eve-visit", "eve")];
        let d = Declared::from_stores(
            Stores {
                accounts: &accounts,
                projects: &projects,
                people: &people,
                guests: &guests,
            },
            &config,
            now,
        );
        let key = |n: &str| Key::new("physics", n);
        let names =
            |m: &BTreeMap<Key, Account>| m.keys().map(|k| k.name.clone()).collect::<Vec<_>>();
        // Declared: ada and the import's eve from the cache, mvisitor from its Guest.
        assert_eq!(names(&d.site.accounts), ["ada", "eve", "mvisitor"]);
        assert_eq!(d.site.accounts[&key("mvisitor")].spec.projects, ["optics"]);
        assert_eq!(
            d.site
                .people
                .keys()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>(),
            ["ada", "eve", "mvisitor"],
        );
        assert_eq!(
            d.policy.removed,
            BTreeMap::from([
                (key("bob"), DeletionPolicy::PurgeImmediately),
                (key("dee"), DeletionPolicy::Deactivate),
                (key("orphan"), DeletionPolicy::Deactivate),
            ])
        );
        let days = |n: u64| std::time::Duration::from_secs(n * 86_400);
        assert_eq!(
            d.policy.purge_after,
            BTreeMap::from([
                (key("bob"), days(30)),
                (key("dee"), days(90)),
                (key("orphan"), days(10))
            ])
        );
        assert_eq!(
            d.policy.deactivate_after,
            BTreeMap::from([(key("dee"), days(7))])
        );
        assert_eq!(
            d.policy.removed_projects,
            BTreeMap::from([(key("old"), DeletionPolicy::Deactivate)])
        );
        assert_eq!(
            d.deleting,
            [
                (Kind::Account, key("bob")),
                (Kind::Project, key("old")),
                (Kind::Person, key("bob"))
            ]
        );
        // The Guest an import took over is superseded and derives nothing.
        let superseded = &d.guests.outcomes[&key("eve-visit")];
        assert!(
            superseded
                .conditions
                .iter()
                .any(|c| c.type_ == "Superseded"),
            "{superseded:?}"
        );
        assert!(!d.guests.accounts.contains_key(&key("eve-visit")));
        assert!(d.guests.accounts.contains_key(&key("mvisitor")));
        assert_eq!(d.site.guests.len(), 2);
        assert!(!d.blocked());
    }
}
