//! ImportSources in operator mode: a run when one is due (its interval, or a new value of the
//! `roster.io/run-requested` annotation), inside the converger's pass — so runs never overlap.
//! A run writes the Persons and Accounts of its records (server-side apply, field manager
//! `roster-import`, only what differs), marks the Accounts of records gone from the source
//! (`roster.io/gone-at` and the grace periods), stores its username counters in the directory,
//! and reports in status, a report ConfigMap, Events and metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::Arc;

use base64::Engine;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::worker::Worker;
use crate::api::{
    Account, DEACTIVATE_AFTER_ANNOTATION, GONE_AT_ANNOTATION, ImportRun, ImportSource,
    ImportSourceStatus, KeyRef, PURGE_AFTER_ANNOTATION, Person, RUN_REQUESTED_ANNOTATION,
    RowError as ApiRowError, SOURCE_UID_ANNOTATION, Time,
};
use crate::import::read::{self, Row, RowError};
use crate::import::source::Secrets;
use crate::ldap::Observed;
use crate::plan::Cond;
use crate::site::{Key, Site};

/// The report ConfigMap keeps at most this much (gzip, then base64 in binaryData).
/// The most one gzip entry of the report ConfigMap holds (two of them, base64, stay below a
/// ConfigMap's 1 MiB).
const REPORT_LIMIT: usize = 256 * 1024;
/// Default interval between runs.
const DEFAULT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// The source's interval between runs.
fn interval(src: &ImportSource) -> std::time::Duration {
    src.spec
        .interval
        .as_deref()
        .and_then(|i| crate::api::parse_duration(i).ok())
        .unwrap_or(DEFAULT_INTERVAL)
}

/// How soon a source that could not be read is tried again (at most its interval): a
/// ConfigMap applied just after its ImportSource, a database restarting.
const UNREACHABLE_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether the source's last run could not read it.
fn unreachable(src: &ImportSource) -> bool {
    src.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| {
            c.type_ == "SourceUnreachable" && c.status == crate::api::ConditionStatus::True
        })
    })
}

/// When a source's next run is due, and whether it is due now.
pub fn due(src: &ImportSource, now: jiff::Timestamp) -> (bool, jiff::Timestamp) {
    let st = src.status.clone().unwrap_or_default();
    let interval = if unreachable(src) {
        interval(src).min(UNREACHABLE_RETRY)
    } else {
        interval(src)
    };
    let next = st
        .last_run
        .as_ref()
        .and_then(|r| r.finished_at)
        .map(|t| t.0 + jiff::SignedDuration::from_secs(interval.as_secs() as i64))
        .unwrap_or(now);
    let requested = src
        .annotations()
        .get(RUN_REQUESTED_ANNOTATION)
        .is_some_and(|v| Some(v) != st.last_trigger.as_ref());
    // A new spec (generation) is a reason to run too.
    let changed = st.observed_generation != src.metadata.generation;
    (now >= next || requested || changed, next)
}

/// The operator's references: Secrets and ConfigMaps in the source's namespace.
struct InCluster<'w> {
    worker: &'w Worker,
    ns: String,
}

impl Secrets for InCluster<'_> {
    async fn key(&self, r: &KeyRef, secret: bool, _what: &str) -> Result<String, String> {
        self.worker.key_ref(&self.ns, r, secret).await
    }

    fn csv_path(&self, _: &str) -> Result<String, String> {
        Err(
            "reader.csv.path works in file mode only; in the cluster use configMapRef or secretRef"
                .into(),
        )
    }
}

