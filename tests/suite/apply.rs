//! `roster plan` / `roster apply` against the real dev slapd: convergence, idempotence measured
//! on the server, bad input, ownership, adoption, concurrency and pruning.

use crate::support;

use std::path::Path;

use support::*;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn site_config(tree: &TestTree, dir: &Path) -> String {
    tree.write_config(dir).display().to_string()
}

#[tokio::test]
async fn the_example_site_converges_and_a_second_apply_writes_nothing() {
    let tree = TestTree::new("example").await;
    let dir = scratch("example");
    let cfg = site_config(&tree, &dir);
    let site = repo_root().join("examples/site").display().to_string();

    let (code, out, err) = roster(&["plan", "-f", &site, "--config", &cfg]);
    assert_eq!(code, 2, "plan with changes exits 2: {out}{err}");
    let (code, out, err) = roster(&["apply", "-f", &site, "--config", &cfg]);
    assert_eq!(code, 0, "{out}{err}");

    let mut ldap = admin().await;
    let people = entries(
        &mut ldap,
        &tree.config.people_dn(),
        "(objectClass=posixAccount)",
    )
    .await;
    // Ten accounts, the two guests' accounts and twenty imported from the HR export.
    assert_eq!(people.len(), 32);
    let by_uid = |uid: &str| people.iter().find(|e| e.attrs["uid"] == [uid]).unwrap();
    assert_eq!(by_uid("jmueller").attrs["cn"], ["Jürgen Müller"]);
    assert_eq!(by_uid("jmueller").attrs["loginShell"], ["/bin/zsh"]);
    assert!(
        by_uid("jmueller").attrs["objectClass"]
            .iter()
            .any(|c| c == "ldapPublicKey")
    );
    assert_eq!(
        by_uid("lwei").attrs["pwdAccountLockedTime"],
        ["000001010000Z"]
    );
    assert_eq!(by_uid("lwei").attrs["shadowExpire"], ["1"]);
    assert!(!by_uid("ada").attrs.contains_key("pwdAccountLockedTime"));
    let uids: std::collections::BTreeSet<&String> =
        people.iter().map(|e| &e.attrs["uidNumber"][0]).collect();
    assert_eq!(uids.len(), 32, "distinct uids");
    // The visitor's account carries the guest policy: validUntil 2027-06-30 + 30 days of
    // login grace (the day count shadowExpire holds).
    let expire = jiff::civil::date(2027, 7, 31)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .unwrap()
        .timestamp()
        .as_second()
        / 86_400;
    assert_eq!(
        by_uid("mvisitor").attrs["shadowExpire"],
        [expire.to_string()]
    );
    assert!(
        !by_uid("optics-sync").attrs.contains_key("shadowExpire"),
        "technical: unlimited"
    );
    let groups = entries(&mut ldap, &tree.config.groups_dn(), "(cn=cosmo_sim)").await;
    let mut members = groups[0].attrs["memberUid"].clone();
    members.sort();
    assert_eq!(
        members,
        ["ada", "agomez", "jmueller2", "sodegard", "zdubois"],
        "leader + members joined from their Accounts (two of them imported)"
    );
    // Imported: usernames from the scheme (transliterated, a counter where the name is
    // taken), the source's keys recorded in the directory.
    let imported = by_uid("baengstroem");
    assert_eq!(imported.attrs["cn"], ["Björn Ängström"]);
    assert_eq!(imported.attrs["rosterSourceUID"], ["physics-hr"]);
    assert_eq!(imported.attrs["rosterRecordUID"], ["10017"]);
    assert_eq!(
        imported.attrs["mail"],
        ["bjoern.aengstroem@physics.example.org"]
    );
    let catalysis = entries(&mut ldap, &tree.config.groups_dn(), "(cn=catalysis)").await;
    assert!(
        catalysis[0].attrs["memberUid"].contains(&"jmueller".to_string()),
        "cross-namespace member"
    );
    // Personal groups: gid = uid.
    let ada_group = entries(&mut ldap, &tree.config.groups_dn(), "(cn=ada)").await;
    assert_eq!(
        ada_group[0].attrs["gidNumber"],
        by_uid("ada").attrs["uidNumber"]
    );

    let before = fingerprint(&tree.dn).await;
    let (code, out, _) = roster(&["apply", "-f", &site, "--config", &cfg]);
    assert_eq!(code, 0);
    assert!(out.contains("No changes"), "{out}");
    let (code, out, _) = roster(&["plan", "-f", &site, "--config", &cfg, "-o", "json"]);
    assert_eq!(code, 0, "a converged plan exits 0");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["changes"].as_array().unwrap().len(), 0);
    assert_eq!(
        fingerprint(&tree.dn).await,
        before,
        "the server saw writes on a no-op apply"
    );
    tree.cleanup().await;
}

