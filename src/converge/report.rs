//! What one pass planned and did, for both modes to read: file mode prints it and derives its
//! exit code; the operator derives status, Events, finalizers and metrics.

use std::collections::{BTreeMap, BTreeSet};

use crate::backend::{ChangeOutcome, Outcome};
use crate::ldap::ApplyReport;
use crate::plan::{Cond, Observed, Plan, Target};

/// A backend's condition (`SlurmSynced`, `GoldSynced`) per declared Account and Project.
pub type Synced = BTreeMap<Target, Cond>;

/// Why a pass stopped after the directory was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PassError {
    /// The directory could not be read again after the writes.
    Reread(String),
    /// An import's username counter could not be stored.
    Counter(String),
}

impl std::fmt::Display for PassError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PassError::Reread(e) => write!(f, "applied, but re-reading the directory failed: {e}"),
            PassError::Counter(e) => f.write_str(e),
        }
    }
}

/// The report of one pass.
#[derive(Debug, Default)]
pub struct PassReport {
    /// The plan against the directory as observed: what was (or would be) written.
    pub first: Plan,
    /// What the LDAP apply did (in `Mode::Plan`, the changes as planned).
    pub ldap: ApplyReport,
    /// The plan against the directory as the pass left it (or, planning, would leave it): the
    /// status of every object. Empty when the pass stopped early, and in `Mode::Plan` without
    /// Slurm or Gold.
    pub last: Plan,
    /// The directory as the pass left it.
    pub directory: Observed,
    /// Every change of every backend, in the order made.
    pub changes: Vec<ChangeOutcome>,
    /// Each object's first LDAP failure (`dn: message`).
    pub failed: BTreeMap<Target, String>,
    /// Slurm's report, or why it was unavailable (`None`: not configured).
    pub slurm: Option<Result<crate::slurm::Report, String>>,
    pub gold: Option<Result<crate::gold::Report, String>>,
    pub slurm_synced: Synced,
    pub gold_synced: Synced,
    /// Entries (lower-cased DNs) changed behind Roster's back since the last pass, when the
    /// caller said what that pass left and this one wrote.
    pub changed_behind: Option<BTreeSet<String>>,
    pub next_wakeup: Option<jiff::Timestamp>,
    pub error: Option<PassError>,
}

/// A backend report's changes.
pub trait Changes {
    fn changes(&self) -> &[ChangeOutcome];
}

impl Changes for crate::slurm::Report {
    fn changes(&self) -> &[ChangeOutcome] {
        &self.changes
    }
}

impl Changes for crate::gold::Report {
    fn changes(&self) -> &[ChangeOutcome] {
        &self.changes
    }
}

/// How a failed change is told on the objects it concerns.
pub fn note(c: &ChangeOutcome, message: &str) -> String {
    match c.backend {
        "slurm" => format!("sacctmgr {}: {message}", c.what),
        "gold" => format!("{}: {message}", c.what),
        _ => message.to_string(),
    }
}

impl PassReport {
    /// A change failed (the directory, a sacctmgr call other than one held back by running
    /// jobs, a Gold request), or Gold was unavailable.
    pub fn failed(&self) -> bool {
        let gold = match &self.gold {
            Some(Ok(g)) => g.failed().next().is_some(),
            Some(Err(_)) => true,
            None => false,
        };
        let slurm = matches!(&self.slurm, Some(Err(_))) || self.changes.iter().any(|c| {
            c.backend == "slurm"
                && matches!(&c.outcome, Outcome::Failed { reason, .. } if *reason != "JobsRunning")
        });
        !self.ldap.failed.is_empty() || slurm || gold
    }

    /// Running jobs hold a removal back until they end: not an error, a wait.
    pub fn held(&self) -> bool {
        self.changes.iter().any(|c| {
            c.backend == "slurm"
                && matches!(&c.outcome, Outcome::Failed { reason, .. } if *reason == "JobsRunning")
        })
    }

    /// Slurm refused an object as written (a name or TRES name sacctmgr must never see): the
    /// object is Invalid, and the run is not converged.
    pub fn invalid_in_slurm(&self) -> bool {
        matches!(&self.slurm, Some(Ok(s)) if s.waiting.iter().any(|w| w.reason == "InvalidSlurmName"))
    }

    /// The Slurm and Gold changes planned or made.
    pub fn downstream_changes(&self, backend: &str) -> usize {
        self.changes.iter().filter(|c| c.backend == backend).count()
    }
}
