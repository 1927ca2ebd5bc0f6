//! The directory's change feed: one RFC 4533 refreshAndPersist search (slapd's `syncprov`)
//! over what a bulk observation reads — the same base, filter and attributes. The refresh
//! phase delivers every entry once (a bulk observation), then the server pushes each entry
//! that is added, modified or leaves the content (deleted, or no longer matching the filter)
//! as it happens. [`Follower`] keeps an [`Observed`] current from it, so a pass can plan
//! against the directory as it is now without reading it all again. A pass that writes reads
//! the entries it wrote again ([`Directory::reread`]); the feed's own messages about them may
//! come later, and are then older than what is filed (`entryCSN`), and ignored.
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
    /// The entry at this DN (with this `entryUUID`) left the content.
    Gone { dn: String, uuid: Option<String> },
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
                .map(|c| c.1.parse::<SyncState>());
            let se = SearchEntry::construct(raw);
            return Ok(Some(match state {
                Some(SyncState {
                    state: EntryState::Delete,
                    entry_uuid,
                    ..
                }) => Event::Gone {
                    dn: se.dn,
                    uuid: uuid_text(&entry_uuid),
                },
                _ => Event::Changed(entry(se)),
            }));
        }
    }
}

/// The feed read on a task of its own: every message, as it comes, on a channel (reading it
/// never waits on a pass, and the server never waits on the reader). The channel closes after
/// the last message; an error is its last message.
pub fn spawn(mut feed: Feed) -> tokio::sync::mpsc::UnboundedReceiver<Result<Event, String>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                next = feed.next() => {
                    let last = !matches!(next, Ok(Some(_)));
                    let sent = match next {
                        Ok(Some(e)) => tx.send(Ok(e)),
                        Ok(None) => return,
                        Err(e) => tx.send(Err(e.to_string())),
                    };
                    if sent.is_err() || last {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// An observation kept current by a feed's messages.
#[derive(Default)]
pub struct Follower {
    pub observed: Observed,
    /// The refresh is over: `observed` is the whole directory (plus what changed since).
    pub refreshed: bool,
    /// An event the observation could not follow exactly (a duplicate name involved): it must
    /// be observed afresh.
    pub lost: bool,
    /// Messages that were older than the reading already filed (a pass read the entry again
    /// after writing it), and so left it as it was.
    pub stale: u64,
}

impl Follower {
    /// Applies one message of the feed. An entry's message never replaces a newer reading of
    /// it (by `entryCSN`), and a deletion never removes a newer entry that took the DN again
    /// (by `entryUUID`): the observation may have been read again by a pass meanwhile.
    pub fn apply(&mut self, event: Event) {
        match event {
            Event::Changed(e) => {
                if self.observed.at(&e.dn).is_some_and(|now| e.older_than(now)) {
                    self.stale += 1;
                    return;
                }
                self.lost |= !self.observed.refile(e);
            }
            Event::Gone { dn, uuid } => {
                let other = |now: &Entry| matches!((now.uuid(), uuid.as_deref()), (Some(a), Some(b)) if !a.eq_ignore_ascii_case(b));
                if self.observed.at(&dn).is_some_and(other) {
                    self.stale += 1;
                    return;
                }
                self.lost |= !self.observed.unfile(&dn);
            }
            Event::Refreshed => self.refreshed = true,
        }
    }
}

/// A Sync State control's entryUUID (16 octets) as the `entryUUID` attribute writes it.
fn uuid_text(raw: &[u8]) -> Option<String> {
    if raw.len() != 16 {
        return None;
    }
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dn: &str, uid: &str, csn: &str, uuid: &str, shell: &str) -> Entry {
        let attrs = [
            ("objectclass", "posixAccount"),
            ("uid", uid),
            ("entrycsn", csn),
            ("entryuuid", uuid),
            ("loginshell", shell),
        ];
        Entry {
            dn: dn.into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
                .collect(),
        }
    }

    const OLD: &str = "20261204000000.000001Z#000000#000#000000";
    const NEW: &str = "20261204000000.000002Z#000000#000#000000";

    #[test]
    fn a_late_message_never_replaces_a_newer_reading() {
        let dn = "uid=ada,ou=people,dc=x";
        let mut f = Follower::default();
        f.apply(Event::Changed(entry(dn, "ada", NEW, "u1", "/bin/zsh")));
        f.apply(Event::Changed(entry(dn, "ada", OLD, "u1", "/bin/bash")));
        assert_eq!(
            f.observed.accounts["ada"].first("loginShell"),
            Some("/bin/zsh")
        );
        assert_eq!(f.stale, 1);
        f.apply(Event::Changed(entry(dn, "ada", NEW, "u1", "/bin/sh")));
        assert_eq!(
            f.observed.accounts["ada"].first("loginShell"),
            Some("/bin/sh")
        );
        // The deletion of an older entry at this DN leaves the new one; its own removes it.
        f.apply(Event::Gone {
            dn: dn.into(),
            uuid: Some("U0".into()),
        });
        assert!(f.observed.accounts.contains_key("ada"));
        f.apply(Event::Gone {
            dn: dn.into(),
            uuid: Some("U1".into()),
        });
        assert!(f.observed.accounts.is_empty());
        assert!(!f.lost);
    }

    #[test]
    fn an_entry_filed_under_another_name_than_its_rdn_is_found_by_its_dn() {
        let mut f = Follower::default();
        f.apply(Event::Changed(entry(
            "cn=Ada Lovelace,ou=people,dc=x",
            "ada",
            OLD,
            "u1",
            "/bin/sh",
        )));
        f.apply(Event::Changed(entry(
            "uid=bob,ou=people,dc=x",
            "bob",
            OLD,
            "u2",
            "/bin/sh",
        )));
        // Renamed in place (a new uid at the same DN): the old name does not stay filed.
        f.apply(Event::Changed(entry(
            "cn=Ada Lovelace,ou=people,dc=x",
            "lovelace",
            NEW,
            "u1",
            "/bin/sh",
        )));
        let names: Vec<&String> = f.observed.accounts.keys().collect();
        assert_eq!(names, ["bob", "lovelace"]);
        f.apply(Event::Gone {
            dn: "CN=ada lovelace,ou=People,dc=x".into(),
            uuid: None,
        });
        let names: Vec<&String> = f.observed.accounts.keys().collect();
        assert_eq!(names, ["bob"]);
    }

    #[test]
    fn uuids_are_written_as_the_attribute_is() {
        let raw: Vec<u8> = (0u8..16).collect();
        assert_eq!(
            uuid_text(&raw).as_deref(),
            Some("00010203-0405-0607-0809-0a0b0c0d0e0f")
        );
        assert_eq!(uuid_text(&raw[..15]), None);
    }
}
