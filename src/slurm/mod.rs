//! The Slurm accounting backend: observe in bulk from the accounting database (read-only),
//! write through `sacctmgr -i` with argument vectors, many names per call.

pub mod desired;
pub mod diff;
mod load;
pub mod model;
pub mod observe;
pub mod sacctmgr;

pub use model::*;

pub use crate::api::names::{clean_text, is_slurm_name};

use std::collections::BTreeMap;

use crate::backend::{Backend, ChangeOutcome, Downstream, Mode, Outcome};
use crate::config::{Config, SlurmConfig};
use crate::plan::{Kind, Target, group_name};

/// What one Slurm convergence did (or, in `Mode::Plan`, would do).
#[derive(Debug, Default)]
pub struct Report {
    /// Each call, with the objects it concerns and its outcome.
    pub changes: Vec<ChangeOutcome>,
    pub waiting: Vec<desired::Waiting>,
    /// Slurm objects in Roster's accounts that Roster does not manage and leaves alone.
    pub unmanaged: Vec<String>,
}

/// What Slurm should be brought to: the calls, what waits, what is left alone, and the Slurm
/// accounts to record as Roster's on their LDAP group first (`rosterSlurmAccount`; a change
/// the converger hands to the LDAP backend).
#[derive(Debug, Default)]
pub struct SlurmPlan {
    pub calls: Vec<(diff::Call, Vec<Target>, Option<Target>)>,
    pub waiting: Vec<desired::Waiting>,
    pub unmanaged: Vec<String>,
    /// (group DN, cluster).
    pub record: Vec<(String, String)>,
    /// What the calls were planned towards: after they ran, Slurm is read again and a call
    /// planned again from that reading did not take effect, whatever sacctmgr answered.
    pub want: desired::Desired,
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

/// The Slurm backend of one pass.
pub struct Slurm<'c> {
    config: &'c Config,
    cfg: &'c SlurmConfig,
    sacctmgr: sacctmgr::Sacctmgr,
}

impl<'c> Slurm<'c> {
    /// The backend, when the site configures Slurm.
    pub fn new(config: &'c Config) -> Option<Slurm<'c>> {
        let cfg = config.slurm.as_ref()?;
        Some(Slurm {
            config,
            cfg,
            sacctmgr: sacctmgr::Sacctmgr::from_config(config, cfg),
        })
    }
}

impl Backend for Slurm<'_> {
    const NAME: &'static str = "slurm";
    type Input<'a> = Downstream<'a>;
    type Observed = State;
    type Plan = SlurmPlan;
    type Report = Report;
    type Error = SlurmError;

    /// From the accounting database (read-only), or `sacctmgr show` where none is configured.
    async fn observe(&mut self) -> Result<State, SlurmError> {
        Ok(match self.cfg.database_url(self.config)? {
            Some(url) => observe::observe(&url, &self.cfg.clusters).await?,
            None => observe::observe_with_sacctmgr(&mut self.sacctmgr, &self.cfg.clusters).await?,
        })
    }

    fn plan(&self, input: Downstream<'_>, have: &State) -> SlurmPlan {
        let Downstream {
            site,
            directory,
            plan,
            now,
        } = input;
        let want = desired::desired(site, directory, plan, self.config, have, now);
        let mut unmanaged = vec![];
        for (c, a) in have.accounts.keys() {
            if !want.state.accounts.contains_key(&(c.clone(), a.clone()))
                && want.waiting.iter().any(|w| {
                    w.reason == "UnmanagedSlurmAccount"
                        && w.message.contains(&format!("account {a} "))
                })
            {
                unmanaged.push(format!(
                    "account {a} on {c} (exists, not Roster's; left alone)"
                ));
            }
        }
        unmanaged.extend(want.kept.iter().cloned());
        let calls = self.calls_towards(&want, have, &mut unmanaged);
        // Who each call concerns: its users' Accounts and its accounts' Projects.
        let by_user: BTreeMap<&str, Target> = site
            .accounts
            .iter()
            .map(|(k, a)| (a.spec.username.as_str(), Target::new(Kind::Account, k)))
            .collect();
        let by_group: BTreeMap<String, Target> = site
            .projects
            .iter()
            .map(|(k, p)| (group_name(p), Target::new(Kind::Project, k)))
            .collect();
        let calls = calls
            .into_iter()
            .map(|call| {
                let targets = call
                    .users
                    .iter()
                    .filter_map(|u| by_user.get(u.as_str()).cloned())
                    .chain(
                        call.accounts
                            .iter()
                            .filter_map(|a| by_group.get(a).cloned()),
                    )
                    .collect();
                let subject = call.about().and_then(|a| by_group.get(a).cloned());
                (call, targets, subject)
            })
            .collect();
        SlurmPlan {
            calls,
            waiting: want.waiting.clone(),
            unmanaged,
            record: want.record.clone(),
            want,
        }
    }

