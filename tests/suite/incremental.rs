//! Incremental passes are full passes' equals (issue 26). The operator keeps its observation of
//! the directory between passes: a pass reads again only the entries it wrote (and the
//! counters), the change feed brings everything else. A seeded random sequence of changes —
//! accounts declared and removed, shells and locks changed, project members added and taken
//! away, the clock moved on past grace periods, writes behind Roster's back — runs through
//! passes planned from that kept observation, as the operator runs them; after each pass the
//! observation it leaves must equal a fresh full read of the directory, and a second pass from
//! it must write nothing on the server (entryCSNs unchanged). `INCREMENTAL_SEED` and
//! `INCREMENTAL_STEPS` replay or lengthen it.

use crate::support;

use std::collections::BTreeMap;
use std::time::Duration;

use roster::backend::Mode;
use roster::converge::{self, Declared};
use roster::ldap::Directory;
use roster::ldap::feed::{self, Event, Follower};
use roster::plan::{Observed, Policy};
use support::{Rng, TestTree, admin, fingerprint, person_account, scratch};
use tokio::sync::mpsc::UnboundedReceiver;

const PEOPLE: usize = 6;
const PROJECTS: usize = 2;
const SHELLS: [&str; 3] = ["/bin/bash", "/bin/zsh", "/bin/sh"];

#[derive(Clone, Debug)]
struct Someone {
    declared: bool,
    shell: usize,
    locked: bool,
}

/// The declared site: people (by index) and each project's members.
struct Model {
    prefix: String,
    people: Vec<Someone>,
    members: Vec<Vec<bool>>,
}

impl Model {
    fn name(&self, i: usize) -> String {
        format!("{}{i}", self.prefix)
    }

    fn manifests(&self) -> String {
        let mut s = String::new();
        for (i, p) in self.people.iter().enumerate().filter(|(_, p)| p.declared) {
            let mut spec = format!("  loginShell: {}\n", SHELLS[p.shell]);
            if p.locked {
                spec.push_str("  locked: true\n");
            }
            s.push_str(&person_account("physics", &self.name(i), &spec));
            s.push('\n');
        }
        for (j, members) in self.members.iter().enumerate() {
            let names: Vec<String> = (0..PEOPLE)
                .filter(|i| members[*i] && self.people[*i].declared)
                .map(|i| self.name(i))
                .collect();
            s.push_str(&format!(
                "---\napiVersion: roster.io/v1alpha1\nkind: Project\nmetadata: {{name: {}p{j}, namespace: physics}}\nspec:\n  members: [{}]\n",
                self.prefix,
                names.join(", ")
            ));
        }
        s
    }
}

/// Applies every message the feed has sent so far.
fn drain(rx: &mut UnboundedReceiver<Result<Event, String>>, follower: &mut Follower) {
    while let Ok(m) = rx.try_recv() {
        follower.apply(m.expect("the feed failed"));
    }
}

/// Applies the feed's messages until `ok` holds for the observation (30 s at most).
async fn until(
    rx: &mut UnboundedReceiver<Result<Event, String>>,
    follower: &mut Follower,
    what: &str,
    ok: impl Fn(&Observed) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    drain(rx, follower);
    while !ok(&follower.observed) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(m)) => follower.apply(m.expect("the feed failed")),
            Ok(None) => panic!("the feed ended waiting for {what}"),
            Err(_) => panic!("the feed did not bring {what} in 30 s"),
        }
    }
}

