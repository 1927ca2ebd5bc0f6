//! From the difference between the observed and the desired accounting state to batched
//! `sacctmgr -i` calls (argument vectors, never a shell): a pure function.

use std::collections::{BTreeMap, BTreeSet};

use super::load::{Load, in_partition, load_safe};
use super::model::{Account, Assoc, State};

/// One sacctmgr invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// Arguments after `sacctmgr -i`.
    pub args: Vec<String>,
    /// For humans: what this does.
    pub what: String,
    /// The users (or, for account calls, accounts) a failure concerns.
    pub users: Vec<String>,
    pub accounts: Vec<String>,
    /// For `load`: the file's content (written to a private file when the call runs).
    pub file: Option<String>,
}

impl Call {
    /// The Slurm account (a project's group) the call is about: its `account=`, or the first
    /// `name=` of an account call.
    pub fn about(&self) -> Option<&str> {
        let account_call = self.args.get(1).is_some_and(|k| k == "account");
        self.args
            .iter()
            .find_map(|a| {
                a.strip_prefix("account=")
                    .or_else(|| a.strip_prefix("name=").filter(|_| account_call))
            })
            .map(|a| a.split(',').next().unwrap_or(a))
    }
}

fn n(v: Option<i64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-1".into())
}

fn account_settings(a: &Account) -> Vec<String> {
    let mut s = vec![format!("parent={}", a.parent)];
    if let Some(f) = a.fairshare {
        s.push(format!("fairshare={f}"));
    }
    if !a.qos.is_empty() {
        s.push(format!(
            "qos={}",
            a.qos.iter().cloned().collect::<Vec<_>>().join(",")
        ));
    }
    if let Some(q) = &a.default_qos {
        s.push(format!("defaultqos={q}"));
    }
    let l = &a.limits;
    for (k, v) in [
        ("grpjobs", l.grp_jobs),
        ("grpsubmitjobs", l.grp_submit_jobs),
        ("maxwall", l.max_wall),
    ] {
        if let Some(v) = v {
            s.push(format!("{k}={v}"));
        }
    }
    if let Some(t) = &l.grp_tres {
        s.push(format!("grptres={t}"));
    }
    s
}

/// Settings that change an existing account to `want` (limits cleared with -1).
fn account_changes(have: &Account, want: &Account) -> Vec<String> {
    let mut s = vec![];
    if have.parent != want.parent {
        s.push(format!("parent={}", want.parent));
    }
    if have.fairshare != want.fairshare {
        s.push(format!("fairshare={}", want.fairshare.unwrap_or(1)));
    }
    if have.qos != want.qos {
        // An empty QOS list falls back to the parent's: `qos=` clears it.
        s.push(format!(
            "qos={}",
            want.qos.iter().cloned().collect::<Vec<_>>().join(",")
        ));
    }
    if have.default_qos != want.default_qos {
        s.push(format!(
            "defaultqos={}",
            want.default_qos.clone().unwrap_or_else(|| "-1".into())
        ));
    }
    let (h, w) = (&have.limits, &want.limits);
    for (k, a, b) in [
        ("grpjobs", h.grp_jobs, w.grp_jobs),
        ("grpsubmitjobs", h.grp_submit_jobs, w.grp_submit_jobs),
        ("maxwall", h.max_wall, w.max_wall),
    ] {
        if a != b {
            s.push(format!("{k}={}", n(b)));
        }
    }
    if h.grp_tres != w.grp_tres {
        s.push(format!(
            "grptres={}",
            w.grp_tres
                .clone()
                .unwrap_or_else(|| clear_tres(h.grp_tres.as_deref()))
        ));
    }
    s
}

/// `cpu=-1,mem=-1` for every resource currently limited.
fn clear_tres(have: Option<&str>) -> String {
    have.unwrap_or("")
        .split(',')
        .filter_map(|kv| kv.split_once('=').map(|(k, _)| format!("{k}=-1")))
        .collect::<Vec<_>>()
        .join(",")
}

