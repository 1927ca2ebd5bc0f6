//! What Gold holds, what it should hold, and the requests in between (pure, apart from
//! `observe`). Gold has no ownership marker: Roster's Gold users and projects are those whose
//! names Roster owns in the directory (accounts, groups and their tombstones), so nothing else
//! in Gold is ever changed or deleted.

use std::collections::{BTreeMap, BTreeSet};

use super::proto::{Client, GoldError, Request, clean};
use crate::api::parse_valid_until;
use crate::config::Config;
use crate::plan::{Entry, Observed};
use crate::plan::{Kind, Plan, group_name};
use crate::site::{Key, Site};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    pub active: bool,
    pub common_name: String,
    pub email: String,
    pub organization: String,
    pub default_project: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Project {
    pub active: bool,
    pub organization: String,
    pub description: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Member {
    pub active: bool,
    pub admin: bool,
}

/// One allocation (a deposit window) on a project's Gold account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allocation {
    pub id: String,
    pub start: i64,
    pub end: i64,
    /// What is left.
    pub amount: i64,
    /// What was deposited in total.
    pub deposited: i64,
    pub description: String,
}

/// Gold as Roster compares it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub organizations: BTreeSet<String>,
    pub users: BTreeMap<String, User>,
    pub projects: BTreeMap<String, Project>,
    /// (project, user).
    pub members: BTreeMap<(String, String), Member>,
    /// Project → the id of the account deposits go to: of the accounts Gold links to the
    /// project (`AccountProject`), the newest one named after it (the one `Project Create`
    /// made), else the newest linked one. Never an account that merely carries the name.
    pub accounts: BTreeMap<String, String>,
    /// Project → every account linked to it (its allocations all count as deposited).
    pub linked: BTreeMap<String, Vec<String>>,
    /// Every account: id → name (to report accounts named after a project but not linked).
    pub account_names: BTreeMap<String, String>,
    /// Account id → its allocations.
    pub allocations: BTreeMap<String, Vec<Allocation>>,
}

/// Gold's pseudo-users and pseudo-projects: in every Gold, never Roster's, never drift.
pub const PSEUDO: [&str; 5] = ["ANY", "MEMBERS", "NONE", "SELF", "ADMIN"];

impl State {
    /// The allocations of every account linked to `project`.
    pub fn allocations_of(&self, project: &str) -> Vec<Allocation> {
        self.linked
            .get(project)
            .into_iter()
            .flatten()
            .flat_map(|id| self.allocations.get(id).into_iter().flatten().cloned())
            .collect()
    }
}

/// Numeric order of Gold ids ("10" after "9").
fn id_order(a: &str, b: &str) -> std::cmp::Ordering {
    (a.len(), a).cmp(&(b.len(), b))
}

/// The deposit target among a project's linked accounts (see [`State::accounts`]).
pub fn deposit_account(
    project: &str,
    linked: &[String],
    names: &BTreeMap<String, String>,
) -> Option<String> {
    let newest =
        |ids: &mut dyn Iterator<Item = &String>| ids.max_by(|a, b| id_order(a, b)).cloned();
    newest(
        &mut linked
            .iter()
            .filter(|id| names.get(*id).map(String::as_str) == Some(project)),
    )
    .or_else(|| newest(&mut linked.iter()))
}

fn truthy(v: Option<&String>) -> bool {
    v.is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn text(row: &BTreeMap<String, String>, k: &str) -> String {
    row.get(k).cloned().unwrap_or_default()
}

fn number(row: &BTreeMap<String, String>, k: &str) -> i64 {
    row.get(k)
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|f| f as i64)
        .unwrap_or(0)
}

fn query(object: &str, columns: &[&str]) -> Request {
    let mut r = Request::new("Query", object);
    // Gold 2.2's Bank module never ends a chunked Account or Allocation reply (it sends piece
    // 1 again and again): those are read in one piece (a reply Gold truncates comes with a
    // Warning, which fails the read, loudly).
    r.chunking = !matches!(object, "Account" | "Allocation");
    for c in columns {
        r = r.get(c);
    }
    r
}

