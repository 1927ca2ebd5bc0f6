//! The safety suite (#19; docs/security.md, "Safety invariants"): seeded, reproducible random
//! sequences of steps — file-mode applies of random subsets of namespaces with and without
//! `--prune`, declarations and removals, import runs with full, truncated, empty, garbled and
//! unreachable exports (which trip the deletion guard or abort), clock jumps — against the real
//! slapd, slurmdbd and the Gold test server. After every step the invariants are checked on the
//! servers (entries and their entryCSN, slurmdbd's associations and `txn_table`, Gold's rows and
//! request log), never on Roster's own report. The same sequence mixes in operator steps: a
//! fourth namespace `ops` is declared through a real control plane (hack/k8s) with kubectl and converged by
//! `roster run` (same config, so the same managerId, subtree, Slurm cluster and Gold), whose clock
//! is pinned to the model's time of its latest step through the clock offset file; an operator
//! pass (or a kill and restart) waits by the pass counter until its passes settle, and counts as
//! a run of `["ops"]` (file-mode runs never name `ops`):
//!
//! - I1 nothing is locked, deactivated or purged before the deadline its own declaration or its
//!   source's policy gives (and nothing a run declares is locked);
//! - I2 a source whose run is aborted or guarded changes nothing in LDAP, Slurm or Gold for its
//!   identities and their memberships;
//! - I3 no username or uid ever belongs to two identities, across purge and re-creation;
//! - I4 a run with nothing changed writes nothing anywhere (a settled operator writes nothing
//!   while it keeps passing);
//! - I5 an apply of namespaces X changes nothing owned by another namespace except to execute a
//!   deadline the directory records;
//! - I6 an entry or association without Roster's marker is never modified, and no run makes more
//!   removal-caused transitions than the guard allows.
//!
//! `make test` runs a fixed seed and a bounded number of steps; `make safety SEED=… STEPS=…`
//! (environment `SAFETY_SEED`, `SAFETY_STEPS`) runs longer. A failure prints the seed and the
//! steps up to it, which replay it exactly.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use roster_gold_server::{GoldServer, Options};
use support::*;

const DAY: i64 = 86_400;
/// People declared by hand per namespace, and records of the import.
const HAND: usize = 4;
const RECORDS: usize = 6;
/// The import's grace periods (days) and the site's purge grace.
const SOURCE_DEACTIVATION: i64 = 14;
const SOURCE_DELETION: i64 = 180;
const SITE_PURGE: i64 = 90;
/// The site guard: removal-caused transitions per window.
const GUARD: usize = 2;
const HAND_NS: [&str; 2] = ["alpha", "beta"];
/// The namespace an operator converges (declared through the API server, never in the
/// file-mode runs' `-f` directories), with people of the same shape as the hand namespaces'.
const OPS: &str = "ops";
const SOURCE_NS: &str = "hr";
const GOLD_SECRET: &str = "safety-gold-secret";

/// What an import run reads.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Export {
    /// The export as the model holds it.
    Full,
    /// The first half of it.
    Truncated,
    /// A header and nothing else.
    Empty,
    /// A line the CSV reader refuses (toleratedErrors is 0).
    Garbled,
    /// No file at all.
    Unreachable,
}

#[derive(Clone, Debug)]
enum Step {
    /// `roster apply` of these namespaces' manifests.
    Apply {
        namespaces: Vec<&'static str>,
        prune: bool,
    },
    /// A hand-declared person declared again or removed from its namespace's manifests.
    Toggle { ns: &'static str, person: usize },
    /// A record joins or leaves the (good) export.
    Record { record: usize },
    /// `roster apply` of the import's namespace, reading this export.
    Import(Export),
    /// The clock moves on.
    Clock { days: i64 },
    /// The operator (started if it does not run) passes at the model's time over `ops` as the
    /// model declares it, until its passes settle.
    OperatorPass,
    /// The operator is killed and started again, then passes as in `OperatorPass`.
    OperatorRestart,
}

/// The operator of `ops`: a real control plane, `roster run` against it as the chart's
/// ServiceAccount, and its clock, pinned to the model's time of its latest step (`@<seconds>` in
/// the clock offset file).
struct Operator {
    cluster: Cluster,
    /// cluster-admin, for kubectl.
    kubeconfig: PathBuf,
    config: PathBuf,
    /// The clock offset file.
    offset: PathBuf,
    proc: Option<Proc>,
    port: u16,
    starts: usize,
}

/// Pins the operator's clock at `pin` (unix seconds): written whole, then renamed into place.
fn pin_clock(file: &Path, pin: i64) {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, format!("@{pin}")).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// What the servers hold, read after every step.
#[derive(Clone, Default)]
struct Snapshot {
    /// DN → attributes (entryCSN included).
    ldap: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    /// `account|user|partition|maxjobs|maxsubmit` on the suite's cluster.
    assocs: BTreeSet<String>,
    txn: u64,
    /// Gold ProjectUser and User rows, as sorted text.
    gold: BTreeSet<String>,
    gold_writes: usize,
}

impl Snapshot {
    fn first<'a>(&'a self, dn: &str, attr: &str) -> Option<&'a str> {
        self.ldap.get(dn)?.get(attr)?.first().map(String::as_str)
    }
}

fn time(v: &str) -> i64 {
    jiff::civil::DateTime::strptime("%Y%m%d%H%M%SZ", v)
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .unwrap()
        .timestamp()
        .as_second()
}

fn rfc3339(t: i64) -> String {
    jiff::Timestamp::from_second(t).unwrap().to_string()
}

struct World {
    tree: TestTree,
    dir: PathBuf,
    cfg: String,
    cluster: String,
    p: String,
    gold: GoldServer,
    now: i64,
    /// Hand-declared people: (namespace, index) → declared in the manifests.
    declared: BTreeMap<(&'static str, usize), bool>,
    /// Records in the good export.
    export: BTreeSet<usize>,
    /// Imported records with a live entry, and whether the source already marked them gone.
    live: BTreeMap<usize, bool>,
    /// Identity → the earliest instant it could have gone (declaration or export lost).
    gone: BTreeMap<String, i64>,
    /// Every username and uid ever seen → the identity that had it.
    usernames: BTreeMap<String, String>,
    uids: BTreeMap<String, String>,
    /// Entries and associations Roster does not own, with how they looked at the start.
    strangers: Vec<(String, String)>,
    stranger_assoc: String,
    snapshot: Snapshot,
    /// Started at the first operator step.
    op: Option<Operator>,
}

impl World {
    async fn new() -> World {
        let tree = TestTree::new("safety").await;
        let dir = scratch("safety");
        let p = format!("s{}", std::process::id() % 100_000);
        let cluster = format!("sf{}", std::process::id());
        let out = sacctmgr(&["-i", "add", "cluster", &cluster]);
        assert!(out.0 || out.1.contains("Nothing new added"), "{}", out.1);
        let gold = gold_server().await;
        let cfg = config(&tree, &dir, &cluster, gold.addr().port());
        let mut w = World {
            tree,
            dir,
            cfg,
            cluster,
            p,
            gold,
            now: jiff::Timestamp::from_second(1_893_456_000)
                .unwrap()
                .as_second(),
            declared: BTreeMap::new(),
            export: (0..RECORDS).collect(),
            live: BTreeMap::new(),
            gone: BTreeMap::new(),
            usernames: BTreeMap::new(),
            uids: BTreeMap::new(),
            strangers: vec![],
            stranger_assoc: String::new(),
            snapshot: Snapshot::default(),
            op: None,
        };
        for ns in HAND_NS.iter().copied().chain([OPS]) {
            for i in 0..HAND {
                w.declared.insert((ns, i), true);
            }
        }
        w.write_manifests();
        w.write_export(Export::Full);
        w
    }

