//! Operator mode end to end: the real `roster run` binary against a real control plane
//! (`hack/k8s`: kube-apiserver, etcd and kube-controller-manager, the operator with the chart's
//! RBAC) and the dev slapd, driven with a real `kubectl`.

use crate::support;

use std::process::Command;
use std::time::{Duration, Instant};

use ldap3::Mod;
use support::*;

async fn ldap_entries(tree: &TestTree, filter: &str) -> Vec<ldap3::SearchEntry> {
    entries(&mut admin().await, &tree.dn, filter).await
}

async fn wait_ldap(
    tree: &TestTree,
    what: &str,
    filter: &str,
    ok: impl Fn(&[ldap3::SearchEntry]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let e = ldap_entries(tree, filter).await;
        if ok(&e) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn members(e: &[ldap3::SearchEntry]) -> Vec<String> {
    let mut m = e
        .first()
        .and_then(|e| e.attrs.get("memberUid").cloned())
        .unwrap_or_default();
    m.sort();
    m
}

#[tokio::test]
async fn converges_the_site_follows_changes_and_then_writes_nothing() {
    let w = World::start("op-main", "").await;
    let (_op, port) = w.operator(&w.config, "solo", false);
    w.apply_site();
    w.wait_ready("accounts", 12);
    w.wait_ready("projects", 3);
    assert_eq!(
        ldap_entries(&w.tree, "(objectClass=posixAccount)")
            .await
            .len(),
        12,
        "ten accounts and two guests' accounts"
    );
    let table = w.get(&["get", "accounts", "-A"]);
    let ada = table
        .lines()
        .find(|l| l.starts_with("physics ") && l.contains(" ada "))
        .unwrap()
        .to_string();
    let cols: Vec<&str> = ada.split_whitespace().collect();
    assert!(cols[3].parse::<u32>().is_ok(), "UID column: {ada}");
    assert_eq!(&cols[5..7], ["Active", "True"], "{ada}");
    assert!(
        table.contains("Deactivated"),
        "the locked account shows its phase:\n{table}"
    );
    // A Person without displayName shows "givenName familyName"; a Guest's validity is shown
    // as declared (a date), not as the instant it ends.
    let line = |table: &str, name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name}:\n{table}"))
            .to_string()
    };
    wait_within("the people's display names", 30, || {
        let people = w.get(&["get", "people", "-n", "physics"]);
        line(&people, "ada").contains(" Ada Lovelace ")
    });
    let people = w.get(&["get", "people", "-n", "physics"]);
    assert!(
        line(&people, "juergen").contains(" Jürgen Müller "),
        "{people}"
    );
    let guests = w.get(&["get", "guests", "-n", "physics"]);
    assert!(
        line(&guests, "mvisitor").contains(" 2027-06-30 "),
        "{guests}"
    );

    // Members on the Project …
    let p = w.kubectl(
        &[
            "patch",
            "project",
            "optics",
            "-n",
            "physics",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"members":["jmueller","lwei","sodegard"]}}"#,
        ],
        None,
    );
    assert!(p.status.success());
    wait_ldap(&w.tree, "sodegard in optics", "(cn=optics)", |e| {
        // (The two guests join optics from their side.)
        members(e)
            == [
                "ada",
                "jmueller",
                "lwei",
                "mvisitor",
                "optics-sync",
                "sodegard",
            ]
    })
    .await;
    let p = w.kubectl(
        &[
            "patch",
            "project",
            "optics",
            "-n",
            "physics",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"members":["jmueller"]}}"#,
        ],
        None,
    );
    assert!(p.status.success());
    wait_ldap(&w.tree, "optics shrinks", "(cn=optics)", |e| {
        members(e) == ["ada", "jmueller", "mvisitor", "optics-sync"]
    })
    .await;
    // … and from the Account's side.
    let p = w.kubectl(
        &[
            "patch",
            "account",
            "sodegard",
            "-n",
            "physics",
            "--type",
            "json",
            "-p",
            r#"[{"op":"remove","path":"/spec/projects"}]"#,
        ],
        None,
    );
    assert!(p.status.success());
    wait_ldap(&w.tree, "sodegard leaves cosmo", "(cn=cosmo_sim)", |e| {
        members(e) == ["ada", "zdubois"]
    })
    .await;

    // Lock and unlock.
    assert!(
        w.kubectl(
            &[
                "patch",
                "account",
                "ada",
                "-n",
                "physics",
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"locked":true}}"#
            ],
            None
        )
        .status
        .success()
    );
    wait_ldap(&w.tree, "ada locked", "(uid=ada)", |e| {
        e[0].attrs
            .get("pwdAccountLockedTime")
            .is_some_and(|v| v == &["000001010000Z"])
    })
    .await;
    assert!(
        w.kubectl(
            &[
                "patch",
                "account",
                "ada",
                "-n",
                "physics",
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"locked":false}}"#
            ],
            None
        )
        .status
        .success()
    );
    wait_ldap(&w.tree, "ada unlocked", "(uid=ada)", |e| {
        !e[0].attrs.contains_key("pwdAccountLockedTime")
    })
    .await;
    wait_for("ada Active again", || {
        w.get(&[
            "get",
            "account",
            "ada",
            "-n",
            "physics",
            "-o",
            "jsonpath={.status.phase}",
        ]) == "Active"
    });

    // Delete with the finalizer: deactivated in the directory, then the object goes.
    let d = w.kubectl(
        &[
            "delete",
            "account",
            "flefevre",
            "-n",
            "chemistry",
            "--wait=true",
            "--timeout=30s",
        ],
        None,
    );
    assert!(d.status.success(), "{}", String::from_utf8_lossy(&d.stderr));
    let e = ldap_entries(&w.tree, "(uid=flefevre)").await;
    assert_eq!(e[0].attrs["pwdAccountLockedTime"], ["000001010000Z"]);
    assert!(
        e[0].attrs.contains_key("rosterDeactivatedAt") && e[0].attrs.contains_key("rosterGoneAt")
    );

    // Steady state: resyncs (every 2 s here) write nothing, in the directory or in status.
    w.wait_ready("accounts", 11);
    let writes = quiet(port, || w.api_writes());
    let before = fingerprint(&w.tree.dn).await;
    assert!(
        writes
            .iter()
            .any(|w| w.starts_with("patch accounts/status")),
        "the audit log shows the operator's status writes: {writes:?}"
    );
    passes_after(port, 2);
    assert_eq!(
        fingerprint(&w.tree.dn).await,
        before,
        "a steady-state resync wrote to the directory"
    );
    assert_eq!(
        w.api_writes(),
        writes,
        "a steady-state resync wrote to the API server"
    );
    w.tree.cleanup().await;
}

#[tokio::test]
async fn drift_is_repaired_on_resync() {
    let w = World::start("op-drift", "").await;
    let (_op, port) = w.operator(&w.config, "solo", false);
    w.apply_site();
    w.wait_ready("accounts", 12);
    // Let the change-triggered passes settle: from then on only resyncs run.
    let change_passes = quiet(port, || {
        metric_where(port, "roster_passes_total", "trigger=\"change\"")
    });
    let resyncs = metric_where(port, "roster_passes_total", "trigger=\"resync\"");
    let mut ldap = admin().await;
    let people = w.tree.config.people_dn();
    ldap.delete(&format!("uid=zdubois,{people}"))
        .await
        .unwrap()
        .success()
        .unwrap();
    ldap.modify(
        &format!("uid=ada,{people}"),
        vec![Mod::Replace("loginShell", ["/bin/false"].into())],
    )
    .await
    .unwrap()
    .success()
    .unwrap();
    ldap.modify(
        &format!("uid=lwei,{people}"),
        vec![Mod::Delete(
            "pwdAccountLockedTime",
            std::collections::HashSet::<&str>::new(),
        )],
    )
    .await
    .unwrap()
    .success()
    .unwrap();
    wait_ldap(&w.tree, "zdubois recreated", "(uid=zdubois)", |e| {
        e.len() == 1
    })
    .await;
    wait_ldap(&w.tree, "ada's shell restored", "(uid=ada)", |e| {
        e[0].attrs["loginShell"] == ["/bin/bash"]
    })
    .await;
    wait_ldap(&w.tree, "lwei locked again", "(uid=lwei)", |e| {
        e[0].attrs.contains_key("pwdAccountLockedTime")
    })
    .await;
    // The pass is counted when it finishes, a moment after its writes.
    wait_for("the repairing resync to finish", || {
        metric_where(port, "roster_passes_total", "trigger=\"resync\"") > resyncs
    });
    assert_eq!(
        metric_where(port, "roster_passes_total", "trigger=\"change\""),
        change_passes,
        "the repair came from a resync, not a change"
    );
    assert!(metric(port, "roster_drift_repairs_total") >= 3.0);
    wait_for("the repair reported in status", || {
        w.get(&[
            "get",
            "account",
            "ada",
            "-n",
            "physics",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"LdapSynced\")].reason}",
        ]) == "DriftRepaired"
    });
    let message = w.get(&[
        "get",
        "account",
        "ada",
        "-n",
        "physics",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"LdapSynced\")].message}",
    ]);
    assert!(message.contains("loginShell"), "{message}");
    w.tree.cleanup().await;
}

