//! `roster plan` and `roster apply` in file mode (DESIGN.md §5.4).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use crate::backend::{ChangeOutcome, Mode, Outcome};
use crate::config::Config;
use crate::converge::{self, Declared, PassError, PassReport};
use crate::ldap::Directory;
use crate::plan::{Op, Plan, Policy};
use crate::site::load;

/// Exit code: changes pending (plan).
const CHANGES: u8 = 2;
/// Exit code: some objects are Invalid or in Conflict.
const BLOCKED: u8 = 3;
/// Version of the `-o json` document.
const JSON_VERSION: u32 = 1;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A manifest file, a directory (read recursively) or `-` for stdin; repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// The configuration file.
    #[arg(long, env = "ROSTER_CONFIG")]
    config: PathBuf,
    /// Namespace for objects whose metadata has none.
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Deactivate Roster's accounts in the given namespaces that the manifests no longer declare.
    #[arg(long)]
    prune: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    output: Output,
    /// Plan as if it were this instant (RFC 3339): for tests and rehearsals of the lifecycle.
    #[arg(long, hide = true)]
    now: Option<jiff::Timestamp>,
    /// Secrets (and ConfigMaps) that resources refer to, as files `<dir>/<name>/<key>`.
    #[arg(long)]
    secrets_dir: Option<PathBuf>,
    /// Write the imports' summary here as CSV: one line per row (and per identity gone from
    /// its source) with source, row, recordUID, action (new, changed, reactivated, gone,
    /// unchanged, skipped), username and problems. With `plan`, what the run would do.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Text,
    Json,
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