    fn username(&self, ns: &str, i: usize) -> String {
        format!("{}{}{i}", self.p, &ns[..1])
    }

    fn source_uid(&self) -> String {
        format!("{}-hr", self.p)
    }

    fn identity(&self, ns: &str, i: usize) -> String {
        format!("{ns}/{}", self.username(ns, i))
    }

    /// The model's name of a record's identity (its entries say `rosterRecordUID`).
    fn record_identity(&self, r: usize) -> String {
        format!("record:{}", r + 1)
    }

    /// The model's name of the identity behind an entry.
    fn model_identity(&self, a: &BTreeMap<String, Vec<String>>) -> Option<String> {
        match (one(a, "rosterSourceUID"), one(a, "rosterRecordUID")) {
            (Some(s), Some(r)) if s == self.source_uid() => Some(format!("record:{r}")),
            _ => one(a, "rosterIdentity").map(str::to_string),
        }
    }

    fn group(&self, ns: &str) -> String {
        format!("{}{ns}", self.p)
    }

    fn repo(&self, ns: &str) -> PathBuf {
        self.dir.join("repo").join(ns)
    }

    fn write_manifests(&self) {
        for ns in HAND_NS {
            let mut s = project(ns, &self.group(ns));
            for i in 0..HAND {
                if self.declared[&(ns, i)] {
                    s.push_str(&person_account(
                        ns,
                        &self.username(ns, i),
                        &format!("  projects: [{ns}]\n"),
                    ));
                    s.push('\n');
                }
            }
            write(&self.repo(ns), "site.yaml", &s);
        }
        let mut s = project(SOURCE_NS, &self.group(SOURCE_NS));
        s.push_str(&format!(
            "---\napiVersion: roster.io/v1alpha1\nkind: ImportSource\nmetadata: {{name: staff, namespace: {SOURCE_NS}}}\nspec:\n  sourceUID: {}\n  reader:\n    type: Csv\n    csv: {{path: people.csv}}\n  mapping: {{id: employeeNumber, first: givenName, last: familyName}}\n  recordUID: <employeeNumber>\n  usernameScheme: {{template: \"<:lower><lastname>[COUNTER2]\"}}\n  mode: Sync\n  deletionGracePeriod: {{deactivation: {SOURCE_DEACTIVATION}, deletion: {SOURCE_DELETION}}}\n  maxDeletions: {{count: 1}}\n  toleratedErrors: 0\n  defaults: {{projects: [{SOURCE_NS}]}}\n",
            self.source_uid()
        ));
        write(&self.repo(SOURCE_NS), "site.yaml", &s);
    }

    /// The records a run reads for `variant`; `None` when the file is absent or unreadable.
    fn content(&self, variant: Export) -> Option<Vec<usize>> {
        let all: Vec<usize> = self.export.iter().copied().collect();
        match variant {
            Export::Full => Some(all),
            Export::Truncated => Some(all[..all.len() / 2].to_vec()),
            Export::Empty => Some(vec![]),
            Export::Garbled | Export::Unreachable => None,
        }
    }

    fn write_export(&self, variant: Export) {
        let path = self.repo(SOURCE_NS).join("people.csv");
        let _ = std::fs::remove_file(&path);
        if variant == Export::Unreachable {
            return;
        }
        let mut t = String::from("id,first,last\n");
        // Two records share a surname: the second gets a counter.
        let last = |r: usize| format!("{}{}", self.p, ["ann", "ann", "bo", "cy", "di", "ed"][r]);
        for r in self
            .content(variant)
            .unwrap_or_else(|| self.export.iter().copied().collect())
        {
            t.push_str(&format!("{},Kim,{}\n", r + 1, last(r)));
        }
        if variant == Export::Garbled {
            t.push_str("99,\"Unterminated,quote\n");
        }
        std::fs::write(path, t).unwrap();
    }

    async fn apply(&self, namespaces: &[&str], prune: bool) -> (i32, String) {
        let mut args: Vec<String> = vec!["apply".into()];
        for ns in namespaces {
            args.push("-f".into());
            args.push(self.repo(ns).display().to_string());
        }
        args.extend([
            "--config".into(),
            self.cfg.clone(),
            "--now".into(),
            rfc3339(self.now),
        ]);
        if prune {
            args.push("--prune".into());
        }
        roster_off_runtime(args).await
    }

    async fn read(&self) -> Snapshot {
        let mut ldap = admin().await;
        let ldap_entries = entries(&mut ldap, &self.tree.dn, "(objectClass=*)")
            .await
            .into_iter()
            .map(|e| (e.dn.to_ascii_lowercase(), e.attrs.into_iter().collect()))
            .collect();
        let (_, out) = sacctmgr(&[
            "-nP",
            "show",
            "assoc",
            &format!("cluster={}", self.cluster),
            "format=Account,User,Partition,MaxJobs,MaxSubmit",
        ]);
        let assocs = out
            .lines()
            .filter(|l| !l.starts_with("root|"))
            .map(str::to_string)
            .collect();
        let mut gold = BTreeSet::new();
        for object in ["ProjectUser", "User"] {
            for row in self.gold.rows(object) {
                gold.insert(format!("{object} {row:?}"));
            }
        }
        let gold_writes = self
            .gold
            .log()
            .iter()
            .filter(|l| l.action != "Query")
            .count();
        Snapshot {
            ldap: ldap_entries,
            assocs,
            txn: slurm_txn(&self.cluster, &self.p).await,
            gold,
            gold_writes,
        }
    }
}

/// The suite's Gold test server, in process (small reply pieces, so chunking is exercised).
async fn gold_server() -> GoldServer {
    GoldServer::start(
        "127.0.0.1:0",
        Options {
            chunk_rows: 3,
            ..Options::new(GOLD_SECRET)
        },
    )
    .await
    .expect("the Gold test server starts")
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), text).unwrap();
}

fn project(ns: &str, group: &str) -> String {
    format!(
        "---\napiVersion: roster.io/v1alpha1\nkind: Project\nmetadata: {{name: {ns}, namespace: {ns}}}\nspec:\n  groupName: {group}\n  description: {ns} project\n"
    )
}

