//! Metrics (`prometheus-client`, OpenMetrics text), `/healthz` and `/readyz`, and log setup.
//! Every metric is a field of [`Metrics`], registered once; the process has one registry
//! ([`global`]), which the operator serves and file mode prints with `-o json`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

mod instrumented;
pub use instrumented::call;

/// Label set, in order: `[("kind", "Account"), ("outcome", "ok")]`.
pub type Labels = Vec<(&'static str, String)>;

type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge<f64, AtomicU64>>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Seconds, from 1 ms to about 65 s: an LDAP modify on loopback to a `sacctmgr load` of
/// thousands of lines.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Every metric Roster exports.
pub struct Metrics {
    registry: Registry,
    /// Every family: its name in the exposition (counters with `_total`) and its type.
    families: Vec<(String, &'static str)>,
    /// Readiness: the caches are synced (or the process is a standby replica).
    pub ready: AtomicBool,
    /// Calls to the backends (LDAP requests, sacctmgr processes, accounting-database reads,
    /// Gold requests) by backend, operation and outcome; counted by [`crate::backend::call`].
    pub backend_operations: Counters,
    /// The same calls' durations, by backend and operation.
    pub backend_call_duration: Histograms,
    /// Convergence passes by trigger.
    pub passes: Counters,
    pub pass_duration: Histogram,
    pub reconciles: Counters,
    pub reconcile_duration: Histograms,
    pub reconcile_errors: Counters,
    pub drift_repairs: Counters,
    pub counter_retries: Counter,
    pub status_writes: Counters,
    pub objects: Gauges,
    pub guard_held: Gauge<f64, AtomicU64>,
    pub leader: Gauge<f64, AtomicU64>,
    pub notices: Counters,
    pub import_runs: Counters,
    /// Passes' readings of the directory by source: `feed` (the followed observation) or
    /// `read` (a bulk read: at start, at each resync, when the feed was lost).
    pub observations: Counters,
    /// Entries in which a resync's full read differed from the followed observation.
    pub feed_differences: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let histograms = || Histograms::new_with_constructor(seconds);
        let mut m = Metrics {
            registry: Registry::default(),
            families: vec![],
            ready: AtomicBool::new(false),
            backend_operations: Counters::default(),
            backend_call_duration: histograms(),
            passes: Counters::default(),
            pass_duration: seconds(),
            reconciles: Counters::default(),
            reconcile_duration: histograms(),
            reconcile_errors: Counters::default(),
            drift_repairs: Counters::default(),
            counter_retries: Counter::default(),
            status_writes: Counters::default(),
            objects: Gauges::default(),
            guard_held: Gauge::default(),
            leader: Gauge::default(),
            notices: Counters::default(),
            import_runs: Counters::default(),
            observations: Counters::default(),
            feed_differences: Counter::default(),
        };
        // Counters are exposed with `_total` appended.
        let mut families = vec![];
        let r = &mut m.registry;
        register(
            r,
            &mut families,
            "roster_backend_operations",
            "Backend calls by backend, operation and outcome",
            &m.backend_operations,
        );
        register(
            r,
            &mut families,
            "roster_backend_call_duration_seconds",
            "Duration of backend calls, by backend and operation",
            &m.backend_call_duration,
        );
        register(
            r,
            &mut families,
            "roster_passes",
            "Convergence passes by trigger",
            &m.passes,
        );
        register(
            r,
            &mut families,
            "roster_pass_duration_seconds",
            "Duration of convergence passes",
            &m.pass_duration,
        );
        register(
            r,
            &mut families,
            "roster_reconciles",
            "Reconciles by kind",
            &m.reconciles,
        );
        register(
            r,
            &mut families,
            "roster_reconcile_duration_seconds",
            "Duration of reconciles (waiting for their pass included), by kind",
            &m.reconcile_duration,
        );
        register(
            r,
            &mut families,
            "roster_reconcile_errors",
            "Failed reconciles by kind and reason",
            &m.reconcile_errors,
        );
        register(
            r,
            &mut families,
            "roster_drift_repairs",
            "Directory writes for objects that were already converged (drift)",
            &m.drift_repairs,
        );
        register(
            r,
            &mut families,
            "roster_counter_retries",
            "uid/gid counter updates retried after losing to another writer",
            &m.counter_retries,
        );
        register(
            r,
            &mut families,
            "roster_status_writes",
            "Status writes by kind",
            &m.status_writes,
        );
        register(
            r,
            &mut families,
            "roster_objects",
            "Declared objects by kind and phase",
            &m.objects,
        );
        register(
            r,
            &mut families,
            "roster_guard_held",
            "Removal-caused transitions the mass-deactivation guard is holding",
            &m.guard_held,
        );
        register(
            r,
            &mut families,
            "roster_leader",
            "1 while this replica is the leader",
            &m.leader,
        );
        register(
            r,
            &mut families,
            "roster_notices",
            "Expiry notices mailed, by outcome",
            &m.notices,
        );
        register(
            r,
            &mut families,
            "roster_import_runs",
            "Import runs by outcome",
            &m.import_runs,
        );
        register(
            r,
            &mut families,
            "roster_directory_observations",
            "Passes' readings of the directory, by source (feed or read)",
            &m.observations,
        );
        register(
            r,
            &mut families,
            "roster_feed_differences",
            "Entries in which a resync's full read of the directory differed from the change feed's",
            &m.feed_differences,
        );
        m.families = families
            .into_iter()
            .map(|(name, kind)| {
                let exposed = match kind {
                    "counter" => format!("{name}_total"),
                    _ => name.to_string(),
                };
                (exposed, kind)
            })
            .collect();
        m
    }
}

/// Registers a family and records its name and type.
fn register<M>(
    r: &mut Registry,
    families: &mut Vec<(&'static str, &'static str)>,
    name: &'static str,
    help: &'static str,
    metric: &M,
) where
    M: Kind + prometheus_client::registry::Metric + Clone,
{
    r.register(name, help, metric.clone());
    families.push((name, M::KIND));
}

/// The OpenMetrics type of a metric.
trait Kind {
    const KIND: &'static str;
}
impl Kind for Counter {
    const KIND: &'static str = "counter";
}
impl Kind for Gauge<f64, AtomicU64> {
    const KIND: &'static str = "gauge";
}
impl Kind for Histogram {
    const KIND: &'static str = "histogram";
}
impl<M: Kind, C> Kind for Family<Labels, M, C> {
    const KIND: &'static str = M::KIND;
}
static GLOBAL: LazyLock<Arc<Metrics>> = LazyLock::new(|| Arc::new(Metrics::default()));

/// The process's metrics.
pub fn global() -> Arc<Metrics> {
    GLOBAL.clone()
}

/// Labels from `(name, value)` pairs.
pub fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.into_iter().map(|(k, v)| (k, v.to_string())).collect()
}

