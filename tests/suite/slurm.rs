//! Slurm accounting through `roster apply` against the real slurmdbd (started by hack/dev-up.sh):
//! each test has its own cluster, directory subtree and account names.

use crate::support;

use std::path::{Path, PathBuf};

use support::*;

/// A cluster of this test's own, registered with slurmdbd.
fn cluster(name: &str) -> String {
    let c = format!("t{}{}", name, std::process::id());
    let out = sacctmgr(&["-i", "add", "cluster", &c]);
    assert!(out.0 || out.1.contains("Nothing new added"), "{}", out.1);
    c
}

/// `account|user|maxjobs|maxsubmit` rows of a cluster's associations, sorted.
fn assocs(cluster: &str) -> Vec<String> {
    let (_, out) = sacctmgr(&[
        "-nP",
        "show",
        "assoc",
        &format!("cluster={cluster}"),
        "format=Account,User,MaxJobs,MaxSubmit",
    ]);
    let mut rows: Vec<String> = out
        .lines()
        .filter(|l| !l.starts_with("root|"))
        .map(str::to_string)
        .collect();
    rows.sort();
    rows
}

/// The user's default account on a cluster.
fn defaults(cluster: &str, user: &str) -> String {
    let (_, out) = sacctmgr(&[
        "-nP",
        "show",
        "user",
        user,
        "withassoc",
        "format=User,Cluster,Account,DefaultAccount",
    ]);
    out.lines()
        .map(|l| l.split('|').collect::<Vec<_>>())
        .find(|f| f.len() == 4 && f[1] == cluster)
        .map(|f| f[3].to_string())
        .unwrap_or_default()
}

fn config_with_slurm(tree: &TestTree, dir: &Path, cluster: &str) -> String {
    config_with_slurm_and(tree, dir, cluster, "")
}

/// The same, with more of `slurm:` (indented YAML lines) in the file `dir/roster.yaml`.
fn config_with_slurm_and(tree: &TestTree, dir: &Path, cluster: &str, more: &str) -> String {
    let env = dev_env();
    let url = dir.join("ro.url");
    std::fs::write(&url, &env["SLURMDB_RO_URL"]).unwrap();
    let slurm = format!(
        "slurm:\n  clusters: [{cluster}]\n  slurmConf: {}\n  databaseUrlFile: {}\n{more}",
        env["SLURM_CONF"],
        url.display()
    );
    tree.write_config_with(dir, &slurm).display().to_string()
}

/// Two projects (names unique to the test) and three accounts.
fn site(p: &str, extra: &str) -> String {
    let mut s = String::new();
    s.push_str(&format!("---\napiVersion: roster.io/v1alpha1\nkind: Project\nmetadata: {{name: {p}-a, namespace: physics}}\nspec:\n  groupName: {p}a\n  leaders: [{p}u1]\n  members: [{p}u2]\n"));
    s.push_str(&format!("---\napiVersion: roster.io/v1alpha1\nkind: Project\nmetadata: {{name: {p}-b, namespace: physics}}\nspec:\n  groupName: {p}b\n  members: [{p}u1, {p}u3]\n"));
    for u in ["u1", "u2", "u3"] {
        let spec = if u == "u1" {
            format!("  defaultProject: {p}-b\n")
        } else {
            String::new()
        };
        s.push_str(&person_account("physics", &format!("{p}{u}"), &spec));
        s.push('\n');
    }
    s.push_str(extra);
    s
}

#[tokio::test]
async fn projects_become_accounts_members_associations_and_a_second_apply_changes_nothing() {
    let tree = TestTree::new("slurm").await;
    let dir = scratch("slurm");
    let c = cluster("conv");
    let cfg = config_with_slurm(&tree, &dir, &c);
    let p = format!("s{}", std::process::id() % 100000);
    let f = dir.join("site.yaml");
    std::fs::write(&f, site(&p, "")).unwrap();
    let f = f.display().to_string();
    let (code, out, err) = roster(&["apply", "-f", &f, "--config", &cfg]);
    assert_eq!(code, 0, "{out}{err}");
    let rows = assocs(&c);
    assert!(rows.contains(&format!("{p}a|{p}u1||")), "{rows:?}");
    assert!(rows.contains(&format!("{p}b|{p}u3||")), "{rows:?}");
    assert_eq!(
        defaults(&c, &format!("{p}u1")),
        format!("{p}b"),
        "defaultProject becomes DefaultAccount"
    );
    let (_, coords) = sacctmgr(&[
        "-nP",
        "show",
        "user",
        &format!("{p}u1"),
        "withcoord",
        "format=User,Coordinators",
    ]);
    assert!(
        coords.contains(&format!("{p}a")),
        "leaders are coordinators: {coords}"
    );

    // The server says no change: txn_table does not move on a second apply.
    let before = slurm_txn(&c, &p).await;
    assert!(before > 0, "the first apply was recorded");
    let (code, out, _) = roster(&["apply", "-f", &f, "--config", &cfg]);
    assert_eq!(code, 0);
    assert!(out.contains("No changes"), "{out}");
    assert_eq!(
        slurm_txn(&c, &p).await,
        before,
        "slurmdbd recorded changes on a no-op apply"
    );
    tree.cleanup().await;
}

/// A site too large for single calls: twelve projects, users in one to three of them (a
/// default project chosen), leaders coordinating two projects, a locked account.
fn bulk_site(p: &str) -> (String, Vec<String>) {
    let mut s = String::new();
    let mut rows = vec![];
    for j in 0..12 {
        let members: Vec<String> = (0..24)
            .filter(|i| {
                i % 12 == j
                    || (i % 5 == 0 && j == (i + 1) % 12)
                    || (i % 7 == 0 && j == (i + 3) % 12)
            })
            .map(|i| format!("{p}v{i}"))
            .collect();
        for m in &members {
            let locked = if m.ends_with("v7") { "0|0" } else { "|" };
            rows.push(format!("{p}k{j}|{m}|{locked}"));
        }
        // The leader of project j also leads project j+1.
        s.push_str(&format!(
            "---\napiVersion: roster.io/v1alpha1\nkind: Project\nmetadata: {{name: {p}k{j}, namespace: physics}}\nspec:\n  leaders: [{p}v{j}, {p}v{}]\n  members: [{}]\n",
            (j + 11) % 12,
            members.join(", ")
        ));
    }
    for i in 0..24 {
        let spec = format!(
            "  defaultProject: {p}k{}\n{}",
            i % 12,
            if i == 7 { "  locked: true\n" } else { "" }
        );
        s.push_str(&person_account("physics", &format!("{p}v{i}"), &spec));
        s.push('\n');
    }
    rows.sort();
    rows.dedup();
    (s, rows)
}