fn config(tree: &TestTree, dir: &Path, cluster: &str, gold_port: u16) -> String {
    let env = dev_env();
    let url = dir.join("ro.url");
    std::fs::write(&url, &env["SLURMDB_RO_URL"]).unwrap();
    let key = dir.join("gold.key");
    std::fs::write(&key, format!("{GOLD_SECRET}\n")).unwrap();
    let extra = format!(
        "gracePeriods: {{accountPurgeAfter: {SITE_PURGE}d}}\nguard: {{maxCount: {GUARD}, maxPercent: null, window: 24h}}\nslurm:\n  clusters: [{cluster}]\n  slurmConf: {}\n  databaseUrlFile: {}\ngold:\n  host: 127.0.0.1\n  port: {gold_port}\n  authKeyFile: {}\n  timeoutSeconds: 5\n  attempts: 2\n",
        env["SLURM_CONF"],
        url.display(),
        key.display()
    );
    tree.write_config_with(dir, &extra).display().to_string()
}

/// The steps of a seeded sequence.
fn steps(seed: u64, n: usize) -> Vec<Step> {
    let mut rng = Rng(seed.max(1));
    let all: Vec<&'static str> = HAND_NS.iter().copied().chain([SOURCE_NS]).collect();
    (0..n)
        .map(|_| match rng.below(113) {
            0..30 => {
                let mut namespaces: Vec<&'static str> =
                    all.iter().copied().filter(|_| rng.below(2) == 0).collect();
                if namespaces.is_empty() {
                    namespaces.push(all[rng.below(all.len())]);
                }
                Step::Apply {
                    namespaces,
                    prune: rng.below(2) == 0,
                }
            }
            30..50 => Step::Toggle {
                ns: [HAND_NS[0], HAND_NS[1], OPS][rng.below(3)],
                person: rng.below(HAND),
            },
            50..62 => Step::Record {
                record: rng.below(RECORDS),
            },
            62..85 => Step::Import(
                [
                    Export::Full,
                    Export::Full,
                    Export::Truncated,
                    Export::Empty,
                    Export::Garbled,
                    Export::Unreachable,
                ][rng.below(6)],
            ),
            85..100 => Step::Clock {
                days: [1, 7, 15, 40, 100, 200][rng.below(6)],
            },
            100..110 => Step::OperatorPass,
            _ => Step::OperatorRestart,
        })
        .collect()
}

/// Whose an entry is: the namespace of its `rosterOwner`, for the suite's manager.
fn namespace_of(attrs: &BTreeMap<String, Vec<String>>) -> Option<&str> {
    let owner = attrs.get("rosterOwner")?.first()?;
    owner.split('/').nth(1)
}

fn one<'a>(attrs: &'a BTreeMap<String, Vec<String>>, name: &str) -> Option<&'a str> {
    attrs.get(name).and_then(|v| v.first()).map(String::as_str)
}

/// Identities with a deadline the directory records that has come (the only changes a run may
/// make to identities it does not declare).
fn due_at(s: &Snapshot, now: i64) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for a in s.ldap.values() {
        let Some(id) = one(a, "rosterIdentity") else {
            continue;
        };
        let deactivated = one(a, "rosterState") == Some("Deactivated");
        let at = |n: &str| one(a, n).map(time);
        let due = if deactivated {
            at("rosterPurgeAt").is_some_and(|t| t <= now)
        } else {
            at("rosterDeactivateAt").is_some_and(|t| t <= now)
        };
        if due {
            out.insert(id.to_string());
            if let Some(u) = one(a, "uid") {
                out.insert(u.to_string());
            }
        }
    }
    out
}

/// The parts of a snapshot that belong to identities (by username) for which `keep` holds:
/// their account entries' entryCSN, their group memberships, Slurm associations, Gold rows.
fn part(s: &Snapshot, keep: &dyn Fn(&str, &str) -> bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut users = BTreeSet::new();
    for (dn, a) in &s.ldap {
        // Accounts by username; groups (personal ones by their username) by name.
        let (Some(ns), Some(name)) = (namespace_of(a), one(a, "uid").or(one(a, "cn"))) else {
            continue;
        };
        if dn.starts_with("cn=account:") || !keep(ns, name) {
            continue;
        }
        if dn.starts_with("uid=") {
            users.insert(name.to_string());
        }
        if one(a, "rosterKind") == Some("Project") {
            // A project's group, but for its members (compared one by one below: a purged
            // identity's leftover membership goes when its project is next planned).
            let fixed: BTreeMap<&String, &Vec<String>> = a
                .iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "memberUid" | "entryCSN" | "modifyTimestamp" | "modifiersName"
                    )
                })
                .collect();
            out.insert(format!("group {dn} {fixed:?}"));
        } else {
            out.insert(format!("entry {dn} {:?}", a.get("entryCSN")));
        }
    }
    for (dn, a) in &s.ldap {
        for m in a.get("memberUid").into_iter().flatten() {
            if users.contains(m) {
                out.insert(format!("member {m} of {dn}"));
            }
        }
    }
    for l in &s.assocs {
        if l.split('|').nth(1).is_some_and(|u| users.contains(u)) {
            out.insert(format!("assoc {l}"));
        }
    }
    for g in &s.gold {
        if users
            .iter()
            .any(|u| g.contains(&format!("\"Name\": \"{u}\"")))
        {
            out.insert(format!("gold {g}"));
        }
    }
    out
}

impl World {
    /// The model's policy for an identity: (delay before deactivation, grace before purge).
    fn policy(&self, identity: &str) -> (i64, i64) {
        if identity.starts_with("record:") {
            (SOURCE_DEACTIVATION * DAY, SOURCE_DELETION * DAY)
        } else {
            (0, SITE_PURGE * DAY)
        }
    }

