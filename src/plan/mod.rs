//! The pure heart of Roster: declared state + observed directory + now + policy → ordered
//! operations, the status of every object, and the next wake-up. No I/O happens here.

mod accounts;
mod claim;
pub mod directory;
mod guard;
mod memberships;
mod model;
mod projects;
mod removals;
pub mod simulate;

pub use guard::{GUARD_APPROVAL, GuardStatus, guard_budget, guard_status};
pub use model::*;

use std::collections::{BTreeMap, BTreeSet};

use ldap3::dn_escape;

use crate::api::{
    Account, DeletionPolicy, Person, Phase, Project, RESERVED_USERNAMES, parse_valid_until,
};
use crate::config::{Config, IdRange, PrimaryGroup};
use crate::site::{Key, Site};
pub use directory::{Entry, Observed, Owner};

/// `pwdAccountLockedTime` value that locks until removed (ppolicy).
pub const LOCKED_FOREVER: &str = "000001010000Z";
/// The annotation value that asks for adoption.
const ADOPT: &str = "true";

/// What the planner needs besides the declaration and the directory.
#[derive(Clone, Debug)]
pub struct Policy<'a> {
    pub config: &'a Config,
    /// File mode `--prune`: lock managed entries of the declared namespaces that are no longer
    /// declared.
    pub prune: bool,
    /// Accounts being deleted (operator mode: a deletionTimestamp and Roster's finalizer), with
    /// their deletion policy.
    pub removed: BTreeMap<Key, DeletionPolicy>,
    /// Per-object `purgeAfter` of the removed accounts (clamped to the configured bounds).
    pub purge_after: BTreeMap<Key, std::time::Duration>,
    /// Projects being deleted (operator mode), with their deletion policy.
    pub removed_projects: BTreeMap<Key, DeletionPolicy>,
    /// Removed accounts that stay active this long after they went (an import's
    /// `deletionGracePeriod.deactivation`): only `rosterGoneAt` is recorded until then.
    pub deactivate_after: BTreeMap<Key, std::time::Duration>,
    /// Accounts `--prune` must not touch although undeclared (those of an import that did not
    /// run: an unreachable or aborted source is never an empty one).
    pub keep: std::collections::BTreeSet<Key>,
}

impl<'a> Policy<'a> {
    pub fn new(config: &'a Config) -> Policy<'a> {
        Policy {
            config,
            prune: false,
            removed: BTreeMap::new(),
            purge_after: BTreeMap::new(),
            removed_projects: BTreeMap::new(),
            deactivate_after: BTreeMap::new(),
            keep: Default::default(),
        }
    }
}

/// `rosterOwner` of a declared object.
pub fn owner(config: &Config, kind: Kind, key: &Key) -> String {
    format!(
        "{}/{}/{}/{}",
        config.manager_id, key.namespace, kind, key.name
    )
}

/// LDAP GeneralizedTime of an instant.
pub fn generalized_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y%m%d%H%M%SZ").to_string()
}