/// Issue 26: between resyncs a pass plans from the directory as its change feed keeps it (the
/// entries a pass wrote read again, the rest followed), not from a full read; each resync reads
/// it whole, and finds nothing the feed missed — a write behind Roster's back included.
#[tokio::test]
async fn passes_between_resyncs_plan_from_the_followed_directory() {
    let w = World::start("op-follow", "").await;
    let (_op, port) = w.operator(&w.config, "solo", false);
    w.apply_site();
    w.wait_ready("accounts", 12);
    let observations = |source: &str| {
        metric_where(
            port,
            "roster_directory_observations_total",
            &format!("source=\"{source}\""),
        )
    };
    let passes = |trigger: &str| {
        metric_where(
            port,
            "roster_passes_total",
            &format!("trigger=\"{trigger}\""),
        )
    };
    // Every pass but a resync planned from the feed. (Sampled in this order, a resync may
    // have read the directory and not finished yet: one read more than resyncs.)
    let check = |when: &str| {
        let read = observations("read");
        let resyncs = passes("resync");
        assert!(
            read <= resyncs + 1.0,
            "{when}: {read} full reads, {resyncs} resyncs"
        );
        let others = passes("change") + passes("timer");
        let feed = observations("feed");
        assert!(
            feed >= others,
            "{when}: {feed} passes from the feed of {others} not resyncs"
        );
        assert!(others >= 1.0, "{when}: no pass but resyncs");
    };
    check("converged");
    let people = w.tree.config.people_dn();
    for (i, list) in [
        r#"["jmueller","lwei","sodegard"]"#,
        r#"["jmueller"]"#,
        r#"["jmueller","sodegard"]"#,
    ]
    .iter()
    .enumerate()
    {
        // Whichever pass takes the change (a change request can join a resync's pass).
        let all = || metric(port, "roster_passes_total");
        let before = all();
        let patch = format!(r#"{{"spec":{{"members":{list}}}}}"#);
        let p = w.kubectl(
            &[
                "patch", "project", "optics", "-n", "physics", "--type", "merge", "-p", &patch,
            ],
            None,
        );
        assert!(p.status.success());
        let want = list.contains("sodegard");
        wait_ldap(
            &w.tree,
            &format!("change {i} in optics"),
            "(cn=optics)",
            |e| members(e).contains(&"sodegard".to_string()) == want,
        )
        .await;
        wait_for("the change's pass to finish", || all() > before);
        check(&format!("after change {i}"));
    }
    // Right after a resync (the next is a resync interval away), a write behind Roster's back:
    // the feed brings it, the next resync's full read agrees with the feed, and the write is
    // repaired.
    let resyncs = passes("resync");
    wait_for("a resync", || passes("resync") > resyncs);
    let mut ldap = admin().await;
    ldap.modify(
        &format!("uid=ada,{people}"),
        vec![Mod::Replace("loginShell", ["/bin/false"].into())],
    )
    .await
    .unwrap()
    .success()
    .unwrap();
    wait_ldap(&w.tree, "ada's shell restored", "(uid=ada)", |e| {
        e[0].attrs["loginShell"] == ["/bin/bash"]
    })
    .await;
    let resyncs = passes("resync");
    wait_for("two more resyncs", || passes("resync") >= resyncs + 2.0);
    assert_eq!(
        metric(port, "roster_feed_differences_total"),
        0.0,
        "a resync's full read found what the feed had not brought"
    );
    check("after the repair");
    w.tree.cleanup().await;
}

#[tokio::test]
async fn usernames_are_unique_across_namespaces_and_invalid_objects_are_not_retried_hot() {
    let w = World::start("op-unique", "").await;
    let (_op, port) = w.operator(&w.config, "solo", false);
    // The first to claim a username keeps it; a later claim from another namespace is a
    // Conflict. (Declared in one apply, which is first depends on which pass sees it.)
    let first = person_account("chemistry", "sam", "")
        + "\n"
        + &person_account("physics", "orphan", "")
            .replace("  person: orphan\n", "  person: nobody\n");
    assert!(
        w.kubectl(&["apply", "-f", "-"], Some(&first))
            .status
            .success()
    );
    let phases = || {
        w.get(&["get", "accounts", "-A", "-o", "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}={.status.phase}{\" \"}{end}"])
    };
    wait_for("the first claim", || {
        phases().contains("chemistry/sam=Active")
    });
    let second = person_account("physics", "sam", "");
    assert!(
        w.kubectl(&["apply", "-f", "-"], Some(&second))
            .status
            .success()
    );
    wait_for("the second claim refused", || {
        phases().contains("physics/sam=Conflict")
    });
    assert!(phases().contains("chemistry/sam=Active"), "{}", phases());
    wait_for("orphan Invalid", || {
        w.get(&[
            "get",
            "account",
            "orphan",
            "-n",
            "physics",
            "-o",
            "jsonpath={.status.phase}",
        ]) == "Invalid"
    });
    let e = ldap_entries(&w.tree, "(uid=sam)").await;
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].attrs["rosterOwner"], ["dev/chemistry/Account/sam"]);
    let message = w.get(&[
        "get",
        "account",
        "orphan",
        "-n",
        "physics",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Invalid\")].message}",
    ]);
    assert!(
        message.contains("spec.person: no Person \"nobody\""),
        "{message}"
    );
    // No hot loop: once the status writes have settled, over three more passes (resyncs) the
    // reconcile count barely moves. A hot loop never settles, and fails here too.
    let before = quiet(port, || metric(port, "roster_reconciles_total"));
    passes_after(port, 3);
    let after = metric(port, "roster_reconciles_total");
    assert!(
        after - before <= 2.0,
        "reconciles went from {before} to {after} while nothing changed"
    );
    w.tree.cleanup().await;
}

