//! Roster's LDAP schema, loaded into the real dev slapd by `hack/dev-up.sh`: every class and
//! attribute can be written and read back, the counter's atomic modify works as a
//! compare-and-swap, and a directory without the schema is recognised as such.

use crate::support;

use std::collections::HashSet;

use ldap3::{Mod, Scope, SearchEntry};
use roster::ldap::{Directory, DirectoryError, OPENSSH_LPK_SCHEMA, ROSTER_SCHEMA, declared_names};
use support::*;

async fn read(ldap: &mut ldap3::Ldap, dn: &str) -> SearchEntry {
    let (rs, _) = ldap
        .search(dn, Scope::Base, "(objectClass=*)", vec!["*"])
        .await
        .unwrap()
        .success()
        .unwrap();
    SearchEntry::construct(rs.into_iter().next().unwrap())
}

#[tokio::test]
async fn every_class_and_attribute_can_be_written() {
    let tree = TestTree::new("schema").await;
    let mut ldap = admin().await;
    let people = tree.config.people_dn();
    let owner = "dev/physics/Account/ada";
    let account_dn = format!("uid=ada,{people}");
    let key =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ada@lab";
    ldap.add(
        &account_dn,
        vec![
            (
                "objectClass",
                [
                    "inetOrgPerson",
                    "posixAccount",
                    "shadowAccount",
                    "ldapPublicKey",
                    "rosterManaged",
                ]
                .into(),
            ),
            ("uid", ["ada"].into()),
            ("cn", ["Ada Lovelace"].into()),
            ("sn", ["Lovelace"].into()),
            ("uidNumber", ["20001"].into()),
            ("gidNumber", ["20001"].into()),
            ("homeDirectory", ["/home/ada"].into()),
            ("loginShell", ["/bin/bash"].into()),
            ("shadowExpire", ["20000"].into()),
            ("sshPublicKey", [key].into()),
            ("rosterOwner", [owner].into()),
            ("rosterState", ["Deactivated"].into()),
            ("rosterDeactivatedAt", ["20261123080000Z"].into()),
            ("rosterPurgeAt", ["20270221080000Z"].into()),
            ("rosterGoneAt", ["20261123075900Z"].into()),
            ("rosterSourceUID", ["hr-db"].into()),
            ("rosterRecordUID", ["4711"].into()),
            ("rosterIdentity", ["physics/ada"].into()),
            ("rosterKind", ["Account"].into()),
            ("rosterAdopted", ["FALSE"].into()),
            ("pwdAccountLockedTime", ["000001010000Z"].into()),
        ],
    )
    .await
    .unwrap()
    .success()
    .expect("account entry with every class of an account");
    let e = read(&mut ldap, &account_dn).await;
    assert_eq!(e.attrs["rosterOwner"], [owner]);
    assert_eq!(e.attrs["rosterPurgeAt"], ["20270221080000Z"]);
    assert_eq!(e.attrs["sshPublicKey"], [key]);
    // Ordering on the lifecycle timestamps is what the purge sweep relies on.
    let (due, _) = ldap
        .search(
            &people,
            Scope::OneLevel,
            "(rosterPurgeAt<=20270301000000Z)",
            vec!["1.1"],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    assert_eq!(due.len(), 1);
    // rosterOwner is single-valued: a second owner is refused by the directory itself.
    let second = ldap
        .modify(
            &account_dn,
            vec![Mod::Add(
                "rosterOwner",
                HashSet::from(["dev/other/Account/x"]),
            )],
        )
        .await
        .unwrap();
    assert_ne!(second.rc, 0, "a second rosterOwner was accepted");

    let group_dn = format!("cn=optics,{}", tree.config.groups_dn());
    ldap.add(
        &group_dn,
        vec![
            ("objectClass", ["posixGroup", "rosterManaged"].into()),
            ("cn", ["optics"].into()),
            ("gidNumber", ["30001"].into()),
            ("memberUid", ["ada"].into()),
            ("rosterOwner", ["dev/physics/Project/optics"].into()),
            ("rosterKind", ["Project"].into()),
        ],
    )
    .await
    .unwrap()
    .success()
    .expect("group entry");

    let tomb_dn = format!("cn=Account:bob,{}", tree.config.tombstones_dn());
    ldap.add(
        &tomb_dn,
        vec![
            ("objectClass", ["rosterTombstone"].into()),
            ("cn", ["Account:bob"].into()),
            ("uid", ["bob"].into()),
            ("uidNumber", ["20002"].into()),
            ("gidNumber", ["20002"].into()),
            ("rosterOwner", ["dev/physics/Account/bob"].into()),
            ("rosterKind", ["Account"].into()),
            ("rosterIdentity", ["physics/bob"].into()),
            ("rosterSourceUID", ["hr-db"].into()),
            ("rosterRecordUID", ["4712"].into()),
            ("rosterDeactivatedAt", ["20260101000000Z"].into()),
            ("rosterPurgeAt", ["20260401000000Z"].into()),
            ("description", ["purged"].into()),
        ],
    )
    .await
    .unwrap()
    .success()
    .expect("tombstone");
    assert_eq!(
        read(&mut ldap, &tomb_dn).await.attrs["uidNumber"],
        ["20002"]
    );

    let counter_dn = format!("cn=uidNumber,{}", tree.config.counters_dn());
    ldap.add(
        &counter_dn,
        vec![
            ("objectClass", ["rosterCounter"].into()),
            ("cn", ["uidNumber"].into()),
            ("rosterCounterValue", ["20003"].into()),
            ("description", ["next free uidNumber"].into()),
        ],
    )
    .await
    .unwrap()
    .success()
    .expect("counter");
    // delete-old/add-new in one modify is a compare-and-swap: it succeeds once …
    let cas = |old: &'static str, new: &'static str| {
        vec![
            Mod::Delete("rosterCounterValue", HashSet::from([old])),
            Mod::Add("rosterCounterValue", HashSet::from([new])),
        ]
    };
    let first = ldap
        .modify(&counter_dn, cas("20003", "20004"))
        .await
        .unwrap();
    assert_eq!(first.rc, 0, "{first:?}");
    // … and a writer holding the stale value is refused (noSuchAttribute), changing nothing.
    let stale = ldap
        .modify(&counter_dn, cas("20003", "20004"))
        .await
        .unwrap();
    assert_eq!(stale.rc, 16, "{stale:?}");
    assert_eq!(
        read(&mut ldap, &counter_dn).await.attrs["rosterCounterValue"],
        ["20004"]
    );

    tree.cleanup().await;
}

#[tokio::test]
async fn the_dev_directory_passes_the_checks() {
    let tree = TestTree::new("checks").await;
    let mut dir = Directory::connect(&tree.config).await.unwrap();
    dir.check_schema().await.expect("schema present");
    dir.check_containers(&tree.config)
        .await
        .expect("containers present");
    let known = dir.schema_names().await.unwrap();
    for name in declared_names(ROSTER_SCHEMA)
        .iter()
        .chain(&declared_names(OPENSSH_LPK_SCHEMA))
    {
        assert!(known.contains(&name.to_ascii_lowercase()), "{name}");
    }
    let mut missing = tree.config.clone();
    missing.ldap.counters_dn = Some(format!("ou=nowhere,{}", tree.dn));
    match dir.check_containers(&missing).await {
        Err(DirectoryError::MissingContainers { missing }) => {
            assert_eq!(missing, [format!("ou=nowhere,{}", tree.dn)])
        }
        other => panic!(
            "expected MissingContainers, got {other:?}",
            other = other.err()
        ),
    }
    tree.cleanup().await;
}

#[tokio::test]
async fn a_directory_without_the_schema_is_refused() {
    let mut config = dev_config();
    config.ldap.uri = bare_directory();
    let mut dir = Directory::connect(&config).await.unwrap();
    match dir.check_schema().await {
        Err(DirectoryError::SchemaMissing { missing }) => {
            for name in [
                "rosterManaged",
                "rosterTombstone",
                "rosterCounter",
                "rosterOwner",
                "ldapPublicKey",
            ] {
                assert!(
                    missing.iter().any(|m| m == name),
                    "{name} not reported: {missing:?}"
                );
            }
            // The standard classes are there, so they are not reported.
            assert!(!missing.iter().any(|m| m == "posixAccount"));
        }
        other => panic!("expected SchemaMissing, got {:?}", other.err()),
    }
}

#[tokio::test]
async fn wrong_password_and_unreachable_directory_are_told_apart() {
    let dir = scratch("wrong-pw");
    let pw = dir.join("pw");
    std::fs::write(&pw, "not-the-password").unwrap();
    let mut config = dev_config();
    config.ldap.bind_password_file = Some(pw);
    match Directory::connect(&config).await {
        Err(DirectoryError::Bind { dn, message }) => {
            assert_eq!(dn, config.ldap.bind_dn);
            assert!(message.contains("invalid credentials"), "{message}");
        }
        other => panic!("expected Bind, got {:?}", other.err()),
    }
    let mut config = dev_config();
    config.ldap.uri = "ldap://127.0.0.1:1".into();
    config.ldap.timeout_seconds = 2;
    assert!(matches!(
        Directory::connect(&config).await,
        Err(DirectoryError::Unreachable { .. })
    ));
}
