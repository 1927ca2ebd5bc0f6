//! ImportSource in file mode (`roster apply` with an ImportSource reading a CSV file) against
//! the real slapd: matching, grace periods with an injected clock, reactivation, counters across
//! runs and after a purge, dry-run, tolerated errors and the deletion guard.

use crate::support;

use std::path::Path;

use support::*;

/// An ImportSource over `people.csv` in `dir`, with the given extra spec lines.
fn source(dir: &Path, extra: &str) -> String {
    let text = format!(
        "apiVersion: roster.io/v1alpha1\nkind: ImportSource\nmetadata: {{name: hr, namespace: physics}}\nspec:\n  sourceUID: test-hr\n  reader:\n    type: Csv\n    csv: {{path: people.csv}}\n  mapping: {{id: employeeNumber, first: givenName, last: familyName}}\n  recordUID: <employeeNumber>\n  usernameScheme: {{template: \"<:umlauts><:lower><firstname>[0]<lastname>[COUNTER2]\"}}\n  mode: Sync\n  deletionGracePeriod: {{deactivation: 7, deletion: 30}}\n{extra}"
    );
    let f = dir.join("import.yaml");
    std::fs::write(&f, text).unwrap();
    f.display().to_string()
}

fn csv(dir: &Path, rows: &[(&str, &str, &str)]) {
    let mut t = String::from("id,first,last\n");
    for (id, first, last) in rows {
        t.push_str(&format!("{id},{first},{last}\n"));
    }
    std::fs::write(dir.join("people.csv"), t).unwrap();
}

fn apply(file: &str, cfg: &str, now: &str) -> (i32, String) {
    let (code, out, err) = roster(&["apply", "-f", file, "--config", cfg, "--now", now]);
    (code, format!("{out}{err}"))
}

#[tokio::test]
async fn records_match_by_source_and_record_uid_through_grace_reactivation_purge_and_return() {
    let tree = TestTree::new("import-life").await;
    let dir = scratch("import-life");
    let cfg = tree.write_config(&dir).display().to_string();
    let file = source(&dir, "");
    let people = [
        ("1", "Jürgen", "Müller"),
        ("2", "Maria", "Schmidt"),
        ("3", "Maria", "Schmidt"),
    ];
    csv(&dir, &people);
    let (code, out) = apply(&file, &cfg, "2030-01-01T00:00:00Z");
    assert_eq!(code, 0, "{out}");
    let mut ldap = admin().await;
    let base = tree.config.people_dn();
    let uid_of = async |ldap: &mut ldap3::Ldap, u: &str| {
        entries(
            ldap,
            &base,
            &format!("(&(uid={u})(objectClass=posixAccount))"),
        )
        .await
        .first()
        .map(|e| e.attrs.clone())
    };
    // Transliteration and a counter for the second Maria Schmidt.
    let j = uid_of(&mut ldap, "jmueller").await.expect("jmueller");
    assert_eq!(j["rosterRecordUID"], ["1"]);
    assert!(uid_of(&mut ldap, "mschmidt").await.is_some());
    let m2 = uid_of(&mut ldap, "mschmidt2").await.expect("mschmidt2");
    assert_eq!(m2["rosterRecordUID"], ["3"]);
    // Unchanged source: nothing written.
    let before = fingerprint(&tree.dn).await;
    let (code, out) = apply(&file, &cfg, "2030-01-02T00:00:00Z");
    assert_eq!(code, 0, "{out}");
    assert_eq!(fingerprint(&tree.dn).await, before, "{out}");
    // Record 3 leaves the source: gone at once, deactivated after 7 days, purged after 30.
    csv(&dir, &people[..2]);
    let (code, out) = apply(&file, &cfg, "2030-01-03T00:00:00Z");
    assert_eq!(code, 0, "{out}");
    let m2 = uid_of(&mut ldap, "mschmidt2").await.unwrap();
    assert!(
        m2.contains_key("rosterGoneAt") && !m2.contains_key("pwdAccountLockedTime"),
        "{m2:?}"
    );
    let (code, out) = apply(&file, &cfg, "2030-01-11T00:00:00Z");
    assert_eq!(code, 0, "{out}");
    let m2 = uid_of(&mut ldap, "mschmidt2").await.unwrap();
    assert!(
        m2.contains_key("pwdAccountLockedTime"),
        "deactivated after 7 days: {m2:?}"
    );
    // It comes back before the purge: the same identity, reactivated.
    csv(&dir, &people);
    let (code, out) = apply(&file, &cfg, "2030-01-12T00:00:00Z");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("reactivated"), "{out}");
    let back = uid_of(&mut ldap, "mschmidt2").await.unwrap();
    assert!(!back.contains_key("pwdAccountLockedTime") && !back.contains_key("rosterGoneAt"));
    assert_eq!(back["uidNumber"], m2["uidNumber"]);
    // Gone again, and purged 30 days after it went.
    csv(&dir, &people[..2]);
    for now in [
        "2030-02-01T00:00:00Z",
        "2030-02-09T00:00:00Z",
        "2030-03-04T00:00:00Z",
        "2030-03-05T00:00:00Z",
    ] {
        let (code, out) = apply(&file, &cfg, now);
        assert_eq!(code, 0, "{now}: {out}");
    }
    assert!(uid_of(&mut ldap, "mschmidt2").await.is_none(), "purged");
    // A new Maria Schmidt never gets the purged name; the old record coming back does.
    csv(&dir, &[people[0], people[1], ("4", "Maria", "Schmidt")]);
    let (code, out) = apply(&file, &cfg, "2030-03-06T00:00:00Z");
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        uid_of(&mut ldap, "mschmidt3").await.unwrap()["rosterRecordUID"],
        ["4"]
    );
    csv(
        &dir,
        &[people[0], people[1], people[2], ("4", "Maria", "Schmidt")],
    );
    let (code, out) = apply(&file, &cfg, "2030-03-07T00:00:00Z");
    assert_eq!(code, 0, "{out}");
    let again = uid_of(&mut ldap, "mschmidt2")
        .await
        .expect("the same record, the same name");
    assert_eq!(again["uidNumber"], m2["uidNumber"], "and the same uid");
    tree.cleanup().await;
}

