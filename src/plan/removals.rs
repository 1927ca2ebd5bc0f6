//! Removals: undeclared and deleted accounts through deactivation, their deadlines (decided once,
//! recorded in the directory, never recomputed), tombstones and the purge.

use super::guard::guard_window_start;
use super::*;

impl<'a> Planner<'a> {
    /// Accounts gone from the declaration: `--prune` in file mode (Roster's accounts in the
    /// declared namespaces that are no longer declared) and deleted objects in operator mode.
    /// They are deactivated at once with `purgeAt = max(goneAt + grace, deactivatedAt)` recorded
    /// in the directory (which is authoritative for it), and purged when that time has come:
    /// the tombstone first, so a crash can never free the name or the numbers, then the entries.
    /// Returns the usernames purged by this plan.
    pub(super) fn plan_removals(&mut self) -> BTreeSet<String> {
        let cfg = self.config();
        let namespaces = self.site.namespaces();
        let site_grace = cfg.grace_periods.account_purge_after.signed();
        let mut purged = BTreeSet::new();
        let entries: Vec<&'a Entry> = self.observed.accounts.values().collect();
        for e in entries {
            let Some((o, [mgr, ns, kind, name])) = parse_owner(e) else {
                continue;
            };
            if mgr != cfg.manager_id || kind != "Account" {
                continue;
            }
            let key = Key::new(ns, name);
            if self.site.accounts.contains_key(&key) {
                continue;
            }
            // A run that declares the removal (a deletion, an import's gone record, --prune)
            // decides its deadlines, once, from that object's policy; any other run only carries
            // out what the directory records (DESIGN.md §5.2).
            let (policy, why, decides) = match self.policy.removed.get(&key) {
                Some(p) => (*p, format!("Account {key} was deleted"), true),
                None if self.policy.prune
                    && namespaces.contains(ns)
                    && !self.policy.keep.contains(&key) =>
                {
                    (
                        DeletionPolicy::Deactivate,
                        format!("Account {key} is no longer declared (--prune)"),
                        true,
                    )
                }
                // Removed earlier (by either mode): its lifecycle goes on from the directory.
                None if e.first("rosterGoneAt").is_some() => (
                    DeletionPolicy::Deactivate,
                    format!("Account {key} was removed"),
                    false,
                ),
                None => continue,
            };
            let grace = match (policy, self.policy.purge_after.get(&key)) {
                (DeletionPolicy::Orphan, _) => continue,
                (DeletionPolicy::PurgeImmediately, _) => jiff::SignedDuration::ZERO,
                // An object's own purgeAfter, within the site's bounds.
                (_, Some(own)) => {
                    let min = cfg.grace_periods.min_purge_after.get();
                    let max = cfg.grace_periods.max_purge_after.get();
                    jiff::SignedDuration::from_secs((*own).clamp(min, max.max(min)).as_secs() as i64)
                }
                (_, None) => site_grace,
            };
            let delay = match policy {
                DeletionPolicy::PurgeImmediately => jiff::SignedDuration::ZERO,
                _ => self
                    .policy
                    .deactivate_after
                    .get(&key)
                    .map(|d| jiff::SignedDuration::from_secs(d.as_secs() as i64))
                    .unwrap_or(jiff::SignedDuration::ZERO),
            };
            let target = Target {
                kind: Kind::Account,
                key: key.clone(),
            };
            let r = Removal::of(e, self.now, decides.then_some((grace, delay)));
            let username = e.first("uid").unwrap_or("").to_string();
            if !r.deactivated {
                let Some(deactivate_at) = r.deactivate_at else {
                    // Gone without a recorded deadline (written before Roster recorded them),
                    // and this run does not declare its policy: not this run's to decide.
                    self.gone_but_active(&key, e, None, "DeadlineUndecided", format!("{why}; its deactivation is decided by a run that declares its namespace and source"));
                    continue;
                };
                // A grace before the deactivation: record when it went and both deadlines,
                // stay active until then.
                if self.now < deactivate_at {
                    if decides {
                        let changes = r.unrecorded(e);
                        if !changes.is_empty() {
                            self.ops_prune.push(Op::Modify {
                                target: target.clone(),
                                dn: e.dn.clone(),
                                changes,
                                what: format!(
                                    "account {username} is gone; deactivation at {deactivate_at}"
                                ),
                            });
                        }
                    }
                    self.wake_at(deactivate_at);
                    self.gone_but_active(
                        &key,
                        e,
                        Some(deactivate_at),
                        "GoneFromSource",
                        format!("{why}; deactivation at {deactivate_at}"),
                    );
                    continue;
                }
            }
            // One identity counts once per window: a purge right after a deactivation that the
            // window already counted takes nothing more from the budget.
            // (Counted by when the deactivation happened, not when it went: a deactivation
            // carried out at a recorded deadline long after the removal is this window's.)
            let counted = r.deactivated
                && e.first("rosterDeactivatedAt")
                    .and_then(parse_generalized_time)
                    .is_some_and(|t| t >= guard_window_start(cfg, self.now));
            let guarded = !r.deactivated || (r.purge_due && !counted);
            if guarded && !self.guard_allows() {
                let what = if r.purge_due { "purge" } else { "deactivation" };
                let s = self.status(Kind::Account, &key);
                s.dn = Some(e.dn.clone());
                s.uid_number = e.number("uidNumber");
                if !r.deactivated {
                    s.phase = Phase::Active;
                }
                s.conditions.push(cond(
                    "Guarded",
                    true,
                    "MassDeactivationGuard",
                    format!("the {what} of {key} is held: more removals than the guard allows in one window ({why}); approve with `roster guard approve`, or bring the declaration back"),
                ));
                continue;
            }
            if r.purge_due {
                self.plan_purge(&target, e, &username, o);
                purged.insert(username);
                continue;
            }
            self.record_removal(&target, e, &r, true, format!("removed account {username}"));
            let s = self.status(Kind::Account, &key);
            s.uid_number = e.number("uidNumber");
            s.conditions.push(cond("Deactivated", true, "Removed", why));
        }
        purged
    }

