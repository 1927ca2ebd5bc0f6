//! The directory as a backend of the seam: observe in one paged search, plan with the site's
//! planner (`crate::plan`: lifecycle, numbers, ownership, the guard — and the LDAP operations
//! they need), apply operation by operation, or in `Mode::Plan` apply nothing.

use super::{ApplyReport, Directory, DirectoryError};
use crate::backend::{Backend, Mode, Outcome};
use crate::config::Config;
use crate::plan::{Observed, Plan, Policy};
use crate::site::Site;

/// What the site's plan is made from besides the directory.
#[derive(Clone, Copy)]
pub struct SiteInput<'a> {
    pub site: &'a Site,
    pub policy: &'a Policy<'a>,
    pub now: jiff::Timestamp,
}

/// The LDAP backend of one pass, over a connection that outlives it (the operator keeps one).
pub struct Ldap<'c> {
    pub config: &'c Config,
    pub dir: &'c mut Directory,
}

impl Backend for Ldap<'_> {
    const NAME: &'static str = "ldap";
    type Input<'a> = SiteInput<'a>;
    type Observed = Observed;
    type Plan = Plan;
    type Report = ApplyReport;
    type Error = DirectoryError;

    async fn observe(&mut self) -> Result<Observed, DirectoryError> {
        let ldap = &self.config.ldap;
        self.dir.observe(&ldap.base_dn, ldap.page_size).await
    }

    fn plan(&self, input: SiteInput<'_>, seen: &Observed) -> Plan {
        crate::plan::plan(input.site, seen, input.now, input.policy)
    }

    async fn apply(&mut self, plan: &Plan, seen: &Observed, mode: Mode) -> ApplyReport {
        match mode {
            Mode::Apply => self.dir.apply(self.config, seen, &plan.ops).await,
            Mode::Plan => ApplyReport {
                changes: plan
                    .ops
                    .iter()
                    .map(|op| super::apply::change(op, Outcome::Planned))
                    .collect(),
                ..Default::default()
            },
        }
    }
}
