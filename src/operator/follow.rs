//! The operator's observation of the directory, kept between passes: followed through the
//! directory's change feed ([`crate::ldap::feed`]), so a pass plans against the directory as it
//! is now without reading it whole. A pass takes the observation, reads again what it wrote
//! (the converger does), and gives back what it left; the feed's messages that came meanwhile
//! are applied at the next pass's start, none older than what is filed.
//!
//! Read whole instead: at the first pass (the feed's refresh is that reading), at every resync
//! (the safety net: what it finds that the feed did not is counted and logged), and whenever
//! the feed ended or its observation was lost (a pass that did not finish, a name held twice).
//! A directory without a change feed (no syncprov) is read whole at every pass, as before.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::mpsc::error::TryRecvError;

use crate::config::Config;
use crate::ldap::Directory;
use crate::ldap::feed::{self, Event, Follower};
use crate::plan::Observed;

/// How long a resync waits for the feed's messages about entries its full read found changed.
const IN_FLIGHT: Duration = Duration::from_millis(500);

/// A feed read on its own task and the observation it keeps.
pub(super) struct Following {
    rx: UnboundedReceiver<Result<Event, String>>,
    follower: Follower,
    /// A pass has the observation (or had it and did not give it back).
    held: bool,
}

impl Following {
    /// Connects and starts following; the observation is complete once [`Self::refreshed`].
    pub(super) async fn start(config: &Config) -> Result<Following, String> {
        let dir = Directory::connect(config)
            .await
            .map_err(|e| e.to_string())?;
        let feed = dir
            .follow(&config.ldap.base_dn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Following {
            rx: feed::spawn(feed),
            follower: Follower::default(),
            held: false,
        })
    }

    /// Waits (at most `limit`) until the refresh is over: the observation is then complete.
    pub(super) async fn refreshed(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.follower.refreshed {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => return Err(format!("its first reading took longer than {limit:?}")),
                Ok(None) => return Err("the server ended it".into()),
                Ok(Some(Err(e))) => return Err(e),
                Ok(Some(Ok(event))) => self.follower.apply(event),
            }
        }
        Ok(())
    }

    /// Applies every message that has come. An error: the feed ended, follow again.
    pub(super) fn drain(&mut self) -> Result<(), String> {
        loop {
            match self.rx.try_recv() {
                Ok(Ok(event)) => self.follower.apply(event),
                Ok(Err(e)) => return Err(e),
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => return Err("the server ended it".into()),
            }
        }
    }

    /// The observation for a pass, when the feed kept it exactly.
    pub(super) fn take(&mut self) -> Option<Observed> {
        if self.held || self.follower.lost || !self.follower.refreshed {
            return None;
        }
        self.held = true;
        Some(std::mem::take(&mut self.follower.observed))
    }

    /// A pass read the directory whole: entries in which the followed observation differs
    /// from it. A message on its way when the read was made is waited for (briefly): a change
    /// after the read is the feed's news, not something it missed.
    pub(super) async fn differences(&mut self, read: &Observed) -> Option<Vec<String>> {
        if self.held || self.follower.lost || !self.follower.refreshed {
            return None;
        }
        let _ = self.drain();
        let mut differ = self.differing(read);
        let deadline = tokio::time::Instant::now() + IN_FLIGHT;
        while !differ.is_empty() {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(Ok(event))) => {
                    self.follower.apply(event);
                    let _ = self.drain();
                    differ = self.differing(read);
                }
                _ => break,
            }
        }
        Some(differ)
    }

    fn differing(&self, read: &Observed) -> Vec<String> {
        let followed = crate::converge::fingerprints(&self.follower.observed);
        let mut differ: Vec<String> = crate::converge::changed_behind(&followed, read)
            .into_iter()
            .filter(|dn| match (self.follower.observed.at(dn), read.at(dn)) {
                (Some(f), Some(r)) => !r.older_than(f),
                _ => true,
            })
            .collect();
        differ.sort();
        differ
    }

    /// What the pass left in the directory, kept from now on.
    pub(super) fn give_back(&mut self, observed: Observed) {
        self.follower.observed = observed;
        self.follower.lost = false;
        self.held = false;
    }
}