pub async fn run(args: Args, apply: bool) -> ExitCode {
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    // The directory is read (network, and BER decoding on the runtime's threads) while the
    // manifests are parsed and validated (CPU): on two cores the no-op costs the longer of the
    // two, not their sum. Manifest errors are still reported first, and end the read.
    let reading = tokio::spawn({
        let config = config.clone();
        async move {
            let mut dir = Directory::connect(&config).await?;
            dir.check_schema().await?;
            let observed = dir
                .observe(&config.ldap.base_dn, config.ldap.page_size)
                .await?;
            Ok::<_, crate::ldap::DirectoryError>((dir, observed))
        }
    });
    let (files, namespace) = (args.files.clone(), args.namespace.clone());
    let loaded = tokio::task::spawn_blocking(move || load(&files, namespace.as_deref())).await;
    let site = match loaded {
        Ok(Ok(s)) => s,
        Ok(Err(errors)) => {
            reading.abort();
            for e in &errors {
                eprintln!("error: {e}");
            }
            eprintln!(
                "error: {} problem(s) in the manifests; nothing was planned or written",
                errors.len()
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            reading.abort();
            return fail(format!("reading the manifests: {e}"));
        }
    };
    let (mut dir, observed) = match reading.await {
        Ok(Ok(read)) => read,
        Ok(Err(e)) => return fail(e),
        Err(e) => return fail(format!("reading the directory: {e}")),
    };
    let now = args.now.unwrap_or_else(jiff::Timestamp::now);
    // Guests stand for Persons and Accounts. A guest is established once its account is in
    // the directory; file mode keeps no status, so the 12-month rule counts from now.
    let known = site
        .guests
        .iter()
        .filter(|(_, g)| observed.accounts.contains_key(&g.spec.account.username))
        .map(|(k, _)| (k.clone(), None))
        .collect();
    let guests = crate::guest::expand(
        &site.guests,
        &site,
        &config,
        now,
        &known,
        &Default::default(),
    );
    let policy = Policy {
        prune: args.prune,
        ..Policy::new(&config)
    };
    let mut declared = Declared::new(site, policy);
    // Imports first: a guest whose person an import brings is superseded by it.
    let summaries = run_imports(
        &mut declared,
        &observed,
        &config,
        now,
        args.secrets_dir.as_deref(),
        args.output,
    )
    .await;
    let imported = declared.imported_accounts();
    declared.add_guests(guests, &imported);
    print_guests(&declared.guests, args.output);
    let mode = if apply { Mode::Apply } else { Mode::Plan };
    let mut report = converge::run(&config, now, mode, &declared, &mut dir, observed, None).await;
    if let Some(Err(e)) = &report.slurm {
        eprintln!("error: {e}");
    }
    // The notices the pass owes, from the directory as it left it (a pass that failed
    // midway owes none: the next one tells what is then true).
    let notices = if report.error.is_none() && config.notices.is_some() {
        converge::notices::send(
            &config,
            &mut dir,
            &declared.site,
            &mut report.directory,
            &report.last,
            now,
            mode,
        )
        .await
    } else {
        Default::default()
    };
    for line in notices.lines(mode) {
        match args.output {
            Output::Text => println!("{line}"),
            Output::Json => eprintln!("{line}"),
        }
    }
    if let Some(path) = &args.report
        && let Err(e) = write_summary(path, &summaries, &declared, &report)
    {
        return fail(format!("writing the report {}: {e}", path.display()));
    }
    let blocked = declared.blocked() || report.invalid_in_slurm();
    if !apply {
        print_plan(&report, args.output, &declared.site.namespaces());
        return if report.failed() {
            ExitCode::FAILURE
        } else if report.first.has_blocked() || blocked {
            ExitCode::from(BLOCKED)
        } else if !report.changes.is_empty() {
            ExitCode::from(CHANGES)
        } else {
            ExitCode::SUCCESS
        };
    }
    match &report.error {
        Some(e @ PassError::Reread(_)) => {
            // Say what was written and what failed before the directory went away.
            print_apply(&report, args.output);
            return fail(e);
        }
        Some(e @ PassError::Counter(_)) => return fail(e),
        None => {}
    }
    print_apply(&report, args.output);
    if report.failed() {
        ExitCode::FAILURE
    } else if report.last.has_blocked()
        || blocked
        || !report.ldap.lost_races.is_empty()
        || report.held()
    {
        ExitCode::from(BLOCKED)
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs every ImportSource of the site (file mode): reads it, matches its records, and adds
/// the Persons and Accounts it stands for (and what is gone) to the declared state. A source
/// that cannot be read, or whose run aborts (too many bad rows, the deletion guard), adds
/// nothing and protects what it imported before from `--prune`.
/// The imports' summary CSV ([`crate::import::engine::summary_csv`]) written to `path`
/// (atomically: a file next to it, renamed): a known identity is `changed` when the pass
/// changed (or, planning, would change) anything of its Account or Person.
fn write_summary(
    path: &std::path::Path,
    summaries: &[(String, Vec<crate::import::engine::RowSummary>)],
    declared: &Declared<'_>,
    report: &PassReport,
) -> std::io::Result<()> {
    let touched: BTreeSet<&crate::site::Key> = report
        .changes
        .iter()
        .flat_map(|c| c.targets.iter().chain(c.subject.as_ref()))
        .map(|t| &t.key)
        .collect();
    let changed: BTreeSet<&str> = declared
        .site
        .accounts
        .iter()
        .filter(|(k, a)| {
            touched.contains(k)
                || touched.contains(&crate::site::Key::new(&k.namespace, &a.spec.person))
        })
        .map(|(_, a)| a.spec.username.as_str())
        .collect();
    let csv = crate::import::engine::summary_csv(
        summaries.iter().map(|(s, r)| (s.as_str(), r.as_slice())),
        &|u| changed.contains(u),
    );
    let tmp = path.with_extension("roster-tmp");
    std::fs::write(&tmp, csv)?;
    std::fs::rename(&tmp, path)
}

async fn run_imports(
    declared: &mut Declared<'_>,
    observed: &crate::plan::Observed,
    config: &Config,
    now: jiff::Timestamp,
    secrets_dir: Option<&std::path::Path>,
    output: Output,
) -> Vec<(String, Vec<crate::import::engine::RowSummary>)> {
    let mut summaries = vec![];
    let say = |line: String| match output {
        Output::Text => println!("{line}"),
        Output::Json => eprintln!("{line}"),
    };
    for (key, (src, dir)) in declared.site.imports.clone() {
        let (rows, errors) = match crate::import::files::read_source(
            &src,
            &dir,
            secrets_dir,
            &declared.site.config_maps,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                say(format!(
                    "x ImportSource {key}: SourceUnreachable: {e}; nothing imported (an unreachable source is not an empty one)"
                ));
                declared.keep_imported(&src.spec.source_uid, observed);
                declared.imports_blocked = true;
                continue;
            }
        };
        let o = crate::import::engine::run(
            &src,
            &key,
            &rows,
            &errors,
            &declared.site,
            observed,
            config,
            now,
        );
        for line in &o.report {
            say(format!("  ImportSource {key}: {line}"));
        }
        summaries.push((key.to_string(), o.rows.clone()));
        if let Some(why) = &o.aborted {
            say(format!("x ImportSource {key}: Aborted: {why}"));
            declared.keep_imported(&src.spec.source_uid, observed);
            declared.imports_blocked = true;
            continue;
        }
        let r = &o.run;
        say(format!(
            "ImportSource {key}: {} record(s): {} new, {} reactivated, {} gone, {} error(s) (rows skipped), {} warning(s) (rows imported with a problem){}",
            r.records,
            r.created,
            r.reactivated,
            r.deactivated,
            r.errors,
            r.warnings,
            if src.spec.dry_run {
                " — dryRun: nothing of it is applied"
            } else {
                ""
            }
        ));
        if src.spec.dry_run {
            declared.keep_imported(&src.spec.source_uid, observed);
            continue;
        }
        declared.add_import(o);
    }
    summaries
}

/// Guests' own news (text mode, on stderr so JSON on stdout stays one document): rule
/// violations, a host gone, the expiry notice, a purge by policy.
fn print_guests(guests: &crate::guest::Expansion, output: Output) {
    for (key, o) in &guests.outcomes {
        for c in &o.conditions {
            let sign = match c.type_ {
                "Invalid" => "x",
                "Expiring" => "⏲",
                _ => "?",
            };
            let line = format!(
                "{sign} Guest {key}: {}: {}: {}",
                c.type_, c.reason, c.message
            );
            match output {
                Output::Text => println!("{line}"),
                Output::Json => eprintln!("{line}"),
            }
        }
        if o.purged && output == Output::Text {
            println!(
                "- Guest {key}: purged by the guest policy (validUntil + purge delay has passed)"
            );
        }
    }
}

fn op_json(op: &Op) -> serde_json::Value {
    let t = op.target();
    json!({
        "action": op.verb(),
        "kind": t.kind,
        "namespace": t.key.namespace,
        "name": t.key.name,
        "dn": op.dn(),
        "description": op.describe(),
    })
}

/// "⏲ Account physics/ada: Purge at … (in 93 days)", soonest first: for the namespaces of the
/// input only (a repository's plan does not list another tenant's timers).
fn upcoming(plan: &Plan, namespaces: &BTreeSet<String>) -> Vec<String> {
    let now = plan.now;
    let mut items: Vec<(jiff::Timestamp, String)> = plan
        .objects
        .iter()
        .filter(|o| namespaces.contains(&o.target.key.namespace))
        .filter_map(|o| {
            let (action, at) = o.next_transition?;
            let days = (at.as_second() - now.as_second()).div_euclid(86_400);
            Some((
                at,
                format!("⏲ {}: {action} at {at} (in {days} days)", o.target),
            ))
        })
        .collect();
    items.sort();
    items.into_iter().map(|(_, l)| l).collect()
}

/// A change's outcome as `-o json` spells it: status, reason, message.
fn status_json(o: &Outcome) -> (&'static str, &'static str, String) {
    match o {
        Outcome::Planned => ("planned", "", String::new()),
        Outcome::Done => ("done", "", String::new()),
        Outcome::AlreadySo => ("alreadySo", "", String::new()),
        Outcome::Failed { reason, message } => ("failed", reason, message.clone()),
    }
}

/// Calls of a backend this run made, from the metrics (queries and retries included).
fn calls_of(backend: &str) -> f64 {
    let m = crate::telemetry::global();
    m.sum("roster_backend_operations_total", &[("backend", backend)])
        - m.sum(
            "roster_backend_operations_total",
            &[("backend", backend), ("operation", "observe")],
        )
}

fn changes_of<'a>(
    report: &'a PassReport,
    backend: &'a str,
) -> impl Iterator<Item = &'a ChangeOutcome> {
    report.changes.iter().filter(move |c| c.backend == backend)
}

