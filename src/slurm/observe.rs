//! One read-only snapshot of the accounting database: clusters, QOS, accounts, associations,
//! default accounts and coordinators, `deleted = 0` only. Never one query per object.

use std::collections::BTreeMap;

use mysql_async::prelude::*;

use super::is_slurm_name;
use super::model::{Account, Assoc, Limits, State};

/// Why the accounting database could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("cannot read the Slurm accounting database: {0}")]
    Database(String),
    #[error(
        "cluster {0:?} is not known to slurmdbd (writes to an unknown cluster are silently dropped by Slurm): add it with `sacctmgr add cluster`"
    )]
    UnknownCluster(String),
}

impl From<mysql_async::Error> for ObserveError {
    fn from(e: mysql_async::Error) -> Self {
        // The DSN holds a password: say what failed, never the URL.
        ObserveError::Database(match e {
            mysql_async::Error::Server(s) => format!("server error {}: {}", s.code, s.message),
            mysql_async::Error::Io(io) => format!("connection failed: {io}"),
            other => other
                .to_string()
                .split(" at ")
                .next()
                .unwrap_or("error")
                .to_string(),
        })
    }
}

/// A row's optional integer.
type Num = Option<i64>;

/// Reads everything for `clusters` (names already validated): one instrumented call, `observe`.
pub async fn observe(url: &str, clusters: &[String]) -> Result<State, ObserveError> {
    crate::backend::call(
        "slurm",
        "observe",
        read_database(url, clusters),
        Result::is_ok,
    )
    .await
}

async fn read_database(url: &str, clusters: &[String]) -> Result<State, ObserveError> {
    let opts = mysql_async::Opts::from_url(url).map_err(|e| {
        ObserveError::Database(format!(
            "the database URL is invalid ({})",
            e.to_string().split(':').next().unwrap_or("parse error")
        ))
    })?;
    let mut conn = mysql_async::Conn::new(opts).await?;
    let mut state = State::default();
    let known: Vec<String> = conn
        .query("SELECT name FROM cluster_table WHERE deleted = 0")
        .await?;
    for c in clusters {
        if !known.contains(c) {
            return Err(ObserveError::UnknownCluster(c.clone()));
        }
        state.clusters.insert(c.clone());
    }
    let qos: Vec<(u64, String)> = conn
        .query("SELECT id, name FROM qos_table WHERE deleted = 0")
        .await?;
    let qos_names: BTreeMap<u64, String> = qos.into_iter().collect();
    state.qos = qos_names.values().cloned().collect();
    let tres: Vec<(u64, String, Option<String>)> = conn
        .query("SELECT id, type, name FROM tres_table WHERE deleted = 0")
        .await?;
    let tres_names: BTreeMap<u64, String> = tres
        .into_iter()
        .map(|(id, t, n)| {
            (
                id,
                match n.filter(|n| !n.is_empty()) {
                    Some(n) => format!("{t}/{n}"),
                    None => t,
                },
            )
        })
        .collect();
    let infos: Vec<(String, String, String)> = conn
        .query("SELECT name, description, organization FROM acct_table WHERE deleted = 0")
        .await?;
    for (name, desc, org) in infos {
        state.account_info.insert(name, (desc, org));
    }
    let coords: Vec<(String, String)> = conn
        .query("SELECT acct, user FROM acct_coord_table WHERE deleted = 0")
        .await?;
    state.coordinators = coords.into_iter().collect();
    for c in clusters {
        debug_assert!(is_slurm_name(c));
        let sql = format!(
            "SELECT user, acct, parent_acct, is_def, shares, max_jobs, max_submit_jobs, grp_jobs, grp_submit_jobs, grp_tres, max_wall_pj, qos, def_qos_id, `partition` FROM `{c}_assoc_table` WHERE deleted = 0"
        );
        let rows: Vec<mysql_async::Row> = conn.query(sql).await?;
        for mut row in rows {
            let mut text = |i: usize| -> Option<String> {
                row.take_opt::<Option<String>, _>(i)
                    .and_then(Result::ok)
                    .flatten()
            };
            let partition = text(13).unwrap_or_default();
            let (user, acct, parent) = (
                text(0).unwrap_or_default(),
                text(1).unwrap_or_default(),
                text(2).unwrap_or_default(),
            );
            let (grp_tres, qos) = (text(9), text(11));
            let mut num = |i: usize| -> Num {
                row.take_opt::<Option<i64>, _>(i)
                    .and_then(Result::ok)
                    .flatten()
            };
            let (is_def, shares, max_jobs, max_submit, grp_jobs, grp_submit, max_wall, def_qos) = (
                num(3).unwrap_or(0),
                num(4),
                num(5),
                num(6),
                num(7),
                num(8),
                num(10),
                num(12),
            );
            if user.is_empty() {
                let qos_set = qos
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|id| id.parse::<u64>().ok())
                    .filter_map(|id| qos_names.get(&id).cloned())
                    .collect();
                let account = Account {
                    parent,
                    // Slurm stores "no fairshare set" as 1.
                    fairshare: shares.filter(|s| *s != 1),
                    qos: qos_set,
                    default_qos: def_qos.and_then(|id| qos_names.get(&(id as u64)).cloned()),
                    limits: Limits {
                        grp_jobs,
                        grp_submit_jobs: grp_submit,
                        max_jobs: None,
                        max_submit_jobs: None,
                        grp_tres: grp_tres
                            .filter(|t| !t.is_empty())
                            .map(|t| tres_text(&t, &tres_names)),
                        max_wall,
                    },
                };
                state.accounts.insert((c.clone(), acct), account);
            } else {
                if is_def == 1 {
                    state
                        .defaults
                        .insert((c.clone(), user.clone()), acct.clone());
                }
                state.assocs.insert(
                    (c.clone(), acct, user, partition),
                    Assoc {
                        max_jobs,
                        max_submit_jobs: max_submit,
                    },
                );
            }
        }
    }
    conn.disconnect().await?;
    Ok(state)
}