/// Reads everything Roster compares, in seven queries.
pub async fn observe(client: &Client) -> Result<State, GoldError> {
    let mut s = State::default();
    for row in client.send(&query("Organization", &["Name"])).await?.data {
        s.organizations.insert(text(&row, "Name"));
    }
    let users = client
        .send(&query(
            "User",
            &[
                "Name",
                "Active",
                "CommonName",
                "EmailAddress",
                "Organization",
                "DefaultProject",
            ],
        ))
        .await?;
    for row in users.data {
        if PSEUDO.contains(&text(&row, "Name").as_str()) {
            continue;
        }
        s.users.insert(
            text(&row, "Name"),
            User {
                active: truthy(row.get("Active")),
                common_name: text(&row, "CommonName"),
                email: text(&row, "EmailAddress"),
                organization: text(&row, "Organization"),
                default_project: text(&row, "DefaultProject"),
            },
        );
    }
    let projects = client
        .send(&query(
            "Project",
            &["Name", "Active", "Organization", "Description"],
        ))
        .await?;
    for row in projects.data {
        if PSEUDO.contains(&text(&row, "Name").as_str()) {
            continue;
        }
        s.projects.insert(
            text(&row, "Name"),
            Project {
                active: truthy(row.get("Active")),
                organization: text(&row, "Organization"),
                description: text(&row, "Description"),
            },
        );
    }
    let members = client
        .send(&query(
            "ProjectUser",
            &["Project", "Name", "Active", "Admin"],
        ))
        .await?;
    for row in members.data {
        s.members.insert(
            (text(&row, "Project"), text(&row, "Name")),
            Member {
                active: truthy(row.get("Active")),
                admin: truthy(row.get("Admin")),
            },
        );
    }
    let a = read_accounts(client).await?;
    (s.account_names, s.linked, s.accounts) = (a.names, a.linked, a.deposit_to);
    let allocations = client
        .send(&query(
            "Allocation",
            &[
                "Id",
                "Account",
                "StartTime",
                "EndTime",
                "Amount",
                "Deposited",
                "Description",
            ],
        ))
        .await?;
    for row in allocations.data {
        s.allocations
            .entry(text(&row, "Account"))
            .or_default()
            .push(allocation(&row));
    }
    Ok(s)
}

/// Gold's accounts as Roster relates them to projects (see [`State::accounts`]).
pub struct Accounts {
    /// Account id → name.
    pub names: BTreeMap<String, String>,
    /// Project → the accounts linked to it.
    pub linked: BTreeMap<String, Vec<String>>,
    /// Project → the account deposits go to.
    pub deposit_to: BTreeMap<String, String>,
}

/// Reads every account and every `AccountProject` link (two queries).
pub async fn read_accounts(client: &Client) -> Result<Accounts, GoldError> {
    let mut a = Accounts {
        names: BTreeMap::new(),
        linked: BTreeMap::new(),
        deposit_to: BTreeMap::new(),
    };
    for row in client.send(&query("Account", &["Id", "Name"])).await?.data {
        a.names.insert(text(&row, "Id"), text(&row, "Name"));
    }
    for row in client
        .send(&query("AccountProject", &["Account", "Name"]))
        .await?
        .data
    {
        a.linked
            .entry(text(&row, "Name"))
            .or_default()
            .push(text(&row, "Account"));
    }
    for (project, ids) in &a.linked {
        if let Some(id) = deposit_account(project, ids, &a.names) {
            a.deposit_to.insert(project.clone(), id);
        }
    }
    Ok(a)
}

pub fn allocation(row: &BTreeMap<String, String>) -> Allocation {
    Allocation {
        id: text(row, "Id"),
        start: number(row, "StartTime"),
        end: number(row, "EndTime"),
        amount: number(row, "Amount"),
        deposited: number(row, "Deposited"),
        description: text(row, "Description"),
    }
}

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
            .map(|p| {
                p.display_name
                    .clone()
                    .unwrap_or_else(|| format!("{} {}", p.given_name, p.family_name))
            })
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