impl Worker {
    /// A key of a Secret or ConfigMap in the source's namespace, as text.
    async fn key_ref(&self, ns: &str, r: &KeyRef, secret: bool) -> Result<String, String> {
        if secret {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
            let s = api
                .get(&r.name)
                .await
                .map_err(|e| format!("Secret {ns}/{}: {e}", r.name))?;
            let bytes = s
                .data
                .as_ref()
                .and_then(|d| d.get(&r.key))
                .map(|b| b.0.clone())
                .ok_or_else(|| format!("Secret {ns}/{} has no key {}", r.name, r.key))?;
            read::decode_csv(&bytes)
                .map(str::to_string)
                .map_err(|e| e.to_string())
        } else {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
            let c = api
                .get(&r.name)
                .await
                .map_err(|e| format!("ConfigMap {ns}/{}: {e}", r.name))?;
            c.data
                .as_ref()
                .and_then(|d| d.get(&r.key))
                .cloned()
                .ok_or_else(|| format!("ConfigMap {ns}/{} has no key {}", r.name, r.key))
        }
    }

    /// The source's rows; an unreachable source is an error, never an empty list.
    async fn read_source(&self, src: &ImportSource) -> Result<(Vec<Row>, Vec<RowError>), String> {
        let refs = InCluster {
            worker: self,
            ns: src.namespace().unwrap_or_default(),
        };
        crate::import::source::read(src, &refs).await
    }

    /// Runs every ImportSource that is due. Returns the earliest next run.
    pub(super) async fn run_imports(
        &mut self,
        sources: &[Arc<ImportSource>],
        accounts: &[Arc<Account>],
        people: &[Arc<Person>],
        site: &Site,
        observed: &Observed,
        now: jiff::Timestamp,
    ) -> Option<jiff::Timestamp> {
        let mut wake: Option<jiff::Timestamp> = None;
        for src in sources {
            if src.meta().deletion_timestamp.is_some() {
                continue;
            }
            let (is_due, next) = due(src, now);
            if !is_due {
                wake = Some(wake.map_or(next, |w| w.min(next)));
                continue;
            }
            let key = Key::of(src.as_ref());
            let interval = interval(src);
            let mut next = now + jiff::SignedDuration::from_secs(interval.as_secs() as i64);
            let mut conds: Vec<Cond> = vec![];
            let mut run = ImportRun::default();
            let mut report_lines: Vec<String> = vec![];
            // The summary CSV: of a run that wrote, with changed/unchanged from its writes;
            // of a dry or aborted run, what it would do (known identities as unchanged).
            let mut summary = String::new();
            match self.read_source(src).await {
                Err(e) => {
                    // Not an empty source: tried again soon, not at the next interval.
                    next = now
                        + jiff::SignedDuration::from_secs(
                            interval.min(UNREACHABLE_RETRY).as_secs() as i64,
                        );
                    conds.push(cond("SourceUnreachable", true, "ReadFailed", e.clone()));
                    conds.push(cond(
                        "Ready",
                        false,
                        "SourceUnreachable",
                        format!(
                            "{e}; nothing imported (an unreachable source is not an empty one)"
                        ),
                    ));
                    self.publish_one(src.as_ref(), EventType::Warning, "ImportFailed", e)
                        .await;
                }
                Ok((rows, errors)) => {
                    let o = crate::import::engine::run(
                        src,
                        &key,
                        &rows,
                        &errors,
                        site,
                        observed,
                        &self.config,
                        now,
                    );
                    run = o.run.clone();
                    report_lines = o.report.clone();
                    summary = crate::import::engine::summary_csv(
                        [(key.to_string().as_str(), o.rows.as_slice())],
                        &|_| false,
                    );
                    run.error_samples = o
                        .errors
                        .iter()
                        .take(10)
                        .map(|e| ApiRowError {
                            row: e.row as i64,
                            message: e.message.clone(),
                        })
                        .collect();
                    if let Some(why) = &o.aborted {
                        conds.push(cond("Guarded", true, "RunAborted", why.clone()));
                        conds.push(cond("Ready", false, "RunAborted", why.clone()));
                        self.publish_one(
                            src.as_ref(),
                            EventType::Warning,
                            "ImportAborted",
                            why.clone(),
                        )
                        .await;
                    } else if src.spec.dry_run {
                        conds.push(cond(
                            "Ready",
                            true,
                            "DryRun",
                            "dryRun: computed and reported, nothing written".into(),
                        ));
                    } else {
                        let (modified, failures, failed) =
                            self.write_import(src, &o, accounts, people, now).await;
                        summary = crate::import::engine::summary_csv(
                            [(key.to_string().as_str(), o.rows.as_slice())],
                            &|u| modified.contains(u),
                        );
                        run.modified = modified.len() as i64;
                        run.unchanged = (o.accounts.len() as i64
                            - run.created
                            - run.reactivated
                            - run.modified)
                            .max(0);
                        // The generated names of the Accounts now declared (their objects
                        // written): a name not written advances nothing.
                        let store =
                            crate::import::engine::counters_to_store(&o.counters, observed, |u| {
                                o.accounts
                                    .iter()
                                    .any(|(k, a)| a.spec.username == u && !failed.contains(k))
                            });
                        if let Some(dir) = self.dir.as_mut() {
                            for (cn, next) in &store {
                                let dn = self.config.counter_dn(cn);
                                match dir.set_counter(&dn, cn, *next as i64).await {
                                    Ok(()) => self.counters_written = true,
                                    Err(e) => {
                                        tracing::warn!(error = %e, counter = %cn, "a counter was not stored")
                                    }
                                }
                            }
                        }
                        match failures.first() {
                            Some(f) => conds.push(cond("Ready", false, "WriteFailed", f.clone())),
                            None => conds.push(cond("Ready", true, "Imported", String::new())),
                        }
                        let note = format!(
                            "{} record(s): {} created, {} modified, {} reactivated, {} gone, {} error(s) (rows skipped), {} warning(s) (rows imported with a problem)",
                            run.records,
                            run.created,
                            run.modified,
                            run.reactivated,
                            run.deactivated,
                            run.errors,
                            run.warnings
                        );
                        self.publish_one(src.as_ref(), EventType::Normal, "ImportFinished", note)
                            .await;
                    }
                }
            }
            wake = Some(wake.map_or(next, |w| w.min(next)));
            run.finished_at = Some(Time(now));
            run.report = self.write_report(src, &report_lines, &summary).await;
            let existing = src
                .status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default();
            let st = ImportSourceStatus {
                observed_generation: src.metadata.generation,
                conditions: crate::operator::status::conditions(
                    &conds,
                    &existing,
                    src.metadata.generation,
                    now,
                ),
                last_run: Some(run),
                next_run_at: Some(Time(next)),
                last_trigger: src.annotations().get(RUN_REQUESTED_ANNOTATION).cloned(),
            };
            let ok = conds.iter().any(|c| c.type_ == "Ready" && c.status);
            self.metrics
                .import_runs
                .get_or_create(&crate::telemetry::labels([(
                    "outcome",
                    if ok { "ok" } else { "failed" },
                )]))
                .inc();
            self.write_status(src.as_ref(), src.status.as_ref(), &st)
                .await;
        }
        wake
    }