#[tokio::test]
async fn passes_from_the_kept_observation_leave_what_a_full_read_finds() {
    let seed: u64 = std::env::var("INCREMENTAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x26_2026);
    let steps: usize = std::env::var("INCREMENTAL_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let tree = TestTree::new("incr").await;
    let dir = scratch("incr");
    let cfg = tree.write_config(&dir);
    let config = roster::config::Config::load(&cfg).unwrap();
    let base = tree.dn.clone();
    let mut rng = Rng(seed | 1);
    let mut model = Model {
        prefix: format!("i{}", std::process::id() % 100000),
        people: vec![
            Someone {
                declared: true,
                shell: 0,
                locked: false,
            };
            PEOPLE
        ],
        members: vec![vec![true; PEOPLE]; PROJECTS],
    };
    let mut rx = feed::spawn(
        Directory::connect(&config)
            .await
            .unwrap()
            .follow(&base)
            .await
            .unwrap(),
    );
    let mut follower = Follower::default();
    while !follower.refreshed {
        let m = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await;
        follower.apply(
            m.expect("the refresh took 30 s")
                .expect("the feed ended")
                .unwrap(),
        );
    }
    let mut conn = Directory::connect(&config).await.unwrap();
    let mut fresh = Directory::connect(&config).await.unwrap();
    let mut ldap = admin().await;
    let mut now = jiff::Timestamp::from_second(1_893_456_000).unwrap(); // 2030-01-01
    let mut log: Vec<String> = vec![];
    let mut rereads = 0;
    // Full reads of the directory (the test's own `fresh` ones are counted too, before and
    // after a pass, never during one).
    let full_reads = || {
        roster::telemetry::global().sum(
            "roster_backend_operations_total",
            &[("backend", "ldap"), ("operation", "observe")],
        )
    };
    for step in 0..steps {
        let what = match if step == 0 { usize::MAX } else { rng.below(6) } {
            usize::MAX => "declare everyone".to_string(),
            0 => {
                let i = rng.below(PEOPLE);
                model.people[i].declared ^= true;
                format!("{} declared: {}", model.name(i), model.people[i].declared)
            }
            1 => {
                let i = rng.below(PEOPLE);
                model.people[i].shell = rng.below(SHELLS.len());
                format!("{} shell {}", model.name(i), SHELLS[model.people[i].shell])
            }
            2 => {
                let i = rng.below(PEOPLE);
                model.people[i].locked ^= true;
                format!("{} locked: {}", model.name(i), model.people[i].locked)
            }
            3 => {
                let (i, j) = (rng.below(PEOPLE), rng.below(PROJECTS));
                model.members[j][i] ^= true;
                format!("{} in p{j}: {}", model.name(i), model.members[j][i])
            }
            4 => {
                let days = [1, 30, 100][rng.below(3)];
                now += jiff::SignedDuration::from_hours(24 * days);
                format!("{days} days later")
            }
            _ => {
                // Behind Roster's back: an active account's shell, once the feed brought it.
                let Some(e) = follower
                    .observed
                    .accounts
                    .values()
                    .find(|e| e.first("loginShell") != Some("/bin/false"))
                    .cloned()
                else {
                    continue;
                };
                ldap.modify(
                    &e.dn,
                    vec![ldap3::Mod::Replace("loginShell", ["/bin/false"].into())],
                )
                .await
                .unwrap()
                .success()
                .unwrap();
                let dn = e.dn.clone();
                until(
                    &mut rx,
                    &mut follower,
                    "the write behind Roster's back",
                    |o| o.at(&dn).and_then(|e| e.first("loginShell")) == Some("/bin/false"),
                )
                .await;
                format!("{} behind Roster's back", e.dn)
            }
        };
        log.push(format!("step {step}: {what}"));
        let context = || format!("seed {seed}\n{}", log.join("\n"));
        let site = roster::site::load_text("model", &model.manifests(), None)
            .unwrap_or_else(|e| panic!("{e:?}\n{}", context()));
        // Twice: the pass, then one that must find nothing to do.
        for pass in ["pass", "pass again"] {
            let before = fingerprint(&base).await;
            let declared = Declared::new(
                site.clone(),
                Policy {
                    prune: true,
                    ..Policy::new(&config)
                },
            );
            drain(&mut rx, &mut follower);
            let kept = std::mem::take(&mut follower.observed);
            let whole = full_reads();
            let report =
                converge::run(&config, now, Mode::Apply, &declared, &mut conn, kept, None).await;
            assert!(report.error.is_none(), "{:?}\n{}", report.error, context());
            assert!(
                report.ldap.failed.is_empty() && report.ldap.lost_races.is_empty(),
                "{pass}: {:?} {:?}\n{}",
                report.ldap.failed,
                report.ldap.lost_races,
                context()
            );
            assert_eq!(
                full_reads(),
                whole,
                "{pass} read the directory whole\n{}",
                context()
            );
            rereads += usize::from(!report.ldap.done.is_empty());
            follower.observed = report.directory;
            let full = fresh.observe(&base, 500).await.unwrap();
            if follower.observed != full {
                let differ: BTreeMap<
                    &String,
                    (Option<&roster::plan::Entry>, Option<&roster::plan::Entry>),
                > = full
                    .entries()
                    .chain(follower.observed.entries())
                    .map(|e| (&e.dn, (follower.observed.at(&e.dn), full.at(&e.dn))))
                    .filter(|(_, (k, f))| k != f)
                    .collect();
                panic!(
                    "{pass}: the kept observation is not the directory: {differ:#?}\n{}",
                    context()
                );
            }
            if pass == "pass again" {
                assert!(
                    report.ldap.done.is_empty(),
                    "a second pass wrote: {:?}\n{}",
                    report.ldap.done,
                    context()
                );
                assert_eq!(fingerprint(&base).await, before, "{}", context());
            }
        }
    }
    assert!(!follower.lost);
    assert!(rereads >= steps / 4, "only {rereads} passes wrote");
    tree.cleanup().await;
}
