//! What Slurm should hold, from the declared site and the directory (pure). An association is
//! only desired once the account's LDAP entry exists: Slurm must never know a user before NSS
//! can resolve it.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{Account, Assoc, Limits, State};
use crate::api::{Project, parse_duration};
use crate::config::Config;
use crate::plan::Observed;
use crate::plan::{Kind, Plan, group_name};
use crate::site::{Key, Site};

/// Why an object's Slurm side is not (yet) what it declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub kind: Kind,
    pub key: Key,
    pub reason: &'static str,
    pub message: String,
}

/// What Slurm should hold and what is needed to get there.
#[derive(Clone, Debug, Default)]
pub struct Desired {
    pub state: State,
    /// Objects whose Slurm side waits for something, with why.
    pub waiting: Vec<Waiting>,
    /// (group DN, cluster): accounts Roster creates or adopts now, to be recorded on the group
    /// (`rosterSlurmAccount`) so Roster knows later that they are its own.
    pub record: Vec<(String, String)>,
    /// Accounts whose associations of unmanaged users are removed too (`pruneUnmanaged`).
    pub prune_unmanaged: BTreeSet<String>,
    /// Roster's users (accounts in the directory and purged ones behind their tombstones): the
    /// only users whose associations Roster ever removes.
    pub managed: BTreeSet<String>,
    /// (cluster, account): accounts of purged projects that leave Slurm, after their users'
    /// defaults moved elsewhere and the users left.
    pub retire: BTreeSet<(String, String)>,
    /// What Roster leaves in Slurm and why (purged projects' accounts that still hold users
    /// Roster does not manage).
    pub kept: Vec<String>,
}

/// Copies an account as it is in Slurm (settings, description, associations, coordinators),
/// locked against new submissions when `lock`.
fn keep_account(state: &mut State, have: &State, cluster: &str, name: &str, lock: bool) {
    let key = (cluster.to_string(), name.to_string());
    let Some(a) = have.accounts.get(&key) else {
        return;
    };
    let mut a = a.clone();
    if lock {
        a.limits.grp_submit_jobs = Some(0);
    }
    state.accounts.insert(key, a);
    if let Some(info) = have.account_info.get(name) {
        state.account_info.insert(name.to_string(), info.clone());
    }
    for (k, v) in have
        .assocs
        .iter()
        .filter(|(k, _)| k.0 == cluster && k.1 == name)
    {
        state.assocs.entry(k.clone()).or_insert_with(|| v.clone());
    }
    for c in have.coordinators.iter().filter(|(a, _)| a == name) {
        state.coordinators.insert(c.clone());
    }
}

/// Copies a user's associations and defaults on the managed clusters as they are in Slurm,
/// blocked (MaxJobs=0, MaxSubmitJobs=0) when `block`.
fn keep_user(state: &mut State, have: &State, clusters: &[String], user: &str, block: bool) {
    for (k, v) in have
        .assocs
        .iter()
        .filter(|(k, _)| k.2 == user && clusters.contains(&k.0))
    {
        let assoc = if block {
            Assoc {
                max_jobs: Some(0),
                max_submit_jobs: Some(0),
            }
        } else {
            v.clone()
        };
        state.assocs.insert(k.clone(), assoc);
    }
    for (k, a) in have
        .defaults
        .iter()
        .filter(|((c, u), _)| u == user && clusters.contains(c))
    {
        state.defaults.insert(k.clone(), a.clone());
    }
}