#[tokio::test]
async fn bad_input_is_refused_with_the_object_and_field_and_nothing_is_written() {
    let tree = TestTree::new("bad").await;
    let dir = scratch("bad");
    let cfg = site_config(&tree, &dir);
    let before = fingerprint(&tree.dn).await;

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "invalid username",
            person_account("physics", "Ada", ""),
            "spec.username",
        ),
        (
            "DN metacharacters in a username",
            person_account("physics", "a,b", "").replace("username: a,b", "username: \"a,b+c=d\""),
            "spec.username",
        ),
        (
            "filter metacharacters in a username",
            person_account("physics", "ada", "")
                .replace("username: ada", "username: \"ad*)(uid=*\""),
            "spec.username",
        ),
        (
            "NUL in a value",
            person_account("physics", "ada", "")
                .replace("familyName: ada", "familyName: \"a\\0b\""),
            "spec.familyName",
        ),
        (
            "unknown field",
            person_account("physics", "ada", "  shel: /bin/sh\n"),
            "spec.shel",
        ),
        (
            "reserved username",
            person_account("physics", "root", ""),
            "reserved",
        ),
    ];
    for (what, yaml, field) in cases {
        let f = write(
            &dir,
            "bad.yaml",
            &(person_account("physics", "okay", "") + "\n" + &yaml),
        );
        for verb in ["plan", "apply"] {
            let (code, out, err) = roster(&[verb, "-f", &f, "--config", &cfg]);
            assert_eq!(code, 1, "{what}: {verb} exits 1\n{out}{err}");
            assert!(
                err.contains(field),
                "{what}: the error names {field}: {err}"
            );
            assert!(
                err.contains("Account physics/") || err.contains("Person physics/"),
                "{what}: names the object: {err}"
            );
        }
    }
    assert_eq!(
        fingerprint(&tree.dn).await,
        before,
        "nothing may be written for bad manifests"
    );

    // Duplicate uidNumber: the first keeps it, the second is a Conflict; exit 3.
    let f = write(
        &dir,
        "dup.yaml",
        &(person_account("physics", "first", "  uidNumber: 20900\n")
            + "\n"
            + &person_account("physics", "second", "  uidNumber: 20900\n")),
    );
    let (code, out, _) = roster(&["apply", "-f", &f, "--config", &cfg]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("Account physics/second: Conflict: spec.uidNumber 20900 is also declared by Account physics/first"), "{out}");
    let mut ldap = admin().await;
    assert_eq!(entries(&mut ldap, &tree.dn, "(uid=second)").await.len(), 0);
    assert_eq!(
        entries(&mut ldap, &tree.dn, "(uid=first)").await[0].attrs["uidNumber"],
        ["20900"]
    );

    // A member or defaultProject that doesn't exist: Invalid, exit 3, that object unwritten.
    let project = "---\napiVersion: roster.io/v1alpha1\nkind: Project\nmetadata: {name: optics, namespace: physics}\nspec:\n  members: [ghost]\n";
    let f = write(
        &dir,
        "refs.yaml",
        &(project.to_string() + &person_account("physics", "carol", "  defaultProject: nowhere\n")),
    );
    let (code, out, _) = roster(&["apply", "-f", &f, "--config", &cfg]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains(
            "Project physics/optics: Invalid: spec.members[0]: no Account with username \"ghost\""
        ),
        "{out}"
    );
    assert!(
        out.contains("Account physics/carol: Invalid: spec.defaultProject: no Project \"nowhere\""),
        "{out}"
    );
    assert_eq!(
        entries(&mut ldap, &tree.dn, "(|(cn=optics)(uid=carol))")
            .await
            .len(),
        0
    );
    tree.cleanup().await;
}

