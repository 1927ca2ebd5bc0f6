//! `roster plan` and `roster apply` in file mode (DESIGN.md §5.4).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use crate::config::Config;
use crate::ldap::{ApplyReport, Directory};
use crate::plan::simulate::simulate;
use crate::plan::{Op, Plan, Policy, plan};
use crate::site::load;
use crate::slurm::Report as SlurmReport;
use crate::slurm::apply::Outcome;

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
    let mut site = match loaded {
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
    let mut policy = Policy {
        prune: args.prune,
        ..Policy::new(&config)
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
    let mut guests = crate::guest::expand(
        &site.guests,
        &site,
        &config,
        now,
        &known,
        &Default::default(),
    );
    // Imports first: a guest whose person an import brings is superseded by it.
    let (imports_blocked, counters) = run_imports(
        &mut site,
        &mut policy,
        &observed,
        &config,
        now,
        args.secrets_dir.as_deref(),
        args.output,
    )
    .await;
    let imported: std::collections::BTreeSet<(String, String)> = site
        .accounts
        .iter()
        .filter(|(_, a)| {
            a.metadata
                .annotations
                .as_ref()
                .is_some_and(|n| n.contains_key(crate::api::SOURCE_UID_ANNOTATION))
        })
        .map(|(k, a)| (k.namespace.clone(), a.spec.username.clone()))
        .collect();
    guests.supersede(&site.guests, &imported);
    guests.merge_into(&mut site, &mut policy.removed, &mut policy.purge_after);
    let guests_blocked = guests.outcomes.values().any(|o| o.invalid) || imports_blocked;
    let first = plan(&site, &observed, now, &policy);
    print_guests(&guests, args.output);
    if !apply {
        // Slurm is planned against the directory as the LDAP changes would leave it.
        // Without Slurm or Gold there is nothing to plan after the directory: no copy of it,
        // no second plan (at 100,000 entries that is most of the memory).
        let backends = config.slurm.is_some() || config.gold.is_some();
        let simulated = if backends {
            simulate(&observed, &first, config.uid_range, config.gid_range)
        } else {
            crate::ldap::Observed::default()
        };
        let simulated = if backends { &simulated } else { &observed };
        let after_plan = if backends {
            plan(&site, simulated, now, &policy)
        } else {
            crate::plan::Plan::default()
        };
        let slurm = match crate::slurm::converge(
            &config,
            &mut dir,
            &site,
            simulated,
            &after_plan,
            now,
            true,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        let gold = crate::gold::converge(&config, &site, simulated, &after_plan, now, true)
            .await
            .map_err(|e| e.to_string());
        print_plan(&first, &slurm, &gold, args.output, &site.namespaces());
        let gold_steps = gold.as_ref().map(|g| g.steps.len()).unwrap_or(0);
        return if gold.is_err() {
            ExitCode::FAILURE
        } else if first.has_blocked() || guests_blocked || invalid_in_slurm(&slurm) {
            ExitCode::from(BLOCKED)
        } else if !first.ops.is_empty() || !slurm.calls.is_empty() || gold_steps > 0 {
            ExitCode::from(CHANGES)
        } else {
            ExitCode::SUCCESS
        };
    }
    let report = dir.apply(&config, &observed, &first.ops).await;
    // The directory is the truth: report the state it now holds (re-read only when
    // something was written; an unchanged directory is what was just observed).
    // (A failed or lost operation may have written part of its work: re-read then too.)
    let wrote =
        !report.done.is_empty() || !report.failed.is_empty() || !report.lost_races.is_empty();
    let after = if !wrote {
        observed
    } else {
        match dir
            .observe(&config.ldap.base_dn, config.ldap.page_size)
            .await
        {
            Ok(o) => o,
            Err(e) => {
                // Say what was written and what failed before the directory went away.
                print_apply(
                    &first,
                    &report,
                    &Plan::default(),
                    &SlurmReport::default(),
                    &Ok(crate::gold::Report::default()),
                    args.output,
                );
                return fail(format!("applied, but re-reading the directory failed: {e}"));
            }
        }
    };
    // Username counters of the imports, for the generated names now in the directory: a
    // generated name is never generated again, and a name not written advances nothing.
    let store = crate::import::engine::counters_to_store(&counters, &after, |u| {
        after.accounts.contains_key(u)
    });
    for (base, next) in &store {
        let cn = crate::import::engine::counter_cn(base);
        let dn = format!("cn={cn},{}", config.counters_dn());
        if let Err(e) = dir.set_counter(&dn, &cn, *next as i64).await {
            return fail(format!("storing the username counter {cn}: {e}"));
        }
    }
    let last = plan(&site, &after, now, &policy);
    let slurm =
        match crate::slurm::converge(&config, &mut dir, &site, &after, &last, now, false).await {
            Ok(r) => r,
            Err(e) => {
                print_apply(
                    &first,
                    &report,
                    &last,
                    &crate::slurm::Report::default(),
                    &Ok(crate::gold::Report::default()),
                    args.output,
                );
                return fail(e);
            }
        };
    // Gold last; whatever happens there, the directory and Slurm are done.
    let gold = crate::gold::converge(&config, &site, &after, &last, now, false)
        .await
        .map_err(|e| e.to_string());
    print_apply(&first, &report, &last, &slurm, &gold, args.output);
    let gold_failed = match &gold {
        Ok(g) => g.failed().next().is_some(),
        Err(_) => true,
    };
    // Running jobs hold a removal back until they end: not an error, a wait (exit 3).
    let slurm_failed = slurm.calls.iter().any(
        |(_, o)| matches!(o, Some(Outcome::Failed { reason, .. }) if *reason != "JobsRunning"),
    );
    let slurm_held = slurm.calls.iter().any(
        |(_, o)| matches!(o, Some(Outcome::Failed { reason, .. }) if *reason == "JobsRunning"),
    );
    if !report.failed.is_empty() || slurm_failed || gold_failed {
        ExitCode::FAILURE
    } else if last.has_blocked()
        || guests_blocked
        || !report.lost_races.is_empty()
        || slurm_held
        || invalid_in_slurm(&slurm)
    {
        ExitCode::from(BLOCKED)
    } else {
        ExitCode::SUCCESS
    }
}

/// Whether Slurm refused an object as written (a name or TRES name sacctmgr must never see):
/// the object is Invalid, and the run ends with exit code 3, not as converged.
fn invalid_in_slurm(slurm: &SlurmReport) -> bool {
    slurm.waiting.iter().any(|w| w.reason == "InvalidSlurmName")
}

/// Runs every ImportSource of the site (file mode): reads it, matches its records, and adds
/// the Persons and Accounts it stands for (and what is gone) to the site and the policy. A
/// source that cannot be read, or whose run aborts (too many bad rows, the deletion guard), adds
/// nothing and protects what it imported before from `--prune`. Returns whether any import is
/// blocked, and the username counters to store.
async fn run_imports(
    site: &mut crate::site::Site,
    policy: &mut Policy<'_>,
    observed: &crate::ldap::Observed,
    config: &Config,
    now: jiff::Timestamp,
    secrets_dir: Option<&std::path::Path>,
    output: Output,
) -> (bool, std::collections::BTreeMap<String, (String, u32)>) {
    let say = |line: String| match output {
        Output::Text => println!("{line}"),
        Output::Json => eprintln!("{line}"),
    };
    let mut blocked = false;
    let mut counters = std::collections::BTreeMap::new();
    for (key, (src, dir)) in site.imports.clone() {
        let mine =
            |e: &crate::ldap::Entry| e.first("rosterSourceUID") == Some(&src.spec.source_uid);
        let protect = |policy: &mut Policy<'_>| {
            for e in observed.accounts.values().filter(|e| mine(e)) {
                if let Some(o) = e.owned_by().filter(|o| o.kind == "Account") {
                    policy
                        .keep
                        .insert(crate::site::Key::new(o.namespace, o.name));
                }
            }
        };
        let (rows, errors) = match crate::import::files::read_source(&src, &dir, secrets_dir).await
        {
            Ok(r) => r,
            Err(e) => {
                say(format!(
                    "x ImportSource {key}: SourceUnreachable: {e}; nothing imported (an unreachable source is not an empty one)"
                ));
                protect(policy);
                blocked = true;
                continue;
            }
        };
        let o = crate::import::engine::run(&src, &key, &rows, &errors, site, observed, config, now);
        for line in &o.report {
            say(format!("  ImportSource {key}: {line}"));
        }
        if let Some(why) = &o.aborted {
            say(format!("x ImportSource {key}: Aborted: {why}"));
            protect(policy);
            blocked = true;
            continue;
        }
        let r = &o.run;
        say(format!(
            "ImportSource {key}: {} record(s): {} new, {} reactivated, {} gone, {} error(s){}",
            r.records,
            r.created,
            r.reactivated,
            r.deactivated,
            r.errors,
            if src.spec.dry_run {
                " — dryRun: nothing of it is applied"
            } else {
                ""
            }
        ));
        if src.spec.dry_run {
            protect(policy);
            continue;
        }
        site.people.extend(o.people);
        site.accounts.extend(o.accounts);
        policy.removed.extend(o.removed);
        policy.purge_after.extend(o.purge_after);
        policy.deactivate_after.extend(o.deactivate_after);
        counters.extend(o.counters);
    }
    (blocked, counters)
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

fn slurm_json(slurm: &SlurmReport) -> serde_json::Value {
    json!({
        "calls": slurm.calls.iter().map(|(c, o)| {
            let (status, reason, message) = match o {
                None => ("planned", "", String::new()),
                Some(Outcome::Done) => ("done", "", String::new()),
                Some(Outcome::AlreadySo) => ("alreadySo", "", String::new()),
                Some(Outcome::Failed { reason, message }) => ("failed", *reason, message.clone()),
            };
            json!({"args": c.args, "description": c.what, "status": status, "reason": reason, "message": message})
        }).collect::<Vec<_>>(),
        "waiting": slurm.waiting.iter().map(|w| json!({"kind": w.kind, "namespace": w.key.namespace, "name": w.key.name, "reason": w.reason, "message": w.message})).collect::<Vec<_>>(),
        "unmanaged": slurm.unmanaged,
        "invocations": slurm.invocations,
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

type GoldOutcome = Result<crate::gold::Report, String>;

fn gold_json(gold: &GoldOutcome) -> serde_json::Value {
    match gold {
        Err(e) => json!({"error": e}),
        Ok(g) => json!({
            "steps": g.steps.iter().map(|s| json!({
                "what": s.what,
                "kind": s.concerns.as_ref().map(|(k, _)| k.to_string()),
                "namespace": s.concerns.as_ref().map(|(_, k)| k.namespace.clone()),
                "name": s.concerns.as_ref().map(|(_, k)| k.name.clone()),
                "error": s.error.as_ref().map(|e| e.to_string()),
            })).collect::<Vec<_>>(),
            "notes": g.notes,
            "requests": g.requests,
        }),
    }
}

/// Gold's lines: `+ gold: …` per request (`x gold: …` when it failed), `? gold: …` notes.
fn print_gold(gold: &GoldOutcome) {
    match gold {
        Err(e) => println!("x gold: {e}"),
        Ok(g) => {
            for s in &g.steps {
                match &s.error {
                    Some(e) => println!("x gold: {}: {e}", s.what),
                    None => println!("+ gold: {}", s.what),
                }
            }
            for n in &g.notes {
                println!("? gold: {n}");
            }
        }
    }
}

fn gold_steps(gold: &GoldOutcome) -> usize {
    gold.as_ref().map(|g| g.steps.len()).unwrap_or(0)
}

fn print_plan(
    plan: &Plan,
    slurm: &SlurmReport,
    gold: &GoldOutcome,
    output: Output,
    namespaces: &BTreeSet<String>,
) {
    let adds = plan
        .ops
        .iter()
        .filter(|o| matches!(o, Op::Add { .. }))
        .count();
    let mods = plan.ops.len() - adds;
    let blocked = plan.objects.iter().filter(|o| o.is_blocked()).count();
    match output {
        Output::Json => {
            let doc = json!({
                "version": JSON_VERSION,
                "changes": plan.ops.iter().map(op_json).collect::<Vec<_>>(),
                "objects": objects_json(plan),
                "summary": {"add": adds, "modify": mods, "blocked": blocked, "slurmCalls": slurm.calls.len(), "goldRequests": gold_steps(gold)},
                "slurm": slurm_json(slurm),
                "gold": gold_json(gold),
                "nextWakeup": plan.next_wakeup.map(|t| t.to_string()),
            });
            println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
        }
        Output::Text => {
            for op in &plan.ops {
                println!("{}", op.describe());
            }
            for (call, _) in &slurm.calls {
                println!("+ slurm: sacctmgr -i {}", call.args.join(" "));
            }
            print_gold(gold);
            for line in blocked_lines(plan) {
                println!("{line}");
            }
            for w in &slurm.waiting {
                println!("… {} {}: {}: {}", w.kind, w.key, w.reason, w.message);
            }
            for line in upcoming(plan, namespaces) {
                println!("{line}");
            }
            for u in &slurm.unmanaged {
                println!("? slurm: {u}");
            }
            if plan.ops.is_empty()
                && blocked == 0
                && slurm.calls.is_empty()
                && gold_steps(gold) == 0
            {
                println!("No changes: the backends match the manifests.");
            } else {
                println!(
                    "Plan: {adds} to add, {mods} to change, {} Slurm call(s), {} Gold request(s), {blocked} object(s) blocked.",
                    slurm.calls.len(),
                    gold_steps(gold)
                );
            }
        }
    }
}

fn print_apply(
    first: &Plan,
    report: &ApplyReport,
    last: &Plan,
    slurm: &SlurmReport,
    gold: &GoldOutcome,
    output: Output,
) {
    match output {
        Output::Json => {
            let doc = json!({
                "version": JSON_VERSION,
                "applied": report.done.iter().map(|(i, n)| {
                    let mut j = op_json(&first.ops[*i]);
                    j["allocated"] = json!(n);
                    j
                }).collect::<Vec<_>>(),
                "failed": report.failed.iter().map(|(i, m)| failure_json(&first.ops[*i], m)).collect::<Vec<_>>(),
                "lostRaces": report.lost_races.iter().map(|(i, m)| failure_json(&first.ops[*i], m)).collect::<Vec<_>>(),
                "counterRetries": report.counter_retries,
                "writes": report.done.len(),
                "objects": objects_json(last),
                "remaining": last.ops.len(),
                "slurm": slurm_json(slurm),
                "gold": gold_json(gold),
            });
            println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
        }
        Output::Text => {
            for (i, n) in &report.done {
                let line = first.ops[*i].describe();
                match n {
                    Some(n) => println!("{line} → {n}"),
                    None => println!("{line}"),
                }
            }
            for (i, m) in report.failed.iter().chain(&report.lost_races) {
                let op = &first.ops[*i];
                println!("x {}: {}: {m}", op.target(), op.dn());
            }
            for (call, outcome) in &slurm.calls {
                match outcome {
                    Some(Outcome::Failed { reason, message }) => {
                        println!("x slurm: {}: {reason}: {message}", call.what)
                    }
                    _ => println!("+ slurm: {}", call.what),
                }
            }
            print_gold(gold);
            for line in blocked_lines(last) {
                println!("{line}");
            }
            for w in &slurm.waiting {
                println!("… {} {}: {}: {}", w.kind, w.key, w.reason, w.message);
            }
            if report.done.is_empty()
                && report.failed.is_empty()
                && slurm.calls.is_empty()
                && gold_steps(gold) == 0
            {
                println!("No changes: the backends already match the manifests.");
            } else {
                println!(
                    "Applied {} write(s), {} failed; counter retries: {}.",
                    report.done.len(),
                    report.failed.len() + report.lost_races.len(),
                    report.counter_retries
                );
            }
        }
    }
}