fn slurm_json(report: &PassReport) -> serde_json::Value {
    let Some(slurm) = &report.slurm else {
        return json!({"calls": [], "waiting": [], "unmanaged": [], "invocations": 0});
    };
    let (waiting, unmanaged, error) = match slurm {
        Ok(s) => (&s.waiting[..], &s.unmanaged[..], None),
        Err(e) => (&[][..], &[][..], Some(e)),
    };
    json!({
        "calls": changes_of(report, "slurm").map(|c| {
            let (status, reason, message) = status_json(&c.outcome);
            json!({"args": c.command, "description": c.what, "status": status, "reason": reason, "message": message})
        }).collect::<Vec<_>>(),
        "waiting": waiting.iter().map(|w| json!({"kind": w.kind, "namespace": w.key.namespace, "name": w.key.name, "reason": w.reason, "message": w.message})).collect::<Vec<_>>(),
        "unmanaged": unmanaged,
        "invocations": calls_of("slurm"),
        "error": error,
    })
}

fn failure_json(op: &Op, message: &str) -> serde_json::Value {
    let mut j = op_json(op);
    j["message"] = json!(message);
    j
}

fn objects_json(plan: &Plan) -> Vec<serde_json::Value> {
    plan.objects
        .iter()
        .map(|o| {
            json!({
                "kind": o.target.kind,
                "namespace": o.target.key.namespace,
                "name": o.target.key.name,
                "phase": o.phase,
                "uidNumber": o.uid_number,
                "gidNumber": o.gid_number,
                "dn": o.dn,
                "nextTransition": o.next_transition.map(|(action, at)| json!({"action": action, "at": at.to_string()})),
                "conditions": o.conditions.iter().filter(|c| c.type_ != "Ready" || !c.status).collect::<Vec<_>>(),
            })
        })
        .collect()
}

