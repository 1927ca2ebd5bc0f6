//! The operator's worker: one pass at a time over the whole declared site, shared by every
//! reconcile that asks while it runs. A pass builds the declared state from the caches
//! ([`Declared::from_stores`]), runs the due imports, hands the site to the converger (the same
//! pipeline as `roster apply`) and turns its [`PassReport`] into status (only where it
//! changed), Events, finalizers and metrics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::finalizers;
use super::follow::Following;
use super::leading::Leading;
use super::status::{self, StatusCtx};
use crate::api::{
    Account, AccountStatus, Condition, Guest, Lifecycle, Person, PersonStatus, Phase, Project,
    ProjectStatus,
};
use crate::backend::Mode;
use crate::clock::Clock;
use crate::config::Config;
use crate::converge::{self, Declared, Fingerprints, PassError, PassReport};
use crate::ldap::Directory;
use crate::plan::Observed;
use crate::plan::{Cond, Kind, Plan, Target, group_name};
use crate::site::Key;
use crate::telemetry::{Metrics, labels};

/// The caches' contents at the start of a pass.
pub(super) struct Snapshot<'s> {
    pub accounts: &'s [Arc<Account>],
    pub projects: &'s [Arc<Project>],
    pub people: &'s [Arc<Person>],
    pub guests: &'s [Arc<Guest>],
    pub imports: &'s [Arc<crate::api::ImportSource>],
}

/// The reflector caches of the five kinds.
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

/// Status writes in flight at once (like first-sight finalizers: bounded, so a burst opens a
/// few connections, not one per object).
const STATUS_WRITES: usize = 8;

/// How long requests are gathered into one pass.
const GATHER: Duration = Duration::from_millis(50);

/// When the worker passes: every `resync`, by `clock`, while `leading`.
pub(super) struct Schedule {
    pub resync: Duration,
    pub clock: Clock,
    pub leading: Leading,
}

