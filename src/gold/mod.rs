//! The Gold allocation manager backend, spoken over SSSRMAP (Gold's wire protocol): observe in
//! six bulk queries, compute the differences, send only those — in stages, several requests in
//! flight, transient failures retried, deposits checked against Gold before any retry.

pub mod proto;
pub mod server;
pub mod sync;
pub mod xml;

use std::time::Duration;

use futures::StreamExt;

pub use crate::api::names::is_gold_name;
pub use proto::{Client, GoldError, Request};

use crate::config::Config;
use crate::plan::Observed;
use crate::plan::{Kind, Plan};
use crate::site::{Key, Site};

/// What one Gold convergence did (or, dry, would do).
#[derive(Debug, Default)]
pub struct Report {
    /// Each step: what, the object it concerns, and (unless dry) the error if it failed.
    pub steps: Vec<StepResult>,
    /// What Roster leaves alone in Gold and says so.
    pub notes: Vec<String>,
    /// Requests sent, queries included.
    pub requests: u64,
}

#[derive(Debug, Clone)]
pub struct StepResult {
    pub what: String,
    pub concerns: Option<(Kind, Key)>,
    pub error: Option<GoldError>,
}

impl Report {
    pub fn failed(&self) -> impl Iterator<Item = &StepResult> {
        self.steps.iter().filter(|s| s.error.is_some())
    }
}

