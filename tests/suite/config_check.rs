//! `roster config check` from the outside: the real binary, real files, the real dev slapd.

use crate::support;

use std::process::{Command, Output};

use support::*;

fn roster(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(args)
        .env_remove("ROSTER_CONFIG")
        .output()
        .expect("roster runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn the_dev_config_checks_out() {
    let tree = TestTree::new("cfgok").await;
    let dir = scratch("cfgok");
    let path = tree.write_config(&dir);
    let out = roster(&["config", "check", "--config", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("has Roster's schema"));
    tree.cleanup().await;
}

#[tokio::test]
async fn a_missing_key_is_named_and_exits_1() {
    let tree = TestTree::new("cfgkey").await;
    let dir = scratch("cfgkey");
    let path = tree.write_config(&dir);
    let text = std::fs::read_to_string(&path).unwrap();
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with("  bindDN:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, without).unwrap();
    let out = roster(&[
        "config",
        "check",
        "--config",
        path.to_str().unwrap(),
        "--offline",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("ldap.bindDN: missing"), "{err}");
    assert!(
        err.contains(path.to_str().unwrap()),
        "the message names the file: {err}"
    );
    tree.cleanup().await;
}

#[test]
fn a_directory_without_the_schema_is_named_and_exits_1() {
    let uri = bare_directory();
    let dir = scratch("cfgbare");
    let path = dir.join("roster.yaml");
    let text = std::fs::read_to_string(repo_root().join(".dev/roster.yaml")).unwrap();
    let pw = repo_root().join(".dev/ldap-admin.pw");
    let text = text
        .lines()
        .map(|l| {
            if l.starts_with("  uri:") {
                format!("  uri: {uri}")
            } else if l.starts_with("  bindPasswordFile:") {
                format!("  bindPasswordFile: {}", pw.display())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&path, text).unwrap();
    let out = roster(&["config", "check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("lacks Roster's LDAP schema"), "{err}");
    assert!(err.contains("rosterManaged"), "{err}");
    assert!(
        err.contains("roster ldap-schema"),
        "the message says how to fix it: {err}"
    );
}

#[test]
fn ldap_schema_prints_what_the_dev_directory_loaded() {
    let out = roster(&["ldap-schema"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("dn: cn=roster,cn=schema,cn=config"));
    assert!(text.contains("dn: cn=openssh-lpk,cn=schema,cn=config"));
    let without = roster(&["ldap-schema", "--without-openssh-lpk"]);
    assert!(
        !String::from_utf8(without.stdout)
            .unwrap()
            .contains("openssh-lpk,cn=schema")
    );
}

#[test]
fn crd_prints_all_five_kinds() {
    let out = roster(&["crd"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for name in ["people", "accounts", "projects", "guests", "importsources"] {
        assert!(text.contains(&format!("name: {name}.roster.io")), "{name}");
    }
}

#[test]
fn an_unknown_slurm_cluster_is_refused_at_start_up() {
    let dir = scratch("cfgcluster");
    let text = std::fs::read_to_string(repo_root().join(".dev/roster.yaml")).unwrap();
    let dev = repo_root().join(".dev");
    let text = text
        .replace("clusters: [dev]", "clusters: [nosuchcluster]")
        .replace(
            "bindPasswordFile: ldap-admin.pw",
            &format!("bindPasswordFile: {}", dev.join("ldap-admin.pw").display()),
        )
        .replace(
            "slurmConf: slurm/slurm.conf",
            &format!("slurmConf: {}", dev.join("slurm/slurm.conf").display()),
        )
        .replace(
            "databaseUrlFile: slurm/ro.url",
            &format!("databaseUrlFile: {}", dev.join("slurm/ro.url").display()),
        );
    assert!(
        text.contains("nosuchcluster"),
        "the dev config has a slurm section"
    );
    let path = dir.join("roster.yaml");
    std::fs::write(&path, text).unwrap();
    let out = roster(&["config", "check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cluster \"nosuchcluster\" is not known to slurmdbd"),
        "{err}"
    );
}