#[tokio::test]
async fn empty_or_truncated_exports_bad_rows_dry_runs_and_missing_files_change_nothing() {
    let tree = TestTree::new("import-guard").await;
    let dir = scratch("import-guard");
    let cfg = tree.write_config(&dir).display().to_string();
    let file = source(
        &dir,
        "  toleratedErrors: 1\n  maxDeletions: {percent: 30}\n",
    );
    let many: Vec<(String, String, String)> = (1..=10)
        .map(|i| (i.to_string(), "Test".to_string(), format!("Person{i}")))
        .collect();
    let rows = |n: usize| -> Vec<(&str, &str, &str)> {
        many[..n]
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
            .collect()
    };
    csv(&dir, &rows(10));
    let (code, out) = apply(&file, &cfg, "2030-01-01T00:00:00Z");
    assert_eq!(code, 0, "{out}");
    let before = fingerprint(&tree.dn).await;
    // An empty export: the guard stops the run, nothing is written.
    csv(&dir, &[]);
    let (code, out) = apply(&file, &cfg, "2030-01-02T00:00:00Z");
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("deletion guard"), "{out}");
    assert_eq!(fingerprint(&tree.dn).await, before);
    // A truncated one (half the people): the same.
    csv(&dir, &rows(5));
    let (code, out) = apply(&file, &cfg, "2030-01-02T00:00:00Z");
    assert_eq!(code, 3, "{out}");
    assert_eq!(fingerprint(&tree.dn).await, before);
    // Two bad rows with toleratedErrors 1: aborted before any write, rows named.
    let mut text = String::from("id,first,last\n");
    for (a, b, c) in rows(10) {
        text.push_str(&format!("{a},{b},{c}\n"));
    }
    text.push_str("11,,Nofirst\n12,Nolast,\n13,New,Person\n");
    std::fs::write(dir.join("people.csv"), &text).unwrap();
    let (code, out) = apply(&file, &cfg, "2030-01-02T00:00:00Z");
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("row 12") && out.contains("row 13"), "{out}");
    assert_eq!(fingerprint(&tree.dn).await, before);
    // One bad row is tolerated: skipped and reported, the rest goes ahead.
    std::fs::write(dir.join("people.csv"), text.replace("12,Nolast,\n", "")).unwrap();
    let (code, out) = apply(&file, &cfg, "2030-01-02T00:00:00Z");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("givenName is empty"), "{out}");
    assert_eq!(
        entries(&mut admin().await, &tree.dn, "(uid=nperson)")
            .await
            .len(),
        1
    );
    // A dry run reports and writes nothing; a missing file is not an empty export.
    let before = fingerprint(&tree.dn).await;
    let dry = source(&dir, "  dryRun: true\n");
    csv(&dir, &rows(9));
    let (code, out, _) = roster(&[
        "apply",
        "-f",
        &dry,
        "--config",
        &cfg,
        "--prune",
        "--now",
        "2030-01-03T00:00:00Z",
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(fingerprint(&tree.dn).await, before, "dry run");
    std::fs::remove_file(dir.join("people.csv")).unwrap();
    let (code, out, err) = roster(&[
        "apply",
        "-f",
        &file,
        "--config",
        &cfg,
        "--prune",
        "--now",
        "2030-01-03T00:00:00Z",
    ]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("SourceUnreachable"), "{out}");
    assert_eq!(
        fingerprint(&tree.dn).await,
        before,
        "a missing file removes nobody, even with --prune"
    );
    tree.cleanup().await;
}

#[tokio::test]
async fn an_imported_person_supersedes_the_guest_and_keeps_its_account() {
    let tree = TestTree::new("import-guest").await;
    let dir = scratch("import-guest");
    let cfg = tree.write_config(&dir).display().to_string();
    let dir = dir.join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    let host = person_account("physics", "ihost", "");
    let guest = "---\napiVersion: roster.io/v1alpha1\nkind: Guest\nmetadata: {name: vera, namespace: physics}\nspec:\n  type: Personal\n  host: ihost\n  validUntil: \"2030-06-30\"\n  person: {givenName: Vera, familyName: Visitor, email: Vera.Visitor@uni.example.org}\n  account: {username: vvisit}\n";
    let site = dir.join("site.yaml");
    std::fs::write(&site, format!("{host}\n{guest}")).unwrap();
    let site = site.display().to_string();
    let (code, out, err) = roster(&[
        "apply",
        "-f",
        &site,
        "--config",
        &cfg,
        "--now",
        "2030-01-01T00:00:00Z",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let mut ldap = admin().await;
    let before = entries(
        &mut ldap,
        &tree.dn,
        "(&(uid=vvisit)(objectClass=posixAccount))",
    )
    .await;
    let uid = before[0].attrs["uidNumber"].clone();
    // Vera is hired: the HR export now lists her, by e-mail.
    std::fs::write(
        dir.join("people.csv"),
        "id,first,last,mail\n77,Vera,Visitor,vera.visitor@uni.example.org\n",
    )
    .unwrap();
    let import = "---\napiVersion: roster.io/v1alpha1\nkind: ImportSource\nmetadata: {name: hr, namespace: physics}\nspec:\n  sourceUID: test-hr\n  reader:\n    type: Csv\n    csv: {path: people.csv}\n  mapping: {id: employeeNumber, first: givenName, last: familyName, mail: email}\n  recordUID: <employeeNumber>\n  usernameScheme: {template: \"<:umlauts><:lower><firstname>[0]<lastname>[COUNTER2]\"}\n";
    std::fs::write(dir.join("import.yaml"), import).unwrap();
    for now in ["2030-02-01T00:00:00Z", "2030-02-02T00:00:00Z"] {
        let (code, out, err) = roster(&[
            "apply",
            "-f",
            &dir.display().to_string(),
            "--config",
            &cfg,
            "--now",
            now,
        ]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("Superseded"), "{out}");
    }
    let after = entries(
        &mut ldap,
        &tree.dn,
        "(&(uid=vvisit)(objectClass=posixAccount))",
    )
    .await;
    assert_eq!(after[0].attrs["uidNumber"], uid, "the same account");
    assert_eq!(after[0].attrs["rosterSourceUID"], ["test-hr"]);
    assert_eq!(after[0].attrs["rosterRecordUID"], ["77"]);
    // No second account for her, and the guest's end date no longer applies.
    assert!(
        entries(&mut ldap, &tree.dn, "(uid=vvisitor)")
            .await
            .is_empty()
    );
    assert!(!after[0].attrs.contains_key("shadowExpire"));
    tree.cleanup().await;
}

/// An HR export as it comes: two people with the same name, compound and accented surnames, an
/// apostrophe, rows that cannot be read or lack a name. Every generated address is unique (a
/// counter before the '@', kept in the directory), a second run keeps every address and writes
/// nothing, and `--report` says row by row what happened, in CSV: skipped rows apart from the
/// imported ones, changed apart from unchanged.
#[tokio::test]
async fn the_summary_csv_tells_every_row_and_generated_addresses_stay_unique() {
    let tree = TestTree::new("import-summary").await;
    let dir = scratch("import-summary");
    let cfg = tree.write_config(&dir).display().to_string();
    let file = source(
        &dir,
        "  emailScheme: \"<firstname:umlauts,alpha,lower>.<lastname:umlauts,alpha,lower>[COUNTER2]@example.org\"\n  toleratedErrors: 5\n",
    );
    let export = "id,first,last\n1,Maria,Schmidt\n2,Maria,Schmidt\n3,Jan,van der Berg\n4,Seán,O'Brien\n5,Thị,Nguyễn\n6,,Nobody\n7,Too,Many,Cells\n8,María José,de la Cruz\n";
    std::fs::write(dir.join("people.csv"), export).unwrap();
    let report = dir.join("summary.csv");
    let run = |now: &str| {
        let (code, out, err) = roster(&[
            "apply",
            "-f",
            &file,
            "--config",
            &cfg,
            "--now",
            now,
            "--report",
            &report.display().to_string(),
        ]);
        assert_eq!(code, 0, "{out}{err}");
        let text = std::fs::read_to_string(&report).unwrap();
        (format!("{out}{err}"), text)
    };
    let (out, summary) = run("2030-01-01T00:00:00Z");
    assert!(
        out.contains(
            "7 record(s): 6 new, 0 reactivated, 0 gone, 2 error(s) (rows skipped), 0 warning(s)"
        ),
        "{out}"
    );
    let lines: Vec<&str> = summary.split_terminator("\r\n").collect();
    assert_eq!(lines[0], "source,row,recordUID,action,username,problems");
    let by_id = |id: &str| -> Vec<String> {
        let line = lines
            .iter()
            .find(|l| l.split(',').nth(2) == Some(id))
            .unwrap_or_else(|| panic!("no line for record {id}: {summary}"));
        line.split(',').map(str::to_string).collect()
    };
    let mut ldap = admin().await;
    let base = tree.config.people_dn();
    let mail = async |ldap: &mut ldap3::Ldap, id: &str| -> (String, Option<String>) {
        let e = entries(
            ldap,
            &base,
            &format!("(&(rosterRecordUID={id})(objectClass=posixAccount))"),
        )
        .await
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no account for record {id}"));
        (
            e.attrs["uid"][0].clone(),
            e.attrs.get("mail").map(|m| m[0].clone()),
        )
    };
    let want = [
        ("1", "maria.schmidt@example.org"),
        ("2", "maria.schmidt2@example.org"),
        ("3", "jan.vanderberg@example.org"),
        ("4", "sean.obrien@example.org"),
        ("5", "thi.nguyen@example.org"),
        ("8", "mariajose.delacruz@example.org"),
    ];
    for (id, address) in want {
        let (user, got) = mail(&mut ldap, id).await;
        assert_eq!(got.as_deref(), Some(address), "record {id}");
        assert_eq!(by_id(id)[3], "new", "{summary}");
        assert_eq!(by_id(id)[4], user, "{summary}");
    }
    assert_eq!(by_id("6")[1], "7");
    assert_eq!(by_id("6")[3], "skipped");
    assert_eq!(by_id("6")[5], "givenName is empty");
    // The row the reader could not read has no recordUID: it is found by its row number.
    let unread = lines
        .iter()
        .find(|l| l.split(',').nth(1) == Some("8"))
        .unwrap_or_else(|| panic!("no line for row 8: {summary}"));
    assert!(unread.contains(",skipped,"), "{unread}");

    // Nothing changed in the source: nothing is written, every address stays.
    let before = fingerprint(&tree.dn).await;
    let (out, summary) = run("2030-01-02T00:00:00Z");
    assert_eq!(fingerprint(&tree.dn).await, before, "{out}");
    let actions: Vec<&str> = summary
        .split_terminator("\r\n")
        .skip(1)
        .map(|l| l.split(',').nth(3).unwrap())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "unchanged").count(),
        6,
        "{summary}"
    );
    assert_eq!(
        actions.iter().filter(|a| **a == "skipped").count(),
        2,
        "{summary}"
    );

    // The first Maria leaves; a new one never gets her address (nor the second's).
    std::fs::write(
        dir.join("people.csv"),
        "id,first,last\n2,Maria,Schmidt\n3,Jan,van der Berg\n4,Seán,O'Brien\n5,Thị,Nguyễn\n8,María José,de la Cruz\n9,Maria,Schmidt\n10,Jan,van der Berg\n",
    )
    .unwrap();
    let (_, summary) = run("2030-01-03T00:00:00Z");
    assert_eq!(
        mail(&mut ldap, "9").await.1.as_deref(),
        Some("maria.schmidt3@example.org")
    );
    assert_eq!(
        mail(&mut ldap, "10").await.1.as_deref(),
        Some("jan.vanderberg2@example.org")
    );
    let gone = summary
        .split_terminator("\r\n")
        .find(|l| l.split(',').nth(2) == Some("1"))
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(gone.starts_with("physics/hr,,1,gone,mschmidt,"), "{gone}");
    tree.cleanup().await;
}
