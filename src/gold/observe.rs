//! What Gold holds: seven bulk queries (Organizations, Users, Projects, their members,
//! Accounts and how they link to projects, Allocations). Gold has no ownership marker: Roster's
//! Gold users and projects are those whose names Roster owns in the directory.

use std::collections::{BTreeMap, BTreeSet};

use super::proto::{Client, GoldError, Request};

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
