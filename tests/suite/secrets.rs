//! Secrets are never printed: the LDAP bind password, Gold's key and the accounting database's
//! password appear in no line Roster writes (stdout, stderr, trace-level logs, objects and
//! Events the operator writes), in file mode with the example site, in operator mode, and in
//! the error messages of wrong and unreachable backends. And the observation database user
//! cannot write.

use crate::support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use roster_gold_server::{GoldServer, Options};
use support::*;

/// A secret of the test's own: 16 random bytes as hex, with a prefix naming it.
fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

/// The password in a `mysql://user:password@host…` DSN.
fn password_of(dsn: &str) -> String {
    let rest = dsn.split_once("://").unwrap().1;
    let userinfo = rest.rsplit_once('@').unwrap().0;
    userinfo.split_once(':').unwrap().1.to_string()
}

/// Every form a secret could take in a log line: as is, base64 (standard, URL-safe, without
/// padding), hex (both cases) and percent-encoded.
fn forms(secret: &str) -> Vec<(&'static str, String)> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    let percent: String = secret
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    vec![
        ("raw", secret.to_string()),
        ("base64", STANDARD.encode(secret)),
        ("base64 without padding", STANDARD_NO_PAD.encode(secret)),
        ("base64url", URL_SAFE_NO_PAD.encode(secret)),
        ("hex", hex.clone()),
        ("HEX", hex.to_uppercase()),
        ("percent-encoded", percent),
    ]
}

/// Fails naming the secret, its form and the line (with the secret masked) if any line of
/// `text` holds a secret in any form.
fn assert_no_secret(what: &str, text: &str, secrets: &[(&str, &str)]) {
    for (name, secret) in secrets {
        assert!(secret.len() >= 16, "{name}: too short to grep for");
        for (form, value) in forms(secret) {
            for (n, line) in text.lines().enumerate() {
                assert!(
                    !line.contains(&value),
                    "{what}: line {} holds the {name} ({form}): {}",
                    n + 1,
                    line.replace(&value, "<SECRET>")
                );
            }
        }
    }
}

/// Runs roster with the most verbose logging (`ROSTER_LOG=trace`), off the test's runtime
/// (the Gold server runs on it); (exit code, stdout + stderr).
async fn roster_traced(args: &[&str]) -> (i32, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_roster"))
            .args(&args)
            .env_remove("ROSTER_CONFIG")
            .env("ROSTER_LOG", "trace")
            .output()
            .expect("roster runs");
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    })
    .await
    .unwrap()
}

async fn gold_server(key: &str) -> GoldServer {
    GoldServer::start(
        "127.0.0.1:0",
        Options {
            secret: key.into(),
            actors: vec!["root".into()],
            chunk_rows: 50,
            readers: vec![],
        },
    )
    .await
    .expect("the Gold test server starts")
}

/// A cluster of the test's own, registered with the dev slurmdbd.
fn slurm_cluster(name: &str) -> String {
    let cluster = format!("{name}{}", std::process::id());
    let out = Command::new("sacctmgr")
        .args(["-i", "add", "cluster", &cluster])
        .env("SLURM_CONF", &dev_env()["SLURM_CONF"])
        .output()
        .expect("sacctmgr runs");
    assert!(
        out.status.success() || String::from_utf8_lossy(&out.stdout).contains("Nothing new"),
        "{out:?}"
    );
    cluster
}

/// Config blocks, appended to the test tree's config.
fn gold_block(dir: &Path, port: u16, key: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join("gold.key");
    std::fs::write(&file, format!("{key}\n")).unwrap();
    format!(
        "gold:\n  host: 127.0.0.1\n  port: {port}\n  authKeyFile: {}\n  timeoutSeconds: 5\n  attempts: 1\n",
        file.display()
    )
}

fn slurm_block(dir: &Path, cluster: &str, url: &str) -> String {
    let file = dir.join("db.url");
    std::fs::write(&file, url).unwrap();
    format!(
        "slurm:\n  clusters: [{cluster}]\n  slurmConf: {}\n  databaseUrlFile: {}\n",
        dev_env()["SLURM_CONF"],
        file.display()
    )
}

/// The tree's config in `dir/name/roster.yaml`, with `ldap_uri`/`password_file` replaced when
/// given and `blocks` appended.
fn config(
    tree: &TestTree,
    dir: &Path,
    name: &str,
    ldap: Option<(&str, &Path)>,
    blocks: &[String],
) -> String {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    let mut extra = match ldap {
        Some((uri, pw)) => format!(
            "ldap:\n  uri: {uri}\n  bindPasswordFile: {}\n",
            pw.display()
        ),
        None => String::new(),
    };
    for b in blocks {
        extra.push_str(b);
    }
    tree.write_config_with(&sub, &extra).display().to_string()
}