/// Why Gold could not be converged at all.
#[derive(Debug, thiserror::Error)]
pub enum GoldFailure {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Gold(#[from] GoldError),
}

/// The client for the configured server (reads the key now; never logs it).
pub fn client(config: &Config) -> Result<Option<Client>, GoldFailure> {
    let Some(g) = &config.gold else {
        return Ok(None);
    };
    let key = g.auth_key(config)?;
    Ok(Some(Client::new(
        format!("{}:{}", g.host, g.port),
        g.actor.clone(),
        key,
        Duration::from_secs(g.timeout_seconds),
    )))
}

/// Sends a request, retrying what is transient (with a short backoff).
async fn send(
    client: &Client,
    req: &Request,
    attempts: u32,
    count: &mut u64,
) -> Result<proto::Response, GoldError> {
    let mut delay = Duration::from_millis(200);
    let mut last = None;
    for _ in 0..attempts.max(1) {
        *count += 1;
        match client.send(req).await {
            Ok(r) => return Ok(r),
            // A query lost on the way is safe to ask again; a write is not (it may be done).
            Err(e)
                if e.is_transient()
                    || (req.action == "Query" && matches!(e, GoldError::NoReply { .. })) =>
            {
                last = Some(e);
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("at least one attempt"))
}

/// Reads Gold's state (queries only, so a connection lost on the way is safe to try again),
/// up to `attempts` times with a short backoff.
async fn observe(client: &Client, attempts: u32) -> Result<(sync::State, u64), GoldError> {
    let mut delay = Duration::from_millis(200);
    let mut tries = 0;
    loop {
        tries += 1;
        match sync::observe(client).await {
            Err(e)
                if tries < attempts.max(1)
                    && (e.is_transient() || matches!(e, GoldError::NoReply { .. })) =>
            {
                tracing::debug!(error = %e, "reading Gold failed; trying again");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            other => return other,
        }
    }
}

/// The allocations of one account as Gold holds them now.
async fn allocations_of(
    client: &Client,
    account: &str,
    count: &mut u64,
) -> Result<Vec<sync::Allocation>, GoldError> {
    *count += 1;
    let r = client
        .send(
            &Request::new("Query", "Allocation")
                .get("Id")
                .get("Account")
                .get("StartTime")
                .get("EndTime")
                .get("Amount")
                .get("Deposited")
                .get("Description")
                .filter("Account", account),
        )
        .await?;
    Ok(r.data.iter().map(sync::allocation).collect())
}

/// A deposit is not idempotent: whatever went wrong, Gold is asked whether it happened before
/// it is tried again.
async fn deposit(
    client: &Client,
    account: &str,
    w: &sync::Window,
    expected: i64,
    attempts: u32,
    count: &mut u64,
) -> Result<(), GoldError> {
    let mut req = Request::new("Deposit", "Account")
        .option("Id", account)
        .option("Amount", &w.amount.to_string())
        .option("StartTime", &w.start.to_string())
        .option("EndTime", &w.end.to_string());
    if !w.description.is_empty() {
        req = req.option("Description", &w.description);
    }
    let mut last = None;
    for _ in 0..attempts.max(1) {
        *count += 1;
        match client.send(&req).await {
            Ok(_) => return Ok(()),
            Err(e @ GoldError::Failed { .. }) | Err(e @ GoldError::Authentication { .. }) => {
                return Err(e);
            }
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(200)).await;
                let now = allocations_of(client, account, count).await;
                if let Ok(list) = now
                    && list
                        .iter()
                        .any(|a| a.start == w.start && a.end == w.end && a.deposited >= expected)
                {
                    return Ok(());
                }
            }
        }
    }
    Err(last.expect("at least one attempt"))
}

/// Sends one step (a deposit goes to the project's account); the error, if any, and the number
/// of requests it took.
async fn run_step(
    client: &Client,
    s: &sync::Step,
    accounts: &std::collections::BTreeMap<String, String>,
    have: &sync::State,
    attempts: u32,
) -> (Option<GoldError>, u64) {
    let mut count = 0;
    let error = match &s.deposit {
        Some((project, w)) => match accounts.get(project) {
            None => Some(GoldError::Failed {
                what: format!("Deposit for project {project}"),
                code: "740".into(),
                message: format!("project {project} has no Gold account"),
            }),
            Some(id) => {
                let before = have
                    .allocations
                    .get(id)
                    .and_then(|l| l.iter().find(|a| a.start == w.start && a.end == w.end))
                    .map(|a| a.deposited)
                    .unwrap_or(0);
                deposit(client, id, w, before + w.amount, attempts, &mut count)
                    .await
                    .err()
            }
        },
        None => send(client, &s.request, attempts, &mut count).await.err(),
    };
    (error, count)
}

/// Observes Gold, plans against the directory as it now is, and sends the requests (unless
/// `dry`).
pub async fn converge(
    config: &Config,
    site: &Site,
    ldap: &Observed,
    plan: &Plan,
    now: jiff::Timestamp,
    dry: bool,
) -> Result<Report, GoldFailure> {
    let Some(client) = client(config)? else {
        return Ok(Report::default());
    };
    let g = config.gold.as_ref().expect("client implies config");
    let mut report = Report::default();
    let (have, queries) = observe(&client, g.attempts).await?;
    report.requests += queries;
    let want = sync::desired(site, ldap, plan, config, now);
    let (steps, notes) = sync::diff(&have, &want);
    report.notes = notes;
    let concerns = |c: &Option<(Kind, String)>| -> Option<(Kind, Key)> {
        let (kind, name) = c.as_ref()?;
        want.owners
            .get(&(*kind, name.clone()))
            .map(|k| (*kind, k.clone()))
    };
    let describe = |s: &sync::Step| match &s.deposit {
        Some((p, w)) => format!(
            "Deposit {} credits on project {p}'s account for {}..{}",
            w.amount, w.start, w.end
        ),
        None => s.request.describe(),
    };
    if dry {
        report.steps = steps
            .iter()
            .map(|s| StepResult {
                what: describe(s),
                concerns: concerns(&s.concerns),
                error: None,
            })
            .collect();
        return Ok(report);
    }
    let mut accounts = have.accounts.clone();
    let mut stage_start = 0;
    while stage_start < steps.len() {
        let stage = steps[stage_start].stage;
        let end = steps[stage_start..]
            .iter()
            .position(|s| s.stage != stage)
            .map(|n| stage_start + n)
            .unwrap_or(steps.len());
        let batch = &steps[stage_start..end];
        // New projects got their account from Gold just now.
        if stage == sync::Stage::Allocations
            && batch
                .iter()
                .filter_map(|s| s.deposit.as_ref())
                .any(|(p, _)| !accounts.contains_key(p))
        {
            // (Through AccountProject: the new account is the one linked to the project,
            // whatever other accounts carry its name.)
            report.requests += 2;
            if let Ok(a) = sync::read_accounts(&client).await {
                for (project, id) in a.deposit_to {
                    accounts.entry(project).or_insert(id);
                }
            }
        }
        // Futures collected first: a stream over a borrowing closure trips rustc's Send check.
        let futures: Vec<_> = batch
            .iter()
            .map(|s| run_step(&client, s, &accounts, &have, g.attempts))
            .collect();
        let results: Vec<(Option<GoldError>, u64)> = futures::stream::iter(futures)
            .buffered(g.concurrency.max(1))
            .collect()
            .await;
        let results = batch.iter().zip(results).map(|(s, (error, n))| {
            (
                StepResult {
                    what: describe(s),
                    concerns: concerns(&s.concerns),
                    error,
                },
                n,
            )
        });
        for (r, n) in results {
            report.requests += n;
            report.steps.push(r);
        }
        stage_start = end;
    }
    Ok(report)
}