impl Converger {
    pub(super) fn start(
        config: Arc<Config>,
        client: Client,
        stores: Stores,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        schedule: Schedule,
    ) -> Converger {
        let Schedule {
            resync,
            clock,
            leading,
        } = schedule;
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = Worker {
            config,
            client: client.clone(),
            stores,
            recorder,
            metrics,
            dir: None,
            seen: None,
            follow: None,
            follow_again: true,
            counters_written: false,
            clock: clock.clone(),
        };
        tokio::spawn(worker.run(rx, resync, leading));
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

pub(super) struct Worker {
    pub(super) config: Arc<Config>,
    pub(super) client: Client,
    pub(super) stores: Stores,
    pub(super) recorder: Recorder,
    pub(super) metrics: Arc<Metrics>,
    pub(super) dir: Option<Directory>,
    /// The directory as the last pass left it: what changes behind Roster's back is told from it.
    /// What the last finished pass left in the directory, as [`fingerprints`].
    seen: Option<Fingerprints>,
    /// The directory followed between passes (see [`super::follow`]).
    follow: Option<Following>,
    /// Whether to try following (again): at the start, and at each resync after it failed.
    follow_again: bool,
    /// An import stored a username counter in this pass.
    pub(super) counters_written: bool,
    pub(super) clock: Clock,
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
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Waiter>,
        resync: Duration,
        mut leading: Leading,
    ) {
        // Never plan from half-filled caches: memberships would flap.
        ready(&self.stores.accounts).await;
        ready(&self.stores.projects).await;
        ready(&self.stores.people).await;
        tracing::debug!("caches ready; the converger runs");
        let mut resync_at = tokio::time::Instant::now() + resync;
        let mut wake_at: Option<tokio::time::Instant> = None;
        let mut takeover = false;
        loop {
            if !leading.now() {
                // Standing by: the directory followed (its first reading made now, not at the
                // takeover), no pass. A request that raced the Lease away is answered at once.
                self.keep_following().await;
                tokio::select! {
                    alive = leading.changed() => if !alive { return },
                    w = rx.recv() => match w {
                        Some(w) => { let _ = w.send(Arc::new(PassOutcome { error: Some("this replica stands by".into()), ..Default::default() })); }
                        None => return,
                    },
                    _ = tokio::time::sleep(resync) => self.follow_again |= self.follow.is_none(),
                }
                takeover = leading.now();
                continue;
            }
            let mut waiters = vec![];
            let trigger = if std::mem::take(&mut takeover) {
                resync_at = tokio::time::Instant::now() + resync;
                "takeover"
            } else {
                tokio::select! {
                    w = rx.recv() => match w {
                        Some(w) => { waiters.push(w); "change" }
                        None => return,
                    },
                    _ = tokio::time::sleep_until(resync_at) => "resync",
                    _ = tokio::time::sleep_until(wake_at.unwrap_or(resync_at)), if wake_at.is_some() => "timer",
                    alive = leading.changed() => if alive { continue } else { return },
                }
            };
            tokio::time::sleep(GATHER).await;
            while let Ok(w) = rx.try_recv() {
                waiters.push(w);
            }
            let started = std::time::Instant::now();
            tracing::debug!(trigger, waiters = waiters.len(), "pass starts");
            let outcome = Arc::new(self.pass(trigger).await);
            tracing::debug!(trigger, error = ?outcome.error, took = ?started.elapsed(), "pass done");
            self.metrics
                .passes
                .get_or_create(&labels([("trigger", trigger)]))
                .inc();
            self.metrics
                .pass_duration
                .observe(started.elapsed().as_secs_f64());
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
        let config = self.config.clone();
        let stores = converge::Stores {
            accounts: &accounts,
            projects: &projects,
            people: &people,
            guests: &guests,
        };
        let declared = Declared::from_stores(stores, &config, now);
        // Only a pass that finishes says what it left in the directory.
        let seen = self.seen.take();
        let mut observed = match self.observe(trigger).await {
            Ok(o) => o,
            Err(e) => return self.unavailable(e).await,
        };
        // Imports that are due run now (never two at once: the pass is sequential); what
        // they write is planned by the passes their writes trigger.
        let imports = self.stores.imports.state();
        for src in imports
            .iter()
            .filter(|s| s.meta().deletion_timestamp.is_some())
        {
            // Deleting an ImportSource never cascades: its people stay as they are.
            let key = Key::of(src.as_ref());
            let _ = finalizers::release::<crate::api::ImportSource>(
                &self.client,
                &self.stores.imports,
                &key,
            )
            .await;
        }
        let import_wake = self
            .run_imports(&imports, &accounts, &people, &declared.site, &observed, now)
            .await;
        // The counters an import stored are in the observation the pass goes on with (and
        // leaves): a generated name is never generated twice.
        if std::mem::take(&mut self.counters_written)
            && let Some(dir) = self.dir.as_mut()
            && let Err(e) = dir
                .reread(
                    &mut observed,
                    &[],
                    converge::observed_counters(&config).as_deref(),
                )
                .await
        {
            self.dir = None;
            return self.unavailable(e.to_string()).await;
        }
        let dir = self.dir.as_mut().expect("connected by observe");
        let mut report = converge::run(
            &config,
            now,
            Mode::Apply,
            &declared,
            dir,
            observed,
            seen.as_ref(),
        )
        .await;
        if report
            .ldap
            .failed
            .iter()
            .any(|(_, m)| m.contains("cannot reach the directory"))
        {
            self.dir = None;
        }
        if let Some(e) = &report.error {
            let message = match e {
                PassError::Reread(m) | PassError::Counter(m) => m.clone(),
            };
            self.dir = None;
            return self.unavailable(message).await;
        }
        if config.notices.is_some()
            && let Some(dir) = self.dir.as_mut()
        {
            let notices = converge::notices::send(
                &config,
                dir,
                &declared.site,
                &mut report.directory,
                &report.last,
                now,
                Mode::Apply,
            )
            .await;
            for (outcome, count) in [("ok", notices.sent.len()), ("error", notices.failed.len())] {
                if count > 0 {
                    self.metrics
                        .notices
                        .get_or_create(&labels([("outcome", outcome)]))
                        .inc_by(count as u64);
                }
            }
            for line in notices.lines(Mode::Apply) {
                tracing::info!(notice = %line, "notice");
            }
        }
        let snapshot = Snapshot {
            accounts: &accounts,
            projects: &projects,
            people: &people,
            guests: &guests,
            imports: &imports,
        };
        let repaired = self.drift(&report, &snapshot, trigger);
        self.events(&report, &snapshot).await;
        let mut outcome = self
            .write_statuses(&report, &declared, &snapshot, &repaired, now)
            .await;
        for (key, result) in self
            .write_guests(
                &guests,
                &accounts,
                &people,
                &declared.guests,
                &report.last,
                &report.directory,
                now,
            )
            .await
        {
            outcome.objects.insert((Kind::Guest, key), result);
        }
        outcome.next_wakeup = [report.next_wakeup, import_wake]
            .into_iter()
            .flatten()
            .min();
        let guarded = self
            .finalize(&declared, &report, &accounts, &mut outcome)
            .await;
        self.metrics.guard_held.set(
            report
                .last
                .objects
                .iter()
                .filter(|o| o.is_guarded())
                .count()
                .max(guarded) as f64,
        );
        self.count_phases(&report.last);
        self.seen = Some(converge::fingerprints(&report.directory));
        if let Some(f) = self.follow.as_mut() {
            f.give_back(std::mem::take(&mut report.directory));
        }
        outcome
    }

    /// Drift: the directory changed behind Roster's back. Since the last pass: writes to
    /// entries that differ from how it left them. On the first pass (nothing to compare
    /// with): writes for objects whose status already said converged for their generation,
    /// unless a lifecycle transition came due (expiry, purge). Returns the repairs per object.
    fn drift(
        &self,
        report: &PassReport,
        snapshot: &Snapshot<'_>,
        trigger: &str,
    ) -> BTreeMap<Target, Vec<String>> {
        let converged =
            status::converged_targets(snapshot.accounts, snapshot.projects, snapshot.people);
        let due: std::collections::BTreeSet<&Target> = report
            .first
            .objects
            .iter()
            .filter(|o| {
                matches!(o.phase, Phase::Deactivated | Phase::Purged)
                    && converged.get(&o.target).is_some_and(|r| *r != o.phase)
            })
            .map(|o| &o.target)
            .collect();
        let mut repaired: BTreeMap<Target, Vec<String>> = BTreeMap::new();
        for (i, _) in &report.ldap.done {
            let op = &report.first.ops[*i];
            let drift = if let Some(changed) = &report.changed_behind {
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
            self.metrics
                .drift_repairs
                .get_or_create(&labels([("backend", "ldap")]))
                .inc_by(drift as u64);
        }
        repaired
    }

    /// The status of every declared Account, Project and Person, from the pass report.
    async fn write_statuses(
        &self,
        report: &PassReport,
        declared: &Declared<'_>,
        snapshot: &Snapshot<'_>,
        repaired: &BTreeMap<Target, Vec<String>>,
        now: jiff::Timestamp,
    ) -> PassOutcome {
        let (accounts, projects, people) = (snapshot.accounts, snapshot.projects, snapshot.people);
        let site = &declared.site;
        let last = &report.last;
        let after = &report.directory;
        let mut outcome = PassOutcome::default();
        let (mut account_writes, mut project_writes, mut person_writes) = (vec![], vec![], vec![]);
        let ctx = StatusCtx {
            last,
            failed: &report.failed,
            repaired,
            slurm: &report.slurm_synced,
            gold: &report.gold_synced,
            now,
        };
        for a in accounts {
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
            account_writes.push((a.as_ref(), a.status.as_ref(), st));
            outcome.objects.insert((Kind::Account, key), ctx.result(&s));
        }
        for p in projects {
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
            project_writes.push((p.as_ref(), p.status.as_ref(), st));
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
        for h in people {
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
                display_name: Some(h.spec.display()),
                lifecycle: Lifecycle::default(),
            };
            person_writes.push((h.as_ref(), h.status.as_ref(), st));
            outcome.objects.insert((Kind::Person, key), ctx.result(&s));
        }
        self.write_status_all(account_writes).await;
        self.write_status_all(project_writes).await;
        self.write_status_all(person_writes).await;
        outcome
    }

    /// [`Self::write_status`] of each, [`STATUS_WRITES`] at once: after a burst of changes
    /// thousands of statuses differ, and one request at a time they took most of the pass.
    async fn write_status_all<K, S>(&self, writes: Vec<(&K, Option<&S>, S)>)
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        S: serde::Serialize,
    {
        use futures::StreamExt;
        futures::stream::iter(writes)
            .for_each_concurrent(STATUS_WRITES, |(obj, current, desired)| async move {
                self.write_status(obj, current, &desired).await;
            })
            .await;
    }
    /// The directory for a pass: the followed observation, or (at a resync, without a feed,
    /// or when the feed's observation was lost) a bulk read. Connects when needed.
    async fn observe(&mut self, trigger: &str) -> Result<Observed, String> {
        if self.dir.is_none() {
            let mut dir = Directory::connect(&self.config)
                .await
                .map_err(|e| e.to_string())?;
            dir.check_schema().await.map_err(|e| e.to_string())?;
            self.dir = Some(dir);
        }
        if trigger == "resync" && self.follow.is_none() {
            self.follow_again = true;
        }
        self.keep_following().await;
        if trigger != "resync"
            && let Some(o) = self.follow.as_mut().and_then(Following::take)
        {
            self.observed_from("feed");
            return Ok(o);
        }
        let dir = self.dir.as_mut().expect("connected");
        let read = match dir
            .observe(&self.config.ldap.base_dn, self.config.ldap.page_size)
            .await
        {
            Ok(o) => o,
            Err(e) => {
                self.dir = None;
                return Err(e.to_string());
            }
        };
        self.observed_from("read");
        let differ = match self.follow.as_mut() {
            Some(f) => f.differences(&read).await,
            None => None,
        };
        if let Some(differ) = differ
            && !differ.is_empty()
        {
            tracing::warn!(
                entries = differ.len(),
                first = ?differ.iter().take(10).collect::<Vec<_>>(),
                "the full read of the directory differs from its change feed; planning from the full read"
            );
            self.metrics.feed_differences.inc_by(differ.len() as u64);
        }
        if let Some(f) = self.follow.as_mut() {
            // The pass has it now; what it leaves is followed from here.
            let _ = f.take();
        }
        Ok(read)
    }

    /// Follows the directory (started when due) and applies the messages that came.
    async fn keep_following(&mut self) {
        if self.follow_again {
            self.follow_again = false;
            self.follow = self.start_following().await;
        }
        if let Some(f) = self.follow.as_mut()
            && let Err(e) = f.drain()
        {
            tracing::warn!(error = %e, "the directory's change feed ended; reading it whole until the next resync");
            self.follow = None;
        }
    }

    /// Starts following the directory and waits for the feed's first reading; `None` (and a
    /// warning) where it cannot: passes then read the directory whole.
    async fn start_following(&self) -> Option<Following> {
        let limit = std::time::Duration::from_secs(self.config.ldap.timeout_seconds.max(1) * 10);
        let started = std::time::Instant::now();
        let mut f = match Following::start(&self.config).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "cannot follow the directory's changes; every pass reads it whole");
                return None;
            }
        };
        match f.refreshed(limit).await {
            Ok(()) => {
                tracing::info!(took = ?started.elapsed(), "following the directory's changes");
                Some(f)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot follow the directory's changes; every pass reads it whole");
                None
            }
        }
    }