fn example_site() -> String {
    repo_root().join("examples/site").display().to_string()
}

fn bind_password() -> String {
    dev_env()["LDAP_BIND_PASSWORD"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_mode_at_trace_level_prints_no_bind_password_gold_key_or_database_password() {
    let tree = TestTree::new("secrets-file").await;
    let dir = scratch("secrets-file");
    let key = random_secret("gold-key-");
    let gold = gold_server(&key).await;
    let ro_url = dev_env()["SLURMDB_RO_URL"].clone();
    let secrets = [
        ("LDAP bind password", bind_password()),
        ("Gold key", key.clone()),
        ("database password", password_of(&ro_url)),
    ];
    let secrets: Vec<(&str, &str)> = secrets.iter().map(|(n, s)| (*n, s.as_str())).collect();
    let site = example_site();

    // The example site into the directory and Gold.
    let cfg = config(
        &tree,
        &dir,
        "apply",
        None,
        &[gold_block(&dir, gold.addr().port(), &key)],
    );
    let (code, apply) = roster_traced(&["apply", "-f", &site, "--config", &cfg]).await;
    assert_eq!(code, 0, "{apply}");
    assert!(
        gold.rows("User").iter().any(|u| u["Name"] == "ada"),
        "Gold was written with the key"
    );
    // Planned again with Slurm too (a cluster of the test's own; observed through the
    // database URL): plan writes nothing, so the example's global Slurm account names stay
    // out of the shared slurmdbd.
    let cluster = slurm_cluster("tsec");
    let cfg = config(
        &tree,
        &dir,
        "plan",
        None,
        &[
            gold_block(&dir, gold.addr().port(), &key),
            slurm_block(&dir, &cluster, &ro_url),
        ],
    );
    let (code, plan) = roster_traced(&["plan", "-f", &site, "--config", &cfg]).await;
    assert_eq!(code, 2, "Slurm accounts to add: {plan}");
    let (code, json) = roster_traced(&["plan", "-f", &site, "--config", &cfg, "-o", "json"]).await;
    assert_eq!(code, 2, "{json}");
    // What ran: the directory, Gold with its key, and Slurm observed through the database.
    assert!(apply.contains("+ gold: Create User Name=ada"), "{apply}");
    assert!(plan.contains("+ slurm: "), "{plan}");
    for (what, text) in [("apply", &apply), ("plan", &plan), ("plan -o json", &json)] {
        assert_no_secret(what, text, &secrets);
    }
    tree.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_and_unreachable_backends_are_reported_without_the_secrets() {
    let tree = TestTree::new("secrets-err").await;
    let dir = scratch("secrets-err");
    let site = example_site();
    let env = dev_env();
    let ldap_uri = env["LDAP_URI"].clone();
    let wrong_pw_file = dir.join("wrong.pw");
    let wrong_pw = random_secret("wrong-bind-");
    std::fs::write(&wrong_pw_file, &wrong_pw).unwrap();
    let closed = free_port();

    // LDAP: a wrong bind password, and nobody listening.
    let mut cases: Vec<(&str, String, String, String)> = vec![
        (
            "wrong bind password",
            config(
                &tree,
                &dir,
                "ldap-wrong",
                Some((&ldap_uri, &wrong_pw_file)),
                &[],
            ),
            format!(
                "the directory refused the bind as cn=admin,{}: invalid credentials",
                env["LDAP_BASE_DN"]
            ),
            wrong_pw.clone(),
        ),
        (
            "LDAP unreachable",
            config(
                &tree,
                &dir,
                "ldap-gone",
                Some((&format!("ldap://127.0.0.1:{closed}"), &wrong_pw_file)),
                &[],
            ),
            format!("cannot reach the directory at ldap://127.0.0.1:{closed}: "),
            wrong_pw.clone(),
        ),
    ];
    // Gold: a key the server does not share, and nobody listening.
    let server_key = random_secret("gold-server-");
    let gold = gold_server(&server_key).await;
    let wrong_key = random_secret("gold-wrong-");
    cases.push((
        "wrong Gold key",
        config(
            &tree,
            &dir,
            "gold-wrong",
            None,
            &[gold_block(
                &dir.join("gold-wrong"),
                gold.addr().port(),
                &wrong_key,
            )],
        ),
        "Gold refused the signature (code 424)".to_string(),
        wrong_key.clone(),
    ));
    cases.push((
        "Gold unreachable",
        config(
            &tree,
            &dir,
            "gold-gone",
            None,
            &[gold_block(&dir.join("gold-gone"), closed, &wrong_key)],
        ),
        format!("cannot reach Gold at 127.0.0.1:{closed}: "),
        wrong_key.clone(),
    ));
    // The database: a wrong password, and nobody listening.
    let ro_url = env["SLURMDB_RO_URL"].clone();
    let db_wrong = random_secret("db-wrong-");
    let wrong_url = ro_url.replacen(&password_of(&ro_url), &db_wrong, 1);
    let port = ro_url
        .rsplit_once(':')
        .unwrap()
        .1
        .split('/')
        .next()
        .unwrap();
    let gone_url = ro_url.replacen(&format!(":{port}/"), &format!(":{closed}/"), 1);
    let bad_url = wrong_url.replacen(&format!(":{port}/"), ":99999999/", 1);
    let cluster = slurm_cluster("tsecerr");
    for (name, url, expect) in [
        (
            "wrong database password",
            &wrong_url,
            "cannot read the Slurm accounting database: server error 1045: Access denied for user 'roster_ro'",
        ),
        (
            "database unreachable",
            &gone_url,
            "cannot read the Slurm accounting database: connection failed",
        ),
        (
            "malformed database URL",
            &bad_url,
            "cannot read the Slurm accounting database: the database URL is invalid",
        ),
    ] {
        let sub = dir.join(name.replace(' ', "-"));
        std::fs::create_dir_all(&sub).unwrap();
        cases.push((
            name,
            config(
                &tree,
                &dir,
                &name.replace(' ', "-"),
                None,
                &[slurm_block(&sub, &cluster, url)],
            ),
            expect.to_string(),
            password_of(url),
        ));
    }

    let before = fingerprint(&tree.dn).await;
    for (name, cfg, expect, secret) in &cases {
        let (code, out) = roster_traced(&["plan", "-f", &site, "--config", cfg]).await;
        assert_ne!(code, 0, "{name}: {out}");
        assert_ne!(code, 2, "{name}: {out}");
        assert!(
            out.contains(expect.as_str()),
            "{name}: expected {expect:?} in:\n{out}"
        );
        assert_no_secret(
            name,
            &out,
            &[
                ("secret of the case", secret.as_str()),
                ("LDAP bind password", &bind_password()),
                ("database password", &password_of(&ro_url)),
                ("Gold server's key", &server_key),
            ],
        );
    }
    assert_eq!(fingerprint(&tree.dn).await, before, "nothing written");
    tree.cleanup().await;
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn text(out: std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_at_trace_level_logs_and_writes_no_secret() {
    let tree = TestTree::new("secrets-op").await;
    let dir = scratch("secrets-op");
    let key = random_secret("gold-op-key-");
    let gold = gold_server(&key).await;
    let ro_url = dev_env()["SLURMDB_RO_URL"].clone();
    let cluster = slurm_cluster("tsecop");
    let cfg = config(
        &tree,
        &dir,
        "op",
        None,
        &[
            gold_block(&dir, gold.addr().port(), &key),
            slurm_block(&dir, &cluster, &ro_url),
            operator_config(),
        ],
    );

    // A real control plane, a real kubectl; the operator as the chart's ServiceAccount.
    let k8s = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || Cluster::start(&dir))
            .await
            .unwrap()
    };
    let kubeconfig = k8s.operator_kubeconfig.clone();
    let kc = |args: &[&str], stdin: Option<&str>| k8s.kubectl(args, stdin);
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: physics}\n";
    assert!(kc(&["apply", "-f", "-"], Some(ns)).status.success());

    // Names of the test's own: Slurm accounts are global in slurmdbd.
    let p = format!("s{}", std::process::id() % 100000);
    let site = format!(
        "---\napiVersion: roster.io/v1alpha1\nkind: Project\nmetadata: {{name: {p}, namespace: physics}}\nspec:\n  leaders: [{p}u1]\n  members: [{p}u2]\n"
    ) + &person_account("physics", &format!("{p}u1"), "")
        + "\n"
        + &person_account("physics", &format!("{p}u2"), "");
    let out = kc(&["apply", "-f", "-"], Some(&site));
    assert!(out.status.success(), "{}", text(out));

    let log = dir.join("operator.log");
    let (operator, _) = operator_process_env(
        Path::new(&cfg),
        &kubeconfig,
        &log,
        "solo",
        false,
        &[],
        &[("ROSTER_LOG", "trace")],
    );
    // Converged everywhere: Ready objects, the project in Slurm, its members in Gold.
    let gold_users = || gold.rows("User").len();
    tokio::task::spawn_blocking({
        let kubeconfig = kubeconfig.clone();
        let dir = dir.clone();
        move || {
            wait_for("2 Ready accounts and 1 Ready project", || {
                let ready = |kind: &str| {
                    let out = kubectl(&kubeconfig, &dir, &["get", kind, "-A", "-o", "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}"], None);
                    String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .filter(|l| *l == "True")
                        .count()
                };
                ready("accounts") == 2 && ready("projects") == 1
            })
        }
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while gold_users() < 2 {
        assert!(Instant::now() < deadline, "Gold users");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let assocs = Command::new("sacctmgr")
        .args([
            "-nP",
            "show",
            "assoc",
            &format!("cluster={cluster}"),
            "format=Account,User",
        ])
        .env("SLURM_CONF", &dev_env()["SLURM_CONF"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&assocs.stdout).contains(&format!("{p}|{p}u2")),
        "Slurm converged: {}",
        text(assocs)
    );
    drop(operator);

    let secrets = [
        ("LDAP bind password", bind_password()),
        ("Gold key", key.clone()),
        ("database password", password_of(&ro_url)),
    ];
    let secrets: Vec<(&str, &str)> = secrets.iter().map(|(n, s)| (*n, s.as_str())).collect();
    let logged = std::fs::read_to_string(&log).unwrap()
        + &std::fs::read_to_string(dir.join("operator.out")).unwrap();
    assert!(
        logged.contains("TRACE") || logged.contains("DEBUG"),
        "verbose: {logged}"
    );
    assert_no_secret("operator log", &logged, &secrets);
    // Nor in anything it wrote into the cluster: statuses, Events, ConfigMaps, Leases.
    let written = text(kc(
        &[
            "get",
            "people,accounts,projects,events,configmaps,leases",
            "-A",
            "-o",
            "yaml",
        ],
        None,
    ));
    assert!(written.contains(&format!("name: {p}u1")), "{written}");
    assert_no_secret("objects in the API server", &written, &secrets);
    tree.cleanup().await;
}

#[tokio::test]
async fn the_observation_database_user_cannot_write() {
    use mysql_async::prelude::*;
    let env = dev_env();
    let ro = mysql_async::Opts::from_url(&env["SLURMDB_RO_URL"]).unwrap();
    let mut conn = mysql_async::Conn::new(ro)
        .await
        .expect("the read-only user logs in");
    // It reads what observation needs.
    let root: Option<String> = conn
        .query_first("SELECT name FROM acct_table WHERE name = 'root'")
        .await
        .unwrap();
    assert_eq!(root.as_deref(), Some("root"));

    let name = format!("rosterro{}", std::process::id());
    for statement in [
        format!(
            "INSERT INTO acct_table (creation_time, mod_time, deleted, name, description, organization) VALUES (0, 0, 0, '{name}', 'x', 'x')"
        ),
        "UPDATE acct_table SET description = 'changed' WHERE name = 'root'".to_string(),
        "DELETE FROM acct_table WHERE name = 'root'".to_string(),
        format!("CREATE TABLE {name} (id INT)"),
    ] {
        let e = conn.query_drop(&statement).await.unwrap_err();
        match &e {
            mysql_async::Error::Server(s) => {
                // ER_TABLEACCESS_DENIED_ERROR: "… command denied to user 'roster_ro'…".
                assert_eq!(s.code, 1142, "{statement}: {e}");
                assert!(s.message.contains("denied to user 'roster_ro'"), "{e}");
            }
            other => panic!("{statement}: not a permission error: {other}"),
        }
    }
    // Checked as slurmdbd's own user: nothing changed.
    let admin = mysql_async::Opts::from_url(&env["SLURMDB_ADMIN_URL"]).unwrap();
    let mut admin = mysql_async::Conn::new(admin).await.unwrap();
    let n: Option<u64> = admin
        .exec_first("SELECT COUNT(*) FROM acct_table WHERE name = ?", (&name,))
        .await
        .unwrap();
    assert_eq!(n, Some(0));
    let description: Option<String> = admin
        .query_first("SELECT description FROM acct_table WHERE name = 'root'")
        .await
        .unwrap();
    assert_ne!(description.as_deref(), Some("changed"));
}

#[test]
fn the_checker_finds_a_secret_in_each_form_and_the_gold_client_does_not_print_its_key() {
    let secret = random_secret("checker-");
    for (form, value) in forms(&secret) {
        let text = format!("first line\nsomething {value} else\n");
        let caught = std::panic::catch_unwind(|| {
            assert_no_secret("self-test", &text, &[("secret", secret.as_str())])
        });
        assert!(caught.is_err(), "{form} not found");
    }
    assert_no_secret("self-test", "nothing here", &[("secret", &secret)]);

    let client = roster::gold::proto::Client::new(
        "127.0.0.1:7112".into(),
        "root".into(),
        secret.clone(),
        Duration::from_secs(1),
    );
    let printed = format!("{client:?} {client:#?}");
    assert!(printed.contains("127.0.0.1:7112"), "{printed}");
    assert_no_secret(
        "Debug of the Gold client",
        &printed,
        &[("Gold key", &secret)],
    );
}
