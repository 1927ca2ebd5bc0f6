//! What Gold should hold: Roster's users (for its directory accounts, once their entry
//! exists), projects, memberships and allocation windows — only names Roster owns in the
//! directory (accounts, groups and their tombstones), so nothing else in Gold is ever changed.

use std::collections::{BTreeMap, BTreeSet};

use super::observe::{Member, Project, User};
use super::proto::clean;
use crate::api::parse_valid_until;
use crate::config::Config;
use crate::plan::{Entry, Kind, Observed, Plan, group_name};
use crate::site::{Key, Site};

/// A declared allocation window in epoch seconds (end exclusive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    pub end: i64,
    pub amount: i64,
    pub description: String,
}

/// What Gold should hold for Roster's names, and what to do about names that are leaving.
#[derive(Clone, Debug, Default)]
pub struct Desired {
    pub organizations: BTreeSet<String>,
    pub users: BTreeMap<String, User>,
    pub projects: BTreeMap<String, Project>,
    pub members: BTreeMap<(String, String), Member>,
    /// Project → declared windows.
    pub windows: BTreeMap<String, Vec<Window>>,
    /// Users and projects that stay as they are (Invalid or in Conflict, or waiting).
    pub frozen_users: BTreeSet<String>,
    pub frozen_projects: BTreeSet<String>,
    /// Removed, not purged yet: deactivated in Gold.
    pub deactivated_users: BTreeSet<String>,
    pub deactivated_projects: BTreeSet<String>,
    /// Purged: deleted from Gold.
    pub purged_users: BTreeSet<String>,
    pub purged_projects: BTreeSet<String>,
    /// Gold name → the object it belongs to (for conditions).
    pub owners: BTreeMap<(Kind, String), Key>,
    /// Every project that is Roster's in the directory, declared in this run or not: a
    /// deactivated user's memberships are suspended in all of them, whichever run deactivates.
    pub roster_projects: BTreeSet<String>,
}

fn owned(config: &Config, e: &Entry) -> bool {
    e.is_managed_by(&config.manager_id)
}

fn removed(config: &Config, e: &Entry) -> bool {
    owned(config, e) && e.is_removed()
}

/// Roster's names in Gold: users for its directory accounts (once their entry exists), projects
/// for its groups.
pub fn desired(
    site: &Site,
    ldap: &Observed,
    plan: &Plan,
    config: &Config,
    now: jiff::Timestamp,
) -> Desired {
    let mut d = Desired::default();
    let org = |s: Option<&String>| s.map(|s| clean(s, 64)).unwrap_or_default();
    for (key, p) in &site.projects {
        let group = group_name(p);
        d.owners.insert((Kind::Project, group.clone()), key.clone());
        let Some(s) = plan.status_of(Kind::Project, key) else {
            continue;
        };
        let entry = ldap.groups.get(&group).filter(|e| owned(config, e));
        if s.is_blocked() || entry.is_none() {
            d.frozen_projects.insert(group);
            continue;
        }
        let expired = p
            .spec
            .valid_until
            .as_deref()
            .and_then(|v| parse_valid_until(v).ok())
            .is_some_and(|t| t <= now);
        let deactivated = entry.is_some_and(Entry::is_deactivated);
        let organization = org(p.spec.institute.as_ref());
        if !organization.is_empty() {
            d.organizations.insert(organization.clone());
        }
        d.projects.insert(
            group.clone(),
            Project {
                active: !(p.spec.locked || expired || deactivated),
                organization,
                description: clean(p.spec.description.as_deref().unwrap_or(""), 200),
            },
        );
        let windows = p
            .spec
            .gold
            .iter()
            .flat_map(|g| &g.allocations)
            .filter_map(|a| {
                let start = if a.start.len() == 10 {
                    let date: jiff::civil::Date = a.start.parse().ok()?;
                    date.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp()
                } else {
                    a.start.parse::<jiff::Timestamp>().ok()?
                };
                let end = parse_valid_until(&a.end).ok()?;
                Some(Window {
                    start: start.as_second(),
                    end: end.as_second(),
                    amount: a.amount,
                    description: clean(a.description.as_deref().unwrap_or(""), 200),
                })
            })
            .collect();
        d.windows.insert(group, windows);
    }
    // Each group's leaders (the first project of that name, as declared order goes).
    let mut leaders_of: BTreeMap<String, &[String]> = BTreeMap::new();
    for p in site.projects.values() {
        leaders_of
            .entry(group_name(p))
            .or_insert(p.spec.leaders.as_slice());
    }
    for (key, a) in &site.accounts {
        let user = a.spec.username.clone();
        d.owners.insert((Kind::Account, user.clone()), key.clone());
        let Some(s) = plan.status_of(Kind::Account, key) else {
            continue;
        };
        let entry = ldap.accounts.get(&user).filter(|e| owned(config, e));
        let Some(entry) = entry.filter(|_| !s.is_blocked()) else {
            d.frozen_users.insert(user);
            continue;
        };
        let person = site
            .people
            .get(&Key::new(&key.namespace, &a.spec.person))
            .map(|p| &p.spec);
        let active = !entry.is_deactivated();
        let projects: Vec<&String> = s
            .projects
            .iter()
            .filter(|g| d.projects.contains_key(*g))
            .collect();
        let default_project = a
            .spec
            .default_project
            .as_ref()
            .and_then(|p| site.projects.get(&Key::new(&key.namespace, p)))
            .map(group_name)
            .filter(|g| projects.contains(&g))
            .or_else(|| projects.first().map(|g| (*g).clone()))
            .unwrap_or_default();
        let organization = org(person.and_then(|p| p.institute.as_ref()));
        if !organization.is_empty() {
            d.organizations.insert(organization.clone());
        }
        let common_name = person
            .map(|p| p.display())
            .map(|n| clean(&n, 100))
            .unwrap_or_default();
        d.users.insert(
            user.clone(),
            User {
                active,
                common_name,
                email: clean(person.and_then(|p| p.email.as_deref()).unwrap_or(""), 100),
                organization,
                default_project,
            },
        );
        for g in projects {
            let leader = leaders_of.get(g).is_some_and(|l| l.contains(&user));
            d.members.insert(
                (g.clone(), user.clone()),
                Member {
                    active,
                    admin: leader,
                },
            );
        }
    }
    for (user, e) in &ldap.accounts {
        if removed(config, e) && !d.users.contains_key(user) && !d.frozen_users.contains(user) {
            d.deactivated_users.insert(user.clone());
        }
    }
    d.roster_projects = ldap
        .groups
        .iter()
        .filter(|(_, e)| owned(config, e) && e.first("rosterKind") == Some("Project"))
        .map(|(g, _)| g.clone())
        .collect();
    for (group, e) in &ldap.groups {
        if removed(config, e)
            && !d.projects.contains_key(group)
            && !d.frozen_projects.contains(group)
        {
            d.deactivated_projects.insert(group.clone());
        }
    }
    for t in ldap.tombstones.values().filter(|t| owned(config, t)) {
        let Some((kind, name)) = t.first("cn").and_then(|c| c.split_once(':')) else {
            continue;
        };
        match kind {
            "Account" if !ldap.accounts.contains_key(name) && !d.users.contains_key(name) => {
                d.purged_users.insert(name.to_string());
            }
            "Project" if !ldap.groups.contains_key(name) && !d.projects.contains_key(name) => {
                d.purged_projects.insert(name.to_string());
            }
            _ => {}
        }
    }
    d
}
