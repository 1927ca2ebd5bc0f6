//! The requests between what Gold holds and what it should hold, in stages (organizations,
//! users, projects, members, allocations): a pure function.

use std::collections::BTreeSet;

use super::desired::{Desired, Window};
use super::observe::{Allocation, State};
use super::proto::Request;
use crate::plan::Kind;
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
    use crate::gold::desired::*;
    use crate::gold::observe::*;

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