/// The desired state, plus the objects that wait for something. A Slurm account that exists
/// but was neither created nor adopted by Roster is left alone unless adoption is allowed
/// (site configuration and the `roster.io/adopt` annotation, DESIGN.md §5.2).
pub fn desired(
    site: &Site,
    ldap: &Observed,
    plan: &Plan,
    config: &Config,
    have: &State,
    now: jiff::Timestamp,
) -> Desired {
    let Some(cfg) = &config.slurm else {
        return Desired::default();
    };
    let existing_qos = &have.qos;
    let mut state = State::default();
    let mut waiting = vec![];
    let mut record = vec![];
    let mut prune_unmanaged = BTreeSet::new();
    let owned = |e: &crate::plan::Entry| e.is_managed_by(&config.manager_id);
    state.clusters = cfg.clusters.iter().cloned().collect();
    // Projects that are fine in LDAP become Slurm accounts on their clusters.
    let mut projects: BTreeMap<String, (&Key, &Project, Vec<String>)> = BTreeMap::new();
    for (key, p) in &site.projects {
        let Some(s) = plan.status_of(Kind::Project, key) else {
            continue;
        };
        let group = group_name(p);
        if s.is_blocked() {
            // Invalid or in conflict: Slurm keeps what it has of a group that is Roster's.
            if let Some(e) = ldap.groups.get(&group).filter(|e| owned(e)) {
                for c in e.values("rosterSlurmAccount") {
                    keep_account(&mut state, have, c, &group, false);
                }
            }
            continue;
        }
        let sl = p.spec.slurm.clone().unwrap_or_default();
        let Some(entry) = ldap.groups.get(&group).filter(|e| owned(e)) else {
            waiting.push(Waiting {
                kind: Kind::Project,
                key: key.clone(),
                reason: "WaitingForLdap",
                message: format!("the LDAP group {group} does not exist yet; its Slurm account follows once it does"),
            });
            continue;
        };
        let recorded: BTreeSet<&String> = entry.values("rosterSlurmAccount").iter().collect();
        let adoption = &config.adoption;
        let may_adopt = adoption.enabled
            && adoption.namespaces.iter().any(|n| n == &key.namespace)
            && p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(crate::api::ADOPT_ANNOTATION))
                .is_some_and(|v| v == "true");
        let wanted: Vec<String> = if sl.clusters.is_empty() {
            cfg.clusters.clone()
        } else {
            sl.clusters
                .iter()
                .filter(|c| cfg.clusters.contains(c))
                .cloned()
                .collect()
        };
        let mut clusters = vec![];
        for c in wanted {
            let exists = have.accounts.contains_key(&(c.clone(), group.clone()));
            if recorded.contains(&c) {
                clusters.push(c);
            } else if exists && !may_adopt {
                waiting.push(Waiting {
                    kind: Kind::Project,
                    key: key.clone(),
                    reason: "UnmanagedSlurmAccount",
                    message: format!(
                        "the Slurm account {group} already exists on cluster {c} and is not Roster's; adoption needs adoption.enabled with namespace {} in the config and the annotation roster.io/adopt: \"true\"",
                        key.namespace
                    ),
                });
            } else {
                record.push((entry.dn.clone(), c.clone()));
                clusters.push(c);
            }
        }
        if sl.prune_unmanaged {
            prune_unmanaged.insert(group.clone());
        }
        let unknown: Vec<&String> = sl
            .clusters
            .iter()
            .filter(|c| !cfg.clusters.contains(c))
            .collect();
        if !unknown.is_empty() {
            waiting.push(Waiting {
                kind: Kind::Project,
                key: key.clone(),
                reason: "UnknownCluster",
                message: format!("spec.slurm.clusters names clusters the configuration does not manage: {unknown:?}"),
            });
        }
        // Defence in depth: admission already checked these, but nothing that could be read as
        // a sacctmgr keyword or list ever reaches its argument vector.
        let bad: Vec<&String> = std::iter::once(&group)
            .chain(sl.qos.iter())
            .chain(sl.default_qos.iter())
            .chain(sl.parent.iter())
            .filter(|n| !super::is_slurm_name(n))
            .chain(
                sl.limits
                    .iter()
                    .flat_map(|l| l.grp_tres.keys().chain(l.grp_tres_mins.keys()))
                    .filter(|n| !crate::api::is_tres_name(n)),
            )
            .collect();
        if !bad.is_empty() {
            waiting.push(Waiting {
                kind: Kind::Project,
                key: key.clone(),
                reason: "InvalidSlurmName",
                message: format!(
                    "{bad:?} cannot be used as Slurm names (lower-case a-z, 0-9, '.', '_', '-') or TRES names (cpu, mem, gres/gpu:a100 …)"
                ),
            });
            continue;
        }
        let missing_qos: Vec<&String> = sl
            .qos
            .iter()
            .chain(sl.default_qos.iter())
            .filter(|q| !existing_qos.contains(*q))
            .collect();
        if !missing_qos.is_empty() {
            waiting.push(Waiting {
                kind: Kind::Project,
                key: key.clone(),
                reason: "QosMissing",
                message: format!(
                    "QOS {missing_qos:?} does not exist in Slurm; create it with sacctmgr first"
                ),
            });
            continue;
        }
        let blocked = p.spec.locked
            || p.spec
                .valid_until
                .as_deref()
                .and_then(|v| crate::api::parse_valid_until(v).ok())
                .is_some_and(|e| e <= now);
        let lim = sl.limits.clone().unwrap_or_default();
        let mut tres: Vec<String> = lim
            .grp_tres
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        tres.sort();
        let account = Account {
            parent: sl
                .parent
                .clone()
                .unwrap_or_else(|| cfg.root_account.clone()),
            fairshare: sl.fairshare,
            qos: sl.qos.iter().cloned().collect(),
            default_qos: sl.default_qos.clone(),
            limits: Limits {
                grp_jobs: lim.grp_jobs,
                // A deactivated project: nothing new may be submitted to its account.
                grp_submit_jobs: if blocked {
                    Some(0)
                } else {
                    lim.grp_submit_jobs
                },
                max_jobs: None,
                max_submit_jobs: None,
                grp_tres: (!tres.is_empty()).then(|| tres.join(",")),
                max_wall: lim
                    .max_wall
                    .as_deref()
                    .and_then(|w| parse_duration(w).ok())
                    .map(|d| (d.as_secs() / 60) as i64),
            },
        };
        // slurmdbd stores descriptions and organizations lower-cased.
        let description =
            super::clean_text(p.spec.description.as_deref().unwrap_or(&group)).to_lowercase();
        let organization =
            super::clean_text(p.spec.institute.as_deref().unwrap_or("-")).to_lowercase();
        state
            .account_info
            .insert(group.clone(), (description, organization));
        for c in &clusters {
            state
                .accounts
                .insert((c.clone(), group.clone()), account.clone());
        }
        for leader in &p.spec.leaders {
            state.coordinators.insert((group.clone(), leader.clone()));
        }
        projects.insert(group, (key, p, clusters));
    }
    // Accounts whose entry exists in the directory get associations for their memberships.
    for (key, a) in &site.accounts {
        let Some(s) = plan.status_of(Kind::Account, key) else {
            continue;
        };
        let user = &a.spec.username;
        if s.is_blocked() {
            // Invalid or in conflict: nothing of a user that is Roster's is taken away.
            if ldap.accounts.get(user).is_some_and(&owned) {
                keep_user(&mut state, have, &cfg.clusters, user, false);
            }
            continue;
        }
        let Some(entry) = ldap.accounts.get(user) else {
            if !s.projects.is_empty() {
                waiting.push(Waiting {
                    kind: Kind::Account,
                    key: key.clone(),
                    reason: "WaitingForLdap",
                    message: format!("the LDAP entry of {user} does not exist yet; Slurm associations follow once it does"),
                });
            }
            continue;
        };
        let deactivated = entry.is_deactivated();
        let groups: Vec<&String> = s
            .projects
            .iter()
            .filter(|g| projects.contains_key(*g))
            .collect();
        let default_group = a
            .spec
            .default_project
            .as_ref()
            .and_then(|p| site.projects.get(&Key::new(&key.namespace, p)))
            .map(group_name);
        for cluster in &cfg.clusters {
            let mine: Vec<&String> = groups
                .iter()
                .copied()
                .filter(|g| projects[*g].2.contains(cluster))
                .collect();
            if mine.is_empty() {
                continue;
            }
            for g in &mine {
                let lim = projects[*g]
                    .1
                    .spec
                    .slurm
                    .as_ref()
                    .and_then(|s| s.limits.clone())
                    .unwrap_or_default();
                let assoc = if deactivated {
                    Assoc {
                        max_jobs: Some(0),
                        max_submit_jobs: Some(0),
                    }
                } else {
                    Assoc {
                        max_jobs: lim.max_jobs,
                        max_submit_jobs: lim.max_submit_jobs,
                    }
                };
                // One association per declared partition, or one without a partition.
                let partitions = projects[*g]
                    .1
                    .spec
                    .slurm
                    .as_ref()
                    .map(|s| s.partitions.clone())
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| vec![String::new()]);
                for partition in partitions {
                    state.assocs.insert(
                        (cluster.clone(), (*g).clone(), user.clone(), partition),
                        assoc.clone(),
                    );
                }
            }
            let default = default_group
                .clone()
                .filter(|d| mine.contains(&d))
                .unwrap_or_else(|| mine[0].clone());
            state
                .defaults
                .insert((cluster.clone(), user.clone()), default);
        }
    }
    // Identities this run does not declare keep their associations with the projects whose
    // groups keep them as members (another namespace's people, accounts absent without --prune,
    // an import that did not run): a run never takes from an identity it does not declare.
    for (user, group) in &plan.retained {
        let Some((_, _, clusters)) = projects.get(group) else {
            continue;
        };
        let block = ldap.accounts.get(user).is_some_and(|e| e.is_deactivated());
        for (k, v) in have
            .assocs
            .iter()
            .filter(|(k, _)| &k.1 == group && &k.2 == user && clusters.contains(&k.0))
        {
            let assoc = if block {
                Assoc {
                    max_jobs: Some(0),
                    max_submit_jobs: Some(0),
                }
            } else {
                v.clone()
            };
            state.assocs.entry(k.clone()).or_insert(assoc);
        }
    }
    // Removed accounts that are deactivated but not purged yet keep their associations,
    // blocked (MaxJobs=0, MaxSubmitJobs=0): nothing is deleted before the purge.
    let declared: BTreeSet<&str> = site
        .accounts
        .values()
        .map(|a| a.spec.username.as_str())
        .collect();
    let removed = |e: &crate::plan::Entry| owned(e) && e.is_removed();
    for (user, e) in &ldap.accounts {
        if removed(e) && !declared.contains(user.as_str()) {
            keep_user(&mut state, have, &cfg.clusters, user, true);
        }
    }
    let managed: BTreeSet<String> = ldap
        .accounts
        .iter()
        .filter(|(_, e)| owned(e))
        .map(|(u, _)| u.clone())
        // Purged accounts stay Roster's: their associations go with them.
        .chain(
            ldap.tombstones
                .values()
                .filter(|t| owned(t))
                .filter_map(|t| t.first("uid").map(str::to_string)),
        )
        .collect();
    // Removed projects, deactivated but not purged yet: their accounts stay with every
    // association, locked (GrpSubmitJobs=0). Purged ones leave Slurm (on the clusters where the
    // account was Roster's) once their users' defaults moved elsewhere — unless users Roster
    // does not manage are still in them: those accounts stay, locked, and are reported.
    let declared_groups: BTreeSet<String> = site.projects.values().map(group_name).collect();
    let mut retire = BTreeSet::new();
    let mut kept = vec![];
    let removed_groups = ldap
        .groups
        .iter()
        .filter(|(g, e)| removed(e) && !declared_groups.contains(*g))
        .map(|(g, e)| (g.clone(), e, false));
    let purged_groups = ldap
        .tombstones
        .values()
        .filter(|t| owned(t) && t.first("rosterKind") == Some("Project"))
        .filter_map(|t| {
            let g = t.first("cn")?.strip_prefix("Project:")?;
            (!declared_groups.contains(g) && !ldap.groups.contains_key(g))
                .then(|| (g.to_string(), t, true))
        });
    for (group, e, purged) in removed_groups.chain(purged_groups).collect::<Vec<_>>() {
        for c in e
            .values("rosterSlurmAccount")
            .iter()
            .filter(|c| cfg.clusters.contains(c))
        {
            if !have.accounts.contains_key(&(c.clone(), group.clone())) {
                continue;
            }
            let strangers: BTreeSet<&String> = have
                .assocs
                .keys()
                .filter(|k| &k.0 == c && k.1 == group && !managed.contains(&k.2))
                .map(|k| &k.2)
                .collect();
            if purged && strangers.is_empty() {
                retire.insert((c.clone(), group.clone()));
                continue;
            }
            if purged {
                kept.push(format!(
                    "account {group} on {c} (its project was purged; kept, locked, while users Roster does not manage are in it: {})",
                    strangers.into_iter().cloned().collect::<Vec<_>>().join(",")
                ));
            }
            keep_account(&mut state, have, c, &group, true);
        }
    }
    // Nothing stays in a retiring account, and no default points at one: a user with other
    // associations gets one of those as default first; a user with none leaves the cluster.
    state
        .assocs
        .retain(|k, _| !retire.contains(&(k.0.clone(), k.1.clone())));
    let mut moves = vec![];
    for ((c, u), d) in have.defaults.iter().chain(state.defaults.iter()) {
        if !retire.contains(&(c.clone(), d.clone())) {
            continue;
        }
        let other = state
            .assocs
            .keys()
            .chain(have.assocs.keys())
            .find(|k| &k.0 == c && &k.2 == u && !retire.contains(&(k.0.clone(), k.1.clone())))
            .map(|k| k.1.clone());
        moves.push(((c.clone(), u.clone()), other));
    }
    for (k, other) in moves {
        match other {
            Some(a) => state.defaults.insert(k, a),
            None => state.defaults.remove(&k),
        };
    }
    // Coordinators must be members (leaders are, by effective membership).
    let members: BTreeSet<(String, String)> = state
        .assocs
        .keys()
        .map(|(_, a, u, _)| (a.clone(), u.clone()))
        .collect();
    state.coordinators.retain(|c| members.contains(c));
    Desired {
        state,
        waiting,
        record,
        prune_unmanaged,
        managed,
        retire,
        kept,
    }
}
