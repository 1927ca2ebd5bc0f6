//! Faults: backends that die mid-run, an operator killed between two writes, an API server
//! that answers 409 (the fault proxy in front of the real one) and expires watches (real etcd
//! compaction). Every test starts private servers of its own
//! (`tests/suite/support/faults.rs`), breaks them by PID, and checks afterwards that everything
//! converged with no duplicate entry, no uid or gid given twice and no lost membership, and
//! that exit codes, conditions and logs said what was wrong meanwhile.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};

use support::faults::*;
use support::roster;

/// Writes the config (the directory's part plus `extra`) and the site's manifests.
fn files(dir: &Path, slapd: &Slapd, extra: &str, site: &Site) -> (String, String) {
    let config = file(dir, "roster.yaml", &format!("{}{extra}", slapd.config()));
    let manifests = file(dir, "site.yaml", &site.manifests());
    (
        config.display().to_string(),
        manifests.display().to_string(),
    )
}

/// `roster apply` in the background (the test watches the directory meanwhile).
fn spawn_apply(manifests: &str, config: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["apply", "-f", manifests, "--config", config])
        .env_remove("ROSTER_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `roster` off the runtime's threads.
async fn apply(manifests: &str, config: &str) -> (i32, String) {
    let (m, c) = (manifests.to_string(), config.to_string());
    tokio::task::spawn_blocking(move || {
        let (code, out, err) = roster(&["apply", "-f", &m, "--config", &c]);
        (code, format!("{out}{err}"))
    })
    .await
    .unwrap()
}

/// Waits until at least `n` accounts are in the directory.
async fn until_accounts(slapd: &Slapd, n: usize) {
    wait_async(&format!("{n} accounts written"), 60, || async {
        slapd.accounts().await >= n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_killed_during_a_large_file_apply_exits_1_and_a_reapply_converges_without_renumbering()
{
    let dir = Workdir::new("faults-ldap-file");
    let site = Site::new("lab", 300, 30);
    // The reference: what a clean run allocates, in a directory of its own.
    let clean = Slapd::start(&dir.join("clean"));
    let clean_dir = dir.join("clean-run");
    std::fs::create_dir_all(&clean_dir).unwrap();
    let (cfg, m) = files(&clean_dir, &clean, "", &site);
    let (code, out) = apply(&m, &cfg).await;
    assert_eq!(code, 0, "{out}");
    let reference = clean.state().await.uids();
    drop(clean);

    let slapd = Slapd::start(&dir.join("slapd"));
    let (cfg, m) = files(&dir, &slapd, "", &site);
    let child = spawn_apply(&m, &cfg);
    until_accounts(&slapd, 5).await;
    slapd.kill();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "the error exit code:\n{text}");
    let reason = format!("cannot reach the directory at {}", slapd.uri());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "error: applied, but re-reading the directory failed: {reason}"
        )),
        "{text}"
    );
    // Each write that did not happen is named, with the reason.
    assert!(
        text.lines()
            .any(|l| l.starts_with("x Account lab/") && l.contains(&reason)),
        "{text}"
    );

    slapd.restart();
    let partial = slapd.state().await;
    assert!(
        partial.accounts.len() < site.users.len(),
        "apply finished before the kill; the test proves nothing"
    );
    for (u, uid) in partial.uids() {
        assert_eq!(reference[&u], uid, "{u}: the uid a clean run gives it");
    }
    let (code, out) = apply(&m, &cfg).await;
    assert_eq!(code, 0, "{out}");
    let after = slapd.state().await;
    after.assert_converged(&site);
    for (u, uid) in partial.uids() {
        assert_eq!(after.uids()[&u], uid, "{u} was renumbered");
    }
    let (code, out) = apply(&m, &cfg).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("No changes"), "{out}");
}

/// A real control plane, a private slapd and a config for the operator.
struct World {
    slapd: Slapd,
    cluster: Cluster,
    config: std::path::PathBuf,
    _dir: Workdir,
}

