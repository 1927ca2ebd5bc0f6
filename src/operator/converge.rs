//! The converger: one pass at a time over the whole declared site, shared by every reconcile
//! that asks while it runs. A pass is the pipeline of `roster apply` — bulk observe, plan,
//! apply — followed by status (only where it changed), Events and finalizers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;

mod imports;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::status;
use crate::api::{
    Account, AccountStatus, Condition, DeletionPolicy, FINALIZER, Guest, GuestStatus, Lifecycle,
    Person, PersonStatus, Phase, Project, ProjectStatus,
};
use crate::config::Config;
use crate::ldap::{Directory, Observed};
use crate::plan::{Cond, Kind, ObjectStatus, Plan, Policy, Target, group_name, plan};
use crate::site::{Key, Site};
use crate::telemetry::Metrics;

/// The reflector caches of the three kinds.
pub struct Stores {
    pub accounts: Store<Account>,
    pub projects: Store<Project>,
    pub people: Store<Person>,
    pub guests: Store<Guest>,
    pub imports: Store<crate::api::ImportSource>,
}

/// What a pass found for one object.
#[derive(Clone, Debug, Default)]
pub struct ObjectResult {
    /// A backend write for it failed (retried with backoff).
    pub failed: Option<String>,
    /// When its next lifecycle transition is due.
    pub next_transition: Option<jiff::Timestamp>,
}

/// The result of one pass.
#[derive(Clone, Debug, Default)]
pub struct PassOutcome {
    /// The pass could not run at all (directory unreachable …).
    pub error: Option<String>,
    pub objects: BTreeMap<(Kind, Key), ObjectResult>,
    pub next_wakeup: Option<jiff::Timestamp>,
}

type Waiter = oneshot::Sender<Arc<PassOutcome>>;

/// The handle reconciles use.
pub struct Converger {
    pub client: Client,
    pub clock: Clock,
    tx: mpsc::UnboundedSender<Waiter>,
}

/// How long requests are gathered into one pass.
const GATHER: Duration = Duration::from_millis(50);

impl Converger {
    pub fn start(
        config: Config,
        client: Client,
        stores: Stores,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        resync: Duration,
        clock: Clock,
    ) -> Converger {
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = Worker {
            config,
            client: client.clone(),
            stores,
            recorder,
            metrics,
            dir: None,
            seen: None,
            clock: clock.clone(),
        };
        tokio::spawn(worker.run(rx, resync));
        Converger { client, tx, clock }
    }

    /// Waits for the next pass (one that starts after this call) and returns its outcome.
    pub async fn request(&self) -> Arc<PassOutcome> {
        let (tx, rx) = oneshot::channel();
        let stopped = || {
            Arc::new(PassOutcome {
                error: Some("the converger stopped".into()),
                ..Default::default()
            })
        };
        if self.tx.send(tx).is_err() {
            return stopped();
        }
        rx.await.unwrap_or_else(|_| stopped())
    }
}

struct Worker {
    config: Config,
    client: Client,
    stores: Stores,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    dir: Option<Directory>,
    /// The directory as the last pass left it: what changes behind Roster's back is told from it.
    /// What the last finished pass left in the directory, as [`fingerprints`].
    seen: Option<Fingerprints>,
    clock: Clock,
}