#[tokio::test]
async fn ldap_metacharacters_in_values_are_stored_exactly() {
    let tree = TestTree::new("meta").await;
    let dir = scratch("meta");
    let cfg = site_config(&tree, &dir);
    let nasty = r#"O'Brien, Jr. + "Q" \ <x> ; = # * ( ) ü"#;
    let yaml = person_account("physics", "obrien", "").replace(
        "spec: {givenName: Test, familyName: obrien}",
        &format!(
            "spec: {{givenName: Test, familyName: {}}}",
            serde_json::to_string(nasty).unwrap()
        ),
    );
    let project = format!(
        "---\napiVersion: roster.io/v1alpha1\nkind: Project\nmetadata: {{name: meta, namespace: physics}}\nspec:\n  description: {}\n  members: [obrien]\n",
        serde_json::to_string(nasty).unwrap()
    );
    let f = write(&dir, "meta.yaml", &(yaml + &project));
    let (code, out, err) = roster(&["apply", "-f", &f, "--config", &cfg]);
    assert_eq!(code, 0, "{out}{err}");
    let mut ldap = admin().await;
    let e = &entries(&mut ldap, &tree.dn, "(uid=obrien)").await[0];
    assert_eq!(e.attrs["sn"], [nasty]);
    let g = &entries(&mut ldap, &tree.dn, "(cn=meta)").await[0];
    assert_eq!(g.attrs["description"], [nasty]);
    let (code, out, _) = roster(&["apply", "-f", &f, "--config", &cfg]);
    assert_eq!(code, 0);
    assert!(out.contains("No changes"), "{out}");
    tree.cleanup().await;
}

