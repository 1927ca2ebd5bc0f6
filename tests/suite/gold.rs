//! Gold through `roster plan|apply` against the in-repo Gold protocol test server (one per test,
//! in process) and the real dev slapd.

use crate::support;

use std::path::Path;

use roster_gold_server::{GoldServer, Options};
use support::*;

const SECRET: &str = "test-gold-shared-secret";

async fn server() -> GoldServer {
    GoldServer::start(
        "127.0.0.1:0",
        Options {
            secret: SECRET.into(),
            actors: vec!["root".into()],
            chunk_rows: 3,
            readers: vec![],
        },
    )
    .await
    .expect("the Gold test server starts")
}

/// A config for the test's subtree and a Gold server at `port`, signing with `secret`.
fn config(tree: &TestTree, dir: &Path, port: u16, secret: &str) -> String {
    let path = tree.write_config_with(dir, &gold_block(dir, port, secret));
    path.display().to_string()
}

/// The `gold:` block for a server at `port` signing with `secret` (its key file written).
fn gold_block(dir: &Path, port: u16, secret: &str) -> String {
    let key = dir.join("gold.key");
    std::fs::write(&key, format!("{secret}\n")).unwrap();
    format!(
        "gold:\n  host: 127.0.0.1\n  port: {port}\n  authKeyFile: {}\n  timeoutSeconds: 5\n  attempts: 2\n",
        key.display()
    )
}

fn example_site() -> String {
    repo_root().join("examples/site").display().to_string()
}

/// Runs roster off the test's runtime thread (the server runs on the runtime).
async fn run(args: &[&str]) -> (i32, String) {
    roster_off_runtime(args.iter().map(|s| s.to_string()).collect()).await
}

fn row<'a>(
    rows: &'a [std::collections::BTreeMap<String, String>],
    key: &str,
    value: &str,
) -> Option<&'a std::collections::BTreeMap<String, String>> {
    rows.iter()
        .find(|r| r.get(key).map(String::as_str) == Some(value))
}