#[tokio::test]
async fn a_killed_operator_restarts_and_converges_without_duplicates() {
    let w = World::start("op-kill", "").await;
    declare_people(&w, "k", 400);
    let (mut op, _) = w.operator(&w.config, "first", false);
    // Kill it (SIGKILL) while it is writing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while ldap_entries(&w.tree, "(objectClass=posixAccount)")
        .await
        .is_empty()
    {
        assert!(Instant::now() < deadline, "nothing written");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    op.0.kill().unwrap();
    let _ = op.0.wait();
    let partial = ldap_entries(&w.tree, "(objectClass=posixAccount)")
        .await
        .len();
    assert!(
        partial < 400,
        "the operator finished before it was killed; the test proves nothing"
    );
    let (_again, _) = w.operator(&w.config, "second", false);
    w.wait_ready("accounts", 400);
    let accounts = ldap_entries(&w.tree, "(objectClass=posixAccount)").await;
    assert_eq!(accounts.len(), 400, "killed after {partial}");
    let uids: std::collections::BTreeSet<&String> =
        accounts.iter().map(|e| &e.attrs["uidNumber"][0]).collect();
    assert_eq!(uids.len(), 400, "a uid was given twice");
    let groups = ldap_entries(&w.tree, "(objectClass=posixGroup)").await;
    assert_eq!(groups.len(), 400, "one personal group each, none twice");
    w.tree.cleanup().await;
}

/// Declares `n` Persons with an Account each (`<prefix>000` …) in physics.
fn declare_people(w: &World, prefix: &str, n: usize) {
    let mut docs = String::new();
    for i in 0..n {
        docs.push_str(&person_account("physics", &format!("{prefix}{i:03}"), ""));
        docs.push('\n');
    }
    assert!(
        w.kubectl(&["apply", "-f", "-"], Some(&docs))
            .status
            .success()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_on_many_new_objects_opens_a_bounded_number_of_connections() {
    let w = World::start("op-conns", "").await;
    declare_people(&w, "c", 150);
    // The operator alone talks through the proxy, which counts the connections it accepts.
    let connections = || {
        w.cluster.fault("GET", "/_fault/report")["connections"]
            .as_u64()
            .unwrap()
    };
    let before = connections();
    // Every object is new to the operator: 300 finalizers to put on at once.
    let log = w.dir.join("conns.log");
    let (_op, _) = operator_process(
        &w.config,
        &w.cluster.proxied_kubeconfig,
        &log,
        "conns",
        false,
        &[],
    );
    w.wait_ready("accounts", 150);
    // Each fault control request above and below is one connection of its own.
    let operators = connections() - before - 1;
    // Its watches, the bounded finalizer writes and a connection for the status and Event
    // writes; one connection per object (300) without the bound.
    assert!(operators > 0, "the operator connected");
    assert!(
        operators <= 40,
        "the operator opened {operators} connections"
    );
    w.tree.cleanup().await;
}

/// A second writer in the dev directory (`cn=replica-b`), with write access granted over ldapi.
async fn second_writer() -> String {
    let env = dev_env();
    let dn = format!("cn=replica-b,{}", env["LDAP_BASE_DN"]);
    let (conn, mut cfg) = ldap3::LdapConnAsync::new(&env["LDAPI_URI"]).await.unwrap();
    ldap3::drive!(conn);
    cfg.sasl_external_bind().await.unwrap().success().unwrap();
    let (rs, _) = cfg
        .search(
            "olcDatabase={1}mdb,cn=config",
            ldap3::Scope::Base,
            "(objectClass=*)",
            vec!["olcAccess"],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    let acl = ldap3::SearchEntry::construct(rs.into_iter().next().unwrap());
    if !acl.attrs["olcAccess"].iter().any(|a| a.contains(&dn)) {
        let rule = format!("{{0}}to * by dn.exact=\"{dn}\" write by * break");
        cfg.modify(
            "olcDatabase={1}mdb,cn=config",
            vec![Mod::Add("olcAccess", [rule.as_str()].into())],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    }
    let mut ldap = admin().await;
    let _ = ldap
        .add(
            &dn,
            vec![
                (
                    "objectClass",
                    ["organizationalRole", "simpleSecurityObject"].into(),
                ),
                ("cn", ["replica-b"].into()),
                ("userPassword", [env["LDAP_BIND_PASSWORD"].as_str()].into()),
            ],
        )
        .await;
    dn
}

#[tokio::test]
async fn with_two_replicas_only_the_leader_writes() {
    let w = World::start("op-ha", "").await;
    let b_dn = second_writer().await;
    let a_dn = w.tree.config.ldap.bind_dn.clone();
    let b_config = w.dir.join("replica-b.yaml");
    std::fs::write(
        &b_config,
        std::fs::read_to_string(&w.config)
            .unwrap()
            .replace(&format!("bindDN: {a_dn}"), &format!("bindDN: {b_dn}")),
    )
    .unwrap();
    let (mut alpha, alpha_port) = w.operator(&w.config, "alpha", true);
    let (mut beta, beta_port) = w.operator(&b_config, "beta", true);
    w.apply_site();
    w.wait_ready("accounts", 12);
    let holder = w.get(&[
        "get",
        "lease",
        "roster-leader",
        "-n",
        RELEASE_NAMESPACE,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    let (leader_dn, other_dn, standby) = match holder.as_str() {
        "alpha" => (a_dn.clone(), b_dn.clone(), beta_port),
        "beta" => (b_dn.clone(), a_dn.clone(), alpha_port),
        other => panic!("unexpected lease holder {other:?}"),
    };
    // The standby is warm and idle: it follows the directory (its first reading done) and has
    // run no pass and written no status.
    wait_for("the standby's first reading of the directory", || {
        metric(standby, "roster_directory_observations_total") == 0.0
            && metric_where(standby, "roster_leader", "") == 0.0
            && std::fs::read_to_string(w.dir.join(format!(
                "{}.log",
                if holder == "alpha" { "beta" } else { "alpha" }
            )))
            .is_ok_and(|l| l.contains("following the directory's changes"))
    });
    assert_eq!(metric(standby, "roster_passes_total"), 0.0);
    assert_eq!(metric(standby, "roster_status_writes_total"), 0.0);
    let written = ldap_entries(
        &w.tree,
        "(|(objectClass=posixAccount)(objectClass=posixGroup))",
    )
    .await;
    assert_eq!(
        written.len(),
        27,
        "10 accounts and 2 guests' accounts, their personal groups, 3 projects"
    );
    for e in &written {
        assert_eq!(
            e.attrs["modifiersName"],
            [leader_dn.to_lowercase()],
            "{} was written by someone else",
            e.dn
        );
    }
    // The leader dies; the standby takes the Lease and carries on.
    if holder == "alpha" {
        alpha.0.kill().unwrap();
    } else {
        beta.0.kill().unwrap();
    }
    assert!(
        w.kubectl(
            &[
                "patch",
                "account",
                "ada",
                "-n",
                "physics",
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"locked":true}}"#
            ],
            None
        )
        .status
        .success()
    );
    wait_ldap(&w.tree, "ada locked by the new leader", "(uid=ada)", |e| {
        e[0].attrs.contains_key("pwdAccountLockedTime")
    })
    .await;
    let ada = ldap_entries(&w.tree, "(uid=ada)").await;
    assert_eq!(ada[0].attrs["modifiersName"], [other_dn.to_lowercase()]);
    // Its first pass was the takeover's, planned from the directory it had followed.
    wait_for("the takeover pass counted", || {
        metric_where(standby, "roster_passes_total", "trigger=\"takeover\"") == 1.0
    });
    assert!(
        metric_where(
            standby,
            "roster_directory_observations_total",
            "source=\"feed\""
        ) >= 1.0
    );
    w.tree.cleanup().await;
}

/// A cluster of the test's own in slurmdbd and the config lines for it.
fn slurm_cluster(name: &str) -> (String, String) {
    let env = dev_env();
    let cluster = format!("{name}{}", std::process::id());
    let add = Command::new("sacctmgr")
        .args(["-i", "add", "cluster", &cluster])
        .env("SLURM_CONF", &env["SLURM_CONF"])
        .output()
        .unwrap();
    assert!(add.status.success() || String::from_utf8_lossy(&add.stdout).contains("Nothing new"));
    let dir = scratch(&format!("op-{name}-url"));
    let url = dir.join("ro.url");
    std::fs::write(&url, &env["SLURMDB_RO_URL"]).unwrap();
    let extra = format!(
        "slurm:\n  clusters: [{cluster}]\n  slurmConf: {}\n  databaseUrlFile: {}\n",
        env["SLURM_CONF"],
        url.display()
    );
    (cluster, extra)
}

/// `account|user|maxjobs|maxsubmit` lines of a cluster's associations.
fn slurm_assocs(cluster: &str) -> String {
    let out = Command::new("sacctmgr")
        .args([
            "-nP",
            "show",
            "assoc",
            &format!("cluster={cluster}"),
            "format=Account,User,MaxJobs,MaxSubmit",
        ])
        .env("SLURM_CONF", &dev_env()["SLURM_CONF"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test]
async fn the_operator_converges_slurm_after_ldap_and_reports_it() {
    let (cluster, extra) = slurm_cluster("top");
    let w = World::start("op-slurm", &extra).await;
    let (_op, port) = w.operator(&w.config, "solo", false);
    // Unique project names: Slurm accounts are global across clusters.
    let p = format!("o{}", std::process::id() % 100000);
    let docs = format!(
        "---\napiVersion: roster.io/v1alpha1\nkind: Project\nmetadata: {{name: {p}, namespace: physics}}\nspec:\n  leaders: [{p}u1]\n  members: [{p}u2]\n"
    ) + &person_account("physics", &format!("{p}u1"), "")
        + "\n"
        + &person_account("physics", &format!("{p}u2"), "");
    assert!(
        w.kubectl(&["apply", "-f", "-"], Some(&docs))
            .status
            .success()
    );
    w.wait_ready("accounts", 2);
    w.wait_ready("projects", 1);
    let synced = w.get(&[
        "get",
        "account",
        &format!("{p}u1"),
        "-n",
        "physics",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"SlurmSynced\")].status}",
    ]);
    assert_eq!(synced, "True");
    let show = || slurm_assocs(&cluster);
    assert!(show().contains(&format!("{p}|{p}u2||")), "{}", show());
    // Locking in Kubernetes blocks submission in Slurm.
    assert!(
        w.kubectl(
            &[
                "patch",
                "account",
                &format!("{p}u2"),
                "-n",
                "physics",
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"locked":true}}"#
            ],
            None
        )
        .status
        .success()
    );
    wait_for("u2 blocked in Slurm", || {
        show().contains(&format!("{p}|{p}u2|0|0"))
    });
    wait_metric(
        port,
        "roster_backend_operations_total",
        "backend=\"slurm\"",
        1.0,
    );
    // The passes' calls are timed, per backend and operation: the accounting database's read,
    // the sacctmgr processes, the directory's.
    for (backend, operation) in [
        ("slurm", "observe"),
        ("slurm", "modify user"),
        ("ldap", "observe"),
        ("ldap", "modify"),
    ] {
        let labels = format!("backend=\"{backend}\",operation=\"{operation}\"");
        wait_metric(
            port,
            "roster_backend_call_duration_seconds_count",
            &labels,
            1.0,
        );
        assert!(
            metric_where(port, "roster_backend_call_duration_seconds_sum", &labels) > 0.0,
            "{backend} {operation} took time"
        );
    }
    wait_for("a SlurmUpdated Event on the project", || {
        w.get(&[
            "get",
            "events.events.k8s.io",
            "-n",
            "physics",
            "-o",
            "jsonpath={range .items[*]}{.reason}/{.regarding.name}{\" \"}{end}",
        ])
        .contains(&format!("SlurmUpdated/{p}"))
    });
    w.tree.cleanup().await;
}

#[tokio::test]
async fn a_deleted_account_is_purged_at_its_recorded_time_even_across_a_restart_and_comes_back_with_its_uid()
 {
    // A short grace so the real timers can be watched; the planner's arithmetic is the same.
    let w = World::start("op-purge", "gracePeriods:\n  accountPurgeAfter: 4s\n").await;
    let (op, _) = w.operator(&w.config, "first", false);
    w.apply_site();
    w.wait_ready("accounts", 12);
    let uid = ldap_entries(&w.tree, "(uid=zdubois)").await[0].attrs["uidNumber"][0].clone();
    let d = w.kubectl(
        &[
            "delete",
            "account",
            "zdubois",
            "-n",
            "physics",
            "--wait=true",
            "--timeout=30s",
        ],
        None,
    );
    assert!(d.status.success());
    let e = &ldap_entries(&w.tree, "(uid=zdubois)").await[0];
    assert_eq!(e.attrs["pwdAccountLockedTime"], ["000001010000Z"]);
    let purge_at = e.attrs["rosterPurgeAt"][0].clone();
    // The operator dies during the grace period and comes back: the directory remembers.
    drop(op);
    let (_op, _) = w.operator(&w.config, "second", false);
    wait_ldap(&w.tree, "the purge", "(uid=zdubois)", |e| {
        e.iter().all(|e| {
            e.attrs["objectClass"]
                .iter()
                .any(|c| c == "rosterTombstone")
        })
    })
    .await;
    let tomb = ldap_entries(&w.tree, "(cn=Account:zdubois)").await;
    assert_eq!(tomb.len(), 1, "purged once");
    assert_eq!(tomb[0].attrs["uidNumber"], std::slice::from_ref(&uid));
    let purged_at = tomb[0].attrs["rosterPurgeAt"][0].clone();
    assert!(
        purged_at >= purge_at,
        "not before the recorded time: {purged_at} < {purge_at}"
    );
    // Declared again by the same Person: the same username and uid.
    w.apply_site();
    w.wait_ready("accounts", 12);
    let back = ldap_entries(&w.tree, "(&(uid=zdubois)(objectClass=posixAccount))").await;
    assert_eq!(back[0].attrs["uidNumber"], [uid]);
    w.tree.cleanup().await;
}

#[tokio::test]
async fn deleting_most_accounts_in_the_cluster_is_held_and_a_rejection_keeps_them() {
    let w = World::start("op-guard", "").await;
    let (_op, port) = w.operator(&w.config, "solo", false);
    w.apply_site();
    w.wait_ready("accounts", 12);
    // 80 % of the declared accounts (8 of the 10 that are not guests') are deleted at once.
    let victims = ["ada", "jmueller", "sodegard", "zdubois"]
        .iter()
        .map(|n| ("physics", *n))
        .chain(
            ["amunoz", "bastrom", "cnguyen", "flefevre"]
                .iter()
                .map(|n| ("chemistry", *n)),
        );
    for (ns, name) in victims {
        assert!(
            w.kubectl(&["delete", "account", name, "-n", ns, "--wait=false"], None)
                .status
                .success()
        );
    }
    // Two passes that began after the deletions (each deletion also triggers one).
    passes_after(port, 2);
    let locked = ldap_entries(
        &w.tree,
        "(&(objectClass=posixAccount)(pwdAccountLockedTime=*)(rosterGoneAt=*))",
    )
    .await
    .len();
    assert_eq!(
        locked, 2,
        "the guard allows two removals (10 % of 12 managed accounts, rounded up) per window"
    );
    let deleting = w.get(&[
        "get",
        "accounts",
        "-A",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {end}",
    ]);
    assert_eq!(
        deleting.split_whitespace().count(),
        4 + 6,
        "the held ones keep their finalizer: {deleting}"
    );
    let held = [
        ("physics", "ada"),
        ("physics", "jmueller"),
        ("physics", "sodegard"),
        ("physics", "zdubois"),
        ("chemistry", "amunoz"),
        ("chemistry", "bastrom"),
        ("chemistry", "cnguyen"),
        ("chemistry", "flefevre"),
    ]
    .iter()
    .filter(|(ns, n)| {
        w.get(&[
            "get",
            "account",
            n,
            "-n",
            ns,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Guarded\")].reason}",
        ]) == "MassDeactivationGuard"
    })
    .count();
    assert_eq!(held, 6, "the Guarded condition is on each held object");
    // The gauge is set when the pass that wrote those conditions ends.
    wait_metric(port, "roster_guard_held", "", 6.0);
    // Reject: the held finalizers go, nothing is written, the identities stay Active.
    let before = fingerprint(&w.tree.dn).await;
    let reject = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["guard", "reject", "--kubernetes", "--config"])
        .arg(&w.config)
        .env("KUBECONFIG", &w.cluster.kubeconfig)
        .output()
        .unwrap();
    assert!(
        reject.status.success(),
        "{}",
        String::from_utf8_lossy(&reject.stderr)
    );
    assert!(String::from_utf8_lossy(&reject.stdout).contains("released 6 held finalizer(s)"));
    wait_for("the held objects gone", || {
        w.get(&[
            "get",
            "accounts",
            "-A",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {end}",
        ])
        .split_whitespace()
        .count()
            == 4
    });
    passes_after(port, 2);
    assert_eq!(
        fingerprint(&w.tree.dn).await,
        before,
        "a rejection writes nothing to the directory"
    );
    // The manifests come back: the same identities are re-claimed, Active.
    w.apply_site();
    w.wait_ready("accounts", 12);
    let active = ldap_entries(&w.tree, "(&(objectClass=posixAccount)(rosterState=Active))")
        .await
        .len();
    assert_eq!(
        active, 11,
        "everyone is Active again but lwei, who is locked"
    );
    w.tree.cleanup().await;
}

#[tokio::test]
async fn validity_ends_on_time_through_the_requeue_timer() {
    let w = World::start("op-expiry", "").await;
    let (_op, _) = w.operator(&w.config, "solo", false);
    let until = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(5))
        .unwrap();
    let until = until.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let docs = person_account("physics", "tempo", &format!("  validUntil: \"{until}\"\n"));
    assert!(
        w.kubectl(&["apply", "-f", "-"], Some(&docs))
            .status
            .success()
    );
    w.wait_ready("accounts", 1);
    let e = &ldap_entries(&w.tree, "(uid=tempo)").await[0];
    assert!(
        !e.attrs.contains_key("pwdAccountLockedTime"),
        "valid until {until}"
    );
    assert!(e.attrs.contains_key("shadowExpire"));
    let expiring = w.get(&[
        "get",
        "account",
        "tempo",
        "-n",
        "physics",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Expiring\")].status}",
    ]);
    assert_eq!(expiring, "True", "announced ahead of time");
    // Nothing changes in Kubernetes: the timer alone deactivates it.
    wait_ldap(&w.tree, "expiry", "(uid=tempo)", |e| {
        e[0].attrs.contains_key("pwdAccountLockedTime")
    })
    .await;
    wait_for("phase Deactivated", || {
        w.get(&[
            "get",
            "account",
            "tempo",
            "-n",
            "physics",
            "-o",
            "jsonpath={.status.phase}",
        ]) == "Deactivated"
    });
    let reason = w.get(&[
        "get",
        "account",
        "tempo",
        "-n",
        "physics",
        "-o",
        "jsonpath={.status.deactivationReason}",
    ]);
    assert_eq!(reason, "Expired");
    w.tree.cleanup().await;
}

#[tokio::test]
async fn an_approval_lets_the_held_deletions_through() {
    let w = World::start("op-approve", "").await;
    let (_op, _) = w.operator(&w.config, "solo", false);
    w.apply_site();
    w.wait_ready("accounts", 12);
    for (ns, name) in [
        ("physics", "ada"),
        ("physics", "jmueller"),
        ("physics", "sodegard"),
        ("chemistry", "amunoz"),
        ("chemistry", "bastrom"),
    ] {
        assert!(
            w.kubectl(&["delete", "account", name, "-n", ns, "--wait=false"], None)
                .status
                .success()
        );
    }
    wait_for("three held by the guard", || {
        w.get(&[
            "get",
            "accounts",
            "-A",
            "-o",
            "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Guarded\")].status} {end}",
        ])
        .split_whitespace()
        .filter(|s| *s == "True")
        .count()
            == 3
    });
    assert_eq!(
        ldap_entries(&w.tree, "(&(objectClass=posixAccount)(rosterGoneAt=*))")
            .await
            .len(),
        2,
        "two removals allowed before the approval (10 % of 12 managed accounts, rounded up)"
    );
    let approve = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["guard", "approve", "--config"])
        .arg(&w.config)
        .output()
        .unwrap();
    assert!(
        approve.status.success(),
        "{}",
        String::from_utf8_lossy(&approve.stderr)
    );
    // The approval is read from the directory on the next pass (the resync here runs every 2 s).
    wait_for("the held deletions done", || {
        w.get(&[
            "get",
            "accounts",
            "-A",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {end}",
        ])
        .split_whitespace()
        .count()
            == 7
    });
    let gone = ldap_entries(
        &w.tree,
        "(&(objectClass=posixAccount)(rosterGoneAt=*)(pwdAccountLockedTime=*))",
    )
    .await
    .len();
    assert_eq!(gone, 5);
    w.tree.cleanup().await;
}

#[tokio::test]
async fn an_account_walks_every_transition_in_ldap_and_slurm_with_an_injected_clock() {
    let (cluster, slurm) = slurm_cluster("twalk");
    // The guard is tested on its own; here one account's removals must not trip it.
    let extra = format!("{slurm}guard:\n  maxCount: 10\n  maxPercent: 100\n");
    let w = World::start("op-walk", &extra).await;
    let offset = w.dir.join("clock-offset");
    let set_clock = |days: i64| std::fs::write(&offset, (days * 86_400).to_string()).unwrap();
    set_clock(0);
    let (_op, port) = w.operator_with(
        &w.config,
        "solo",
        false,
        &["--clock-offset-file", &offset.display().to_string()],
    );
    let p = format!("w{}", std::process::id() % 100000);
    let user = format!("{p}u");
    let day = |d: i64| {
        (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * d))
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let project = format!(
        "---\napiVersion: roster.io/v1alpha1\nkind: Project\nmetadata: {{name: {p}, namespace: physics}}\nspec:\n  members: [{user}]\n"
    );
    let account =
        |valid: &str| person_account("physics", &user, &format!("  validUntil: \"{valid}\"\n"));
    let apply = |docs: &str| {
        let out = w.kubectl(&["apply", "-f", "-"], Some(docs));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let phase = || {
        w.get(&[
            "get",
            "account",
            &user,
            "-n",
            "physics",
            "-o",
            "jsonpath={.status.phase}",
        ])
    };
    let active_in_slurm = format!("{p}|{user}||");
    let blocked_in_slurm = format!("{p}|{user}|0|0");
    let slurm_has = |row: &str| slurm_assocs(&cluster).lines().any(|l| l == row);
    let ldap_locked = async || {
        ldap_entries(
            &w.tree,
            &format!("(&(uid={user})(objectClass=posixAccount))"),
        )
        .await[0]
            .attrs
            .contains_key("pwdAccountLockedTime")
    };

    // Pending → Active.
    apply(&(project.clone() + &account(&day(30))));
    w.wait_ready("accounts", 1);
    let uid =
        ldap_entries(&w.tree, &format!("(uid={user})")).await[0].attrs["uidNumber"][0].clone();
    assert!(!ldap_locked().await);
    wait_for("the association", || slurm_has(&active_in_slurm));

    // Expiry: 31 days later by the clock, nothing changed in Kubernetes.
    set_clock(31);
    wait_for("expiry", || phase() == "Deactivated");
    assert!(ldap_locked().await);
    wait_for("blocked in Slurm", || slurm_has(&blocked_in_slurm));
    // Extended: active again.
    apply(&account(&day(90)));
    wait_for("extension", || phase() == "Active");
    assert!(!ldap_locked().await);
    wait_for("unblocked in Slurm", || slurm_has(&active_in_slurm));

    // Lock and unlock.
    let lock = |on: bool| {
        let patch = format!(r#"{{"spec":{{"locked":{on}}}}}"#);
        let out = w.kubectl(
            &[
                "patch", "account", &user, "-n", "physics", "--type", "merge", "-p", &patch,
            ],
            None,
        );
        assert!(out.status.success());
    };
    lock(true);
    wait_for("lock", || phase() == "Deactivated");
    assert!(ldap_locked().await);
    wait_for("locked in Slurm", || slurm_has(&blocked_in_slurm));
    lock(false);
    wait_for("unlock", || phase() == "Active");
    assert!(!ldap_locked().await);
    wait_for("unlocked in Slurm", || slurm_has(&active_in_slurm));

    // Deleted → Deactivated (the association stays, blocked) → declared again → Active, same uid.
    let delete = || {
        let out = w.kubectl(
            &[
                "delete",
                "account",
                &user,
                "-n",
                "physics",
                "--wait=true",
                "--timeout=30s",
            ],
            None,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    delete();
    let e = &ldap_entries(&w.tree, &format!("(uid={user})")).await[0];
    assert_eq!(e.attrs["pwdAccountLockedTime"], ["000001010000Z"]);
    assert!(e.attrs.contains_key("rosterGoneAt"));
    wait_for("blocked after deletion", || slurm_has(&blocked_in_slurm));
    apply(&account(&day(90)));
    wait_for("reactivation", || phase() == "Active");
    let e = &ldap_entries(&w.tree, &format!("(uid={user})")).await[0];
    assert_eq!(e.attrs["uidNumber"], std::slice::from_ref(&uid));
    assert!(!e.attrs.contains_key("rosterGoneAt"));
    assert!(!ldap_locked().await);
    wait_for("unblocked after reactivation", || {
        slurm_has(&active_in_slurm)
    });

    // Deleted → purged at its time (90 days of grace by default): tombstone, gone from Slurm.
    delete();
    let purge_at =
        ldap_entries(&w.tree, &format!("(uid={user})")).await[0].attrs["rosterPurgeAt"][0].clone();
    set_clock(31 + 89);
    passes_after(port, 2);
    assert!(
        ldap_entries(
            &w.tree,
            &format!("(&(uid={user})(objectClass=posixAccount))")
        )
        .await
        .len()
            == 1,
        "not purged before {purge_at}"
    );
    set_clock(31 + 91);
    wait_ldap(&w.tree, "the purge", &format!("(uid={user})"), |e| {
        e.len() == 1
            && e[0].attrs["objectClass"]
                .iter()
                .any(|c| c == "rosterTombstone")
    })
    .await;
    wait_for("gone from Slurm", || {
        !slurm_assocs(&cluster).contains(&format!("|{user}|"))
    });

    // Someone else asks for the purged username: Conflict, nothing written.
    let stranger = format!(
        "---\napiVersion: roster.io/v1alpha1\nkind: Person\nmetadata: {{name: {p}x, namespace: chemistry}}\nspec: {{givenName: Other, familyName: Person}}\n---\napiVersion: roster.io/v1alpha1\nkind: Account\nmetadata: {{name: {user}, namespace: chemistry}}\nspec:\n  person: {p}x\n  username: {user}\n"
    );
    apply(&stranger);
    wait_for("Conflict", || {
        w.get(&[
            "get",
            "account",
            &user,
            "-n",
            "chemistry",
            "-o",
            "jsonpath={.status.phase}",
        ]) == "Conflict"
    });
    assert!(
        ldap_entries(
            &w.tree,
            &format!("(&(uid={user})(objectClass=posixAccount))")
        )
        .await
        .is_empty()
    );
    let out = w.kubectl(
        &[
            "delete",
            "account",
            &user,
            "-n",
            "chemistry",
            "--wait=true",
            "--timeout=30s",
        ],
        None,
    );
    assert!(out.status.success());

    // Declared again by the same Person: the same username and uid, back in Slurm.
    apply(&account(&day(200)));
    wait_for("re-creation", || phase() == "Active");
    let back = ldap_entries(
        &w.tree,
        &format!("(&(uid={user})(objectClass=posixAccount))"),
    )
    .await;
    assert_eq!(back[0].attrs["uidNumber"], [uid]);
    wait_for("back in Slurm", || slurm_has(&active_in_slurm));
    // Transitions that came due are no drift: nobody wrote behind Roster's back.
    assert_eq!(metric(port, "roster_drift_repairs_total"), 0.0);
    w.tree.cleanup().await;
}

/// The Gold test server serves on the runtime's workers while the test blocks in its polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_converges_gold_and_an_unreachable_gold_fails_only_gold() {
    let dir = scratch("op-gold-server");
    let key = dir.join("gold.key");
    std::fs::write(&key, "operator-test-secret\n").unwrap();
    let gold = roster_gold_server::GoldServer::start(
        "127.0.0.1:0",
        roster_gold_server::Options::new("operator-test-secret"),
    )
    .await
    .expect("the Gold test server starts");
    let port = gold.addr().port();
    let extra = format!(
        "gold:\n  host: 127.0.0.1\n  port: {port}\n  authKeyFile: {}\n  timeoutSeconds: 2\n  attempts: 1\n",
        key.display()
    );
    let w = World::start("op-gold", &extra).await;
    let (_op, port) = w.operator(&w.config, "solo", false);
    let docs = "---\napiVersion: roster.io/v1alpha1\nkind: Project\nmetadata: {name: gp, namespace: physics}\nspec:\n  leaders: [gpa]\n  members: [gpb]\n  gold:\n    allocations:\n      - {amount: 100, start: \"2030-01-01\", end: \"2030-12-31\"}\n".to_string()
        + &person_account("physics", "gpa", "")
        + "\n"
        + &person_account("physics", "gpb", "");
    assert!(
        w.kubectl(&["apply", "-f", "-"], Some(&docs))
            .status
            .success()
    );
    w.wait_ready("accounts", 2);
    w.wait_ready("projects", 1);
    let cond = |kind: &str, name: &str, field: &str| {
        w.get(&[
            "get",
            kind,
            name,
            "-n",
            "physics",
            "-o",
            &format!("jsonpath={{.status.conditions[?(@.type==\"GoldSynced\")].{field}}}"),
        ])
    };
    assert_eq!(cond("account", "gpa", "status"), "True");
    assert_eq!(cond("project", "gp", "status"), "True");
    let show = || {
        let out = Command::new(env!("CARGO_BIN_EXE_roster"))
            .args(["gold", "--config"])
            .arg(&w.config)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let shown = show();
    assert!(shown.contains("gpa*") && shown.contains("gpb"), "{shown}");
    wait_metric(
        port,
        "roster_backend_operations_total",
        "backend=\"gold\"",
        1.0,
    );
    // Every Gold call the pass made is timed too (one instrumented wrapper counts and times):
    // both read from one scrape, as a pass may be calling meanwhile.
    let query = "backend=\"gold\",operation=\"Query Allocation\"";
    wait_metric(
        port,
        "roster_backend_call_duration_seconds_count",
        query,
        1.0,
    );
    let text = scrape(port);
    assert_eq!(
        metric_in(&text, "roster_backend_call_duration_seconds_count", query),
        metric_in(&text, "roster_backend_operations_total", query),
        "each call counted once and timed once"
    );
    // A lock reaches Gold: the user and its membership are suspended.
    let lock = r#"{"spec":{"locked":true}}"#;
    assert!(
        w.kubectl(
            &[
                "patch", "account", "gpb", "-n", "physics", "--type", "merge", "-p", lock
            ],
            None
        )
        .status
        .success()
    );
    wait_for("gpb inactive in Gold", || {
        show()
            .lines()
            .any(|l| l.starts_with("gpb ") && l.contains("INACTIVE"))
    });
    // Gold goes away: only GoldSynced fails; the directory still follows the manifests.
    drop(gold);
    let unlock = r#"{"spec":{"locked":false}}"#;
    assert!(
        w.kubectl(
            &[
                "patch", "account", "gpb", "-n", "physics", "--type", "merge", "-p", unlock
            ],
            None
        )
        .status
        .success()
    );
    wait_for("GoldUnavailable", || {
        cond("account", "gpb", "reason") == "GoldUnavailable"
    });
    wait_ldap(&w.tree, "gpb unlocked in LDAP", "(uid=gpb)", |e| {
        !e[0].attrs.contains_key("pwdAccountLockedTime")
    })
    .await;
    let ready = w.get(&[
        "get",
        "account",
        "gpb",
        "-n",
        "physics",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"LdapSynced\")].status}",
    ]);
    assert_eq!(ready, "True");
    w.tree.cleanup().await;
}

#[tokio::test]
async fn a_guest_lives_its_whole_life_with_a_notice_mailed_to_the_host() {
    let dir = scratch("op-guest-smtp");
    let sink = smtpd(&dir);
    let extra = format!(
        "guests:\n  notice: 14d\n  smtp: {{host: 127.0.0.1, port: {}, from: roster@hpc.example.org}}\n",
        sink.port
    );
    let w = World::start("op-guest", &extra).await;
    let offset = w.dir.join("clock-offset");
    let set_clock = |days: i64| std::fs::write(&offset, (days * 86_400).to_string()).unwrap();
    set_clock(0);
    let (_op, port) = w.operator_with(
        &w.config,
        "solo",
        false,
        &["--clock-offset-file", &offset.display().to_string()],
    );
    let day = |d: i64| {
        (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * d))
            .strftime("%Y-%m-%d")
            .to_string()
    };
    let docs = format!(
        "---\napiVersion: roster.io/v1alpha1\nkind: Person\nmetadata: {{name: ada, namespace: physics}}\nspec: {{givenName: Ada, familyName: L, email: ada@physics.example.org}}\n---\napiVersion: roster.io/v1alpha1\nkind: Account\nmetadata: {{name: ada, namespace: physics}}\nspec: {{person: ada, username: ada}}\n---\napiVersion: roster.io/v1alpha1\nkind: Person\nmetadata: {{name: bob, namespace: physics}}\nspec: {{givenName: Bob, familyName: B, email: bob@physics.example.org}}\n---\napiVersion: roster.io/v1alpha1\nkind: Account\nmetadata: {{name: bob, namespace: physics}}\nspec: {{person: bob, username: bob}}\n---\napiVersion: roster.io/v1alpha1\nkind: Project\nmetadata: {{name: lab, namespace: physics}}\nspec: {{leaders: [bob], members: [ada]}}\n---\napiVersion: roster.io/v1alpha1\nkind: Guest\nmetadata: {{name: vis, namespace: physics}}\nspec:\n  type: Personal\n  host: ada\n  adminGroup: lab\n  validUntil: \"{}\"\n  person: {{givenName: Vera, familyName: Visitor, email: vera@elsewhere.example.org}}\n  account: {{username: vis, projects: [lab]}}\n",
        day(20)
    );
    assert!(
        w.kubectl(&["apply", "-f", "-"], Some(&docs))
            .status
            .success()
    );
    let guest = |path: &str| {
        w.get(&[
            "get",
            "guest",
            "vis",
            "-n",
            "physics",
            "-o",
            &format!("jsonpath={path}"),
        ])
    };
    let locked = async || {
        ldap_entries(&w.tree, "(&(uid=vis)(objectClass=posixAccount))").await[0]
            .attrs
            .contains_key("pwdAccountLockedTime")
    };
    // Creation: the Guest's Person and Account exist, owned by it; the account is in LDAP.
    wait_for("the guest active", || guest("{.status.phase}") == "Active");
    assert_eq!(guest("{.status.actingSponsor}"), "Person ada");
    let owner = w.get(&[
        "get",
        "account",
        "vis",
        "-n",
        "physics",
        "-o",
        "jsonpath={.metadata.ownerReferences[0].kind}",
    ]);
    assert_eq!(owner, "Guest");
    assert!(!locked().await);
    let table = w.get(&["get", "guests", "-n", "physics"]);
    assert!(
        table.contains("ada") && table.contains("Personal"),
        "{table}"
    );
    // 7 days later the notice is due: condition, and one e-mail to the host.
    set_clock(7);
    wait_for("Expiring", || {
        guest("{.status.conditions[?(@.type==\"Expiring\")].status}") == "True"
    });
    wait_for("the notice mailed", || !received(&sink.maildir).is_empty());
    passes_after(port, 2);
    let mails = received(&sink.maildir);
    assert_eq!(mails.len(), 1, "one notice, not one per pass");
    let mail = String::from_utf8_lossy(&mails[0]).to_string();
    assert!(
        mail.contains("ada@physics.example.org") && mail.contains("physics/vis"),
        "{mail}"
    );
    // Past validUntil, logins go on for the 30-day grace; then the account is locked.
    set_clock(25);
    passes_after(port, 2);
    assert!(!locked().await, "within the login grace");
    set_clock(52);
    wait_for("expired", || guest("{.status.phase}") == "Deactivated");
    assert!(locked().await);
    // Extended after expiry (from the clock's today): active again.
    let extend = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args([
            "guest",
            "extend",
            "vis",
            "-n",
            "physics",
            "--months",
            "1",
            "--today",
            &day(52),
        ])
        .env("KUBECONFIG", &w.cluster.kubeconfig)
        .output()
        .unwrap();
    assert!(
        extend.status.success(),
        "{}",
        String::from_utf8_lossy(&extend.stderr)
    );
    wait_for("extended", || guest("{.status.phase}") == "Active");
    assert!(!locked().await);
    // The host goes: the admin group's leaders take over; the guest stays active.
    let lock = r#"{"spec":{"locked":true}}"#;
    assert!(
        w.kubectl(
            &[
                "patch", "person", "ada", "-n", "physics", "--type", "merge", "-p", lock
            ],
            None
        )
        .status
        .success()
    );
    wait_for("HostGone", || {
        guest("{.status.conditions[?(@.type==\"HostGone\")].status}") == "True"
    });
    assert_eq!(
        guest("{.status.actingSponsor}"),
        "Project lab (leaders: bob)"
    );
    assert!(!locked().await);
    // Deleting the Guest deactivates its account through the lifecycle; its objects go. In
    // the foreground: the real garbage collector deletes the dependents first, and their
    // blockOwnerDeletion keeps the Guest until each is gone — which waits for Roster to
    // deactivate the account and release its finalizer.
    let d = w.kubectl(
        &[
            "delete",
            "guest",
            "vis",
            "-n",
            "physics",
            "--cascade=foreground",
            "--wait=true",
            "--timeout=60s",
        ],
        None,
    );
    assert!(d.status.success(), "{}", String::from_utf8_lossy(&d.stderr));
    for kind in ["account", "person"] {
        let out = w.kubectl(&["get", kind, "vis", "-n", "physics"], None);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("NotFound"),
            "the guest went before its {kind}"
        );
    }
    let e = &ldap_entries(&w.tree, "(&(uid=vis)(objectClass=posixAccount))").await[0];
    assert!(e.attrs.contains_key("rosterGoneAt") && e.attrs.contains_key("pwdAccountLockedTime"));
    // The purge follows the account's own timer (the guest's 60 days).
    set_clock(52 + 61);
    wait_ldap(&w.tree, "the purge", "(uid=vis)", |e| {
        e.len() == 1
            && e[0].attrs["objectClass"]
                .iter()
                .any(|c| c == "rosterTombstone")
    })
    .await;
    w.tree.cleanup().await;
}

/// Imports in physics: an export (ConfigMap, key `people.csv`) and the ImportSource reading it.
impl World {
    fn apply(&self, docs: &str) {
        let out = self.kubectl(&["apply", "-f", "-"], Some(docs));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Declares (or replaces) the export `name` (sent as JSON: control characters survive).
    fn export(&self, name: &str, csv: &str) {
        let doc = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "physics"}, "data": {"people.csv": csv}});
        self.apply(&doc.to_string());
    }

    /// A field of ImportSource `name` by JSONPath.
    fn import_status(&self, name: &str, path: &str) -> String {
        self.get(&[
            "get",
            "importsource",
            name,
            "-n",
            "physics",
            "-o",
            &format!("jsonpath={path}"),
        ])
    }

    /// `roster import run NAME`, then waits until the run answered it (its status is written).
    fn import_run(&self, name: &str) {
        let run = Command::new(env!("CARGO_BIN_EXE_roster"))
            .args(["import", "run", name, "-n", "physics"])
            .env("KUBECONFIG", &self.cluster.kubeconfig)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let token = self.import_status(name, "{.metadata.annotations.roster\\.io/run-requested}");
        wait_for("the requested run", || {
            self.import_status(name, "{.status.lastTrigger}") == token
        });
    }
}

/// ImportSource `name` in physics (sourceUID `op-<name>`, Sync mode) over the export `export`,
/// with `mapping` and further `spec` lines (indented two spaces).
fn import_source(name: &str, export: &str, mapping: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: roster.io/v1alpha1\nkind: ImportSource\nmetadata: {{name: {name}, namespace: physics}}\nspec:\n  sourceUID: op-{name}\n  reader:\n    type: Csv\n    csv: {{configMapRef: {{name: {export}, key: people.csv}}}}\n  mapping: {mapping}\n  recordUID: <employeeNumber>\n  mode: Sync\n{spec}"
    )
}

/// Waits until a pass that started after this call has finished.
fn a_pass_later(port: u16) {
    let seen = metric(port, "roster_passes_total");
    wait_for("a later pass", || {
        metric(port, "roster_passes_total") >= seen + 2.0
    });
}

#[tokio::test]
async fn an_import_reads_a_configmap_creates_objects_reports_and_marks_the_gone() {
    let w = World::start("op-import", "").await;
    let (_op, port) = w.operator(&w.config, "solo", false);
    let header = "id;first;last\n";
    w.export(
        "hr-export",
        &format!("{header}1;Jürgen;Müller\n2;Anna;Groß\n3;Åsa;Lindqvist\n"),
    );
    w.apply(&import_source(
        "hr",
        "hr-export",
        "{id: employeeNumber, first: givenName, last: familyName}",
        "  usernameScheme: {template: \"<:umlauts><:lower><firstname>[0]<lastname>[COUNTER2]\"}\n  deletionGracePeriod: {deactivation: 0, deletion: 30}\n  maxDeletions: {count: 1}\n",
    ));
    // The run creates Person and Account objects, which the operator converges.
    w.wait_ready("accounts", 3);
    let e = ldap_entries(&w.tree, "(uid=agross)").await;
    assert_eq!(e[0].attrs["rosterSourceUID"], ["op-hr"]);
    let status = |path: &str| w.import_status("hr", path);
    assert_eq!(status("{.status.lastRun.created}"), "3");
    let report = status("{.status.lastRun.report}");
    assert_eq!(report, "hr-import-report");
    let summary = w.get(&[
        "get",
        "configmap",
        &report,
        "-n",
        "physics",
        "-o",
        "jsonpath={.data.summary}",
    ]);
    assert!(summary.starts_with("3 line(s)"), "{summary}");
    wait_metric(port, "roster_import_runs_total", "", 1.0);
    // An empty export: the guard stops the run, nobody is marked gone.
    w.export("hr-export", header);
    w.import_run("hr");
    wait_for("the guard", || {
        status("{.status.conditions[?(@.type==\"Guarded\")].status}") == "True"
    });
    let marked = w.get(&[
        "get",
        "accounts",
        "-n",
        "physics",
        "-o",
        "jsonpath={.items[*].metadata.annotations.roster\\.io/gone-at}",
    ]);
    assert!(marked.trim().is_empty(), "{marked}");
    // One person leaves: the account is marked gone and deactivated in the directory.
    w.export(
        "hr-export",
        &format!("{header}1;Jürgen;Müller\n2;Anna;Groß\n"),
    );
    w.import_run("hr");
    wait_ldap(&w.tree, "alindqvist deactivated", "(uid=alindqvist)", |e| {
        e.first().is_some_and(|e| {
            e.attrs.contains_key("rosterGoneAt") && e.attrs.contains_key("pwdAccountLockedTime")
        })
    })
    .await;
    assert!(
        !ldap_entries(&w.tree, "(uid=jmueller)").await[0]
            .attrs
            .contains_key("pwdAccountLockedTime")
    );
    w.tree.cleanup().await;
}

#[tokio::test]
async fn a_guarded_import_keeps_its_whole_contribution_in_the_project_group_and_in_slurm() {
    let (cluster, slurm) = slurm_cluster("tgi");
    let w = World::start("op-import-guard", &slurm).await;
    let (_op, port) = w.operator(&w.config, "solo", false);
    // Unique names: Slurm accounts and users are global across clusters.
    let p = format!("g{}", std::process::id() % 100000);
    let users: Vec<String> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|s| format!("{p}{s}"))
        .collect();
    let export = |n: usize| {
        let rows: String = users[..n]
            .iter()
            .enumerate()
            .map(|(i, u)| format!("{i};Test;Person{i};{u}\n"))
            .collect();
        w.export("guarded", &format!("id;first;last;user\n{rows}"));
    };
    w.apply(&format!(
        "---\napiVersion: roster.io/v1alpha1\nkind: Project\nmetadata: {{name: {p}, namespace: physics}}\nspec: {{members: []}}\n"
    ));
    export(5);
    w.apply(&import_source(
        "guarded",
        "guarded",
        "{id: employeeNumber, first: givenName, last: familyName, user: username}",
        &format!("  defaults: {{projects: [{p}]}}\n  deletionGracePeriod: {{deactivation: 14, deletion: 180}}\n  maxDeletions: {{count: 1}}\n"),
    ));
    w.wait_ready("accounts", 5);
    w.wait_ready("projects", 1);
    let group = format!("(cn={p})");
    let in_slurm = || {
        let assocs = slurm_assocs(&cluster);
        users
            .iter()
            .all(|u| assocs.lines().any(|l| l == format!("{p}|{u}||")))
    };
    wait_ldap(&w.tree, "the five in the group", &group, |e| {
        members(e) == users
    })
    .await;
    wait_for("their associations", in_slurm);
    // One leaves the source: gone, active for 14 more days, still a member everywhere.
    export(4);
    w.import_run("guarded");
    let leaver = format!("(&(uid={p}e)(rosterGoneAt=*))");
    wait_ldap(&w.tree, "the leaver gone", &leaver, |e| e.len() == 1).await;
    a_pass_later(port);
    assert_eq!(members(&ldap_entries(&w.tree, &group).await), users);
    assert!(in_slurm(), "{}", slurm_assocs(&cluster));
    let (directory, assocs, txn) = (
        fingerprint(&w.tree.dn).await,
        slurm_assocs(&cluster),
        slurm_txn(&cluster, &p).await,
    );

    // A truncated export (half the rows): the deletion guard stops the run.
    export(2);
    w.import_run("guarded");
    let guarded = w.import_status(
        "guarded",
        "{.status.conditions[?(@.type==\"Guarded\")].reason}",
    );
    assert_eq!(guarded, "RunAborted");
    a_pass_later(port);
    // Its last contribution stays in full (the leaver's too), and nothing is written.
    assert_eq!(members(&ldap_entries(&w.tree, &group).await), users);
    assert!(
        ldap_entries(&w.tree, "(pwdAccountLockedTime=*)")
            .await
            .is_empty(),
        "nobody is locked"
    );
    assert_eq!(
        fingerprint(&w.tree.dn).await,
        directory,
        "a write to the directory"
    );
    assert_eq!(slurm_assocs(&cluster), assocs);
    assert_eq!(slurm_txn(&cluster, &p).await, txn, "a write to Slurm");
    w.tree.cleanup().await;
}

