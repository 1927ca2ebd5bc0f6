//! Shared by the integration tests: the dev backends `hack/dev-up.sh` started, and a private
//! `ou=` subtree per test so tests never see each other's entries.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use ldap3::{Ldap, LdapConnAsync, Scope, SearchEntry};
use roster::config::Config;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The variables `hack/dev-up.sh` exported into `.dev/env`.
pub fn dev_env() -> HashMap<String, String> {
    let path = repo_root().join(".dev/env");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} is missing: run hack/dev-up.sh (make test does)",
            path.display()
        )
    });
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

/// The config `hack/dev-up.sh` wrote for the dev directory.
pub fn dev_config() -> Config {
    Config::load(&repo_root().join(".dev/roster.yaml")).expect("dev config loads")
}

/// A bound admin connection to the dev directory.
pub async fn admin() -> Ldap {
    let env = dev_env();
    let (conn, mut ldap) = LdapConnAsync::new(&env["LDAP_URI"])
        .await
        .expect("dev slapd reachable");
    ldap3::drive!(conn);
    ldap.simple_bind(&env["LDAP_BIND_DN"], &env["LDAP_BIND_PASSWORD"])
        .await
        .unwrap()
        .success()
        .expect("admin bind");
    ldap
}

/// Starts (idempotently) the second dev slapd that lacks Roster's schema and returns its URI.
pub fn bare_directory() -> String {
    let root = repo_root();
    let port = std::env::var("ROSTER_DEV_BARE_LDAP_PORT").unwrap_or_else(|_| "13390".into());
    let status = std::process::Command::new(root.join("hack/lib/slapd.sh"))
        .args(["start", "--dir"])
        .arg(root.join(".dev/slapd-bare"))
        .args([
            "--port",
            &port,
            "--base",
            "dc=roster,dc=test",
            "--password-file",
        ])
        .arg(root.join(".dev/ldap-admin.pw"))
        .arg("--bare")
        .status()
        .expect("hack/lib/slapd.sh runs");
    assert!(status.success(), "the bare slapd did not start");
    format!("ldap://127.0.0.1:{port}")
}

/// A private subtree `ou=<name>,<base>` with Roster's containers, and a config pointing there.
pub struct TestTree {
    pub dn: String,
    pub config: Config,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl TestTree {
    pub async fn new(name: &str) -> TestTree {
        let base = dev_config();
        let unique = format!(
            "t-{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let dn = format!("ou={unique},{}", base.ldap.base_dn);
        let mut ldap = admin().await;
        remove_stale_trees(&mut ldap, &base.ldap.base_dn).await;
        delete_subtree(&mut ldap, &dn).await;
        add_ou(&mut ldap, &dn, &unique).await;
        for ou in ["people", "groups", "tombstones", "counters"] {
            add_ou(&mut ldap, &format!("ou={ou},{dn}"), ou).await;
        }
        let mut config = base;
        config.ldap.base_dn = dn.clone();
        config.ldap.people_dn = Some(format!("ou=people,{dn}"));
        config.ldap.groups_dn = Some(format!("ou=groups,{dn}"));
        config.ldap.tombstones_dn = Some(format!("ou=tombstones,{dn}"));
        config.ldap.counters_dn = Some(format!("ou=counters,{dn}"));
        TestTree { dn, config }
    }

    /// Removes the subtree; call at the end of a passing test.
    pub async fn cleanup(self) {
        delete_subtree(&mut admin().await, &self.dn).await;
    }

    /// Writes the tree's config to a file (for driving the `roster` binary).
    pub fn write_config(&self, dir: &Path) -> PathBuf {
        self.write_config_with(dir, "")
    }

    /// Writes the tree's config with `extra` (YAML) merged into it, key by key: a mapping in
    /// `extra` adds to or overrides the same mapping of the tree's config, any other value
    /// replaces it (`null` included). The file is the `Config` types serialized, so it has the
    /// schema's every key and never drifts from it; `roster config show` prints the same.
    pub fn write_config_with(&self, dir: &Path, extra: &str) -> PathBuf {
        let mut config = self.config.clone();
        config.ldap.bind_password_file = Some(repo_root().join(".dev/ldap-admin.pw"));
        config.ldap.bind_password_env = None;
        let mut value = serde_json::to_value(&config).expect("a configuration serializes");
        // Only what the tree decides: the rest is the schema's defaults unless `extra` says.
        if let serde_json::Value::Object(map) = &mut value {
            map.retain(|k, _| ["managerId", "ldap", "uidRange", "gidRange"].contains(&k.as_str()));
        }
        if !extra.trim().is_empty() {
            let extra: serde_json::Value = serde_saphyr::from_str(extra)
                .unwrap_or_else(|e| panic!("the test's extra configuration: {e}\n{extra}"));
            merge(&mut value, extra);
        }
        let path = dir.join("roster.yaml");
        std::fs::write(&path, serde_saphyr::to_string(&value).unwrap()).unwrap();
        path
    }
}

/// Merges `extra` into `base`: mappings key by key, anything else replaced.
fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(base), serde_json::Value::Object(extra)) => {
            for (k, v) in extra {
                match base.get_mut(&k) {
                    Some(b) => merge(b, v),
                    None => {
                        base.insert(k, v);
                    }
                }
            }
        }
        (base, extra) => *base = extra,
    }
}

