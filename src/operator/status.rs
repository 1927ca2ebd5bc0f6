//! From a plan's view of an object to its Kubernetes status: conditions with stable transition
//! times, lifecycle timestamps mirrored from the directory, and the "has anything changed"
//! test that keeps Roster from rewriting status for nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::api::{
    Account, Condition, ConditionStatus, Lifecycle, Person, Phase, Project, Time, Transition,
};
use crate::plan::{Cond, Entry, Kind, ObjectStatus, Plan, Target, parse_generalized_time};
use crate::site::Key;

/// Conditions for the API, keeping `lastTransitionTime` of those whose status did not change.
pub fn conditions(
    conds: &[Cond],
    existing: &[Condition],
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = Vec::new();
    for c in conds {
        // A later condition of the same type wins (e.g. a write failure over "pending").
        out.retain(|o| o.type_ != c.type_);
        let status = if c.status {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        let since = existing
            .iter()
            .find(|e| e.type_ == c.type_ && e.status == status)
            .map(|e| e.last_transition_time)
            .unwrap_or(Time(now));
        out.push(Condition {
            type_: c.type_.to_string(),
            status,
            reason: c.reason.clone(),
            message: c.message.clone(),
            last_transition_time: since,
            observed_generation: generation,
        });
    }
    out
}

/// Lifecycle fields from the directory entry (authoritative) and the plan.
pub fn lifecycle(s: &ObjectStatus, entry: Option<&Entry>) -> Lifecycle {
    let time = |attr: &str| {
        entry
            .and_then(|e| e.first(attr))
            .and_then(parse_generalized_time)
            .map(Time)
    };
    Lifecycle {
        deactivated_at: time("rosterDeactivatedAt"),
        purge_at: time("rosterPurgeAt"),
        deactivation_reason: s
            .conditions
            .iter()
            .find(|c| c.type_ == "Deactivated" && c.status)
            .map(|c| c.reason.clone()),
        next_transition: s.next_transition.map(|(action, at)| Transition {
            action: action.to_string(),
            at: Time(at),
        }),
    }
}

/// The status document to apply: what holds, nothing else. Server-side apply removes a field
/// the `roster` manager applied before and leaves out now; a `null` would name the field, and a
/// real API server refuses a field its kind's status schema does not declare ("field not
/// declared in schema") — each kind declares only its own.
pub fn applied(status: &Value) -> Value {
    match status {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Whether the stored status already says what `desired` says (nulls and empty lists count as
/// absent).
pub fn same(current: Option<&Value>, desired: &Value) -> bool {
    fn clean(v: &Value) -> Value {
        match v {
            Value::Object(o) => Value::Object(
                o.iter()
                    .filter(|(_, v)| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
                    .map(|(k, v)| (k.clone(), clean(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(clean).collect()),
            other => other.clone(),
        }
    }
    clean(current.unwrap_or(&json!({}))) == clean(desired)
}

/// Objects Ready for their current generation, with the phase their status records.
pub(super) fn converged_targets(
    accounts: &[Arc<Account>],
    projects: &[Arc<Project>],
    people: &[Arc<Person>],
) -> BTreeMap<Target, Phase> {
    fn ready(
        meta: &kube::api::ObjectMeta,
        observed: Option<i64>,
        conditions: &[Condition],
    ) -> bool {
        meta.generation.is_some()
            && meta.generation == observed
            && conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == crate::api::ConditionStatus::True)
    }
    let target = |kind, meta: &kube::api::ObjectMeta| Target {
        kind,
        key: Key::new(
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        ),
    };
    let accounts = accounts.iter().filter_map(|a| {
        let s = a.status.as_ref()?;
        let phase = s.phase?;
        ready(&a.metadata, s.observed_generation, &s.conditions)
            .then(|| (target(Kind::Account, &a.metadata), phase))
    });
    let projects = projects.iter().filter_map(|p| {
        let s = p.status.as_ref()?;
        let phase = s.phase?;
        ready(&p.metadata, s.observed_generation, &s.conditions)
            .then(|| (target(Kind::Project, &p.metadata), phase))
    });
    let people = people.iter().filter_map(|h| {
        let s = h.status.as_ref()?;
        let phase = s.phase?;
        ready(&h.metadata, s.observed_generation, &s.conditions)
            .then(|| (target(Kind::Person, &h.metadata), phase))
    });
    accounts.chain(projects).chain(people).collect()
}

/// What status building needs from a pass.
pub(super) struct StatusCtx<'a> {
    pub last: &'a Plan,
    pub failed: &'a BTreeMap<Target, String>,
    pub repaired: &'a BTreeMap<Target, Vec<String>>,
    /// `SlurmSynced` per object, when Slurm is configured.
    pub slurm: &'a BTreeMap<Target, Cond>,
    /// `GoldSynced` per object, when Gold is configured.
    pub gold: &'a BTreeMap<Target, Cond>,
    pub now: jiff::Timestamp,
}

impl StatusCtx<'_> {
    pub fn object(&self, kind: Kind, key: &Key) -> ObjectStatus {
        self.last.status_of(kind, key).cloned().unwrap_or_else(|| {
            ObjectStatus::new(Target {
                kind,
                key: key.clone(),
            })
        })
    }

    pub fn conditions(
        &self,
        s: &ObjectStatus,
        existing: &[Condition],
        generation: Option<i64>,
    ) -> Vec<Condition> {
        let mut conds: Vec<Cond> = s.conditions.clone();
        for backend in [self.slurm, self.gold] {
            if !s.is_blocked()
                && let Some(c) = backend.get(&s.target)
            {
                conds.push(c.clone());
                if !c.status && !conds.iter().any(|c| c.type_ == "Ready" && !c.status) {
                    conds.push(Cond {
                        type_: "Ready",
                        status: false,
                        reason: c.reason.clone(),
                        message: c.message.clone(),
                    });
                }
            }
        }
        if let Some(m) = self.failed.get(&s.target) {
            conds.push(Cond {
                type_: "LdapSynced",
                status: false,
                reason: "WriteFailed".into(),
                message: m.clone(),
            });
            conds.push(Cond {
                type_: "Ready",
                status: false,
                reason: "WriteFailed".into(),
                message: m.clone(),
            });
        } else if let Some(fixes) = self.repaired.get(&s.target) {
            let message = format!(
                "{}: the directory had changed behind Roster's back; repaired: {}",
                self.now,
                fixes.join("; ")
            );
            conds.push(Cond {
                type_: "LdapSynced",
                status: true,
                reason: "DriftRepaired".into(),
                message,
            });
        } else if let Some(prev) = existing.iter().find(|c| {
            c.type_ == "LdapSynced"
                && c.reason == "DriftRepaired"
                && c.observed_generation == generation
        }) && s
            .conditions
            .iter()
            .any(|c| c.type_ == "LdapSynced" && c.status)
        {
            // Keep reporting the last repair until the object changes.
            conds.push(Cond {
                type_: "LdapSynced",
                status: true,
                reason: prev.reason.clone(),
                message: prev.message.clone(),
            });
        }
        conditions(&conds, existing, generation, self.now)
    }

    pub fn result(&self, s: &ObjectStatus) -> super::worker::ObjectResult {
        let slurm_failure = self
            .slurm
            .get(&s.target)
            .filter(|c| !c.status && c.reason != "WaitingForLdap" && c.reason != "QosMissing")
            .map(|c| format!("{}: {}", c.reason, c.message));
        let gold_failure = self
            .gold
            .get(&s.target)
            .filter(|c| !c.status)
            .map(|c| format!("{}: {}", c.reason, c.message));
        super::worker::ObjectResult {
            failed: self
                .failed
                .get(&s.target)
                .cloned()
                .or(slurm_failure)
                .or(gold_failure),
            next_transition: s.next_transition.map(|(_, at)| at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(type_: &'static str, status: bool) -> Cond {
        Cond {
            type_,
            status,
            reason: "R".into(),
            message: String::new(),
        }
    }

    #[test]
    fn transition_times_survive_until_the_status_changes() {
        let t0: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: jiff::Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        let first = conditions(&[cond("Ready", true)], &[], Some(1), t0);
        let again = conditions(&[cond("Ready", true)], &first, Some(1), t1);
        assert_eq!(again, first, "unchanged: same time, so no status write");
        let flipped = conditions(&[cond("Ready", false)], &again, Some(1), t1);
        assert_eq!(flipped[0].last_transition_time, Time(t1));
        let later_wins = conditions(&[cond("Ready", true), cond("Ready", false)], &[], None, t0);
        assert_eq!(later_wins.len(), 1);
        assert_eq!(later_wins[0].status, ConditionStatus::False);
    }

    #[test]
    fn sameness_ignores_nulls_and_empty_lists() {
        let current = json!({"phase": "Active", "projects": [], "dn": null});
        assert!(same(Some(&current), &json!({"phase": "Active"})));
        assert!(!same(Some(&current), &json!({"phase": "Deactivated"})));
        assert!(!same(None, &json!({"phase": "Active"})));
        let applied = applied(&json!({"phase": "Active", "uidNumber": null}));
        assert_eq!(
            applied,
            json!({"phase": "Active"}),
            "no key for what is absent"
        );
    }
}
