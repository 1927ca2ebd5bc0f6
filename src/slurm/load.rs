//! Many additions in one `sacctmgr load` file per cluster: accounts under their parents, users
//! with their default account first, coordinators — the bulk path of the diff.

use std::collections::{BTreeMap, BTreeSet};

use super::diff::Call;

/// Below this many calls a bulk `sacctmgr load` costs more than it saves: a load has a fixed
/// cost of a few seconds, a single call about 0.6 s.
const LOAD_MIN_CALLS: usize = 8;

/// The additions of a diff as `sacctmgr load` files, one per cluster: new accounts, new
/// associations (a new user's default first), their limits and new coordinators. `load` adds and
/// modifies but never removes — the same effect as the calls it stands for, in one call.
#[derive(Default)]
pub(super) struct Load {
    pub(super) clusters: BTreeMap<String, LoadCluster>,
    /// (cluster, account) of the accounts the load makes.
    pub(super) accounts: BTreeSet<(String, String)>,
    /// Associations the load makes.
    pub(super) assocs: BTreeSet<(String, String, String, String)>,
    /// Indices of the calls it stands for.
    pub(super) replaces: Vec<usize>,
}

#[derive(Default)]
pub(super) struct LoadCluster {
    /// (parent, account, options).
    pub(super) accounts: Vec<(String, String, Vec<String>)>,
    /// (the user's default, account, user, options).
    pub(super) users: Vec<(bool, String, String, Vec<String>)>,
    /// (account, user).
    pub(super) coordinators: Vec<(String, String)>,
}

impl Load {
    /// The calls with the ones it stands for replaced by one load per cluster, where the
    /// first of them was; unchanged when the load would not pay.
    pub(super) fn into_calls(self, calls: Vec<Call>) -> Vec<Call> {
        if self.replaces.len() < LOAD_MIN_CALLS {
            return calls;
        }
        let replaced: BTreeSet<usize> = self.replaces.iter().copied().collect();
        let at = *replaced.first().expect("not empty");
        let mut out = Vec::with_capacity(calls.len() - replaced.len() + self.clusters.len());
        for (i, call) in calls.into_iter().enumerate() {
            if i == at {
                out.extend(self.clusters.iter().map(|(name, c)| c.call(name)));
            }
            if !replaced.contains(&i) {
                out.push(call);
            }
        }
        out
    }
}

impl LoadCluster {
    pub(super) fn call(&self, cluster: &str) -> Call {
        let mut text = format!("Cluster - '{cluster}'\n");
        let mut parent = String::new();
        let mut under = |text: &mut String, p: &str| {
            if parent != p {
                text.push_str(&format!("Parent - '{p}'\n"));
                parent = p.to_string();
            }
        };
        for (p, account, options) in &self.accounts {
            under(&mut text, p);
            text.push_str(&line("Account", account, options));
        }
        // A new user's first line names its default account: without it, the first account
        // would become the default. Options on a user's later lines are not read (the user
        // exists by then), so all of a user's coordinatorships go on its first line.
        let mut coordinators: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (a, u) in &self.coordinators {
            coordinators.entry(u.as_str()).or_default().push(a.as_str());
        }
        let mut users: Vec<&(bool, String, String, Vec<String>)> = self.users.iter().collect();
        users.sort_by(|a, b| (!a.0, &a.1, &a.2).cmp(&(!b.0, &b.1, &b.2)));
        for (_, account, user, options) in users {
            under(&mut text, account);
            let mut options = options.clone();
            if let Some(accounts) = coordinators.remove(user.as_str()) {
                options.push(format!("Coordinator='{}'", accounts.join(",")));
            }
            text.push_str(&line("User", user, &options));
        }
        // Users already in Slurm: a line under an account they are in.
        for (user, accounts) in coordinators {
            under(&mut text, accounts[0]);
            text.push_str(&line(
                "User",
                user,
                &[format!("Coordinator='{}'", accounts.join(","))],
            ));
        }
        let users: BTreeSet<String> = self.users.iter().map(|u| u.2.clone()).collect();
        let accounts: Vec<String> = self.accounts.iter().map(|a| a.1.clone()).collect();
        Call {
            args: vec!["load".into(), "file=-".into()],
            what: format!(
                "load {} account(s), {} association(s) and {} coordinator(s) on {cluster} in one call",
                self.accounts.len(),
                self.users.len(),
                self.coordinators.len()
            ),
            users: users.into_iter().collect(),
            accounts,
            file: Some(text),
        }
    }
}

fn line(kind: &str, name: &str, options: &[String]) -> String {
    let mut l = format!("{kind} - '{name}'");
    for o in options {
        l.push(':');
        l.push_str(o);
    }
    l.push('\n');
    l
}

/// A value the load file format carries unchanged: options are separated by `:` and quoted
/// with `'`, lines end at a newline. (Names are validated before; free text may hold these.)
pub(super) fn load_safe(v: &str) -> bool {
    !v.chars()
        .any(|c| c == '\'' || c == ':' || c == '"' || c.is_control())
}

pub(super) fn in_partition(partition: &str) -> String {
    if partition.is_empty() {
        String::new()
    } else {
        format!(" (partition {partition})")
    }
}
