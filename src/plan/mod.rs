//! The pure heart of Roster: declared state + observed directory + now + policy → ordered
//! operations, the status of every object, and the next wake-up. No I/O happens here.

pub mod directory;
mod model;
pub mod simulate;

pub use model::*;

use std::collections::{BTreeMap, BTreeSet};

use ldap3::dn_escape;

use crate::api::{
    Account, DeletionPolicy, Person, Phase, Project, RESERVED_USERNAMES, parse_duration,
    parse_valid_until,
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

    /// Decides whether a declared object may own `existing` (or create it), per DESIGN.md §5.2.
    #[allow(clippy::too_many_arguments)]
    fn claim<'o>(
        &self,
        kind: Kind,
        key: &Key,
        what: &str,
        existing: Option<&'o Entry>,
        tombstone: Option<&'o Entry>,
        identity: &str,
        adopt_annotation: bool,
    ) -> Result<Claim<'o>, (&'static str, String)> {
        let cfg = self.config();
        let mine = owner(cfg, kind, key);
        let my_prefix = format!("{}/", cfg.manager_id);
        match existing {
            None => match tombstone {
                None => Ok(Claim::New { number: None }),
                Some(t) if t.first("rosterIdentity") == Some(identity) => Ok(Claim::New {
                    number: t.number(if kind == Kind::Account {
                        "uidNumber"
                    } else {
                        "gidNumber"
                    }),
                }),
                Some(_) => Err((
                    "NameRetired",
                    format!(
                        "{what} belonged to an identity that was purged; names are never reused"
                    ),
                )),
            },
            Some(e) => match e.owner() {
                Some(o) if o == mine => Ok(Claim::Managed(e)),
                Some(o)
                    if o.starts_with(&my_prefix) && e.first("rosterIdentity") == Some(identity) =>
                {
                    Ok(Claim::Managed(e))
                }
                Some(o) if !o.starts_with(&my_prefix) => Err((
                    "OwnedElsewhere",
                    format!(
                        "{what} is managed by another Roster installation (managerId {:?})",
                        o.split('/').next().unwrap_or("")
                    ),
                )),
                Some(_) => Err((
                    "NameTaken",
                    format!("{what} is already taken by another identity"),
                )),
                None => {
                    let a = &cfg.adoption;
                    if adopt_annotation
                        && a.enabled
                        && a.namespaces.iter().any(|n| n == &key.namespace)
                    {
                        Ok(Claim::Adopt(e))
                    } else {
                        Err((
                            "Unmanaged",
                            format!(
                                "{what} exists ({}) and is not managed by Roster; adoption needs adoption.enabled with namespace {} in the config and the annotation roster.io/adopt: \"true\"",
                                e.dn, key.namespace
                            ),
                        ))
                    }
                }
            },
        }
    }

    /// Projects first: their groups must exist before accounts name them as primary group.
    /// Returns group name → the gid it has or will get.
    fn plan_projects(&mut self) -> BTreeMap<String, Number> {
        let cfg = self.config();
        let mut gids = BTreeMap::new();
        let mut names_seen: BTreeMap<String, Key> = BTreeMap::new();
        let mut gid_seen: BTreeMap<i64, Key> = BTreeMap::new();
        // The Project that owns its group in the directory is planned first, so a claim on the
        // same name from another object (another namespace) is the one in Conflict, never the
        // owner.
        let mut projects: Vec<(&Key, &Project)> = self.site.projects.iter().collect();
        projects.sort_by_key(|(key, project)| {
            let mine = owner(cfg, Kind::Project, key);
            let owns = self
                .observed
                .groups
                .get(&group_name(project))
                .is_some_and(|e| e.owner() == Some(mine.as_str()));
            !owns
        });
        for (key, project) in projects {
            let group = group_name(project);
            let status = self.status(Kind::Project, key);
            status.dn = None;
            if let Some(first) = names_seen.get(&group) {
                let m = format!("groupName {group} is also declared by Project {first}");
                conflict(status, "NameTaken", m);
                continue;
            }
            names_seen.insert(group.clone(), key.clone());
            if let Some(g) = project.spec.gid_number {
                if let Some(first) = gid_seen.get(&g) {
                    let m = format!("spec.gidNumber {g} is also declared by Project {first}");
                    conflict(status, "NumberTaken", m);
                    continue;
                }
                gid_seen.insert(g, key.clone());
            }
            let mut purged = vec![];
            for (field, list) in [
                ("leaders", &project.spec.leaders),
                ("members", &project.spec.members),
            ] {
                for (i, u) in list.iter().enumerate() {
                    if self.username_purged(u) {
                        // Roster's own account, purged: it is no member any more, and the
                        // project carries on (a stale list must not freeze it).
                        purged.push(format!("spec.{field}[{i}] {u}"));
                    } else if !self.username_exists(u) {
                        let m = format!(
                            "spec.{field}[{i}]: no Account with username {u:?} is declared or in the directory"
                        );
                        invalid(self.status(Kind::Project, key), "UnknownMember", m);
                    }
                }
            }
            if !purged.is_empty() {
                let m = format!(
                    "{} name purged accounts and are left out; remove them from the list",
                    purged.join(", ")
                );
                self.status(Kind::Project, key).conditions.push(cond(
                    "MembersPurged",
                    true,
                    "AccountPurged",
                    m,
                ));
            }
            if self.status(Kind::Project, key).is_blocked() {
                continue;
            }
            let what = format!("group {group}");
            if let Some(dns) = self.observed.duplicate_groups.get(&group) {
                let m = format!(
                    "{what} is held by {} directory entries ({}); Roster will not pick one: remove the extra entries",
                    dns.len(),
                    dns.join("; ")
                );
                conflict(self.status(Kind::Project, key), "DuplicateEntries", m);
                continue;
            }
            let identity = format!("{}/Project/{}", key.namespace, key.name);
            let existing = self.observed.groups.get(&group);
            let tomb = self.observed.tombstones.get(&format!("Project:{group}"));
            let claim = match self.claim(
                Kind::Project,
                key,
                &what,
                existing,
                tomb,
                &identity,
                adopt(project),
            ) {
                Ok(c) => c,
                Err((reason, m)) => {
                    conflict(self.status(Kind::Project, key), reason, m);
                    continue;
                }
            };
            let declared = project.spec.gid_number.map(|g| g as u32);
            let existing_gid = match &claim {
                Claim::Managed(e) | Claim::Adopt(e) => e.number("gidNumber"),
                Claim::New { number } => *number,
            };
            if let (Some(d), Some(e)) = (declared, existing_gid)
                && d != e
            {
                let m = format!(
                    "spec.gidNumber {d} differs from the directory's {e}; gid numbers never change"
                );
                invalid(self.status(Kind::Project, key), "NumberMismatch", m);
                continue;
            }
            if let Some(m) = outside_range("gidNumber", declared, &claim, cfg.gid_range) {
                invalid(self.status(Kind::Project, key), "NumberOutOfRange", m);
                continue;
            }
            if let (Some(d), Claim::New { .. }) = (declared, &claim)
                && self.index.gids_in_use.contains(&d)
            {
                let m = format!("spec.gidNumber {d} is already used by another group");
                conflict(self.status(Kind::Project, key), "NumberTaken", m);
                continue;
            }
            let number = existing_gid.or(declared);
            let dn = match &claim {
                Claim::Managed(e) | Claim::Adopt(e) => e.dn.clone(),
                Claim::New { .. } => {
                    format!("cn={},{}", dn_escape(group.as_str()), cfg.groups_dn())
                }
            };
            let mut attrs = Attrs::new();
            set(&mut attrs, "cn", [group.clone()]);
            set(&mut attrs, "description", project.spec.description.clone());
            set(&mut attrs, "rosterOwner", [owner(cfg, Kind::Project, key)]);
            set(&mut attrs, "rosterKind", ["Project".to_string()]);
            set(&mut attrs, "rosterIdentity", [identity.clone()]);
            set(&mut attrs, "rosterState", ["Active".to_string()]);
            // Declared again before its purge: the removal is undone.
            set(&mut attrs, "rosterGoneAt", None::<String>);
            set(&mut attrs, "rosterDeactivateAt", None::<String>);
            set(&mut attrs, "rosterDeactivatedAt", None::<String>);
            set(&mut attrs, "rosterPurgeAt", None::<String>);
            let target = Target {
                kind: Kind::Project,
                key: key.clone(),
            };
            match claim {
                Claim::New { .. } => {
                    set(
                        &mut attrs,
                        "objectClass",
                        ["posixGroup".to_string(), "rosterManaged".to_string()],
                    );
                    let gid = number.map(Number::Fixed).unwrap_or(Number::Allocate);
                    gids.insert(group.clone(), gid.clone());
                    self.new_groups.insert(key.clone(), self.ops_groups.len());
                    self.ops_groups.push(Op::Add {
                        target,
                        dn: dn.clone(),
                        attrs,
                        uid: None,
                        gid: Some(gid),
                        what,
                    });
                }
                Claim::Managed(e) | Claim::Adopt(e) => {
                    let number = number.unwrap_or(0);
                    gids.insert(group.clone(), Number::Fixed(number));
                    let mut changes = adoption_changes(e, &["rosterManaged"]);
                    if changes
                        .iter()
                        .any(|c| matches!(c, AttrChange::Add(a, _) if a == "objectClass"))
                    {
                        set(&mut attrs, "rosterAdopted", ["TRUE".to_string()]);
                    }
                    changes.extend(diff(e, &attrs));
                    if !changes.is_empty() {
                        self.ops_groups.push(Op::Modify {
                            target,
                            dn: dn.clone(),
                            changes,
                            what,
                        });
                    }
                }
            }
            let s = self.status(Kind::Project, key);
            s.dn = Some(dn);
            s.gid_number = number;
        }
        gids
    }

    /// A username names an account that will exist: declared (and not blocked) or in the directory.
    /// A username that is only a tombstone of Roster's (purged, not declared again).
    fn username_purged(&self, username: &str) -> bool {
        !self.username_exists(username)
            && self
                .observed
                .tombstones
                .get(&format!("Account:{username}"))
                .and_then(parse_owner)
                .is_some_and(|(_, [mgr, ..])| mgr == self.config().manager_id)
    }

    fn username_exists(&self, username: &str) -> bool {
        self.index.declared_usernames.contains(username)
            || self.observed.accounts.contains_key(username)
    }

    /// Accounts: ownership, numbers, attributes, lock state. Returns the usernames that are
    /// (or will be) in the directory under Roster's management, for group membership.
    fn plan_accounts(&mut self, project_gids: &BTreeMap<String, Number>) -> BTreeSet<String> {
        let cfg = self.config();
        let mut usable = BTreeSet::new();
        let mut names_seen: BTreeMap<String, Key> = BTreeMap::new();
        let mut uid_seen: BTreeMap<i64, Key> = BTreeMap::new();
        let declared_groups: BTreeSet<String> =
            self.site.projects.values().map(group_name).collect();
        // Accounts that own their entry in the directory are planned first (see plan_projects):
        // another namespace declaring the same username or uid cannot knock the owner out.
        let mut accounts: Vec<(&Key, &Account)> = self.site.accounts.iter().collect();
        accounts.sort_by_key(|(key, account)| {
            let mine = owner(cfg, Kind::Account, key);
            let owns = self
                .observed
                .accounts
                .get(&account.spec.username)
                .is_some_and(|e| e.owner() == Some(mine.as_str()));
            !owns
        });
        for (key, account) in accounts {
            let spec = &account.spec;
            let username = spec.username.clone();
            let target = Target {
                kind: Kind::Account,
                key: key.clone(),
            };
            self.status(Kind::Account, key);
            // Admission-equivalent checks that also hold in file mode.
            if RESERVED_USERNAMES.contains(&username.as_str()) {
                invalid(
                    self.status(Kind::Account, key),
                    "ReservedName",
                    format!("spec.username {username:?} is reserved for a system account"),
                );
                continue;
            }
            if let Some(first) = names_seen.get(&username) {
                let m = format!("spec.username {username} is also declared by Account {first}");
                conflict(self.status(Kind::Account, key), "NameTaken", m);
                continue;
            }
            names_seen.insert(username.clone(), key.clone());
            if let Some(u) = spec.uid_number {
                if let Some(first) = uid_seen.get(&u) {
                    let m = format!("spec.uidNumber {u} is also declared by Account {first}");
                    conflict(self.status(Kind::Account, key), "NumberTaken", m);
                    continue;
                }
                uid_seen.insert(u, key.clone());
            }
            let person_key = Key::new(&key.namespace, &spec.person);
            let person = self.site.people.get(&person_key);
            if person.is_none() {
                let m = format!(
                    "spec.person: no Person {:?} in namespace {}",
                    spec.person, key.namespace
                );
                invalid(self.status(Kind::Account, key), "PersonMissing", m);
            }
            for (i, p) in spec.projects.iter().enumerate() {
                if !self
                    .site
                    .projects
                    .contains_key(&Key::new(&key.namespace, p))
                {
                    let m = format!(
                        "spec.projects[{i}]: no Project {p:?} in namespace {}",
                        key.namespace
                    );
                    invalid(self.status(Kind::Account, key), "ProjectMissing", m);
                }
            }
            let memberships = self.memberships_of(account);
            let default_group = match &spec.default_project {
                Some(p) => match self.site.projects.get(&Key::new(&key.namespace, p)) {
                    None => {
                        let m = format!(
                            "spec.defaultProject: no Project {p:?} in namespace {}",
                            key.namespace
                        );
                        invalid(self.status(Kind::Account, key), "ProjectMissing", m);
                        None
                    }
                    Some(proj) => {
                        let g = group_name(proj);
                        if !memberships.contains(&g) {
                            let m = format!(
                                "spec.defaultProject: {p:?} is not one of the account's projects ({})",
                                memberships.iter().cloned().collect::<Vec<_>>().join(", ")
                            );
                            invalid(self.status(Kind::Account, key), "NotAMember", m);
                        }
                        Some(g)
                    }
                },
                None => None,
            };
            if cfg.defaults.primary_group == PrimaryGroup::DefaultProject
                && spec.default_project.is_none()
            {
                invalid(self.status(Kind::Account, key), "DefaultProjectRequired", "spec.defaultProject is required: the site's primary group is the default project's group".into());
            }
            if self.status(Kind::Account, key).is_blocked() {
                continue;
            }
            let person = person.expect("checked above");
            let identity = format!("{}/{}", key.namespace, spec.person);
            let what = format!("username {username}");
            if let Some(dns) = self.observed.duplicate_accounts.get(&username) {
                let m = format!(
                    "{what} is held by {} directory entries ({}); Roster will not pick one: remove the extra entries",
                    dns.len(),
                    dns.join("; ")
                );
                conflict(self.status(Kind::Account, key), "DuplicateEntries", m);
                continue;
            }
            let existing = self.observed.accounts.get(&username);
            let tomb = self.observed.tombstones.get(&format!("Account:{username}"));
            let claim = match self.claim(
                Kind::Account,
                key,
                &what,
                existing,
                tomb,
                &identity,
                adopt(account),
            ) {
                Ok(c) => c,
                Err((reason, m)) => {
                    conflict(self.status(Kind::Account, key), reason, m);
                    continue;
                }
            };
            if let Claim::Adopt(e) = &claim {
                if !e.has_class("inetOrgPerson") {
                    let m = format!("{} cannot be adopted: it is not an inetOrgPerson", e.dn);
                    conflict(self.status(Kind::Account, key), "NotAdoptable", m);
                    continue;
                }
                if let Some(u) = e.number("uidNumber")
                    && !cfg.uid_range.contains(u)
                {
                    let m = format!(
                        "{} cannot be adopted: uidNumber {u} is outside the configured uidRange",
                        e.dn
                    );
                    conflict(self.status(Kind::Account, key), "NotAdoptable", m);
                    continue;
                }
            }
            let declared = spec.uid_number.map(|u| u as u32);
            let existing_uid = match &claim {
                Claim::Managed(e) | Claim::Adopt(e) => e.number("uidNumber"),
                Claim::New { number } => *number,
            };
            if let (Some(d), Some(e)) = (declared, existing_uid)
                && d != e
            {
                let m = format!(
                    "spec.uidNumber {d} differs from the directory's {e}; uid numbers never change"
                );
                invalid(self.status(Kind::Account, key), "NumberMismatch", m);
                continue;
            }
            // (The personal group's gid is the uid.)
            if let Some(m) = outside_range("uidNumber", declared, &claim, cfg.uid_range) {
                invalid(self.status(Kind::Account, key), "NumberOutOfRange", m);
                continue;
            }
            if let (Some(d), Claim::New { number: None }) = (declared, &claim)
                && self.index.uids_in_use.contains(&d)
            {
                let m = format!("spec.uidNumber {d} is already used by another account");
                conflict(self.status(Kind::Account, key), "NumberTaken", m);
                continue;
            }
            // The personal group shares the account's name and number.
            let personal = cfg.defaults.primary_group == PrimaryGroup::Personal;
            let personal_existing = self.observed.groups.get(&username);
            if personal {
                let mine = owner(cfg, Kind::Account, key);
                // A Project declaring the name of a personal group this account already owns
                // is that Project's Conflict, not the account's.
                let owned = personal_existing.is_some_and(|g| g.owner() == Some(mine.as_str()));
                let clash = (declared_groups.contains(&username) && !owned)
                    || personal_existing.is_some_and(|g| {
                        g.owner() != Some(mine.as_str())
                            && !(g.first("rosterIdentity") == Some(identity.as_str())
                                && g.owner().is_some_and(|o| {
                                    o.starts_with(&format!("{}/", cfg.manager_id))
                                }))
                    });
                if clash {
                    let m = format!(
                        "the personal group {username} cannot be created: a group with that name exists or is declared"
                    );
                    conflict(self.status(Kind::Account, key), "GroupNameTaken", m);
                    continue;
                }
            }
            let uid_number = existing_uid.or(declared);
            let (gid, gid_number) = if personal {
                (
                    uid_number
                        .map(Number::Fixed)
                        .unwrap_or(Number::UidOfAccount(username.clone())),
                    uid_number,
                )
            } else {
                let g = default_group.clone().unwrap_or_default();
                match project_gids.get(&g) {
                    Some(Number::Fixed(n)) => (Number::Fixed(*n), Some(*n)),
                    _ => (Number::GidOfGroup(g), None),
                }
            };

            // Lifecycle in this slice: locked or expired (account or person) → deactivated.
            let expiry = [
                spec.valid_until.as_deref(),
                person.spec.valid_until.as_deref(),
            ]
            .into_iter()
            .flatten()
            .filter_map(|v| parse_valid_until(v).ok())
            .min();
            let reason = if spec.locked {
                Some("Locked")
            } else if person.spec.locked {
                Some("PersonLocked")
            } else if expiry.is_some_and(|e| e <= self.now) {
                Some("Expired")
            } else {
                None
            };
            let next_transition = match (reason, expiry) {
                (None, Some(e)) if e > self.now => {
                    self.wake_at(e);
                    Some(("Expire", e))
                }
                _ => None,
            };
            // Announce expiry ahead of time (gracePeriods.expiryWarning).
            let expiring = match next_transition {
                Some((_, e)) => {
                    let warn = signed(&cfg.grace_periods.expiry_warning, 14);
                    let from = e.checked_sub(warn).unwrap_or(self.now);
                    if from <= self.now {
                        Some(e)
                    } else {
                        self.wake_at(from);
                        None
                    }
                }
                None => None,
            };
            let existing_entry = match &claim {
                Claim::Managed(e) | Claim::Adopt(e) => Some(*e),
                Claim::New { .. } => None,
            };
            let attrs = self.account_attrs(
                key,
                account,
                person,
                &identity,
                reason,
                expiry,
                existing_entry,
            );
            let dn = match existing_entry {
                Some(e) => e.dn.clone(),
                None => format!("uid={},{}", dn_escape(username.as_str()), cfg.people_dn()),
            };
            match claim {
                Claim::New { .. } => {
                    let mut attrs = attrs;
                    let mut classes = vec![
                        "inetOrgPerson",
                        "posixAccount",
                        "shadowAccount",
                        "rosterManaged",
                    ];
                    if !spec.ssh_public_keys.is_empty() {
                        classes.push("ldapPublicKey");
                    }
                    set(
                        &mut attrs,
                        "objectClass",
                        classes.iter().map(|c| c.to_string()),
                    );
                    set(&mut attrs, "uid", [username.clone()]);
                    let uid = uid_number.map(Number::Fixed).unwrap_or(Number::Allocate);
                    self.ops_accounts.push(Op::Add {
                        target: target.clone(),
                        dn: dn.clone(),
                        attrs,
                        uid: Some(uid),
                        gid: Some(gid.clone()),
                        what: what.clone(),
                    });
                }
                Claim::Managed(e) | Claim::Adopt(e) => {
                    let mut attrs = attrs;
                    let mut wanted = vec!["rosterManaged", "shadowAccount"];
                    if !spec.ssh_public_keys.is_empty() {
                        wanted.push("ldapPublicKey");
                    }
                    let mut changes = adoption_changes(e, &wanted);
                    if e.owner().is_none() {
                        set(&mut attrs, "rosterAdopted", ["TRUE".to_string()]);
                    }
                    if let Number::Fixed(n) = &gid {
                        set(&mut attrs, "gidNumber", [n.to_string()]);
                    }
                    changes.extend(diff(e, &attrs));
                    if spec.ssh_public_keys.is_empty() && e.has_class("ldapPublicKey") {
                        changes.push(AttrChange::Delete(
                            "objectClass".into(),
                            vec!["ldapPublicKey".into()],
                        ));
                    }
                    if !changes.is_empty() {
                        self.ops_accounts.push(Op::Modify {
                            target: target.clone(),
                            dn: dn.clone(),
                            changes,
                            what: what.clone(),
                        });
                    }
                }
            }
            if personal {
                self.plan_personal_group(key, &username, &identity, uid_number, personal_existing);
            }
            usable.insert(username.clone());
            let now = self.now;
            let s = self.status(Kind::Account, key);
            s.dn = Some(dn);
            s.uid_number = uid_number;
            s.gid_number = gid_number;
            s.projects = memberships.into_iter().collect();
            s.next_transition = next_transition;
            if let Some(e) = expiring {
                let days = (e.as_second() - now.as_second()).div_euclid(86_400);
                s.conditions.push(cond(
                    "Expiring",
                    true,
                    "ValidUntilSoon",
                    format!("Account {key} expires at {e} (in {days} days); extend validUntil to keep it"),
                ));
            }
            if let Some(r) = reason {
                s.phase = Phase::Deactivated;
                s.conditions
                    .push(cond("Deactivated", true, r, deactivation_message(r, key)));
            }
        }
        usable
    }

    fn plan_personal_group(
        &mut self,
        key: &Key,
        username: &str,
        identity: &str,
        uid: Option<u32>,
        existing: Option<&Entry>,
    ) {
        let cfg = self.config();
        let target = Target {
            kind: Kind::Account,
            key: key.clone(),
        };
        let mut attrs = Attrs::new();
        set(&mut attrs, "cn", [username.to_string()]);
        set(&mut attrs, "rosterOwner", [owner(cfg, Kind::Account, key)]);
        set(&mut attrs, "rosterKind", ["PersonalGroup".to_string()]);
        set(&mut attrs, "rosterIdentity", [identity.to_string()]);
        set(&mut attrs, "rosterState", ["Active".to_string()]);
        let what = format!("personal group {username}");
        match existing {
            None => {
                set(
                    &mut attrs,
                    "objectClass",
                    ["posixGroup".to_string(), "rosterManaged".to_string()],
                );
                let gid = uid
                    .map(Number::Fixed)
                    .unwrap_or(Number::UidOfAccount(username.to_string()));
                let dn = format!("cn={},{}", dn_escape(username), cfg.groups_dn());
                self.ops_accounts.push(Op::Add {
                    target,
                    dn,
                    attrs,
                    uid: None,
                    gid: Some(gid),
                    what,
                });
            }
            Some(e) => {
                let changes = diff(e, &attrs);
                if !changes.is_empty() {
                    self.ops_accounts.push(Op::Modify {
                        target,
                        dn: e.dn.clone(),
                        changes,
                        what,
                    });
                }
            }
        }
    }

    /// The group names of every project whose effective membership includes the account.
    fn memberships_of(&self, account: &Account) -> BTreeSet<String> {
        self.index
            .memberships
            .get(&account.spec.username)
            .cloned()
            .unwrap_or_default()
    }

    #[allow(clippy::too_many_arguments)]
    fn account_attrs(
        &self,
        key: &Key,
        account: &Account,
        person: &Person,
        identity: &str,
        deactivated: Option<&str>,
        expiry: Option<jiff::Timestamp>,
        existing: Option<&Entry>,
    ) -> Attrs {
        let cfg = self.config();
        let spec = &account.spec;
        let p = &person.spec;
        let mut a = Attrs::new();
        let display = p
            .display_name
            .clone()
            .unwrap_or_else(|| format!("{} {}", p.given_name, p.family_name));
        set(&mut a, "cn", [display.clone()]);
        set(&mut a, "sn", [p.family_name.clone()]);
        set(&mut a, "givenName", [p.given_name.clone()]);
        set(&mut a, "displayName", p.display_name.clone());
        set(&mut a, "mail", p.email.clone());
        set(&mut a, "o", p.institute.clone());
        set(&mut a, "ou", p.department.clone());
        set(&mut a, "telephoneNumber", p.telephone_number.clone());
        let home = spec.home_directory.clone().unwrap_or_else(|| {
            cfg.defaults
                .home_directory
                .replace("{username}", &spec.username)
        });
        set(&mut a, "homeDirectory", [home]);
        set(
            &mut a,
            "loginShell",
            [spec
                .login_shell
                .clone()
                .unwrap_or_else(|| cfg.defaults.login_shell.clone())],
        );
        set(&mut a, "sshPublicKey", spec.ssh_public_keys.iter().cloned());
        set(&mut a, "rosterOwner", [owner(cfg, Kind::Account, key)]);
        set(&mut a, "rosterKind", ["Account".to_string()]);
        set(&mut a, "rosterIdentity", [identity.to_string()]);
        // Imported accounts carry their (sourceUID, recordUID): the import finds its own
        // identities in the directory, before and after a purge.
        let note = |k: &str| {
            account
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(k))
                .cloned()
        };
        set(
            &mut a,
            "rosterSourceUID",
            note(crate::api::SOURCE_UID_ANNOTATION),
        );
        set(
            &mut a,
            "rosterRecordUID",
            note(crate::api::RECORD_UID_ANNOTATION),
        );
        set(&mut a, "rosterGoneAt", None::<String>);
        set(&mut a, "rosterDeactivateAt", None::<String>);
        set(&mut a, "rosterPurgeAt", None::<String>);
        match deactivated {
            Some(_) => {
                set(&mut a, "pwdAccountLockedTime", [LOCKED_FOREVER.to_string()]);
                set(&mut a, "shadowExpire", ["1".to_string()]);
                set(&mut a, "rosterState", ["Deactivated".to_string()]);
                let since = existing
                    .filter(|e| e.first("rosterState") == Some("Deactivated"))
                    .and_then(|e| e.first("rosterDeactivatedAt").map(str::to_string))
                    .unwrap_or_else(|| generalized_time(self.now));
                set(&mut a, "rosterDeactivatedAt", [since]);
            }
            None => {
                set(&mut a, "pwdAccountLockedTime", None::<String>);
                // shadowExpire: the first UTC day (days since 1970-01-01) that begins at or
                // after the end of validity. A consumer refuses from the start of that day
                // (shadow's rule: today >= shadowExpire), so rounding down would lock up to a
                // day early; validity ending mid-day is enforced to the second by the lock at
                // deactivation, and by the day count only from the next midnight.
                set(
                    &mut a,
                    "shadowExpire",
                    expiry.map(|e| (e.as_second() + 86_399).div_euclid(86_400).to_string()),
                );
                set(&mut a, "rosterState", ["Active".to_string()]);
                set(&mut a, "rosterDeactivatedAt", None::<String>);
            }
        }
        a
    }

    /// memberUid of every project group = its effective members that exist or will exist.
    fn plan_memberships(&mut self, usable: &BTreeSet<String>, purged: &BTreeSet<String>) {
        let retained = self.undeclared_accounts(purged);
        for (key, project) in &self.site.projects {
            let Some(status) = self.statuses.get(&Target {
                kind: Kind::Project,
                key: key.clone(),
            }) else {
                continue;
            };
            if status.is_blocked() {
                continue;
            }
            let dn = status.dn.clone().unwrap_or_default();
            let group = group_name(project);
            let mut members = self.index.effective_members(key, project);
            // A declared account that is Invalid or in Conflict is never written, and its name
            // may belong to someone else: leave it out. Undeclared names must be in the directory.
            members.retain(|u| {
                usable.contains(u)
                    || (!self.index.declared_usernames.contains(u.as_str())
                        && self.observed.accounts.contains_key(u)
                        && !purged.contains(u))
            });
            let target = Target {
                kind: Kind::Project,
                key: key.clone(),
            };
            let existing = self.observed.groups.get(&group).filter(|e| e.dn == dn);
            // Nothing of an undeclared identity is taken before its purge: Roster's accounts
            // of the project's namespace that this run does not declare (absent without
            // --prune, removed and not purged yet) and those of an import that did not run keep
            // the memberships the directory holds. The directory is where an aborted source's
            // last contribution is read from.
            if let Some(e) = existing {
                for u in e.values("memberUid") {
                    if retained
                        .get(u.as_str())
                        .is_some_and(|(ns, kept)| *kept || *ns == key.namespace)
                    {
                        members.insert(u.clone());
                    }
                }
            }
            // What Slurm keeps of identities this run does not declare: their memberships here.
            for u in &members {
                if !self.index.declared_usernames.contains(u.as_str()) {
                    self.retained.insert((u.clone(), group.clone()));
                }
            }
            let want: Vec<String> = members.iter().cloned().collect();
            let count = want.len();
            match existing {
                None => {
                    // A new group: put the members into its Add.
                    if let Some(&i) = self.new_groups.get(key)
                        && let Op::Add { attrs, .. } = &mut self.ops_groups[i]
                    {
                        set(attrs, "memberUid", want.iter().cloned());
                    }
                }
                Some(e) => {
                    let have: BTreeSet<String> = e.values("memberUid").iter().cloned().collect();
                    let add: Vec<String> = members.difference(&have).cloned().collect();
                    let del: Vec<String> = have.difference(&members).cloned().collect();
                    let mut changes = vec![];
                    if !add.is_empty() {
                        changes.push(AttrChange::Add("memberUid".into(), add));
                    }
                    if !del.is_empty() {
                        changes.push(AttrChange::Delete("memberUid".into(), del));
                    }
                    if !changes.is_empty() {
                        self.ops_members.push(Op::Modify {
                            target,
                            dn,
                            changes,
                            what: format!("members of group {group}"),
                        });
                    }
                }
            }
            if let Some(s) = self.statuses.get_mut(&Target {
                kind: Kind::Project,
                key: key.clone(),
            }) {
                s.members = count;
            }
        }
    }

    /// Roster's accounts in the directory that this run does not declare and does not purge:
    /// username → (namespace, whether an import that did not run protects it).
    fn undeclared_accounts(&self, purged: &BTreeSet<String>) -> BTreeMap<&'a str, (&'a str, bool)> {
        let cfg = self.config();
        let mut out = BTreeMap::new();
        for (u, e) in &self.observed.accounts {
            let Some((_, [mgr, ns, kind, name])) = parse_owner(e) else {
                continue;
            };
            if mgr != cfg.manager_id
                || kind != "Account"
                || self.index.declared_usernames.contains(u.as_str())
                || purged.contains(u)
            {
                continue;
            }
            let kept = self.policy.keep.contains(&Key::new(ns, name));
            out.insert(u.as_str(), (ns, kept));
        }
        out
    }

    /// A Person's phase follows its accounts.
    fn plan_people(&mut self) {
        for (key, person) in &self.site.people {
            let accounts: Vec<Phase> = self
                .index
                .accounts_of_person
                .get(key)
                .into_iter()
                .flatten()
                .filter_map(|k| {
                    self.statuses
                        .get(&Target {
                            kind: Kind::Account,
                            key: k.clone(),
                        })
                        .map(|s| s.phase)
                })
                .collect();
            let expired = person
                .spec
                .valid_until
                .as_deref()
                .and_then(|v| parse_valid_until(v).ok())
                .is_some_and(|e| e <= self.now);
            let phase = if person.spec.locked || expired {
                Phase::Deactivated
            } else if accounts.contains(&Phase::Active)
                || accounts.contains(&Phase::Pending)
                || accounts.is_empty()
            {
                Phase::Active
            } else {
                accounts[0]
            };
            let s = self.status(Kind::Person, key);
            s.phase = phase;
            s.members = accounts.len();
        }
    }

    /// Accounts gone from the declaration: `--prune` in file mode (Roster's accounts in the
    /// declared namespaces that are no longer declared) and deleted objects in operator mode.
    /// They are deactivated at once with `purgeAt = max(goneAt + grace, deactivatedAt)` recorded
    /// in the directory (which is authoritative for it), and purged when that time has come:
    /// the tombstone first, so a crash can never free the name or the numbers, then the entries.
    /// Returns the usernames purged by this plan.
    fn plan_removals(&mut self) -> BTreeSet<String> {
        let cfg = self.config();
        let namespaces = self.site.namespaces();
        let site_grace = signed(&cfg.grace_periods.account_purge_after, 90);
        let mut purged = BTreeSet::new();
        let entries: Vec<&'a Entry> = self.observed.accounts.values().collect();
        for e in entries {
            let Some((o, [mgr, ns, kind, name])) = parse_owner(e) else {
                continue;
            };
            if mgr != cfg.manager_id || kind != "Account" {
                continue;
            }
            let key = Key::new(ns, name);
            if self.site.accounts.contains_key(&key) {
                continue;
            }
            // A run that declares the removal (a deletion, an import's gone record, --prune)
            // decides its deadlines, once, from that object's policy; any other run only carries
            // out what the directory records (DESIGN.md §5.2).
            let (policy, why, decides) = match self.policy.removed.get(&key) {
                Some(p) => (*p, format!("Account {key} was deleted"), true),
                None if self.policy.prune
                    && namespaces.contains(ns)
                    && !self.policy.keep.contains(&key) =>
                {
                    (
                        DeletionPolicy::Deactivate,
                        format!("Account {key} is no longer declared (--prune)"),
                        true,
                    )
                }
                // Removed earlier (by either mode): its lifecycle goes on from the directory.
                None if e.first("rosterGoneAt").is_some() => (
                    DeletionPolicy::Deactivate,
                    format!("Account {key} was removed"),
                    false,
                ),
                None => continue,
            };
            let grace = match (policy, self.policy.purge_after.get(&key)) {
                (DeletionPolicy::Orphan, _) => continue,
                (DeletionPolicy::PurgeImmediately, _) => jiff::SignedDuration::ZERO,
                // An object's own purgeAfter, within the site's bounds.
                (_, Some(own)) => {
                    let bound = |v: &str, d: std::time::Duration| parse_duration(v).unwrap_or(d);
                    let min = bound(
                        &cfg.grace_periods.min_purge_after,
                        std::time::Duration::ZERO,
                    );
                    let max = bound(&cfg.grace_periods.max_purge_after, *own);
                    jiff::SignedDuration::from_secs((*own).clamp(min, max.max(min)).as_secs() as i64)
                }
                (_, None) => site_grace,
            };
            let delay = match policy {
                DeletionPolicy::PurgeImmediately => jiff::SignedDuration::ZERO,
                _ => self
                    .policy
                    .deactivate_after
                    .get(&key)
                    .map(|d| jiff::SignedDuration::from_secs(d.as_secs() as i64))
                    .unwrap_or(jiff::SignedDuration::ZERO),
            };
            let target = Target {
                kind: Kind::Account,
                key: key.clone(),
            };
            let r = Removal::of(e, self.now, decides.then_some((grace, delay)));
            let username = e.first("uid").unwrap_or("").to_string();
            if !r.deactivated {
                let Some(deactivate_at) = r.deactivate_at else {
                    // Gone without a recorded deadline (written before Roster recorded them),
                    // and this run does not declare its policy: not this run's to decide.
                    self.gone_but_active(&key, e, None, "DeadlineUndecided", format!("{why}; its deactivation is decided by a run that declares its namespace and source"));
                    continue;
                };
                // A grace before the deactivation: record when it went and both deadlines,
                // stay active until then.
                if self.now < deactivate_at {
                    if decides {
                        let changes = r.unrecorded(e);
                        if !changes.is_empty() {
                            self.ops_prune.push(Op::Modify {
                                target: target.clone(),
                                dn: e.dn.clone(),
                                changes,
                                what: format!(
                                    "account {username} is gone; deactivation at {deactivate_at}"
                                ),
                            });
                        }
                    }
                    self.wake_at(deactivate_at);
                    self.gone_but_active(
                        &key,
                        e,
                        Some(deactivate_at),
                        "GoneFromSource",
                        format!("{why}; deactivation at {deactivate_at}"),
                    );
                    continue;
                }
            }
            // One identity counts once per window: a purge right after a deactivation that the
            // window already counted takes nothing more from the budget.
            // (Counted by when the deactivation happened, not when it went: a deactivation
            // carried out at a recorded deadline long after the removal is this window's.)
            let counted = r.deactivated
                && e.first("rosterDeactivatedAt")
                    .and_then(parse_generalized_time)
                    .is_some_and(|t| t >= guard_window_start(cfg, self.now));
            let guarded = !r.deactivated || (r.purge_due && !counted);
            if guarded && !self.guard_allows() {
                let what = if r.purge_due { "purge" } else { "deactivation" };
                let s = self.status(Kind::Account, &key);
                s.dn = Some(e.dn.clone());
                s.uid_number = e.number("uidNumber");
                if !r.deactivated {
                    s.phase = Phase::Active;
                }
                s.conditions.push(cond(
                    "Guarded",
                    true,
                    "MassDeactivationGuard",
                    format!("the {what} of {key} is held: more removals than the guard allows in one window ({why}); approve with `roster guard approve`, or bring the declaration back"),
                ));
                continue;
            }
            if r.purge_due {
                self.plan_purge(&target, e, &username, o);
                purged.insert(username);
                continue;
            }
            self.record_removal(&target, e, &r, true, format!("removed account {username}"));
            let s = self.status(Kind::Account, &key);
            s.uid_number = e.number("uidNumber");
            s.conditions.push(cond("Deactivated", true, "Removed", why));
        }
        purged
    }

    /// The status of a removed account that stays active for now (`Gone`), until
    /// `deactivate_at` when that is decided.
    fn gone_but_active(
        &mut self,
        key: &Key,
        e: &Entry,
        deactivate_at: Option<jiff::Timestamp>,
        reason: &str,
        message: String,
    ) {
        let s = self.status(Kind::Account, key);
        s.phase = Phase::Active;
        s.dn = Some(e.dn.clone());
        s.uid_number = e.number("uidNumber");
        s.next_transition = deactivate_at.map(|t| ("Deactivate", t));
        s.conditions.push(cond("Gone", true, reason, message));
    }

    /// Projects gone from the declaration: their group is deactivated with a purge time
    /// (`gracePeriods.projectPurgeAfter`) and purged behind a `Project:<group>` tombstone, so the
    /// group name and gid are never handed to anyone else.
    fn plan_project_removals(&mut self) {
        let cfg = self.config();
        let namespaces = self.site.namespaces();
        let site_grace = signed(&cfg.grace_periods.project_purge_after, 90);
        let declared: BTreeSet<String> = self.site.projects.values().map(group_name).collect();
        let groups: Vec<&'a Entry> = self.observed.groups.values().collect();
        for e in groups {
            let Some((o, [mgr, ns, kind, name])) = parse_owner(e) else {
                continue;
            };
            let group = e.first("cn").unwrap_or("").to_string();
            if mgr != cfg.manager_id || kind != "Project" || declared.contains(&group) {
                continue;
            }
            let key = Key::new(ns, name);
            // As for accounts: the run that declares the removal decides the purge time; any
            // other run carries out what the directory records.
            let (policy, decides) = match self.policy.removed_projects.get(&key) {
                Some(p) => (*p, true),
                None if self.policy.prune && namespaces.contains(ns) => {
                    (DeletionPolicy::Deactivate, true)
                }
                None if e.first("rosterGoneAt").is_some() => (DeletionPolicy::Deactivate, false),
                None => continue,
            };
            let grace = match policy {
                DeletionPolicy::Orphan => continue,
                DeletionPolicy::PurgeImmediately => jiff::SignedDuration::ZERO,
                DeletionPolicy::Deactivate => site_grace,
            };
            let target = Target {
                kind: Kind::Project,
                key: key.clone(),
            };
            let r = Removal::of(
                e,
                self.now,
                decides.then_some((grace, jiff::SignedDuration::ZERO)),
            );
            if !r.deactivated && r.deactivate_at.is_none() {
                continue;
            }
            if r.purge_due {
                let description =
                    format!("purged group {group}; its name and gid are never reused");
                self.push_tombstone(
                    &target,
                    e,
                    &format!("Project:{group}"),
                    o,
                    &["gidNumber"],
                    description,
                );
                self.ops_prune.push(Op::Delete {
                    target: target.clone(),
                    dn: e.dn.clone(),
                    what: format!("purge group {group}"),
                });
                let s = self.status(Kind::Project, &key);
                s.phase = Phase::Purged;
                s.gid_number = e.number("gidNumber");
                continue;
            }
            self.record_removal(&target, e, &r, false, format!("removed group {group}"));
            let s = self.status(Kind::Project, &key);
            s.gid_number = e.number("gidNumber");
            s.conditions.push(cond(
                "Deactivated",
                true,
                "Removed",
                format!("Project {key} was removed"),
            ));
        }
    }

    /// Records a removal on the entry (deactivated now, gone, purge time; accounts are also
    /// locked), schedules the purge and marks the object Deactivated.
    fn record_removal(
        &mut self,
        target: &Target,
        e: &Entry,
        r: &Removal,
        lock: bool,
        what: String,
    ) {
        let now = generalized_time(self.now);
        let mut changes = vec![];
        if !r.deactivated {
            if lock {
                changes.push(AttrChange::Replace(
                    "pwdAccountLockedTime".into(),
                    vec![LOCKED_FOREVER.into()],
                ));
                changes.push(AttrChange::Replace("shadowExpire".into(), vec!["1".into()]));
            }
            changes.push(AttrChange::Replace(
                "rosterState".into(),
                vec!["Deactivated".into()],
            ));
            changes.push(AttrChange::Replace(
                "rosterDeactivatedAt".into(),
                vec![now.clone()],
            ));
        }
        if e.first("rosterGoneAt").is_none() {
            changes.push(AttrChange::Replace("rosterGoneAt".into(), vec![now]));
        }
        if e.first("rosterPurgeAt").is_none()
            && let Some(t) = r.purge_at
        {
            changes.push(AttrChange::Replace(
                "rosterPurgeAt".into(),
                vec![generalized_time(t)],
            ));
        }
        if !changes.is_empty() {
            self.ops_prune.push(Op::Modify {
                target: target.clone(),
                dn: e.dn.clone(),
                changes,
                what,
            });
        }
        let s = self.status(target.kind, &target.key);
        s.phase = Phase::Deactivated;
        s.dn = Some(e.dn.clone());
        if let Some(t) = r.purge_at {
            s.next_transition = Some(("Purge", t));
            self.wake_at(t);
        }
    }

    /// Adds the tombstone `cn=<cn>` for a purged entry (unless it exists), carrying `numbers`
    /// and the identity, so the name and the numbers stay reserved forever.
    fn push_tombstone(
        &mut self,
        target: &Target,
        e: &Entry,
        cn: &str,
        owner: &str,
        numbers: &[&str],
        description: String,
    ) {
        if let Some(t) = self.observed.tombstones.get(cn) {
            // Purged once, declared again by the same identity, purged again: the tombstone
            // keeps its numbers and records this purge (the guard counts purges by it).
            self.ops_prune.push(Op::Modify {
                target: target.clone(),
                dn: t.dn.clone(),
                changes: vec![AttrChange::Replace(
                    "rosterPurgeAt".into(),
                    vec![generalized_time(self.now)],
                )],
                what: format!("tombstone of {} purged again", target.key),
            });
            return;
        }
        let mut attrs = Attrs::new();
        set(&mut attrs, "objectClass", ["rosterTombstone".to_string()]);
        set(&mut attrs, "cn", [cn.to_string()]);
        if target.kind == Kind::Account {
            set(&mut attrs, "uid", e.first("uid").map(str::to_string));
        }
        // Where the project's Slurm account was Roster's: it leaves those clusters after the purge.
        let slurm = e.values("rosterSlurmAccount");
        if !slurm.is_empty() {
            set(&mut attrs, "rosterSlurmAccount", slurm.to_vec());
        }
        for n in numbers {
            set(&mut attrs, n, e.first(n).map(str::to_string));
        }
        set(&mut attrs, "rosterOwner", [owner.to_string()]);
        set(&mut attrs, "rosterKind", [target.kind.to_string()]);
        for a in [
            "rosterIdentity",
            "rosterDeactivatedAt",
            "rosterSourceUID",
            "rosterRecordUID",
        ] {
            let v = e.first(a).map(str::to_string);
            if v.is_some() || a == "rosterIdentity" || a == "rosterDeactivatedAt" {
                set(&mut attrs, a, v);
            }
        }
        set(&mut attrs, "rosterPurgeAt", [generalized_time(self.now)]);
        set(&mut attrs, "description", [description]);
        let name = cn.split_once(':').map(|(_, n)| n).unwrap_or(cn).to_string();
        self.ops_prune.push(Op::Add {
            target: target.clone(),
            dn: format!("cn={},{}", dn_escape(cn), self.config().tombstones_dn()),
            attrs,
            uid: None,
            gid: None,
            what: format!(
                "tombstone of {} {name}",
                target.kind.to_string().to_lowercase()
            ),
        });
    }

    /// A removal-caused deactivation of this window that this plan undoes (the account is
    /// declared again) no longer counts against the guard, as the next plan will see: give it
    /// back now, so that one run does what two would (a second run with nothing changed must
    /// write nothing).
    fn return_reactivated_to_the_guard(&mut self) {
        let Some(budget) = self.budget.as_mut() else {
            return;
        };
        let since = guard_window_start(self.policy.config, self.now);
        let reactivated: BTreeSet<&str> = self
            .ops_accounts
            .iter()
            .filter_map(|op| match op {
                Op::Modify { dn, changes, .. }
                    if changes.iter().any(|c| {
                        matches!(c, AttrChange::Replace(a, v) if a == "rosterGoneAt" && v.is_empty())
                    }) =>
                {
                    Some(dn.as_str())
                }
                _ => None,
            })
            .collect();
        if reactivated.is_empty() {
            return;
        }
        let counted = self
            .observed
            .accounts
            .values()
            .filter(|e| reactivated.contains(e.dn.as_str()))
            .filter(|e| {
                e.first("rosterState") == Some("Deactivated")
                    && e.first("rosterGoneAt").is_some()
                    && e.first("rosterDeactivatedAt")
                        .and_then(parse_generalized_time)
                        .is_some_and(|t| t >= since)
            })
            .count();
        *budget += counted;
    }

    /// Takes one removal-caused transition from the guard's budget, if any is left.
    fn guard_allows(&mut self) -> bool {
        match &mut self.budget {
            None => true,
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                true
            }
        }
    }

    /// Tombstone first, then the account and its personal group.
    fn plan_purge(&mut self, target: &Target, e: &Entry, username: &str, owner: &str) {
        let description =
            format!("purged account {username}; its name and numbers are never reused");
        self.push_tombstone(
            target,
            e,
            &format!("Account:{username}"),
            owner,
            &["uidNumber", "gidNumber"],
            description,
        );
        self.ops_prune.push(Op::Delete {
            target: target.clone(),
            dn: e.dn.clone(),
            what: format!("purge account {username}"),
        });
        if let Some(g) = self.observed.groups.get(username)
            && g.owner() == Some(owner)
            && g.first("rosterKind") == Some("PersonalGroup")
        {
            self.ops_prune.push(Op::Delete {
                target: target.clone(),
                dn: g.dn.clone(),
                what: format!("purge personal group {username}"),
            });
        }
        let s = self.status(target.kind, &target.key);
        s.phase = Phase::Purged;
        s.dn = None;
        s.uid_number = e.number("uidNumber");
        s.conditions.push(cond(
            "Deactivated",
            true,
            "Purged",
            format!(
                "{} was purged; a tombstone keeps its name and numbers reserved",
                target.key
            ),
        ));
    }
}

