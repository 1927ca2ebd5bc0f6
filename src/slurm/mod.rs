//! The Slurm accounting backend: observe in bulk from the accounting database (read-only),
//! write through `sacctmgr -i` with argument vectors, many names per call.

pub mod apply;
pub mod desired;
pub mod model;
pub mod observe;

pub use model::*;

pub use crate::api::names::{clean_text, is_slurm_name};

use crate::config::Config;
use crate::plan::Observed;
use crate::plan::Plan;
use crate::site::Site;

/// What one Slurm convergence did (or, dry, would do).
#[derive(Debug, Default)]
pub struct Report {
    pub calls: Vec<(apply::Call, Option<apply::Outcome>)>,
    pub waiting: Vec<desired::Waiting>,
    /// Slurm objects in Roster's accounts that Roster does not manage and leaves alone.
    pub unmanaged: Vec<String>,
    pub invocations: u64,
    /// (group DN, cluster) recorded as Roster's Slurm account (`rosterSlurmAccount`) in this run.
    pub recorded: Vec<(String, String)>,
}

/// Why Slurm could not be converged at all.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error(transparent)]
    Observe(#[from] observe::ObserveError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(
        "slurm.databaseUrlFile (or databaseUrlEnv) is required: Roster observes Slurm in bulk from the accounting database"
    )]
    NoDatabase,
    #[error("recording the Slurm account of {dn}: {message}")]
    Record { dn: String, message: String },
}

/// Observes Slurm, plans against the directory as it now is, and runs the calls (unless `dry`).
/// Accounts Roster creates or adopts are recorded on their LDAP group first.
pub async fn converge(
    config: &Config,
    dir: &mut crate::ldap::Directory,
    site: &Site,
    ldap: &Observed,
    plan: &Plan,
    now: jiff::Timestamp,
    dry: bool,
) -> Result<Report, SlurmError> {
    let Some(cfg) = &config.slurm else {
        return Ok(Report::default());
    };
    let mut sacctmgr = apply::Sacctmgr::from_config(config, cfg);
    let have = match cfg.database_url(config)? {
        Some(url) => observe::observe(&url, &cfg.clusters).await?,
        None => observe::observe_with_sacctmgr(&mut sacctmgr, &cfg.clusters).await?,
    };
    let want = desired::desired(site, ldap, plan, config, &have, now);
    let mut report = Report {
        waiting: want.waiting.clone(),
        ..Default::default()
    };
    for (c, a) in have.accounts.keys() {
        if !want.state.accounts.contains_key(&(c.clone(), a.clone()))
            && want.waiting.iter().any(|w| {
                w.reason == "UnmanagedSlurmAccount" && w.message.contains(&format!("account {a} "))
            })
        {
            report.unmanaged.push(format!(
                "account {a} on {c} (exists, not Roster's; left alone)"
            ));
        }
    }
    report.unmanaged.extend(want.kept.iter().cloned());
    let calls = apply::diff(
        &have,
        &want.state,
        &want.managed,
        &want.prune_unmanaged,
        &want.retire,
        cfg.batch_size,
        &mut report.unmanaged,
    );
    if dry {
        report.calls = calls.into_iter().map(|c| (c, None)).collect();
        return Ok(report);
    }
    // Ownership first: a crash after this leaves an account Roster will create, never one it
    // would not know is its own.
    for (dn, cluster) in &want.record {
        let change =
            crate::plan::AttrChange::Add("rosterSlurmAccount".into(), vec![cluster.clone()]);
        dir.modify(dn, std::slice::from_ref(&change))
            .await
            .map_err(|(_, message)| SlurmError::Record {
                dn: dn.clone(),
                message,
            })?;
        report.recorded.push((dn.clone(), cluster.clone()));
    }
    for call in calls {
        let outcome = sacctmgr.run_call(&call).await;
        report.calls.push((call, Some(outcome)));
    }
    report.invocations = sacctmgr.invocations;
    Ok(report)
}