fn blocked_lines(plan: &Plan) -> Vec<String> {
    plan.objects
        .iter()
        .filter(|o| o.is_blocked() || o.is_guarded())
        .map(|o| {
            if o.is_guarded() && !o.is_blocked() {
                let m = o
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Guarded")
                    .map(|c| c.message.as_str())
                    .unwrap_or("");
                return format!("⏸ {}: Guarded: {m}", o.target);
            }
            let sign = if o.phase == crate::api::Phase::Conflict {
                "!"
            } else {
                "x"
            };
            format!(
                "{sign} {}: {:?}: {}",
                o.target,
                o.phase,
                o.message().unwrap_or("")
            )
        })
        .collect()
}

fn gold_json(report: &PassReport) -> serde_json::Value {
    match &report.gold {
        None => json!({"steps": [], "notes": [], "requests": 0}),
        Some(Err(e)) => json!({"error": e}),
        Some(Ok(g)) => json!({
            "steps": changes_of(report, "gold").map(|c| {
                let t = c.subject.as_ref();
                json!({
                    "what": c.what,
                    "kind": t.map(|t| t.kind.to_string()),
                    "namespace": t.map(|t| t.key.namespace.clone()),
                    "name": t.map(|t| t.key.name.clone()),
                    "error": match &c.outcome { Outcome::Failed { message, .. } => Some(message.clone()), _ => None },
                })
            }).collect::<Vec<_>>(),
            "notes": g.notes,
            "requests": calls_of("gold"),
        }),
    }
}

/// Gold's lines: `+ gold: …` per request (`x gold: …` when it failed), `? gold: …` notes.
fn print_gold(report: &PassReport) {
    match &report.gold {
        None => {}
        Some(Err(e)) => println!("x gold: {e}"),
        Some(Ok(g)) => {
            for c in changes_of(report, "gold") {
                match &c.outcome {
                    Outcome::Failed { message, .. } => println!("x gold: {}: {message}", c.what),
                    _ => println!("+ gold: {}", c.what),
                }
            }
            for n in &g.notes {
                println!("? gold: {n}");
            }
        }
    }
}

/// What Slurm waits for, and leaves alone.
fn slurm_waiting(report: &PassReport) -> (&[crate::slurm::desired::Waiting], &[String]) {
    match &report.slurm {
        Some(Ok(s)) => (&s.waiting, &s.unmanaged),
        _ => (&[], &[]),
    }
}