    async fn apply(&mut self, plan: &SlurmPlan, _: &State, mode: Mode) -> Report {
        let mut report = Report {
            waiting: plan.waiting.clone(),
            unmanaged: plan.unmanaged.clone(),
            changes: vec![],
        };
        for (call, targets, subject) in &plan.calls {
            let outcome = match mode {
                Mode::Plan => Outcome::Planned,
                Mode::Apply => match self.sacctmgr.run_call(call).await {
                    sacctmgr::Outcome::Done => Outcome::Done,
                    sacctmgr::Outcome::AlreadySo => Outcome::AlreadySo,
                    sacctmgr::Outcome::Failed { reason, message } => {
                        Outcome::Failed { reason, message }
                    }
                },
            };
            report.changes.push(change(call, targets, subject, outcome));
        }
        if mode == Mode::Apply {
            self.verify(plan, &mut report).await;
        }
        report
    }
}

fn change(
    call: &diff::Call,
    targets: &[Target],
    subject: &Option<Target>,
    outcome: Outcome,
) -> ChangeOutcome {
    ChangeOutcome {
        backend: Slurm::NAME,
        operation: sacctmgr::operation(&call.args),
        targets: targets.to_vec(),
        subject: subject.clone(),
        what: call.what.clone(),
        command: call.args.clone(),
        outcome,
    }
}

/// Whether two calls do the same (the same arguments and, for a load, the same file).
fn same(a: &diff::Call, b: &diff::Call) -> bool {
    a.args == b.args && a.file == b.file
}

impl Slurm<'_> {
    /// The calls that bring `have` to `want`.
    fn calls_towards(
        &self,
        want: &desired::Desired,
        have: &State,
        unmanaged: &mut Vec<String>,
    ) -> Vec<diff::Call> {
        diff::diff(
            have,
            &want.state,
            &want.managed,
            &want.prune_unmanaged,
            &want.retire,
            self.cfg.batch_size,
            unmanaged,
        )
    }

    /// The calls of this pass that sacctmgr answered as done (or already so) but that Slurm,
    /// read again, still needs: planned again from the new reading, the same call comes out.
    async fn not_taken(&mut self, plan: &SlurmPlan, report: &Report) -> Result<Vec<usize>, String> {
        let after = self.observe().await.map_err(|e| e.to_string())?;
        let again = self.calls_towards(&plan.want, &after, &mut vec![]);
        Ok(plan
            .calls
            .iter()
            .enumerate()
            .filter(|(i, (call, ..))| {
                !report.changes[*i].outcome.is_failed() && again.iter().any(|a| same(a, call))
            })
            .map(|(i, _)| i)
            .collect())
    }

    /// sacctmgr's answer is not the proof: after the calls, Slurm is read again. A call that did
    /// not take effect is run once more; one that still did not is a failure of the pass (so
    /// the report never says done for what Slurm does not hold). Costs one read of the
    /// accounting database per pass that wrote, none when nothing was to be done.
    async fn verify(&mut self, plan: &SlurmPlan, report: &mut Report) {
        if report.changes.iter().all(|c| c.outcome.is_failed()) {
            return;
        }
        let failed = |message: String| Outcome::Failed {
            reason: "SlurmNotConverged",
            message,
        };
        let unread = |report: &mut Report, e: String| {
            report.changes.push(ChangeOutcome {
                backend: Slurm::NAME,
                operation: "observe".into(),
                targets: vec![],
                subject: None,
                what: "read Slurm again after the calls".into(),
                command: vec![],
                outcome: failed(format!("cannot read Slurm after the calls: {e}")),
            });
        };
        let retry = match self.not_taken(plan, report).await {
            Ok(r) => r,
            Err(e) => return unread(report, e),
        };
        if retry.is_empty() {
            return;
        }
        for &i in &retry {
            let (call, ..) = &plan.calls[i];
            tracing::warn!(call = %call.what, "sacctmgr answered but Slurm does not hold it; once more");
            if let sacctmgr::Outcome::Failed { reason, message } =
                self.sacctmgr.run_call(call).await
            {
                report.changes[i].outcome = Outcome::Failed { reason, message };
            }
        }
        let still = match self.not_taken(plan, report).await {
            Ok(r) => r,
            Err(e) => return unread(report, e),
        };
        for i in still {
            report.changes[i].outcome = failed(format!(
                "sacctmgr answered twice, but Slurm read again still needs: {}",
                plan.calls[i].0.what
            ));
        }
    }
}