fn member(s: &GoldServer, project: &str, user: &str) -> Option<(String, String)> {
    s.rows("ProjectUser")
        .into_iter()
        .find(|r| r["Project"] == project && r["Name"] == user)
        .map(|r| (r["Active"].clone(), r["Admin"].clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_site_converges_into_gold_and_a_second_run_only_queries() {
    let tree = TestTree::new("gold-site").await;
    let dir = scratch("gold-site");
    let gold = server().await;
    let cfg = config(&tree, &dir, gold.addr().port(), SECRET);
    let site = example_site();
    let (code, out) = run(&["apply", "-f", &site, "--config", &cfg]).await;
    assert_eq!(code, 0, "{out}");
    let users = gold.rows("User");
    assert_eq!(
        users.len(),
        32,
        "ten accounts, two guests, twenty imported: {users:?}"
    );
    let ada = row(&users, "Name", "ada").expect("ada");
    assert_eq!(ada["Active"], "True");
    assert_eq!(ada["Organization"], "Institute of Physics");
    assert!(!ada["CommonName"].is_empty());
    let projects = gold.rows("Project");
    assert!(
        row(&projects, "Name", "cosmo_sim").is_some(),
        "{projects:?}"
    );
    assert_eq!(
        member(&gold, "optics", "ada"),
        Some(("True".into(), "True".into()))
    );
    assert_eq!(
        member(&gold, "optics", "lwei").map(|m| m.1),
        Some("False".into())
    );
    // The allocation window deposited once on the project's account.
    let accounts = gold.rows("Account");
    let cosmo = row(&accounts, "Name", "cosmo_sim").expect("cosmo_sim account")["Id"].clone();
    let allocs: Vec<_> = gold
        .rows("Allocation")
        .into_iter()
        .filter(|a| a["Account"] == cosmo)
        .collect();
    // (Gold's own 0-credit allocation of the new account, allocation.autogen, and ours.)
    assert_eq!(allocs.len(), 2, "{allocs:?}");
    assert_eq!(allocs[0]["Deposited"], "0");
    let allocs = &allocs[1..];
    assert_eq!(
        allocs[0]["Deposited"].parse::<f64>().unwrap() as i64,
        3_600_000
    );
    // A second run: queries only.
    let before = gold.log().len();
    let (code, out) = run(&["apply", "-f", &site, "--config", &cfg]).await;
    assert_eq!(code, 0, "{out}");
    let again: Vec<_> = gold.log().into_iter().skip(before).collect();
    assert!(!again.is_empty());
    assert!(
        again.iter().all(|e| e.action == "Query"),
        "{:?}",
        again.iter().map(|e| &e.action).collect::<Vec<_>>()
    );
    assert!(again.iter().all(|e| e.code.starts_with('0')));
    let (code, out) = run(&["plan", "-f", &site, "--config", &cfg]).await;
    assert_eq!(code, 0, "{out}");
    tree.cleanup().await;
}

/// One project with two members, the first a leader.
fn small(p: &str, members: &str, extra_project: &str, extra_accounts: &[(&str, &str)]) -> String {
    let mut s = format!(
        "---\napiVersion: roster.io/v1alpha1\nkind: Project\nmetadata: {{name: {p}, namespace: physics}}\nspec:\n  description: \"R&D <lab> | \\\"quoted\\\" caf\u{e9}\"\n  institute: \"Inst | of <Physics> & M\u{fc}ller\\\\x\"\n  leaders: [{p}a]\n  members: [{members}]\n{extra_project}"
    );
    for u in ["a", "b", "c"] {
        let spec = extra_accounts
            .iter()
            .find(|(n, _)| *n == u)
            .map(|(_, s)| *s)
            .unwrap_or("");
        s.push_str(&person_account("physics", &format!("{p}{u}"), spec));
        s.push('\n');
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memberships_leaders_windows_deactivation_and_purge_follow_the_manifests() {
    let tree = TestTree::new("gold-life").await;
    let dir = scratch("gold-life");
    let gold = server().await;
    let cfg = config(&tree, &dir, gold.addr().port(), SECRET);
    let p = "gl";
    let f = dir.join("site.yaml").display().to_string();
    let write = |text: String| std::fs::write(&f, text).unwrap();
    let window = "  gold:\n    allocations:\n      - {amount: 1000, start: \"2030-01-01\", end: \"2030-12-31\"}\n";
    write(small(p, &format!("{p}b"), window, &[]));
    let apply = |now: &'static str, prune: bool| {
        let f = f.clone();
        let cfg = cfg.clone();
        async move {
            let mut args = vec!["apply", "-f", &f, "--config", &cfg, "--now", now];
            if prune {
                args.push("--prune");
            }
            run(&args).await
        }
    };
    let (code, out) = apply("2030-01-02T00:00:00Z", false).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        member(&gold, p, "gla"),
        Some(("True".into(), "True".into()))
    );
    assert_eq!(
        member(&gold, p, "glb"),
        Some(("True".into(), "False".into()))
    );
    assert_eq!(member(&gold, p, "glc"), None);
    // Hostile free text arrives cleaned (ASCII, no |, no control characters), XML intact.
    let proj = gold.rows("Project");
    let desc = &row(&proj, "Name", p).unwrap()["Description"];
    assert_eq!(desc, "R&D <lab> \"quoted\" cafe");
    let orgs = gold.rows("Organization");
    assert!(
        row(&orgs, "Name", "Inst of <Physics> & Mueller x").is_some(),
        "{orgs:?}"
    );
    // c joins, b leaves, the leader changes; the window grows and a second one appears.
    let windows = "  gold:\n    allocations:\n      - {amount: 1500, start: \"2030-01-01\", end: \"2030-12-31\"}\n      - {amount: 10, start: \"2031-01-01\", end: \"2031-06-30\"}\n";
    write(
        small(p, &format!("{p}c, {p}a"), windows, &[])
            .replace(&format!("leaders: [{p}a]"), &format!("leaders: [{p}c]")),
    );
    let (code, out) = apply("2030-01-03T00:00:00Z", false).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(member(&gold, p, "glb"), None);
    assert_eq!(
        member(&gold, p, "glc"),
        Some(("True".into(), "True".into()))
    );
    assert_eq!(
        member(&gold, p, "gla"),
        Some(("True".into(), "False".into()))
    );
    let account = row(&gold.rows("Account"), "Name", p).unwrap()["Id"].clone();
    let mut allocs: Vec<(i64, i64)> = gold
        .rows("Allocation")
        .into_iter()
        .filter(|a| a["Account"] == account && a["Deposited"] != "0")
        .map(|a| {
            (
                a["StartTime"].parse().unwrap(),
                a["Deposited"].parse::<f64>().unwrap() as i64,
            )
        })
        .collect();
    allocs.sort();
    assert_eq!(
        allocs.len(),
        2,
        "besides Gold's own 0-credit one: {allocs:?}"
    );
    assert_eq!(allocs[0].1, 1500);
    assert_eq!(allocs[1].1, 10);
    // A lock suspends the user and its memberships; unlocking restores them.
    let current = small(p, &format!("{p}c, {p}a"), windows, &[])
        .replace(&format!("leaders: [{p}a]"), &format!("leaders: [{p}c]"));
    write(
        small(
            p,
            &format!("{p}c, {p}a"),
            windows,
            &[("a", "  locked: true\n")],
        )
        .replace(&format!("leaders: [{p}a]"), &format!("leaders: [{p}c]")),
    );
    let (code, out) = apply("2030-01-04T00:00:00Z", false).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        row(&gold.rows("User"), "Name", "gla").unwrap()["Active"],
        "False"
    );
    assert_eq!(member(&gold, p, "gla").unwrap().0, "False");
    write(current.clone());
    let (code, out) = apply("2030-01-05T00:00:00Z", false).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        row(&gold.rows("User"), "Name", "gla").unwrap()["Active"],
        "True"
    );
    assert_eq!(member(&gold, p, "gla").unwrap().0, "True");
    // b is removed (--prune): deactivated in Gold; at its purge, deleted.
    let without_b = current.replace(&person_account("physics", "glb", ""), "");
    write(without_b);
    let (code, out) = apply("2030-01-06T00:00:00Z", true).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        row(&gold.rows("User"), "Name", "glb").unwrap()["Active"],
        "False"
    );
    let (code, out) = apply("2030-04-07T00:00:00Z", false).await;
    assert_eq!(code, 0, "{out}");
    assert!(row(&gold.rows("User"), "Name", "glb").is_none(), "purged");
    // Everything the actor did over the whole lifecycle (docs/security.md): signed requests as
    // the configured actor, these actions on these objects only (never Withdraw, Charge,
    // Refund, Transfer, Undelete, roles or machines).
    let allowed = [
        (
            "Query",
            "Organization User Project ProjectUser Account AccountProject Allocation",
        ),
        ("Create", "Organization Project User ProjectUser"),
        ("Modify", "Project User ProjectUser Allocation"),
        ("Delete", "ProjectUser User Project"),
        ("Deposit", "Account"),
    ];
    for e in gold.log() {
        assert!(e.signed && e.actor == "root", "{e:?}");
        assert!(
            allowed.iter().any(|(action, objects)| e.action == *action
                && e.objects.len() == 1
                && objects.split(' ').any(|o| o == e.objects[0])),
            "{e:?}"
        );
    }
    tree.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_deposit_reply_is_checked_and_never_deposited_twice() {
    let tree = TestTree::new("gold-deposit").await;
    let dir = scratch("gold-deposit");
    let gold = server().await;
    let cfg = config(&tree, &dir, gold.addr().port(), SECRET);
    let f = dir.join("site.yaml");
    let window = "  gold:\n    allocations:\n      - {amount: 500, start: \"2030-01-01\", end: \"2030-12-31\"}\n";
    std::fs::write(&f, small("gd", "gdb", window, &[])).unwrap();
    let f = f.display().to_string();
    // The deposit happens, but its reply is lost (as if Roster crashed before recording it).
    gold.drop_next_reply("Deposit");
    let (code, out) = run(&["apply", "-f", &f, "--config", &cfg]).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(&["apply", "-f", &f, "--config", &cfg]).await;
    assert_eq!(code, 0, "{out}");
    let deposits = gold.log().iter().filter(|e| e.action == "Deposit").count();
    assert_eq!(deposits, 1, "one deposit request, never retried blindly");
    let allocs: Vec<_> = gold
        .rows("Allocation")
        .into_iter()
        .filter(|a| a["Deposited"] != "0")
        .collect();
    assert_eq!(allocs.len(), 1, "besides Gold's own 0-credit one");
    assert_eq!(allocs[0]["Deposited"].parse::<f64>().unwrap() as i64, 500);
    tree.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_a_clear_error_and_an_unreachable_gold_leaves_ldap_done() {
    let tree = TestTree::new("gold-errors").await;
    let dir = scratch("gold-errors");
    let gold = server().await;
    let f = dir.join("site.yaml");
    std::fs::write(&f, small("ge", "geb", "", &[])).unwrap();
    let f = f.display().to_string();
    let cfg = config(&tree, &dir, gold.addr().port(), "not-the-secret");
    let (code, out) = run(&["apply", "-f", &f, "--config", &cfg]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("signature"), "{out}");
    assert!(
        !out.contains("not-the-secret"),
        "the key is never printed: {out}"
    );
    assert!(gold.rows("User").is_empty(), "nothing written");
    assert!(gold.log().iter().all(|e| e.code == "424"));
    // Nobody listens on the port: Gold fails, the directory is done anyway.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let cfg = config(&tree, &dir, port, SECRET);
    let (code, out) = run(&["apply", "-f", &f, "--config", &cfg]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot reach Gold"), "{out}");
    let mut ldap = admin().await;
    assert_eq!(entries(&mut ldap, &tree.dn, "(uid=gea)").await.len(), 1);
    // Once Gold is back, the next run catches up.
    let cfg = config(&tree, &dir, gold.addr().port(), SECRET);
    let (code, out) = run(&["apply", "-f", &f, "--config", &cfg]).await;
    assert_eq!(code, 0, "{out}");
    assert!(row(&gold.rows("User"), "Name", "gea").is_some());
    tree.cleanup().await;
}

/// #20: a project's account is the one Gold links to it (`AccountProject`), never whatever
/// carries its name. A site's own account named like the project plans no second deposit; a
/// purged project declared again deposits once into its new account and reports the credits
/// left in the old one; a quote in a description reaches Gold as nothing Gold could evaluate,
/// and a second run writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projects_account_is_found_through_account_project_and_credits_are_never_issued_twice() {
    let tree = TestTree::new("gold-acct").await;
    let dir = scratch("gold-acct");
    let gold = server().await;
    let cfg = config(&tree, &dir, gold.addr().port(), SECRET);
    let window = "  gold:\n    allocations:\n      - {amount: 1500, start: \"2030-01-01\", end: \"2030-12-31\"}\n";
    let f = dir.join("site.yaml");
    let site = small("ga", "gab", window, &[]).replace(
        "description: \"R&D <lab> | \\\"quoted\\\" caf\u{e9}\"",
        "description: \"x' < 'y, O'Brien's\"",
    );
    std::fs::write(&f, &site).unwrap();
    let f = f.display().to_string();
    let (code, out) = run(&["apply", "-f", &f, "--config", &cfg]).await;
    assert_eq!(code, 0, "{out}");
    let projects = gold.rows("Project");
    let desc = &row(&projects, "Name", "ga").unwrap()["Description"];
    assert_eq!(desc, "x < y, OBriens", "stored as sent, never evaluated");
    let deposited = |g: &roster_gold_server::GoldServer| -> i64 {
        g.rows("Allocation")
            .iter()
            .map(|a| a["Deposited"].parse::<f64>().unwrap() as i64)
            .sum()
    };
    assert_eq!(deposited(&gold), 1500);
    // A site's own account named after the project: not the project's.
    let key = dir.join("gold.key");
    let client = roster::gold::proto::Client::new(
        gold.addr().to_string(),
        "root".into(),
        std::fs::read_to_string(&key).unwrap().trim().to_string(),
        std::time::Duration::from_secs(5),
    );
    client
        .send(&roster::gold::proto::Request::new("Create", "Account").set("Name", "ga"))
        .await
        .expect("an extra account");
    let (code, out) = run(&["plan", "-f", &f, "--config", &cfg]).await;
    assert_eq!(code, 0, "nothing to do: {out}");
    let before = gold.log().len();
    let (code, out) = run(&["apply", "-f", &f, "--config", &cfg]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        gold.log()[before..].iter().all(|e| e.action == "Query"),
        "a second run writes nothing: {out}"
    );
    // Purged, then declared again: one more deposit, into the new account only, and the old
    // account's credits reported.
    std::fs::write(dir.join("empty.yaml"), small("gz", "gzb", "", &[])).unwrap();
    let empty = dir.join("empty.yaml").display().to_string();
    for now in [
        "2026-01-01T00:00:00Z",
        "2026-06-01T00:00:00Z",
        "2026-06-02T00:00:00Z",
    ] {
        let (code, out) = run(&[
            "apply", "-f", &empty, "--config", &cfg, "--prune", "--now", now, "-n", "physics",
        ])
        .await;
        assert!(code == 0 || code == 3, "{now}: {out}");
    }
    assert!(row(&gold.rows("Project"), "Name", "ga").is_none(), "purged");
    let (code, out) = run(&[
        "apply",
        "-f",
        &f,
        "--config",
        &cfg,
        "--now",
        "2026-06-03T00:00:00Z",
    ])
    .await;
    assert!(code == 0 || code == 3, "{out}");
    assert_eq!(
        deposited(&gold),
        3000,
        "1500 in the old account, 1500 in the new: {out}"
    );
    let (_, out) = run(&[
        "plan",
        "-f",
        &f,
        "--config",
        &cfg,
        "--now",
        "2026-06-03T00:00:00Z",
    ])
    .await;
    assert!(
        out.contains("is named ga but not linked to the project"),
        "the old account's credits are reported: {out}"
    );
    let before = gold.log().len();
    let (_, out) = run(&[
        "apply",
        "-f",
        &f,
        "--config",
        &cfg,
        "--now",
        "2026-06-03T00:00:00Z",
    ])
    .await;
    assert!(
        gold.log()[before..].iter().all(|e| e.action == "Query"),
        "and nothing more is deposited: {out}"
    );
    tree.cleanup().await;
}

/// #20: `roster config check` proves the actor may write (a Modify that matches nothing), so an
/// actor with read rights only is named there, not by a 444 on the first real change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_refuses_an_actor_that_may_only_read() {
    let tree = TestTree::new("gold-check").await;
    let dir = scratch("gold-check");
    let gold = roster_gold_server::GoldServer::start(
        "127.0.0.1:0",
        Options {
            readers: vec!["viewer".into()],
            ..Options::new(SECRET)
        },
    )
    .await
    .unwrap();
    let cfg = config(&tree, &dir, gold.addr().port(), SECRET);
    let (code, out) = run(&["config", "check", "--config", &cfg]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("a signed query and a write as actor root"),
        "{out}"
    );
    let viewer = gold_block(&dir, gold.addr().port(), SECRET) + "  actor: viewer\n";
    let cfg = tree.write_config_with(&dir, &viewer).display().to_string();
    let (code, out) = run(&["config", "check", "--config", &cfg]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("actor viewer may query but not write"),
        "{out}"
    );
    assert!(
        gold.rows("Organization").is_empty(),
        "the probe changed nothing"
    );
    tree.cleanup().await;
}