    /// Checks I1, I3 and I6 on a snapshot taken after `step` (`declared`: identities the step's
    /// run declared).
    fn check_state(&mut self, s: &Snapshot, declared: &BTreeSet<String>) -> Result<(), String> {
        let before = &self.snapshot;
        let mut transitions = 0;
        for (dn, a) in &s.ldap {
            let Some(id) = one(a, "rosterIdentity") else {
                continue;
            };
            let tombstone = dn.starts_with("cn=account:");
            let account = dn.starts_with("uid=");
            if !(account || tombstone) {
                continue;
            }
            // I3: a username and a uid belong to one identity, forever.
            for (map, attr) in [(&mut self.usernames, "uid"), (&mut self.uids, "uidNumber")] {
                if let Some(v) = one(a, attr)
                    && let Some(other) = map.insert(v.to_string(), id.to_string())
                    && other != id
                {
                    return Err(format!(
                        "I3: {attr} {v} belonged to {other}, now to {id} ({dn})"
                    ));
                }
            }
            let key = self.model_identity(a).unwrap_or_default();
            let (delay, grace) = self.policy(&key);
            let gone = self.gone.get(&key).copied();
            let at = |n: &str| one(a, n).map(time);
            if tombstone {
                if !before.ldap.contains_key(dn) {
                    transitions += 1;
                    let purged = at("rosterPurgeAt").unwrap_or(0);
                    match gone {
                        Some(g) if purged >= g + grace => {}
                        _ => {
                            return Err(format!(
                                "I1: {id} purged at {} though it went at {gone:?} with a grace of {} days",
                                rfc3339(purged),
                                grace / DAY
                            ));
                        }
                    }
                }
                continue;
            }
            let deactivated = one(a, "rosterState") == Some("Deactivated");
            if deactivated
                && before.first(dn, "rosterState") != Some("Deactivated")
                && one(a, "rosterGoneAt").is_some()
            {
                transitions += 1;
            }
            if deactivated || a.contains_key("pwdAccountLockedTime") {
                // I1: only a removal locks here, and not before its deadline.
                let Some(g) = gone else {
                    return Err(format!(
                        "I1: {id} is locked though it was never removed: {a:?}"
                    ));
                };
                let since = at("rosterDeactivatedAt").unwrap_or(0);
                if since < g + delay {
                    return Err(format!(
                        "I1: {id} deactivated at {} but went at {} with {} days before deactivation",
                        rfc3339(since),
                        rfc3339(g),
                        delay / DAY
                    ));
                }
                if declared.contains(&key) {
                    return Err(format!("I1: {id} is declared by this run but locked"));
                }
            }
            if let (Some(g), Some(purge)) = (gone, at("rosterPurgeAt"))
                && purge < g + grace
            {
                return Err(format!(
                    "I1: {id} is to be purged at {}, before {} + {} days",
                    rfc3339(purge),
                    rfc3339(g),
                    grace / DAY
                ));
            }
        }
        // I6: strangers untouched; transitions within the guard's limit.
        for (dn, csn) in &self.strangers {
            if s.first(dn, "entryCSN") != Some(csn) {
                return Err(format!(
                    "I6: the unmanaged entry {dn} was modified or removed"
                ));
            }
        }
        if !s.assocs.contains(&self.stranger_assoc) {
            return Err(format!(
                "I6: the unmanaged association {} is gone or changed: {:?}",
                self.stranger_assoc, s.assocs
            ));
        }
        if transitions > GUARD {
            return Err(format!(
                "I6: {transitions} removal-caused transitions in one run, the guard allows {GUARD}"
            ));
        }
        // Removal-caused transitions of the guard's window (24 hours up to now), one per
        // identity: a deactivation made in it, or a purge.
        let since = self.now - DAY;
        let mut window = BTreeSet::new();
        for (dn, a) in &s.ldap {
            let at = |n: &str| one(a, n).map(time).is_some_and(|t| t >= since);
            let deactivated = dn.starts_with("uid=")
                && one(a, "rosterState") == Some("Deactivated")
                && one(a, "rosterGoneAt").is_some()
                && at("rosterDeactivatedAt");
            let purged = dn.starts_with("cn=account:") && at("rosterPurgeAt");
            if deactivated || purged {
                window.insert(one(a, "rosterIdentity").unwrap_or(dn).to_string());
            }
        }
        if window.len() > GUARD {
            return Err(format!(
                "I6: {} removal-caused transitions in one guard window ({window:?}), the guard allows {GUARD}",
                window.len()
            ));
        }
        Ok(())
    }

    /// The model after a good import run that read `content`.
    fn imported(&mut self, content: &[usize]) {
        for r in 0..RECORDS {
            let id = self.record_identity(r);
            if content.contains(&r) {
                self.live.insert(r, false);
                self.gone.remove(&id);
            } else if let Some(marked) = self.live.get_mut(&r)
                && !*marked
            {
                *marked = true;
                self.gone.entry(id).or_insert(self.now);
            }
        }
    }

    /// Whether an import run reading `content` trips the deletion guard (maxDeletions count 1;
    /// an empty export never removes anyone) or aborts.
    fn aborts(&self, content: Option<&[usize]>) -> bool {
        let Some(content) = content else {
            return true;
        };
        let newly_gone = self
            .live
            .iter()
            .filter(|(r, marked)| !**marked && !content.contains(r))
            .count();
        newly_gone > 1 || (content.is_empty() && newly_gone > 0)
    }

    /// Runs one step and checks the invariants. Returns a description of a violation.
    async fn step(&mut self, step: &Step) -> Result<(), String> {
        let before = self.snapshot.clone();
        let (namespaces, prune, aborted, content) = match step {
            Step::Toggle { ns, person } => {
                let d = self.declared.get_mut(&(*ns, *person)).unwrap();
                *d = !*d;
                self.write_manifests();
                return Ok(());
            }
            Step::Record { record } => {
                if !self.export.remove(record) {
                    self.export.insert(*record);
                }
                return Ok(());
            }
            Step::Clock { days } => {
                self.now += days * DAY;
                return Ok(());
            }
            Step::Apply { namespaces, prune } => {
                let content = namespaces
                    .contains(&SOURCE_NS)
                    .then(|| self.content(Export::Full))
                    .flatten();
                self.write_export(Export::Full);
                let aborted = namespaces.contains(&SOURCE_NS) && self.aborts(content.as_deref());
                (namespaces.clone(), *prune, aborted, content)
            }
            Step::Import(variant) => {
                self.write_export(*variant);
                let content = self.content(*variant);
                let aborted = self.aborts(content.as_deref());
                (vec![SOURCE_NS], false, aborted, content)
            }
            Step::OperatorPass => return self.operator_step(false).await,
            Step::OperatorRestart => return self.operator_step(true).await,
        };
        let (code, out) = self.apply(&namespaces, prune).await;
        if code != 0 && code != 3 {
            return Err(format!("roster apply failed ({code}):\n{out}"));
        }
        if namespaces.contains(&SOURCE_NS) && aborted != out.contains("x ImportSource") {
            return Err(format!(
                "the model expected the import {}, Roster said:\n{out}",
                if aborted { "to abort" } else { "to run" }
            ));
        }
        // The model: what this run declared, what it removed.
        let mut declared = BTreeSet::new();
        for ns in HAND_NS.iter().filter(|n| namespaces.contains(n)) {
            for i in 0..HAND {
                let id = self.identity(ns, i);
                if self.declared[&(*ns, i)] {
                    self.gone.remove(&id);
                    declared.insert(id);
                } else if prune {
                    self.gone.entry(id).or_insert(self.now);
                }
            }
        }
        if namespaces.contains(&SOURCE_NS) && !aborted {
            let content = content.unwrap_or_default();
            self.imported(&content);
            declared.extend(content.iter().map(|r| self.record_identity(*r)));
        }
        let now = self.now;
        let due = due_at(&before, now);
        // A deadline of an `ops` identity this run carried out (a purge) leaves the rest to the
        // owner, as any run of another namespace does: the operator drops the leftover project
        // membership and association at its next passes, which are let settle here (what they
        // change is checked like the run's own changes: only identities whose deadline came).
        let ops_due = before.ldap.values().any(|a| {
            namespace_of(a) == Some(OPS) && one(a, "uid").is_some_and(|u| due.contains(u))
        });
        let after = if ops_due && self.op.is_some() {
            self.settle(&out).await?
        } else {
            self.read().await
        };
        // I2: an aborted import changed nothing of its identities.
        if aborted {
            let source = |ns: &str, u: &str| ns == SOURCE_NS && !due.contains(u);
            let (was, is) = (part(&before, &source), part(&after, &source));
            if was != is {
                return Err(format!(
                    "I2: the aborted import changed its identities:\n- {:?}\n+ {:?}\n{out}",
                    was.difference(&is).collect::<Vec<_>>(),
                    is.difference(&was).collect::<Vec<_>>()
                ));
            }
        }
        isolated(&before, &after, &namespaces, &due, &out)?;
        self.check_state(&after, &declared)?;
        self.snapshot = after;
        // I4: the same run again writes nothing (one more run is allowed when a purge came due
        // behind a deactivation this run made: an Active identity is never purged directly).
        let purge_pending = !due_at(&self.snapshot, now).is_empty();
        for attempt in 0..2 {
            let op_before = self.operator_activity();
            let (code, again) = self.apply(&namespaces, prune).await;
            if code != 0 && code != 3 {
                return Err(format!("roster apply failed ({code}):\n{again}"));
            }
            let s = self.read().await;
            let wrote = fingerprint_of(&s) != fingerprint_of(&self.snapshot)
                || s.txn != self.snapshot.txn
                || s.gold_writes != self.snapshot.gold_writes;
            if wrote && (attempt == 1 || !purge_pending) {
                return Err(format!(
                    "I4: the same run again wrote (LDAP {}, Slurm txn {} → {}, Gold writes {} → {}; the operator's (passes, sacctmgr runs) meanwhile {op_before:?} → {:?}):\n{again}",
                    fingerprint_of(&s) != fingerprint_of(&self.snapshot),
                    self.snapshot.txn,
                    s.txn,
                    self.snapshot.gold_writes,
                    s.gold_writes,
                    self.operator_activity()
                ));
            }
            let empty = BTreeSet::new();
            self.check_state(&s, if wrote { &empty } else { &declared })?;
            self.snapshot = s;
            if !wrote {
                break;
            }
        }
        Ok(())
    }
}