    /// The status of a removed account that stays active for now (`Gone`), until
    /// `deactivate_at` when that is decided.
    pub(super) fn gone_but_active(
        &mut self,
        key: &Key,
        e: &Entry,
        deactivate_at: Option<jiff::Timestamp>,
        reason: &str,
        message: String,
    ) {
        let s = self.status(Kind::Account, key);
        s.phase = Phase::Active;
        s.dn = Some(e.dn.clone());
        s.uid_number = e.number("uidNumber");
        s.next_transition = deactivate_at.map(|t| ("Deactivate", t));
        s.conditions.push(cond("Gone", true, reason, message));
    }

    /// Records a removal on the entry (deactivated now, gone, purge time; accounts are also
    /// locked), schedules the purge and marks the object Deactivated.
    pub(super) fn record_removal(
        &mut self,
        target: &Target,
        e: &Entry,
        r: &Removal,
        lock: bool,
        what: String,
    ) {
        let now = generalized_time(self.now);
        let mut changes = vec![];
        if !r.deactivated {
            if lock {
                changes.push(AttrChange::Replace(
                    "pwdAccountLockedTime".into(),
                    vec![LOCKED_FOREVER.into()],
                ));
                changes.push(AttrChange::Replace("shadowExpire".into(), vec!["1".into()]));
            }
            changes.push(AttrChange::Replace(
                "rosterState".into(),
                vec!["Deactivated".into()],
            ));
            changes.push(AttrChange::Replace(
                "rosterDeactivatedAt".into(),
                vec![now.clone()],
            ));
        }
        if e.first("rosterGoneAt").is_none() {
            changes.push(AttrChange::Replace("rosterGoneAt".into(), vec![now]));
        }
        if e.first("rosterPurgeAt").is_none()
            && let Some(t) = r.purge_at
        {
            changes.push(AttrChange::Replace(
                "rosterPurgeAt".into(),
                vec![generalized_time(t)],
            ));
        }
        if !changes.is_empty() {
            self.ops_prune.push(Op::Modify {
                target: target.clone(),
                dn: e.dn.clone(),
                changes,
                what,
            });
        }
        let s = self.status(target.kind, &target.key);
        s.phase = Phase::Deactivated;
        s.dn = Some(e.dn.clone());
        if let Some(t) = r.purge_at {
            s.next_transition = Some(("Purge", t));
            self.wake_at(t);
        }
    }

    /// Adds the tombstone `cn=<cn>` for a purged entry (unless it exists), carrying `numbers`
    /// and the identity, so the name and the numbers stay reserved forever.
    pub(super) fn push_tombstone(
        &mut self,
        target: &Target,
        e: &Entry,
        cn: &str,
        owner: &str,
        numbers: &[&str],
        description: String,
    ) {
        if let Some(t) = self.observed.tombstones.get(cn) {
            // Purged once, declared again by the same identity, purged again: the tombstone
            // keeps its numbers and records this purge (the guard counts purges by it).
            self.ops_prune.push(Op::Modify {
                target: target.clone(),
                dn: t.dn.clone(),
                changes: vec![AttrChange::Replace(
                    "rosterPurgeAt".into(),
                    vec![generalized_time(self.now)],
                )],
                what: format!("tombstone of {} purged again", target.key),
            });
            return;
        }
        let mut attrs = Attrs::new();
        set(&mut attrs, "objectClass", ["rosterTombstone".to_string()]);
        set(&mut attrs, "cn", [cn.to_string()]);
        if target.kind == Kind::Account {
            set(&mut attrs, "uid", e.first("uid").map(str::to_string));
        }
        // Where the project's Slurm account was Roster's: it leaves those clusters after the purge.
        let slurm = e.values("rosterSlurmAccount");
        if !slurm.is_empty() {
            set(&mut attrs, "rosterSlurmAccount", slurm.to_vec());
        }
        for n in numbers {
            set(&mut attrs, n, e.first(n).map(str::to_string));
        }
        set(&mut attrs, "rosterOwner", [owner.to_string()]);
        set(&mut attrs, "rosterKind", [target.kind.to_string()]);
        for a in [
            "rosterIdentity",
            "rosterDeactivatedAt",
            "rosterSourceUID",
            "rosterRecordUID",
        ] {
            let v = e.first(a).map(str::to_string);
            if v.is_some() || a == "rosterIdentity" || a == "rosterDeactivatedAt" {
                set(&mut attrs, a, v);
            }
        }
        set(&mut attrs, "rosterPurgeAt", [generalized_time(self.now)]);
        set(&mut attrs, "description", [description]);
        let name = cn.split_once(':').map(|(_, n)| n).unwrap_or(cn).to_string();
        self.ops_prune.push(Op::Add {
            target: target.clone(),
            dn: format!("cn={},{}", dn_escape(cn), self.config().tombstones_dn()),
            attrs,
            uid: None,
            gid: None,
            what: format!(
                "tombstone of {} {name}",
                target.kind.to_string().to_lowercase()
            ),
        });
    }