/// Subtrees of test processes that are gone (a failed test keeps its tree for inspection
/// until the next run): `ou=t-<name>-<pid>-<n>` whose pid no longer runs.
async fn remove_stale_trees(ldap: &mut Ldap, base: &str) {
    let Ok(result) = ldap
        .search(base, Scope::OneLevel, "(ou=t-*)", vec!["ou"])
        .await
    else {
        return;
    };
    for e in result.0.into_iter().map(SearchEntry::construct) {
        let Some(ou) = e.attrs.get("ou").and_then(|v| v.first()) else {
            continue;
        };
        let pid = ou.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            delete_subtree(ldap, &e.dn).await;
        }
    }
}

async fn add_ou(ldap: &mut Ldap, dn: &str, ou: &str) {
    ldap.add(
        dn,
        vec![
            ("objectClass", ["organizationalUnit"].into()),
            ("ou", [ou].into()),
        ],
    )
    .await
    .unwrap()
    .success()
    .unwrap_or_else(|e| panic!("add {dn}: {e}"));
}

/// Deletes `dn` and everything below it, deepest first.
pub async fn delete_subtree(ldap: &mut Ldap, dn: &str) {
    let Ok(result) = ldap
        .search(dn, Scope::Subtree, "(objectClass=*)", vec!["1.1"])
        .await
    else {
        return;
    };
    let mut dns: Vec<String> = result
        .0
        .into_iter()
        .map(|e| SearchEntry::construct(e).dn)
        .collect();
    dns.sort_by_key(|d| std::cmp::Reverse(d.matches(',').count()));
    for d in dns {
        let _ = ldap.delete(&d).await;
    }
}