/// A GeneralizedTime attribute of an entry.
fn time_of(e: &ldap3::SearchEntry, attr: &str) -> jiff::Timestamp {
    let v = e.attrs.get(attr).and_then(|v| v.first());
    v.and_then(|v| roster::plan::parse_generalized_time(v))
        .unwrap_or_else(|| panic!("{}: {attr} is {v:?}", e.dn))
}

#[tokio::test]
async fn deadlines_an_import_recorded_are_carried_out_by_file_mode_and_never_recomputed() {
    let w = World::start("op-deadlines", "").await;
    let (_op, port) = w.operator(&w.config, "solo", false);
    let header = "id;first;last;user\n1;Max;Stay;mstay\n";
    w.export("leavers", &format!("{header}2;Mia;Leave;mleave\n"));
    w.apply(&import_source(
        "leavers",
        "leavers",
        "{id: employeeNumber, first: givenName, last: familyName, user: username}",
        "  deletionGracePeriod: {deactivation: 14, deletion: 180}\n  maxDeletions: {count: 1}\n",
    ));
    w.wait_ready("accounts", 2);
    // The record goes: the run that declares it decides both deadlines and records them.
    w.export("leavers", header);
    w.import_run("leavers");
    wait_ldap(&w.tree, "the recorded deadlines", "(uid=mleave)", |e| {
        ["rosterGoneAt", "rosterDeactivateAt", "rosterPurgeAt"]
            .iter()
            .all(|a| e[0].attrs.contains_key(*a))
    })
    .await;
    let leaver = |e: Vec<ldap3::SearchEntry>| e.into_iter().next().expect("mleave's entry");
    let e = leaver(ldap_entries(&w.tree, "(uid=mleave)").await);
    let gone = time_of(&e, "rosterGoneAt");
    let days = |d: i64| gone + jiff::SignedDuration::from_hours(24 * d);
    assert_eq!(time_of(&e, "rosterDeactivateAt"), days(14));
    assert_eq!(time_of(&e, "rosterPurgeAt"), days(180));
    assert!(!e.attrs.contains_key("pwdAccountLockedTime"));
    a_pass_later(port);
    let entry = || fingerprint(&e.dn);
    let before = entry().await;

    // File mode, same config, another namespace: it plans and changes nothing of mleave.
    let manifests = w.dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("chemistry.yaml"),
        person_account("chemistry", "fother", ""),
    )
    .unwrap();
    let config = w.config.display().to_string();
    // (`plan` exits 2: there are changes, fother's.)
    let file_mode = |args: &[&str], code: i32| {
        let mut all = vec!["-f", manifests.to_str().unwrap(), "--config", &config];
        all.splice(0..0, args.iter().copied());
        let (got, out, err) = roster(&all);
        assert_eq!(got, code, "roster {args:?}: {out}{err}");
        out
    };
    let at = |t: jiff::Timestamp| t.to_string();
    let planned: serde_json::Value =
        serde_json::from_str(&file_mode(&["plan", "-o", "json"], 2)).unwrap();
    let changes = planned["changes"].as_array().unwrap();
    assert!(
        changes.iter().all(|c| c["namespace"] == "chemistry"),
        "{changes:#?}"
    );
    // (It knows mleave's deadline: the recorded one.)
    let objects = planned["objects"].as_array().unwrap();
    let o = objects.iter().find(|o| o["name"] == "mleave").unwrap();
    assert_eq!(o["phase"], "Active", "{o:#}");
    assert_eq!(o["nextTransition"]["at"], at(days(14)), "{o:#}");
    file_mode(&["apply"], 0);
    assert_eq!(ldap_entries(&w.tree, "(uid=fother)").await.len(), 1);
    assert_eq!(entry().await, before, "file mode wrote to mleave's entry");

    // Its recorded deadlines are carried out as recorded: deactivated after 14 days …
    file_mode(&["apply", "--now", &at(days(15))], 0);
    let e = leaver(ldap_entries(&w.tree, "(uid=mleave)").await);
    assert_eq!(e.attrs["pwdAccountLockedTime"], ["000001010000Z"]);
    assert_eq!(time_of(&e, "rosterPurgeAt"), days(180));
    // … not purged after 100 (the site default is 90), purged after 180.
    let tombstone = "(&(uid=mleave)(objectClass=rosterTombstone))";
    file_mode(&["apply", "--now", &at(days(100))], 0);
    assert!(ldap_entries(&w.tree, tombstone).await.is_empty());
    let e = leaver(ldap_entries(&w.tree, "(&(uid=mleave)(objectClass=posixAccount))").await);
    assert_eq!(time_of(&e, "rosterPurgeAt"), days(180));
    file_mode(&["apply", "--now", &at(days(181))], 0);
    assert_eq!(ldap_entries(&w.tree, tombstone).await.len(), 1);
    w.tree.cleanup().await;
}

