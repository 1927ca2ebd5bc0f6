//! Slurm accounting as Roster sees it: accounts, associations, default accounts and
//! coordinators per cluster — observed from the accounting database, or desired from the site.

use std::collections::{BTreeMap, BTreeSet};

/// Limits Roster manages on an association.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub grp_jobs: Option<i64>,
    pub grp_submit_jobs: Option<i64>,
    pub max_jobs: Option<i64>,
    pub max_submit_jobs: Option<i64>,
    /// `cpu=100,gres/gpu=8`, sorted by name.
    pub grp_tres: Option<String>,
    /// Minutes.
    pub max_wall: Option<i64>,
}

/// A Slurm account on one cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Account {
    pub parent: String,
    pub fairshare: Option<i64>,
    pub qos: BTreeSet<String>,
    pub default_qos: Option<String>,
    pub limits: Limits,
}

/// One user's association with an account on a cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assoc {
    pub max_jobs: Option<i64>,
    pub max_submit_jobs: Option<i64>,
}

/// Everything Roster compares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub clusters: BTreeSet<String>,
    pub qos: BTreeSet<String>,
    /// Account descriptions and organizations (global in Slurm).
    pub account_info: BTreeMap<String, (String, String)>,
    /// (cluster, account).
    pub accounts: BTreeMap<(String, String), Account>,
    /// (cluster, account, user, partition); partition `""` when the association has none.
    pub assocs: BTreeMap<(String, String, String, String), Assoc>,
    /// (cluster, user) → default account.
    pub defaults: BTreeMap<(String, String), String>,
    /// (account, user): coordinators are global in Slurm.
    pub coordinators: BTreeSet<(String, String)>,
}

impl State {
    /// Accounts of a user on a cluster.
    pub fn accounts_of(&self, cluster: &str, user: &str) -> BTreeSet<String> {
        self.assocs
            .keys()
            .filter(|(c, _, u, _)| c == cluster && u == user)
            .map(|(_, a, _, _)| a.clone())
            .collect()
    }
}