    /// Writes a run's objects: the Persons and Accounts of its records where they differ, the
    /// gone marks. Returns how many records changed and the failures.
    async fn write_import(
        &self,
        src: &ImportSource,
        o: &crate::import::engine::Outcome,
        accounts: &[Arc<Account>],
        people: &[Arc<Person>],
        now: jiff::Timestamp,
    ) -> (BTreeSet<String>, Vec<String>, BTreeSet<Key>) {
        let account_of: BTreeMap<Key, &Arc<Account>> =
            accounts.iter().map(|a| (Key::of(a.as_ref()), a)).collect();
        let person_of: BTreeMap<Key, &Arc<Person>> =
            people.iter().map(|p| (Key::of(p.as_ref()), p)).collect();
        // The usernames of known identities whose Person or Account this run changes.
        let mut modified = BTreeSet::new();
        let mut failures = vec![];
        let mut failed = BTreeSet::new();
        let ours = |m: &kube::api::ObjectMeta| {
            m.annotations
                .as_ref()
                .and_then(|a| a.get(SOURCE_UID_ANNOTATION))
                == Some(&src.spec.source_uid)
        };
        for (key, p) in &o.people {
            let current = person_of.get(key);
            if current.is_some_and(|c| c.spec == p.spec && ours(c.meta())) {
                continue;
            }
            if current.is_some()
                && let Some(a) = o.accounts.get(key)
            {
                modified.insert(a.spec.username.clone());
            }
            if let Some(e) = self
                .apply_derived::<Person>("roster-import", key, p.meta(), None, json!(p.spec))
                .await
            {
                failures.push(e);
            }
        }
        for (key, a) in &o.accounts {
            let current = account_of.get(key);
            let gone = current.is_some_and(|c| c.annotations().contains_key(GONE_AT_ANNOTATION));
            if gone {
                // Back in the source: no longer gone.
                let patch = json!({"metadata": {"annotations": {
                    GONE_AT_ANNOTATION: null, DEACTIVATE_AFTER_ANNOTATION: null, PURGE_AFTER_ANNOTATION: null}}});
                let api: Api<Account> = Api::namespaced(self.client.clone(), &key.namespace);
                if let Err(e) = api
                    .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    failures.push(format!("Account {key}: {e}"));
                }
            }
            if current.is_some_and(|c| c.spec == a.spec && ours(c.meta())) {
                continue;
            }
            if current.is_some() {
                modified.insert(a.spec.username.clone());
            }
            if let Some(e) = self
                .apply_derived::<Account>("roster-import", key, a.meta(), None, json!(a.spec))
                .await
            {
                failures.push(e);
                failed.insert(key.clone());
            }
        }
        // Taken over from a guest, once the import's own apply stands: the guest's manager lets
        // go of everything it applied — the owner reference (the Guest's deletion must not take
        // the objects), its label, the guest's validity — which server-side apply removes
        // unless the import applies it too.
        let from_guest = |m: &kube::api::ObjectMeta| {
            m.labels
                .as_ref()
                .is_some_and(|l| l.contains_key(crate::guest::GUEST_LABEL))
                || m.owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.kind == "Guest")
        };
        for key in o.people.keys() {
            if person_of.get(key).is_some_and(|p| from_guest(p.meta()))
                && let Some(e) = self.release_derived::<Person>("roster-guest", key).await
            {
                failures.push(e);
            }
        }
        for key in o.accounts.keys() {
            if account_of.get(key).is_some_and(|a| from_guest(a.meta()))
                && !failed.contains(key)
                && let Some(e) = self.release_derived::<Account>("roster-guest", key).await
            {
                failures.push(e);
            }
        }
        for key in o.removed.keys() {
            let Some(current) = account_of.get(key) else {
                continue;
            };
            if current.annotations().contains_key(GONE_AT_ANNOTATION) {
                continue;
            }
            let secs = |d: Option<&std::time::Duration>| d.map(|d| format!("{}s", d.as_secs()));
            let patch = json!({"metadata": {"annotations": {
                GONE_AT_ANNOTATION: now.to_string(),
                DEACTIVATE_AFTER_ANNOTATION: secs(o.deactivate_after.get(key)),
                PURGE_AFTER_ANNOTATION: secs(o.purge_after.get(key)),
            }}});
            let api: Api<Account> = Api::namespaced(self.client.clone(), &key.namespace);
            if let Err(e) = api
                .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                failures.push(format!("Account {key}: {e}"));
            }
        }
        (modified, failures, failed)
    }

    /// The run's report and its summary CSV as a ConfigMap `<source>-import-report`
    /// (`report.txt.gz`, `summary.csv.gz`: gzip + base64, each capped and marked when cut).
    /// Returns its name.
    async fn write_report(
        &self,
        src: &ImportSource,
        lines: &[String],
        summary: &str,
    ) -> Option<String> {
        let name = format!("{}-import-report", src.name_any());
        let ns = src.namespace().unwrap_or_default();
        let (report, cut_report) = gzip_capped(lines.iter().map(String::as_str), "\n", 1);
        let (csv, cut_summary) = gzip_capped(summary.split_inclusive("\r\n"), "", 1);
        let truncated = cut_report || cut_summary;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let doc = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns},
            "data": {
                "summary": format!("{} line(s){}", lines.len(), if truncated { " (truncated)" } else { "" }),
                "truncated": truncated.to_string(),
            },
            "binaryData": {"report.txt.gz": b64(&report), "summary.csv.gz": b64(&csv)},
        });
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
        match api
            .patch(
                &name,
                &PatchParams::apply("roster-import").force(),
                &Patch::Apply(&doc),
            )
            .await
        {
            Ok(_) => Some(name),
            Err(e) => {
                tracing::warn!(error = %e, "the import report was not written");
                None
            }
        }
    }
}