#[tokio::test]
async fn a_row_refused_after_its_username_was_generated_advances_no_counter() {
    let w = World::start("op-counter", "").await;
    let (_op, port) = w.operator(&w.config, "solo", false);
    // Rows 2 and 3 get a name (agross2, eesc), then are refused for their display names.
    w.export(
        "counted",
        "id;first;last;shown\n1;Anna;Groß;Anna Groß\n2;Arne;Groß;Arne\u{1b}[31m Groß\n3;Eve;Esc;Eve\u{1b}\n",
    );
    w.apply(&import_source(
        "counted",
        "counted",
        "{id: employeeNumber, first: givenName, last: familyName, shown: displayName}",
        "  usernameScheme: {template: \"<:umlauts><:lower><firstname>[0]<lastname>[COUNTER2]\"}\n  toleratedErrors: 2\n",
    ));
    w.wait_ready("accounts", 1);
    assert_eq!(w.import_status("counted", "{.status.lastRun.errors}"), "2");
    let counters = w.tree.config.counters_dn();
    let stored = async || {
        let mut v: Vec<(String, String)> = ldap_entries(&w.tree, "(cn=username:*)")
            .await
            .into_iter()
            .map(|e| {
                (
                    e.attrs["cn"][0].clone(),
                    e.attrs["rosterCounterValue"][0].clone(),
                )
            })
            .collect();
        v.sort();
        v
    };
    // Only agross was written: its counter says the bare name is used, nothing more.
    assert_eq!(
        stored().await,
        [("username:agross".to_string(), "2".to_string())]
    );
    a_pass_later(port);
    let (tree, before) = (fingerprint(&w.tree.dn).await, fingerprint(&counters).await);
    // The same export again: nothing else changed, so nothing is written.
    w.import_run("counted");
    a_pass_later(port);
    assert_eq!(w.import_status("counted", "{.status.lastRun.errors}"), "2");
    assert_eq!(
        fingerprint(&counters).await,
        before,
        "a counter was written"
    );
    assert_eq!(
        fingerprint(&w.tree.dn).await,
        tree,
        "a write to the directory"
    );
    w.tree.cleanup().await;
}