#[tokio::test]
async fn unreachable_directory_and_wrong_password_are_clear_errors() {
    let tree = TestTree::new("unreach").await;
    let dir = scratch("unreach");
    let cfg = site_config(&tree, &dir);
    let f = write(&dir, "a.yaml", &person_account("physics", "ada", ""));
    let text = std::fs::read_to_string(&cfg).unwrap();
    let down = write(
        &dir,
        "down.yaml",
        &text.replace(&tree.config.ldap.uri, "ldap://127.0.0.1:1"),
    );
    let (code, _, err) = roster(&["apply", "-f", &f, "--config", &down]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot reach the directory at ldap://127.0.0.1:1"),
        "{err}"
    );
    let pw = write(&dir, "pw", "Not-The-Pw-7f3a");
    let badpw = write(
        &dir,
        "badpw.yaml",
        &text
            .lines()
            .map(|l| {
                if l.starts_with("  bindPasswordFile:") {
                    format!("  bindPasswordFile: {pw}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let before = fingerprint(&tree.dn).await;
    let (code, _, err) = roster(&["apply", "-f", &f, "--config", &badpw]);
    assert_eq!(code, 1);
    assert!(
        err.contains("refused the bind") && err.contains("invalid credentials"),
        "{err}"
    );
    assert!(
        !err.contains("Not-The-Pw-7f3a"),
        "the password must not be printed: {err}"
    );
    assert_eq!(fingerprint(&tree.dn).await, before);
    tree.cleanup().await;
}

#[tokio::test]
async fn unmarked_entries_are_never_touched_and_adoption_needs_config_and_annotation() {
    let tree = TestTree::new("adopt").await;
    let dir = scratch("adopt");
    let cfg = site_config(&tree, &dir);
    let mut ldap = admin().await;
    let dn = format!("uid=legacy,{}", tree.config.people_dn());
    ldap.add(
        &dn,
        vec![
            ("objectClass", ["inetOrgPerson", "posixAccount"].into()),
            ("uid", ["legacy"].into()),
            ("cn", ["Legacy User"].into()),
            ("sn", ["User"].into()),
            ("uidNumber", ["20777"].into()),
            ("gidNumber", ["20777"].into()),
            ("homeDirectory", ["/home/legacy"].into()),
            ("loginShell", ["/bin/tcsh"].into()),
        ],
    )
    .await
    .unwrap()
    .success()
    .unwrap();
    let before = fingerprint(&tree.dn).await;
    let plain = person_account("physics", "legacy", "");
    let f = write(&dir, "legacy.yaml", &plain);
    let (code, out, _) = roster(&["apply", "-f", &f, "--config", &cfg]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("is not managed by Roster"), "{out}");
    assert_eq!(
        fingerprint(&tree.dn).await,
        before,
        "an unmarked entry was modified"
    );

    // The annotation alone is not enough …
    let annotated = plain.replace(
        "kind: Account\nmetadata: {name: legacy, namespace: physics}",
        "kind: Account\nmetadata: {name: legacy, namespace: physics, annotations: {roster.io/adopt: \"true\"}}",
    );
    assert_ne!(annotated, plain);
    let f = write(&dir, "legacy.yaml", &annotated);
    let (code, _, _) = roster(&["apply", "-f", &f, "--config", &cfg]);
    assert_eq!(code, 3);
    assert_eq!(fingerprint(&tree.dn).await, before);
    // … the site must allow it for the namespace too.
    let allowed = std::fs::read_to_string(&cfg).unwrap()
        + "adoption:\n  enabled: true\n  namespaces: [physics]\n";
    let cfg2 = write(&dir, "allowed.yaml", &allowed);
    let (code, out, err) = roster(&["apply", "-f", &f, "--config", &cfg2]);
    assert_eq!(code, 0, "{out}{err}");
    let e = &entries(&mut ldap, &tree.dn, "(uid=legacy)").await[0];
    assert_eq!(e.dn, dn, "adopted in place");
    assert_eq!(e.attrs["uidNumber"], ["20777"], "number kept");
    assert_eq!(e.attrs["rosterOwner"], ["dev/physics/Account/legacy"]);
    assert_eq!(e.attrs["rosterAdopted"], ["TRUE"]);
    assert_eq!(e.attrs["loginShell"], ["/bin/bash"], "now managed");
    tree.cleanup().await;
}

#[tokio::test]
async fn two_concurrent_applies_allocate_distinct_uids() {
    let mut retries = 0;
    for round in 0..5 {
        let tree = TestTree::new("race").await;
        let dir = scratch("race");
        let cfg = site_config(&tree, &dir);
        let many = |ns: &str| -> String {
            (0..50)
                .map(|i| person_account(ns, &format!("{ns}{i:02}"), "") + "\n")
                .collect()
        };
        let a = write(&dir, "a.yaml", &many("alpha"));
        let b = write(&dir, "b.yaml", &many("beta"));
        let run = |f: String, cfg: String| {
            std::thread::spawn(move || roster(&["apply", "-f", &f, "--config", &cfg, "-o", "json"]))
        };
        let (ha, hb) = (run(a, cfg.clone()), run(b, cfg.clone()));
        for h in [ha, hb] {
            let (code, out, err) = h.join().unwrap();
            assert_eq!(code, 0, "{out}{err}");
            let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
            retries += doc["counterRetries"].as_u64().unwrap();
        }
        let mut ldap = admin().await;
        let accounts = entries(
            &mut ldap,
            &tree.config.people_dn(),
            "(objectClass=posixAccount)",
        )
        .await;
        assert_eq!(accounts.len(), 100);
        let uids: std::collections::BTreeSet<String> = accounts
            .iter()
            .map(|e| e.attrs["uidNumber"][0].clone())
            .collect();
        assert_eq!(uids.len(), 100, "round {round}: a uid was handed out twice");
        tree.cleanup().await;
        if retries > 0 {
            break;
        }
    }
    assert!(
        retries > 0,
        "the two applies never raced for the counter in 5 rounds"
    );
}

#[tokio::test]
async fn prune_touches_only_its_namespaces_and_its_manager_id() {
    let tree = TestTree::new("prune").await;
    let dir = scratch("prune");
    let cfg = site_config(&tree, &dir);
    let physics = write(
        &dir,
        "physics.yaml",
        &(person_account("physics", "ada", "") + "\n" + &person_account("physics", "bob", "")),
    );
    let chemistry = write(
        &dir,
        "chemistry.yaml",
        &person_account("chemistry", "carol", ""),
    );
    let other_cfg = write(
        &dir,
        "other.yaml",
        &std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("managerId: dev", "managerId: other"),
    );
    let other = write(
        &dir,
        "other-physics.yaml",
        &person_account("physics", "dave", ""),
    );
    for (f, c) in [(&physics, &cfg), (&chemistry, &cfg), (&other, &other_cfg)] {
        let (code, out, err) = roster(&["apply", "-f", f, "--config", c]);
        assert_eq!(code, 0, "{out}{err}");
    }
    let mut ldap = admin().await;
    let snapshot = |name: &str| {
        let name = name.to_string();
        let base = tree.dn.clone();
        async move {
            let mut l = admin().await;
            entries(&mut l, &base, &format!("(uid={name})")).await[0]
                .attrs
                .get("entryCSN")
                .cloned()
        }
    };
    let (carol, dave) = (snapshot("carol").await, snapshot("dave").await);
    // physics now declares only ada: --prune locks bob, nothing else.
    let only_ada = write(&dir, "physics.yaml", &person_account("physics", "ada", ""));
    let (code, out, _) = roster(&["plan", "-f", &only_ada, "--config", &cfg]);
    assert_eq!(code, 0, "without --prune nothing is removed: {out}");
    let (code, out, err) = roster(&["apply", "--prune", "-f", &only_ada, "--config", &cfg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("removed account bob"), "{out}");
    let bob = &entries(&mut ldap, &tree.dn, "(uid=bob)").await[0];
    assert_eq!(
        bob.attrs["pwdAccountLockedTime"],
        ["000001010000Z"],
        "pruned = locked, not deleted"
    );
    assert!(bob.attrs.contains_key("rosterGoneAt"));
    assert_eq!(
        snapshot("carol").await,
        carol,
        "another namespace was touched"
    );
    assert_eq!(
        snapshot("dave").await,
        dave,
        "another managerId's entry was touched"
    );
    let ada = &entries(&mut ldap, &tree.dn, "(uid=ada)").await[0];
    assert!(!ada.attrs.contains_key("pwdAccountLockedTime"));
    tree.cleanup().await;
}

#[tokio::test]
async fn a_pruned_account_is_purged_at_its_time_and_its_name_returns_only_to_its_owner() {
    let tree = TestTree::new("purge").await;
    let dir = scratch("purge");
    let cfg = site_config(&tree, &dir);
    let both = write(
        &dir,
        "site.yaml",
        &(person_account("physics", "ada", "") + "\n" + &person_account("physics", "bob", "")),
    );
    assert_eq!(roster(&["apply", "-f", &both, "--config", &cfg]).0, 0);
    let mut ldap = admin().await;
    let uid = entries(&mut ldap, &tree.dn, "(uid=ada)").await[0].attrs["uidNumber"][0].clone();
    let only_bob = write(&dir, "bob.yaml", &person_account("physics", "bob", ""));
    let t0 = "2030-01-01T00:00:00Z";
    let (code, out, err) = roster(&[
        "apply", "--prune", "-f", &only_bob, "--config", &cfg, "--now", t0,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let ada = &entries(&mut ldap, &tree.dn, "(uid=ada)").await[0];
    assert_eq!(ada.attrs["rosterDeactivatedAt"], ["20300101000000Z"]);
    assert_eq!(
        ada.attrs["rosterPurgeAt"],
        ["20300401000000Z"],
        "90 days of grace"
    );
    // A day before: nothing. At the time: purged behind a tombstone (no --prune needed).
    let (_, out, _) = roster(&[
        "apply",
        "-f",
        &only_bob,
        "--config",
        &cfg,
        "--now",
        "2030-03-31T00:00:00Z",
    ]);
    assert!(out.contains("No changes"), "{out}");
    let (code, out, err) = roster(&[
        "apply",
        "-f",
        &only_bob,
        "--config",
        &cfg,
        "--now",
        "2030-04-01T00:00:00Z",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        entries(&mut ldap, &tree.dn, "(uid=ada)")
            .await
            .iter()
            .all(|e| e.attrs["objectClass"].contains(&"rosterTombstone".to_string()))
    );
    let tomb = entries(&mut ldap, &tree.config.tombstones_dn(), "(cn=Account:ada)").await;
    assert_eq!(tomb[0].attrs["uidNumber"], std::slice::from_ref(&uid));
    let (_, out, _) = roster(&[
        "apply",
        "-f",
        &only_bob,
        "--config",
        &cfg,
        "--now",
        "2030-05-01T00:00:00Z",
    ]);
    assert!(out.contains("No changes"), "purged once: {out}");
    // Someone else wants the name: Conflict, nothing written.
    let eve = write(&dir, "eve.yaml", &person_account("chemistry", "ada", ""));
    let (code, out, _) = roster(&["apply", "-f", &eve, "--config", &cfg]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("never reused"), "{out}");
    // The same Person comes back: the same username and uid.
    let (code, out, err) = roster(&["apply", "-f", &both, "--config", &cfg]);
    assert_eq!(code, 0, "{out}{err}");
    let back = entries(&mut ldap, &tree.config.people_dn(), "(uid=ada)").await;
    assert_eq!(back[0].attrs["uidNumber"], [uid]);
    tree.cleanup().await;
}

#[tokio::test]
async fn deleting_most_of_a_site_is_held_by_the_guard_until_approved() {
    let tree = TestTree::new("guard").await;
    let dir = scratch("guard");
    let cfg = site_config(&tree, &dir);
    let mut all = String::new();
    for i in 0..10 {
        all.push_str(&person_account("physics", &format!("g{i}"), ""));
        all.push('\n');
    }
    let all = write(&dir, "all.yaml", &all);
    assert_eq!(roster(&["apply", "-f", &all, "--config", &cfg]).0, 0);
    // 80 % of the accounts disappear from the manifests at once.
    let two = write(
        &dir,
        "two.yaml",
        &(person_account("physics", "g0", "") + "\n" + &person_account("physics", "g1", "")),
    );
    let (code, out, err) = roster(&["apply", "--prune", "-f", &two, "--config", &cfg]);
    assert_eq!(code, 3, "held by the guard: {out}{err}");
    assert_eq!(out.matches("Guarded").count(), 7, "{out}");
    let mut ldap = admin().await;
    let locked = |es: &[ldap3::SearchEntry]| {
        es.iter()
            .filter(|e| e.attrs.contains_key("pwdAccountLockedTime"))
            .count()
    };
    assert_eq!(
        locked(
            &entries(
                &mut ldap,
                &tree.config.people_dn(),
                "(objectClass=posixAccount)"
            )
            .await
        ),
        1,
        "10 % of 10: one at most"
    );
    let (code, out, _) = roster(&["guard", "status", "--config", &cfg]);
    assert_eq!(code, 0);
    assert!(out.contains("1 of 1 removal-caused"), "{out}");
    // Rejected (or simply left), the next run holds them again and changes nothing.
    assert_eq!(roster(&["guard", "reject", "--config", &cfg]).0, 0);
    let before = fingerprint(&tree.dn).await;
    assert_eq!(
        roster(&["apply", "--prune", "-f", &two, "--config", &cfg]).0,
        3
    );
    assert_eq!(fingerprint(&tree.dn).await, before);
    // Approved: the held removals go ahead.
    let (code, out, _) = roster(&["guard", "approve", "--config", &cfg]);
    assert_eq!(code, 0, "{out}");
    let (code, out, err) = roster(&["apply", "--prune", "-f", &two, "--config", &cfg]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        locked(
            &entries(
                &mut ldap,
                &tree.config.people_dn(),
                "(objectClass=posixAccount)"
            )
            .await
        ),
        8
    );
    tree.cleanup().await;
}