/// The stage a step runs in: each stage finishes before the next starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Organizations,
    Projects,
    Users,
    Members,
    Allocations,
    Purge,
}

/// One request to send, and whom it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub stage: Stage,
    pub request: Request,
    /// The Gold name of the user or project concerned.
    pub concerns: Option<(Kind, String)>,
    /// A deposit: (project, window), resolved to the project's account at run time and checked
    /// against Gold before any retry.
    pub deposit: Option<(String, Window)>,
}

fn tf(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

fn step(stage: Stage, request: Request, kind: Kind, name: &str) -> Step {
    Step {
        stage,
        request,
        concerns: Some((kind, name.to_string())),
        deposit: None,
    }
}

/// Every request that turns `have` into `want`, in stage order, plus what Roster leaves alone
/// and says so (allocations it does not withdraw).
pub fn diff(have: &State, want: &Desired) -> (Vec<Step>, Vec<String>) {
    let mut steps = vec![];
    let mut notes = vec![];
    for o in want.organizations.difference(&have.organizations) {
        steps.push(Step {
            stage: Stage::Organizations,
            request: Request::new("Create", "Organization").set("Name", o),
            concerns: None,
            deposit: None,
        });
    }
    for (name, p) in &want.projects {
        match have.projects.get(name) {
            None => {
                let mut r = Request::new("Create", "Project")
                    .set("Name", name)
                    .set("Active", tf(p.active));
                if !p.organization.is_empty() {
                    r = r.set("Organization", &p.organization);
                }
                if !p.description.is_empty() {
                    r = r.set("Description", &p.description);
                }
                steps.push(step(Stage::Projects, r, Kind::Project, name));
            }
            Some(h) if h != p => {
                let mut r = Request::new("Modify", "Project");
                if h.active != p.active {
                    r = r.set("Active", tf(p.active));
                }
                if h.organization != p.organization {
                    r = r.set("Organization", &p.organization);
                }
                if h.description != p.description {
                    r = r.set("Description", &p.description);
                }
                steps.push(step(
                    Stage::Projects,
                    r.filter("Name", name),
                    Kind::Project,
                    name,
                ));
            }
            Some(_) => {}
        }
    }
    for name in &want.deactivated_projects {
        if have.projects.get(name).is_some_and(|p| p.active) {
            let r = Request::new("Modify", "Project")
                .set("Active", "False")
                .filter("Name", name);
            steps.push(step(Stage::Projects, r, Kind::Project, name));
        }
    }
    for (name, u) in &want.users {
        match have.users.get(name) {
            None => {
                let mut r = Request::new("Create", "User")
                    .set("Name", name)
                    .set("Active", tf(u.active));
                for (k, v) in [
                    ("CommonName", &u.common_name),
                    ("EmailAddress", &u.email),
                    ("Organization", &u.organization),
                    ("DefaultProject", &u.default_project),
                ] {
                    if !v.is_empty() {
                        r = r.set(k, v);
                    }
                }
                steps.push(step(Stage::Users, r, Kind::Account, name));
            }
            Some(h) if h != u => {
                let mut r = Request::new("Modify", "User");
                if h.active != u.active {
                    r = r.set("Active", tf(u.active));
                }
                for (k, hv, v) in [
                    ("CommonName", &h.common_name, &u.common_name),
                    ("EmailAddress", &h.email, &u.email),
                    ("Organization", &h.organization, &u.organization),
                    ("DefaultProject", &h.default_project, &u.default_project),
                ] {
                    if hv != v {
                        r = r.set(k, v);
                    }
                }
                steps.push(step(
                    Stage::Users,
                    r.filter("Name", name),
                    Kind::Account,
                    name,
                ));
            }
            Some(_) => {}
        }
    }
    for name in &want.deactivated_users {
        if have.users.get(name).is_some_and(|u| u.active) {
            let r = Request::new("Modify", "User")
                .set("Active", "False")
                .filter("Name", name);
            steps.push(step(Stage::Users, r, Kind::Account, name));
        }
    }
    for ((project, user), m) in &want.members {
        match have.members.get(&(project.clone(), user.clone())) {
            None => {
                let r = Request::new("Create", "ProjectUser")
                    .set("Project", project)
                    .set("Name", user)
                    .set("Active", tf(m.active))
                    .set("Admin", tf(m.admin));
                steps.push(step(Stage::Members, r, Kind::Project, project));
            }
            Some(h) if h != m => {
                let r = Request::new("Modify", "ProjectUser")
                    .set("Active", tf(m.active))
                    .set("Admin", tf(m.admin))
                    .filter("Project", project)
                    .filter("Name", user);
                steps.push(step(Stage::Members, r, Kind::Project, project));
            }
            Some(_) => {}
        }
    }
    // Memberships in Roster's projects of Roster's users that are no longer declared. Frozen
    // users and projects keep theirs; removed (not purged) users keep theirs, suspended.
    // (Purged users leave their memberships in the purge stage.)
    let roster_user = |u: &String| want.users.contains_key(u) || want.deactivated_users.contains(u);
    for ((project, user), h) in &have.members {
        // A deactivated user is suspended in every project of Roster's at once, not when a
        // run next declares that project (a deadline is carried out whole, by any run).
        let suspend = want.deactivated_users.contains(user)
            && (want.projects.contains_key(project) || want.roster_projects.contains(project));
        if !suspend && (!want.projects.contains_key(project) || !roster_user(user)) {
            continue;
        }
        if want.members.contains_key(&(project.clone(), user.clone())) {
            continue;
        }
        if want.deactivated_users.contains(user) {
            if h.active {
                let r = Request::new("Modify", "ProjectUser")
                    .set("Active", "False")
                    .filter("Project", project)
                    .filter("Name", user);
                steps.push(step(Stage::Members, r, Kind::Project, project));
            }
            continue;
        }
        let r = Request::new("Delete", "ProjectUser")
            .filter("Project", project)
            .filter("Name", user);
        steps.push(step(Stage::Members, r, Kind::Project, project));
    }
    // Allocations, by window: a new window deposits; a window that moved (same start or same
    // end) is modified; more credits deposit the difference; nothing is ever withdrawn.
    for (project, windows) in &want.windows {
        // Every allocation of every account Gold links to the project counts: credits are
        // never issued twice. (An account that only carries the project's name — left by a
        // purge, or a site's own — is not the project's; it is reported below.)
        let existing: Vec<Allocation> = have.allocations_of(project);
        let mut matched: BTreeSet<String> = BTreeSet::new();
        for w in windows {
            let found = existing
                .iter()
                .find(|a| a.start == w.start && a.end == w.end && !matched.contains(&a.id))
                .or_else(|| {
                    existing.iter().find(|a| {
                        (a.start == w.start || a.end == w.end)
                            && (a.amount != 0 || a.deposited != 0)
                            && !matched.contains(&a.id)
                            && !windows.iter().any(|o| o.start == a.start && o.end == a.end)
                    })
                });
            let deposited = match found {
                Some(a) => {
                    matched.insert(a.id.clone());
                    if (a.start, a.end) != (w.start, w.end) {
                        let r = Request::new("Modify", "Allocation")
                            .set("StartTime", &w.start.to_string())
                            .set("EndTime", &w.end.to_string())
                            .filter("Id", &a.id);
                        steps.push(step(Stage::Allocations, r, Kind::Project, project));
                    }
                    a.deposited
                }
                None => 0,
            };
            if w.amount > deposited {
                let more = Window {
                    amount: w.amount - deposited,
                    ..w.clone()
                };
                steps.push(Step {
                    stage: Stage::Allocations,
                    request: Request::new("Deposit", "Account"),
                    concerns: Some((Kind::Project, project.clone())),
                    deposit: Some((project.clone(), more)),
                });
            } else if w.amount < deposited {
                notes.push(format!(
                    "allocation of {project} from {} to {}: {deposited} deposited, {} declared; Roster never withdraws",
                    w.start, w.end, w.amount
                ));
            }
        }
        // Credits never left unreachable without a word: an account that carries the
        // project's name but is not linked to it holds credits the project cannot use.
        let linked = have.linked.get(project).cloned().unwrap_or_default();
        for (id, name) in &have.account_names {
            if name != project || linked.contains(id) {
                continue;
            }
            let credits: i64 = have
                .allocations
                .get(id)
                .into_iter()
                .flatten()
                .map(|a| a.deposited)
                .sum();
            if credits > 0 {
                notes.push(format!(
                    "Gold account {id} is named {project} but not linked to the project (left by a purge, or a site's own): its {credits} deposited credits are not the project's, and Roster deposits into account {}",
                    have.accounts.get(project).map_or("(none yet)", String::as_str)
                ));
            }
        }
        // Gold's own 0-credit allocations (allocation.autogen) are nobody's declaration.
        for a in existing
            .iter()
            .filter(|a| !matched.contains(&a.id) && (a.amount != 0 || a.deposited != 0))
        {
            notes.push(format!(
                "allocation {} of {project} ({} to {}, {} deposited) is not declared; left as is",
                a.id, a.start, a.end, a.deposited
            ));
        }
    }
    for name in &want.purged_users {
        for (project, _) in have.members.keys().filter(|(_, u)| u == name) {
            let r = Request::new("Delete", "ProjectUser")
                .filter("Project", project)
                .filter("Name", name);
            steps.push(step(Stage::Purge, r, Kind::Account, name));
        }
        if have.users.contains_key(name) {
            let r = Request::new("Delete", "User").filter("Name", name);
            steps.push(step(Stage::Purge, r, Kind::Account, name));
        }
    }
    for name in &want.purged_projects {
        if have.projects.contains_key(name) {
            let r = Request::new("Delete", "Project").filter("Name", name);
            steps.push(step(Stage::Purge, r, Kind::Project, name));
        }
    }
    steps.sort_by_key(|s| s.stage);
    (steps, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match &s.deposit {
                Some((p, w)) => format!("Deposit {p} {} {}..{}", w.amount, w.start, w.end),
                None => s.request.describe(),
            })
            .collect()
    }

    fn want() -> Desired {
        let mut d = Desired::default();
        d.organizations.insert("Physics Lab".into());
        d.projects.insert(
            "optics".into(),
            Project {
                active: true,
                organization: "Physics Lab".into(),
                description: "lasers".into(),
            },
        );
        d.users.insert(
            "ada".into(),
            User {
                active: true,
                common_name: "Ada L".into(),
                email: "ada@x".into(),
                organization: "Physics Lab".into(),
                default_project: "optics".into(),
            },
        );
        d.members.insert(
            ("optics".into(), "ada".into()),
            Member {
                active: true,
                admin: true,
            },
        );
        d.windows.insert(
            "optics".into(),
            vec![Window {
                start: 100,
                end: 200,
                amount: 1000,
                description: String::new(),
            }],
        );
        d
    }

    /// Gold after `want()` was carried out.
    fn converged() -> State {
        let d = want();
        let mut s = State {
            organizations: d.organizations.clone(),
            users: d.users.clone(),
            projects: d.projects.clone(),
            members: d.members.clone(),
            ..Default::default()
        };
        s.accounts.insert("optics".into(), "7".into());
        s.linked.insert("optics".into(), vec!["7".into()]);
        s.account_names.insert("7".into(), "optics".into());
        s.allocations.insert(
            "7".into(),
            vec![Allocation {
                id: "3".into(),
                start: 100,
                end: 200,
                amount: 400,
                deposited: 1000,
                description: String::new(),
            }],
        );
        s
    }

    #[test]
    fn from_nothing_in_stage_order_and_nothing_once_converged() {
        let (steps, notes) = diff(&State::default(), &want());
        assert_eq!(
            lines(&steps),
            [
                "Create Organization Name=Physics Lab",
                "Create Project Name=optics Active=True Organization=Physics Lab Description=lasers",
                "Create User Name=ada Active=True CommonName=Ada L EmailAddress=ada@x Organization=Physics Lab DefaultProject=optics",
                "Create ProjectUser Project=optics Name=ada Active=True Admin=True",
                "Deposit optics 1000 100..200",
            ]
        );
        assert!(notes.is_empty());
        // Converged: usage (Amount 400 of 1000 deposited) is not a reason to deposit again.
        assert_eq!(diff(&converged(), &want()), (vec![], vec![]));
    }

    #[test]
    fn windows_move_grow_and_are_never_withdrawn() {
        let mut w = want();
        let list = w.windows.get_mut("optics").unwrap();
        list[0].end = 300; // moved end
        list[0].amount = 1500; // grew
        list.push(Window {
            start: 300,
            end: 400,
            amount: 50,
            description: String::new(),
        });
        let (steps, _) = diff(&converged(), &w);
        assert_eq!(
            lines(&steps),
            [
                "Modify Allocation StartTime=100 EndTime=300 where Id=3",
                "Deposit optics 500 100..300",
                "Deposit optics 50 300..400",
            ]
        );
        let mut less = want();
        less.windows.get_mut("optics").unwrap()[0].amount = 10;
        let (steps, notes) = diff(&converged(), &less);
        assert!(steps.is_empty());
        assert!(notes[0].contains("never withdraws"), "{notes:?}");
        let mut none = want();
        none.windows.insert("optics".into(), vec![]);
        let (steps, notes) = diff(&converged(), &none);
        assert!(steps.is_empty());
        assert!(notes[0].contains("not declared; left as is"), "{notes:?}");
    }

    #[test]
    fn deactivation_suspends_removal_deletes_purge_deletes_and_strangers_stay() {
        let mut have = converged();
        have.users.insert("stranger".into(), User::default());
        have.members
            .insert(("optics".into(), "stranger".into()), Member::default());
        have.members.insert(
            ("optics".into(), "bob".into()),
            Member {
                active: true,
                admin: false,
            },
        );
        have.users.insert(
            "bob".into(),
            User {
                active: true,
                ..Default::default()
            },
        );
        have.users.insert(
            "carl".into(),
            User {
                active: true,
                ..Default::default()
            },
        );
        have.members.insert(
            ("optics".into(), "carl".into()),
            Member {
                active: true,
                admin: false,
            },
        );
        have.projects.insert("old".into(), Project::default());
        let mut w = want();
        w.deactivated_users.insert("bob".into());
        w.purged_users.insert("carl".into());
        w.purged_projects.insert("old".into());
        let (steps, _) = diff(&have, &w);
        assert_eq!(
            lines(&steps),
            [
                "Modify User Active=False where Name=bob",
                "Modify ProjectUser Active=False where Project=optics where Name=bob",
                "Delete ProjectUser where Project=optics where Name=carl",
                "Delete User where Name=carl",
                "Delete Project where Name=old",
            ]
        );
    }

    /// A deactivated user is suspended in every project of Roster's at once, also in one this
    /// run does not declare (another namespace's), and never in a project that is not Roster's.
    #[test]
    fn a_deactivated_user_is_suspended_in_every_project_of_rosters() {
        let mut have = State::default();
        for p in ["optics", "theirs"] {
            have.members.insert(
                (p.into(), "bob".into()),
                Member {
                    active: true,
                    admin: false,
                },
            );
        }
        let mut want = Desired::default();
        want.deactivated_users.insert("bob".into());
        want.roster_projects.insert("optics".into());
        let (steps, _) = diff(&have, &want);
        assert_eq!(
            lines(&steps),
            ["Modify ProjectUser Active=False where Project=optics where Name=bob"]
        );
    }
}