#[tokio::test]
async fn an_import_supersedes_a_guest_and_the_account_outlives_the_guest() {
    let w = World::start("op-supersede", "").await;
    let (_op, port) = w.operator(&w.config, "solo", false);
    let guest = person_account("physics", "shost", "")
        + "\n---\napiVersion: roster.io/v1alpha1\nkind: Guest\nmetadata: {name: vera, namespace: physics}\nspec:\n  type: Personal\n  host: shost\n  validUntil: \"2099-01-01\"\n  person: {givenName: Vera, familyName: Visitor, email: vera@uni.example.org}\n  account: {username: vvisit}\n";
    // (A validity far ahead: the 12-month rule refuses it, so give one within a year.)
    let valid = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 100))
        .strftime("%Y-%m-%d")
        .to_string();
    let guest = guest.replace("2099-01-01", &valid);
    assert!(
        w.kubectl(&["apply", "-f", "-"], Some(&guest))
            .status
            .success()
    );
    w.wait_ready("accounts", 2);
    let uid = ldap_entries(&w.tree, "(uid=vvisit)").await[0].attrs["uidNumber"].clone();
    let import = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: staff, namespace: physics}\ndata:\n  staff.csv: |\n    id,first,last,mail\n    9,Vera,Visitor,vera@uni.example.org\n---\napiVersion: roster.io/v1alpha1\nkind: ImportSource\nmetadata: {name: staff, namespace: physics}\nspec:\n  sourceUID: op-staff\n  reader:\n    type: Csv\n    csv: {configMapRef: {name: staff, key: staff.csv}}\n  mapping: {id: employeeNumber, first: givenName, last: familyName, mail: email}\n  recordUID: <employeeNumber>\n  usernameScheme: {template: \"<:lower><firstname>[0]<lastname>\"}\n";
    assert!(
        w.kubectl(&["apply", "-f", "-"], Some(import))
            .status
            .success()
    );
    wait_for("the guest superseded", || {
        w.get(&[
            "get",
            "guest",
            "vera",
            "-n",
            "physics",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Superseded\")].status}",
        ]) == "True"
    });
    wait_ldap(
        &w.tree,
        "the import's record on the account",
        "(uid=vvisit)",
        |e| {
            e[0].attrs
                .get("rosterRecordUID")
                .is_some_and(|v| v == &["9"])
        },
    )
    .await;
    let owners = w.get(&[
        "get",
        "account",
        "vera",
        "-n",
        "physics",
        "-o",
        "jsonpath={.metadata.ownerReferences}",
    ]);
    assert!(owners.trim().is_empty(), "no longer the Guest's: {owners}");
    // Nothing the guest's manager applied stays unless the import applies it too: not the
    // guest's label, not its validity (server-side apply field ownership, on the real server).
    let field = |path: &str| {
        w.get(&[
            "get",
            "account",
            "vera",
            "-n",
            "physics",
            "-o",
            &format!("jsonpath={path}"),
        ])
    };
    wait_for("the guest's fields let go", || {
        field("{.spec.validUntil}").is_empty()
            && !field("{.metadata.labels}").contains("roster.io/guest")
    });
    // The guest goes; the account stays, active, with its uid.
    let d = w.kubectl(
        &[
            "delete",
            "guest",
            "vera",
            "-n",
            "physics",
            "--wait=true",
            "--timeout=30s",
        ],
        None,
    );
    assert!(d.status.success(), "{}", String::from_utf8_lossy(&d.stderr));
    passes_after(port, 2);
    let e = &ldap_entries(&w.tree, "(uid=vvisit)").await[0];
    assert_eq!(e.attrs["uidNumber"], uid);
    assert!(!e.attrs.contains_key("pwdAccountLockedTime") && !e.attrs.contains_key("rosterGoneAt"));
    assert!(
        w.kubectl(&["get", "account", "vera", "-n", "physics"], None)
            .status
            .success()
    );
    w.tree.cleanup().await;
}