/// Reads a GeneralizedTime written by Roster.
pub fn parse_generalized_time(s: &str) -> Option<jiff::Timestamp> {
    jiff::civil::DateTime::strptime("%Y%m%d%H%M%SZ", s)
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// The group name of a project.
pub fn group_name(p: &Project) -> String {
    p.spec
        .group_name
        .clone()
        .unwrap_or_else(|| p.metadata.name.clone().unwrap_or_default())
}

fn cond(type_: &'static str, status: bool, reason: &str, message: impl Into<String>) -> Cond {
    Cond {
        type_,
        status,
        reason: reason.into(),
        message: message.into(),
    }
}

fn invalid(status: &mut ObjectStatus, reason: &str, message: String) {
    if !status.is_blocked() {
        status.phase = Phase::Invalid;
    }
    status
        .conditions
        .push(cond("Invalid", true, reason, message));
}

fn conflict(status: &mut ObjectStatus, reason: &str, message: String) {
    if !status.is_blocked() {
        status.phase = Phase::Conflict;
    }
    status
        .conditions
        .push(cond("Conflict", true, reason, message));
}

/// A number declared for a new entry must come from the site's range (`uidRange` for
/// `uidNumber`, `gidRange` for `gidNumber`): edit rights in one namespace must not put a system
/// uid or gid (27 is sudo on Debian) into the directory.
fn outside_range(
    field: &str,
    declared: Option<u32>,
    claim: &Claim,
    range: IdRange,
) -> Option<String> {
    let d = declared?;
    let new = matches!(claim, Claim::New { number: None });
    let what = field.trim_end_matches("Number");
    (new && !range.contains(d)).then(|| {
        format!(
            "spec.{field} {d} is outside the configured {what}Range {}..{}",
            range.min, range.max
        )
    })
}

/// How a declared object relates to what the directory holds.
enum Claim<'o> {
    /// No entry yet; create it (with the number from a tombstone of the same identity).
    New { number: Option<u32> },
    /// Roster's own entry.
    Managed(&'o Entry),
    /// An unmarked entry that may be adopted.
    Adopt(&'o Entry),
}

/// Lookups computed once per plan, so planning stays linear in the size of the site.
struct Index<'a> {
    /// Usernames of every declared Account.
    declared_usernames: BTreeSet<&'a str>,
    /// Project → usernames of the Accounts in its namespace that name it in `spec.projects`.
    joined: BTreeMap<Key, BTreeSet<String>>,
    /// Username → group names of the projects whose effective membership includes it.
    memberships: BTreeMap<String, BTreeSet<String>>,
    /// Person → its Accounts.
    accounts_of_person: BTreeMap<Key, Vec<Key>>,
    uids_in_use: BTreeSet<u32>,
    gids_in_use: BTreeSet<u32>,
}

impl<'a> Index<'a> {
    fn new(site: &'a Site, observed: &Observed) -> Index<'a> {
        let mut ix = Index {
            declared_usernames: BTreeSet::new(),
            joined: BTreeMap::new(),
            memberships: BTreeMap::new(),
            accounts_of_person: BTreeMap::new(),
            uids_in_use: observed.uids_in_use(),
            gids_in_use: observed.gids_in_use(),
        };
        for (key, a) in &site.accounts {
            ix.declared_usernames.insert(a.spec.username.as_str());
            for p in &a.spec.projects {
                ix.joined
                    .entry(Key::new(&key.namespace, p))
                    .or_default()
                    .insert(a.spec.username.clone());
            }
            ix.accounts_of_person
                .entry(Key::new(&key.namespace, &a.spec.person))
                .or_default()
                .push(key.clone());
        }
        for (key, p) in &site.projects {
            let group = group_name(p);
            for u in ix.effective_members(key, p) {
                ix.memberships.entry(u).or_default().insert(group.clone());
            }
        }
        ix
    }

    /// `spec.members` ∪ `spec.leaders` ∪ the Accounts that join from their side.
    fn effective_members(&self, key: &Key, p: &Project) -> BTreeSet<String> {
        p.spec
            .members
            .iter()
            .chain(&p.spec.leaders)
            .cloned()
            .chain(self.joined.get(key).into_iter().flatten().cloned())
            .collect()
    }
}

struct Planner<'a> {
    site: &'a Site,
    index: Index<'a>,
    observed: &'a Observed,
    now: jiff::Timestamp,
    policy: &'a Policy<'a>,
    ops_groups: Vec<Op>,
    /// Project → position of its group's Add in `ops_groups`.
    new_groups: BTreeMap<Key, usize>,
    ops_accounts: Vec<Op>,
    ops_members: Vec<Op>,
    ops_prune: Vec<Op>,
    statuses: BTreeMap<Target, ObjectStatus>,
    wakeup: Option<jiff::Timestamp>,
    /// Removal-caused transitions the guard still allows in this plan (`None`: unlimited).
    budget: Option<usize>,
    /// (username, group): memberships of identities this run does not declare that it keeps.
    retained: BTreeSet<(String, String)>,
}

/// Plans the convergence of `site` into the directory as `observed`.
pub fn plan(site: &Site, observed: &Observed, now: jiff::Timestamp, policy: &Policy) -> Plan {
    let mut p = Planner {
        site,
        index: Index::new(site, observed),
        observed,
        now,
        policy,
        ops_groups: vec![],
        new_groups: BTreeMap::new(),
        ops_accounts: vec![],
        ops_members: vec![],
        ops_prune: vec![],
        statuses: BTreeMap::new(),
        wakeup: None,
        budget: None,
        retained: BTreeSet::new(),
    };
    p.budget = guard_budget(policy.config, observed, now);
    p.run();
    let mut ops = p.ops_groups;
    ops.extend(p.ops_accounts);
    ops.extend(p.ops_members);
    ops.extend(p.ops_prune);
    Plan {
        ops,
        objects: p.statuses.into_values().collect(),
        next_wakeup: p.wakeup,
        now,
        retained: p.retained,
    }
}

impl<'a> Planner<'a> {
    fn config(&self) -> &'a Config {
        self.policy.config
    }

    fn run(&mut self) {
        let project_gids = self.plan_projects();
        let usable_accounts = self.plan_accounts(&project_gids);
        self.return_reactivated_to_the_guard();
        let purged = self.plan_removals();
        self.plan_project_removals();
        self.plan_memberships(&usable_accounts, &purged);
        self.plan_people();
        let mut pending: BTreeMap<Target, usize> = BTreeMap::new();
        for op in self
            .ops_groups
            .iter()
            .chain(&self.ops_accounts)
            .chain(&self.ops_members)
            .chain(&self.ops_prune)
        {
            *pending.entry(op.target().clone()).or_default() += 1;
        }
        for s in self.statuses.values_mut() {
            let changes = pending.get(&s.target).copied().unwrap_or(0);
            if s.phase == Phase::Pending && changes == 0 {
                s.phase = Phase::Active;
            }
            let (ready, reason, msg) = if s.is_blocked() {
                (false, "NotConverged", s.message().unwrap_or("").to_string())
            } else if changes > 0 {
                (
                    false,
                    "Pending",
                    format!("{changes} directory change(s) pending"),
                )
            } else {
                (true, "Converged", String::new())
            };
            if !s.is_blocked() && s.target.kind != Kind::Person {
                let (ok, why) = if changes > 0 {
                    (false, "OutOfSync")
                } else {
                    (true, "InSync")
                };
                s.conditions.push(cond("LdapSynced", ok, why, msg.clone()));
            }
            s.conditions.push(cond("Ready", ready, reason, msg));
        }
    }

    fn status(&mut self, kind: Kind, key: &Key) -> &mut ObjectStatus {
        let target = Target {
            kind,
            key: key.clone(),
        };
        self.statuses
            .entry(target.clone())
            .or_insert_with(|| ObjectStatus::new(target))
    }

    fn wake_at(&mut self, t: jiff::Timestamp) {
        if t > self.now && self.wakeup.is_none_or(|w| t < w) {
            self.wakeup = Some(t);
        }
    }
}