/// `apiserver_args`: extra kube-apiserver flags for this world's control plane.
fn world(name: &str, apiserver_args: &[&str], extra: &str) -> World {
    let dir = Workdir::new(name);
    let slapd = Slapd::start(&dir.join("slapd"));
    let cluster = Cluster::start(&dir, apiserver_args);
    let config = file(
        &dir,
        "roster.yaml",
        &format!("{}{OPERATOR}{extra}", slapd.config()),
    );
    World {
        slapd,
        cluster,
        config,
        _dir: dir,
    }
}

impl World {
    /// Waits until every Account and Project of `site` says `type_` = True; on a timeout the
    /// failure names the objects that do not, with their condition.
    fn wait_all(&self, site: &Site, type_: &str, secs: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let mut objs = self.cluster.objects("accounts", &site.ns);
            objs.extend(self.cluster.objects("projects", &site.ns));
            let not: Vec<String> = objs
                .iter()
                .filter_map(|o| {
                    let c = condition(o, type_);
                    (c.as_ref().map(|c| c.0.as_str()) != Some("True"))
                        .then(|| format!("{}: {c:?}", o["metadata"]["name"]))
                })
                .collect();
            if not.is_empty() && objs.len() == site.users.len() + site.projects.len() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for every object {type_}; {} of {} are not, e.g. {:?}",
                not.len(),
                objs.len(),
                &not[..not.len().min(3)]
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// The uids Kubernetes reports equal the directory's.
    fn assert_status_uids(&self, site: &Site, uids: &BTreeMap<String, u32>) {
        for a in self.cluster.objects("accounts", &site.ns) {
            let name = a["metadata"]["name"].as_str().unwrap();
            assert_eq!(
                a["status"]["uidNumber"].as_u64(),
                uids.get(name).map(|n| u64::from(*n)),
                "{name}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_killed_during_operator_convergence_is_reported_unavailable_and_converges_without_restart()
 {
    let w = world("faults-ldap-op", &[], "");
    let site = Site::new("lab", 300, 30);
    w.cluster.apply(&site.ns, &site.manifests());
    let (mut op, port) = w.cluster.operator(&w.config, "op");
    until_accounts(&w.slapd, 5).await;
    w.slapd.kill();
    // While the directory is down, the objects say so.
    wait_sync("LdapSynced=False DirectoryUnavailable", 60, || {
        let a = w.cluster.objects("accounts", &site.ns);
        count(&a, "LdapSynced", "False", Some("DirectoryUnavailable")) == site.users.len()
            && count(&a, "Ready", "False", Some("DirectoryUnavailable")) == site.users.len()
    });
    let a = w.cluster.objects("accounts", &site.ns);
    let (_, _, message) = condition(&a[0], "LdapSynced").unwrap();
    assert!(
        message.contains(&format!("cannot reach the directory at {}", w.slapd.uri())),
        "{message}"
    );
    assert!(
        metric(
            port,
            "roster_backend_operations_total",
            "backend=\"ldap\",operation=\"observe\",outcome=\"error\""
        ) > 0.0,
        "failed observations are counted: {}",
        http(&format!("127.0.0.1:{port}"), "GET", "/metrics")
    );
    w.slapd.restart();
    w.wait_all(&site, "Ready", 120);
    assert!(
        op.0.try_wait().unwrap().is_none(),
        "the operator kept running"
    );
    let st = w.slapd.state().await;
    st.assert_converged(&site);
    w.assert_status_uids(&site, &st.uids());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_unobservable_then_slurmdbd_down_in_file_mode_ldap_completes_and_slurm_catches_up() {
    let dir = Workdir::new("faults-slurm-file");
    let slapd = Slapd::start(&dir.join("slapd"));
    let slurm = Slurm::start(&dir.join("slurm"), "ffile");
    let url = file(&dir, "ro.url", &closed_port_url(&slurm.ro_url()));
    let small = Site::new("lab", 30, 5);
    let (cfg, m) = files(&dir, &slapd, &slurm.config(&url), &small);
    // MariaDB unreachable: the directory is converged, Slurm is not written blind.
    let txn = slurm.max_txn().await;
    let (code, out) = apply(&m, &cfg).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("error: cannot read the Slurm accounting database: connection failed"),
        "{out}"
    );
    slapd.state().await.assert_converged(&small);
    assert_eq!(
        slurm.max_txn().await,
        txn,
        "sacctmgr wrote without an observation"
    );
    assert!(slurm.associations().is_empty());

    // slurmdbd down while the directory gets more: LDAP completes, Slurm says why it did not.
    std::fs::write(&url, slurm.ro_url()).unwrap();
    let site = Site::new("lab", 40, 6);
    let m = file(&dir, "site.yaml", &site.manifests())
        .display()
        .to_string();
    slurm.kill_slurmdbd();
    let (code, out) = apply(&m, &cfg).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("x slurm: ") && out.contains("SlurmdbdUnreachable"),
        "{out}"
    );
    slapd.state().await.assert_converged(&site);

    slurm.restart();
    let (code, out) = apply(&m, &cfg).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(slurm.associations(), site.associations());
    slapd.state().await.assert_converged(&site);
    let txn = slurm.max_txn().await;
    let (code, out) = apply(&m, &cfg).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        slurm.max_txn().await,
        txn,
        "a converged site writes nothing: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_unobservable_then_slurmdbd_down_in_operator_mode_fails_only_slurm_and_recovers() {
    let dir = Workdir::new("faults-slurm-op-url");
    let slurm = Slurm::start(&dir.join("slurm"), "fop");
    let url = file(&dir, "ro.url", &closed_port_url(&slurm.ro_url()));
    let w = world("faults-slurm-op", &[], &slurm.config(&url));
    let site = Site::new("lab", 30, 5);
    let txn = slurm.max_txn().await;
    w.cluster.apply(&site.ns, &site.manifests());
    let (_op, _) = w.cluster.operator(&w.config, "op");
    // MariaDB unreachable: LDAP converges, SlurmSynced says why, nothing is written to Slurm.
    w.wait_all(&site, "LdapSynced", 60);
    wait_sync("SlurmSynced=False SlurmUnavailable", 60, || {
        let a = w.cluster.objects("accounts", &site.ns);
        count(&a, "SlurmSynced", "False", Some("SlurmUnavailable")) == site.users.len()
    });
    let a = w.cluster.objects("accounts", &site.ns);
    let (_, _, message) = condition(&a[0], "SlurmSynced").unwrap();
    assert!(
        message.contains("cannot read the Slurm accounting database"),
        "{message}"
    );
    w.slapd.state().await.assert_converged(&site);
    assert_eq!(
        slurm.max_txn().await,
        txn,
        "sacctmgr wrote without an observation"
    );

    // The database is back: Slurm converges without a restart.
    std::fs::write(&url, slurm.ro_url()).unwrap();
    w.wait_all(&site, "SlurmSynced", 60);
    w.wait_all(&site, "Ready", 60);
    assert_eq!(slurm.associations(), site.associations());

    // slurmdbd down while people arrive and memberships move: the directory follows, Slurm
    // says why, and catches up when slurmdbd is back.
    slurm.kill_slurmdbd();
    let changed = Site::new("lab", 40, 6);
    w.cluster.apply(&changed.ns, &changed.manifests());
    wait_sync("SlurmSynced=False SlurmdbdUnreachable", 60, || {
        let p = w.cluster.objects("projects", &changed.ns);
        count(&p, "SlurmSynced", "False", Some("SlurmdbdUnreachable")) > 0
    });
    let ldap_done = || async { w.slapd.state().await.accounts.len() == changed.users.len() };
    wait_async("the directory follows", 60, ldap_done).await;
    slurm.restart();
    w.wait_all(&changed, "Ready", 120);
    assert_eq!(slurm.associations(), changed.associations());
    w.slapd.state().await.assert_converged(&changed);
}

/// A Gold test server in process, behind a proxy that can drop connections.
async fn gold(dir: &Path) -> (roster_gold_server::GoldServer, FlakyProxy, String) {
    use roster_gold_server::{GoldServer, Options};
    let secret = "faults-gold-secret";
    let server = GoldServer::start("127.0.0.1:0", Options::new(secret))
        .await
        .unwrap();
    let proxy = FlakyProxy::start(server.addr()).await;
    let key = file(dir, "gold.key", &format!("{secret}\n"));
    let extra = format!(
        "gold:\n  host: 127.0.0.1\n  port: {}\n  authKeyFile: {}\n  timeoutSeconds: 5\n  attempts: 3\n",
        proxy.port,
        key.display()
    );
    (server, proxy, extra)
}

/// The site with a Gold allocation on every project.
fn gold_site(site: &Site) -> String {
    site.manifests_with(
        "  gold:\n    allocations:\n      - {amount: 100, start: \"2030-01-01\", end: \"2030-12-31\"}\n",
    )
}

fn deposits(server: &roster_gold_server::GoldServer) -> usize {
    server
        .log()
        .iter()
        .filter(|e| e.action == "Deposit" && e.code == "000")
        .count()
}

/// Every project's allocation holds exactly its one deposit.
fn assert_deposited_once(server: &roster_gold_server::GoldServer, site: &Site) {
    // (Besides Gold's own 0-credit allocation of each new account, allocation.autogen.)
    let allocs: Vec<_> = server
        .rows("Allocation")
        .into_iter()
        .filter(|a| a["Deposited"] != "0")
        .collect();
    assert_eq!(allocs.len(), site.projects.len(), "{allocs:?}");
    for a in &allocs {
        assert_eq!(a["Deposited"].parse::<f64>().unwrap() as i64, 100, "{a:?}");
    }
    let members: BTreeSet<(String, String)> = server
        .rows("ProjectUser")
        .into_iter()
        .map(|r| (r["Project"].clone(), r["Name"].clone()))
        .collect();
    assert_eq!(members, site.associations(), "Gold memberships");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gold_dropping_connections_and_replies_in_file_mode_retries_and_never_deposits_twice() {
    let dir = Workdir::new("faults-gold-file");
    let slapd = Slapd::start(&dir.join("slapd"));
    let (server, proxy, extra) = gold(&dir).await;
    let site = Site::new("lab", 20, 4);
    let (cfg, _) = files(&dir, &slapd, &extra, &site);
    let m = file(&dir, "site.yaml", &gold_site(&site))
        .display()
        .to_string();
    // Gold drops every connection: the directory is done, Gold's failure is named.
    proxy.set_dropping(true);
    let (code, out) = apply(&m, &cfg).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("x gold: "), "{out}");
    assert!(proxy.dropped() >= 3, "three attempts: {}", proxy.dropped());
    assert!(server.log().is_empty(), "nothing reached Gold");
    slapd.state().await.assert_converged(&site);
    // Gold answers, but loses replies: performed, not answered. Retries re-read first.
    proxy.set_dropping(false);
    for action in ["Deposit", "Deposit", "Create"] {
        server.drop_next_reply(action);
    }
    let (code, out) = apply(&m, &cfg).await;
    let (code, out) = if code == 0 {
        (code, out)
    } else {
        // A lost reply the run could not confirm is retried by the next run, never doubled.
        assert!(out.contains("x gold: "), "{out}");
        apply(&m, &cfg).await
    };
    assert_eq!(code, 0, "{out}");
    assert_deposited_once(&server, &site);
    assert_eq!(
        deposits(&server),
        site.projects.len(),
        "one deposit request each"
    );
    let (code, out) = apply(&m, &cfg).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        deposits(&server),
        site.projects.len(),
        "a second run deposits nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gold_dropping_connections_in_operator_mode_says_gold_synced_false_then_converges() {
    let dir = Workdir::new("faults-gold-op-key");
    let (server, proxy, extra) = gold(&dir).await;
    proxy.set_dropping(true);
    let w = world("faults-gold-op", &[], &extra);
    let site = Site::new("lab", 20, 4);
    w.cluster.apply(&site.ns, &gold_site(&site));
    let (_op, port) = w.cluster.operator(&w.config, "op");
    w.wait_all(&site, "LdapSynced", 60);
    wait_sync("GoldSynced=False GoldUnavailable", 60, || {
        let p = w.cluster.objects("projects", &site.ns);
        count(&p, "GoldSynced", "False", Some("GoldUnavailable")) == site.projects.len()
    });
    assert!(server.log().is_empty(), "nothing reached Gold");
    w.slapd.state().await.assert_converged(&site);
    proxy.set_dropping(false);
    server.drop_next_reply("Deposit");
    server.drop_next_reply("Create");
    w.wait_all(&site, "GoldSynced", 60);
    w.wait_all(&site, "Ready", 60);
    assert_deposited_once(&server, &site);
    assert_eq!(
        deposits(&server),
        site.projects.len(),
        "one deposit request each"
    );
    // The failures were counted.
    support::wait_metric(
        port,
        "roster_backend_operations_total",
        "outcome=\"error\"",
        1.0,
    );
}

/// A small deterministic generator (xorshift), seeded from the clock and printed, so a failing
/// run can be repeated with ROSTER_FAULT_SEED.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let seed = std::env::var("ROSTER_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        println!("ROSTER_FAULT_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_sigkilled_at_random_points_converges_without_duplicates_or_lost_members() {
    let w = world("faults-kill", &[], "");
    let site = Site::new("lab", 300, 30);
    w.cluster.apply(&site.ns, &site.manifests());
    let mut rng = Rng::seeded();
    let mut seen_before = BTreeMap::new();
    let mut kills = vec![];
    for round in 0..3 {
        let before = w.slapd.accounts().await;
        let k = 1 + rng.below(60) as usize;
        let (mut op, _) = w.cluster.operator(&w.config, &format!("op{round}"));
        until_accounts(&w.slapd, before + k).await;
        kill_pid(op.0.id());
        let _ = op.0.wait();
        let at = w.slapd.accounts().await;
        println!("round {round}: killed after {k}+ account writes ({before} → {at})");
        kills.push(at);
        // Whatever was written keeps its number through every restart.
        let st = w.slapd.state().await;
        for (u, n) in &seen_before {
            assert_eq!(st.uids().get(u), Some(n), "{u} renumbered");
        }
        seen_before = st.uids();
    }
    assert!(
        kills.iter().all(|n| *n < site.users.len()),
        "the operator finished before a kill ({kills:?}); the test proves nothing"
    );
    let (_op, _) = w.cluster.operator(&w.config, "last");
    w.wait_all(&site, "Ready", 180);
    let st = w.slapd.state().await;
    st.assert_converged(&site);
    for (u, n) in &seen_before {
        assert_eq!(st.uids().get(u), Some(n), "{u} renumbered");
    }
    w.assert_status_uids(&site, &st.uids());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_conflicts_and_expired_watches_are_retried_and_the_operator_converges() {
    // The watch cache off: watches are served by etcd itself, so compacting etcd's history
    // expires them on demand (with the cache on, a watch falls behind only once more events
    // than the cache holds happen within 75 s, and the cache grows to keep up).
    let w = world("faults-api", &["--watch-cache=false"], "");
    // Every third write to a Roster object is answered 409 Conflict by the proxy.
    w.cluster.fault("POST", "/_fault/conflict-every/3");
    let site = Site::new("lab", 30, 5);
    w.cluster.apply(&site.ns, &site.manifests());
    let (op, _port) = w.cluster.operator(&w.config, "op");
    w.wait_all(&site, "Ready", 90);
    let faults = w.cluster.fault("GET", "/_fault/report");
    assert!(faults["conflicts"].as_u64().unwrap() > 0, "{faults}");
    assert!(
        w.cluster.log("op").contains("status write failed"),
        "the log shows the refused writes"
    );
    // Watches expire: the operator's watches held back and ended, the objects changed,
    // etcd's history compacted (by the real etcd), the watches let go: each resumes from a
    // resourceVersion that is gone, is answered 410 Gone by the real API server, relists, and
    // the operator still follows changes made afterwards.
    w.cluster.fault("POST", "/_fault/conflict-every/0");
    w.cluster.fault("POST", "/_fault/pause-watches");
    w.cluster.fault("POST", "/_fault/close-watches");
    let grown = Site::new("lab", 40, 6);
    w.cluster.apply(&grown.ns, &grown.manifests());
    w.cluster.fault("POST", "/_fault/compact");
    w.cluster.fault("POST", "/_fault/resume-watches");
    wait_sync("a watch answered 410 Gone", 30, || {
        w.cluster.fault("GET", "/_fault/report")["gone"]
            .as_u64()
            .unwrap()
            > 0
    });
    w.wait_all(&grown, "Ready", 90);
    let st = w.slapd.state().await;
    st.assert_converged(&grown);
    w.assert_status_uids(&grown, &st.uids());
    drop(op);
}