/// I5: a run of `namespaces` changed nothing of another namespace's identities but to execute
/// the deadlines in `due`.
fn isolated(
    before: &Snapshot,
    after: &Snapshot,
    namespaces: &[&str],
    due: &BTreeSet<String>,
    out: &str,
) -> Result<(), String> {
    let others = |ns: &str, u: &str| !namespaces.contains(&ns) && !due.contains(u);
    let (was, is) = (part(before, &others), part(after, &others));
    if was != is {
        return Err(format!(
            "I5: a run of {namespaces:?} changed another namespace's identities:\n- {:?}\n+ {:?}\n{out}",
            was.difference(&is).collect::<Vec<_>>(),
            is.difference(&was).collect::<Vec<_>>()
        ));
    }
    Ok(())
}

/// Whether anything was written between two snapshots (LDAP, slurmdbd, Gold).
fn wrote(a: &Snapshot, b: &Snapshot) -> bool {
    fingerprint_of(a) != fingerprint_of(b) || a.txn != b.txn || a.gold_writes != b.gold_writes
}

fn fingerprint_of(s: &Snapshot) -> Vec<(&String, Option<&Vec<String>>)> {
    s.ldap
        .iter()
        .map(|(dn, a)| (dn, a.get("entryCSN")))
        .collect()
}

/// How long an operator's pass counter may stand still before the suite gives up on it.
const PASS_TIMEOUT: Duration = Duration::from_secs(60);

