//! The mass-deactivation guard (DESIGN.md §5.5): what it allows this run, from what the directory
//! records, so both modes and every run share one budget.

use super::*;

impl<'a> Planner<'a> {
    /// A removal-caused deactivation of this window that this plan undoes (the account is
    /// declared again) no longer counts against the guard, as the next plan will see: give it
    /// back now, so that one run does what two would (a second run with nothing changed must
    /// write nothing).
    pub(super) fn return_reactivated_to_the_guard(&mut self) {
        let Some(budget) = self.budget.as_mut() else {
            return;
        };
        let since = guard_window_start(self.policy.config, self.now);
        let reactivated: BTreeSet<&str> = self
            .ops_accounts
            .iter()
            .filter_map(|op| match op {
                Op::Modify { dn, changes, .. }
                    if changes.iter().any(|c| {
                        matches!(c, AttrChange::Replace(a, v) if a == "rosterGoneAt" && v.is_empty())
                    }) =>
                {
                    Some(dn.as_str())
                }
                _ => None,
            })
            .collect();
        if reactivated.is_empty() {
            return;
        }
        let counted = self
            .observed
            .accounts
            .values()
            .filter(|e| reactivated.contains(e.dn.as_str()))
            .filter(|e| {
                e.first("rosterState") == Some("Deactivated")
                    && e.first("rosterGoneAt").is_some()
                    && e.first("rosterDeactivatedAt")
                        .and_then(parse_generalized_time)
                        .is_some_and(|t| t >= since)
            })
            .count();
        *budget += counted;
    }

    /// Takes one removal-caused transition from the guard's budget, if any is left.
    pub(super) fn guard_allows(&mut self) -> bool {
        match &mut self.budget {
            None => true,
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                true
            }
        }
    }
}

/// The mass-deactivation guard (DESIGN.md §5.5): how many removal-caused deactivations and
/// purges may still happen in the current window, from what the directory records (so both
/// modes share it). `None` while an approval (`roster guard approve`) is in force.
pub fn guard_budget(config: &Config, observed: &Observed, now: jiff::Timestamp) -> Option<usize> {
    let status = guard_status(config, observed, now);
    if status.approved_until.is_some() {
        return None;
    }
    Some(status.limit.saturating_sub(status.used))
}

/// What the guard sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardStatus {
    /// Removal-caused transitions allowed per window.
    pub limit: usize,
    /// Those already made in the current window.
    pub used: usize,
    /// Accounts Roster manages (the base of the percentage).
    pub managed: usize,
    /// An approval in force until then.
    pub approved_until: Option<jiff::Timestamp>,
    pub window: jiff::SignedDuration,
}

pub(super) fn guard_window(config: &Config) -> jiff::SignedDuration {
    config.guard.window.signed()
}

pub(super) fn guard_window_start(config: &Config, now: jiff::Timestamp) -> jiff::Timestamp {
    now.checked_sub(guard_window(config)).unwrap_or(now)
}

/// The counter entry that records an approval (`roster guard approve`): unix seconds.
pub const GUARD_APPROVAL: &str = "guard-approved";

pub fn guard_status(config: &Config, observed: &Observed, now: jiff::Timestamp) -> GuardStatus {
    let prefix = format!("{}/", config.manager_id);
    let ours = |e: &&Entry| e.owner().is_some_and(|o| o.starts_with(&prefix));
    let window = guard_window(config);
    let since = guard_window_start(config, now);
    let after = |e: &Entry, attr: &str| {
        e.first(attr)
            .and_then(parse_generalized_time)
            .is_some_and(|t| t >= since)
    };
    let managed = observed.accounts.values().filter(ours).count();
    let used = observed
        .accounts
        .values()
        .filter(ours)
        // Removal-caused deactivations made in the window (however long ago they went).
        .filter(|e| e.is_removed() && after(e, "rosterDeactivatedAt"))
        .count()
        + observed
            .tombstones
            .values()
            .filter(ours)
            .filter(|e| after(e, "rosterPurgeAt"))
            .count();
    let mut limit = usize::MAX;
    if let Some(c) = config.guard.max_count {
        limit = c as usize;
    }
    if let Some(p) = config.guard.max_percent {
        // At least one, so a small site is not frozen by rounding.
        let pct = (managed * p as usize).div_ceil(100).max(1);
        limit = limit.min(pct);
    }
    let approved_until = observed
        .counters
        .get(GUARD_APPROVAL)
        .and_then(|e| e.number("rosterCounterValue"))
        .and_then(|s| jiff::Timestamp::from_second(s as i64).ok())
        .filter(|t| *t > now);
    GuardStatus {
        limit,
        used,
        managed,
        approved_until,
        window,
    }
}
