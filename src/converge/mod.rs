//! The converger: one pass of the pipeline, the same for `roster plan`/`roster apply` and for
//! the operator (DESIGN.md §4). Declared state in ([`Declared`]), one [`PassReport`] out:
//!
//! 1. the site's plan against the directory as observed (LDAP and the lifecycle);
//! 2. the directory changes, applied (or, in `Mode::Plan`, applied to a copy);
//! 3. the directory re-read whenever anything was or may have been written (a failed or lost
//!    operation may have written part of its work) — the directory is the truth: the entries
//!    written and the counters, one by one, or all of it when that costs less;
//! 4. the imports' username counters stored, and the site planned again against the directory
//!    as it now is (the status of every object comes from this plan);
//! 5. Slurm, then Gold, each observed, planned against that directory and applied; an
//!    unavailable one fails only its own conditions.
//!
//! What is left to each mode is its own: file mode loads manifests and prints and exits; the
//! operator writes status, Events and finalizers from the report.

mod declared;
mod drift;
pub mod notices;
mod report;

pub use declared::{Declared, Stores};
pub use drift::{Fingerprints, changed_behind, fingerprints};
pub use report::{PassError, PassReport, Synced, note as report_note};

use std::collections::BTreeMap;

use crate::backend::{Backend, Downstream, Mode, Outcome};
use crate::config::Config;
use crate::gold::Gold;
use crate::ldap::{Directory, Ldap, SiteInput};
use crate::plan::{AttrChange, Cond, Kind, Observed, Plan, Target};
use crate::site::Site;
use crate::slurm::Slurm;

/// Runs one pass. `observed` is the directory as read at the start of the pass (before the
/// imports ran, which need it); `seen` is what the last pass left in it (the operator's drift
/// detection compares the two).
pub async fn run(
    config: &Config,
    now: jiff::Timestamp,
    mode: Mode,
    declared: &Declared<'_>,
    dir: &mut Directory,
    observed: Observed,
    seen: Option<&Fingerprints>,
) -> PassReport {
    let input = SiteInput {
        site: &declared.site,
        policy: &declared.policy,
        now,
    };
    let mut ldap = Ldap { config, dir };
    let first = ldap.plan(input, &observed);
    let mut applied = ldap.apply(&first, &observed, mode).await;
    crate::telemetry::global()
        .counter_retries
        .inc_by(u64::from(applied.counter_retries));
    let mut report = PassReport {
        changes: std::mem::take(&mut applied.changes),
        failed: failures(&first, &applied),
        changed_behind: seen
            .filter(|_| !applied.done.is_empty())
            .map(|seen| changed_behind(seen, &observed)),
        first,
        ldap: applied,
        ..Default::default()
    };
    // Notices are decided from the directory as the pass leaves it, in plan mode too.
    let downstream = config.slurm.is_some() || config.gold.is_some() || config.notices.is_some();
    report.directory = match mode {
        Mode::Apply if report.ldap.wrote() => match reread(&mut ldap, &report, observed).await {
            Ok(o) => o,
            Err(e) => {
                report.error = Some(PassError::Reread(e.to_string()));
                return report;
            }
        },
        Mode::Apply => observed,
        // Slurm and Gold are planned against the directory as the LDAP changes would leave it.
        // Without them nothing is planned after the directory: no copy of it, no second plan
        // (at 100,000 entries that is most of the memory).
        Mode::Plan if downstream => crate::plan::simulate::simulate(
            &observed,
            &report.first,
            config.uid_range,
            config.gid_range,
        ),
        Mode::Plan => {
            report.last = Plan::default();
            return report;
        }
    };
    if mode == Mode::Apply {
        match store_counters(config, ldap.dir, declared, &report.directory).await {
            Err(e) => {
                report.error = Some(PassError::Counter(e));
                return report;
            }
            // What the pass leaves is what it planned from: the counters as now stored too.
            Ok(true) => {
                if let Err(e) = ldap
                    .dir
                    .reread(
                        &mut report.directory,
                        &[],
                        observed_counters(config).as_deref(),
                    )
                    .await
                {
                    report.error = Some(PassError::Reread(e.to_string()));
                    return report;
                }
            }
            Ok(false) => {}
        }
    }
    report.last = ldap.plan(input, &report.directory);
    let after = Downstream {
        site: &declared.site,
        directory: &report.directory,
        plan: &report.last,
        now,
    };
    let slurm = slurm(config, ldap.dir, after, mode).await;
    // What the directory now holds, so the next pass does not take it for drift.
    if let Ok((_, recorded)) = &slurm {
        for (dn, cluster) in recorded {
            if let Some(g) = report.directory.groups.values_mut().find(|g| &g.dn == dn) {
                g.attrs
                    .entry("rosterslurmaccount".into())
                    .or_default()
                    .push(cluster.clone());
            }
        }
    }
    let after = Downstream {
        site: &declared.site,
        directory: &report.directory,
        plan: &report.last,
        now,
    };
    let gold = gold(config, after, mode).await;
    if let Some(slurm) = config.slurm.as_ref().map(|_| slurm.map(|(r, _)| r)) {
        let waiting: Vec<(Target, Cond)> = slurm
            .iter()
            .flat_map(|r| &r.waiting)
            .map(|w| {
                let c = Cond {
                    type_: "SlurmSynced",
                    status: false,
                    reason: w.reason.into(),
                    message: w.message.clone(),
                };
                (Target::new(w.kind, &w.key), c)
            })
            .collect();
        report.slurm_synced = synced(
            &declared.site,
            "SlurmSynced",
            "SlurmUnavailable",
            &slurm,
            waiting,
        );
        if let Ok(r) = &slurm {
            report.changes.extend(r.changes.iter().cloned());
        }
        report.slurm = Some(slurm);
    }
    if let Some(gold) = gold {
        report.gold_synced = synced(
            &declared.site,
            "GoldSynced",
            "GoldUnavailable",
            &gold,
            vec![],
        );
        if let Ok(r) = &gold {
            report.changes.extend(r.changes.iter().cloned());
        }
        report.gold = Some(gold);
    }
    report.next_wakeup = [report.last.next_wakeup, declared.guests.next_wakeup()]
        .into_iter()
        .flatten()
        .min();
    report
}