/// Every call that turns `have` into `want`. Only associations of `managed` users in accounts
/// Roster wants are ever removed (all of them in the `prune` accounts); anything else in Slurm is
/// left alone and listed in `unmanaged`.
pub fn diff(
    have: &State,
    want: &State,
    managed: &BTreeSet<String>,
    prune: &BTreeSet<String>,
    retire: &BTreeSet<(String, String)>,
    batch: usize,
    unmanaged: &mut Vec<String>,
) -> Vec<Call> {
    let mut calls = vec![];
    let mut load = Load::default();
    let chunks = |names: &[String]| -> Vec<String> {
        names.chunks(batch.max(1)).map(|c| c.join(",")).collect()
    };

    // 1. Accounts: new ones in groups of equal settings, then changed ones.
    let mut new_accounts: BTreeMap<(String, Vec<String>, String, String), Vec<String>> =
        BTreeMap::new();
    for ((cluster, name), a) in &want.accounts {
        let (desc, org) = want.account_info.get(name).cloned().unwrap_or_default();
        match have.accounts.get(&(cluster.clone(), name.clone())) {
            None => new_accounts
                .entry((cluster.clone(), account_settings(a), desc, org))
                .or_default()
                .push(name.clone()),
            Some(h) => {
                let changes = account_changes(h, a);
                if !changes.is_empty() {
                    let mut args: Vec<String> = vec![
                        "modify".into(),
                        "account".into(),
                        "where".into(),
                        format!("name={name}"),
                        format!("cluster={cluster}"),
                        "set".into(),
                    ];
                    args.extend(changes);
                    calls.push(Call {
                        args,
                        what: format!("update account {name} on {cluster}"),
                        users: vec![],
                        accounts: vec![name.clone()],
                        file: None,
                    });
                }
            }
        }
    }
    for ((cluster, settings, desc, org), names) in new_accounts {
        // In a bulk load when its parent exists already and its text fits the file format.
        let parent = settings[0].trim_start_matches("parent=");
        let loadable = (parent == "root"
            || have
                .accounts
                .contains_key(&(cluster.clone(), parent.into())))
            && [&desc, &org].iter().all(|v| load_safe(v))
            && settings.iter().all(|v| load_safe(v));
        if loadable {
            let mut options = vec![
                format!("Description='{desc}'"),
                format!("Organization='{org}'"),
            ];
            options.extend(settings[1..].iter().cloned());
            let c = load.clusters.entry(cluster.clone()).or_default();
            for name in &names {
                c.accounts
                    .push((parent.to_string(), name.clone(), options.clone()));
                load.accounts.insert((cluster.clone(), name.clone()));
            }
        }
        for list in chunks(&names) {
            if loadable {
                load.replaces.push(calls.len());
            }
            let mut args: Vec<String> = vec![
                "add".into(),
                "account".into(),
                format!("name={list}"),
                format!("cluster={cluster}"),
            ];
            args.push(format!("description={desc}"));
            args.push(format!("organization={org}"));
            args.extend(settings.clone());
            calls.push(Call {
                args,
                what: format!("add account(s) {list} on {cluster}"),
                users: vec![],
                accounts: names.clone(),
                file: None,
            });
        }
    }
    for (name, info) in &want.account_info {
        if let Some(h) = have.account_info.get(name)
            && h != info
            && let Some(cluster) = want
                .accounts
                .keys()
                .find(|(_, a)| a == name)
                .map(|(c, _)| c.clone())
        {
            let args = vec![
                "modify".into(),
                "account".into(),
                "where".into(),
                format!("name={name}"),
                format!("cluster={cluster}"),
                "set".into(),
                format!("description={}", info.0),
                format!("organization={}", info.1),
            ];
            calls.push(Call {
                args,
                what: format!("update description of account {name}"),
                users: vec![],
                accounts: vec![name.clone()],
                file: None,
            });
        }
    }

    // 2. Associations: users new on a cluster come in with their default account.
    let mut with_default: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
    let mut plain: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
    for key in want.assocs.keys() {
        if have.assocs.contains_key(key) {
            continue;
        }
        let (cluster, account, user, partition) = key;
        let new_user = have.accounts_of(cluster, user).is_empty();
        let default = want.defaults.get(&(cluster.clone(), user.clone()));
        let group = (cluster.clone(), account.clone(), partition.clone());
        if new_user && default == Some(account) {
            with_default.entry(group).or_default().push(user.clone());
        } else {
            plain.entry(group).or_default().push(user.clone());
        }
    }
    // Users whose default association is created with them, first; then the others.
    let created: BTreeSet<(String, String)> = with_default
        .iter()
        .flat_map(|((c, _, _), us)| us.iter().map(move |u| (c.clone(), u.clone())))
        .collect();
    for (default, groups) in [(true, &with_default), (false, &plain)] {
        for ((cluster, account, partition), users) in groups {
            let mut users = users.clone();
            users.sort();
            users.dedup();
            let loadable = partition.is_empty()
                && (have
                    .accounts
                    .contains_key(&(cluster.clone(), account.clone()))
                    || load.accounts.contains(&(cluster.clone(), account.clone())));
            if loadable {
                let c = load.clusters.entry(cluster.clone()).or_default();
                for user in &users {
                    let key = (
                        cluster.clone(),
                        account.clone(),
                        user.clone(),
                        String::new(),
                    );
                    let mut options = vec![];
                    if default {
                        options.push(format!("DefaultAccount='{account}'"));
                    }
                    if let Some(w) = want.assocs.get(&key).filter(|w| **w != Assoc::default()) {
                        options.push(format!("MaxJobs={}", n(w.max_jobs)));
                        options.push(format!("MaxSubmitJobs={}", n(w.max_submit_jobs)));
                    }
                    c.users
                        .push((default, account.clone(), user.clone(), options));
                    load.assocs.insert(key);
                }
            }
            for list in chunks(&users) {
                if loadable {
                    load.replaces.push(calls.len());
                }
                let mut args = vec![
                    "add".to_string(),
                    "user".into(),
                    format!("name={list}"),
                    format!("account={account}"),
                ];
                if default {
                    args.push(format!("defaultaccount={account}"));
                }
                args.push(format!("cluster={cluster}"));
                if !partition.is_empty() {
                    args.push(format!("partition={partition}"));
                }
                calls.push(Call {
                    args,
                    what: format!(
                        "add user(s) {list} to {account}{} on {cluster}",
                        in_partition(partition)
                    ),
                    users: users.clone(),
                    accounts: vec![],
                    file: None,
                });
            }
        }
    }

    // 3. Default accounts that must change (before any removal of the old default).
    let mut defaults: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for ((cluster, user), account) in &want.defaults {
        if created.contains(&(cluster.clone(), user.clone())) {
            continue;
        }
        if have.defaults.get(&(cluster.clone(), user.clone())) != Some(account) {
            defaults
                .entry((cluster.clone(), account.clone()))
                .or_default()
                .push(user.clone());
        }
    }
    for ((cluster, account), users) in defaults {
        for list in chunks(&users) {
            calls.push(Call {
                args: vec![
                    "modify".into(),
                    "user".into(),
                    "where".into(),
                    format!("name={list}"),
                    format!("cluster={cluster}"),
                    "set".into(),
                    format!("defaultaccount={account}"),
                ],
                what: format!("set default account {account} for {list} on {cluster}"),
                users: users.clone(),
                accounts: vec![],
                file: None,
            });
        }
    }

    // 4. Association limits (deactivation sets MaxJobs=0 MaxSubmitJobs=0; reactivation restores).
    // (Loaded by the load below?, cluster, account, partition, maxjobs, maxsubmitjobs.)
    type LimitGroup = (bool, String, String, String, String, String);
    let mut limits: BTreeMap<LimitGroup, Vec<String>> = BTreeMap::new();
    for (key, w) in &want.assocs {
        let h = have.assocs.get(key).cloned().unwrap_or_default();
        if &h != w {
            let (cluster, account, user, partition) = key;
            limits
                .entry((
                    load.assocs.contains(key),
                    cluster.clone(),
                    account.clone(),
                    partition.clone(),
                    n(w.max_jobs),
                    n(w.max_submit_jobs),
                ))
                .or_default()
                .push(user.clone());
        }
    }
    for ((loaded, cluster, account, partition, max_jobs, max_submit), users) in limits {
        for list in chunks(&users) {
            if loaded {
                load.replaces.push(calls.len());
            }
            let mut args = vec![
                "modify".to_string(),
                "user".into(),
                "where".into(),
                format!("name={list}"),
                format!("account={account}"),
                format!("cluster={cluster}"),
            ];
            if !partition.is_empty() {
                args.push(format!("partition={partition}"));
            }
            args.extend([
                "set".into(),
                format!("maxjobs={max_jobs}"),
                format!("maxsubmitjobs={max_submit}"),
            ]);
            calls.push(Call {
                args,
                what: format!(
                    "limits maxjobs={max_jobs} maxsubmitjobs={max_submit} for {list} in {account}{} on {cluster}",
                    in_partition(&partition)
                ),
                users: users.clone(),
                accounts: vec![],
                file: None,
            });
        }
    }

    // 5. Coordinators (only Roster's users are ever removed).
    let wanted_accounts: BTreeSet<&String> = want.accounts.keys().map(|(_, a)| a).collect();
    let mut add_coord: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (account, user) in want.coordinators.difference(&have.coordinators) {
        add_coord
            .entry(account.clone())
            .or_default()
            .push(user.clone());
    }
    let mut del_coord: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (account, user) in have.coordinators.difference(&want.coordinators) {
        if managed.contains(user) && wanted_accounts.contains(account) {
            del_coord
                .entry(account.clone())
                .or_default()
                .push(user.clone());
        }
    }
    for (verb, what, groups) in [("add", "make", add_coord), ("delete", "remove", del_coord)] {
        for (account, users) in groups {
            let cluster = want
                .accounts
                .keys()
                .find(|(_, a)| *a == account)
                .map(|(c, _)| c.clone())
                .unwrap_or_default();
            // A coordinator's line in the load needs the association there before it.
            let exists = |u: &String| {
                let key = (cluster.clone(), account.clone(), u.clone(), String::new());
                have.assocs.contains_key(&key) || load.assocs.contains(&key)
            };
            if verb == "add" && !cluster.is_empty() && users.iter().all(exists) {
                let c = load.clusters.entry(cluster.clone()).or_default();
                for u in &users {
                    c.coordinators.push((account.clone(), u.clone()));
                }
                load.replaces.push(calls.len());
            }
            calls.push(Call {
                args: vec![
                    verb.into(),
                    "coordinator".into(),
                    format!("account={account}"),
                    format!("names={}", users.join(",")),
                    format!("cluster={cluster}"),
                ],
                what: format!("{what} {} coordinator(s) of {account}", users.join(",")),
                users: users.clone(),
                accounts: vec![],
                file: None,
            });
        }
    }

    // 6. Associations to remove: Roster's users in Roster's accounts only. A user's last
    //    association on a cluster removes the user there.
    let mut users_on: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (c, _, u, _) in have.assocs.keys() {
        *users_on.entry((c.clone(), u.clone())).or_default() += 1;
    }
    let mut stale: Vec<&(String, String, String, String)> = vec![];
    for k in have.assocs.keys().filter(|k| {
        !want.assocs.contains_key(*k)
            && (wanted_accounts.contains(&k.1) || retire.contains(&(k.0.clone(), k.1.clone())))
    }) {
        if managed.contains(&k.2) || prune.contains(&k.1) {
            stale.push(k);
        } else {
            unmanaged.push(format!(
                "association of {} with {}{} on {} (not Roster's user; kept)",
                k.2,
                k.1,
                in_partition(&k.3),
                k.0
            ));
        }
    }
    let mut removing: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (c, _, u, _) in &stale {
        *removing.entry((c.clone(), u.clone())).or_default() += 1;
    }
    // A user who moves from one account to another keeps the user: deleting it on the cluster
    // would take the new association (added above) with it.
    let wanted_on: BTreeSet<(&String, &String)> =
        want.assocs.keys().map(|(c, _, u, _)| (c, u)).collect();
    let mut remove: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
    let mut gone: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (c, a, u, p) in stale {
        // slurmdbd refuses to delete a user on a cluster while it has associations besides
        // its default one: those go first, one account at a time, then the user.
        let default = have
            .defaults
            .get(&(c.clone(), u.clone()))
            .is_none_or(|d| d == a);
        if removing[&(c.clone(), u.clone())] == users_on[&(c.clone(), u.clone())]
            && !wanted_on.contains(&(c, u))
            && default
        {
            gone.entry(c.clone()).or_default().push(u.clone());
        } else {
            remove
                .entry((c.clone(), a.clone(), p.clone()))
                .or_default()
                .push(u.clone());
        }
    }
    for ((cluster, account, partition), users) in remove {
        for list in chunks(&users) {
            let mut args = vec![
                "delete".to_string(),
                "user".into(),
                "where".into(),
                format!("name={list}"),
                format!("account={account}"),
                format!("cluster={cluster}"),
            ];
            if !partition.is_empty() {
                args.push(format!("partition={partition}"));
            }
            calls.push(Call {
                args,
                what: format!(
                    "remove {list} from {account}{} on {cluster}",
                    in_partition(&partition)
                ),
                users: users.clone(),
                accounts: vec![],
                file: None,
            });
        }
    }
    for (cluster, mut users) in gone {
        users.sort();
        users.dedup();
        for list in chunks(&users) {
            calls.push(Call {
                args: vec![
                    "delete".into(),
                    "user".into(),
                    "where".into(),
                    format!("name={list}"),
                    format!("cluster={cluster}"),
                ],
                what: format!("remove user(s) {list} from {cluster} (no memberships left)"),
                users: users.clone(),
                accounts: vec![],
                file: None,
            });
        }
    }

    // 7. Accounts of purged projects, now empty, leave their clusters.
    let mut retiring: BTreeMap<&String, Vec<String>> = BTreeMap::new();
    for (c, a) in retire {
        if have.accounts.contains_key(&(c.clone(), a.clone())) {
            retiring.entry(c).or_default().push(a.clone());
        }
    }
    for (cluster, accounts) in retiring {
        for list in chunks(&accounts) {
            calls.push(Call {
                args: vec![
                    "delete".into(),
                    "account".into(),
                    "where".into(),
                    format!("name={list}"),
                    format!("cluster={cluster}"),
                ],
                what: format!("remove account(s) {list} from {cluster} (project purged)"),
                users: vec![],
                accounts: accounts.clone(),
                file: None,
            });
        }
    }
    load.into_calls(calls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slurm::sacctmgr::{Outcome, classify};

    fn state(
        accounts: &[(&str, &str)],
        assocs: &[(&str, &str, &str)],
        defaults: &[(&str, &str, &str)],
    ) -> State {
        let mut s = State::default();
        for (c, a) in accounts {
            s.accounts.insert(
                (c.to_string(), a.to_string()),
                Account {
                    parent: "root".into(),
                    ..Default::default()
                },
            );
            s.account_info
                .insert(a.to_string(), (a.to_string(), "-".into()));
        }
        for (c, a, u) in assocs {
            s.assocs.insert(
                (c.to_string(), a.to_string(), u.to_string(), String::new()),
                Assoc::default(),
            );
        }
        for (c, u, a) in defaults {
            s.defaults
                .insert((c.to_string(), u.to_string()), a.to_string());
        }
        s
    }

    fn managed(users: &[&str]) -> BTreeSet<String> {
        users.iter().map(|u| u.to_string()).collect()
    }

    #[test]
    fn many_additions_become_one_load_per_cluster_with_defaults_first() {
        // Ten new projects, a member each, everyone also in p0 (not their default), p0's first
        // member its coordinator; a locked association carries its limits; one account whose
        // description the file format cannot carry stays a call of its own.
        let mut want = state(&[], &[], &[]);
        let mut have = state(
            &[("c", "old")],
            &[("c", "old", "zed")],
            &[("c", "zed", "old")],
        );
        have.account_info.clear();
        for i in 0..10 {
            let (p, u) = (format!("p{i}"), format!("u{i}"));
            want.accounts.insert(
                ("c".into(), p.clone()),
                Account {
                    parent: "root".into(),
                    ..Default::default()
                },
            );
            want.account_info
                .insert(p.clone(), (format!("project {i}"), "inst".into()));
            want.assocs.insert(
                ("c".into(), p.clone(), u.clone(), String::new()),
                Assoc::default(),
            );
            want.defaults.insert(("c".into(), u.clone()), p.clone());
            if i > 0 {
                want.assocs.insert(
                    ("c".into(), "p0".into(), u.clone(), String::new()),
                    Assoc::default(),
                );
            }
        }
        want.accounts.insert(
            ("c".into(), "odd".into()),
            Account {
                parent: "root".into(),
                ..Default::default()
            },
        );
        want.account_info
            .insert("odd".into(), ("it's: odd".into(), "inst".into()));
        want.accounts.insert(
            ("c".into(), "old".into()),
            Account {
                parent: "root".into(),
                ..Default::default()
            },
        );
        want.assocs.insert(
            ("c".into(), "old".into(), "zed".into(), String::new()),
            Assoc::default(),
        );
        want.defaults
            .insert(("c".into(), "zed".into()), "old".into());
        want.assocs.insert(
            ("c".into(), "p3".into(), "u3".into(), String::new()),
            Assoc {
                max_jobs: Some(0),
                max_submit_jobs: Some(0),
            },
        );
        want.coordinators.insert(("p0".into(), "u0".into()));
        want.coordinators.insert(("p0".into(), "u1".into()));
        want.coordinators.insert(("p1".into(), "u1".into()));
        want.coordinators.insert(("old".into(), "zed".into()));
        let calls = diff(
            &have,
            &want,
            &managed(&["zed"]),
            &BTreeSet::new(),
            &BTreeSet::new(),
            1000,
            &mut vec![],
        );
        let args: Vec<String> = calls.iter().map(|c| c.args.join(" ")).collect();
        assert_eq!(
            args,
            [
                "add account name=odd cluster=c description=it's: odd organization=inst parent=root",
                "load file=-",
            ]
        );
        let file = calls[1].file.as_deref().unwrap();
        let lines: Vec<&str> = file.lines().collect();
        assert_eq!(lines[0], "Cluster - 'c'");
        assert_eq!(lines[1], "Parent - 'root'");
        assert_eq!(
            lines[2],
            "Account - 'p0':Description='project 0':Organization='inst'"
        );
        // Every user's default line comes before any other line of that user.
        for i in 0..10 {
            let u = format!("User - 'u{i}'");
            let first = lines.iter().position(|l| l.starts_with(&u)).unwrap();
            assert!(
                lines[first].contains(&format!(":DefaultAccount='p{i}'")),
                "{}",
                lines[first]
            );
            let parent = lines[..first]
                .iter()
                .rev()
                .find(|l| l.starts_with("Parent"))
                .unwrap();
            assert_eq!(*parent, format!("Parent - 'p{i}'"));
        }
        assert!(lines.contains(&"User - 'u3':DefaultAccount='p3':MaxJobs=0:MaxSubmitJobs=0"));
        assert!(lines.contains(&"User - 'u0':DefaultAccount='p0':Coordinator='p0'"));
        // sacctmgr reads a user's options on its first line only: every coordinatorship there.
        assert!(lines.contains(&"User - 'u1':DefaultAccount='p1':Coordinator='p0,p1'"));
        assert!(lines.iter().filter(|l| l.contains("Coordinator")).count() == 3);
        // The existing association gets its coordinator by a line of its own under its account.
        let zed = lines
            .iter()
            .position(|l| *l == "User - 'zed':Coordinator='old'")
            .unwrap();
        assert_eq!(
            lines[..zed].iter().rev().find(|l| l.starts_with("Parent")),
            Some(&"Parent - 'old'")
        );
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with("User - 'u5'"))
                .count(),
            2
        );
        assert!(
            calls[1]
                .what
                .contains("10 account(s), 19 association(s) and 4 coordinator(s)")
        );
        // A few additions stay single calls: a load costs more than it saves there.
        let small = diff(
            &State::default(),
            &state(&[("c", "a")], &[("c", "a", "u")], &[("c", "u", "a")]),
            &managed(&["u"]),
            &BTreeSet::new(),
            &BTreeSet::new(),
            1000,
            &mut vec![],
        );
        assert!(small.iter().all(|c| c.file.is_none() && c.args[0] == "add"));
    }

    #[test]
    fn from_nothing_accounts_then_users_with_their_default_in_few_calls() {
        let want = state(
            &[("c", "optics"), ("c", "cosmo")],
            &[
                ("c", "optics", "ada"),
                ("c", "optics", "bob"),
                ("c", "cosmo", "ada"),
            ],
            &[("c", "ada", "optics"), ("c", "bob", "optics")],
        );
        let calls = diff(
            &State::default(),
            &want,
            &managed(&["ada", "bob"]),
            &BTreeSet::new(),
            &BTreeSet::new(),
            1000,
            &mut vec![],
        );
        let args: Vec<String> = calls.iter().map(|c| c.args.join(" ")).collect();
        assert_eq!(
            args,
            [
                "add account name=cosmo cluster=c description=cosmo organization=- parent=root",
                "add account name=optics cluster=c description=optics organization=- parent=root",
                "add user name=ada,bob account=optics defaultaccount=optics cluster=c",
                "add user name=ada account=cosmo cluster=c",
            ]
        );
        assert_eq!(
            diff(
                &want,
                &want,
                &managed(&["ada", "bob"]),
                &BTreeSet::new(),
                &BTreeSet::new(),
                1000,
                &mut vec![]
            ),
            []
        );
    }

    /// The calls' arguments for a diff without pruning or retirement.
    fn plain_args(have: &State, want: &State, users: &[&str]) -> Vec<String> {
        diff(
            have,
            want,
            &managed(users),
            &BTreeSet::new(),
            &BTreeSet::new(),
            1000,
            &mut vec![],
        )
        .iter()
        .map(|c| c.args.join(" "))
        .collect()
    }

    #[test]
    fn a_user_moving_to_another_account_keeps_the_new_association() {
        let have = state(
            &[("c", "optics"), ("c", "cosmo")],
            &[("c", "optics", "ada")],
            &[("c", "ada", "optics")],
        );
        let want = state(
            &[("c", "optics"), ("c", "cosmo")],
            &[("c", "cosmo", "ada")],
            &[("c", "ada", "cosmo")],
        );
        assert_eq!(
            plain_args(&have, &want, &["ada"]),
            [
                "add user name=ada account=cosmo cluster=c",
                "modify user where name=ada cluster=c set defaultaccount=cosmo",
                "delete user where name=ada account=optics cluster=c",
            ]
        );
    }

    #[test]
    fn a_user_leaving_every_project_loses_the_other_associations_before_the_default() {
        let have = state(
            &[("c", "optics"), ("c", "cosmo")],
            &[("c", "optics", "ada"), ("c", "cosmo", "ada")],
            &[("c", "ada", "optics")],
        );
        let want = state(&[("c", "optics"), ("c", "cosmo")], &[], &[]);
        assert_eq!(
            plain_args(&have, &want, &["ada"]),
            [
                "delete user where name=ada account=cosmo cluster=c",
                "delete user where name=ada cluster=c",
            ]
        );
    }

    #[test]
    fn a_retired_account_goes_after_its_users_defaults_moved_and_its_last_users_left() {
        let have = state(
            &[("c", "optics"), ("c", "cosmo")],
            &[
                ("c", "optics", "ada"),
                ("c", "cosmo", "ada"),
                ("c", "optics", "bob"),
            ],
            &[("c", "ada", "optics"), ("c", "bob", "optics")],
        );
        // What desired() makes of it: optics is neither wanted nor kept; ada's default moved.
        let want = state(
            &[("c", "cosmo")],
            &[("c", "cosmo", "ada")],
            &[("c", "ada", "cosmo")],
        );
        let retire: BTreeSet<(String, String)> = [("c".to_string(), "optics".to_string())].into();
        let args: Vec<String> = diff(
            &have,
            &want,
            &managed(&["ada", "bob"]),
            &BTreeSet::new(),
            &retire,
            1000,
            &mut vec![],
        )
        .iter()
        .map(|c| c.args.join(" "))
        .collect();
        assert_eq!(
            args,
            [
                "modify user where name=ada cluster=c set defaultaccount=cosmo",
                "delete user where name=ada account=optics cluster=c",
                "delete user where name=bob cluster=c",
                "delete account where name=optics cluster=c",
            ]
        );
        // Without the retirement, an account Roster no longer wants is left alone.
        assert_eq!(
            diff(
                &have,
                &want,
                &managed(&["ada", "bob"]),
                &BTreeSet::new(),
                &BTreeSet::new(),
                1000,
                &mut vec![]
            )
            .len(),
            1
        );
    }

    #[test]
    fn removing_the_default_switches_it_first_and_the_last_one_removes_the_user() {
        let have = state(
            &[("c", "optics"), ("c", "cosmo")],
            &[
                ("c", "optics", "ada"),
                ("c", "cosmo", "ada"),
                ("c", "optics", "bob"),
            ],
            &[("c", "ada", "optics"), ("c", "bob", "optics")],
        );
        let want = state(
            &[("c", "optics"), ("c", "cosmo")],
            &[("c", "cosmo", "ada")],
            &[("c", "ada", "cosmo")],
        );
        let args: Vec<String> = diff(
            &have,
            &want,
            &managed(&["ada", "bob"]),
            &BTreeSet::new(),
            &BTreeSet::new(),
            1000,
            &mut vec![],
        )
        .iter()
        .map(|c| c.args.join(" "))
        .collect();
        assert_eq!(
            args,
            [
                "modify user where name=ada cluster=c set defaultaccount=cosmo",
                "delete user where name=ada account=optics cluster=c",
                "delete user where name=bob cluster=c",
            ]
        );
        // Users Roster does not manage are never removed.
        let args: Vec<String> = diff(
            &have,
            &want,
            &managed(&["ada"]),
            &BTreeSet::new(),
            &BTreeSet::new(),
            1000,
            &mut vec![],
        )
        .iter()
        .map(|c| c.args.join(" "))
        .collect();
        assert!(!args.iter().any(|a| a.contains("bob")), "{args:?}");
    }

    #[test]
    fn deactivation_sets_limits_in_one_call_per_account_and_batches_split() {
        let have = state(
            &[("c", "optics")],
            &[
                ("c", "optics", "u1"),
                ("c", "optics", "u2"),
                ("c", "optics", "u3"),
            ],
            &[],
        );
        let mut want = have.clone();
        for a in want.assocs.values_mut() {
            *a = Assoc {
                max_jobs: Some(0),
                max_submit_jobs: Some(0),
            };
        }
        want.defaults = have.defaults.clone();
        let args: Vec<String> = diff(
            &have,
            &want,
            &managed(&["u1", "u2", "u3"]),
            &BTreeSet::new(),
            &BTreeSet::new(),
            2,
            &mut vec![],
        )
        .iter()
        .map(|c| c.args.join(" "))
        .collect();
        assert_eq!(
            args,
            [
                "modify user where name=u1,u2 account=optics cluster=c set maxjobs=0 maxsubmitjobs=0",
                "modify user where name=u3 account=optics cluster=c set maxjobs=0 maxsubmitjobs=0",
            ]
        );
    }

    #[test]
    fn sacctmgr_answers_are_read_not_just_exit_codes() {
        assert_eq!(
            classify(false, " Nothing new added.\n", ""),
            Outcome::AlreadySo
        );
        assert_eq!(
            classify(false, "", " Nothing deleted\n"),
            Outcome::AlreadySo
        );
        assert_eq!(classify(true, " Adding User(s)\n", ""), Outcome::Done);
        assert!(matches!(
            classify(
                false,
                "",
                "sacctmgr: error: Database is busy or waiting for lock from other user."
            ),
            Outcome::Failed {
                reason: "DatabaseBusy",
                ..
            }
        ));
        assert!(matches!(
            classify(false, " Job(s) running, cancel job(s) before remove\n", ""),
            Outcome::Failed {
                reason: "JobsRunning",
                ..
            }
        ));
    }
}
