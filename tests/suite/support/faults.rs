//! Private backends for the fault tests (`tests/suite/faults.rs`): each test starts its own slapd,
//! Slurm accounting stack, a real control plane (hack/k8s) and the operator on free ports under its scratch
//! directory, breaks them by PID, and checks what the directory and Slurm hold afterwards.
//! The shared dev servers under `.dev/` are never touched.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ldap3::{Ldap, LdapConnAsync, Scope, SearchEntry};

use super::{free_port, repo_root};

/// The base DN of every private directory (each test has its own slapd).
pub const BASE: &str = "dc=faults,dc=test";

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Owned(pub Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A test's scratch directory, removed when the test passes (kept for inspection when it
/// fails). Declare it before the servers that live in it, so they stop first.
pub struct Workdir(pub PathBuf);

impl Workdir {
    pub fn new(name: &str) -> Workdir {
        Workdir(super::scratch(name))
    }
}

impl std::ops::Deref for Workdir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Sends SIGKILL to `pid` (a process this test started) and waits until it is gone.
pub fn kill_pid(pid: u32) {
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -KILL {pid}");
    wait_sync(&format!("process {pid} to end"), 30, || {
        // A zombie (not yet reaped by its parent) counts as gone.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.split_whitespace().nth(2) == Some("Z"))
            .unwrap_or(true)
    });
}

fn pid_file(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn script(name: &str, args: &[&str]) {
    let out = Command::new(repo_root().join("hack/lib").join(name))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the hack script runs");
    assert!(
        out.status.success(),
        "hack/lib/{name} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `ok` every 20 ms until it holds, for at most `secs` seconds.
pub fn wait_sync(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The async form of [`wait_sync`].
pub async fn wait_async<F, Fut>(what: &str, secs: u64, mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts a server that cannot bind port 0 and say its port (slapd, MariaDB, slurmdbd) on ports
/// chosen now. A port free when chosen can be taken by a parallel test's server before ours binds
/// it: then `hack/lib/SCRIPT stop --dir DIR` stops what started, DIR is removed, and the server is
/// started again on other ports (at most three tries; the last failure is the test's).
pub fn on_free_ports<T>(script: &str, dir: &Path, mut start: impl FnMut() -> T) -> T {
    for attempt in 0.. {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut start)) {
            Ok(server) => return server,
            Err(e) if attempt >= 2 => std::panic::resume_unwind(e),
            Err(_) => {
                let _ = Command::new(repo_root().join("hack/lib").join(script))
                    .args(["stop", "--dir", &dir.display().to_string()])
                    .stdin(Stdio::null())
                    .output();
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
    unreachable!("the loop returns or panics")
}

// ---------------------------------------------------------------------------------------------
// slapd

/// A private slapd (hack/lib/slapd.sh) with Roster's schema and containers under [`BASE`].
pub struct Slapd {
    pub dir: PathBuf,
    pub port: u16,
}

impl Slapd {
    pub fn start(dir: &Path) -> Slapd {
        on_free_ports("slapd.sh", dir, || {
            let s = Slapd {
                dir: dir.to_path_buf(),
                port: free_port(),
            };
            s.restart();
            s
        })
    }

    /// Starts it again (same directory and port) after a kill.
    pub fn restart(&self) {
        let dir = self.dir.display().to_string();
        let port = self.port.to_string();
        script(
            "slapd.sh",
            &["start", "--dir", &dir, "--port", &port, "--base", BASE],
        );
    }

    pub fn uri(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash or an OOM kill would: no clean shutdown.
    pub fn kill(&self) {
        kill_pid(pid_file(&self.dir.join("slapd.pid")));
    }

    /// The `ldap:` part of a config for this directory, and the id ranges.
    pub fn config(&self) -> String {
        format!(
            "managerId: faults\nldap:\n  uri: {}\n  bindDN: cn=admin,{BASE}\n  bindPasswordFile: {}\n  baseDN: {BASE}\n  timeoutSeconds: 5\nuidRange: {{min: 30000, max: 39999}}\ngidRange: {{min: 30000, max: 39999}}\n",
            self.uri(),
            self.dir.join("admin.pw").display()
        )
    }

    pub async fn admin(&self) -> Ldap {
        let (conn, mut ldap) = LdapConnAsync::new(&self.uri())
            .await
            .expect("slapd answers");
        ldap3::drive!(conn);
        let pw = std::fs::read_to_string(self.dir.join("admin.pw")).unwrap();
        ldap.simple_bind(&format!("cn=admin,{BASE}"), pw.trim_end_matches('\n'))
            .await
            .unwrap()
            .success()
            .expect("admin bind");
        ldap
    }

    /// How many account entries the directory holds now (0 while it is down).
    pub async fn accounts(&self) -> usize {
        let Ok((conn, mut ldap)) = LdapConnAsync::new(&self.uri()).await else {
            return 0;
        };
        ldap3::drive!(conn);
        let pw = std::fs::read_to_string(self.dir.join("admin.pw")).unwrap();
        let _ = ldap
            .simple_bind(&format!("cn=admin,{BASE}"), pw.trim_end_matches('\n'))
            .await;
        let n = ldap
            .search(
                &format!("ou=people,{BASE}"),
                Scope::OneLevel,
                "(objectClass=posixAccount)",
                vec!["1.1"],
            )
            .await
            .map(|r| r.0.len())
            .unwrap_or(0);
        let _ = ldap.unbind().await;
        n
    }

    /// Every account and group below the base.
    pub async fn state(&self) -> DirState {
        let mut ldap = self.admin().await;
        let (rs, _) = ldap
            .search(
                BASE,
                Scope::Subtree,
                "(|(objectClass=posixAccount)(objectClass=posixGroup))",
                vec![
                    "objectClass",
                    "uid",
                    "uidNumber",
                    "cn",
                    "gidNumber",
                    "memberUid",
                ],
            )
            .await
            .unwrap()
            .success()
            .unwrap();
        let mut st = DirState::default();
        let first = |e: &SearchEntry, a: &str| e.attrs.get(a).and_then(|v| v.first()).cloned();
        for e in rs.into_iter().map(SearchEntry::construct) {
            let classes = &e.attrs["objectClass"];
            if classes
                .iter()
                .any(|c| c.eq_ignore_ascii_case("posixAccount"))
            {
                let n = first(&e, "uidNumber").unwrap().parse().unwrap();
                st.accounts
                    .entry(first(&e, "uid").unwrap())
                    .or_default()
                    .push(n);
            } else {
                let n = first(&e, "gidNumber").unwrap().parse().unwrap();
                let members = e.attrs.get("memberUid").cloned().unwrap_or_default();
                st.groups
                    .entry(first(&e, "cn").unwrap())
                    .or_default()
                    .push((n, members.into_iter().collect()));
            }
        }
        let _ = ldap.unbind().await;
        st
    }

    fn stop(&self) {
        let dir = self.dir.display().to_string();
        let _ = Command::new(repo_root().join("hack/lib/slapd.sh"))
            .args(["stop", "--dir", &dir])
            .output();
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the directory holds: every entry per username / group name (more than one = a
/// duplicate), with its numbers.
#[derive(Default, Debug)]
pub struct DirState {
    pub accounts: BTreeMap<String, Vec<u32>>,
    pub groups: BTreeMap<String, Vec<(u32, BTreeSet<String>)>>,
}

impl DirState {
    /// username → uidNumber (the first entry's).
    pub fn uids(&self) -> BTreeMap<String, u32> {
        self.accounts
            .iter()
            .map(|(u, n)| (u.clone(), n[0]))
            .collect()
    }

    /// Converged to `site`: every declared account and group exactly once, no uid or gid
    /// given twice, every project holding exactly its declared members.
    pub fn assert_converged(&self, site: &Site) {
        let want: BTreeSet<&String> = site.users.iter().collect();
        let have: BTreeSet<&String> = self.accounts.keys().collect();
        assert_eq!(have, want, "accounts in the directory");
        for (u, n) in &self.accounts {
            assert_eq!(
                n.len(),
                1,
                "account {u} is in the directory {} times",
                n.len()
            );
        }
        for (g, n) in &self.groups {
            assert_eq!(
                n.len(),
                1,
                "group {g} is in the directory {} times",
                n.len()
            );
        }
        let uids: BTreeSet<u32> = self.accounts.values().map(|n| n[0]).collect();
        assert_eq!(uids.len(), self.accounts.len(), "a uid was given twice");
        let gids: BTreeSet<u32> = self.groups.values().map(|n| n[0].0).collect();
        assert_eq!(gids.len(), self.groups.len(), "a gid was given twice");
        for u in &site.users {
            assert!(self.groups.contains_key(u), "the personal group of {u}");
        }
        for (p, members) in &site.projects {
            let group = self
                .groups
                .get(p)
                .unwrap_or_else(|| panic!("project group {p} is missing"));
            let want: BTreeSet<String> = members.iter().cloned().collect();
            assert_eq!(group[0].1, want, "members of {p}");
        }
        assert_eq!(
            self.groups.len(),
            site.users.len() + site.projects.len(),
            "personal groups and project groups, nothing else"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A synthetic site

/// N people with an Account each, and projects with members drawn deterministically.
pub struct Site {
    pub ns: String,
    pub users: Vec<String>,
    pub projects: Vec<(String, Vec<String>)>,
}

impl Site {
    pub fn new(ns: &str, users: usize, projects: usize) -> Site {
        let names: Vec<String> = (0..users).map(|i| format!("f{i:03}")).collect();
        let projects = (0..projects)
            .map(|p| {
                let members: BTreeSet<String> = (0..8)
                    .map(|j| names[(p * 7 + j * 13) % users].clone())
                    .collect();
                (format!("fp{p:02}"), members.into_iter().collect())
            })
            .collect();
        Site {
            ns: ns.into(),
            users: names,
            projects,
        }
    }

    pub fn manifests(&self) -> String {
        self.manifests_with("")
    }

    /// The manifests with `project_spec` (indented spec lines) added to every Project.
    pub fn manifests_with(&self, project_spec: &str) -> String {
        let mut s = String::new();
        for u in &self.users {
            s.push_str(&super::person_account(&self.ns, u, ""));
            s.push('\n');
        }
        for (p, members) in &self.projects {
            s.push_str(&format!(
                "---\napiVersion: roster.io/v1alpha1\nkind: Project\nmetadata: {{name: {p}, namespace: {}}}\nspec:\n  members: [{}]\n{project_spec}",
                self.ns,
                members.join(", ")
            ));
        }
        s
    }

    /// (Slurm account, user) of every declared membership.
    pub fn associations(&self) -> BTreeSet<(String, String)> {
        self.projects
            .iter()
            .flat_map(|(p, m)| m.iter().map(move |u| (p.clone(), u.clone())))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Slurm accounting

/// A private MariaDB + munged + slurmdbd (hack/lib/slurm.sh) with one cluster.
pub struct Slurm {
    pub dir: PathBuf,
    pub cluster: String,
    mysql_port: u16,
    dbd_port: u16,
}

impl Slurm {
    pub fn start(dir: &Path, cluster: &str) -> Slurm {
        on_free_ports("slurm.sh", dir, || {
            let s = Slurm {
                dir: dir.to_path_buf(),
                cluster: cluster.into(),
                mysql_port: free_port(),
                dbd_port: free_port(),
            };
            s.restart();
            s
        })
    }

    /// Starts whatever of the stack is not running.
    pub fn restart(&self) {
        let dir = self.dir.display().to_string();
        let (m, d) = (self.mysql_port.to_string(), self.dbd_port.to_string());
        script(
            "slurm.sh",
            &[
                "start",
                "--dir",
                &dir,
                "--mysql-port",
                &m,
                "--slurmdbd-port",
                &d,
                "--cluster",
                &self.cluster,
            ],
        );
    }

    pub fn kill_slurmdbd(&self) {
        kill_pid(pid_file(&self.dir.join("slurmdbd.pid")));
    }

    pub fn slurm_conf(&self) -> PathBuf {
        self.dir.join("slurm.conf")
    }

    pub fn ro_url(&self) -> String {
        std::fs::read_to_string(self.dir.join("ro.url"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// The `slurm:` part of a config; the database URL is read from `url_file` at every run.
    pub fn config(&self, url_file: &Path) -> String {
        format!(
            "slurm:\n  clusters: [{}]\n  slurmConf: {}\n  databaseUrlFile: {}\n  timeoutSeconds: 20\n",
            self.cluster,
            self.slurm_conf().display(),
            url_file.display()
        )
    }

    /// (account, user) of every user association on the cluster.
    pub fn associations(&self) -> BTreeSet<(String, String)> {
        let out = Command::new("sacctmgr")
            .args([
                "-nP",
                "show",
                "assoc",
                &format!("cluster={}", self.cluster),
                "format=Account,User",
            ])
            .env("SLURM_CONF", self.slurm_conf())
            .output()
            .expect("sacctmgr runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('|'))
            .filter(|(a, u)| !u.is_empty() && *a != "root")
            .map(|(a, u)| (a.to_string(), u.to_string()))
            .collect()
    }

    /// The newest slurmdbd transaction: every write through sacctmgr moves it.
    pub async fn max_txn(&self) -> u64 {
        use mysql_async::prelude::*;
        let opts = mysql_async::Opts::from_url(&self.ro_url()).unwrap();
        let mut conn = mysql_async::Conn::new(opts).await.unwrap();
        let n: Option<Option<u64>> = conn
            .query_first("SELECT MAX(id) FROM txn_table")
            .await
            .unwrap();
        conn.disconnect().await.unwrap();
        n.flatten().unwrap_or(0)
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        let dir = self.dir.display().to_string();
        let _ = Command::new(repo_root().join("hack/lib/slurm.sh"))
            .args(["stop", "--dir", &dir])
            .output();
    }
}

/// The read-only URL with its port replaced by one nobody listens on.
pub fn closed_port_url(url: &str) -> String {
    let closed = free_port();
    let (head, tail) = url.rsplit_once('@').unwrap();
    let (_, path) = tail.split_once('/').unwrap();
    format!("{head}@127.0.0.1:{closed}/{path}")
}

// ---------------------------------------------------------------------------------------------
// Kubernetes: a real control plane and the operator

/// A real control plane of the test's own (`super::k8s`); the operator talks to it through the
/// fault-injecting proxy in front of it (hack/k8s/proxy.go), kubectl straight.
pub struct Cluster {
    pub dir: PathBuf,
    pub real: super::k8s::Cluster,
}

impl Cluster {
    /// Starts one with extra kube-apiserver flags.
    pub fn start(dir: &Path, apiserver_args: &[&str]) -> Cluster {
        Cluster {
            dir: dir.to_path_buf(),
            real: super::k8s::Cluster::start_with(dir, apiserver_args),
        }
    }

    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.real.kubectl(args, stdin)
    }

    /// `kubectl apply -f -` of `yaml` (with the namespace), which must succeed.
    pub fn apply(&self, ns: &str, yaml: &str) {
        let doc = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\n{yaml}");
        let out = self.kubectl(&["apply", "-f", "-"], Some(&doc));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Every object of `plural` in `ns`, as JSON.
    pub fn objects(&self, plural: &str, ns: &str) -> Vec<serde_json::Value> {
        let out = self.kubectl(&["get", plural, "-n", ns, "-o", "json"], None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// One of the proxy's fault controls (`/_fault/...`).
    pub fn fault(&self, method: &str, path: &str) -> serde_json::Value {
        self.real.fault(method, path)
    }

    /// Runs the operator (the chart's ServiceAccount, through the proxy) with `config`; its log
    /// goes to `<dir>/<name>.log`.
    pub fn operator(&self, config: &Path, name: &str) -> (super::Proc, u16) {
        let log = self.dir.join(format!("{name}.log"));
        super::operator_process(
            config,
            &self.real.proxied_kubeconfig,
            &log,
            name,
            false,
            &[],
        )
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }
}

/// The operator section for tests: a short resync (no leader election: `operator()`).
pub const OPERATOR: &str = "operator:\n  resyncInterval: 2s\n  leaseNamespace: roster\n";

/// A condition of an object (`type`) as (status, reason, message).
pub fn condition(obj: &serde_json::Value, type_: &str) -> Option<(String, String, String)> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
            (s("status"), s("reason"), s("message"))
        })
}

/// Objects whose condition `type_` has status `status` (and, if given, reason `reason`).
pub fn count(objs: &[serde_json::Value], type_: &str, status: &str, reason: Option<&str>) -> usize {
    objs.iter()
        .filter(|o| {
            condition(o, type_)
                .is_some_and(|(s, r, _)| s == status && reason.is_none_or(|x| x == r))
        })
        .count()
}

#[allow(unused_imports)]
pub use super::http;

/// The sum of a Prometheus metric's series whose labels contain `labels`.
pub fn metric(port: u16, name: &str, labels: &str) -> f64 {
    super::metric_where(port, name, labels)
}

/// Writes `text` to `dir/name` and returns the path.
pub fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy that drops connections

/// Forwards loopback connections to `upstream`; while `drop` is set, it accepts each connection
/// and closes it at once, before anything reaches the server.
pub struct FlakyProxy {
    pub port: u16,
    pub drop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FlakyProxy {
    pub async fn start(upstream: std::net::SocketAddr) -> FlakyProxy {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let drop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (d, n) = (drop.clone(), dropped.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if d.load(SeqCst) {
                    n.fetch_add(1, SeqCst);
                    drop_now(client);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        FlakyProxy {
            port,
            drop,
            dropped,
            task,
        }
    }

    pub fn set_dropping(&self, on: bool) {
        self.drop.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Closes an accepted connection before reading anything from it.
fn drop_now(client: tokio::net::TcpStream) {
    if let Ok(std) = client.into_std() {
        let _ = std.shutdown(std::net::Shutdown::Both);
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