impl World {
    /// kubectl against the operator's API server (off the runtime's threads).
    async fn kube(&self, args: &[&str], stdin: Option<String>) -> std::process::Output {
        let op = self.op.as_ref().unwrap();
        let (kubeconfig, home) = (op.kubeconfig.clone(), self.dir.clone());
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            kubectl(&kubeconfig, &home, &a, stdin.as_deref())
        })
        .await
        .unwrap()
    }

    async fn kube_ok(&self, args: &[&str], stdin: Option<String>) -> Result<String, String> {
        let out = self.kube(args, stdin).await;
        if !out.status.success() {
            return Err(format!(
                "kubectl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The API server, the clock thread and `ops`' namespace and Project, at the first operator
    /// step; then an operator process if none runs.
    async fn ensure_operator(&mut self) -> Result<(), String> {
        if self.op.is_none() {
            let dir = self.dir.join("operator");
            std::fs::create_dir_all(&dir).unwrap();
            let cluster = tokio::task::spawn_blocking(move || Cluster::start(&dir))
                .await
                .unwrap();
            let kubeconfig = cluster.kubeconfig.clone();
            let config = self.dir.join("operator.yaml");
            let mut text = std::fs::read_to_string(&self.cfg).unwrap();
            text.push_str(&operator_config());
            std::fs::write(&config, text).unwrap();
            let offset = self.dir.join("clock-offset");
            pin_clock(&offset, self.now);
            self.op = Some(Operator {
                cluster,
                kubeconfig,
                config,
                offset,
                proc: None,
                port: 0,
                starts: 0,
            });
            let docs = format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {OPS}}}\n{}",
                project(OPS, &self.group(OPS))
            );
            self.kube_ok(&["apply", "-f", "-"], Some(docs)).await?;
        }
        let op = self.op.as_mut().unwrap();
        if op.proc.is_none() {
            op.starts += 1;
            let log = self.dir.join(format!("operator-{}.log", op.starts));
            let offset = op.offset.clone();
            let (proc, port) = operator_process(
                &op.config,
                &op.cluster.operator_kubeconfig,
                &log,
                &format!("safety-{}", op.starts),
                false,
                &["--clock-offset-file", &offset.display().to_string()],
            );
            op.proc = Some(proc);
            op.port = port;
        }
        Ok(())
    }

    fn operator_log(&self) -> String {
        let op = self.op.as_ref().unwrap();
        let log = self.dir.join(format!("operator-{}.log", op.starts));
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The operator's (passes, sacctmgr invocations), when it runs: whether it acted while a
    /// file-mode step ran.
    fn operator_activity(&self) -> Option<(f64, f64)> {
        let port = self.op.as_ref()?.port;
        Some((
            try_metric_where(port, "roster_passes_total", "")?,
            // sacctmgr processes: every Slurm call but the accounting database's reads.
            try_metric_where(port, "roster_backend_operations_total", "backend=\"slurm\"")?
                - try_metric_where(
                    port,
                    "roster_backend_operations_total",
                    "backend=\"slurm\",operation=\"observe\"",
                )?,
        ))
    }

    /// The operator's completed passes (`None` while its metrics do not answer yet).
    fn passes(&self) -> Option<f64> {
        try_metric_where(self.op.as_ref()?.port, "roster_passes_total", "")
    }

    /// Waits until `n` more passes than now have completed (so at least `n - 1` whole passes
    /// started after this call), by the operator's pass counter.
    async fn passes_later(&self, n: f64) -> Result<(), String> {
        let seen = self.passes().unwrap_or(0.0);
        let deadline = std::time::Instant::now() + PASS_TIMEOUT;
        while self.passes().is_none_or(|p| p < seen + n) {
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "the operator's pass counter stood at {:?} (from {seen}) for {PASS_TIMEOUT:?}:\n{}",
                    self.passes(),
                    self.operator_log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Waits until the operator's passes settle — a whole pass started after this call, then a
    /// whole pass wrote nothing (by the pass counter) — and returns what the servers hold.
    async fn settle(&self, out: &str) -> Result<Snapshot, String> {
        self.passes_later(2.0).await?;
        let mut after = self.read().await;
        for _ in 0..10 {
            self.passes_later(2.0).await?;
            let s = self.read().await;
            let changed = wrote(&after, &s);
            after = s;
            if !changed {
                return Ok(after);
            }
        }
        Err(format!(
            "the operator kept writing for 20 passes:\n{out}\n{}",
            self.operator_log()
        ))
    }

    /// Whether the Account of `ops` person `i` is being deleted (held by the finalizer).
    async fn terminating(&self, i: usize) -> Result<bool, String> {
        let u = self.username(OPS, i);
        let out = self
            .kube_ok(
                &[
                    "get",
                    "account",
                    &u,
                    "-n",
                    OPS,
                    "--ignore-not-found",
                    "-o",
                    "jsonpath={.metadata.deletionTimestamp}",
                ],
                None,
            )
            .await?;
        Ok(!out.trim().is_empty())
    }

    /// An operator step: `ops`' API objects brought in line with the model at the model's time,
    /// passes until the servers stop changing, the invariants; then I4: further passes write
    /// nothing.
    async fn operator_step(&mut self, restart: bool) -> Result<(), String> {
        let before = self.snapshot.clone();
        if restart && let Some(op) = self.op.as_mut() {
            // Kills (by its PID) and reaps the process this suite started.
            op.proc = None;
        }
        self.ensure_operator().await?;
        pin_clock(&self.op.as_ref().unwrap().offset, self.now);
        let mut declared = BTreeSet::new();
        let mut out = String::new();
        for i in 0..HAND {
            let u = self.username(OPS, i);
            let id = self.identity(OPS, i);
            if self.declared[&(OPS, i)] {
                if self.terminating(i).await? {
                    // Still held by its finalizer: not declared again until it is gone.
                    out.push_str(&format!("{u}: still being deleted\n"));
                    continue;
                }
                let docs = person_account(OPS, &u, &format!("  projects: [{OPS}]\n"));
                out.push_str(&self.kube_ok(&["apply", "-f", "-"], Some(docs)).await?);
                self.gone.remove(&id);
                declared.insert(id);
            } else {
                for kind in ["account", "person"] {
                    out.push_str(
                        &self
                            .kube_ok(
                                &[
                                    "delete",
                                    kind,
                                    &u,
                                    "-n",
                                    OPS,
                                    "--wait=false",
                                    "--ignore-not-found",
                                ],
                                None,
                            )
                            .await?,
                    );
                }
                self.gone.entry(id).or_insert(self.now);
            }
        }
        let after = self.settle(&out).await?;
        let now = self.now;
        let due = due_at(&before, now);
        isolated(&before, &after, &[OPS], &due, &out)?;
        self.check_state(&after, &declared)?;
        self.snapshot = after;
        // I4: the operator keeps passing and writes nothing.
        for _ in 0..2 {
            self.passes_later(2.0).await?;
            let s = self.read().await;
            if wrote(&self.snapshot, &s) {
                return Err(format!(
                    "I4: the settled operator wrote again (LDAP {}, Slurm txn {} → {}, Gold writes {} → {}):\n{}",
                    fingerprint_of(&s) != fingerprint_of(&self.snapshot),
                    self.snapshot.txn,
                    s.txn,
                    self.snapshot.gold_writes,
                    s.gold_writes,
                    self.operator_log()
                ));
            }
            self.check_state(&s, &declared)?;
            self.snapshot = s;
        }
        Ok(())
    }
}

/// Adds what Roster must never touch: an unmarked account, an unmarked group naming one of
/// Roster's users, and an association of a user Roster does not manage in one of its accounts.
async fn strangers(w: &mut World) {
    let mut ldap = admin().await;
    let user = format!("{}stranger", w.p);
    let people = w.tree.config.people_dn();
    let groups = w.tree.config.groups_dn();
    let dn = format!("uid={user},{people}");
    ldap.add(
        &dn,
        vec![
            ("objectClass", ["inetOrgPerson", "posixAccount"].into()),
            ("uid", [user.as_str()].into()),
            ("cn", ["Stranger"].into()),
            ("sn", ["Stranger"].into()),
            ("uidNumber", ["39999"].into()),
            ("gidNumber", ["39999"].into()),
            ("homeDirectory", ["/home/stranger"].into()),
        ],
    )
    .await
    .unwrap()
    .success()
    .unwrap();
    let member = w.username("alpha", 0);
    let gdn = format!("cn={user}s,{groups}");
    ldap.add(
        &gdn,
        vec![
            ("objectClass", ["posixGroup"].into()),
            ("cn", [format!("{user}s").as_str()].into()),
            ("gidNumber", ["39998"].into()),
            ("memberUid", [member.as_str()].into()),
        ],
    )
    .await
    .unwrap()
    .success()
    .unwrap();
    let s = w.read().await;
    for d in [dn, gdn] {
        let d = d.to_ascii_lowercase();
        let csn = s.first(&d, "entryCSN").unwrap().to_string();
        w.strangers.push((d, csn));
    }
    let account = w.group("alpha");
    let out = sacctmgr(&[
        "-i",
        "add",
        "user",
        &user,
        &format!("account={account}"),
        &format!("cluster={}", w.cluster),
    ]);
    assert!(out.0, "{}", out.1);
    w.stranger_assoc = format!("{account}|{user}|||");
    w.snapshot = w.read().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sequences_keep_every_safety_invariant_on_the_servers() {
    let seed: u64 = std::env::var("SAFETY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(19);
    let n: usize = std::env::var("SAFETY_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let mut w = World::new().await;
    // The site as declared, applied once in full.
    let (code, out) = w.apply(&["alpha", "beta", "hr"], true).await;
    assert_eq!(code, 0, "{out}");
    w.imported(&(0..RECORDS).collect::<Vec<_>>());
    let first = w.read().await;
    w.snapshot = first;
    strangers(&mut w).await;
    let plan = steps(seed, n);
    for (i, step) in plan.iter().enumerate() {
        if let Err(e) = w.step(step).await {
            let replay: Vec<String> = plan[..=i]
                .iter()
                .enumerate()
                .map(|(k, s)| format!("  {k:4} {s:?}"))
                .collect();
            panic!(
                "step {i} of seed {seed} broke an invariant: {e}\nreproduce: make safety SEED={seed} STEPS={}\nsteps:\n{}",
                i + 1,
                replay.join("\n")
            );
        }
    }
    let ops = plan
        .iter()
        .filter(|s| matches!(s, Step::OperatorPass | Step::OperatorRestart))
        .count();
    eprintln!("safety: seed {seed}, {n} steps ({ops} of the operator), every invariant held");
    w.op = None;
    w.tree.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// The three scenarios of #19, in file mode (their operator-mode twins are in tests/suite/operator.rs).

/// A file-mode site of its own: a subtree, a Slurm cluster, a Gold server, a manifest directory
/// per namespace.
struct Scenario {
    tree: TestTree,
    dir: PathBuf,
    cfg: String,
    cluster: String,
    p: String,
    gold: GoldServer,
}

impl Scenario {
    async fn new(name: &str) -> Scenario {
        let tree = TestTree::new(name).await;
        let dir = scratch(name);
        let p = format!("{}{}", &name[..2], std::process::id() % 100_000);
        let cluster = format!("{}{}", &name[..2], std::process::id());
        let out = sacctmgr(&["-i", "add", "cluster", &cluster]);
        assert!(out.0 || out.1.contains("Nothing new added"), "{}", out.1);
        let gold = gold_server().await;
        let cfg = config(&tree, &dir, &cluster, gold.addr().port());
        Scenario {
            tree,
            dir,
            cfg,
            cluster,
            p,
            gold,
        }
    }

    /// The import's namespace `hr`: a project its people join and the ImportSource.
    fn source(&self, extra: &str) {
        let mut s = project(SOURCE_NS, &format!("{}hr", self.p));
        s.push_str(&format!(
            "---\napiVersion: roster.io/v1alpha1\nkind: ImportSource\nmetadata: {{name: staff, namespace: {SOURCE_NS}}}\nspec:\n  sourceUID: {p}-hr\n  reader:\n    type: Csv\n    csv: {{path: people.csv}}\n  mapping: {{id: employeeNumber, first: givenName, last: familyName}}\n  recordUID: <employeeNumber>\n  usernameScheme: {{template: \"<:lower><firstname>[0]<lastname>[COUNTER2]\"}}\n  mode: Sync\n  deletionGracePeriod: {{deactivation: {SOURCE_DEACTIVATION}, deletion: {SOURCE_DELETION}}}\n  defaults: {{projects: [{SOURCE_NS}]}}\n{extra}",
            p = self.p
        ));
        write(&self.dir.join(SOURCE_NS), "site.yaml", &s);
    }

    fn export(&self, rows: &[(usize, &str, &str)]) {
        let mut t = String::from("id,first,last\n");
        for (id, first, last) in rows {
            t.push_str(&format!("{id},{first},{last}\n"));
        }
        write(&self.dir.join(SOURCE_NS), "people.csv", &t);
    }

    /// `roster <verb>` of these namespaces' directories at `now`.
    async fn run(&self, verb: &str, namespaces: &[&str], now: i64) -> (i32, String) {
        self.run_with(verb, namespaces, now, &[]).await
    }

    async fn run_with(
        &self,
        verb: &str,
        namespaces: &[&str],
        now: i64,
        extra: &[&str],
    ) -> (i32, String) {
        let mut args = vec![verb.to_string()];
        args.extend(extra.iter().map(|a| a.to_string()));
        for ns in namespaces {
            args.extend(["-f".into(), self.dir.join(ns).display().to_string()]);
        }
        args.extend([
            "--config".into(),
            self.cfg.clone(),
            "--now".into(),
            rfc3339(now),
        ]);
        roster_off_runtime(args).await
    }

    async fn account(&self, username: &str) -> Option<BTreeMap<String, Vec<String>>> {
        entries(
            &mut admin().await,
            &self.tree.config.people_dn(),
            &format!("(uid={username})"),
        )
        .await
        .into_iter()
        .next()
        .map(|e| e.attrs.into_iter().collect())
    }

    /// What Slurm and Gold hold for this scenario, and their write counters.
    async fn backends(&self) -> (Vec<String>, u64, Vec<String>, usize) {
        let (_, out) = sacctmgr(&[
            "-nP",
            "show",
            "assoc",
            &format!("cluster={}", self.cluster),
            "format=Account,User,ID,MaxJobs,MaxSubmit",
        ]);
        let mut assocs: Vec<String> = out.lines().map(str::to_string).collect();
        assocs.sort();
        let mut gold: Vec<String> = self
            .gold
            .rows("ProjectUser")
            .into_iter()
            .map(|r| format!("{r:?}"))
            .collect();
        gold.sort();
        let writes = self
            .gold
            .log()
            .iter()
            .filter(|l| l.action != "Query")
            .count();
        (
            assocs,
            slurm_txn(&self.cluster, &self.p).await,
            gold,
            writes,
        )
    }
}

const T0: i64 = 1_893_456_000;

/// #19 scenario 1, file mode: an export truncated to half trips the deletion guard, and the same
/// apply changes nothing anywhere — the source's people keep their group memberships, Slurm
/// associations (same ids) and Gold memberships; then the good export writes nothing either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_import_keeps_its_contribution_in_ldap_slurm_and_gold() {
    let s = Scenario::new("guarded").await;
    s.source("  maxDeletions: {percent: 10}\n");
    let people: Vec<(usize, String, String)> = (1..=8)
        .map(|i| (i, "Kim".to_string(), format!("{}n{i}", s.p)))
        .collect();
    let rows = |n: usize| -> Vec<(usize, &str, &str)> {
        people[..n]
            .iter()
            .map(|(i, f, l)| (*i, f.as_str(), l.as_str()))
            .collect()
    };
    s.export(&rows(8));
    let (code, out) = s.run("apply", &[SOURCE_NS], T0).await;
    assert_eq!(code, 0, "{out}");
    let group = format!("(cn={}hr)", s.p);
    let members = || async {
        let e = entries(&mut admin().await, &s.tree.config.groups_dn(), &group).await;
        let mut m = e[0].attrs["memberUid"].clone();
        m.sort();
        m
    };
    assert_eq!(members().await.len(), 8);
    let (assocs, txn, gold, gold_writes) = s.backends().await;
    let imported = format!("|k{}n", s.p);
    assert_eq!(
        assocs.iter().filter(|a| a.contains(&imported)).count(),
        8,
        "{assocs:?}"
    );
    assert_eq!(gold.len(), 8, "{gold:?}");
    let ldap = fingerprint(&s.tree.dn).await;
    // Half the export: the guard trips, and nothing is written anywhere.
    s.export(&rows(4));
    let (code, out) = s.run("apply", &[SOURCE_NS], T0 + 60).await;
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("deletion guard"), "{out}");
    assert_eq!(fingerprint(&s.tree.dn).await, ldap, "LDAP: {out}");
    assert_eq!(
        s.backends().await,
        (assocs.clone(), txn, gold.clone(), gold_writes),
        "{out}"
    );
    // The same with --prune: an aborted source's people are never pruned.
    let (code, out) = s
        .run_with("apply", &[SOURCE_NS], T0 + 120, &["--prune"])
        .await;
    assert_eq!(code, 3, "{out}");
    assert_eq!(fingerprint(&s.tree.dn).await, ldap, "LDAP: {out}");
    // The good export again: nothing to do, the same associations (ids and all).
    s.export(&rows(8));
    let (code, out) = s.run("apply", &[SOURCE_NS], T0 + 180).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(fingerprint(&s.tree.dn).await, ldap, "LDAP: {out}");
    assert_eq!(
        s.backends().await,
        (assocs, txn, gold, gold_writes),
        "{out}"
    );
    s.tree.cleanup().await;
}

/// #19 scenario 2, file mode: a record leaves its source (deactivation after 14 days, deletion
/// after 180); the source's run records both deadlines. A run of another namespace's files a
/// minute later changes nothing (plan and apply); on day 15 it carries out the recorded
/// deactivation, keeping the recorded purge time; nobody purges at the site's 90 days; on day
/// 180 the purge happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_namespaces_run_carries_out_recorded_deadlines_and_decides_none() {
    let s = Scenario::new("deadlines").await;
    s.source("");
    let last = format!("{}gross", s.p);
    let user = format!("j{last}");
    s.export(&[(1, "Jana", &last), (2, "Karl", &format!("{}other", s.p))]);
    write(
        &s.dir.join("chem"),
        "site.yaml",
        &person_account("chem", &format!("{}chem", s.p), ""),
    );
    let (code, out) = s.run("apply", &[SOURCE_NS, "chem"], T0).await;
    assert_eq!(code, 0, "{out}");
    s.export(&[(2, "Karl", &format!("{}other", s.p))]);
    let gone = T0 + DAY;
    let (code, out) = s.run("apply", &[SOURCE_NS], gone).await;
    assert_eq!(code, 0, "{out}");
    let e = s.account(&user).await.unwrap();
    let at = |e: &BTreeMap<String, Vec<String>>, a: &str| e.get(a).map(|v| time(&v[0]));
    assert_eq!(at(&e, "rosterGoneAt"), Some(gone));
    assert_eq!(at(&e, "rosterDeactivateAt"), Some(gone + 14 * DAY));
    assert_eq!(at(&e, "rosterPurgeAt"), Some(gone + 180 * DAY));
    assert!(!e.contains_key("pwdAccountLockedTime"));
    // The other namespace, a minute later: its plan shows nothing of hr, its apply writes
    // nothing of hr's person (with and without --prune).
    let csn = e["entryCSN"].clone();
    let (code, out) = s.run("plan", &["chem"], gone + 60).await;
    assert_eq!(code, 0, "a plan with nothing to do: {out}");
    assert!(!out.contains(&user), "{out}");
    for extra in [&[][..], &["--prune"]] {
        let (code, out) = s.run_with("apply", &["chem"], gone + 120, extra).await;
        assert_eq!(code, 0, "{out}");
        assert_eq!(s.account(&user).await.unwrap()["entryCSN"], csn, "{out}");
    }
    // Day 15: the recorded deactivation, carried out by the other namespace's run.
    let (code, out) = s.run("apply", &["chem"], gone + 15 * DAY).await;
    assert_eq!(code, 0, "{out}");
    let e = s.account(&user).await.unwrap();
    assert!(e.contains_key("pwdAccountLockedTime"), "{out}");
    assert_eq!(at(&e, "rosterDeactivatedAt"), Some(gone + 15 * DAY));
    assert_eq!(at(&e, "rosterPurgeAt"), Some(gone + 180 * DAY));
    // Day 100: no purge planned by either repository.
    for ns in [SOURCE_NS, "chem"] {
        let (_, out) = s.run("plan", &[ns], gone + 100 * DAY).await;
        assert!(
            !out.contains(&format!("purge account {user}")),
            "{ns}: {out}"
        );
    }
    let (code, out) = s.run("apply", &["chem"], gone + 100 * DAY).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        s.account(&user).await.is_some(),
        "not purged at 90+10 days: {out}"
    );
    // Day 180: purged (by any run), behind its tombstone.
    let (code, out) = s.run("apply", &["chem"], gone + 180 * DAY).await;
    assert_eq!(code, 0, "{out}");
    assert!(s.account(&user).await.is_none(), "{out}");
    s.tree.cleanup().await;
}

/// #19 scenario 3, file mode: a row refused after its username was generated (a control
/// character in a name) advances no counter, run after run (the second run writes nothing at
/// all); once fixed, the person gets the next free name, not a burnt one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_row_advances_no_username_counter() {
    let s = Scenario::new("counter").await;
    s.source("  toleratedErrors: 5\n");
    let last = format!("{}schmidt", s.p);
    s.export(&[(1, "Maria", &last), (2, "Ma\u{7}rio", &last)]);
    let (code, out) = s.run("apply", &[SOURCE_NS], T0).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("x row"), "the second row is refused: {out}");
    let counters = || async {
        entries(
            &mut admin().await,
            &s.tree.config.counters_dn(),
            "(cn=username:*)",
        )
        .await
        .into_iter()
        .map(|e| (e.dn, e.attrs.get("rosterCounterValue").cloned()))
        .collect::<Vec<_>>()
    };
    // m<last> was written: the counter says 2 is next; the refused m<last>2 advanced nothing.
    let counter = |v: &str| {
        vec![(
            format!("cn=username:m{last},{}", s.tree.config.counters_dn()),
            Some(vec![v.to_string()]),
        )]
    };
    assert_eq!(counters().await, counter("2"), "{out}");
    let ldap = fingerprint(&s.tree.dn).await;
    let (code, out) = s.run("apply", &[SOURCE_NS], T0 + 60).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        fingerprint(&s.tree.dn).await,
        ldap,
        "a no-op apply writes nothing: {out}"
    );
    // Fixed: the second person gets m<last>2, and the counter now says so.
    s.export(&[(1, "Maria", &last), (2, "Mario", &last)]);
    let (code, out) = s.run("apply", &[SOURCE_NS], T0 + 120).await;
    assert_eq!(code, 0, "{out}");
    let second = s.account(&format!("m{last}2")).await.expect("m…2");
    assert_eq!(second["rosterRecordUID"], ["2"]);
    assert_eq!(counters().await, counter("3"), "{out}");
    s.tree.cleanup().await;
}
