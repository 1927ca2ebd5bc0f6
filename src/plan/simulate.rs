//! Applies a plan to an in-memory copy of the directory, the way the LDAP backend applies it to
//! the real one: `roster plan` plans Slurm and Gold against it (`Mode::Plan`), and tests check
//! with it that planning against the result of a plan is a no-op.

use std::collections::BTreeMap;

use super::directory::{Entry, Observed};
use super::{AttrChange, Number, Op, Plan};
use crate::config::IdRange;

/// The directory after `plan`, with numbers allocated as the counter would (lowest free).
pub fn simulate(
    observed: &Observed,
    plan: &Plan,
    uid_range: IdRange,
    gid_range: IdRange,
) -> Observed {
    let mut out = observed.clone();
    let mut uids: BTreeMap<String, u32> = BTreeMap::new();
    for op in &plan.ops {
        match op {
            Op::Add {
                dn,
                attrs,
                uid,
                gid,
                ..
            } => {
                let mut e = Entry {
                    dn: dn.clone(),
                    attrs: attrs
                        .iter()
                        .filter(|(_, v)| !v.is_empty())
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                        .collect(),
                };
                if let Some(n) = uid {
                    let n = resolve(n, &out, &uids, uid_range, true);
                    e.attrs.insert("uidnumber".into(), vec![n.to_string()]);
                    if let Some(u) = e.first("uid") {
                        uids.insert(u.to_string(), n);
                    }
                }
                if let Some(n) = gid {
                    let n = resolve(n, &out, &uids, gid_range, false);
                    e.attrs.insert("gidnumber".into(), vec![n.to_string()]);
                }
                insert(&mut out, e);
            }
            Op::Delete { dn, .. } => {
                out.accounts.retain(|_, e| &e.dn != dn);
                out.groups.retain(|_, e| &e.dn != dn);
            }
            Op::Modify { dn, changes, .. } => {
                let Some(e) = find(&mut out, dn) else {
                    continue;
                };
                for c in changes {
                    match c {
                        AttrChange::Replace(a, v) => {
                            if v.is_empty() {
                                e.attrs.remove(&a.to_ascii_lowercase());
                            } else {
                                e.attrs.insert(a.to_ascii_lowercase(), v.clone());
                            }
                        }
                        AttrChange::Add(a, v) => {
                            let vals = e.attrs.entry(a.to_ascii_lowercase()).or_default();
                            vals.extend(v.iter().cloned());
                        }
                        AttrChange::Delete(a, v) => {
                            let key = a.to_ascii_lowercase();
                            if let Some(vals) = e.attrs.get_mut(&key) {
                                vals.retain(|x| !v.iter().any(|d| d.eq_ignore_ascii_case(x)));
                                if vals.is_empty() {
                                    e.attrs.remove(&key);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

fn resolve(
    n: &Number,
    out: &Observed,
    uids: &BTreeMap<String, u32>,
    range: IdRange,
    uid: bool,
) -> u32 {
    match n {
        Number::Fixed(n) => *n,
        Number::UidOfAccount(u) => uids[u],
        Number::GidOfGroup(g) => out.groups[g].number("gidNumber").expect("group has a gid"),
        Number::Allocate => {
            let used = if uid {
                let mut s = out.uids_in_use();
                s.extend(out.gids_in_use());
                s
            } else {
                out.gids_in_use()
            };
            (range.min..=range.max)
                .find(|n| !used.contains(n))
                .expect("range not exhausted")
        }
    }
}

fn insert(out: &mut Observed, e: Entry) {
    if e.has_class("rosterTombstone") {
        out.tombstones
            .insert(e.first("cn").unwrap_or_default().to_string(), e);
    } else if e.has_class("posixAccount") {
        out.accounts
            .insert(e.first("uid").unwrap_or_default().to_string(), e);
    } else if e.has_class("posixGroup") {
        out.groups
            .insert(e.first("cn").unwrap_or_default().to_string(), e);
    }
}

fn find<'o>(out: &'o mut Observed, dn: &str) -> Option<&'o mut Entry> {
    out.accounts
        .values_mut()
        .chain(out.groups.values_mut())
        .find(|e| e.dn == dn)
}
