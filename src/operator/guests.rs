//! Guests in the cluster: their derived Persons and Accounts (server-side apply, owned by the
//! Guest, written only when they differ), the Guests' status, their Events and the expiry
//! notice.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use serde_json::json;

use super::worker::{ObjectResult, Worker};
use crate::api::{Account, Guest, GuestStatus, Person, Phase};
use crate::plan::{Cond, Kind, Observed, Plan};
use crate::site::Key;
use crate::telemetry::labels;

impl Worker {
    /// The guests' derived Persons and Accounts (server-side apply, owned by the Guest, written
    /// only when they differ), the Guests' status, their Events and the expiry notice.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn write_guests(
        &self,
        guests: &[Arc<Guest>],
        accounts: &[Arc<Account>],
        people: &[Arc<Person>],
        expansion: &crate::guest::Expansion,
        last: &Plan,
        after: &Observed,
        now: jiff::Timestamp,
    ) -> BTreeMap<Key, ObjectResult> {
        let mut results = BTreeMap::new();
        let account_of: BTreeMap<Key, &Arc<Account>> =
            accounts.iter().map(|a| (Key::of(a.as_ref()), a)).collect();
        let person_of: BTreeMap<Key, &Arc<Person>> =
            people.iter().map(|p| (Key::of(p.as_ref()), p)).collect();
        for g in guests {
            let key = Key::of(g.as_ref());
            if g.meta().deletion_timestamp.is_some() {
                continue;
            }
            let Some(o) = expansion.outcomes.get(&key) else {
                continue;
            };
            let owner = json!([{
                "apiVersion": "roster.io/v1alpha1",
                "kind": "Guest",
                "name": key.name,
                "uid": g.meta().uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }]);
            let owned = |m: &kube::api::ObjectMeta| {
                m.owner_references
                    .iter()
                    .flatten()
                    .any(|r| Some(&r.uid) == g.meta().uid.as_ref())
                    && m.labels
                        .as_ref()
                        .and_then(|l| l.get(crate::guest::GUEST_LABEL))
                        == Some(&key.name)
            };
            let mut failed = None;
            if let Some(p) = expansion.people.get(&key) {
                let current = person_of.get(&key);
                if !current.is_some_and(|c| c.spec == p.spec && owned(c.meta())) {
                    failed = failed.or(self
                        .apply_derived::<Person>(
                            "roster-guest",
                            &key,
                            p.meta(),
                            Some(&owner),
                            json!(p.spec),
                        )
                        .await);
                }
            }
            if let Some(a) = expansion.accounts.get(&key) {
                let current = account_of.get(&key);
                if !current.is_some_and(|c| c.spec == a.spec && owned(c.meta())) {
                    failed = failed.or(self
                        .apply_derived::<Account>(
                            "roster-guest",
                            &key,
                            a.meta(),
                            Some(&owner),
                            json!(a.spec),
                        )
                        .await);
                }
            }
            // Status: the guest's own conditions over its account's state.
            let account = last.status_of(Kind::Account, &key);
            let phase = if o.invalid {
                Phase::Invalid
            } else if o.purged {
                Phase::Purged
            } else {
                account.map(|s| s.phase).unwrap_or(Phase::Pending)
            };
            let mut conds = o.conditions.clone();
            let ready = if o.invalid {
                Cond {
                    type_: "Ready",
                    status: false,
                    reason: "Invalid".into(),
                    message: "the Guest breaks a rule (see Invalid); nothing was derived".into(),
                }
            } else if let Some(m) = &failed {
                Cond {
                    type_: "Ready",
                    status: false,
                    reason: "WriteFailed".into(),
                    message: m.clone(),
                }
            } else {
                account
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned())
                    .unwrap_or(Cond {
                        type_: "Ready",
                        status: true,
                        reason: if o.purged { "Purged" } else { "Converged" }.into(),
                        message: String::new(),
                    })
            };
            conds.push(ready);
            let existing = g
                .status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default();
            let before = g.status.clone().unwrap_or_default();
            // Events when a host goes away and when the notice goes out.
            let host_gone = conds.iter().find(|c| c.type_ == "HostGone");
            if let Some(c) = host_gone
                && !existing.iter().any(|e| e.type_ == "HostGone")
            {
                self.publish_one(
                    g.as_ref(),
                    EventType::Warning,
                    "HostGone",
                    c.message.clone(),
                )
                .await;
            }
            let mut notified = before.expiry_notified_at;
            if o.expiring {
                let valid = o
                    .accepted_valid_until
                    .as_deref()
                    .and_then(|v| crate::api::parse_valid_until(v).ok());
                let notice = self.config.guests.notice.signed();
                let window_start = valid.and_then(|v| v.checked_sub(notice).ok());
                let already = notified.is_some_and(|t| window_start.is_some_and(|w| t.0 >= w));
                if !already {
                    let message = conds
                        .iter()
                        .find(|c| c.type_ == "Expiring")
                        .map(|c| c.message.clone())
                        .unwrap_or_default();
                    self.publish_one(
                        g.as_ref(),
                        EventType::Warning,
                        "GuestExpiring",
                        message.clone(),
                    )
                    .await;
                    self.mail_notice(&key, o.notify.as_deref().unwrap_or(&[]), &message)
                        .await;
                    notified = Some(crate::api::Time(now));
                }
            }
            let st = GuestStatus {
                observed_generation: g.metadata.generation,
                phase: Some(phase),
                conditions: crate::operator::status::conditions(
                    &conds,
                    &existing,
                    g.metadata.generation,
                    now,
                ),
                accepted_valid_until: o.accepted_valid_until.clone(),
                acting_sponsor: o.acting_sponsor.clone(),
                person: o.person.as_ref().map(|k| k.name.clone()),
                account: o.account.as_ref().map(|k| k.name.clone()),
                expiry_notified_at: notified,
                lifecycle: account
                    .map(|s| {
                        crate::operator::status::lifecycle(
                            s,
                            after.accounts.get(&g.spec.account.username),
                        )
                    })
                    .unwrap_or_default(),
            };
            self.write_status(g.as_ref(), g.status.as_ref(), &st).await;
            results.insert(
                key,
                ObjectResult {
                    failed,
                    next_transition: o.next_wakeup,
                },
            );
        }
        results
    }

    /// Creates or updates a derived Person or Account (a guest's, owned by the Guest; an
    /// import's) by server-side apply under `manager`.
    pub(super) async fn apply_derived<K>(
        &self,
        manager: &str,
        key: &Key,
        meta: &kube::api::ObjectMeta,
        owner: Option<&serde_json::Value>,
        spec: serde_json::Value,
    ) -> Option<String>
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), &key.namespace);
        let mut metadata = json!({
            "name": key.name,
            "namespace": key.namespace,
            "labels": meta.labels,
        });
        if let Some(a) = &meta.annotations {
            metadata["annotations"] = json!(a);
        }
        if let Some(o) = owner {
            metadata["ownerReferences"] = o.clone();
        }
        let doc = json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "metadata": metadata,
            "spec": spec,
        });
        let params = PatchParams::apply(manager).force();
        match api.patch(&key.name, &params, &Patch::Apply(&doc)).await {
            Ok(_) => None,
            Err(e) => Some(format!("writing {} {key}: {e}", K::kind(&()))),
        }
    }

    /// Gives up every field `manager` applied to the object at `key`: an apply of nothing but
    /// its identity (server-side apply removes what only that manager had set).
    pub(super) async fn release_derived<K>(&self, manager: &str, key: &Key) -> Option<String>
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), &key.namespace);
        let doc = json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "metadata": {"name": key.name, "namespace": key.namespace},
        });
        let params = PatchParams::apply(manager).force();
        match api.patch(&key.name, &params, &Patch::Apply(&doc)).await {
            Ok(_) => None,
            Err(e) => Some(format!("releasing {} {key}: {e}", K::kind(&()))),
        }
    }

    pub(super) async fn publish_one<K>(&self, obj: &K, type_: EventType, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let e = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Converge".into(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&e, &obj.object_ref(&())).await {
            tracing::debug!(error = %err, "event not published");
        }
    }

    /// The ahead-of-expiry e-mail, when the site configured SMTP (failures are logged; the
    /// condition and the Event carry the notice anyway).
    async fn mail_notice(&self, key: &Key, to: &[String], message: &str) {
        let Some(smtp) = &self.config.guests.smtp else {
            return;
        };
        if to.is_empty() {
            tracing::warn!(guest = %key, "expiry notice: nobody to mail (no e-mail for the host or the admin group's leaders)");
            return;
        }
        let subject = format!("Guest {key} expires soon");
        let body = format!(
            "{message}\n\nYou receive this because you sponsor this guest (or lead its admin group).\n"
        );
        let sent = match crate::notify::Mailer::new(smtp, &self.config.base_dir) {
            Ok(m) => m.send(to, &subject, &body).await,
            Err(e) => Err(e),
        };
        let outcome = if sent.is_ok() { "ok" } else { "error" };
        self.metrics
            .notices
            .get_or_create(&labels([("outcome", outcome)]))
            .inc();
        if let Err(e) = sent {
            tracing::warn!(guest = %key, error = %e, "the expiry notice could not be mailed");
        }
    }
}
