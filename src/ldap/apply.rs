//! Carrying out a plan's operations in the directory: numbers from the counters (an atomic
//! delete-old/add-new modify, retried on conflict), one write per operation, and a failure in
//! one object never stops the others.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use ldap3::{Mod, Scope, SearchEntry};

use super::{Directory, DirectoryError, Observed};
use crate::backend::{ChangeOutcome, Outcome};
use crate::config::{Config, IdRange, PrimaryGroup};
use crate::plan::{AttrChange, Number, Op};

/// What an apply did.
#[derive(Debug, Default, Clone)]
pub struct ApplyReport {
    /// Operations carried out (index into the applied ops), with the number allocated.
    pub done: Vec<(usize, Option<u32>)>,
    /// Operations that failed (index), with the reason.
    pub failed: Vec<(usize, String)>,
    /// Operations refused because another writer took the name first (a race).
    pub lost_races: Vec<(usize, String)>,
    /// Times a counter update lost against a concurrent writer and was retried.
    pub counter_retries: u32,
    /// Each operation, with the object it concerns and its outcome.
    pub changes: Vec<ChangeOutcome>,
}

impl ApplyReport {
    /// Whether anything reached the directory, or may have (a failed or lost operation may
    /// have written part of its work).
    pub fn wrote(&self) -> bool {
        !self.done.is_empty() || !self.failed.is_empty() || !self.lost_races.is_empty()
    }
}

/// The change outcome of one operation.
pub fn change(op: &Op, outcome: Outcome) -> ChangeOutcome {
    ChangeOutcome {
        backend: "ldap",
        operation: op.verb().into(),
        targets: vec![op.target().clone()],
        subject: Some(op.target().clone()),
        what: op.describe(),
        command: vec![],
        outcome,
    }
}

/// A counter and the numbers it must skip.
struct Counter {
    cn: &'static str,
    range: IdRange,
    in_use: BTreeSet<u32>,
}

const MAX_CAS_ATTEMPTS: u32 = 1000;