/// `1=100,1001=8` → `cpu=100,gres/gpu=8`, sorted by name.
fn tres_text(ids: &str, names: &BTreeMap<u64, String>) -> String {
    let mut parts: Vec<String> = ids
        .split(',')
        .filter_map(|kv| {
            let (id, v) = kv.split_once('=')?;
            let name = names.get(&id.parse().ok()?)?;
            Some(format!("{name}={v}"))
        })
        .collect();
    parts.sort();
    parts.join(",")
}

/// The highest transaction id: "no changes" is measured on the server by it.
pub async fn max_txn(url: &str) -> Result<u64, ObserveError> {
    let opts = mysql_async::Opts::from_url(url)
        .map_err(|_| ObserveError::Database("the database URL is invalid".into()))?;
    let mut conn = mysql_async::Conn::new(opts).await?;
    let v: Option<Option<u64>> = conn.query_first("SELECT MAX(id) FROM txn_table").await?;
    conn.disconnect().await?;
    Ok(v.flatten().unwrap_or(0))
}

/// The fallback when no database access is configured: the same snapshot from
/// `sacctmgr -nP show …` (a handful of calls, never one per object).
pub async fn observe_with_sacctmgr(
    sacctmgr: &mut super::sacctmgr::Sacctmgr,
    clusters: &[String],
) -> Result<State, ObserveError> {
    let q = |out: Result<String, String>| out.map_err(ObserveError::Database);
    let mut show = SacctmgrShow {
        clusters: q(sacctmgr.query(&["show", "cluster", "format=Cluster"]).await)?,
        ..SacctmgrShow::default()
    };
    known_clusters(&show.clusters, clusters)?;
    show.qos = q(sacctmgr.query(&["show", "qos", "format=Name"]).await)?;
    show.accounts = q(sacctmgr
        .query(&["show", "account", "format=Account,Descr,Org"])
        .await)?;
    show.coordinators = q(sacctmgr
        .query(&["show", "user", "withcoord", "format=User,Coordinators"])
        .await)?;
    for c in clusters {
        let cluster = format!("cluster={c}");
        let assocs = q(sacctmgr
            .query(&["show", "assoc", &cluster, SACCTMGR_ASSOC_FORMAT])
            .await)?;
        let defaults = q(sacctmgr
            .query(&[
                "show",
                "user",
                "withassoc",
                "format=User,Cluster,DefaultAccount",
            ])
            .await)?;
        show.per_cluster.push((assocs, defaults));
    }
    parse_sacctmgr(clusters, &show)
}