/// The mass-deactivation guard (DESIGN.md §5.5): how many removal-caused deactivations and
/// purges may still happen in the current window, from what the directory records (so both
/// modes share it). `None` while an approval (`roster guard approve`) is in force.
pub fn guard_budget(config: &Config, observed: &Observed, now: jiff::Timestamp) -> Option<usize> {
    let status = guard_status(config, observed, now);
    if status.approved_until.is_some() {
        return None;
    }
    Some(status.limit.saturating_sub(status.used))
}

/// What the guard sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardStatus {
    /// Removal-caused transitions allowed per window.
    pub limit: usize,
    /// Those already made in the current window.
    pub used: usize,
    /// Accounts Roster manages (the base of the percentage).
    pub managed: usize,
    /// An approval in force until then.
    pub approved_until: Option<jiff::Timestamp>,
    pub window: jiff::SignedDuration,
}

/// Where a removed entry stands: its deadlines as the directory records them, or — for a run
/// that declares the removal — as they are decided now (DESIGN.md §5.2: decided once, recorded,
/// never recomputed).
struct Removal {
    deactivated: bool,
    /// When it went (recorded, or now).
    gone_at: jiff::Timestamp,
    /// When it is (or was) deactivated; `None`: not recorded and not this run's to decide.
    deactivate_at: Option<jiff::Timestamp>,
    /// When it is purged; `None`: not recorded and not this run's to decide.
    purge_at: Option<jiff::Timestamp>,
    /// Deactivated with a recorded purge time that has come.
    purge_due: bool,
}

