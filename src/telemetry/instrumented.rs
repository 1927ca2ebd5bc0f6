//! The one wrapper around every call to a backend's server: the ldap3 requests, each
//! `sacctmgr` process, the accounting database's reads and each Gold request. It counts the
//! call by backend, operation and outcome (`roster_backend_operations_total`), records its
//! duration (`roster_backend_call_duration_seconds`) and runs it inside a tracing span.

use std::future::Future;
use std::time::Instant;

use tracing::Instrument;

use super::{global, labels};

/// Runs `call` as one `operation` of `backend`; `ok` says whether its output is a success.
pub async fn call<T>(
    backend: &'static str,
    operation: &str,
    call: impl Future<Output = T>,
    ok: impl FnOnce(&T) -> bool,
) -> T {
    let span = tracing::debug_span!("backend_call", backend, operation);
    let started = Instant::now();
    let out = call.instrument(span).await;
    let took = started.elapsed();
    let outcome = if ok(&out) { "ok" } else { "error" };
    tracing::trace!(backend, operation, outcome, ?took, "backend call");
    let m = global();
    m.backend_operations
        .get_or_create(&labels([
            ("backend", backend),
            ("operation", operation),
            ("outcome", outcome),
        ]))
        .inc();
    m.backend_call_duration
        .get_or_create(&labels([("backend", backend), ("operation", operation)]))
        .observe(took.as_secs_f64());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_is_counted_by_outcome_and_timed() {
        let m = global();
        let before = |o| {
            m.sum(
                "roster_backend_operations_total",
                &[
                    ("backend", "ldap"),
                    ("operation", "test-call"),
                    ("outcome", o),
                ],
            )
        };
        let (ok0, err0) = (before("ok"), before("error"));
        let count0 = m.sum(
            "roster_backend_call_duration_seconds_count",
            &[("backend", "ldap"), ("operation", "test-call")],
        );
        let r: Result<u8, &str> = call("ldap", "test-call", async { Ok(1) }, Result::is_ok).await;
        assert_eq!(r, Ok(1));
        let _ = call(
            "ldap",
            "test-call",
            async { Err::<u8, _>("no") },
            Result::is_ok,
        )
        .await;
        assert_eq!(before("ok"), ok0 + 1.0);
        assert_eq!(before("error"), err0 + 1.0);
        assert_eq!(
            m.sum(
                "roster_backend_call_duration_seconds_count",
                &[("backend", "ldap"), ("operation", "test-call")],
            ),
            count0 + 2.0
        );
    }
}