/// The most entries read again one by one after a pass's writes: beyond this (or an eighth
/// of the directory, whichever is more), one bulk read costs less.
const REREAD_AT_MOST: usize = 64;

/// The directory after the pass's writes: the entries the operations were for (done, failed
/// or lost: a failed one may have written part of its work) and the counters, read again into
/// the observation the plan was made from; read whole when that is cheaper or the reading
/// again cannot be exact (a name held twice).
async fn reread(
    ldap: &mut Ldap<'_>,
    report: &PassReport,
    mut observed: Observed,
) -> Result<Observed, crate::ldap::DirectoryError> {
    let applied = &report.ldap;
    let mut touched: Vec<&str> = applied
        .done
        .iter()
        .map(|(i, _)| *i)
        .chain(applied.failed.iter().map(|(i, _)| *i))
        .chain(applied.lost_races.iter().map(|(i, _)| *i))
        .map(|i| report.first.ops[i].dn())
        .collect();
    touched.sort_unstable();
    touched.dedup();
    let entries = observed.accounts.len()
        + observed.groups.len()
        + observed.tombstones.len()
        + observed.counters.len();
    if touched.len() <= REREAD_AT_MOST.max(entries / 8) {
        let counters = observed_counters(ldap.config);
        if ldap
            .dir
            .reread(&mut observed, &touched, counters.as_deref())
            .await?
        {
            return Ok(observed);
        }
    }
    drop(observed);
    ldap.observe().await
}

/// The counters' container, where an observation reads it (below the base DN).
pub(crate) fn observed_counters(config: &Config) -> Option<String> {
    let dn = config.counters_dn();
    let base = format!(",{}", config.ldap.base_dn.to_ascii_lowercase());
    dn.to_ascii_lowercase().ends_with(&base).then_some(dn)
}

/// Each object's first LDAP failure: `dn: message`.
fn failures(first: &Plan, applied: &crate::ldap::ApplyReport) -> BTreeMap<Target, String> {
    let mut failed = BTreeMap::new();
    for (i, m) in applied.failed.iter().chain(&applied.lost_races) {
        let op = &first.ops[*i];
        failed
            .entry(op.target().clone())
            .or_insert_with(|| format!("{}: {m}", op.dn()));
    }
    failed
}