impl Removal {
    /// `decide`: (grace before the purge, delay before the deactivation) of the object's own
    /// policy, when this run declares the removal; `None` when it only carries out deadlines.
    fn of(
        e: &Entry,
        now: jiff::Timestamp,
        decide: Option<(jiff::SignedDuration, jiff::SignedDuration)>,
    ) -> Removal {
        let time = |attr: &str| e.first(attr).and_then(parse_generalized_time);
        let add = |t: jiff::Timestamp, d: jiff::SignedDuration| {
            t.checked_add(d).unwrap_or(jiff::Timestamp::MAX)
        };
        let deactivated = e.first("rosterState") == Some("Deactivated");
        let gone_at = time("rosterGoneAt").unwrap_or(now);
        let deactivate_at = if deactivated {
            Some(time("rosterDeactivatedAt").unwrap_or(now))
        } else {
            time("rosterDeactivateAt").or_else(|| decide.map(|(_, delay)| add(gone_at, delay)))
        };
        let recorded = time("rosterPurgeAt");
        let purge_at = recorded.or_else(|| {
            let (grace, _) = decide?;
            // Never before the deactivation: an Active identity is never purged directly.
            let floor = if deactivated {
                deactivate_at.unwrap_or(now)
            } else {
                deactivate_at.unwrap_or(now).max(now)
            };
            Some(add(gone_at, grace).max(floor))
        });
        Removal {
            deactivated,
            gone_at,
            deactivate_at,
            purge_at,
            purge_due: deactivated && recorded.is_some_and(|t| t <= now),
        }
    }

