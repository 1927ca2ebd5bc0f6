//! Operator mode (`roster run`): kube-runtime controllers for the five kinds (Person, Account,
//! Project, Guest, ImportSource). A reconcile does not converge its object by itself: it adds
//! the finalizer on first sight, then asks the worker for a pass and waits for its outcome
//! (concurrent requests share one pass). A pass runs the converger of `roster apply`
//! (`crate::converge`) over the whole declared site and writes status, Events and finalizers
//! from its report (`worker`, `status`, `events`, `finalizers`, `guests`, `imports`).

mod events;
mod finalizers;
mod follow;
mod guests;
mod imports;
mod leading;
pub mod status;
mod worker;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::api::{Account, FINALIZER, Guest, ImportSource, Person, Project};
use crate::config::Config;
use crate::plan::Kind;
use crate::site::Key;
use crate::telemetry::Metrics;
use worker::{Converger, PassOutcome};

/// How `roster run` was asked to behave.
pub struct Options {
    pub config: Config,
    /// This replica's name in the Lease and in Events.
    pub identity: String,
    /// Where metrics and probes are served.
    pub metrics_address: SocketAddr,
    /// Take part in leader election (off only for single-process tests and demos).
    pub leader_election: bool,
    /// Where to write the bound metrics address (for `--metrics-address …:0`).
    pub metrics_address_file: Option<std::path::PathBuf>,
    /// The time lifecycle transitions are computed from.
    pub clock: crate::clock::Clock,
}

/// Why `roster run` stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot reach Kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("leader election: {0}")]
    Lease(String),
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Why one reconcile failed (the variant name is the Event reason and the metric label).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReconcileError {
    #[error("the directory could not be read or written: {0}")]
    DirectoryUnavailable(String),
    #[error("writing to the directory failed: {0}")]
    WriteFailed(String),
    #[error("Kubernetes API call failed: {0}")]
    KubeApi(String),
}

impl ReconcileError {
    pub fn reason(&self) -> &'static str {
        match self {
            ReconcileError::DirectoryUnavailable(_) => "DirectoryUnavailable",
            ReconcileError::WriteFailed(_) => "WriteFailed",
            ReconcileError::KubeApi(_) => "KubeApi",
        }
    }
}

/// What every reconcile shares.
struct Ctx {
    converger: Converger,
    metrics: Arc<Metrics>,
    /// Consecutive failures per object, for per-object backoff.
    failures: Mutex<BTreeMap<(Kind, Key), u32>>,
    /// Bounds the finalizer writes of first sight, the only API requests reconciles make at
    /// once: on start every object is new, and unbounded they opened one HTTP connection each
    /// (10,000 objects: 10,000 connections, ~40 KiB of buffers apiece, kept idle in the pool).
    first_sight: tokio::sync::Semaphore,
    /// Whether this replica leads; a standby's reconciles come back after this long.
    leading: leading::Leading,
    standby_requeue: Duration,
}

/// At most this many finalizer writes at once.
const FIRST_SIGHT_WRITES: usize = 8;

/// Runs the operator until the process is stopped.
pub async fn run(opts: Options) -> Result<(), RunError> {
    let client = Client::try_default().await?;
    run_with_client(opts, client).await
}

pub async fn run_with_client(opts: Options, client: Client) -> Result<(), RunError> {
    let metrics = crate::telemetry::global();
    let addr = opts.metrics_address;
    let bound = crate::telemetry::serve(addr, metrics.clone())
        .await
        .map_err(|source| RunError::Metrics { addr, source })?;
    if let Some(file) = &opts.metrics_address_file {
        // Whole or not at all: a reader never sees half an address.
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, format!("{bound}\n"))
            .and_then(|()| std::fs::rename(&tmp, file))
            .map_err(|source| RunError::Metrics { addr, source })?;
    }
    tracing::info!(address = %bound, "serving metrics and probes");
    let resync = opts.config.operator.resync_interval.get();
    if !opts.leader_election {
        metrics.leader.set(1.0);
        return controllers(&opts, client, metrics, resync, leading::Leading::always()).await;
    }
    let namespace = opts
        .config
        .operator
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".into());
    let duration = opts.config.operator.lease_duration_seconds;
    let manager = kube_lease_manager::LeaseManagerBuilder::new(
        client.clone(),
        &opts.config.operator.lease_name,
    )
    .with_namespace(&namespace)
    .with_identity(&opts.identity)
    .with_duration(duration)
    .with_grace((duration / 3).max(2))
    .build()
    .await
    .map_err(|e| RunError::Lease(e.to_string()))?;
    let (leader, _task) = manager.watch().await;
    // A standby is healthy and ready: it serves probes, keeps its caches and its observation of
    // the directory current, and writes nothing until it holds the Lease.
    metrics
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let lease = leading::Leading::lease(leader);
    let work = controllers(&opts, client, metrics.clone(), resync, lease.clone());
    let mut lease = lease;
    let follows = async {
        loop {
            let now = lease.now();
            metrics.leader.set(if now { 1.0 } else { 0.0 });
            if now {
                tracing::info!(identity = %opts.identity, "became the leader");
            } else {
                tracing::info!(identity = %opts.identity, "standing by (another replica holds the Lease)");
            }
            if !lease.changed().await {
                return;
            }
        }
    };
    tokio::select! {
        r = work => r,
        () = follows => Err(RunError::Lease("the lease manager stopped".into())),
    }
}