/// Waits until a reflector cache holds its first complete listing. The store's readiness
/// signal wakes only one waiter (the controller's own runner also waits on it), so poll it.
async fn ready<K>(store: &Store<K>)
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready()).await {
            Ok(_) => return,
            Err(_) => continue,
        }
    }
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Waiter>, resync: Duration) {
        // Never plan from half-filled caches: memberships would flap.
        ready(&self.stores.accounts).await;
        ready(&self.stores.projects).await;
        ready(&self.stores.people).await;
        tracing::debug!("caches ready; the converger runs");
        let mut resync_at = tokio::time::Instant::now() + resync;
        let mut wake_at: Option<tokio::time::Instant> = None;
        loop {
            let mut waiters = vec![];
            let trigger = tokio::select! {
                w = rx.recv() => match w {
                    Some(w) => { waiters.push(w); "change" }
                    None => return,
                },
                _ = tokio::time::sleep_until(resync_at) => "resync",
                _ = tokio::time::sleep_until(wake_at.unwrap_or(resync_at)), if wake_at.is_some() => "timer",
            };
            tokio::time::sleep(GATHER).await;
            while let Ok(w) = rx.try_recv() {
                waiters.push(w);
            }
            let started = std::time::Instant::now();
            tracing::debug!(trigger, waiters = waiters.len(), "pass starts");
            let outcome = Arc::new(self.pass(trigger).await);
            tracing::debug!(trigger, error = ?outcome.error, took = ?started.elapsed(), "pass done");
            self.metrics.inc(
                "roster_passes_total",
                "Convergence passes by trigger.",
                vec![("trigger", trigger.into())],
                1.0,
            );
            self.metrics.inc(
                "roster_pass_duration_seconds_sum",
                "Time spent in convergence passes.",
                vec![],
                started.elapsed().as_secs_f64(),
            );
            if trigger == "resync" {
                resync_at = tokio::time::Instant::now() + resync;
            }
            wake_at = outcome
                .next_wakeup
                .map(|t| tokio::time::Instant::now() + self.clock.until(t));
            for w in waiters {
                let _ = w.send(outcome.clone());
            }
        }
    }

    async fn pass(&mut self, trigger: &str) -> PassOutcome {
        let now = self.clock.now();
        let accounts = self.stores.accounts.state();
        let projects = self.stores.projects.state();
        let people = self.stores.people.state();
        let guests = self.stores.guests.state();
        let guest_keys: std::collections::BTreeSet<Key> =
            guests.iter().map(|g| Key::of(g.as_ref())).collect();
        // The Guest a Person or Account was derived from (its label), if that Guest exists.
        // (An object an import took over from a guest is the import's now.)
        let derived = |m: &kube::api::ObjectMeta| -> Option<bool> {
            if m.annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(crate::api::SOURCE_UID_ANNOTATION))
            {
                return None;
            }
            let name = m.labels.as_ref()?.get(crate::guest::GUEST_LABEL)?;
            let ns = m.namespace.clone().unwrap_or_default();
            Some(guest_keys.contains(&Key::new(ns, name)))
        };
        let mut site = Site::default();
        let mut removed = BTreeMap::new();
        let mut purge_after = BTreeMap::new();
        let mut removed_projects = BTreeMap::new();
        let mut deactivate_after = BTreeMap::new();
        let mut deleting: Vec<(Kind, Key)> = vec![];
        let ours =
            |m: &kube::api::ObjectMeta| m.finalizers.iter().flatten().any(|f| f == FINALIZER);
        for a in &accounts {
            let key = Key::of(a.as_ref());
            if a.meta().deletion_timestamp.is_some() {
                if ours(a.meta()) {
                    removed.insert(key.clone(), a.spec.deletion_policy);
                    if let Some(d) = a
                        .spec
                        .purge_after
                        .as_deref()
                        .and_then(|v| crate::api::parse_duration(v).ok())
                    {
                        purge_after.insert(key.clone(), d);
                    }
                    deleting.push((Kind::Account, key));
                }
            } else if a.annotations().contains_key(crate::api::GONE_AT_ANNOTATION) {
                // An imported record gone from its source: removed with the source's grace.
                removed.insert(key.clone(), DeletionPolicy::Deactivate);
                let after = |k: &str| {
                    a.annotations()
                        .get(k)
                        .and_then(|v| crate::api::parse_duration(v).ok())
                };
                if let Some(d) = after(crate::api::PURGE_AFTER_ANNOTATION) {
                    purge_after.insert(key.clone(), d);
                }
                if let Some(d) = after(crate::api::DEACTIVATE_AFTER_ANNOTATION) {
                    deactivate_after.insert(key, d);
                }
            } else if let Some(guest_exists) = derived(a.meta()) {
                // A guest's account is planned from the Guest; once the Guest is gone (its
                // dependants about to be collected) it counts as removed, never as declared.
                if !guest_exists {
                    removed.insert(key.clone(), DeletionPolicy::Deactivate);
                    if let Some(d) = a
                        .spec
                        .purge_after
                        .as_deref()
                        .and_then(|v| crate::api::parse_duration(v).ok())
                    {
                        purge_after.insert(key, d);
                    }
                }
            } else {
                site.accounts.insert(key, (**a).clone());
            }
        }
        for p in &projects {
            let key = Key::of(p.as_ref());
            if p.meta().deletion_timestamp.is_some() {
                if ours(p.meta()) {
                    removed_projects.insert(key.clone(), p.spec.deletion_policy);
                    deleting.push((Kind::Project, key));
                }
            } else {
                site.projects.insert(key, (**p).clone());
            }
        }
        for p in &people {
            let key = Key::of(p.as_ref());
            if p.meta().deletion_timestamp.is_some() {
                if ours(p.meta()) {
                    deleting.push((Kind::Person, key));
                }
            } else if derived(p.meta()).is_none() {
                site.people.insert(key, (**p).clone());
            }
        }

        // Guests stand for Persons and Accounts: expanded here, written back as objects below.
        let mut guest_map = BTreeMap::new();
        let mut guest_deleting = std::collections::BTreeSet::new();
        let mut known = BTreeMap::new();
        for g in &guests {
            let key = Key::of(g.as_ref());
            if g.meta().deletion_timestamp.is_some() {
                if !ours(g.meta()) {
                    continue;
                }
                guest_deleting.insert(key.clone());
                deleting.push((Kind::Guest, key.clone()));
            }
            if let Some(st) = g.status.as_ref().filter(|s| s.account.is_some()) {
                let accepted = st
                    .accepted_valid_until
                    .as_deref()
                    .and_then(|v| crate::api::parse_valid_until(v).ok());
                known.insert(key.clone(), accepted);
            }
            guest_map.insert(key, (**g).clone());
        }
        let mut expansion = crate::guest::expand(
            &guest_map,
            &site,
            &self.config,
            now,
            &known,
            &guest_deleting,
        );
        // A guest whose person an import brought is superseded; its account is the import's.
        let imported: std::collections::BTreeSet<(String, String)> = accounts
            .iter()
            .filter(|a| {
                a.annotations()
                    .contains_key(crate::api::SOURCE_UID_ANNOTATION)
            })
            .map(|a| (a.namespace().unwrap_or_default(), a.spec.username.clone()))
            .collect();
        expansion.supersede(&guest_map, &imported);
        expansion.merge_into(&mut site, &mut removed, &mut purge_after);
        site.guests = guest_map.clone();
        // Only a pass that finishes says what it left in the directory.
        let seen = self.seen.take();
        let observed = match self.observe().await {
            Ok(o) => o,
            Err(e) => return self.unavailable(e).await,
        };
        let config = self.config.clone();
        // Imports that are due run now (never two at once: the pass is sequential); what
        // they write is planned by the passes their writes trigger.
        let imports = self.stores.imports.state();
        for src in imports
            .iter()
            .filter(|s| s.meta().deletion_timestamp.is_some())
        {
            // Deleting an ImportSource never cascades: its people stay as they are.
            let key = Key::of(src.as_ref());
            let _ =
                release::<crate::api::ImportSource>(&self.client, &self.stores.imports, &key).await;
        }
        let import_wake = self
            .run_imports(&imports, &accounts, &people, &site, &observed, now)
            .await;
        for s in &imports {
            site.imports.insert(
                Key::of(s.as_ref()),
                ((**s).clone(), std::path::PathBuf::new()),
            );
        }
        let policy = Policy {
            removed,
            purge_after,
            removed_projects,
            deactivate_after,
            ..Policy::new(&config)
        };
        let first = plan(&site, &observed, now, &policy);
        let dir = self.dir.as_mut().expect("connected by observe");
        let report = dir.apply(&config, &observed, &first.ops).await;
        let mut failed: BTreeMap<Target, String> = BTreeMap::new();
        for (i, m) in report.failed.iter().chain(&report.lost_races) {
            let op = &first.ops[*i];
            failed
                .entry(op.target().clone())
                .or_insert_with(|| format!("{}: {m}", op.dn()));
        }
        self.count_operations(&first, &report);
        if report
            .failed
            .iter()
            .any(|(_, m)| m.contains("cannot reach the directory"))
        {
            self.dir = None;
        }
        let changed = seen
            .as_ref()
            .filter(|_| !report.done.is_empty())
            .map(|seen| changed_behind(seen, &observed));
        let after = if report.done.is_empty() {
            observed
        } else {
            match self.observe().await {
                Ok(o) => o,
                Err(e) => return self.unavailable(e).await,
            }
        };
        let last = plan(&site, &after, now, &policy);
        // Slurm second: associations only for accounts whose LDAP entry now exists.
        let mut after = after;
        let slurm = self.slurm(&config, &site, &mut after, &last, now).await;
        let gold = self.gold(&config, &site, &after, &last, now).await;
        // Drift: the directory changed behind Roster's back. Since the last pass: writes to
        // entries that differ from how it left them. On the first pass (nothing to compare
        // with): writes for objects whose status already said converged for their generation,
        // unless a lifecycle transition came due (expiry, purge).
        let converged = converged_targets(&accounts, &projects, &people);
        let due: std::collections::BTreeSet<&Target> = first
            .objects
            .iter()
            .filter(|o| {
                matches!(o.phase, Phase::Deactivated | Phase::Purged)
                    && converged.get(&o.target).is_some_and(|r| *r != o.phase)
            })
            .map(|o| &o.target)
            .collect();
        let mut repaired: BTreeMap<Target, Vec<String>> = BTreeMap::new();
        for (i, _) in &report.done {
            let op = &first.ops[*i];
            let drift = if let Some(changed) = &changed {
                changed.contains(&op.dn().to_ascii_lowercase())
            } else {
                converged.contains_key(op.target()) && !due.contains(op.target())
            };
            if drift {
                repaired
                    .entry(op.target().clone())
                    .or_default()
                    .push(op.describe());
            }
        }
        let drift: usize = repaired.values().map(Vec::len).sum();
        if drift > 0 {
            let what: Vec<&String> = repaired.values().flatten().collect();
            tracing::warn!(
                writes = drift,
                trigger,
                ?what,
                "repaired drift in the directory"
            );
            self.metrics.inc(
                "roster_drift_repairs_total",
                "Directory writes for objects that were already converged (drift).",
                vec![("backend", "ldap".into())],
                drift as f64,
            );
        }
        self.events(&first, &report, &accounts, &projects, &people)
            .await;
        let mut outcome = PassOutcome {
            next_wakeup: last.next_wakeup,
            ..Default::default()
        };
        let ctx = StatusCtx {
            last: &last,
            failed: &failed,
            repaired: &repaired,
            slurm: &slurm,
            gold: &gold,
            now,
        };
        for a in &accounts {
            let key = Key::of(a.as_ref());
            if a.meta().deletion_timestamp.is_some() {
                continue;
            }
            let s = ctx.object(Kind::Account, &key);
            let entry =
                s.dn.as_ref()
                    .and_then(|dn| after.accounts.get(&a.spec.username).filter(|e| &e.dn == dn));
            let existing = a
                .status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default();
            let st = AccountStatus {
                observed_generation: a.metadata.generation,
                phase: Some(s.phase),
                conditions: ctx.conditions(&s, &existing, a.metadata.generation),
                uid_number: s.uid_number.map(i64::from),
                gid_number: s.gid_number.map(i64::from),
                dn: s.dn.clone(),
                projects: s.projects.clone(),
                lifecycle: status::lifecycle(&s, entry),
            };
            self.write_status(a.as_ref(), a.status.as_ref(), &st).await;
            outcome.objects.insert((Kind::Account, key), ctx.result(&s));
        }
        for p in &projects {
            let key = Key::of(p.as_ref());
            if p.meta().deletion_timestamp.is_some() {
                continue;
            }
            let s = ctx.object(Kind::Project, &key);
            let existing = p
                .status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default();
            let st = ProjectStatus {
                observed_generation: p.metadata.generation,
                phase: Some(s.phase),
                conditions: ctx.conditions(&s, &existing, p.metadata.generation),
                group_name: Some(group_name(p)),
                gid_number: s.gid_number.map(i64::from),
                member_count: Some(s.members as i32),
                lifecycle: Lifecycle::default(),
            };
            self.write_status(p.as_ref(), p.status.as_ref(), &st).await;
            outcome.objects.insert((Kind::Project, key), ctx.result(&s));
        }
        // Person → its Accounts' names (sorted), built once.
        let mut accounts_of: BTreeMap<Key, Vec<String>> = BTreeMap::new();
        for (k, a) in &site.accounts {
            accounts_of
                .entry(Key::new(&k.namespace, &a.spec.person))
                .or_default()
                .push(k.name.clone());
        }
        for h in &people {
            let key = Key::of(h.as_ref());
            if h.meta().deletion_timestamp.is_some() {
                continue;
            }
            let s = ctx.object(Kind::Person, &key);
            let existing = h
                .status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default();
            let names = accounts_of.remove(&key).unwrap_or_default();
            let st = PersonStatus {
                observed_generation: h.metadata.generation,
                phase: Some(s.phase),
                conditions: ctx.conditions(&s, &existing, h.metadata.generation),
                account_count: Some(names.len() as i32),
                accounts: names,
                lifecycle: Lifecycle::default(),
            };
            self.write_status(h.as_ref(), h.status.as_ref(), &st).await;
            outcome.objects.insert((Kind::Person, key), ctx.result(&s));
        }
        for (key, result) in self
            .write_guests(&guests, &accounts, &people, &expansion, &last, &after, now)
            .await
        {
            outcome.objects.insert((Kind::Guest, key), result);
        }
        outcome.next_wakeup = [outcome.next_wakeup, expansion.next_wakeup(), import_wake]
            .into_iter()
            .flatten()
            .min();
        // Deletions whose directory work is done release their finalizer.
        let mut guarded = 0usize;
        // Accounts by key, built at the first held deletion (a mass deletion the guard holds
        // would otherwise search every Account for each of them).
        let mut accounts_by_key: Option<BTreeMap<Key, &Arc<Account>>> = None;
        for (kind, key) in deleting {
            // A Guest lets go once its account is deactivated (or was never created).
            if kind == Kind::Guest {
                let username = guest_map
                    .get(&key)
                    .map(|g: &Guest| g.spec.account.username.clone())
                    .unwrap_or_default();
                let superseded = expansion
                    .outcomes
                    .get(&key)
                    .is_some_and(|o| o.conditions.iter().any(|c| c.type_ == "Superseded"));
                let done = superseded
                    || after
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
            if let Some(held) = last.status_of(kind, &key).filter(|s| s.is_guarded()) {
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
            if let Some(m) = failed.get(&target) {
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
        self.metrics.set(
            "roster_guard_held",
            "Removal-caused transitions the mass-deactivation guard is holding.",
            vec![],
            last.objects
                .iter()
                .filter(|o| o.is_guarded())
                .count()
                .max(guarded) as f64,
        );
        self.count_phases(&last);
        self.seen = Some(fingerprints(&after));
        outcome
    }

    /// Converges Slurm accounting after the directory; returns `SlurmSynced` per object.
    async fn slurm(
        &mut self,
        config: &Config,
        site: &Site,
        after: &mut Observed,
        last: &Plan,
        now: jiff::Timestamp,
    ) -> BTreeMap<Target, Cond> {
        let mut conds = BTreeMap::new();
        if config.slurm.is_none() {
            return conds;
        }
        let ok = |_: &Target| Cond {
            type_: "SlurmSynced",
            status: true,
            reason: "InSync".into(),
            message: String::new(),
        };
        let targets: Vec<Target> = site
            .accounts
            .keys()
            .map(|k| Target {
                kind: Kind::Account,
                key: k.clone(),
            })
            .chain(site.projects.keys().map(|k| Target {
                kind: Kind::Project,
                key: k.clone(),
            }))
            .collect();
        let converged = match self.dir.as_mut() {
            Some(dir) => crate::slurm::converge(config, dir, site, after, last, now, false).await,
            None => Err(crate::slurm::SlurmError::Record {
                dn: config.ldap.base_dn.clone(),
                message: "the directory connection was lost".into(),
            }),
        };
        let report = match converged {
            Ok(r) => {
                // What the directory now holds, so the next pass does not take it for drift.
                for (dn, cluster) in &r.recorded {
                    if let Some(g) = after.groups.values_mut().find(|g| &g.dn == dn) {
                        g.attrs
                            .entry("rosterslurmaccount".into())
                            .or_default()
                            .push(cluster.clone());
                    }
                }
                r
            }
            Err(e) => {
                tracing::warn!(error = %e, "Slurm accounting is unavailable");
                self.metrics.inc(
                    "roster_backend_operations_total",
                    "Backend operations by backend, operation and outcome.",
                    vec![
                        ("backend", "slurm".into()),
                        ("operation", "observe".into()),
                        ("outcome", "error".into()),
                    ],
                    1.0,
                );
                for t in targets {
                    conds.insert(
                        t,
                        Cond {
                            type_: "SlurmSynced",
                            status: false,
                            reason: "SlurmUnavailable".into(),
                            message: e.to_string(),
                        },
                    );
                }
                return conds;
            }
        };
        for t in &targets {
            conds.insert(t.clone(), ok(t));
        }
        let by_user: BTreeMap<&str, Target> = site
            .accounts
            .iter()
            .map(|(k, a)| {
                (
                    a.spec.username.as_str(),
                    Target {
                        kind: Kind::Account,
                        key: k.clone(),
                    },
                )
            })
            .collect();
        let by_group: BTreeMap<String, Target> = site
            .projects
            .iter()
            .map(|(k, p)| {
                (
                    group_name(p),
                    Target {
                        kind: Kind::Project,
                        key: k.clone(),
                    },
                )
            })
            .collect();
        for w in &report.waiting {
            conds.insert(
                Target {
                    kind: w.kind,
                    key: w.key.clone(),
                },
                Cond {
                    type_: "SlurmSynced",
                    status: false,
                    reason: w.reason.into(),
                    message: w.message.clone(),
                },
            );
        }
        let mut events: Vec<(Target, EventType, &'static str, String)> = vec![];
        for (call, outcome) in &report.calls {
            let label = |o: &str| {
                vec![
                    ("backend", "slurm".to_string()),
                    ("operation", call.args[..2].join(" ")),
                    ("outcome", o.to_string()),
                ]
            };
            match outcome {
                Some(crate::slurm::apply::Outcome::Failed { reason, message }) => {
                    self.metrics.inc(
                        "roster_backend_operations_total",
                        "Backend operations by backend, operation and outcome.",
                        label("error"),
                        1.0,
                    );
                    let affected = call
                        .users
                        .iter()
                        .filter_map(|u| by_user.get(u.as_str()).cloned())
                        .chain(
                            call.accounts
                                .iter()
                                .filter_map(|a| by_group.get(a).cloned()),
                        );
                    for t in affected {
                        let note = format!("sacctmgr {}: {message}", call.what);
                        events.push((
                            t.clone(),
                            EventType::Warning,
                            "SlurmWriteFailed",
                            note.clone(),
                        ));
                        conds.insert(
                            t,
                            Cond {
                                type_: "SlurmSynced",
                                status: false,
                                reason: (*reason).into(),
                                message: note,
                            },
                        );
                    }
                }
                Some(crate::slurm::apply::Outcome::Done) => {
                    self.metrics.inc(
                        "roster_backend_operations_total",
                        "Backend operations by backend, operation and outcome.",
                        label("ok"),
                        1.0,
                    );
                    // One Event per call, on the Project the call is about.
                    let project = call
                        .args
                        .iter()
                        .find_map(|a| {
                            a.strip_prefix("account=").or_else(|| {
                                a.strip_prefix("name=")
                                    .filter(|_| call.args.get(1).is_some_and(|k| k == "account"))
                            })
                        })
                        .and_then(|a| by_group.get(a.split(',').next().unwrap_or(a)).cloned());
                    if let Some(t) = project {
                        events.push((
                            t,
                            EventType::Normal,
                            "SlurmUpdated",
                            format!("sacctmgr: {}", call.what),
                        ));
                    }
                }
                _ => self.metrics.inc(
                    "roster_backend_operations_total",
                    "Backend operations by backend, operation and outcome.",
                    label("ok"),
                    1.0,
                ),
            }
        }
        self.publish(site, events).await;
        self.metrics.inc(
            "roster_sacctmgr_invocations_total",
            "sacctmgr processes started.",
            vec![],
            report.invocations as f64,
        );
        conds
    }

    /// The guests' derived Persons and Accounts (server-side apply, owned by the Guest, written
    /// only when they differ), the Guests' status, their Events and the expiry notice.
    #[allow(clippy::too_many_arguments)]
    async fn write_guests(
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
                    .and_then(|v| v.parse::<jiff::Timestamp>().ok());
                let notice = crate::api::parse_duration(&self.config.guests.notice)
                    .map(|d| jiff::SignedDuration::from_secs(d.as_secs() as i64))
                    .unwrap_or_default();
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
    async fn apply_derived<K>(
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
    async fn release_derived<K>(&self, manager: &str, key: &Key) -> Option<String>
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

    async fn publish_one<K>(&self, obj: &K, type_: EventType, reason: &str, note: String)
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
        let sent = match crate::notify::Mailer::new(smtp) {
            Ok(m) => m.send(to, &subject, &body).await,
            Err(e) => Err(e),
        };
        let outcome = if sent.is_ok() { "ok" } else { "error" };
        self.metrics.inc(
            "roster_notices_total",
            "Expiry notices mailed, by outcome.",
            vec![("outcome", outcome.into())],
            1.0,
        );
        if let Err(e) = sent {
            tracing::warn!(guest = %key, error = %e, "the expiry notice could not be mailed");
        }
    }

    /// Events about declared objects.
    async fn publish(&self, site: &Site, events: Vec<(Target, EventType, &'static str, String)>) {
        for (t, type_, reason, note) in events {
            let reference = match t.kind {
                Kind::Account => site.accounts.get(&t.key).map(|o| o.object_ref(&())),
                Kind::Project => site.projects.get(&t.key).map(|o| o.object_ref(&())),
                Kind::Person => site.people.get(&t.key).map(|o| o.object_ref(&())),
                Kind::Guest => site.guests.get(&t.key).map(|o| o.object_ref(&())),
                Kind::ImportSource => site.imports.get(&t.key).map(|(o, _)| o.object_ref(&())),
            };
            if let Some(r) = reference {
                let e = Event {
                    type_,
                    reason: reason.into(),
                    note: Some(note),
                    action: "Converge".into(),
                    secondary: None,
                };
                if let Err(err) = self.recorder.publish(&e, &r).await {
                    tracing::debug!(error = %err, "event not published");
                }
            }
        }
    }

    /// Gold last: `GoldSynced` per Account and Project, Events and metrics. An unreachable
    /// Gold fails only Gold's conditions; the directory and Slurm are done by then.
    async fn gold(
        &mut self,
        config: &Config,
        site: &Site,
        after: &Observed,
        last: &Plan,
        now: jiff::Timestamp,
    ) -> BTreeMap<Target, Cond> {
        let mut conds = BTreeMap::new();
        if config.gold.is_none() {
            return conds;
        }
        let targets = site
            .accounts
            .keys()
            .map(|k| Target {
                kind: Kind::Account,
                key: k.clone(),
            })
            .chain(site.projects.keys().map(|k| Target {
                kind: Kind::Project,
                key: k.clone(),
            }));
        let cond = |status: bool, reason: &str, message: String| Cond {
            type_: "GoldSynced",
            status,
            reason: reason.into(),
            message,
        };
        let report = match crate::gold::converge(config, site, after, last, now, false).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "Gold is unavailable");
                self.metrics.inc(
                    "roster_backend_operations_total",
                    "Backend operations by backend, operation and outcome.",
                    vec![
                        ("backend", "gold".into()),
                        ("operation", "observe".into()),
                        ("outcome", "error".into()),
                    ],
                    1.0,
                );
                for t in targets {
                    conds.insert(t, cond(false, "GoldUnavailable", e.to_string()));
                }
                return conds;
            }
        };
        for t in targets {
            conds.insert(t, cond(true, "InSync", String::new()));
        }
        let mut events = vec![];
        for step in &report.steps {
            let operation = step.what.split(' ').take(2).collect::<Vec<_>>().join(" ");
            let outcome = if step.error.is_some() { "error" } else { "ok" };
            self.metrics.inc(
                "roster_backend_operations_total",
                "Backend operations by backend, operation and outcome.",
                vec![
                    ("backend", "gold".into()),
                    ("operation", operation),
                    ("outcome", outcome.into()),
                ],
                1.0,
            );
            let Some((kind, key)) = &step.concerns else {
                continue;
            };
            let t = Target {
                kind: *kind,
                key: key.clone(),
            };
            match &step.error {
                Some(e) => {
                    let note = format!("{}: {e}", step.what);
                    events.push((
                        t.clone(),
                        EventType::Warning,
                        "GoldWriteFailed",
                        note.clone(),
                    ));
                    conds.insert(t, cond(false, "GoldRequestFailed", note));
                }
                None => events.push((t, EventType::Normal, "GoldUpdated", step.what.clone())),
            }
        }
        self.metrics.inc(
            "roster_gold_requests_total",
            "Requests sent to Gold (queries included).",
            vec![],
            report.requests as f64,
        );
        self.publish(site, events).await;
        conds
    }

    /// Connects when needed and reads the directory in bulk.
    async fn observe(&mut self) -> Result<Observed, String> {
        if self.dir.is_none() {
            let mut dir = Directory::connect(&self.config)
                .await
                .map_err(|e| e.to_string())?;
            dir.check_schema().await.map_err(|e| e.to_string())?;
            self.dir = Some(dir);
        }
        let dir = self.dir.as_mut().expect("connected");
        match dir
            .observe(&self.config.ldap.base_dn, self.config.ldap.page_size)
            .await
        {
            Ok(o) => Ok(o),
            Err(e) => {
                self.dir = None;
                Err(e.to_string())
            }
        }
    }

    async fn unavailable(&self, e: String) -> PassOutcome {
        tracing::warn!(error = %e, "the directory is unavailable; nothing was written");
        self.metrics.inc(
            "roster_backend_operations_total",
            "Backend operations by backend, operation and outcome.",
            vec![
                ("backend", "ldap".into()),
                ("operation", "observe".into()),
                ("outcome", "error".into()),
            ],
            1.0,
        );
        self.say_unavailable(&e).await;
        PassOutcome {
            error: Some(e),
            ..Default::default()
        }
    }

    /// The directory cannot be read: every declared object's `LdapSynced` and `Ready` say so
    /// (the rest of its status stays as the last pass left it), until a pass gets through.
    async fn say_unavailable(&self, e: &str) {
        let now = self.clock.now();
        let conds = [
            Cond {
                type_: "LdapSynced",
                status: false,
                reason: "DirectoryUnavailable".into(),
                message: e.to_string(),
            },
            Cond {
                type_: "Ready",
                status: false,
                reason: "DirectoryUnavailable".into(),
                message: e.to_string(),
            },
        ];
        let merged = |existing: &[Condition], generation: Option<i64>| {
            let mut out: Vec<Condition> = existing
                .iter()
                .filter(|c| c.type_ != "LdapSynced" && c.type_ != "Ready")
                .cloned()
                .collect();
            out.extend(status::conditions(&conds, existing, generation, now));
            out
        };
        macro_rules! mark {
            ($store:ident) => {
                for o in self.stores.$store.state() {
                    if o.meta().deletion_timestamp.is_some() {
                        continue;
                    }
                    let mut st = o.status.clone().unwrap_or_default();
                    st.conditions = merged(&st.conditions, o.metadata.generation);
                    self.write_status(o.as_ref(), o.status.as_ref(), &st).await;
                }
            };
        }
        mark!(accounts);
        mark!(projects);
        mark!(people);
    }

    fn count_operations(&self, first: &Plan, report: &crate::ldap::ApplyReport) {
        let help = "Backend operations by backend, operation and outcome.";
        let label = |op: &crate::plan::Op, outcome: &str| {
            let operation = op.verb();
            vec![
                ("backend", "ldap".to_string()),
                ("operation", operation.to_string()),
                ("outcome", outcome.to_string()),
            ]
        };
        for (i, _) in &report.done {
            self.metrics.inc(
                "roster_backend_operations_total",
                help,
                label(&first.ops[*i], "ok"),
                1.0,
            );
        }
        for (i, _) in report.failed.iter().chain(&report.lost_races) {
            self.metrics.inc(
                "roster_backend_operations_total",
                help,
                label(&first.ops[*i], "error"),
                1.0,
            );
        }
        self.metrics.inc(
            "roster_counter_retries_total",
            "uid/gid counter updates retried after losing to another writer.",
            vec![],
            report.counter_retries as f64,
        );
    }

    fn count_phases(&self, last: &Plan) {
        self.metrics.clear("roster_objects");
        let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
        for o in &last.objects {
            *counts
                .entry((o.target.kind.to_string(), format!("{:?}", o.phase)))
                .or_default() += 1;
        }
        for ((kind, phase), n) in counts {
            self.metrics.set(
                "roster_objects",
                "Declared objects by kind and phase.",
                vec![("kind", kind), ("phase", phase)],
                n as f64,
            );
        }
    }

    /// Server-side applies the status, unless it already says exactly this.
    async fn write_status<K, S>(&self, obj: &K, current: Option<&S>, desired: &S)
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        S: serde::Serialize,
    {
        let desired = serde_json::to_value(desired).expect("status serializes");
        let current = current.map(|c| serde_json::to_value(c).expect("status serializes"));
        if status::same(current.as_ref(), &desired) {
            return;
        }
        let kind = K::kind(&()).to_string();
        let api: Api<K> =
            Api::namespaced(self.client.clone(), &obj.namespace().unwrap_or_default());
        let doc = json!({
            "apiVersion": K::api_version(&()),
            "kind": kind,
            "status": status::applied(&desired),
        });
        let params = PatchParams::apply("roster").force();
        match api
            .patch_status(&obj.name_any(), &params, &Patch::Apply(&doc))
            .await
        {
            Ok(_) => self.metrics.inc(
                "roster_status_writes_total",
                "Status writes by kind.",
                vec![("kind", kind)],
                1.0,
            ),
            Err(e) => tracing::warn!(object = %obj.name_any(), error = %e, "status write failed"),
        }
    }

    /// Events for every directory change and failure, on the object they concern.
    async fn events(
        &self,
        first: &Plan,
        report: &crate::ldap::ApplyReport,
        accounts: &[Arc<Account>],
        projects: &[Arc<Project>],
        people: &[Arc<Person>],
    ) {
        // Each object's reference and current conditions, looked up once per pass.
        let mut index: BTreeMap<Target, (ObjectReference, Vec<Condition>)> = BTreeMap::new();
        for a in accounts {
            let conds = a
                .status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default();
            index.insert(
                Target {
                    kind: Kind::Account,
                    key: Key::of(a.as_ref()),
                },
                (a.object_ref(&()), conds),
            );
        }
        for p in projects {
            let conds = p
                .status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default();
            index.insert(
                Target {
                    kind: Kind::Project,
                    key: Key::of(p.as_ref()),
                },
                (p.object_ref(&()), conds),
            );
        }
        for h in people {
            let conds = h
                .status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default();
            index.insert(
                Target {
                    kind: Kind::Person,
                    key: Key::of(h.as_ref()),
                },
                (h.object_ref(&()), conds),
            );
        }
        let reference = |t: &Target| index.get(t).map(|(r, _)| r.clone());
        let mut events: Vec<(ObjectReference, Event)> = vec![];
        for (i, _) in &report.done {
            let op = &first.ops[*i];
            let reason = match op {
                crate::plan::Op::Add { .. } => "LdapEntryCreated",
                crate::plan::Op::Modify { .. } => "LdapEntryUpdated",
                crate::plan::Op::Delete { .. } => "LdapEntryPurged",
            };
            if let Some(r) = reference(op.target()) {
                events.push((
                    r,
                    Event {
                        type_: EventType::Normal,
                        reason: reason.into(),
                        note: Some(op.describe()),
                        action: "Converge".into(),
                        secondary: None,
                    },
                ));
            }
        }
        for (i, m) in report.failed.iter().chain(&report.lost_races) {
            let op = &first.ops[*i];
            if let Some(r) = reference(op.target()) {
                events.push((
                    r,
                    Event {
                        type_: EventType::Warning,
                        reason: "LdapWriteFailed".into(),
                        note: Some(format!("{}: {m}", op.dn())),
                        action: "Converge".into(),
                        secondary: None,
                    },
                ));
            }
        }
        // Newly Invalid or in Conflict: tell once, when the condition appears.
        for o in first.objects.iter().filter(|o| o.is_blocked()) {
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

/// Objects whose status says Ready for their current generation.
/// A digest of every account, group and tombstone entry, by lower-cased DN: enough to tell
/// which entries changed between two passes without keeping a copy of the directory (at 10,000
/// accounts a copy is tens of MiB held between passes).
type Fingerprints = BTreeMap<String, u64>;

fn fingerprints(o: &Observed) -> Fingerprints {
    use std::hash::{Hash, Hasher};
    o.accounts
        .values()
        .chain(o.groups.values())
        .chain(o.tombstones.values())
        .map(|e| {
            // Fixed keys: the digests of two passes of one process must be comparable.
            let mut h = std::hash::DefaultHasher::new();
            e.attrs.hash(&mut h);
            (e.dn.to_ascii_lowercase(), h.finish())
        })
        .collect()
}

/// The DNs (lower-cased) of entries that differ between what the last pass left (`seen`) and
/// what this pass found (`now`): added, removed or modified by someone else.
fn changed_behind(seen: &Fingerprints, now: &Observed) -> std::collections::BTreeSet<String> {
    let now = fingerprints(now);
    seen.keys()
        .chain(now.keys())
        .filter(|dn| seen.get(*dn) != now.get(*dn))
        .cloned()
        .collect()
}

/// Objects Ready for their current generation, with the phase their status records.
fn converged_targets(
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

/// What status building needs from a pass.
struct StatusCtx<'a> {
    last: &'a Plan,
    failed: &'a BTreeMap<Target, String>,
    repaired: &'a BTreeMap<Target, Vec<String>>,
    /// `SlurmSynced` per object, when Slurm is configured.
    slurm: &'a BTreeMap<Target, Cond>,
    /// `GoldSynced` per object, when Gold is configured.
    gold: &'a BTreeMap<Target, Cond>,
    now: jiff::Timestamp,
}

impl StatusCtx<'_> {
    fn object(&self, kind: Kind, key: &Key) -> ObjectStatus {
        self.last.status_of(kind, key).cloned().unwrap_or_else(|| {
            ObjectStatus::new(Target {
                kind,
                key: key.clone(),
            })
        })
    }

    fn conditions(
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
        status::conditions(&conds, existing, generation, self.now)
    }

    fn result(&self, s: &ObjectStatus) -> ObjectResult {
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
        ObjectResult {
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

/// Removes Roster's finalizer (only if it is still where the cache saw it).
async fn release<K>(client: &Client, store: &Store<K>, key: &Key) -> Result<(), kube::Error>
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ldap::Entry;

    fn entry(dn: &str, attrs: &[(&str, &[&str])]) -> Entry {
        Entry {
            dn: dn.into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| ((*k).into(), v.iter().map(|s| (*s).into()).collect()))
                .collect(),
        }
    }

    #[test]
    fn drift_is_every_entry_added_removed_or_changed_since_the_last_pass() {
        let mut before = Observed::default();
        for (uid, shell) in [
            ("ada", "/bin/bash"),
            ("bob", "/bin/bash"),
            ("eve", "/bin/sh"),
        ] {
            before.accounts.insert(
                uid.into(),
                entry(
                    &format!("uid={uid},ou=People,dc=x"),
                    &[("loginshell", &[shell])],
                ),
            );
        }
        before.groups.insert(
            "physics".into(),
            entry(
                "cn=physics,ou=groups,dc=x",
                &[("memberuid", &["ada", "bob"])],
            ),
        );
        let seen = fingerprints(&before);
        assert!(changed_behind(&seen, &before).is_empty());

        let mut now = before.clone();
        now.accounts.remove("eve");
        now.accounts
            .get_mut("bob")
            .unwrap()
            .attrs
            .insert("loginshell".into(), vec!["/bin/zsh".into()]);
        now.groups
            .get_mut("physics")
            .unwrap()
            .attrs
            .insert("memberuid".into(), vec!["bob".into(), "ada".into()]);
        now.tombstones
            .insert("Account:old".into(), entry("cn=Account:old,ou=t,dc=x", &[]));
        let changed: Vec<String> = changed_behind(&seen, &now).into_iter().collect();
        assert_eq!(
            changed,
            [
                "cn=account:old,ou=t,dc=x",
                "cn=physics,ou=groups,dc=x",
                "uid=bob,ou=people,dc=x",
                "uid=eve,ou=people,dc=x",
            ]
        );
    }
}