    /// The deadlines decided now that the directory does not record yet (with the time it
    /// went): written while the entry stays active through a grace before its deactivation.
    fn unrecorded(&self, e: &Entry) -> Vec<AttrChange> {
        let mut changes = vec![];
        let mut record = |attr: &str, t: Option<jiff::Timestamp>| {
            if let Some(t) = t.filter(|_| e.first(attr).is_none()) {
                changes.push(AttrChange::Replace(attr.into(), vec![generalized_time(t)]));
            }
        };
        record("rosterGoneAt", Some(self.gone_at));
        record("rosterDeactivateAt", self.deactivate_at);
        record("rosterPurgeAt", self.purge_at);
        changes
    }
}

/// `rosterOwner` split into `[managerId, namespace, kind, name]`, with the whole value.
fn parse_owner(e: &Entry) -> Option<(&str, [&str; 4])> {
    let o = e.owned_by()?;
    Some((e.owner()?, [o.manager, o.namespace, o.kind, o.name]))
}

/// A configured duration as a signed one (validated at load; `default_days` otherwise).
fn signed(value: &str, default_days: i64) -> jiff::SignedDuration {
    parse_duration(value)
        .map(|d| jiff::SignedDuration::from_secs(d.as_secs() as i64))
        .unwrap_or(jiff::SignedDuration::from_hours(default_days * 24))
}