/// The README's "Installing in a cluster", as written, on a real control plane: its shell
/// blocks run in order by bash in a scratch directory (the site-values.yaml block written there,
/// an ldap-password file beside it). Two lines cannot run here and are replaced, nothing else:
/// `helm install` (no helm binary; the chart's CRDs and Helm's own rendering of the chart with
/// those values, `hack/helm.py template`, are applied instead — what `helm install` sends), and
/// `kubectl rollout status` (no kubelet runs Pods: the test starts `roster run` itself, as the
/// chart's ServiceAccount with the token a Pod would mount, against the test's directory).
#[tokio::test]
async fn the_readme_installation_commands_work_as_written() {
    let tree = TestTree::new("op-readme").await;
    let dir = scratch("op-readme");
    let cluster = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || Cluster::start_bare(&dir, &[]))
            .await
            .unwrap()
    };
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let start = readme.find("\n## Installing in a cluster").unwrap();
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let mut blocks: Vec<(&str, String)> = vec![];
    let mut rest = section;
    while let Some(open) = rest.find("```") {
        let lang_end = open + rest[open..].find('\n').unwrap();
        let lang = rest[open + 3..lang_end].trim();
        let close = lang_end + rest[lang_end..].find("\n```").unwrap();
        blocks.push((lang, rest[lang_end + 1..close + 1].to_string()));
        rest = &rest[close + 4..];
    }
    let values = blocks
        .iter()
        .find(|(l, b)| *l == "yaml" && b.starts_with("# site-values.yaml"))
        .expect("the README's site-values.yaml");
    std::fs::write(dir.join("site-values.yaml"), &values.1).unwrap();
    std::fs::write(dir.join("ldap-password"), "not-the-real-one").unwrap();
    let helm = format!(
        "kubectl apply --server-side -f {crds} && {python} {helm} template {chart} --namespace roster -f site-values.yaml | kubectl apply --server-side -f -",
        crds = repo_root().join("charts/roster/crds").display(),
        python = repo_root().join(".dev/venv/bin/python").display(),
        helm = repo_root().join("hack/helm.py").display(),
        chart = repo_root().join("charts/roster").display(),
    );
    let mut ran = vec![];
    let mut operator = None;
    for (_, block) in blocks.iter().filter(|(l, _)| *l == "sh") {
        let script = block
            .lines()
            .map(|l| {
                if l.starts_with("helm install ") {
                    helm.clone()
                } else if l.starts_with("kubectl -n roster rollout status") {
                    "true".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(&dir)
            .env("KUBECONFIG", &cluster.kubeconfig)
            .env("HOME", &dir)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    repo_root().join(".dev/venv/bin").display(),
                    std::env::var("PATH").unwrap()
                ),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "README block failed:\n{script}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ran.push(script);
        // The chart is installed: the operator starts as its ServiceAccount.
        if block.contains("helm install ") {
            cluster.write_operator_kubeconfigs();
            let config = tree.write_config_with(&dir, &operator_config());
            let (proc, _) = operator_process(
                &config,
                &cluster.operator_kubeconfig,
                &dir.join("operator.log"),
                "readme",
                true,
                &[],
            );
            operator = Some(proc);
        }
    }
    assert!(
        operator.is_some(),
        "the README installs the chart with helm install"
    );
    assert_eq!(ran.len(), 2, "the README's blocks: {ran:#?}");
    // "Helm never upgrades CRDs: before `helm upgrade`, run `kubectl apply …`" (in the clone).
    let upgrade = section
        .split("before `helm upgrade`, run `")
        .nth(1)
        .and_then(|r| r.split('`').next())
        .expect("the README's CRD upgrade command")
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(upgrade[0], "kubectl");
    let out = kubectl(&cluster.kubeconfig, &dir, &upgrade[1..], None);
    assert!(
        out.status.success(),
        "{upgrade:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The first Account is what the README says it is.
    wait_for("ada Ready", || {
        let k = cluster.must(&["get", "accounts", "-n", "physics", "--no-headers"], None);
        k.split_whitespace().collect::<Vec<_>>().get(4..6) == Some(&["Active", "True"])
    });
    let ada = ldap_entries(&tree, "(uid=ada)").await;
    assert_eq!(ada.len(), 1);
    let uid: u32 = ada[0].attrs["uidNumber"][0].parse().unwrap();
    assert!((tree.config.uid_range.min..=tree.config.uid_range.max).contains(&uid));
    // The chart's Deployment, Service, PDB, ConfigMap are stored as Helm would have made them.
    for what in [
        "deploy/roster",
        "service/roster-metrics",
        "configmap/roster-config",
    ] {
        cluster.must(&["get", "-n", "roster", what], None);
    }
    drop(operator);
    tree.cleanup().await;
}

/// Field ownership under server-side apply, on the real API server. A Guest's Account is the
/// Guest's: the `roster-guest` manager owns what it derived. A person applying one of those
/// fields is refused with a conflict that names the owner; forcing it takes the field for a
/// moment, and the next pass applies the Guest's value again (the Guest is where a guest's
/// validity changes: `roster guest extend`). docs/operations.md, "Who owns which fields".
#[tokio::test]
async fn a_field_the_guest_manager_owns_is_a_conflict_and_a_forced_change_is_put_back() {
    let w = World::start("op-ssa", "").await;
    let (_op, _) = w.operator(&w.config, "solo", false);
    w.apply_site();
    w.wait_ready("accounts", 12);
    let field = |path: &str| {
        w.get(&[
            "get",
            "account",
            "mvisitor",
            "-n",
            "physics",
            "-o",
            &format!("jsonpath={path}"),
        ])
    };
    let derived = field("{.spec.validUntil}");
    assert!(!derived.is_empty(), "the guest's account has a validity");
    let owners = field("{.metadata.managedFields[*].manager}");
    assert!(owners.contains("roster-guest"), "{owners}");
    let doc = "apiVersion: roster.io/v1alpha1\nkind: Account\nmetadata: {name: mvisitor, namespace: physics}\nspec: {person: mvisitor, username: mvisitor, validUntil: \"2031-01-01\"}\n";
    let out = w.kubectl(
        &["apply", "--server-side", "--field-manager=ada", "-f", "-"],
        Some(doc),
    );
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "a person's apply of an owned field went through"
    );
    assert!(
        said.contains("conflict with \"roster-guest\"") && said.contains(".spec.validUntil"),
        "{said}"
    );
    assert_eq!(field("{.spec.validUntil}"), derived, "nothing changed");
    let applies = || {
        w.api_writes()
            .iter()
            .filter(|l| l.starts_with("patch accounts physics/mvisitor "))
            .count()
    };
    let before = applies();
    let out = w.kubectl(
        &[
            "apply",
            "--server-side",
            "--field-manager=ada",
            "--force-conflicts",
            "-f",
            "-",
        ],
        Some(doc),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the Guest's validity applied again", || {
        field("{.spec.validUntil}") == derived
    });
    assert!(
        applies() > before,
        "the operator applied the Guest's account again"
    );
    w.tree.cleanup().await;
}