#[tokio::test]
async fn a_large_addition_is_one_sacctmgr_load_that_leaves_exactly_the_declared_state() {
    let tree = TestTree::new("slurmload").await;
    let dir = scratch("slurmload");
    let c = cluster("load");
    let cfg = config_with_slurm(&tree, &dir, &c);
    let p = format!("l{}", std::process::id() % 100000);
    let (text, mut want) = bulk_site(&p);
    let f = dir.join("site.yaml");
    std::fs::write(&f, text).unwrap();
    let f = f.display().to_string();
    let (code, out, err) = roster(&["apply", "-f", &f, "--config", &cfg, "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let calls = report["slurm"]["calls"].as_array().unwrap();
    let args: Vec<String> = calls.iter().map(|c| c["args"].to_string()).collect();
    assert_eq!(args, [r#"["load","file=-"]"#], "one load: {args:?}");
    assert_eq!(calls[0]["status"], "done");
    // The leaders' extra associations (leaders are members) belong to the declared state too.
    for j in 0..12 {
        for k in [j, (j + 11) % 12] {
            want.push(format!(
                "{p}k{j}|{p}v{k}|{}",
                if k == 7 { "0|0" } else { "|" }
            ));
        }
    }
    want.sort();
    want.dedup();
    let mut rows = assocs(&c);
    rows.retain(|r| r.split('|').nth(1).is_some_and(|u| !u.is_empty()));
    assert_eq!(rows, want);
    for i in 0..24 {
        assert_eq!(
            defaults(&c, &format!("{p}v{i}")),
            format!("{p}k{}", i % 12),
            "v{i}"
        );
    }
    for j in [0usize, 5] {
        let (_, coords) = sacctmgr(&[
            "-nP",
            "show",
            "user",
            &format!("{p}v{j}"),
            "withcoord",
            "format=User,Coordinators",
        ]);
        for k in [j, (j + 1) % 12] {
            assert!(
                coords.contains(&format!("{p}k{k}")),
                "v{j} coordinates k{k}: {coords}"
            );
        }
    }
    // Nothing left to do, and slurmdbd records nothing on the second apply.
    let before = slurm_txn(&c, &p).await;
    let (code, out, err) = roster(&["apply", "-f", &f, "--config", &cfg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("No changes"), "{out}");
    assert_eq!(slurm_txn(&c, &p).await, before);
    tree.cleanup().await;
}

#[tokio::test]
async fn locks_block_submission_and_removals_switch_the_default_first() {
    let tree = TestTree::new("slurmlock").await;
    let dir = scratch("slurmlock");
    let c = cluster("lock");
    let cfg = config_with_slurm(&tree, &dir, &c);
    let p = format!("l{}", std::process::id() % 100000);
    let f = dir.join("site.yaml");
    std::fs::write(&f, site(&p, "")).unwrap();
    let f = f.display().to_string();
    assert_eq!(roster(&["apply", "-f", &f, "--config", &cfg]).0, 0);
    // Lock u1: MaxJobs=0 and MaxSubmitJobs=0 on all its associations, running jobs untouched.
    let locked = site(&p, "").replace(
        &format!("  person: {p}u1\n  username: {p}u1\n"),
        &format!("  person: {p}u1\n  username: {p}u1\n  locked: true\n"),
    );
    std::fs::write(&f, &locked).unwrap();
    let (code, out, err) = roster(&["apply", "-f", &f, "--config", &cfg]);
    assert_eq!(code, 0, "{out}{err}");
    let rows = assocs(&c);
    assert!(
        rows.contains(&format!("{p}a|{p}u1|0|0")) && rows.contains(&format!("{p}b|{p}u1|0|0")),
        "{rows:?}"
    );
    // Unlock restores the declared (here: no) limits.
    std::fs::write(&f, site(&p, "")).unwrap();
    assert_eq!(roster(&["apply", "-f", &f, "--config", &cfg]).0, 0);
    assert!(
        assocs(&c).contains(&format!("{p}a|{p}u1||")),
        "{:?}",
        assocs(&c)
    );
    // A locked Project blocks its account: GrpSubmitJobs=0; unlocking lifts it.
    let grp = || {
        let (_, out) = sacctmgr(&[
            "-nP",
            "show",
            "assoc",
            &format!("cluster={c}"),
            &format!("account={p}a"),
            "format=User,GrpSubmit",
        ]);
        out.lines()
            .find(|l| l.starts_with('|'))
            .unwrap_or("")
            .to_string()
    };
    let project_locked = site(&p, "").replace(
        &format!("  groupName: {p}a\n"),
        &format!("  groupName: {p}a\n  locked: true\n"),
    );
    std::fs::write(&f, &project_locked).unwrap();
    assert_eq!(roster(&["apply", "-f", &f, "--config", &cfg]).0, 0);
    assert_eq!(grp(), "|0");
    std::fs::write(&f, site(&p, "")).unwrap();
    assert_eq!(roster(&["apply", "-f", &f, "--config", &cfg]).0, 0);
    assert_eq!(grp(), "|");

    // u1 leaves project b, its default: the default moves to a first, then b's association goes.
    let moved = site(&p, "")
        .replace(
            &format!("  members: [{p}u1, {p}u3]\n"),
            &format!("  members: [{p}u3]\n"),
        )
        .replace(&format!("  defaultProject: {p}-b\n"), "");
    std::fs::write(&f, &moved).unwrap();
    let (code, out, err) = roster(&["apply", "-f", &f, "--config", &cfg]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(defaults(&c, &format!("{p}u1")), format!("{p}a"));
    assert!(!assocs(&c).contains(&format!("{p}b|{p}u1||")));
    // u3's last association goes: u3 leaves the cluster.
    let gone = moved.replace(&format!("  members: [{p}u3]\n"), "  members: []\n");
    std::fs::write(&f, &gone).unwrap();
    let (code, out, err) = roster(&["apply", "-f", &f, "--config", &cfg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("no memberships left"), "{out}");
    assert!(
        !assocs(&c).iter().any(|r| r.contains(&format!("{p}u3"))),
        "{:?}",
        assocs(&c)
    );
    tree.cleanup().await;
}

#[tokio::test]
async fn a_missing_qos_is_reported_and_nothing_is_written_for_the_project() {
    let tree = TestTree::new("slurmqos").await;
    let dir = scratch("slurmqos");
    let c = cluster("qos");
    let cfg = config_with_slurm(&tree, &dir, &c);
    let p = format!("q{}", std::process::id() % 100000);
    let text = site(&p, "").replace(
        &format!("  groupName: {p}b\n"),
        &format!("  groupName: {p}b\n  slurm:\n    qos: [nosuchqos]\n"),
    );
    let f = dir.join("site.yaml");
    std::fs::write(&f, text).unwrap();
    let (code, out, err) = roster(&["apply", "-f", &f.display().to_string(), "--config", &cfg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("QosMissing"), "{out}");
    assert!(
        !assocs(&c).iter().any(|r| r.starts_with(&format!("{p}b|"))),
        "{:?}",
        assocs(&c)
    );
    assert!(
        assocs(&c).iter().any(|r| r.starts_with(&format!("{p}a|"))),
        "the other project goes ahead"
    );
    tree.cleanup().await;
}

/// Puts a running job of `user` in `account` into the accounting database, as slurmctld would
/// have recorded it; returns its job id.
async fn running_job(cluster: &str, account: &str, user: &str) -> u32 {
    use mysql_async::prelude::*;
    let opts = mysql_async::Opts::from_url(&dev_env()["SLURMDB_ADMIN_URL"]).unwrap();
    let mut conn = mysql_async::Conn::new(opts).await.unwrap();
    let id: u64 = conn
        .exec_first(format!("SELECT id_assoc FROM `{cluster}_assoc_table` WHERE user = ? AND acct = ? AND deleted = 0"), (user, account))
        .await
        .unwrap()
        .expect("the association exists");
    let job = 4000 + std::process::id() % 50000;
    conn.exec_drop(
        format!("INSERT INTO `{cluster}_job_table` (account, cpus_req, job_name, id_assoc, id_job, id_qos, id_resv, id_wckey, id_user, id_group, het_job_id, het_job_offset, state_reason_prev, nodes_alloc, `partition`, priority, state, time_submit, time_eligible, time_start, time_end, env_hash_inx, script_hash_inx, id_array_job) VALUES (?, 1, 'held', ?, ?, 1, 0, 0, 20001, 20001, 0, 4294967294, 0, 1, 'batch', 1, 1, UNIX_TIMESTAMP(), UNIX_TIMESTAMP(), UNIX_TIMESTAMP(), 0, 0, 0, 0)"),
        (account, id, job),
    )
    .await
    .unwrap();
    job
}

async fn end_job(cluster: &str, job: u32) {
    use mysql_async::prelude::*;
    let opts = mysql_async::Opts::from_url(&dev_env()["SLURMDB_ADMIN_URL"]).unwrap();
    let mut conn = mysql_async::Conn::new(opts).await.unwrap();
    conn.exec_drop(format!("UPDATE `{cluster}_job_table` SET state = 3, time_end = UNIX_TIMESTAMP() WHERE id_job = ?"), (job,)).await.unwrap();
}

#[tokio::test]
async fn a_removal_refused_for_running_jobs_waits_while_everything_else_proceeds() {
    let tree = TestTree::new("slurmjob").await;
    let dir = scratch("slurmjob");
    let c = cluster("job");
    let cfg = config_with_slurm(&tree, &dir, &c);
    let p = format!("j{}", std::process::id() % 100000);
    let f = dir.join("site.yaml");
    std::fs::write(&f, site(&p, "")).unwrap();
    let f = f.display().to_string();
    assert_eq!(roster(&["apply", "-f", &f, "--config", &cfg]).0, 0);
    // u2 has a job running in project a, and leaves it; u3 joins a in the same change.
    let job = running_job(&c, &format!("{p}a"), &format!("{p}u2")).await;
    let changed = site(&p, "").replace(
        &format!("  members: [{p}u2]\n"),
        &format!("  members: [{p}u3]\n"),
    );
    std::fs::write(&f, &changed).unwrap();
    let (code, out, err) = roster(&["apply", "-f", &f, "--config", &cfg]);
    assert_eq!(code, 3, "held by running jobs: {out}{err}");
    assert!(out.contains("JobsRunning"), "{out}");
    let rows = assocs(&c);
    assert!(
        rows.contains(&format!("{p}a|{p}u3||")),
        "the rest went ahead: {rows:?}"
    );
    assert!(
        rows.iter().any(|r| r.starts_with(&format!("{p}a|{p}u2|"))),
        "the refused removal left the association: {rows:?}"
    );
    // The job ends; the next apply removes the association.
    end_job(&c, job).await;
    let (code, out, err) = roster(&["apply", "-f", &f, "--config", &cfg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !assocs(&c).iter().any(|r| r.contains(&format!("{p}u2|"))),
        "{:?}",
        assocs(&c)
    );
    tree.cleanup().await;
}

#[tokio::test]
async fn existing_slurm_accounts_are_left_alone_unless_adopted_and_unmanaged_users_stay_unless_pruned()
 {
    let tree = TestTree::new("slurmadopt").await;
    let dir = scratch("slurmadopt");
    let c = cluster("adopt");
    let cfg = config_with_slurm(&tree, &dir, &c);
    let p = format!("d{}", std::process::id() % 100000);
    // The site already has account <p>a with a user Roster does not know.
    for args in [
        vec![
            "-i".to_string(),
            "add".into(),
            "account".into(),
            format!("name={p}a"),
            format!("cluster={c}"),
            "fairshare=7".into(),
        ],
        vec![
            "-i".to_string(),
            "add".into(),
            "user".into(),
            format!("name={p}legacy"),
            format!("account={p}a"),
            format!("cluster={c}"),
        ],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert!(sacctmgr(&args).0);
    }
    let f = dir.join("site.yaml");
    std::fs::write(&f, site(&p, "")).unwrap();
    let f = f.display().to_string();
    let (code, out, err) = roster(&["apply", "-f", &f, "--config", &cfg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("UnmanagedSlurmAccount"), "{out}");
    let rows = assocs(&c);
    assert!(
        !rows.iter().any(|r| r.starts_with(&format!("{p}a|{p}u"))),
        "nothing written into the unmanaged account: {rows:?}"
    );
    assert!(
        rows.iter().any(|r| r.starts_with(&format!("{p}b|{p}u3"))),
        "the other project proceeds: {rows:?}"
    );

    // Adoption: the site allows it and the Project asks for it.
    let allowed = std::fs::read_to_string(&cfg).unwrap()
        + "adoption:\n  enabled: true\n  namespaces: [physics]\n";
    std::fs::write(&cfg, allowed).unwrap();
    let adopted = site(&p, "").replace(
        &format!("metadata: {{name: {p}-a, namespace: physics}}"),
        &format!("metadata: {{name: {p}-a, namespace: physics, annotations: {{roster.io/adopt: \"true\"}}}}"),
    );
    std::fs::write(&f, &adopted).unwrap();
    let (code, out, err) = roster(&["apply", "-f", &f, "--config", &cfg]);
    assert_eq!(code, 0, "{out}{err}");
    let rows = assocs(&c);
    assert!(
        rows.contains(&format!("{p}a|{p}u1||")),
        "members joined the adopted account: {rows:?}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with(&format!("{p}a|{p}legacy|"))),
        "its unmanaged association is kept: {rows:?}"
    );
    let plan = roster(&["plan", "-f", &f, "--config", &cfg]).1;
    assert!(
        plan.contains(&format!("{p}legacy")),
        "plan lists what it leaves alone: {plan}"
    );
    let mut ldap = admin().await;
    let group = entries(&mut ldap, &tree.dn, &format!("(cn={p}a)")).await;
    assert_eq!(
        group[0].attrs["rosterSlurmAccount"],
        std::slice::from_ref(&c),
        "adoption is recorded on the group"
    );

    // pruneUnmanaged removes what Roster does not manage from the account.
    let pruned = adopted.replace(
        &format!("  groupName: {p}a\n"),
        &format!("  groupName: {p}a\n  slurm:\n    pruneUnmanaged: true\n"),
    );
    std::fs::write(&f, &pruned).unwrap();
    let (code, out, err) = roster(&["apply", "-f", &f, "--config", &cfg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !assocs(&c).iter().any(|r| r.contains(&format!("{p}legacy"))),
        "{:?}",
        assocs(&c)
    );
    tree.cleanup().await;
}

#[tokio::test]
async fn declared_partitions_get_one_association_each() {
    let tree = TestTree::new("slurmpart").await;
    let dir = scratch("slurmpart");
    let c = cluster("part");
    let cfg = config_with_slurm(&tree, &dir, &c);
    let p = format!("r{}", std::process::id() % 100000);
    let with = |parts: &str| {
        site(&p, "").replace(
            &format!("  groupName: {p}b\n"),
            &format!("  groupName: {p}b\n  slurm:\n    partitions: [{parts}]\n"),
        )
    };
    let f = dir.join("site.yaml");
    std::fs::write(&f, with("batch, gpu")).unwrap();
    let f = f.display().to_string();
    let (code, out, err) = roster(&["apply", "-f", &f, "--config", &cfg]);
    assert_eq!(code, 0, "{out}{err}");
    let show = || {
        let (_, out) = sacctmgr(&[
            "-nP",
            "show",
            "assoc",
            &format!("cluster={c}"),
            &format!("account={p}b"),
            "format=User,Partition",
        ]);
        let mut rows: Vec<String> = out
            .lines()
            .filter(|l| !l.starts_with('|'))
            .map(str::to_string)
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(
        show(),
        [
            format!("{p}u1|batch"),
            format!("{p}u1|gpu"),
            format!("{p}u3|batch"),
            format!("{p}u3|gpu")
        ]
    );
    assert!(
        roster(&["apply", "-f", &f, "--config", &cfg])
            .1
            .contains("No changes")
    );
    std::fs::write(&f, with("batch")).unwrap();
    let (code, out, err) = roster(&["apply", "-f", &f, "--config", &cfg]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(show(), [format!("{p}u1|batch"), format!("{p}u3|batch")]);
    tree.cleanup().await;
}

#[tokio::test]
async fn without_database_access_sacctmgr_show_observes_the_same_state() {
    let tree = TestTree::new("slurmfb").await;
    let dir = scratch("slurmfb");
    let c = cluster("fb");
    let cfg = config_with_slurm(&tree, &dir, &c);
    let p = format!("f{}", std::process::id() % 100000);
    let text = site(&p, "").replace(
        &format!("  groupName: {p}b\n"),
        &format!("  groupName: {p}b\n  slurm:\n    fairshare: 5\n    limits:\n      grpJobs: 10\n      grpTRES: {{cpu: 64}}\n      maxWall: 2d\n"),
    );
    let f = dir.join("site.yaml");
    std::fs::write(&f, text).unwrap();
    let f = f.display().to_string();
    assert_eq!(roster(&["apply", "-f", &f, "--config", &cfg]).0, 0);
    let env = dev_env();
    let clusters = vec![c.clone()];
    let sql = roster::slurm::observe::observe(&env["SLURMDB_RO_URL"], &clusters)
        .await
        .unwrap();
    let mut sacctmgr = roster::slurm::sacctmgr::Sacctmgr {
        bin: "sacctmgr".into(),
        slurm_conf: Some(env["SLURM_CONF"].clone().into()),
        timeout: std::time::Duration::from_secs(60),
    };
    let shown = roster::slurm::observe::observe_with_sacctmgr(&mut sacctmgr, &clusters)
        .await
        .unwrap();
    let ours = |s: &roster::slurm::State| {
        let accounts: Vec<_> = s
            .accounts
            .iter()
            .filter(|((_, a), _)| a.starts_with(&p))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let assocs: Vec<_> = s
            .assocs
            .iter()
            .filter(|((_, a, _, _), _)| a.starts_with(&p))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let defaults: Vec<_> = s
            .defaults
            .iter()
            .filter(|((_, u), _)| u.starts_with(&p))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let coords: Vec<_> = s
            .coordinators
            .iter()
            .filter(|(a, _)| a.starts_with(&p))
            .cloned()
            .collect();
        (accounts, assocs, defaults, coords)
    };
    assert_eq!(ours(&shown), ours(&sql));
    assert!(!ours(&sql).1.is_empty());
    assert_eq!(
        ours(&sql)
            .0
            .iter()
            .find(|((_, a), _)| a == &format!("{p}b"))
            .unwrap()
            .1
            .limits
            .max_wall,
        Some(2880)
    );
    // And a config without database access converges with it: nothing left to do.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let no_db: String = text
        .lines()
        .filter(|l| !l.contains("databaseUrlFile"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&cfg, no_db).unwrap();
    let (code, out, err) = roster(&["apply", "-f", &f, "--config", &cfg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("No changes"), "{out}");
    tree.cleanup().await;
}

#[tokio::test]
async fn a_purged_account_leaves_slurm_and_a_deactivated_one_cannot_submit() {
    let tree = TestTree::new("slurmpurge").await;
    let dir = scratch("slurmpurge");
    let c = cluster("purge");
    let cfg = config_with_slurm(&tree, &dir, &c);
    let p = format!("x{}", std::process::id() % 100000);
    let f = dir.join("site.yaml");
    std::fs::write(&f, site(&p, "")).unwrap();
    let f = f.display().to_string();
    assert_eq!(roster(&["apply", "-f", &f, "--config", &cfg]).0, 0);
    // u3 disappears from the manifests (and from project b's members).
    let without = site(&p, "")
        .replace(
            &format!("  members: [{p}u1, {p}u3]\n"),
            &format!("  members: [{p}u1]\n"),
        )
        .replace(&person_account("physics", &format!("{p}u3"), ""), "");
    let g = dir.join("without.yaml");
    std::fs::write(&g, without).unwrap();
    let g = g.display().to_string();
    let (code, out, err) = roster(&[
        "apply",
        "--prune",
        "-f",
        &g,
        "--config",
        &cfg,
        "--now",
        "2031-01-01T00:00:00Z",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        assocs(&c).contains(&format!("{p}b|{p}u3|0|0")),
        "deactivated: no new jobs: {:?}",
        assocs(&c)
    );
    // Purged at its time: the Slurm user goes with it.
    let (code, out, err) = roster(&[
        "apply",
        "-f",
        &g,
        "--config",
        &cfg,
        "--now",
        "2031-04-02T00:00:00Z",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !assocs(&c).iter().any(|r| r.contains(&format!("{p}u3"))),
        "{:?}",
        assocs(&c)
    );
    let mut ldap = admin().await;
    assert_eq!(
        entries(
            &mut ldap,
            &tree.config.tombstones_dn(),
            &format!("(cn=Account:{p}u3)")
        )
        .await
        .len(),
        1
    );
    tree.cleanup().await;
}

/// A stand-in for sacctmgr that answers a `delete` with "Nothing deleted" and exits 0 without
/// doing it — once, or always — and hands every other call to the real sacctmgr. Each false
/// answer is a line in `lies`.
fn lying_sacctmgr(dir: &Path, always: bool) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let real = "sacctmgr";
    let lies = dir.join(format!("lies-{always}"));
    let bin = dir.join(format!("sacctmgr-liar-{always}"));
    std::fs::write(
        &bin,
        format!(
            "#!/usr/bin/env python3\nimport os, shutil, sys\nargs = sys.argv[1:]\nlies = {lies:?}\nif 'delete' in args and ({always} or not os.path.exists(lies)):\n    with open(lies, 'a') as f:\n        f.write(' '.join(args) + '\\n')\n    print(' Nothing deleted')\n    sys.exit(0)\nreal = shutil.which({real:?}) or {real:?}\nos.execv(real, [real] + args)\n",
            always = if always { "True" } else { "False" },
        ),
    )
    .unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    (bin, lies)
}

#[tokio::test]
async fn sacctmgr_answering_done_is_not_believed_slurm_is_read_again() {
    let tree = TestTree::new("slurmverify").await;
    let dir = scratch("slurmverify");
    let c = cluster("verify");
    let p = format!("v{}", std::process::id() % 100000);
    let config = |sacctmgr: &Path, name: &str| {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub).unwrap();
        let more = format!("  sacctmgr: {}\n", sacctmgr.display());
        config_with_slurm_and(&tree, &sub, &c, &more)
    };
    let plain = config_with_slurm(&tree, &dir, &c);
    let f = dir.join("site.yaml");
    std::fs::write(&f, site(&p, "")).unwrap();
    let f = f.display().to_string();
    assert_eq!(roster(&["apply", "-f", &f, "--config", &plain]).0, 0);
    // u3 leaves and is purged; sacctmgr claims the first delete without doing it.
    let without = |gone: &[&str]| {
        let mut s = site(&p, "");
        for u in gone {
            s = s
                .replace(&format!(", {p}{u}]"), "]")
                .replace(&format!("[{p}{u}]"), "[]")
                .replace(&person_account("physics", &format!("{p}{u}"), ""), "");
        }
        let g = dir.join(format!("without-{}.yaml", gone.join("-")));
        std::fs::write(&g, s).unwrap();
        g.display().to_string()
    };
    let g = without(&["u3"]);
    let apply = |file: &str, cfg: &str, now: &str, extra: &[&str]| {
        let mut args = vec!["apply", "-f", file, "--config", cfg, "--now", now];
        args.extend(extra);
        let (code, out, err) = roster(&args);
        (code, format!("{out}{err}"))
    };
    let (code, out) = apply(&g, &plain, "2031-01-01T00:00:00Z", &["--prune"]);
    assert_eq!(code, 0, "{out}");
    let (once, once_lies) = lying_sacctmgr(&dir, false);
    let (code, out) = apply(&g, &config(&once, "once"), "2031-04-02T00:00:00Z", &[]);
    assert_eq!(code, 0, "{out}");
    let lied = std::fs::read_to_string(&once_lies).unwrap_or_default();
    assert!(
        lied.contains(&format!("name={p}u3")),
        "the stand-in lied: {lied:?}"
    );
    assert!(
        !assocs(&c).iter().any(|r| r.contains(&format!("|{p}u3|"))),
        "read again, the delete was run once more: {:?}\n{out}",
        assocs(&c)
    );
    // u2 too; now every delete is claimed and none done: the run fails and says so, and
    // Slurm keeps the (blocked) association: nothing is reported done that is not.
    let h = without(&["u3", "u2"]);
    let (code, out) = apply(&h, &plain, "2031-05-01T00:00:00Z", &["--prune"]);
    assert_eq!(code, 0, "{out}");
    let (always, always_lies) = lying_sacctmgr(&dir, true);
    let (code, out) = apply(&h, &config(&always, "always"), "2031-07-31T00:00:00Z", &[]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("SlurmNotConverged"), "{out}");
    assert!(out.contains(&format!("{p}u2")), "{out}");
    let lies = std::fs::read_to_string(&always_lies).unwrap_or_default();
    assert_eq!(lies.lines().count(), 2, "tried twice, no more: {lies:?}");
    assert!(
        assocs(&c).contains(&format!("{p}a|{p}u2|0|0")),
        "{:?}",
        assocs(&c)
    );
    // With a truthful sacctmgr the next run finishes it.
    let (code, out) = apply(&h, &plain, "2031-07-31T00:00:00Z", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        !assocs(&c).iter().any(|r| r.contains(&format!("|{p}u2|"))),
        "{:?}",
        assocs(&c)
    );
    tree.cleanup().await;
}

/// `account|grpsubmit` of an account's own association on a cluster (empty when it is gone).
fn account_row(cluster: &str, account: &str) -> String {
    let (_, out) = sacctmgr(&[
        "-nP",
        "show",
        "assoc",
        &format!("cluster={cluster}"),
        &format!("account={account}"),
        "format=Account,User,GrpSubmit",
    ]);
    out.lines()
        .find(|l| l.split('|').nth(1) == Some(""))
        .map(|l| l.replace("||", "|"))
        .unwrap_or_default()
}

#[tokio::test]
async fn a_removed_project_is_locked_in_slurm_and_leaves_it_at_its_purge_after_its_users_moved() {
    let tree = TestTree::new("slurmprojpurge").await;
    let dir = scratch("slurmprojpurge");
    let c = cluster("projpurge");
    let cfg = config_with_slurm(&tree, &dir, &c);
    let p = format!("q{}", std::process::id() % 100000);
    let f = dir.join("site.yaml");
    std::fs::write(&f, site(&p, "")).unwrap();
    let f = f.display().to_string();
    assert_eq!(roster(&["apply", "-f", &f, "--config", &cfg]).0, 0);
    // u2 is only in project a (default a); u1 is in both (default b).
    assert_eq!(defaults(&c, &format!("{p}u2")), format!("{p}a"));
    assert_eq!(account_row(&c, &format!("{p}a")), format!("{p}a|"));
    // Project a disappears from the manifests.
    let text = site(&p, "");
    let start = text
        .find("---\napiVersion: roster.io/v1alpha1\nkind: Project\nmetadata: {name: ")
        .unwrap();
    let end = text[start + 4..].find("---\n").unwrap() + start + 4;
    let without = format!("{}{}", &text[..start], &text[end..]);
    assert!(!without.contains(&format!("groupName: {p}a\n")));
    let g = dir.join("without.yaml");
    std::fs::write(&g, &without).unwrap();
    let g = g.display().to_string();
    let apply = |now: &'static str, prune: bool| {
        let mut args = vec!["apply", "-f", &g, "--config", &cfg, "--now", now];
        if prune {
            args.push("--prune");
        }
        roster(&args)
    };
    let (code, out, err) = apply("2031-01-01T00:00:00Z", true);
    assert_eq!(code, 0, "{out}{err}");
    // Deactivated: nothing new can be submitted to the account; every association stays.
    assert_eq!(account_row(&c, &format!("{p}a")), format!("{p}a|0"));
    let rows = assocs(&c);
    for u in ["u1", "u2"] {
        assert!(
            rows.iter().any(|r| r.starts_with(&format!("{p}a|{p}{u}|"))),
            "{u} kept in a: {rows:?}"
        );
    }
    // At the purge: u2's only membership goes (and u2 with it), u1 leaves a, a leaves Slurm.
    let (code, out, err) = apply("2031-04-02T00:00:00Z", false);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(account_row(&c, &format!("{p}a")), "");
    let rows = assocs(&c);
    assert!(
        !rows.iter().any(|r| r.starts_with(&format!("{p}a|"))),
        "{rows:?}"
    );
    assert!(
        !rows.iter().any(|r| r.contains(&format!("|{p}u2|"))),
        "{rows:?}"
    );
    assert_eq!(defaults(&c, &format!("{p}u1")), format!("{p}b"));
    let mut ldap = admin().await;
    let tomb = entries(
        &mut ldap,
        &tree.config.tombstones_dn(),
        &format!("(cn=Project:{p}a)"),
    )
    .await;
    assert_eq!(tomb.len(), 1);
    assert_eq!(
        tomb[0].attrs["rosterSlurmAccount"],
        std::slice::from_ref(&c)
    );
    // Nothing left to do.
    let (code, out, err) = roster(&[
        "plan",
        "-f",
        &g,
        "--config",
        &cfg,
        "--now",
        "2031-04-03T00:00:00Z",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    tree.cleanup().await;
}

#[tokio::test]
async fn in_file_mode_an_account_walks_every_transition_in_ldap_and_slurm() {
    let tree = TestTree::new("slurmwalk").await;
    let dir = scratch("slurmwalk");
    let c = cluster("walk");
    let cfg = config_with_slurm(&tree, &dir, &c);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("guard:\n  maxCount: 10\n  maxPercent: 100\n");
    std::fs::write(&cfg, text).unwrap();
    let p = format!("k{}", std::process::id() % 100000);
    let user = format!("{p}u");
    let project = format!(
        "---\napiVersion: roster.io/v1alpha1\nkind: Project\nmetadata: {{name: {p}, namespace: physics}}\nspec:\n  members: [{user}]\n"
    );
    // The site as of some step: the project, plus the account when declared.
    let step = |name: &str, account: Option<&str>| -> String {
        let f = dir.join(format!("{name}.yaml"));
        let mut docs = project.clone();
        if let Some(spec) = account {
            docs.push_str(&person_account("physics", &user, spec));
        }
        std::fs::write(&f, docs).unwrap();
        f.display().to_string()
    };
    let run = |file: &str, now: &str, extra: &[&str]| -> (i32, String) {
        let mut args = vec!["apply", "-f", file, "--config", &cfg, "--now", now];
        args.extend(extra);
        let (code, out, err) = roster(&args);
        (code, format!("{out}{err}"))
    };
    let active = format!("{p}|{user}||");
    let blocked = format!("{p}|{user}|0|0");
    let slurm_has = |row: &str| assocs(&c).iter().any(|r| r == row);
    let mut ldap = admin().await;
    let people = tree.config.people_dn();
    let filter = format!("(uid={user})");

    // Pending → Active, valid until 2030-02-01.
    let valid = step("valid", Some("  validUntil: \"2030-02-01T00:00:00Z\"\n"));
    assert_eq!(run(&valid, "2030-01-01T00:00:00Z", &[]).0, 0);
    let e = &entries(&mut ldap, &people, &filter).await[0];
    let uid = e.attrs["uidNumber"].clone();
    assert!(!e.attrs.contains_key("pwdAccountLockedTime"));
    assert!(slurm_has(&active), "{:?}", assocs(&c));
    // Expiry.
    assert_eq!(run(&valid, "2030-02-02T00:00:00Z", &[]).0, 0);
    let e = &entries(&mut ldap, &people, &filter).await[0];
    assert_eq!(e.attrs["rosterState"], ["Deactivated"]);
    assert!(e.attrs.contains_key("pwdAccountLockedTime"));
    assert!(slurm_has(&blocked), "{:?}", assocs(&c));
    // Extended.
    let extended = step("extended", Some("  validUntil: \"2031-01-01T00:00:00Z\"\n"));
    assert_eq!(run(&extended, "2030-02-02T00:00:00Z", &[]).0, 0);
    let e = &entries(&mut ldap, &people, &filter).await[0];
    assert_eq!(e.attrs["rosterState"], ["Active"]);
    assert!(!e.attrs.contains_key("pwdAccountLockedTime"));
    assert!(slurm_has(&active), "{:?}", assocs(&c));
    // Locked, unlocked.
    let locked = step(
        "locked",
        Some("  validUntil: \"2031-01-01T00:00:00Z\"\n  locked: true\n"),
    );
    assert_eq!(run(&locked, "2030-02-02T00:00:00Z", &[]).0, 0);
    assert!(
        entries(&mut ldap, &people, &filter).await[0]
            .attrs
            .contains_key("pwdAccountLockedTime")
    );
    assert!(slurm_has(&blocked), "{:?}", assocs(&c));
    assert_eq!(run(&extended, "2030-02-02T00:00:00Z", &[]).0, 0);
    assert!(
        !entries(&mut ldap, &people, &filter).await[0]
            .attrs
            .contains_key("pwdAccountLockedTime")
    );
    assert!(slurm_has(&active), "{:?}", assocs(&c));
    // Removed (--prune) → Deactivated, the association kept and blocked → declared again.
    let gone = step("gone", None);
    let (code, out) = run(&gone, "2030-02-03T00:00:00Z", &["--prune"]);
    assert_eq!(code, 0, "{out}");
    let e = &entries(&mut ldap, &people, &filter).await[0];
    assert_eq!(e.attrs["rosterState"], ["Deactivated"]);
    assert_eq!(e.attrs["rosterGoneAt"], ["20300203000000Z"]);
    assert!(slurm_has(&blocked), "{:?}", assocs(&c));
    assert_eq!(run(&extended, "2030-02-04T00:00:00Z", &[]).0, 0);
    let e = &entries(&mut ldap, &people, &filter).await[0];
    assert_eq!(e.attrs["rosterState"], ["Active"]);
    assert_eq!(e.attrs["uidNumber"], uid);
    assert!(!e.attrs.contains_key("rosterGoneAt"));
    assert!(slurm_has(&active), "{:?}", assocs(&c));
    // Removed again → purged 90 days later, not before: tombstone, and out of Slurm.
    assert_eq!(run(&gone, "2030-02-05T00:00:00Z", &["--prune"]).0, 0);
    assert_eq!(run(&gone, "2030-05-05T00:00:00Z", &[]).0, 0);
    assert_eq!(
        entries(&mut ldap, &people, &filter).await.len(),
        1,
        "not before purgeAt"
    );
    let (code, purge_out) = run(&gone, "2030-05-06T00:00:00Z", &[]);
    assert_eq!(code, 0, "{purge_out}");
    assert!(entries(&mut ldap, &people, &filter).await.is_empty());
    let tomb = entries(
        &mut ldap,
        &tree.config.tombstones_dn(),
        &format!("(cn=Account:{user})"),
    )
    .await;
    assert_eq!(tomb[0].attrs["uidNumber"], uid);
    assert!(
        !assocs(&c).iter().any(|r| r.contains(&format!("|{user}|"))),
        "{:?}\n{purge_out}",
        assocs(&c)
    );
    // Someone else asks for the name: Conflict (exit 3), nothing written.
    let stranger = dir.join("stranger.yaml");
    std::fs::write(
        &stranger,
        format!(
            "---\napiVersion: roster.io/v1alpha1\nkind: Person\nmetadata: {{name: other, namespace: chemistry}}\nspec: {{givenName: O, familyName: P}}\n---\napiVersion: roster.io/v1alpha1\nkind: Account\nmetadata: {{name: {user}, namespace: chemistry}}\nspec:\n  person: other\n  username: {user}\n"
        ),
    )
    .unwrap();
    let (code, out) = run(&stranger.display().to_string(), "2030-05-07T00:00:00Z", &[]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("Conflict"), "{out}");
    assert!(entries(&mut ldap, &people, &filter).await.is_empty());
    // The same Person declares it again: same username and uid, back in Slurm.
    assert_eq!(run(&extended, "2030-05-07T00:00:00Z", &[]).0, 0);
    let e = &entries(&mut ldap, &people, &filter).await[0];
    assert_eq!(e.attrs["uidNumber"], uid);
    assert!(slurm_has(&active), "{:?}", assocs(&c));
    // A bad edit (Invalid) loses nothing in Slurm either.
    let bad = step(
        "bad",
        Some("  validUntil: \"2031-01-01T00:00:00Z\"\n  defaultProject: nowhere\n"),
    );
    let (code, out) = run(&bad, "2030-05-08T00:00:00Z", &[]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("Invalid"), "{out}");
    assert!(slurm_has(&active), "{:?}", assocs(&c));
    tree.cleanup().await;
}

#[tokio::test]
async fn in_file_mode_guests_expire_extend_purge_and_their_rules_hold() {
    let tree = TestTree::new("slurmguests").await;
    let dir = scratch("slurmguests");
    let c = cluster("guests");
    let cfg = config_with_slurm(&tree, &dir, &c);
    let p = format!("g{}", std::process::id() % 100000);
    let base = format!(
        "---\napiVersion: roster.io/v1alpha1\nkind: Project\nmetadata: {{name: {p}, namespace: physics}}\nspec:\n  leaders: [{p}host]\n"
    ) + &person_account("physics", &format!("{p}host"), "");
    let guest = |name: &str, host: &str, ty: &str, valid: Option<&str>| {
        let valid = valid
            .map(|v| format!("  validUntil: \"{v}\"\n"))
            .unwrap_or_default();
        format!(
            "\n---\napiVersion: roster.io/v1alpha1\nkind: Guest\nmetadata: {{name: {name}, namespace: physics}}\nspec:\n  type: {ty}\n  host: {host}\n  adminGroup: {p}\n{valid}  person: {{givenName: G, familyName: {name}}}\n  account: {{username: {name}, projects: [{p}]}}\n"
        )
    };
    let vis = format!("{p}vis");
    let svc = format!("{p}svc");
    let f = dir.join("site.yaml");
    let write = |text: &str| std::fs::write(&f, text).unwrap();
    let file = f.display().to_string();
    let run = |now: &str, extra: &[&str]| {
        let mut args = vec!["apply", "-f", &file, "--config", &cfg, "--now", now];
        args.extend(extra);
        let (code, out, err) = roster(&args);
        (code, format!("{out}{err}"))
    };
    let host = format!("{p}host");
    write(
        &(base.clone()
            + &guest(&vis, &host, "Personal", Some("2030-03-31"))
            + &guest(&svc, &host, "Technical", None)),
    );
    // Creation.
    let (code, out) = run("2030-01-01T00:00:00Z", &[]);
    assert_eq!(code, 0, "{out}");
    let mut ldap = admin().await;
    let people = tree.config.people_dn();
    let entry = async |ldap: &mut ldap3::Ldap, u: &str| {
        entries(
            ldap,
            &people,
            &format!("(&(uid={u})(objectClass=posixAccount))"),
        )
        .await
    };
    let v = entry(&mut ldap, &vis).await;
    let uid = v[0].attrs["uidNumber"].clone();
    assert!(!v[0].attrs.contains_key("pwdAccountLockedTime"));
    assert!(
        assocs(&c).contains(&format!("{p}|{vis}||")),
        "{:?}",
        assocs(&c)
    );
    // Expiry → login blocked after the 30-day grace, in LDAP and Slurm.
    let (code, out) = run("2030-04-15T00:00:00Z", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        !entry(&mut ldap, &vis).await[0]
            .attrs
            .contains_key("pwdAccountLockedTime"),
        "grace"
    );
    let (code, out) = run("2030-05-02T00:00:00Z", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        entry(&mut ldap, &vis).await[0]
            .attrs
            .contains_key("pwdAccountLockedTime")
    );
    assert!(
        assocs(&c).contains(&format!("{p}|{vis}|0|0")),
        "{:?}",
        assocs(&c)
    );
    // Extended after expiry with roster guest extend: active again.
    let (code, out, err) = roster(&[
        "guest",
        "extend",
        &vis,
        "-f",
        &file,
        "--months",
        "3",
        "--today",
        "2030-05-02",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        std::fs::read_to_string(&f)
            .unwrap()
            .contains("validUntil: \"2030-08-02\"")
    );
    let (code, out) = run("2030-05-02T00:00:00Z", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        !entry(&mut ldap, &vis).await[0]
            .attrs
            .contains_key("pwdAccountLockedTime")
    );
    assert!(
        assocs(&c).contains(&format!("{p}|{vis}||")),
        "{:?}",
        assocs(&c)
    );
    // Extended before expiry.
    let (code, out, err) = roster(&[
        "guest",
        "extend",
        &vis,
        "-f",
        &file,
        "--months",
        "1",
        "--today",
        "2030-06-01",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        std::fs::read_to_string(&f)
            .unwrap()
            .contains("validUntil: \"2030-09-02\"")
    );
    // The host goes: the guest stays, the admin group answers.
    let text = std::fs::read_to_string(&f).unwrap();
    write(
        &text
            .replace(
                &format!("spec:\n  person: {host}\n  username: {host}\n"),
                &format!("spec:\n  person: {host}\n  username: {host}\n  locked: true\n"),
            )
            .replace(
                &format!("spec: {{givenName: Test, familyName: {host}}}"),
                &format!("spec: {{givenName: Test, familyName: {host}, locked: true}}"),
            ),
    );
    let (code, out) = run("2030-06-01T00:00:00Z", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("HostGone"), "{out}");
    assert!(
        !entry(&mut ldap, &vis).await[0]
            .attrs
            .contains_key("pwdAccountLockedTime")
    );
    // validUntil 2030-09-02 + 30 days: locked; + 60 days: purged by the guest policy
    // (tombstone, out of Slurm); the technical guest never expires.
    let (code, out) = run("2030-10-10T00:00:00Z", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        entry(&mut ldap, &vis).await[0]
            .attrs
            .contains_key("pwdAccountLockedTime")
    );
    // (The removal is recorded in the directory first, the purge follows on the next run.)
    let (code, out) = run("2030-11-02T00:00:00Z", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("purged by the guest policy"), "{out}");
    let (code, out) = run("2030-11-05T00:00:00Z", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(entry(&mut ldap, &vis).await.is_empty(), "{out}");
    let tomb = entries(
        &mut ldap,
        &tree.config.tombstones_dn(),
        &format!("(cn=Account:{vis})"),
    )
    .await;
    assert_eq!(tomb[0].attrs["uidNumber"], uid);
    assert!(
        !assocs(&c).iter().any(|r| r.contains(&format!("|{vis}|"))),
        "{:?}",
        assocs(&c)
    );
    // The purged visitor's manifest goes (declared again, it would need an active host).
    let text = std::fs::read_to_string(&f).unwrap();
    let start = text
        .find(&format!("kind: Guest\nmetadata: {{name: {vis},"))
        .unwrap();
    let doc_start = text[..start].rfind("---\n").unwrap();
    let doc_end = text[start..]
        .find("\n---\n")
        .map_or(text.len(), |i| start + i + 1);
    write(&format!("{}{}", &text[..doc_start], &text[doc_end..]));
    let (code, out) = run("2035-01-01T00:00:00Z", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        !entry(&mut ldap, &svc).await[0]
            .attrs
            .contains_key("pwdAccountLockedTime")
    );
    // Rules: too far ahead, and a sponsorship cycle of two — exit 3, nothing derived.
    let g2 = format!("{p}b");
    let g1 = format!("{p}a");
    write(
        &(base.clone()
            + &guest(&format!("{p}far"), &host, "Personal", Some("2037-06-01"))
            + &guest(&g1, &g2, "Personal", Some("2035-06-01"))
            + &guest(&g2, &g1, "Personal", Some("2035-06-01"))),
    );
    let (code, out) = run("2035-01-02T00:00:00Z", &[]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("ValidUntilTooFar"), "{out}");
    assert!(
        out.contains(&format!("sponsorship cycle {g1} → {g2} → {g1}")),
        "{out}"
    );
    assert!(entry(&mut ldap, &format!("{p}far")).await.is_empty());
    assert!(entry(&mut ldap, &g1).await.is_empty());
    tree.cleanup().await;
}

/// Every call file mode makes to a backend goes through the one instrumented wrapper: `-o json`
/// carries the metrics, and each backend's calls are there counted and timed — the directory's,
/// the accounting database's read and each sacctmgr process, and Gold's requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_mode_counts_and_times_every_backend_call() {
    let tree = TestTree::new("slurm-metrics").await;
    let dir = scratch("slurm-metrics");
    let c = cluster("met");
    let cfg = config_with_slurm(&tree, &dir, &c);
    let gold = roster_gold_server::GoldServer::start(
        "127.0.0.1:0",
        roster_gold_server::Options {
            secret: "metrics-secret".into(),
            actors: vec!["root".into()],
            chunk_rows: 3,
            readers: vec![],
        },
    )
    .await
    .unwrap();
    let key = dir.join("gold.key");
    std::fs::write(&key, "metrics-secret\n").unwrap();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "gold:\n  host: 127.0.0.1\n  port: {}\n  authKeyFile: {}\n  timeoutSeconds: 5\n",
        gold.addr().port(),
        key.display()
    ));
    std::fs::write(&cfg, text).unwrap();
    let p = format!("m{}", std::process::id() % 100000);
    let f = dir.join("site.yaml");
    std::fs::write(&f, site(&p, "")).unwrap();
    let f = f.display().to_string();
    let apply = |args: Vec<String>| async move { roster_off_runtime(args).await };
    let args = |verb: &str| -> Vec<String> {
        [verb, "-f", &f, "--config", &cfg, "-o", "json"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let (code, out) = apply(args("apply")).await;
    assert_eq!(code, 0, "{out}");
    let json_start = out.find('{').expect("a JSON document");
    let doc: serde_json::Value = serde_json::Deserializer::from_str(&out[json_start..])
        .into_iter()
        .next()
        .unwrap()
        .unwrap();
    let sum = |name: &str, labels: &[(&str, &str)]| -> f64 {
        doc["metrics"]
            .as_array()
            .expect("metrics in -o json")
            .iter()
            .filter(|s| s["name"] == name)
            .filter(|s| labels.iter().all(|(k, v)| s["labels"][*k] == *v))
            .map(|s| s["value"].as_f64().unwrap())
            .sum()
    };
    for (backend, operation) in [
        ("ldap", "bind"),
        ("ldap", "observe"),
        ("ldap", "add"),
        ("ldap", "advance counter"),
        ("slurm", "observe"),
        ("gold", "Query Organization"),
        ("gold", "Create User"),
    ] {
        let l = [("backend", backend), ("operation", operation)];
        let timed = sum("roster_backend_call_duration_seconds_count", &l);
        assert!(
            timed > 0.0,
            "{backend} {operation} timed: {}",
            doc["metrics"]
        );
        assert_eq!(
            timed,
            sum("roster_backend_operations_total", &l),
            "{backend} {operation}: every call counted once and timed once"
        );
        assert!(sum("roster_backend_call_duration_seconds_sum", &l) > 0.0);
    }
    // The sacctmgr processes that wrote: as many as the report's invocations.
    let sacctmgr = sum("roster_backend_operations_total", &[("backend", "slurm")])
        - sum(
            "roster_backend_operations_total",
            &[("backend", "slurm"), ("operation", "observe")],
        );
    assert!(sacctmgr > 0.0);
    assert_eq!(doc["slurm"]["invocations"].as_f64(), Some(sacctmgr));
    assert_eq!(
        doc["gold"]["requests"].as_f64(),
        Some(sum(
            "roster_backend_operations_total",
            &[("backend", "gold")]
        ))
    );
    // A second run writes nothing: only reads are counted (and Gold's log agrees).
    let before = gold.log().len();
    let (code, out) = apply(args("apply")).await;
    assert_eq!(code, 0, "{out}");
    let doc: serde_json::Value = serde_json::from_str(&out[out.find('{').unwrap()..]).unwrap();
    let ops: Vec<String> = doc["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == "roster_backend_operations_total")
        .map(|s| format!("{} {}", s["labels"]["backend"], s["labels"]["operation"]))
        .collect();
    let writes: Vec<&String> = ops
        .iter()
        .filter(|o| {
            !o.contains("observe")
                && !o.contains("bind")
                && !o.contains("read")
                && !o.contains("Query")
        })
        .collect();
    assert!(writes.is_empty(), "a no-op run wrote: {writes:?}");
    assert!(gold.log()[before..].iter().all(|e| e.action == "Query"));
    tree.cleanup().await;
}