/// Username counters of the imports, for the generated names now in the directory: a
/// generated name is never generated again, and a name not written advances nothing. True
/// when one was stored.
async fn store_counters(
    config: &Config,
    dir: &mut Directory,
    declared: &Declared<'_>,
    after: &Observed,
) -> Result<bool, String> {
    let store = crate::import::engine::counters_to_store(&declared.counters, after, |u| {
        after.accounts.contains_key(u)
    });
    for (cn, next) in &store {
        let dn = config.counter_dn(cn);
        dir.set_counter(&dn, cn, *next as i64)
            .await
            .map_err(|e| format!("storing the counter {cn}: {e}"))?;
    }
    Ok(!store.is_empty())
}

/// Slurm after the directory: observe, plan, record the accounts Roster creates or adopts on
/// their LDAP group (through the LDAP backend, before any call: a crash after this leaves an
/// account Roster will create, never one it would not know is its own), then the calls.
/// Returns the report and the recorded (group DN, cluster).
async fn slurm(
    config: &Config,
    dir: &mut Directory,
    after: Downstream<'_>,
    mode: Mode,
) -> Result<(crate::slurm::Report, Vec<(String, String)>), String> {
    let Some(mut slurm) = Slurm::new(config) else {
        return Ok(Default::default());
    };
    let have = slurm.observe().await.map_err(|e| e.to_string())?;
    let plan = slurm.plan(after, &have);
    let mut recorded = vec![];
    if mode == Mode::Apply {
        for (dn, cluster) in &plan.record {
            let change = AttrChange::Add("rosterSlurmAccount".into(), vec![cluster.clone()]);
            dir.modify(dn, std::slice::from_ref(&change))
                .await
                .map_err(|(_, message)| {
                    crate::slurm::SlurmError::Record {
                        dn: dn.clone(),
                        message,
                    }
                    .to_string()
                })?;
            recorded.push((dn.clone(), cluster.clone()));
        }
    }
    Ok((slurm.apply(&plan, &have, mode).await, recorded))
}

/// Gold last; whatever happens there, the directory and Slurm are done.
async fn gold(
    config: &Config,
    after: Downstream<'_>,
    mode: Mode,
) -> Option<Result<crate::gold::Report, String>> {
    let mut gold = match Gold::new(config) {
        Ok(Some(g)) => g,
        Ok(None) => return None,
        Err(e) => return Some(Err(e.to_string())),
    };
    let have = match gold.observe().await {
        Ok(h) => h,
        Err(e) => return Some(Err(e.to_string())),
    };
    let plan = gold.plan(after, &have);
    Some(Ok(gold.apply(&plan, &have, mode).await))
}

/// A downstream backend's condition on every declared Account and Project: in sync, or why
/// not (the backend unavailable, the object waiting for something, a change for it failed).
fn synced<R: report::Changes>(
    site: &Site,
    type_: &'static str,
    unavailable: &str,
    report: &Result<R, String>,
    waiting: Vec<(Target, Cond)>,
) -> Synced {
    let targets = site
        .accounts
        .keys()
        .map(|k| Target::new(Kind::Account, k))
        .chain(site.projects.keys().map(|k| Target::new(Kind::Project, k)));
    let cond = |status: bool, reason: &str, message: String| Cond {
        type_,
        status,
        reason: reason.into(),
        message,
    };
    let r = match report {
        Err(e) => {
            tracing::warn!(error = %e, condition = type_, "a backend is unavailable");
            return targets
                .map(|t| (t, cond(false, unavailable, e.clone())))
                .collect();
        }
        Ok(r) => r,
    };
    let mut out: Synced = targets
        .map(|t| (t, cond(true, "InSync", String::new())))
        .collect();
    out.extend(waiting);
    for c in r.changes() {
        let Outcome::Failed { reason, message } = &c.outcome else {
            continue;
        };
        let note = report::note(c, message);
        for t in &c.targets {
            out.insert(t.clone(), cond(false, reason, note.clone()));
        }
    }
    out
}