/// Deleting a namespace with Roster's objects in it: the namespace controller deletes them,
/// Roster deactivates each identity first and releases its finalizer, and the namespace ends;
/// nothing is stuck in Terminating.
#[tokio::test]
async fn deleting_a_namespace_deactivates_its_identities_and_the_namespace_ends() {
    let w = World::start("op-nsdel", "").await;
    let (_op, _) = w.operator(&w.config, "solo", false);
    w.apply_site();
    let visitors = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: visitors}}\n{}\n---\napiVersion: roster.io/v1alpha1\nkind: Project\nmetadata: {{name: tour, namespace: visitors}}\nspec: {{leaders: [nsgone]}}\n",
        person_account("visitors", "nsgone", "")
    );
    assert!(
        w.kubectl(&["apply", "-f", "-"], Some(&visitors))
            .status
            .success()
    );
    w.wait_ready("accounts", 13);
    w.wait_ready("projects", 4);
    let out = w.kubectl(
        &[
            "delete",
            "namespace",
            "visitors",
            "--wait=true",
            "--timeout=60s",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gone = w.kubectl(&["get", "namespace", "visitors"], None);
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("NotFound"),
        "the namespace still exists"
    );
    let e = ldap_entries(&w.tree, "(&(uid=nsgone)(objectClass=posixAccount))").await;
    assert_eq!(e.len(), 1, "kept (not purged) until its purge time");
    assert!(
        e[0].attrs.contains_key("rosterDeactivatedAt")
            && e[0].attrs.contains_key("rosterGoneAt")
            && e[0].attrs.contains_key("pwdAccountLockedTime"),
        "deactivated before its object went: {:?}",
        e[0].attrs
    );
    // The other namespaces' people are untouched.
    w.wait_ready("accounts", 12);
    w.tree.cleanup().await;
}

/// Notices in operator mode: an Account's person before its end and when it is locked, a
/// Project's leader before the project ends — each mailed once through the local relay, also
/// across an operator restart (the record is in the directory, not in the operator's memory).
#[tokio::test]
async fn notices_are_mailed_once_each_and_a_restart_mails_none_again() {
    let dir = scratch("op-notices");
    let sink = smtpd(&dir);
    let extra = format!(
        "notices:\n  before: 14d\n  smtp: {{host: 127.0.0.1, port: {}, from: roster@hpc.example.org}}\n",
        sink.port
    );
    let w = World::start("op-notices", &extra).await;
    let offset = w.dir.join("clock-offset");
    let set_clock = |days: i64| std::fs::write(&offset, (days * 86_400).to_string()).unwrap();
    set_clock(0);
    let clock = ["--clock-offset-file", offset.to_str().unwrap()];
    let (op, port) = w.operator_with(&w.config, "solo", false, &clock);
    let day = |d: i64| {
        (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * d))
            .strftime("%Y-%m-%d")
            .to_string()
    };
    let (carl, lab) = ("carl", "lab");
    let site = |locked: bool| {
        format!(
            "---\napiVersion: roster.io/v1alpha1\nkind: Person\nmetadata: {{name: {carl}, namespace: physics}}\nspec: {{givenName: Carl, familyName: Clock, email: carl@physics.example.org}}\n---\napiVersion: roster.io/v1alpha1\nkind: Account\nmetadata: {{name: {carl}, namespace: physics}}\nspec: {{person: {carl}, username: {carl}, validUntil: \"{}\", locked: {locked}}}\n---\napiVersion: roster.io/v1alpha1\nkind: Project\nmetadata: {{name: {lab}, namespace: physics}}\nspec: {{leaders: [{carl}], validUntil: \"{}\"}}\n",
            day(20),
            day(30)
        )
    };
    assert!(
        w.kubectl(&["apply", "-f", "-"], Some(&site(false)))
            .status
            .success()
    );
    w.wait_ready("accounts", 1);
    let subjects = || {
        let mut s: Vec<String> = received(&sink.maildir)
            .iter()
            .map(|m| {
                let text = String::from_utf8_lossy(m).replace("\r\n", "\n");
                text.lines()
                    .find_map(|l| l.strip_prefix("Subject: "))
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        s.sort();
        s
    };
    passes_after(port, 2);
    assert!(subjects().is_empty(), "nothing is due yet");
    // Within 14 days of the account's end: one mail, however many passes follow.
    set_clock(7);
    wait_for("the account's notice", || subjects().len() == 1);
    passes_after(port, 2);
    assert_eq!(
        subjects(),
        [format!("Your account {carl} expires on {}", day(20))]
    );
    // A restarted operator reads the record from the directory and mails nothing again.
    drop(op);
    let (_op, port) = w.operator_with(&w.config, "solo", false, &clock);
    passes_after(port, 3);
    assert_eq!(subjects().len(), 1, "{:?}", subjects());
    // The project's end within 14 days, and the account locked: one more each.
    set_clock(17);
    wait_for("the project's notice", || subjects().len() == 2);
    assert!(
        w.kubectl(&["apply", "-f", "-"], Some(&site(true)))
            .status
            .success()
    );
    wait_for("the lock's notice", || subjects().len() == 3);
    passes_after(port, 2);
    assert_eq!(
        subjects(),
        [
            format!("Project {lab} ends on {}", day(30)),
            format!("Your account {carl} expires on {}", day(20)),
            format!("Your account {carl} is deactivated"),
        ]
    );
    let entry = ldap_entries(&w.tree, &format!("(uid={carl})")).await;
    let sent = &entry[0].attrs["rosterNoticeSent"];
    assert!(
        sent.len() == 1 && sent[0].starts_with("deactivated "),
        "{sent:?}"
    );
    wait_metric(port, "roster_notices_total", "outcome=\"ok\"", 1.0);
    w.tree.cleanup().await;
}

/// `kubectl apply -R -f examples/site` as the README says, its import included: the
/// ImportSource reads the ConfigMap declared beside it and is Ready, its twenty people become
/// accounts like the departments' twelve, and the summary CSV is in the report ConfigMap —
/// the same 32 accounts `roster apply -f examples/site` gives in file mode.
#[tokio::test]
async fn the_example_site_with_its_import_is_ready_in_the_cluster() {
    use base64::Engine as _;
    let w = World::start("op-example", "").await;
    let (_op, _port) = w.operator(&w.config, "solo", false);
    let site = repo_root().join("examples/site").display().to_string();
    let out = w.kubectl(&["apply", "-R", "-f", &site], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    w.wait_ready("importsources", 1);
    w.wait_ready("accounts", 32);
    let created = w.import_status("hr", "{.status.lastRun.created}");
    assert_eq!(created, "20");
    // The departments come first (`kubectl apply -R` in name order): the imported Jürgen Müller
    // gets a counter, the declared jmueller keeps his name.
    let imported = w.get(&[
        "get",
        "account",
        "jmueller2",
        "-n",
        "physics",
        "-o",
        "jsonpath={.spec.person}",
    ]);
    assert_eq!(imported, "jmueller2");
    let summary = w.get(&[
        "get",
        "configmap",
        "hr-import-report",
        "-n",
        "physics",
        "-o",
        "jsonpath={.binaryData.summary\\.csv\\.gz}",
    ]);
    let gz = base64::engine::general_purpose::STANDARD
        .decode(summary.trim())
        .expect("base64");
    let mut csv = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut csv)
        .expect("a whole gzip file");
    let lines: Vec<&str> = csv.split_terminator("\r\n").collect();
    assert_eq!(lines[0], "source,row,recordUID,action,username,problems");
    assert_eq!(lines.len(), 21, "{csv}");
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.split(',').nth(3) == Some("new")),
        "{csv}"
    );
    w.tree.cleanup().await;
}