fn guard_window(config: &Config) -> jiff::SignedDuration {
    signed(&config.guard.window, 1)
}

fn guard_window_start(config: &Config, now: jiff::Timestamp) -> jiff::Timestamp {
    now.checked_sub(guard_window(config)).unwrap_or(now)
}

/// The counter entry that records an approval (`roster guard approve`): unix seconds.
pub const GUARD_APPROVAL: &str = "guard-approved";

pub fn guard_status(config: &Config, observed: &Observed, now: jiff::Timestamp) -> GuardStatus {
    let prefix = format!("{}/", config.manager_id);
    let ours = |e: &&Entry| e.owner().is_some_and(|o| o.starts_with(&prefix));
    let window = guard_window(config);
    let since = guard_window_start(config, now);
    let after = |e: &Entry, attr: &str| {
        e.first(attr)
            .and_then(parse_generalized_time)
            .is_some_and(|t| t >= since)
    };
    let managed = observed.accounts.values().filter(ours).count();
    let used = observed
        .accounts
        .values()
        .filter(ours)
        // Removal-caused deactivations made in the window (however long ago they went).
        .filter(|e| e.is_removed() && after(e, "rosterDeactivatedAt"))
        .count()
        + observed
            .tombstones
            .values()
            .filter(ours)
            .filter(|e| after(e, "rosterPurgeAt"))
            .count();
    let mut limit = usize::MAX;
    if let Some(c) = config.guard.max_count {
        limit = c as usize;
    }
    if let Some(p) = config.guard.max_percent {
        // At least one, so a small site is not frozen by rounding.
        let pct = (managed * p as usize).div_ceil(100).max(1);
        limit = limit.min(pct);
    }
    let approved_until = observed
        .counters
        .get(GUARD_APPROVAL)
        .and_then(|e| e.number("rosterCounterValue"))
        .and_then(|s| jiff::Timestamp::from_second(s as i64).ok())
        .filter(|t| *t > now);
    GuardStatus {
        limit,
        used,
        managed,
        approved_until,
        window,
    }
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