impl Metrics {
    /// Every family Roster exports: its name (a counter's with `_total`) and its type.
    pub fn families(&self) -> &[(String, &'static str)] {
        &self.families
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }

    /// Every sample of the exposition (histogram buckets, sums and counts included), for
    /// `-o json`: `{"name", "labels", "value"}`.
    pub fn samples(&self) -> Vec<serde_json::Value> {
        self.render()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let value: f64 = value.parse().ok()?;
                let (name, labels) = match series.split_once('{') {
                    Some((n, rest)) => (n, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                let mut map = serde_json::Map::new();
                // Label values are ours (kinds, operations, outcomes): no `",` inside them.
                for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                    if let Some((k, v)) = pair.split_once("=\"") {
                        map.insert(k.to_string(), v.trim_end_matches('"').into());
                    }
                }
                Some(serde_json::json!({"name": name, "labels": map, "value": value}))
            })
            .collect()
    }

    /// The sum of every sample named `name` whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples()
            .iter()
            .filter(|s| s["name"] == name)
            .filter(|s| labels.iter().all(|(k, v)| s["labels"][*k] == *v))
            .filter_map(|s| s["value"].as_f64())
            .sum()
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the task is dropped.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let service = hyper::service::service_fn(
                    move |req: Request<hyper::body::Incoming>| {
                        let metrics = metrics.clone();
                        async move {
                            let (code, body) = match req.uri().path() {
                                "/metrics" => (200, metrics.render()),
                                "/healthz" => (200, "ok\n".to_string()),
                                "/readyz" if metrics.ready.load(Ordering::Relaxed) => {
                                    (200, "ok\n".to_string())
                                }
                                "/readyz" => (503, "not ready\n".to_string()),
                                _ => (404, "not found\n".to_string()),
                            };
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(code)
                                    .header(
                                        "content-type",
                                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                    )
                                    .body(Full::new(Bytes::from(body)))
                                    .expect("response"),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    Ok(bound)
}

/// Logs to stderr: JSON lines (`json`) for clusters, or human text.
pub fn init_logging(json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("ROSTER_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_and_histograms_render_and_read_back() {
        let m = Metrics::default();
        m.reconciles
            .get_or_create(&labels([("kind", "Account")]))
            .inc_by(3);
        m.objects
            .get_or_create(&labels([("kind", "Account"), ("phase", "Ready")]))
            .set(4.0);
        let h = labels([("backend", "ldap"), ("operation", "modify")]);
        m.backend_call_duration.get_or_create(&h).observe(0.003);
        m.backend_call_duration.get_or_create(&h).observe(0.5);
        let text = m.render();
        assert!(
            text.contains(
                "# TYPE roster_reconciles counter\nroster_reconciles_total{kind=\"Account\"} 3\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("roster_backend_call_duration_seconds_count{backend=\"ldap\",operation=\"modify\"} 2"),
            "{text}"
        );
        assert_eq!(
            m.sum("roster_reconciles_total", &[("kind", "Account")]),
            3.0
        );
        assert_eq!(m.sum("roster_objects", &[("phase", "Ready")]), 4.0);
        assert_eq!(
            m.sum(
                "roster_backend_call_duration_seconds_bucket",
                &[("backend", "ldap"), ("le", "0.004")]
            ),
            1.0,
            "{text}"
        );
        assert_eq!(
            m.sum(
                "roster_backend_call_duration_seconds_sum",
                &[("operation", "modify")]
            ),
            0.503
        );
        m.objects.clear();
        assert_eq!(m.sum("roster_objects", &[]), 0.0);
    }
}