/// A fresh scratch directory under `target/` for files a test writes.
pub fn scratch(name: &str) -> PathBuf {
    let dir = repo_root().join("target/test-scratch").join(format!(
        "{name}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the `roster` binary and returns (exit code, stdout, stderr).
pub fn roster(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(args)
        .env_remove("ROSTER_CONFIG")
        .output()
        .expect("roster runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the `roster` binary off the async runtime's threads (servers the test runs in process
/// keep answering meanwhile): (exit code, stdout and stderr).
pub async fn roster_off_runtime(args: Vec<String>) -> (i32, String) {
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = roster(&a);
        (code, format!("{out}{err}"))
    })
    .await
    .unwrap()
}

/// A Person and its Account as manifest YAML.
pub fn person_account(ns: &str, username: &str, extra_account_spec: &str) -> String {
    format!(
        "---\napiVersion: roster.io/v1alpha1\nkind: Person\nmetadata: {{name: {username}, namespace: {ns}}}\nspec: {{givenName: Test, familyName: {username}}}\n---\napiVersion: roster.io/v1alpha1\nkind: Account\nmetadata: {{name: {username}, namespace: {ns}}}\nspec:\n  person: {username}\n  username: {username}\n{extra_account_spec}"
    )
}

/// Every entry below `base`, with all user and operational attributes.
pub async fn entries(ldap: &mut Ldap, base: &str, filter: &str) -> Vec<SearchEntry> {
    let (rs, _) = ldap
        .search(base, Scope::Subtree, filter, vec!["*", "+"])
        .await
        .unwrap()
        .success()
        .unwrap();
    rs.into_iter().map(SearchEntry::construct).collect()
}

/// A server-side fingerprint of a subtree: its entries' DNs with their `entryCSN` (which slapd
/// changes on every write). Equal fingerprints = zero writes in between.
pub async fn fingerprint(base: &str) -> Vec<(String, String)> {
    let mut ldap = admin().await;
    let mut v: Vec<(String, String)> = entries(&mut ldap, base, "(objectClass=*)")
        .await
        .into_iter()
        .map(|e| {
            let csn = e
                .attrs
                .get("entryCSN")
                .and_then(|v| v.first())
                .cloned()
                .unwrap_or_default();
            (e.dn, csn)
        })
        .collect();
    v.sort();
    v
}

/// The real kubectl that `make tools` installs into `.dev/venv`.
pub fn kubectl_bin() -> PathBuf {
    let bin = repo_root().join(".dev/venv/bin/kubectl");
    assert!(
        bin.exists(),
        "{} is missing: run `make tools` (make test does)",
        bin.display()
    );
    bin
}

/// Runs kubectl against `kubeconfig` (its cache under `home`), feeding `stdin` if given.
pub fn kubectl(
    kubeconfig: &Path,
    home: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> std::process::Output {
    use std::process::{Command, Stdio};
    let mut child = Command::new(kubectl_bin())
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// The SMTP server process; killed when the test ends.
pub struct Smtpd {
    child: std::process::Child,
    pub port: u16,
    pub maildir: PathBuf,
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The venv's Python with aiosmtpd importable, or a failure that says how to get it.
pub fn python() -> PathBuf {
    let python = repo_root().join(".dev/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make tools` (make test does)",
        python.display()
    );
    let ok = std::process::Command::new(&python)
        .args(["-c", "import aiosmtpd"])
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "aiosmtpd is not installed in .dev/venv: run `make tools` (make test does)"
    );
    python
}

/// Starts the test relay (`testing/smtp-relay/relay.py`, aiosmtpd's Mailbox handler, a
/// maildir under `dir`) without TLS or authentication.
pub fn smtpd(dir: &Path) -> Smtpd {
    smtp_relay(dir, &[])
}

/// Starts the test relay with `args` (`--tls starttls --cert C --key K`, `--user U
/// --password-file F`, …). It binds port 0 itself and says its address in one line once it
/// listens: that line, read here, is the readiness signal.
pub fn smtp_relay(dir: &Path, args: &[&std::ffi::OsStr]) -> Smtpd {
    use std::io::BufRead;
    std::fs::create_dir_all(dir).unwrap();
    let maildir = dir.join("maildir");
    let mut child = std::process::Command::new(python())
        .arg(repo_root().join("testing/smtp-relay/relay.py"))
        .arg("--maildir")
        .arg(&maildir)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the test relay starts");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("the relay's address line");
    let port = line
        .trim()
        .strip_prefix("127.0.0.1:")
        .and_then(|p| p.parse().ok());
    let Some(port) = port else {
        let _ = child.kill();
        let status = child.wait();
        panic!("the test relay said {line:?} instead of its address ({status:?})");
    };
    Smtpd {
        child,
        port,
        maildir,
    }
}

/// A CA of the test's own (`DIR/NAME.pem`, `DIR/NAME.key`, through `openssl`); the PEM's path.
pub fn test_ca(dir: &Path, name: &str) -> PathBuf {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(["req", "-x509", "-new", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .args([
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ])
        .args(["-subj", &format!("/CN=Roster test {name}")])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign"])
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "{out:?}");
    dir.join(format!("{name}.pem"))
}

/// A server certificate for `san` (`DNS:host` or `IP:addr`) signed by `ca` (its PEM and key):
/// `DIR/NAME.pem` and `DIR/NAME.key`.
pub fn server_cert(dir: &Path, name: &str, ca: (&Path, &Path), san: &str) -> (PathBuf, PathBuf) {
    let file = |ext: &str| dir.join(format!("{name}.{ext}"));
    let (key, csr, cert, ext) = (file("key"), file("csr"), file("pem"), file("ext"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-subj", &format!("/CN={name}"), "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "{out:?}");
    std::fs::write(
        &ext,
        format!("subjectAltName={san}\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    let out = std::process::Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-set_serial", "4711", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(ca.0)
        .arg("-CAkey")
        .arg(ca.1)
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "{out:?}");
    (cert, key)
}

/// The messages in the maildir's `new/`, as raw bytes.
pub fn received(maildir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(maildir.join("new")) else {
        return Vec::new();
    };
    entries
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect()
}
pub mod faults;
pub mod k8s;
mod world;
#[allow(unused_imports)]
pub use k8s::{Cluster, OPERATOR_USER, RELEASE_NAMESPACE};
pub use world::{World, operator_config};

/// `sacctmgr ARGS` with the dev SLURM_CONF: whether it succeeded, and what it said.
pub fn sacctmgr(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("sacctmgr")
        .args(args)
        .env("SLURM_CONF", &dev_env()["SLURM_CONF"])
        .output()
        .expect("sacctmgr runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The newest slurmdbd transaction about a cluster or names with a prefix (txn_table is shared
/// by the tests running in parallel, so the global maximum would move under our feet).
pub async fn slurm_txn(cluster: &str, prefix: &str) -> u64 {
    use mysql_async::prelude::*;
    let opts = mysql_async::Opts::from_url(&dev_env()["SLURMDB_RO_URL"]).unwrap();
    let mut conn = mysql_async::Conn::new(opts).await.unwrap();
    let like = format!("%{prefix}%");
    let v: Option<Option<u64>> = conn
        .exec_first(
            "SELECT MAX(id) FROM txn_table WHERE cluster = ? OR name LIKE ? OR info LIKE ?",
            (cluster, &like, &like),
        )
        .await
        .unwrap();
    v.flatten().unwrap_or(0)
}

/// A child process killed (and reaped) when the test lets go of it.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `ok` every 100 ms for up to 30 seconds, failing the test with `what` when it times out.
pub fn wait_for(what: &str, ok: impl FnMut() -> bool) {
    wait_within(what, 30, ok);
}

/// Polls `ok` every 100 ms for up to `secs` seconds, failing the test with `what` when it times
/// out; how long it took.
pub fn wait_within(what: &str, secs: u64, mut ok: impl FnMut() -> bool) -> std::time::Duration {
    use std::time::{Duration, Instant};
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

/// Starts `roster run --config CONFIG` against the API server of `kubeconfig`, logging to `log`,
/// with its metrics on a port it binds itself (returned, from the address file it writes once
/// bound; no port is picked here and bound later by someone else).
pub fn operator_process(
    config: &Path,
    kubeconfig: &Path,
    log: &Path,
    identity: &str,
    leader_election: bool,
    extra: &[&str],
) -> (Proc, u16) {
    operator_process_env(
        config,
        kubeconfig,
        log,
        identity,
        leader_election,
        extra,
        &[],
    )
}

/// [`operator_process`] with environment variables of its own (`ROSTER_LOG=trace`, …); its
/// standard output goes to `log` with the extension `out`.
pub fn operator_process_env(
    config: &Path,
    kubeconfig: &Path,
    log: &Path,
    identity: &str,
    leader_election: bool,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Proc, u16) {
    use std::process::Command;
    let address_file = log.with_extension("metrics-address");
    let _ = std::fs::remove_file(&address_file);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_roster"));
    cmd.args(["run", "--config"])
        .arg(config)
        .args([
            "--identity",
            identity,
            "--metrics-address",
            "127.0.0.1:0",
            "--log-format",
            "text",
        ])
        .arg("--metrics-address-file")
        .arg(&address_file)
        .env("KUBECONFIG", kubeconfig)
        .env("ROSTER_LOG", "roster=info")
        .envs(env.iter().copied())
        .stdout(std::fs::File::create(log.with_extension("out")).unwrap())
        .stderr(std::fs::File::create(log).unwrap());
    if !leader_election {
        cmd.arg("--no-leader-election");
    }
    cmd.args(extra);
    let mut proc = Proc(cmd.spawn().unwrap());
    wait_for("the operator's metrics address", || {
        address_file.exists()
            || proc.0.try_wait().unwrap().is_some_and(|status| {
                panic!(
                    "the operator exited ({status}) before serving metrics:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            })
    });
    let address = std::fs::read_to_string(&address_file).unwrap();
    let port = address.trim().rsplit(':').next().unwrap().parse().unwrap();
    (proc, port)
}

pub fn metric(port: u16, name: &str) -> f64 {
    metric_where(port, name, "")
}

/// Waits until the operator serving metrics on `port` has completed `n` passes that began after
/// this call (one more than `n`: the first may already have been running). What the operator
/// decides from the state as it is now, it has then decided — the negative assertions ("still
/// not locked", "nothing more written", "one notice") are checked after that, never after a
/// fixed sleep.
pub fn passes_after(port: u16, n: u32) {
    let target = metric(port, "roster_passes_total") + f64::from(n) + 1.0;
    wait_within(&format!("{n} more operator passes"), 60, || {
        metric(port, "roster_passes_total") >= target
    });
}

/// Waits for a quiet period: until a whole operator pass leaves `read()` as it was (at most 30
/// passes), and returns that value. For "after the writes a change causes have settled".
pub fn quiet<T: PartialEq + std::fmt::Debug>(port: u16, mut read: impl FnMut() -> T) -> T {
    let mut last = read();
    for _ in 0..30 {
        passes_after(port, 1);
        let now = read();
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("no quiet operator pass in 30: still changing, last {last:?}");
}

/// The sum of a metric's series whose label text contains `labels`.
pub fn metric_where(port: u16, name: &str, labels: &str) -> f64 {
    try_metric_where(port, name, labels).expect("the metrics endpoint answers")
}

/// The same, or `None` while nothing listens on `port` (an operator still starting).
pub fn try_metric_where(port: u16, name: &str, labels: &str) -> Option<f64> {
    let text = try_http(&format!("127.0.0.1:{port}"), "GET", "/metrics")?;
    Some(metric_in(&text, name, labels))
}

/// The operator's metrics, one scrape: several values read from it belong together (a pass
/// between two scrapes would count in one and not the other).
pub fn scrape(port: u16) -> String {
    http(&format!("127.0.0.1:{port}"), "GET", "/metrics")
}

/// The sum of the samples of `name` whose labels contain `labels`, in a scrape.
pub fn metric_in(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#') && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until a metric reaches `at_least`. A backend's effect is visible (in slurmdbd, in
/// Gold, in a status) a moment before the operator, back from the call, counts and times it.
pub fn wait_metric(port: u16, name: &str, labels: &str, at_least: f64) {
    wait_for(&format!("{name}{{{labels}}} >= {at_least}"), || {
        metric_where(port, name, labels) >= at_least
    });
}

/// A plain HTTP/1.1 request on loopback (the operator's metrics and probes); the response body.
pub fn http(addr: &str, method: &str, path: &str) -> String {
    try_http(addr, method, path).unwrap_or_else(|| panic!("nothing answers on {addr}"))
}

/// The same, or `None` while nothing answers on `addr`. The one hand-written HTTP client of the
/// tests: a request, `Connection: close`, the body read to the end (chunked or not).
pub fn try_http(addr: &str, method: &str, path: &str) -> Option<String> {
    try_http_status(addr, method, path).map(|(_, body)| body)
}

/// The same with the response's status code.
pub fn try_http_status(addr: &str, method: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, mut body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Some((status, body.to_string()));
    }
    let mut out = String::new();
    while let Some((len, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    Some((status, out))
}

/// A seeded xorshift generator: a random sequence a seed replays exactly.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
