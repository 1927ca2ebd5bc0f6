//! The Gold allocation manager backend, spoken over SSSRMAP (Gold's wire protocol): observe in
//! six bulk queries, compute the differences, send only those — in stages, several requests in
//! flight, transient failures retried, deposits checked against Gold before any retry.

pub mod desired;
pub mod diff;
pub mod observe;
pub mod proto;
pub mod xml;

use std::time::Duration;

use futures::StreamExt;

pub use crate::api::names::is_gold_name;
pub use proto::{Client, GoldError, Request};

use crate::backend::{Backend, ChangeOutcome, Downstream, Mode, Outcome};
use crate::config::{Config, GoldConfig};
use crate::plan::{Kind, Target};
use crate::site::Key;

/// What one Gold convergence did (or, in `Mode::Plan`, would do).
#[derive(Debug, Default)]
pub struct Report {
    /// Each step: what, the object it concerns, and its outcome.
    pub changes: Vec<ChangeOutcome>,
    /// What Roster leaves alone in Gold and says so.
    pub notes: Vec<String>,
}

impl Report {
    pub fn failed(&self) -> impl Iterator<Item = &ChangeOutcome> {
        self.changes.iter().filter(|c| c.outcome.is_failed())
    }
}

/// The requests that bring Gold to the declared state, in stages.
#[derive(Debug, Default)]
pub struct GoldPlan {
    pub steps: Vec<(diff::Step, String, Option<Target>)>,
    pub notes: Vec<String>,
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
async fn send(client: &Client, req: &Request, attempts: u32) -> Result<proto::Response, GoldError> {
    let mut delay = Duration::from_millis(200);
    let mut last = None;
    for _ in 0..attempts.max(1) {
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
async fn observe(client: &Client, attempts: u32) -> Result<observe::State, GoldError> {
    let mut delay = Duration::from_millis(200);
    let mut tries = 0;
    loop {
        tries += 1;
        match observe::observe(client).await {
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
) -> Result<Vec<observe::Allocation>, GoldError> {
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
    Ok(r.data.iter().map(observe::allocation).collect())
}

/// A deposit is not idempotent: whatever went wrong, Gold is asked whether it happened before
/// it is tried again.
async fn deposit(
    client: &Client,
    account: &str,
    w: &desired::Window,
    expected: i64,
    attempts: u32,
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
        match client.send(&req).await {
            Ok(_) => return Ok(()),
            Err(e @ GoldError::Failed { .. }) | Err(e @ GoldError::Authentication { .. }) => {
                return Err(e);
            }
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(200)).await;
                let now = allocations_of(client, account).await;
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

/// Sends one step (a deposit goes to the project's account); the error, if any.
async fn run_step(
    client: &Client,
    s: &diff::Step,
    accounts: &std::collections::BTreeMap<String, String>,
    have: &observe::State,
    attempts: u32,
) -> Option<GoldError> {
    match &s.deposit {
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
                deposit(client, id, w, before + w.amount, attempts)
                    .await
                    .err()
            }
        },
        None => send(client, &s.request, attempts).await.err(),
    }
}

/// The Gold backend of one pass.
pub struct Gold<'c> {
    config: &'c Config,
    cfg: &'c GoldConfig,
    client: Client,
}

impl<'c> Gold<'c> {
    /// The backend, when the site configures Gold (its key is read now).
    pub fn new(config: &'c Config) -> Result<Option<Gold<'c>>, GoldFailure> {
        let Some(client) = client(config)? else {
            return Ok(None);
        };
        let cfg = config
            .gold
            .as_ref()
            .expect("a client implies the configuration");
        Ok(Some(Gold {
            config,
            cfg,
            client,
        }))
    }
}

/// A step for humans (a deposit's window as the allocation declares it: `2026-07-01..2027-06-30`).
fn describe(s: &diff::Step) -> String {
    match &s.deposit {
        Some((p, w)) => format!(
            "Deposit {} credits on project {p}'s account for {}",
            w.amount,
            window_text(w.start, w.end)
        ),
        None => s.request.describe(),
    }
}

/// An allocation window (epoch seconds, end exclusive) as dates where it is whole days: the
/// first day and the last (`2026-07-01..2027-06-30`), else the instants.
fn window_text(start: i64, end: i64) -> String {
    let (Ok(s), Ok(e)) = (
        jiff::Timestamp::from_second(start),
        jiff::Timestamp::from_second(end),
    ) else {
        return format!("{start}..{end}");
    };
    let first = s.to_zoned(jiff::tz::TimeZone::UTC);
    let first = if first.time() == jiff::civil::Time::midnight() {
        first.date().to_string()
    } else {
        s.to_string()
    };
    format!("{first}..{}", crate::api::valid_until_text(e))
}

impl Backend for Gold<'_> {
    const NAME: &'static str = "gold";
    type Input<'a> = Downstream<'a>;
    type Observed = observe::State;
    type Plan = GoldPlan;
    type Report = Report;
    type Error = GoldFailure;

    async fn observe(&mut self) -> Result<observe::State, GoldFailure> {
        Ok(observe(&self.client, self.cfg.attempts).await?)
    }

    fn plan(&self, input: Downstream<'_>, have: &observe::State) -> GoldPlan {
        let want = desired::desired(
            input.site,
            input.directory,
            input.plan,
            self.config,
            input.now,
        );
        let (steps, notes) = diff::diff(have, &want);
        let concerns = |c: &Option<(Kind, String)>| -> Option<Target> {
            let (kind, name) = c.as_ref()?;
            want.owners
                .get(&(*kind, name.clone()))
                .map(|k: &Key| Target::new(*kind, k))
        };
        let steps = steps
            .into_iter()
            .map(|s| {
                let (what, target) = (describe(&s), concerns(&s.concerns));
                (s, what, target)
            })
            .collect();
        GoldPlan { steps, notes }
    }

    async fn apply(&mut self, plan: &GoldPlan, have: &observe::State, mode: Mode) -> Report {
        let mut report = Report {
            notes: plan.notes.clone(),
            changes: vec![],
        };
        let change = |s: &diff::Step, what: &str, target: &Option<Target>, outcome| ChangeOutcome {
            backend: Self::NAME,
            operation: format!("{} {}", s.request.action, s.request.objects.join(",")),
            targets: target.iter().cloned().collect(),
            subject: target.clone(),
            what: what.to_string(),
            command: vec![],
            outcome,
        };
        if mode == Mode::Plan {
            report.changes = plan
                .steps
                .iter()
                .map(|(s, what, t)| change(s, what, t, Outcome::Planned))
                .collect();
            return report;
        }
        let steps = &plan.steps;
        let client = &self.client;
        let attempts = self.cfg.attempts;
        let mut accounts = have.accounts.clone();
        let mut stage_start = 0;
        while stage_start < steps.len() {
            let stage = steps[stage_start].0.stage;
            let end = steps[stage_start..]
                .iter()
                .position(|s| s.0.stage != stage)
                .map(|n| stage_start + n)
                .unwrap_or(steps.len());
            let batch = &steps[stage_start..end];
            // New projects got their account from Gold just now.
            if stage == diff::Stage::Allocations
                && batch
                    .iter()
                    .filter_map(|s| s.0.deposit.as_ref())
                    .any(|(p, _)| !accounts.contains_key(p))
            {
                // (Through AccountProject: the new account is the one linked to the project,
                // whatever other accounts carry its name.)
                if let Ok(a) = observe::read_accounts(client).await {
                    for (project, id) in a.deposit_to {
                        accounts.entry(project).or_insert(id);
                    }
                }
            }
            // Futures collected first: a stream over a borrowing closure trips rustc's Send check.
            let futures: Vec<_> = batch
                .iter()
                .map(|s| run_step(client, &s.0, &accounts, have, attempts))
                .collect();
            let results: Vec<Option<GoldError>> = futures::stream::iter(futures)
                .buffered(self.cfg.concurrency.max(1))
                .collect()
                .await;
            for ((s, what, target), error) in batch.iter().zip(results) {
                let outcome = match error {
                    None => Outcome::Done,
                    Some(e) => Outcome::Failed {
                        reason: "GoldRequestFailed",
                        message: e.to_string(),
                    },
                };
                report.changes.push(change(s, what, target, outcome));
            }
            stage_start = end;
        }
        report
    }
}

#[cfg(test)]
mod window_tests {
    /// Windows read as the allocation declares them, never as epoch seconds.
    #[test]
    fn deposit_windows_are_shown_as_dates() {
        let at = |t: &str| crate::api::parse_valid_until(t).unwrap().as_second();
        let start = jiff::Timestamp::from_second(at("2026-06-30"))
            .unwrap()
            .as_second();
        assert_eq!(
            super::window_text(start, at("2027-06-30")),
            "2026-07-01..2027-06-30"
        );
        assert_eq!(
            super::window_text(at("2026-07-01T08:00:00Z"), at("2027-06-30T18:00:00Z")),
            "2026-07-01T08:00:00Z..2027-06-30T18:00:00Z"
        );
    }
}