/// The columns of `sacctmgr show assoc` that [`parse_sacctmgr`] reads, in this order.
const SACCTMGR_ASSOC_FORMAT: &str = "format=Account,User,Partition,ParentName,Fairshare,MaxJobs,MaxSubmit,GrpJobs,GrpSubmit,GrpTRES,MaxWall,QOS,DefaultQOS";

/// What `sacctmgr -nP show …` printed for [`observe_with_sacctmgr`], one text per query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SacctmgrShow {
    /// `show cluster format=Cluster`.
    pub clusters: String,
    /// `show qos format=Name`.
    pub qos: String,
    /// `show account format=Account,Descr,Org`.
    pub accounts: String,
    /// `show user withcoord format=User,Coordinators`.
    pub coordinators: String,
    /// For each cluster asked for, in order: `show assoc cluster=<c>` ([`SACCTMGR_ASSOC_FORMAT`])
    /// and `show user withassoc format=User,Cluster,DefaultAccount`.
    pub per_cluster: Vec<(String, String)>,
}

/// Every cluster asked for is one sacctmgr lists.
fn known_clusters(listed: &str, clusters: &[String]) -> Result<(), ObserveError> {
    let known: Vec<&str> = listed.lines().map(str::trim).collect();
    match clusters.iter().find(|c| !known.contains(&c.as_str())) {
        Some(c) => Err(ObserveError::UnknownCluster(c.clone())),
        None => Ok(()),
    }
}