/// The five controllers and the worker they share.
async fn controllers(
    opts: &Options,
    client: Client,
    metrics: Arc<Metrics>,
    resync: Duration,
    leading: leading::Leading,
) -> Result<(), RunError> {
    let accounts = controller::<Account>(&client);
    let projects = controller::<Project>(&client);
    let people = controller::<Person>(&client);
    let guests = controller::<Guest>(&client);
    let imports = controller::<ImportSource>(&client);
    let stores = worker::Stores {
        accounts: accounts.store(),
        projects: projects.store(),
        people: people.store(),
        guests: guests.store(),
        imports: imports.store(),
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "roster".into(),
            instance: Some(opts.identity.clone()),
        },
    );
    let converger = Converger::start(
        Arc::new(opts.config.clone()),
        client.clone(),
        stores,
        recorder,
        metrics.clone(),
        worker::Schedule {
            resync,
            clock: opts.clock.clone(),
            leading: leading.clone(),
        },
    );
    let ctx = Arc::new(Ctx {
        converger,
        metrics: metrics.clone(),
        failures: Mutex::new(BTreeMap::new()),
        first_sight: tokio::sync::Semaphore::new(FIRST_SIGHT_WRITES),
        leading,
        standby_requeue: Duration::from_secs(opts.config.operator.lease_duration_seconds.max(1)),
    });
    metrics
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let a = accounts
        .shutdown_on_signal()
        .run(reconcile::<Account>, error_policy::<Account>, ctx.clone())
        .for_each(|r| drain("accounts", r));
    let p = projects
        .shutdown_on_signal()
        .run(reconcile::<Project>, error_policy::<Project>, ctx.clone())
        .for_each(|r| drain("projects", r));
    let h = people
        .shutdown_on_signal()
        .run(reconcile::<Person>, error_policy::<Person>, ctx.clone())
        .for_each(|r| drain("people", r));
    let g = guests
        .shutdown_on_signal()
        .run(reconcile::<Guest>, error_policy::<Guest>, ctx.clone())
        .for_each(|r| drain("guests", r));
    let i = imports
        .shutdown_on_signal()
        .run(
            reconcile::<ImportSource>,
            error_policy::<ImportSource>,
            ctx.clone(),
        )
        .for_each(|r| drain("importsources", r));
    tokio::join!(a, p, h, g, i);
    Ok(())
}

/// A controller whose triggers ignore status-only changes (Roster's own status writes): only
/// spec (generation), deletion, finalizers, labels and annotations wake it.
fn controller<K: Declared>(client: &Client) -> Controller<K> {
    let (reader, writer) = reflector::store();
    // managedFields are most of an object's size on a real API server and Roster never reads
    // them: the caches keep objects without.
    let stream = watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(|o: &mut K| o.meta_mut().managed_fields = None)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(meaningful::<K>, PredicateConfig::default());
    Controller::for_stream(stream, reader)
}

fn meaningful<K: Resource>(obj: &K) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let m = obj.meta();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    m.generation.hash(&mut h);
    m.deletion_timestamp.is_some().hash(&mut h);
    m.finalizers.hash(&mut h);
    m.labels.hash(&mut h);
    m.annotations.hash(&mut h);
    Some(h.finish())
}

