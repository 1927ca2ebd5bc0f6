//! Whether this replica leads: the Lease's answer (leader election), or always (a single
//! process). A standby runs everything that reads — the reflector caches, the directory's change
//! feed — and nothing that writes: its reconciles only requeue, its worker runs no pass. So a
//! takeover starts warm: one pass against caches and an observation that are already current.

use tokio::sync::watch;

#[derive(Clone)]
pub(super) struct Leading(Option<watch::Receiver<bool>>);

impl Leading {
    /// Leads for as long as the process runs.
    pub(super) fn always() -> Leading {
        Leading(None)
    }

    /// Leads while the Lease says so.
    pub(super) fn lease(rx: watch::Receiver<bool>) -> Leading {
        Leading(Some(rx))
    }

    pub(super) fn now(&self) -> bool {
        self.0.as_ref().is_none_or(|rx| *rx.borrow())
    }

    /// Waits for the next change; `false` when the lease manager stopped (never, without one).
    pub(super) async fn changed(&mut self) -> bool {
        match self.0.as_mut() {
            Some(rx) => rx.changed().await.is_ok(),
            None => std::future::pending().await,
        }
    }
}