/// The snapshot in sacctmgr's texts (pure: the fuzz targets feed it arbitrary output).
pub fn parse_sacctmgr(clusters: &[String], show: &SacctmgrShow) -> Result<State, ObserveError> {
    known_clusters(&show.clusters, clusters)?;
    let mut state = State {
        clusters: clusters.iter().cloned().collect(),
        ..State::default()
    };
    state.qos = show
        .qos
        .lines()
        .map(|l| l.trim().to_string())
        // One field per line was asked for; a `|` is not part of a name (found by fuzz/sacctmgr).
        .filter(|l| !l.is_empty() && !l.contains('|'))
        .collect();
    for line in show.accounts.lines() {
        let f: Vec<&str> = line.split('|').collect();
        if f.len() == 3 {
            state
                .account_info
                .insert(f[0].into(), (f[1].into(), f[2].into()));
        }
    }
    for line in show.coordinators.lines() {
        // Two fields, or the line is not what was asked for (found by fuzz/sacctmgr).
        if let [user, coords] = line.split('|').collect::<Vec<_>>()[..] {
            for a in coords.split(',').filter(|a| !a.is_empty()) {
                state.coordinators.insert((a.to_string(), user.to_string()));
            }
        }
    }
    let num = |s: &str| s.trim().parse::<i64>().ok();
    let none = (String::new(), String::new());
    for (i, c) in clusters.iter().enumerate() {
        let (assocs, defaults) = show.per_cluster.get(i).unwrap_or(&none);
        for line in assocs.lines() {
            let f: Vec<&str> = line.split('|').collect();
            if f.len() < 13 {
                continue;
            }
            let (acct, user, partition) = (f[0].to_string(), f[1].to_string(), f[2].to_string());
            if user.is_empty() {
                let mut qos: std::collections::BTreeSet<String> = f[11]
                    .split(',')
                    .filter(|q| !q.is_empty())
                    .map(str::to_string)
                    .collect();
                // sacctmgr shows the inherited QOS too; only an explicit list differs from "normal".
                if qos.len() == 1 && qos.contains("normal") {
                    qos.clear();
                }
                state.accounts.insert(
                    (c.clone(), acct),
                    Account {
                        parent: f[3].to_string(),
                        fairshare: num(f[4]).filter(|s| *s != 1),
                        qos,
                        default_qos: Some(f[12].to_string()).filter(|q| !q.is_empty()),
                        limits: Limits {
                            grp_jobs: num(f[7]),
                            grp_submit_jobs: num(f[8]),
                            max_jobs: None,
                            max_submit_jobs: None,
                            grp_tres: Some(f[9].to_string()).filter(|t| !t.is_empty()).map(|t| {
                                let mut p: Vec<&str> = t.split(',').collect();
                                p.sort();
                                p.join(",")
                            }),
                            max_wall: wall_minutes(f[10]),
                        },
                    },
                );
            } else {
                state.assocs.insert(
                    (c.clone(), acct, user, partition),
                    Assoc {
                        max_jobs: num(f[5]),
                        max_submit_jobs: num(f[6]),
                    },
                );
            }
        }
        for line in defaults.lines() {
            let f: Vec<&str> = line.split('|').collect();
            if f.len() == 3 && f[1] == c && !f[2].is_empty() {
                state
                    .defaults
                    .insert((c.clone(), f[0].to_string()), f[2].to_string());
            }
        }
    }
    Ok(state)
}

/// sacctmgr's MaxWall (`[days-]hours:minutes:seconds` or `minutes`) in minutes.
fn wall_minutes(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => (d.parse::<i64>().ok()?, r),
        None => (0, s),
    };
    let parts: Vec<i64> = rest
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    // Checked: a value beyond any real limit is no limit Roster can read (found by fuzz/sacctmgr).
    let minutes = match parts.as_slice() {
        [m] => *m,
        [h, m, _s] => h.checked_mul(60)?.checked_add(*m)?,
        [m, _s] => *m,
        _ => return None,
    };
    days.checked_mul(1440)?.checked_add(minutes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_wall_in_sacctmgr_forms_and_out_of_range() {
        assert_eq!(wall_minutes("2-03:04:05"), Some(2 * 1440 + 3 * 60 + 4));
        assert_eq!(wall_minutes("30:00"), Some(30));
        assert_eq!(wall_minutes("90"), Some(90));
        assert_eq!(wall_minutes(""), None);
        assert_eq!(wall_minutes("99999999999999999-00:00:00"), None);
        assert_eq!(wall_minutes("9223372036854775807:00:00"), None);
        assert_eq!(wall_minutes("1-9223372036854775807"), None);
    }

    #[test]
    fn qos_and_coordinator_lines_with_other_fields_are_not_read() {
        let show = SacctmgrShow {
            clusters: "dev\n".into(),
            qos: "normal\nbob|x\n".into(),
            coordinators: "ada|physics,detector\nbob|x|y\ncarl|\n".into(),
            per_cluster: vec![(String::new(), String::new())],
            ..SacctmgrShow::default()
        };
        let state = parse_sacctmgr(&["dev".to_string()], &show).unwrap();
        let expected =
            [("detector", "ada"), ("physics", "ada")].map(|(a, u)| (a.to_string(), u.to_string()));
        assert_eq!(state.coordinators, expected.into_iter().collect());
        assert_eq!(state.qos, ["normal".to_string()].into_iter().collect());
        let err = parse_sacctmgr(&["gpu".to_string()], &show).unwrap_err();
        assert!(matches!(err, ObserveError::UnknownCluster(c) if c == "gpu"));
    }
}