    /// Tombstone first, then the account and its personal group.
    pub(super) fn plan_purge(&mut self, target: &Target, e: &Entry, username: &str, owner: &str) {
        let description =
            format!("purged account {username}; its name and numbers are never reused");
        self.push_tombstone(
            target,
            e,
            &format!("Account:{username}"),
            owner,
            &["uidNumber", "gidNumber"],
            description,
        );
        self.ops_prune.push(Op::Delete {
            target: target.clone(),
            dn: e.dn.clone(),
            what: format!("purge account {username}"),
        });
        if let Some(g) = self.observed.groups.get(username)
            && g.owner() == Some(owner)
            && g.first("rosterKind") == Some("PersonalGroup")
        {
            self.ops_prune.push(Op::Delete {
                target: target.clone(),
                dn: g.dn.clone(),
                what: format!("purge personal group {username}"),
            });
        }
        let s = self.status(target.kind, &target.key);
        s.phase = Phase::Purged;
        s.dn = None;
        s.uid_number = e.number("uidNumber");
        s.conditions.push(cond(
            "Deactivated",
            true,
            "Purged",
            format!(
                "{} was purged; a tombstone keeps its name and numbers reserved",
                target.key
            ),
        ));
    }
}

/// Where a removed entry stands: its deadlines as the directory records them, or — for a run
/// that declares the removal — as they are decided now (DESIGN.md §5.2: decided once, recorded,
/// never recomputed).
pub(super) struct Removal {
    pub(super) deactivated: bool,
    /// When it went (recorded, or now).
    pub(super) gone_at: jiff::Timestamp,
    /// When it is (or was) deactivated; `None`: not recorded and not this run's to decide.
    pub(super) deactivate_at: Option<jiff::Timestamp>,
    /// When it is purged; `None`: not recorded and not this run's to decide.
    pub(super) purge_at: Option<jiff::Timestamp>,
    /// Deactivated with a recorded purge time that has come.
    pub(super) purge_due: bool,
}

impl Removal {
    /// `decide`: (grace before the purge, delay before the deactivation) of the object's own
    /// policy, when this run declares the removal; `None` when it only carries out deadlines.
    pub(super) fn of(
        e: &Entry,
        now: jiff::Timestamp,
        decide: Option<(jiff::SignedDuration, jiff::SignedDuration)>,
    ) -> Removal {
        let time = |attr: &str| e.first(attr).and_then(parse_generalized_time);
        let add = |t: jiff::Timestamp, d: jiff::SignedDuration| {
            t.checked_add(d).unwrap_or(jiff::Timestamp::MAX)
        };
        let deactivated = e.first("rosterState") == Some("Deactivated");
        let gone_at = time("rosterGoneAt").unwrap_or(now);
        let deactivate_at = if deactivated {
            Some(time("rosterDeactivatedAt").unwrap_or(now))
        } else {
            time("rosterDeactivateAt").or_else(|| decide.map(|(_, delay)| add(gone_at, delay)))
        };
        let recorded = time("rosterPurgeAt");
        let purge_at = recorded.or_else(|| {
            let (grace, _) = decide?;
            // Never before the deactivation: an Active identity is never purged directly.
            let floor = if deactivated {
                deactivate_at.unwrap_or(now)
            } else {
                deactivate_at.unwrap_or(now).max(now)
            };
            Some(add(gone_at, grace).max(floor))
        });
        Removal {
            deactivated,
            gone_at,
            deactivate_at,
            purge_at,
            purge_due: deactivated && recorded.is_some_and(|t| t <= now),
        }
    }

    /// The deadlines decided now that the directory does not record yet (with the time it
    /// went): written while the entry stays active through a grace before its deactivation.
    pub(super) fn unrecorded(&self, e: &Entry) -> Vec<AttrChange> {
        let mut changes = vec![];
        let mut record = |attr: &str, t: Option<jiff::Timestamp>| {
            if let Some(t) = t.filter(|_| e.first(attr).is_none()) {
                changes.push(AttrChange::Replace(attr.into(), vec![generalized_time(t)]));
            }
        };
        record("rosterGoneAt", Some(self.gone_at));
        record("rosterDeactivateAt", self.deactivate_at);
        record("rosterPurgeAt", self.purge_at);
        changes
    }
}