/// Lines (each followed by `end`) gzipped within [`REPORT_LIMIT`]: when the whole does not fit,
/// the first lines that do (the first `keep` always), so the stream stays a whole gzip file.
/// Returns the bytes and whether lines were left out.
fn gzip_capped<'a>(
    lines: impl Iterator<Item = &'a str>,
    end: &str,
    keep: usize,
) -> (Vec<u8>, bool) {
    let lines: Vec<&str> = lines.collect();
    let gzip = |n: usize| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        for l in &lines[..n] {
            let _ = gz.write_all(l.as_bytes());
            let _ = gz.write_all(end.as_bytes());
        }
        gz.finish().unwrap_or_default()
    };
    let mut n = lines.len();
    loop {
        let bytes = gzip(n);
        if bytes.len() <= REPORT_LIMIT || n <= keep {
            return (bytes, n < lines.len());
        }
        // Fewer lines, in proportion to the excess (and at least one fewer).
        let fit = (n as f64 * REPORT_LIMIT as f64 / bytes.len() as f64 * 0.95) as usize;
        n = fit.clamp(keep, n - 1);
    }
}

fn cond(type_: &'static str, status: bool, reason: &str, message: String) -> Cond {
    Cond {
        type_,
        status,
        reason: reason.into(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Condition, ConditionStatus, ImportSourceStatus};

    /// A source that could not be read is tried again within a minute, not at its interval:
    /// a ConfigMap applied just after its ImportSource is read on the next try.
    #[test]
    fn an_unreachable_source_is_retried_soon() {
        let now: jiff::Timestamp = "2030-01-01T12:00:00Z".parse().unwrap();
        let mut src: ImportSource = serde_json::from_value(serde_json::json!({
            "apiVersion": "roster.io/v1alpha1",
            "kind": "ImportSource",
            "metadata": {"name": "hr", "namespace": "physics", "generation": 1},
            "spec": {
                "sourceUID": "hr",
                "reader": {"type": "Csv", "csv": {"configMapRef": {"name": "x", "key": "y"}}},
                "mapping": {},
                "recordUID": "<id>",
            },
        }))
        .unwrap();
        let finished = now - jiff::SignedDuration::from_secs(90);
        let status = |unreachable: bool| ImportSourceStatus {
            observed_generation: Some(1),
            conditions: if unreachable {
                vec![Condition {
                    type_: "SourceUnreachable".into(),
                    status: ConditionStatus::True,
                    reason: "ReadFailed".into(),
                    message: String::new(),
                    last_transition_time: Time(finished),
                    observed_generation: Some(1),
                }]
            } else {
                vec![]
            },
            last_run: Some(ImportRun {
                finished_at: Some(Time(finished)),
                ..Default::default()
            }),
            ..Default::default()
        };
        src.status = Some(status(false));
        assert_eq!(
            due(&src, now),
            (false, finished + jiff::SignedDuration::from_secs(3600))
        );
        src.status = Some(status(true));
        assert_eq!(
            due(&src, now),
            (true, finished + jiff::SignedDuration::from_secs(60))
        );
    }
}
