//! Events: one for every change a backend made or failed to make, on the object it concerns,
//! and one when an object newly becomes Invalid or in Conflict.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType};

use super::worker::{Snapshot, Worker};
use crate::api::{Condition, Phase};
use crate::backend::{ChangeOutcome, Outcome};
use crate::converge::PassReport;
use crate::plan::{Kind, ObjectStatus, Target};
use crate::site::Key;

/// The Event a change makes: on which object, of what type, why, and what it says.
fn event_of(c: &ChangeOutcome) -> Vec<(Target, EventType, &'static str, String)> {
    match (&c.outcome, c.backend) {
        (Outcome::Planned | Outcome::AlreadySo, _) => vec![],
        (Outcome::Done, backend) => {
            let reason = match (backend, c.operation.as_str()) {
                ("ldap", "add") => "LdapEntryCreated",
                ("ldap", "delete") => "LdapEntryPurged",
                ("ldap", _) => "LdapEntryUpdated",
                ("slurm", _) => "SlurmUpdated",
                _ => "GoldUpdated",
            };
            let note = match backend {
                "slurm" => format!("sacctmgr: {}", c.what),
                _ => c.what.clone(),
            };
            c.subject
                .iter()
                .map(|t| (t.clone(), EventType::Normal, reason, note.clone()))
                .collect()
        }
        (Outcome::Failed { message, .. }, backend) => {
            let reason = match backend {
                "ldap" => "LdapWriteFailed",
                "slurm" => "SlurmWriteFailed",
                _ => "GoldWriteFailed",
            };
            let note = crate::converge::report_note(c, message);
            c.targets
                .iter()
                .map(|t| (t.clone(), EventType::Warning, reason, note.clone()))
                .collect()
        }
    }
}

impl Worker {
    /// Events for every backend change and failure, and for objects newly blocked.
    pub(super) async fn events(&self, report: &PassReport, snapshot: &Snapshot<'_>) {
        // Each object's reference and current conditions, looked up once per pass.
        let mut index: BTreeMap<Target, (ObjectReference, Vec<Condition>)> = BTreeMap::new();
        macro_rules! add {
            ($objs:expr, $kind:expr) => {
                for o in $objs {
                    let conds = o
                        .status
                        .as_ref()
                        .map(|s| s.conditions.clone())
                        .unwrap_or_default();
                    index.insert(
                        Target::new($kind, &Key::of(o.as_ref())),
                        (o.object_ref(&()), conds),
                    );
                }
            };
        }
        add!(snapshot.accounts, Kind::Account);
        add!(snapshot.projects, Kind::Project);
        add!(snapshot.people, Kind::Person);
        add!(snapshot.guests, Kind::Guest);
        add!(snapshot.imports, Kind::ImportSource);
        let reference = |t: &Target| index.get(t).map(|(r, _)| r.clone());
        let mut events: Vec<(ObjectReference, Event)> = vec![];
        for (t, type_, reason, note) in report.changes.iter().flat_map(event_of) {
            if let Some(r) = reference(&t) {
                events.push((
                    r,
                    Event {
                        type_,
                        reason: reason.into(),
                        note: Some(note),
                        action: "Converge".into(),
                        secondary: None,
                    },
                ));
            }
        }
        // Newly Invalid or in Conflict: tell once, when the condition appears.
        for o in report.first.objects.iter().filter(|o| o.is_blocked()) {
            let already = index
                .get(&o.target)
                .map(|(_, conds)| has_condition(conds, o));
            if already == Some(true) {
                continue;
            }
            if let Some(r) = reference(&o.target) {
                let reason = format!("{:?}", o.phase);
                events.push((
                    r,
                    Event {
                        type_: EventType::Warning,
                        reason,
                        note: o.message().map(str::to_string),
                        action: "Plan".into(),
                        secondary: None,
                    },
                ));
            }
        }
        for (r, e) in events {
            if let Err(err) = self.recorder.publish(&e, &r).await {
                tracing::debug!(error = %err, "event not published");
            }
        }
    }
}

fn has_condition(existing: &[Condition], o: &ObjectStatus) -> bool {
    let t = if o.phase == Phase::Conflict {
        "Conflict"
    } else {
        "Invalid"
    };
    existing.iter().any(|c| {
        c.type_ == t
            && c.status == crate::api::ConditionStatus::True
            && Some(c.message.as_str()) == o.message()
    })
}
