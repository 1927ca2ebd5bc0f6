//! Metrics in the Prometheus text format, `/healthz` and `/readyz`, and log setup. A small
//! hand-rolled registry: counters and gauges with labels are all Roster needs.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};

/// Label set, in order: `[("kind", "Account"), ("outcome", "ok")]`.
pub type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Family {
    help: &'static str,
    kind: &'static str,
    values: BTreeMap<Vec<(&'static str, String)>, f64>,
}

/// Every metric Roster exports.
#[derive(Default)]
pub struct Metrics {
    families: Mutex<BTreeMap<&'static str, Family>>,
    /// Readiness: the caches are synced (or the process is a standby replica).
    pub ready: AtomicBool,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    fn update(
        &self,
        name: &'static str,
        kind: &'static str,
        help: &'static str,
        labels: Labels,
        f: impl FnOnce(&mut f64),
    ) {
        let mut families = self.families.lock().expect("metrics lock");
        let family = families.entry(name).or_insert_with(|| Family {
            help,
            kind,
            values: BTreeMap::new(),
        });
        f(family.values.entry(labels).or_insert(0.0));
    }

    /// Adds `by` to a counter.
    pub fn inc(&self, name: &'static str, help: &'static str, labels: Labels, by: f64) {
        self.update(name, "counter", help, labels, |v| *v += by);
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, help: &'static str, labels: Labels, value: f64) {
        self.update(name, "gauge", help, labels, |v| *v = value);
    }

    /// Resets every series of a gauge (before setting the current ones).
    pub fn clear(&self, name: &'static str) {
        if let Some(f) = self.families.lock().expect("metrics lock").get_mut(name) {
            f.values.clear();
        }
    }

    /// The current value of one series (tests read metrics through this).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let families = self.families.lock().expect("metrics lock");
        let f = families.get(name)?;
        f.values
            .iter()
            .find(|(l, _)| {
                l.len() == labels.len()
                    && l.iter()
                        .zip(labels)
                        .all(|((k, v), (k2, v2))| k == k2 && v == v2)
            })
            .map(|(_, v)| *v)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let families = self.families.lock().expect("metrics lock");
        let mut out = String::new();
        for (name, f) in families.iter() {
            let _ = writeln!(out, "# HELP {name} {}", f.help);
            let _ = writeln!(out, "# TYPE {name} {}", f.kind);
            for (labels, v) in &f.values {
                let l: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| {
                        format!(
                            "{k}=\"{}\"",
                            v.replace('\\', "\\\\")
                                .replace('"', "\\\"")
                                .replace('\n', "\\n")
                        )
                    })
                    .collect();
                if l.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else {
                    let _ = writeln!(out, "{name}{{{}}} {v}", l.join(","));
                }
            }
        }
        out
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
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
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
                                    .header("content-type", "text/plain; version=0.0.4")
                                    .body(Full::new(Bytes::from(body)))
                                    .expect("response"),
                            )
                        }
                    });
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
    fn renders_counters_and_gauges_with_escaped_labels() {
        let m = Metrics::default();
        m.inc(
            "roster_reconciles_total",
            "Reconciles.",
            vec![("kind", "Account".into())],
            1.0,
        );
        m.inc(
            "roster_reconciles_total",
            "Reconciles.",
            vec![("kind", "Account".into())],
            2.0,
        );
        m.set(
            "roster_objects",
            "Objects.",
            vec![("phase", "a\"b".into())],
            4.0,
        );
        let text = m.render();
        assert!(text.contains("# TYPE roster_reconciles_total counter\nroster_reconciles_total{kind=\"Account\"} 3\n"), "{text}");
        assert!(
            text.contains("roster_objects{phase=\"a\\\"b\"} 4"),
            "{text}"
        );
        assert_eq!(
            m.get("roster_reconciles_total", &[("kind", "Account")]),
            Some(3.0)
        );
        m.clear("roster_objects");
        assert_eq!(m.get("roster_objects", &[("phase", "a\"b")]), None);
    }
}
