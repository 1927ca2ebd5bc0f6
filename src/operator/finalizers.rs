//! Finalizers: a deletion whose directory work is done lets go of Roster's finalizer; one the
//! mass-deactivation guard holds keeps it (and says so on the object and in an Event).

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use super::status::StatusCtx;
use super::worker::{ObjectResult, PassOutcome, Worker};
use crate::api::{Account, FINALIZER, Guest, Person, Project};
use crate::converge::{Declared, PassReport};
use crate::plan::{Kind, Target};
use crate::site::Key;

impl Worker {
    /// Releases the finalizers of deletions that are done; returns how many the guard holds.
    pub(super) async fn finalize(
        &self,
        declared: &Declared<'_>,
        report: &PassReport,
        accounts: &[Arc<Account>],
        outcome: &mut PassOutcome,
    ) -> usize {
        let repaired = BTreeMap::new();
        let ctx = StatusCtx {
            last: &report.last,
            failed: &report.failed,
            repaired: &repaired,
            slurm: &report.slurm_synced,
            gold: &report.gold_synced,
            now: report.last.now,
        };
        let mut guarded = 0usize;
        // Accounts by key, built at the first held deletion (a mass deletion the guard holds
        // would otherwise search every Account for each of them).
        let mut accounts_by_key: Option<BTreeMap<Key, &Arc<Account>>> = None;
        for (kind, key) in declared.deleting.iter().cloned() {
            // A Guest lets go once its account is deactivated (or was never created).
            if kind == Kind::Guest {
                let username = declared
                    .site
                    .guests
                    .get(&key)
                    .map(|g: &Guest| g.spec.account.username.clone())
                    .unwrap_or_default();
                let superseded = declared
                    .guests
                    .outcomes
                    .get(&key)
                    .is_some_and(|o| o.conditions.iter().any(|c| c.type_ == "Superseded"));
                let done = superseded
                    || report
                        .directory
                        .accounts
                        .get(&username)
                        .is_none_or(crate::plan::Entry::is_deactivated);
                let failed = if done {
                    release::<Guest>(&self.client, &self.stores.guests, &key)
                        .await
                        .err()
                        .map(|e| format!("releasing the finalizer: {e}"))
                } else {
                    None
                };
                outcome.objects.insert(
                    (kind, key),
                    ObjectResult {
                        failed,
                        next_transition: None,
                    },
                );
                continue;
            }
            let target = Target {
                kind,
                key: key.clone(),
            };
            // A removal the guard holds keeps its finalizer until approved or rejected.
            if let Some(held) = report.last.status_of(kind, &key).filter(|s| s.is_guarded()) {
                guarded += 1;
                if kind == Kind::Account
                    && let Some(a) = accounts_by_key
                        .get_or_insert_with(|| {
                            accounts.iter().map(|a| (Key::of(a.as_ref()), a)).collect()
                        })
                        .get(&key)
                {
                    // Say so where the user looks: on the object being deleted, and in an Event.
                    let existing = a
                        .status
                        .as_ref()
                        .map(|s| s.conditions.clone())
                        .unwrap_or_default();
                    let mut st = a.status.clone().unwrap_or_default();
                    st.conditions = ctx.conditions(held, &existing, a.metadata.generation);
                    self.write_status(a.as_ref(), a.status.as_ref(), &st).await;
                    let note = held
                        .conditions
                        .iter()
                        .find(|c| c.type_ == "Guarded")
                        .map(|c| c.message.clone());
                    let e = Event {
                        type_: EventType::Warning,
                        reason: "Guarded".into(),
                        note,
                        action: "Deactivate".into(),
                        secondary: None,
                    };
                    if let Err(err) = self.recorder.publish(&e, &a.object_ref(&())).await {
                        tracing::debug!(error = %err, "event not published");
                    }
                }
                outcome.objects.insert((kind, key), ObjectResult::default());
                continue;
            }
            if let Some(m) = report.failed.get(&target) {
                outcome.objects.insert(
                    (kind, key),
                    ObjectResult {
                        failed: Some(m.clone()),
                        next_transition: None,
                    },
                );
                continue;
            }
            let result = match kind {
                Kind::Account => {
                    release::<Account>(&self.client, &self.stores.accounts, &key).await
                }
                Kind::Project => {
                    release::<Project>(&self.client, &self.stores.projects, &key).await
                }
                Kind::Person => release::<Person>(&self.client, &self.stores.people, &key).await,
                Kind::Guest | Kind::ImportSource => Ok(()),
            };
            let failed = result
                .err()
                .map(|e| format!("releasing the finalizer: {e}"));
            outcome.objects.insert(
                (kind, key),
                ObjectResult {
                    failed,
                    next_transition: None,
                },
            );
        }
        guarded
    }
}

/// Removes Roster's finalizer (only if it is still where the cache saw it).
pub(super) async fn release<K>(
    client: &Client,
    store: &Store<K>,
    key: &Key,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let Some(obj) = store
        .state()
        .into_iter()
        .find(|o| &Key::of(o.as_ref()) == key)
    else {
        return Ok(());
    };
    let Some(i) = obj.finalizers().iter().position(|f| f == FINALIZER) else {
        return Ok(());
    };
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": FINALIZER},
        {"op": "remove", "path": format!("/metadata/finalizers/{i}")},
    ]))
    .expect("a valid JSON patch");
    let api: Api<K> = Api::namespaced(client.clone(), &key.namespace);
    api.patch(
        &key.name,
        &PatchParams::default(),
        &Patch::<()>::Json(patch),
    )
    .await
    .map(|_| ())
}