    fn observed_from(&self, source: &str) {
        self.metrics
            .observations
            .get_or_create(&labels([("source", source)]))
            .inc();
    }

    async fn unavailable(&self, e: String) -> PassOutcome {
        tracing::warn!(error = %e, "the directory is unavailable; nothing was written");
        self.say_unavailable(&e).await;
        PassOutcome {
            error: Some(e),
            ..Default::default()
        }
    }

    /// The directory cannot be read: every Account's, Project's, Person's and Guest's
    /// `LdapSynced` and `Ready` say so (the rest of its status stays as the last pass left it),
    /// until a pass gets through. (ImportSources keep their last run's status: it is written by
    /// their runs, not by every pass, and no import runs while the directory cannot be read.)
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
        mark!(guests);
    }

    fn count_phases(&self, last: &Plan) {
        self.metrics.objects.clear();
        let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
        for o in &last.objects {
            *counts
                .entry((o.target.kind.to_string(), format!("{:?}", o.phase)))
                .or_default() += 1;
        }
        for ((kind, phase), n) in counts {
            self.metrics
                .objects
                .get_or_create(&labels([("kind", &kind), ("phase", &phase)]))
                .set(n as f64);
        }
    }

    /// Server-side applies the status, unless it already says exactly this.
    pub(super) async fn write_status<K, S>(&self, obj: &K, current: Option<&S>, desired: &S)
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
            Ok(_) => {
                self.metrics
                    .status_writes
                    .get_or_create(&labels([("kind", &kind)]))
                    .inc();
            }
            Err(e) => tracing::warn!(object = %obj.name_any(), error = %e, "status write failed"),
        }
    }
}
