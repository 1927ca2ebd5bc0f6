//! The seam between the converger and the systems it converges (DESIGN.md §4): every backend
//! observes in bulk, plans purely against what it observed, and applies in a [`Mode`]; every
//! change it plans or makes is reported as one [`ChangeOutcome`]; every call it makes to its
//! server goes through [`call`], which counts, times and traces it.

use std::future::Future;

pub use crate::telemetry::call;

use crate::plan::{Observed, Plan, Target};
use crate::site::Site;

/// Whether a pass writes: `roster plan` (nothing is written; the LDAP changes are applied to a
/// copy of the observation) or `roster apply` and the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Plan,
    Apply,
}

/// What became of one planned change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Planned, not carried out (`Mode::Plan`).
    Planned,
    Done,
    /// The backend said it was so already (sacctmgr's "Nothing new added").
    AlreadySo,
    /// Failed; `reason` is a condition reason (`WriteFailed`, `JobsRunning`, `GoldRequestFailed` …).
    Failed {
        reason: &'static str,
        message: String,
    },
}

impl Outcome {
    pub fn is_failed(&self) -> bool {
        matches!(self, Outcome::Failed { .. })
    }
}

/// One change a backend planned or made: which backend, which operation, the objects it
/// concerns, what it does (for humans), the command it runs where there is one (sacctmgr's
/// arguments), and its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeOutcome {
    pub backend: &'static str,
    pub operation: String,
    /// Every object a failure of this change concerns.
    pub targets: Vec<Target>,
    /// The object the change is about (its Event goes there): a Slurm call's project.
    pub subject: Option<Target>,
    pub what: String,
    pub command: Vec<String>,
    pub outcome: Outcome,
}

/// What a downstream backend (Slurm, Gold) plans from besides its own observation: the
/// declared site, and the directory as the LDAP changes left it, with the plan made against it.
#[derive(Clone, Copy)]
pub struct Downstream<'a> {
    pub site: &'a Site,
    pub directory: &'a Observed,
    pub plan: &'a Plan,
    pub now: jiff::Timestamp,
}

/// A backend: observe → pure plan → apply. The converger drives the three in the pipeline's
/// order (the directory first; Slurm and Gold follow the directory as it now is).
pub trait Backend {
    /// `ldap`, `slurm`, `gold`: the `backend` label of its metrics and changes.
    const NAME: &'static str;
    /// What its plan is made from besides its own observation.
    type Input<'a>;
    type Observed;
    type Plan;
    type Report;
    type Error: std::fmt::Display;

    /// Reads the backend's state in bulk.
    fn observe(&mut self) -> impl Future<Output = Result<Self::Observed, Self::Error>> + Send;

    /// The changes that turn what was observed into what is declared. No I/O.
    fn plan(&self, input: Self::Input<'_>, seen: &Self::Observed) -> Self::Plan;

    /// Carries the plan out (`Mode::Apply`) or reports it as planned (`Mode::Plan`).
    fn apply(
        &mut self,
        plan: &Self::Plan,
        seen: &Self::Observed,
        mode: Mode,
    ) -> impl Future<Output = Self::Report> + Send;
}