/// `rosterOwner` split into `[managerId, namespace, kind, name]`, with the whole value.
fn parse_owner(e: &Entry) -> Option<(&str, [&str; 4])> {
    let o = e.owned_by()?;
    Some((e.owner()?, [o.manager, o.namespace, o.kind, o.name]))
}

fn deactivation_message(reason: &str, key: &Key) -> String {
    match reason {
        "Locked" => format!("Account {key} is locked (spec.locked)"),
        "PersonLocked" => format!("the Person of Account {key} is locked"),
        "Expired" => format!("Account {key} is past its validUntil"),
        other => other.to_string(),
    }
}

fn adopt<K: kube::Resource>(obj: &K) -> bool {
    obj.meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::api::ADOPT_ANNOTATION))
        .is_some_and(|v| v == ADOPT)
}

/// Sets an attribute to the given values (none: the attribute must be absent).
fn set<I: IntoIterator<Item = String>>(attrs: &mut Attrs, name: &str, values: I) {
    let mut v: Vec<String> = values.into_iter().collect();
    v.sort();
    v.dedup();
    attrs.insert(name.to_string(), v);
}

/// objectClass values to add to an existing entry.
fn adoption_changes(e: &Entry, wanted: &[&str]) -> Vec<AttrChange> {
    let missing: Vec<String> = wanted
        .iter()
        .filter(|c| !e.has_class(c))
        .map(|c| c.to_string())
        .collect();
    if missing.is_empty() {
        vec![]
    } else {
        vec![AttrChange::Add("objectClass".into(), missing)]
    }
}

/// Replace changes for every managed attribute whose values differ from the entry's.
fn diff(e: &Entry, want: &Attrs) -> Vec<AttrChange> {
    let mut out = vec![];
    for (name, values) in want {
        if name == "objectClass" {
            continue;
        }
        let mut have: Vec<String> = e.values(name).to_vec();
        have.sort();
        have.dedup();
        if &have != values {
            out.push(AttrChange::Replace(name.clone(), values.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests;