/// `roster guard reject --kubernetes`: releases the finalizers of deleted Accounts whose
/// directory entry is still Active (their removal is held by the guard), without touching any
/// backend. The identities stay Active and are re-claimed when their manifests come back.
pub async fn release_held(
    config: &Config,
    observed: &crate::ldap::Observed,
) -> Result<usize, kube::Error> {
    let client = Client::try_default().await?;
    let api: Api<Account> = Api::all(client.clone());
    let mut released = 0;
    for a in api.list(&Default::default()).await?.items {
        if a.metadata.deletion_timestamp.is_none() || !a.finalizers().iter().any(|f| f == FINALIZER)
        {
            continue;
        }
        let key = Key::of(&a);
        let owner = crate::plan::owner(config, Kind::Account, &key);
        let active = observed
            .accounts
            .values()
            .any(|e| e.owner() == Some(owner.as_str()) && !e.is_deactivated());
        if !active {
            continue;
        }
        let finalizers: Vec<String> = a
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        let ns: Api<Account> = Api::namespaced(client.clone(), &key.namespace);
        let patch = serde_json::json!({"metadata": {"finalizers": finalizers, "resourceVersion": a.resource_version()}});
        ns.patch(&key.name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        released += 1;
    }
    Ok(released)
}

async fn drain<T, E: std::fmt::Display>(name: &'static str, r: Result<T, E>) {
    if let Err(e) = r {
        tracing::debug!(controller = name, error = %e, "reconcile error");
    }
}

/// Which plan kind a resource is.
trait Declared:
    Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + std::fmt::Debug
    + serde::Serialize
    + Send
    + Sync
    + 'static
{
    const KIND: Kind;
}
impl Declared for Account {
    const KIND: Kind = Kind::Account;
}
impl Declared for Project {
    const KIND: Kind = Kind::Project;
}
impl Declared for Person {
    const KIND: Kind = Kind::Person;
}
impl Declared for Guest {
    const KIND: Kind = Kind::Guest;
}
impl Declared for ImportSource {
    const KIND: Kind = Kind::ImportSource;
}

fn key_of<K: Resource>(obj: &K) -> Key {
    Key::of(obj)
}

/// The controllers' reconcile: a trigger, not the logic. It puts Roster's finalizer on an object
/// seen for the first time, else asks for a pass of the whole site (`worker`) and turns that
/// pass's outcome for this object into a requeue or an error (per-object backoff).
async fn reconcile<K: Declared>(obj: Arc<K>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    if !ctx.leading.now() {
        // A standby writes nothing; the leader's pass covers the object, and after a takeover
        // this one's does (the worker passes at once), so coming back later is enough.
        return Ok(Action::requeue(ctx.standby_requeue));
    }
    let started = std::time::Instant::now();
    let key = key_of(obj.as_ref());
    let kind = K::KIND;
    let deleting = obj.meta().deletion_timestamp.is_some();
    let has_finalizer = obj.finalizers().iter().any(|f| f == FINALIZER);
    if deleting && !has_finalizer {
        return Ok(Action::await_change());
    }
    if !deleting && !has_finalizer {
        // First sight: put the finalizer on, so a deletion reaches the directory. The update
        // brings the object back here.
        let _permit = ctx.first_sight.acquire().await.expect("never closed");
        let api: Api<K> = Api::namespaced(ctx.converger.client.clone(), &key.namespace);
        let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ]))
        .expect("a valid JSON patch");
        let result = api
            .patch(
                &key.name,
                &PatchParams::default(),
                &Patch::<()>::Json(patch),
            )
            .await;
        if let Err(e) = result {
            // Someone else changed the finalizers meanwhile: merge ours in.
            let mut finalizers = obj.finalizers().to_vec();
            finalizers.push(FINALIZER.to_string());
            let merge = serde_json::json!({"metadata": {"finalizers": finalizers, "resourceVersion": obj.resource_version()}});
            api.patch(&key.name, &PatchParams::default(), &Patch::Merge(merge))
                .await
                .map_err(|e2| {
                    ReconcileError::KubeApi(format!("adding the finalizer: {e}; {e2}"))
                })?;
        }
        return Ok(Action::await_change());
    }
    tracing::debug!(kind = %kind, object = %key, "reconcile asks for a pass");
    let outcome: Arc<PassOutcome> = ctx.converger.request().await;
    let labels = crate::telemetry::labels([("kind", &kind.to_string())]);
    ctx.metrics.reconciles.get_or_create(&labels).inc();
    ctx.metrics
        .reconcile_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    if let Some(e) = &outcome.error {
        return Err(ReconcileError::DirectoryUnavailable(e.clone()));
    }
    let result = outcome.objects.get(&(kind, key.clone()));
    if let Some(failure) = result.and_then(|r| r.failed.clone()) {
        return Err(ReconcileError::WriteFailed(failure));
    }
    ctx.failures.lock().expect("lock").remove(&(kind, key));
    // Invalid and Conflict wait for a change of the object; everything else wakes at its next
    // transition (the converger also resyncs everything periodically).
    let next = result.and_then(|r| r.next_transition);
    Ok(match next {
        Some(at) => {
            let wait = ctx.converger.clock.until(at).max(Duration::from_secs(1));
            Action::requeue(wait)
        }
        None => Action::await_change(),
    })
}

/// Per-object exponential backoff: 1 s, 2 s, 4 s … up to 5 minutes.
fn error_policy<K: Declared>(obj: Arc<K>, error: &ReconcileError, ctx: Arc<Ctx>) -> Action {
    let key = key_of(obj.as_ref());
    let mut failures = ctx.failures.lock().expect("lock");
    let n = failures.entry((K::KIND, key.clone())).or_default();
    *n += 1;
    let wait = Duration::from_secs((1u64 << (*n).min(9)).min(300));
    ctx.metrics
        .reconcile_errors
        .get_or_create(&crate::telemetry::labels([
            ("kind", &K::KIND.to_string()),
            ("reason", error.reason()),
        ]))
        .inc();
    tracing::warn!(kind = %K::KIND, object = %key, error = %error, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}
