//! The directory's change feed: one RFC 4533 refreshAndPersist search (slapd's `syncprov`)
//! over what a bulk observation reads — the same base, filter and attributes. The refresh
//! phase delivers every entry once (a bulk observation), then the server pushes each entry
//! that is added, modified or leaves the content (deleted, or no longer matching the filter)
//! as it happens. [`Follower`] keeps an [`Observed`] current from it, so a pass can plan
//! against the directory as it is now without reading it all again.
//!
//! Where the server offers no syncprov the search fails at once (`unavailableCriticalExtension`):
//! the caller falls back to bulk observation.

use ldap3::controls::{EntryState, MakeCritical, SyncInfo, SyncRequest, SyncState, parse_syncinfo};
use ldap3::{Scope, SearchEntry, SearchStream};

use super::observe::{OBSERVED_ATTRS, OBSERVED_FILTER, entry};
use super::{Directory, DirectoryError};
use crate::plan::directory::{Entry, Observed};

const SYNC_STATE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.2";

/// One message of the feed.
#[derive(Debug)]
pub enum Event {
    /// An entry as it now is (added, modified, or present at the refresh).
    Changed(Entry),
    /// The entry at this DN left the content.
    Gone(String),
    /// The refresh phase is over: what came so far is the whole directory.
    Refreshed,
}

/// A persistent search on its own connection.
pub struct Feed {
    stream: SearchStream<'static, &'static str, Vec<&'static str>>,
    uri: String,
    _dir: Directory,
}

impl Directory {
    /// Starts following everything below `base`; this connection is the feed's from now on.
    pub async fn follow(mut self, base: &str) -> Result<Feed, DirectoryError> {
        let uri = self.uri.clone();
        let stream = self
            .ldap
            .raw()
            .with_controls(
                SyncRequest {
                    mode: ldap3::controls::RefreshMode::RefreshAndPersist,
                    cookie: None,
                    reload_hint: false,
                }
                .critical(),
            )
            .streaming_search(
                base,
                Scope::Subtree,
                OBSERVED_FILTER,
                OBSERVED_ATTRS.to_vec(),
            )
            .await
            .map_err(|e| DirectoryError::Unreachable {
                uri: uri.clone(),
                message: e.to_string(),
            })?;
        Ok(Feed {
            stream,
            uri,
            _dir: self,
        })
    }
}

impl Feed {
    /// The next message; `None` when the server ended the search (it then must be restarted,
    /// from a fresh observation).
    pub async fn next(&mut self) -> Result<Option<Event>, DirectoryError> {
        loop {
            let raw = self
                .stream
                .next()
                .await
                .map_err(|e| DirectoryError::Unreachable {
                    uri: self.uri.clone(),
                    message: e.to_string(),
                })?;
            let Some(raw) = raw else {
                let done = self.stream.finish().await;
                if done.rc != 0 {
                    return Err(DirectoryError::Operation {
                        operation: "follow",
                        dn: String::new(),
                        message: format!("result code {}: {}", done.rc, done.text),
                    });
                }
                return Ok(None);
            };
            if raw.is_intermediate() {
                match parse_syncinfo(raw) {
                    SyncInfo::RefreshPresent {
                        refresh_done: true, ..
                    }
                    | SyncInfo::RefreshDelete {
                        refresh_done: true, ..
                    } => return Ok(Some(Event::Refreshed)),
                    _ => continue,
                }
            }
            if raw.is_ref() {
                continue;
            }
            let state = raw
                .1
                .iter()
                .find(|c| c.1.ctype == SYNC_STATE_OID)
                .map(|c| c.1.parse::<SyncState>().state);
            let se = SearchEntry::construct(raw);
            return Ok(Some(match state {
                Some(EntryState::Delete) => Event::Gone(se.dn),
                _ => Event::Changed(entry(se)),
            }));
        }
    }
}

/// An observation kept current by a feed.
pub struct Follower {
    feed: Feed,
    pub observed: Observed,
    /// The refresh is over: `observed` is the whole directory (plus what changed since).
    pub refreshed: bool,
    /// An event the observation could not follow exactly (a duplicate name involved): it must
    /// be observed afresh.
    pub lost: bool,
}

impl Follower {
    pub fn new(feed: Feed) -> Follower {
        Follower {
            feed,
            observed: Observed::default(),
            refreshed: false,
            lost: false,
        }
    }

    /// Applies the next message of the feed; false when the feed ended.
    pub async fn step(&mut self) -> Result<bool, DirectoryError> {
        let Some(event) = self.feed.next().await? else {
            return Ok(false);
        };
        match event {
            Event::Changed(e) => {
                let dn = e.dn.clone();
                let exact = self.observed.unfile(&dn) && self.observed.file(e);
                self.lost |= !exact;
            }
            Event::Gone(dn) => self.lost |= !self.observed.unfile(&dn),
            Event::Refreshed => self.refreshed = true,
        }
        Ok(true)
    }
}