impl Directory {
    /// Applies `ops` in order. `observed` is the snapshot the plan was made from.
    pub async fn apply(&mut self, config: &Config, observed: &Observed, ops: &[Op]) -> ApplyReport {
        let mut report = ApplyReport::default();
        let personal = config.defaults.primary_group == PrimaryGroup::Personal;
        let mut uid_in_use = observed.uids_in_use();
        if personal {
            // gid = uid for personal groups: a uid must be free as a gid too.
            uid_in_use.extend(observed.gids_in_use());
        }
        let shared = personal
            && config.uid_range.min <= config.gid_range.max
            && config.gid_range.min <= config.uid_range.max;
        let mut uids = Counter {
            cn: "uidNumber",
            range: config.uid_range,
            in_use: uid_in_use,
        };
        let mut gids = Counter {
            cn: "gidNumber",
            range: config.gid_range,
            in_use: observed.gids_in_use(),
        };
        let mut new_uids: BTreeMap<String, u32> = BTreeMap::new();
        let mut new_gids: BTreeMap<String, u32> = BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            let result = match op {
                Op::Add {
                    dn,
                    attrs,
                    uid,
                    gid,
                    ..
                } => {
                    let mut attrs = attrs.clone();
                    let mut allocated = None;
                    let resolved: Result<(), String> = async {
                        if let Some(n) = uid {
                            let n = self
                                .number(
                                    n,
                                    config,
                                    &mut uids,
                                    &new_uids,
                                    observed,
                                    &mut report.counter_retries,
                                )
                                .await?;
                            allocated = Some(n);
                            attrs.insert("uidNumber".into(), vec![n.to_string()]);
                        }
                        let own_uid = attrs.get("uid").and_then(|v| v.first()).cloned();
                        if let (Some(Number::UidOfAccount(u)), Some(n)) = (gid, allocated)
                            && Some(u) == own_uid.as_ref()
                        {
                            // The account's primary group is its personal group: gid = uid.
                            attrs.insert("gidNumber".into(), vec![n.to_string()]);
                        } else if let Some(n) = gid {
                            // Personal groups put uids into the gid space: where the ranges
                            // overlap, every number comes from one counter so no two writers
                            // can hand out the same number as a uid and as a gid.
                            let counter = if shared { &mut uids } else { &mut gids };
                            let n = self
                                .number(
                                    n,
                                    config,
                                    counter,
                                    &new_uids,
                                    observed,
                                    &mut report.counter_retries,
                                )
                                .await
                                .or_else(|e| match n {
                                    Number::GidOfGroup(g) => new_gids.get(g).copied().ok_or(e),
                                    _ => Err(e),
                                })?;
                            if uid.is_none() {
                                allocated = Some(n);
                            }
                            attrs.insert("gidNumber".into(), vec![n.to_string()]);
                        }
                        Ok(())
                    }
                    .await;
                    match resolved {
                        Err(m) => Err((false, m)),
                        Ok(()) => match self.add(dn, &attrs).await {
                            Ok(()) => {
                                if let Some(u) = attrs.get("uid").and_then(|v| v.first())
                                    && let Some(n) = attrs.get("uidNumber").and_then(|v| v.first())
                                {
                                    new_uids.insert(u.clone(), n.parse().unwrap_or(0));
                                }
                                if attrs
                                    .get("objectClass")
                                    .is_some_and(|c| c.iter().any(|c| c == "posixGroup"))
                                    && let (Some(cn), Some(g)) = (
                                        attrs.get("cn").and_then(|v| v.first()),
                                        attrs.get("gidNumber").and_then(|v| v.first()),
                                    )
                                {
                                    new_gids.insert(cn.clone(), g.parse().unwrap_or(0));
                                }
                                Ok(allocated)
                            }
                            Err(e) => Err(e),
                        },
                    }
                }
                Op::Modify { dn, changes, .. } => self.modify(dn, changes).await.map(|()| None),
                Op::Delete { dn, .. } => self.delete(dn).await.map(|()| None),
            };
            let outcome = match &result {
                Ok(_) => Outcome::Done,
                Err((true, m)) => Outcome::Failed {
                    reason: "LostRace",
                    message: format!("{}: {m}", op.dn()),
                },
                Err((false, m)) => Outcome::Failed {
                    reason: "WriteFailed",
                    message: format!("{}: {m}", op.dn()),
                },
            };
            report.changes.push(change(op, outcome));
            match result {
                Ok(n) => report.done.push((i, n)),
                Err((true, m)) => report.lost_races.push((i, m)),
                Err((false, m)) => report.failed.push((i, m)),
            }
        }
        report
    }

    async fn number(
        &mut self,
        n: &Number,
        config: &Config,
        counter: &mut Counter,
        new_uids: &BTreeMap<String, u32>,
        observed: &Observed,
        retries: &mut u32,
    ) -> Result<u32, String> {
        match n {
            Number::Fixed(n) => Ok(*n),
            Number::UidOfAccount(u) => new_uids.get(u).copied().ok_or_else(|| {
                format!("the account {u} was not created, so its personal group is not either")
            }),
            Number::GidOfGroup(g) => observed
                .groups
                .get(g)
                .and_then(|e| e.number("gidNumber"))
                .ok_or_else(|| format!("the group {g} was not created")),
            Number::Allocate => self
                .allocate(config, counter, retries)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Takes the next free number from a counter entry with a compare-and-swap modify.
    async fn allocate(
        &mut self,
        config: &Config,
        c: &mut Counter,
        retries: &mut u32,
    ) -> Result<u32, DirectoryError> {
        let dn = config.counter_dn(c.cn);
        for _ in 0..MAX_CAS_ATTEMPTS {
            let current = match self.read_counter(&dn).await? {
                Some(v) => v,
                None => {
                    let start = c.range.min.to_string();
                    let attrs = vec![
                        ("objectClass", HashSet::from(["rosterCounter"])),
                        ("cn", HashSet::from([c.cn])),
                        ("rosterCounterValue", HashSet::from([start.as_str()])),
                    ];
                    let r = self
                        .ldap
                        .add("create counter", &dn, attrs, &[68])
                        .await
                        .map_err(|e| self.unreachable(e))?;
                    if r.rc != 0 && r.rc != 68 {
                        return Err(op_error("create counter", &dn, r.rc, &r.text));
                    }
                    continue;
                }
            };
            let mut candidate = current.max(c.range.min);
            while c.in_use.contains(&candidate) && candidate <= c.range.max {
                candidate += 1;
            }
            if candidate > c.range.max {
                return Err(DirectoryError::Operation {
                    operation: "allocate",
                    dn,
                    message: format!("the range {}..{} is exhausted", c.range.min, c.range.max),
                });
            }
            let old = current.to_string();
            let new = (candidate + 1).to_string();
            let r = self
                .ldap
                .modify(
                    "advance counter",
                    &dn,
                    vec![
                        Mod::Delete("rosterCounterValue", HashSet::from([old.as_str()])),
                        Mod::Add("rosterCounterValue", HashSet::from([new.as_str()])),
                    ],
                    &[16],
                )
                .await
                .map_err(|e| self.unreachable(e))?;
            match r.rc {
                0 => {
                    c.in_use.insert(candidate);
                    return Ok(candidate);
                }
                // noSuchAttribute: someone else advanced the counter first; read it again.
                16 => *retries += 1,
                rc => return Err(op_error("advance counter", &dn, rc, &r.text)),
            }
        }
        Err(DirectoryError::Operation {
            operation: "allocate",
            dn,
            message: format!("gave up after {MAX_CAS_ATTEMPTS} concurrent updates"),
        })
    }

    async fn read_counter(&mut self, dn: &str) -> Result<Option<u32>, DirectoryError> {
        let r = self
            .ldap
            .search(
                "read counter",
                dn,
                Scope::Base,
                "(objectClass=rosterCounter)",
                vec!["rosterCounterValue"],
            )
            .await
            .map_err(|e| self.unreachable(e))?;
        if r.1.rc == 32 {
            return Ok(None);
        }
        let entry = r.0.into_iter().next().map(SearchEntry::construct);
        Ok(entry.and_then(|e| {
            e.attrs
                .get("rosterCounterValue")
                .and_then(|v| v.first())
                .and_then(|v| v.parse().ok())
        }))
    }

    /// Adds an entry; `Err((true, _))` when another writer created it first.
    async fn add(&mut self, dn: &str, attrs: &crate::plan::Attrs) -> Result<(), (bool, String)> {
        let list: Vec<(&str, HashSet<&str>)> = attrs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.as_str(), v.iter().map(String::as_str).collect()))
            .collect();
        match self.ldap.add("add", dn, list, &[]).await {
            Err(e) => Err((false, self.unreachable(e).to_string())),
            Ok(r) if r.rc == 0 => Ok(()),
            Ok(r) if r.rc == 68 => Err((true, format!("{dn} was created by another writer first"))),
            Ok(r) => Err((false, op_error("add", dn, r.rc, &r.text).to_string())),
        }
    }

    pub(crate) async fn modify(
        &mut self,
        dn: &str,
        changes: &[AttrChange],
    ) -> Result<(), (bool, String)> {
        let mods: Vec<Mod<&str>> = changes
            .iter()
            .map(|c| match c {
                AttrChange::Replace(a, v) => {
                    Mod::Replace(a.as_str(), v.iter().map(String::as_str).collect())
                }
                AttrChange::Add(a, v) => {
                    Mod::Add(a.as_str(), v.iter().map(String::as_str).collect())
                }
                AttrChange::Delete(a, v) => {
                    Mod::Delete(a.as_str(), v.iter().map(String::as_str).collect())
                }
            })
            .collect();
        match self.ldap.modify("modify", dn, mods, &[]).await {
            Err(e) => Err((false, self.unreachable(e).to_string())),
            Ok(r) if r.rc == 0 => Ok(()),
            Ok(r) => Err((false, op_error("modify", dn, r.rc, &r.text).to_string())),
        }
    }

    /// Sets a counter entry to `value` (created when missing); for records, not allocation.
    pub async fn set_counter(
        &mut self,
        dn: &str,
        cn: &str,
        value: i64,
    ) -> Result<(), DirectoryError> {
        let v = value.to_string();
        let r = self
            .ldap
            .modify(
                "set counter",
                dn,
                vec![Mod::Replace(
                    "rosterCounterValue",
                    HashSet::from([v.as_str()]),
                )],
                &[32],
            )
            .await
            .map_err(|e| self.unreachable(e))?;
        match r.rc {
            0 => Ok(()),
            32 => {
                let attrs = vec![
                    ("objectClass", HashSet::from(["rosterCounter"])),
                    ("cn", HashSet::from([cn])),
                    ("rosterCounterValue", HashSet::from([v.as_str()])),
                ];
                let r = self
                    .ldap
                    .add("set counter", dn, attrs, &[])
                    .await
                    .map_err(|e| self.unreachable(e))?;
                if r.rc == 0 {
                    Ok(())
                } else {
                    Err(op_error("add", dn, r.rc, &r.text))
                }
            }
            rc => Err(op_error("modify", dn, rc, &r.text)),
        }
    }

    /// Removes an entry if it exists.
    pub async fn remove_entry(&mut self, dn: &str) -> Result<(), DirectoryError> {
        self.delete(dn)
            .await
            .map_err(|(_, m)| DirectoryError::Operation {
                operation: "delete",
                dn: dn.to_string(),
                message: m,
            })
    }

    /// Deletes an entry; one already gone is fine (a purge interrupted earlier).
    async fn delete(&mut self, dn: &str) -> Result<(), (bool, String)> {
        match self.ldap.delete("delete", dn).await {
            Err(e) => Err((false, self.unreachable(e).to_string())),
            Ok(r) if r.rc == 0 || r.rc == 32 => Ok(()),
            Ok(r) => Err((false, op_error("delete", dn, r.rc, &r.text).to_string())),
        }
    }

    fn unreachable(&self, e: ldap3::LdapError) -> DirectoryError {
        DirectoryError::Unreachable {
            uri: self.uri.clone(),
            message: e.to_string(),
        }
    }
}

fn op_error(operation: &'static str, dn: &str, rc: u32, text: &str) -> DirectoryError {
    DirectoryError::Operation {
        operation,
        dn: dn.to_string(),
        message: format!("result code {rc}: {text}"),
    }
}