fn print_plan(report: &PassReport, output: Output, namespaces: &BTreeSet<String>) {
    let plan = &report.first;
    let adds = plan
        .ops
        .iter()
        .filter(|o| matches!(o, Op::Add { .. }))
        .count();
    let mods = plan.ops.len() - adds;
    let blocked = plan.objects.iter().filter(|o| o.is_blocked()).count();
    let (slurm_calls, gold_steps) = (
        report.downstream_changes("slurm"),
        report.downstream_changes("gold"),
    );
    match output {
        Output::Json => {
            let doc = json!({
                "version": JSON_VERSION,
                "changes": plan.ops.iter().map(op_json).collect::<Vec<_>>(),
                "objects": objects_json(plan),
                "summary": {"add": adds, "modify": mods, "blocked": blocked, "slurmCalls": slurm_calls, "goldRequests": gold_steps},
                "slurm": slurm_json(report),
                "gold": gold_json(report),
                "nextWakeup": plan.next_wakeup.map(|t| t.to_string()),
                "metrics": crate::telemetry::global().samples(),
            });
            println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
        }
        Output::Text => {
            for op in &plan.ops {
                println!("{}", op.describe());
            }
            for c in changes_of(report, "slurm") {
                println!("+ slurm: sacctmgr -i {}", c.command.join(" "));
            }
            print_gold(report);
            for line in blocked_lines(plan) {
                println!("{line}");
            }
            let (waiting, unmanaged) = slurm_waiting(report);
            for w in waiting {
                println!("… {} {}: {}: {}", w.kind, w.key, w.reason, w.message);
            }
            for line in upcoming(plan, namespaces) {
                println!("{line}");
            }
            for u in unmanaged {
                println!("? slurm: {u}");
            }
            if plan.ops.is_empty() && blocked == 0 && slurm_calls == 0 && gold_steps == 0 {
                println!("No changes: the backends match the manifests.");
            } else {
                println!(
                    "Plan: {adds} to add, {mods} to change, {slurm_calls} Slurm call(s), {gold_steps} Gold request(s), {blocked} object(s) blocked."
                );
            }
        }
    }
}

fn print_apply(report: &PassReport, output: Output) {
    let (first, applied, last) = (&report.first, &report.ldap, &report.last);
    match output {
        Output::Json => {
            let doc = json!({
                "version": JSON_VERSION,
                "applied": applied.done.iter().map(|(i, n)| {
                    let mut j = op_json(&first.ops[*i]);
                    j["allocated"] = json!(n);
                    j
                }).collect::<Vec<_>>(),
                "failed": applied.failed.iter().map(|(i, m)| failure_json(&first.ops[*i], m)).collect::<Vec<_>>(),
                "lostRaces": applied.lost_races.iter().map(|(i, m)| failure_json(&first.ops[*i], m)).collect::<Vec<_>>(),
                "counterRetries": applied.counter_retries,
                "writes": applied.done.len(),
                "objects": objects_json(last),
                "remaining": last.ops.len(),
                "slurm": slurm_json(report),
                "gold": gold_json(report),
                "metrics": crate::telemetry::global().samples(),
            });
            println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
        }
        Output::Text => {
            for (i, n) in &applied.done {
                let line = first.ops[*i].describe();
                match n {
                    Some(n) => println!("{line} → {n}"),
                    None => println!("{line}"),
                }
            }
            for (i, m) in applied.failed.iter().chain(&applied.lost_races) {
                let op = &first.ops[*i];
                println!("x {}: {}: {m}", op.target(), op.dn());
            }
            if let Some(Err(e)) = &report.slurm {
                println!("x slurm: {e}");
            }
            for c in changes_of(report, "slurm") {
                match &c.outcome {
                    Outcome::Failed { reason, message } => {
                        println!("x slurm: {}: {reason}: {message}", c.what)
                    }
                    _ => println!("+ slurm: {}", c.what),
                }
            }
            print_gold(report);
            for line in blocked_lines(last) {
                println!("{line}");
            }
            let (waiting, _) = slurm_waiting(report);
            for w in waiting {
                println!("… {} {}: {}: {}", w.kind, w.key, w.reason, w.message);
            }
            let downstream = report.downstream_changes("slurm") + report.downstream_changes("gold");
            if applied.done.is_empty() && applied.failed.is_empty() && downstream == 0 {
                println!("No changes: the backends already match the manifests.");
            } else {
                println!(
                    "Applied {} write(s), {} failed; counter retries: {}.",
                    applied.done.len(),
                    applied.failed.len() + applied.lost_races.len(),
                    applied.counter_retries
                );
            }
        }
    }
}
