//! Table tests of the planner and the property that planning against the result of applying a
//! plan yields nothing.

use std::collections::BTreeMap;

use super::directory::{Entry, Observed};
use super::simulate::simulate;
use super::*;
use crate::api::{AccountSpec, PersonSpec, ProjectSpec};
use crate::config::Config;

const CONFIG: &str = r#"
managerId: dev
ldap:
  uri: ldap://127.0.0.1:389
  bindDN: cn=admin,dc=test
  bindPasswordFile: pw
  baseDN: dc=test
uidRange: {min: 20000, max: 29999}
gidRange: {min: 20000, max: 29999}
adoption:
  enabled: true
  namespaces: [physics]
"#;

fn config() -> Config {
    Config::parse(CONFIG, "/".into()).unwrap()
}

fn now() -> jiff::Timestamp {
    "2026-11-23T12:00:00Z".parse().unwrap()
}

fn meta(ns: &str, name: &str) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        ..Default::default()
    }
}

fn person(site: &mut Site, ns: &str, name: &str) {
    let spec = PersonSpec {
        given_name: "Given".into(),
        family_name: name.to_uppercase(),
        ..Default::default()
    };
    let mut p = Person::new(name, spec);
    p.metadata = meta(ns, name);
    site.people.insert(Key::new(ns, name), p);
}

fn account(site: &mut Site, ns: &str, name: &str, f: impl FnOnce(&mut AccountSpec)) {
    person(site, ns, name);
    let mut spec = AccountSpec {
        person: name.into(),
        username: name.into(),
        ..Default::default()
    };
    f(&mut spec);
    let mut a = Account::new(name, spec);
    a.metadata = meta(ns, name);
    site.accounts.insert(Key::new(ns, name), a);
}

fn project(site: &mut Site, ns: &str, name: &str, f: impl FnOnce(&mut ProjectSpec)) {
    let mut spec = ProjectSpec::default();
    f(&mut spec);
    let mut p = Project::new(name, spec);
    p.metadata = meta(ns, name);
    site.projects.insert(Key::new(ns, name), p);
}

fn run(site: &Site, observed: &Observed) -> Plan {
    let c = config();
    plan(site, observed, now(), &Policy::new(&c))
}

/// Plans, applies in memory, and returns the resulting directory.
fn converge(site: &Site, observed: &Observed) -> Observed {
    let c = config();
    simulate(observed, &run(site, observed), c.uid_range, c.gid_range)
}

fn status<'p>(p: &'p Plan, kind: Kind, ns: &str, name: &str) -> &'p ObjectStatus {
    p.status_of(kind, &Key::new(ns, name)).expect("status")
}

/// The object is in `phase` with a message containing `says`, and nothing is written for it.
fn blocked(p: &Plan, kind: Kind, ns: &str, name: &str, phase: Phase, says: &str) {
    let s = status(p, kind, ns, name);
    assert_eq!(s.phase, phase, "{ns}/{name}");
    assert!(s.message().unwrap().contains(says), "{:?}", s.message());
    assert!(
        p.ops.iter().all(|o| o.target().key != Key::new(ns, name)),
        "{ns}/{name}"
    );
}

fn entry(dn: &str, attrs: &[(&str, &[&str])]) -> Entry {
    Entry {
        dn: dn.into(),
        attrs: attrs
            .iter()
            .map(|(k, v)| {
                (
                    k.to_ascii_lowercase(),
                    v.iter().map(|s| s.to_string()).collect(),
                )
            })
            .collect(),
    }
}

#[test]
fn a_new_site_creates_groups_before_accounts_and_allocates_numbers() {
    let mut site = Site::default();
    project(&mut site, "physics", "optics", |p| {
        p.members = vec!["ada".into()]
    });
    account(&mut site, "physics", "ada", |_| {});
    let p = run(&site, &Observed::default());
    let kinds: Vec<(Kind, &str)> = p.ops.iter().map(|o| (o.target().kind, o.dn())).collect();
    assert_eq!(
        kinds,
        [
            (Kind::Project, "cn=optics,ou=groups,dc=test"),
            (Kind::Account, "uid=ada,ou=people,dc=test"),
            (Kind::Account, "cn=ada,ou=groups,dc=test"),
        ]
    );
    match &p.ops[1] {
        Op::Add {
            uid, gid, attrs, ..
        } => {
            assert_eq!(uid, &Some(Number::Allocate));
            assert_eq!(gid, &Some(Number::UidOfAccount("ada".into())));
            assert_eq!(attrs["rosterOwner"], ["dev/physics/Account/ada"]);
            assert_eq!(attrs["homeDirectory"], ["/home/ada"]);
            assert_eq!(attrs["rosterState"], ["Active"]);
        }
        other => panic!("{other:?}"),
    }
    match &p.ops[0] {
        Op::Add { attrs, .. } => assert_eq!(attrs["memberUid"], ["ada"]),
        other => panic!("{other:?}"),
    }
    assert!(!p.has_blocked());
}

#[test]
fn a_converged_site_plans_nothing_and_one_change_plans_one_modify() {
    let mut site = Site::default();
    project(&mut site, "physics", "optics", |p| {
        p.leaders = vec!["ada".into()]
    });
    account(&mut site, "physics", "ada", |a| {
        a.ssh_public_keys = vec!["ssh-ed25519 AAAA ada".into()]
    });
    let dir = converge(&site, &Observed::default());
    assert_eq!(run(&site, &dir).ops, []);
    site.accounts
        .get_mut(&Key::new("physics", "ada"))
        .unwrap()
        .spec
        .login_shell = Some("/bin/zsh".into());
    let p = run(&site, &dir);
    assert_eq!(p.ops.len(), 1);
    match &p.ops[0] {
        Op::Modify { changes, .. } => assert_eq!(
            changes,
            &[AttrChange::Replace(
                "loginShell".into(),
                vec!["/bin/zsh".into()]
            )]
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn lock_and_unlock_use_ppolicy_and_shadow_expire_never_the_shell() {
    let mut site = Site::default();
    account(&mut site, "physics", "ada", |_| {});
    let dir = converge(&site, &Observed::default());
    site.accounts
        .get_mut(&Key::new("physics", "ada"))
        .unwrap()
        .spec
        .locked = true;
    let p = run(&site, &dir);
    let Op::Modify { changes, .. } = &p.ops[0] else {
        panic!()
    };
    let names: Vec<&str> = changes
        .iter()
        .map(|c| match c {
            AttrChange::Replace(a, _) => a.as_str(),
            _ => "",
        })
        .collect();
    assert_eq!(
        names,
        [
            "pwdAccountLockedTime",
            "rosterDeactivatedAt",
            "rosterState",
            "shadowExpire"
        ]
    );
    assert!(changes.contains(&AttrChange::Replace(
        "pwdAccountLockedTime".into(),
        vec![LOCKED_FOREVER.into()]
    )));
    assert!(changes.contains(&AttrChange::Replace(
        "shadowExpire".into(),
        vec!["1".into()]
    )));
    assert_eq!(
        status(&p, Kind::Account, "physics", "ada").phase,
        Phase::Deactivated
    );
    let locked = simulate(&dir, &p, config().uid_range, config().gid_range);
    assert_eq!(run(&site, &locked).ops, [], "a lock is stable");
    // Locking the Person deactivates the account too.
    site.accounts
        .get_mut(&Key::new("physics", "ada"))
        .unwrap()
        .spec
        .locked = false;
    site.people
        .get_mut(&Key::new("physics", "ada"))
        .unwrap()
        .spec
        .locked = true;
    assert_eq!(
        run(&site, &locked).ops,
        [],
        "still locked, through the Person"
    );
    site.people
        .get_mut(&Key::new("physics", "ada"))
        .unwrap()
        .spec
        .locked = false;
    let p = run(&site, &locked);
    let Op::Modify { changes, .. } = &p.ops[0] else {
        panic!()
    };
    assert!(changes.contains(&AttrChange::Replace("pwdAccountLockedTime".into(), vec![])));
    assert!(changes.contains(&AttrChange::Replace("shadowExpire".into(), vec![])));
}

#[test]
fn validity_sets_shadow_expire_and_the_wakeup_then_deactivates() {
    let mut site = Site::default();
    account(&mut site, "physics", "ada", |a| {
        a.valid_until = Some("2026-12-31".into())
    });
    let p = run(&site, &Observed::default());
    let Op::Add { attrs, .. } = &p.ops[0] else {
        panic!()
    };
    // Valid through 2026-12-31: expires on 2027-01-01 = day 20819.
    assert_eq!(attrs["shadowExpire"], ["20819"]);
    // Validity ending during a day: the day after, never the day itself (a consumer refuses
    // from the start of the shadowExpire day, which would be before the end of validity).
    let mut midday = Site::default();
    account(&mut midday, "physics", "ada", |a| {
        a.valid_until = Some("2026-12-31T12:00:00Z".into())
    });
    let pm = run(&midday, &Observed::default());
    let Op::Add { attrs: at_noon, .. } = &pm.ops[0] else {
        panic!()
    };
    assert_eq!(at_noon["shadowExpire"], ["20819"]);
    // The next wake-up announces the expiry 14 days ahead (gracePeriods.expiryWarning).
    assert_eq!(p.next_wakeup, Some("2026-12-18T00:00:00Z".parse().unwrap()));
    let s = status(&p, Kind::Account, "physics", "ada");
    assert_eq!(
        s.next_transition,
        Some(("Expire", "2027-01-01T00:00:00Z".parse().unwrap()))
    );
    site.accounts
        .get_mut(&Key::new("physics", "ada"))
        .unwrap()
        .spec
        .valid_until = Some("2026-11-01".into());
    let p = run(&site, &Observed::default());
    assert_eq!(
        status(&p, Kind::Account, "physics", "ada").phase,
        Phase::Deactivated
    );
    assert_eq!(p.next_wakeup, None);
}

#[test]
fn names_owned_by_others_are_conflicts_and_nothing_is_written_for_them() {
    let mut site = Site::default();
    account(&mut site, "chemistry", "ada", |_| {});
    let theirs = entry(
        "uid=ada,ou=people,dc=test",
        &[
            (
                "objectClass",
                &["inetOrgPerson", "posixAccount", "rosterManaged"],
            ),
            ("uid", &["ada"]),
            ("uidNumber", &["20005"]),
            ("rosterOwner", &["dev/physics/Account/ada"]),
            ("rosterIdentity", &["physics/ada"]),
        ],
    );
    let mut dir = Observed::default();
    dir.accounts.insert("ada".into(), theirs.clone());
    let p = run(&site, &dir);
    assert_eq!(p.ops, []);
    let s = status(&p, Kind::Account, "chemistry", "ada");
    assert_eq!(s.phase, Phase::Conflict);
    assert!(s.message().unwrap().contains("already taken"));
    // Another installation's entry: also never touched.
    let mut other = theirs.clone();
    other.attrs.insert(
        "rosterowner".into(),
        vec!["files/chemistry/Account/ada".into()],
    );
    dir.accounts.insert("ada".into(), other);
    let p = run(&site, &dir);
    assert_eq!(p.ops, []);
    assert!(
        status(&p, Kind::Account, "chemistry", "ada")
            .message()
            .unwrap()
            .contains("another Roster installation")
    );
}

#[test]
fn unmarked_entries_are_adopted_only_with_config_and_annotation() {
    let unmarked = entry(
        "uid=ada,ou=legacy,dc=test",
        &[
            ("objectClass", &["inetOrgPerson", "posixAccount"]),
            ("uid", &["ada"]),
            ("cn", &["Ada"]),
            ("uidNumber", &["20500"]),
        ],
    );
    let mut dir = Observed::default();
    dir.accounts.insert("ada".into(), unmarked);
    let mut site = Site::default();
    account(&mut site, "physics", "ada", |_| {});
    let p = run(&site, &dir);
    assert_eq!(
        status(&p, Kind::Account, "physics", "ada").phase,
        Phase::Conflict
    );
    assert!(p.ops.iter().all(|o| o.dn() != "uid=ada,ou=legacy,dc=test"));
    // With the annotation, in an allowed namespace: adopted in place, number kept.
    let a = site.accounts.get_mut(&Key::new("physics", "ada")).unwrap();
    a.metadata.annotations = Some(BTreeMap::from([(
        "roster.io/adopt".to_string(),
        "true".to_string(),
    )]));
    let p = run(&site, &dir);
    let Op::Modify { dn, changes, .. } = &p.ops[0] else {
        panic!("{:?}", p.ops)
    };
    assert_eq!(dn, "uid=ada,ou=legacy,dc=test");
    assert_eq!(
        changes[0],
        AttrChange::Add(
            "objectClass".into(),
            vec!["rosterManaged".into(), "shadowAccount".into()]
        )
    );
    assert!(changes.contains(&AttrChange::Replace(
        "rosterAdopted".into(),
        vec!["TRUE".into()]
    )));
    assert_eq!(
        status(&p, Kind::Account, "physics", "ada").uid_number,
        Some(20500)
    );
    // The same annotation in a namespace the config does not allow: refused.
    let mut site2 = Site::default();
    account(&mut site2, "chemistry", "ada", |_| {});
    site2
        .accounts
        .get_mut(&Key::new("chemistry", "ada"))
        .unwrap()
        .metadata
        .annotations = Some(BTreeMap::from([(
        "roster.io/adopt".to_string(),
        "true".to_string(),
    )]));
    assert_eq!(
        status(&run(&site2, &dir), Kind::Account, "chemistry", "ada").phase,
        Phase::Conflict
    );
}

#[test]
fn declared_numbers_outside_the_site_ranges_are_invalid_and_unwritten() {
    // uid 1 (daemon, and its personal group's gid 1) and gid 27 (sudo on Debian): a namespace
    // may not put a system uid or gid into the directory by declaring it.
    let mut site = Site::default();
    account(&mut site, "physics", "ada", |a| a.uid_number = Some(1));
    project(&mut site, "physics", "wheel", |p| p.gid_number = Some(27));
    account(&mut site, "physics", "bob", |a| a.uid_number = Some(29999));
    project(&mut site, "physics", "optics", |p| {
        p.gid_number = Some(20000)
    });
    let p = run(&site, &Observed::default());
    for (kind, name, says) in [
        (
            Kind::Account,
            "ada",
            "spec.uidNumber 1 is outside the configured uidRange 20000..29999",
        ),
        (
            Kind::Project,
            "wheel",
            "spec.gidNumber 27 is outside the configured gidRange 20000..29999",
        ),
    ] {
        blocked(&p, kind, "physics", name, Phase::Invalid, says);
    }
    // The ends of the ranges are inside.
    assert_eq!(
        status(&p, Kind::Account, "physics", "bob").uid_number,
        Some(29999)
    );
    assert_eq!(
        status(&p, Kind::Project, "physics", "optics").phase,
        Phase::Pending
    );
}

#[test]
fn tombstones_keep_names_for_their_identity_only() {
    let tomb = entry(
        "cn=Account:ada,ou=tombstones,dc=test",
        &[
            ("objectClass", &["rosterTombstone"]),
            ("cn", &["Account:ada"]),
            ("uid", &["ada"]),
            ("uidNumber", &["20042"]),
            ("rosterOwner", &["dev/physics/Account/ada"]),
            ("rosterIdentity", &["physics/ada"]),
        ],
    );
    let mut dir = Observed::default();
    dir.tombstones.insert("Account:ada".into(), tomb);
    let mut site = Site::default();
    account(&mut site, "physics", "ada", |_| {});
    let p = run(&site, &dir);
    let Op::Add { uid, .. } = &p.ops[0] else {
        panic!()
    };
    assert_eq!(
        uid,
        &Some(Number::Fixed(20042)),
        "same identity: same number"
    );
    let mut other = Site::default();
    account(&mut other, "chemistry", "ada", |_| {});
    let p = run(&other, &dir);
    assert_eq!(p.ops, []);
    assert_eq!(
        status(&p, Kind::Account, "chemistry", "ada").phase,
        Phase::Conflict
    );
    // Allocation never hands out a tombstoned number.
    let mut fresh = Site::default();
    account(&mut fresh, "physics", "bob", |_| {});
    let mut cfg = config();
    cfg.uid_range = crate::config::IdRange {
        min: 20042,
        max: 20043,
    };
    let plan_ = plan(&fresh, &dir, now(), &Policy::new(&cfg));
    let out = simulate(&dir, &plan_, cfg.uid_range, cfg.gid_range);
    assert_eq!(out.accounts["bob"].number("uidNumber"), Some(20043));
}

#[test]
fn duplicates_in_the_declaration_lose_to_the_first() {
    let mut site = Site::default();
    account(&mut site, "chemistry", "ada", |a| {
        a.uid_number = Some(20100)
    });
    account(&mut site, "physics", "bob", |a| a.uid_number = Some(20100));
    let p = run(&site, &Observed::default());
    assert_eq!(
        status(&p, Kind::Account, "chemistry", "ada").phase,
        Phase::Pending
    );
    let bob = status(&p, Kind::Account, "physics", "bob");
    assert_eq!(bob.phase, Phase::Conflict);
    assert!(
        bob.message()
            .unwrap()
            .contains("spec.uidNumber 20100 is also declared by Account chemistry/ada")
    );
    assert!(p.ops.iter().all(|o| o.target().key.name != "bob"));
}

#[test]
fn a_claim_from_another_namespace_never_knocks_out_the_owner() {
    // physics/ada and its project own their entries; chemistry (planned first by key order)
    // declares the same username, uid and group name.
    let mut site = Site::default();
    account(&mut site, "physics", "ada", |a| a.uid_number = Some(20100));
    project(&mut site, "physics", "optics", |p| {
        p.members = vec!["ada".into()]
    });
    let dir = converge(&site, &Observed::default());
    assert_eq!(run(&site, &dir).ops, []);
    account(&mut site, "chemistry", "ada", |a| {
        a.uid_number = Some(20100)
    });
    account(&mut site, "chemistry", "eve", |a| {
        a.uid_number = Some(20100)
    });
    project(&mut site, "chemistry", "optics", |_| {});
    // A Project (in the owner's own namespace) named like ada's personal group.
    project(&mut site, "physics", "ada", |_| {});
    let p = run(&site, &dir);
    assert_eq!(
        p.ops,
        [],
        "nothing is written, the owner keeps its membership"
    );
    assert_eq!(
        status(&p, Kind::Account, "physics", "ada").phase,
        Phase::Active
    );
    assert_eq!(
        status(&p, Kind::Project, "physics", "optics").phase,
        Phase::Active
    );
    for (kind, name, says) in [
        (
            Kind::Account,
            "ada",
            "spec.username ada is also declared by Account physics/ada",
        ),
        (
            Kind::Account,
            "eve",
            "spec.uidNumber 20100 is also declared by Account physics/ada",
        ),
        (
            Kind::Project,
            "optics",
            "groupName optics is also declared by Project physics/optics",
        ),
    ] {
        blocked(&p, kind, "chemistry", name, Phase::Conflict, says);
    }
    let group = status(&p, Kind::Project, "physics", "ada");
    assert_eq!(group.phase, Phase::Conflict);
    assert!(
        group
            .message()
            .unwrap()
            .contains("group ada is already taken"),
        "{:?}",
        group.message()
    );
}

#[test]
fn missing_references_make_the_object_invalid_and_unwritten() {
    let mut site = Site::default();
    project(&mut site, "physics", "optics", |p| {
        p.members = vec!["ghost".into()]
    });
    account(&mut site, "physics", "ada", |a| {
        a.projects = vec!["nowhere".into()];
    });
    account(&mut site, "physics", "bob", |a| {
        a.default_project = Some("optics".into())
    });
    let p = run(&site, &Observed::default());
    let optics = status(&p, Kind::Project, "physics", "optics");
    assert_eq!(optics.phase, Phase::Invalid);
    assert!(
        optics
            .message()
            .unwrap()
            .starts_with("spec.members[0]: no Account with username \"ghost\"")
    );
    let ada = status(&p, Kind::Account, "physics", "ada");
    assert!(
        ada.message()
            .unwrap()
            .starts_with("spec.projects[0]: no Project \"nowhere\"")
    );
    let bob = status(&p, Kind::Account, "physics", "bob");
    assert!(
        bob.message()
            .unwrap()
            .starts_with("spec.defaultProject: \"optics\" is not one of the account's projects")
    );
    assert!(p.ops.iter().all(|o| o.target().key.name != "optics"
        && o.target().key.name != "ada"
        && o.target().key.name != "bob"));
    // A missing Person: Invalid, never deactivated.
    let mut site = Site::default();
    account(&mut site, "physics", "eve", |a| a.person = "nobody".into());
    let p = run(&site, &Observed::default());
    assert_eq!(
        status(&p, Kind::Account, "physics", "eve").phase,
        Phase::Invalid
    );
}

#[test]
fn prune_locks_only_this_installations_accounts_in_declared_namespaces() {
    let mut site = Site::default();
    account(&mut site, "physics", "ada", |_| {});
    let mut dir = converge(&site, &Observed::default());
    let mk = |uid: &str, owner: &str| {
        entry(
            &format!("uid={uid},ou=people,dc=test"),
            &[
                (
                    "objectClass",
                    &["inetOrgPerson", "posixAccount", "rosterManaged"],
                ),
                ("uid", &[uid]),
                ("uidNumber", &["21000"]),
                ("rosterOwner", &[owner]),
                ("rosterState", &["Active"]),
            ],
        )
    };
    dir.accounts
        .insert("gone".into(), mk("gone", "dev/physics/Account/gone"));
    dir.accounts
        .insert("chem".into(), mk("chem", "dev/chemistry/Account/chem"));
    dir.accounts
        .insert("other".into(), mk("other", "files/physics/Account/other"));
    let c = config();
    let p = plan(
        &site,
        &dir,
        now(),
        &Policy {
            prune: true,
            ..Policy::new(&c)
        },
    );
    let touched: Vec<&str> = p.ops.iter().map(Op::dn).collect();
    assert_eq!(touched, ["uid=gone,ou=people,dc=test"]);
    assert_eq!(
        status(&p, Kind::Account, "physics", "gone").phase,
        Phase::Deactivated
    );
    // Without --prune nothing undeclared is touched.
    assert_eq!(run(&site, &dir).ops, []);
}

/// A small deterministic generator, so the property test needs no extra crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn random_site(rng: &mut Rng) -> Site {
    let mut site = Site::default();
    let namespaces = ["physics", "chemistry"];
    let n_projects = rng.below(4) + 1;
    let n_accounts = rng.below(12) + 1;
    let users: Vec<String> = (0..n_accounts).map(|i| format!("u{i}")).collect();
    for i in 0..n_projects {
        let ns = namespaces[(i % 2) as usize];
        let mut members = vec![];
        let mut leaders = vec![];
        for u in &users {
            if rng.chance(30) {
                members.push(u.clone());
            } else if rng.chance(10) {
                leaders.push(u.clone());
            }
        }
        let fixed_gid = rng.chance(20).then_some(25_000 + i as i64);
        project(&mut site, ns, &format!("p{i}"), |p| {
            p.members = members;
            p.leaders = leaders;
            p.gid_number = fixed_gid;
            p.description = Some(format!("project {i}, with (parens), commas and * stars"));
        });
    }
    for (i, u) in users.iter().enumerate() {
        let ns = namespaces[i % 2];
        let own: Vec<String> = site
            .projects
            .keys()
            .filter(|k| k.namespace == ns)
            .filter(|_| rng.chance(30))
            .map(|k| k.name.clone())
            .collect();
        let locked = rng.chance(15);
        let keys = if rng.chance(30) {
            vec![format!("ssh-ed25519 AAAA{i} {u}@x")]
        } else {
            vec![]
        };
        let valid = rng.chance(20).then(|| {
            if rng.chance(50) {
                "2026-01-01"
            } else {
                "2030-01-01"
            }
            .to_string()
        });
        let fixed_uid = rng.chance(20).then_some(26_000 + i as i64);
        account(&mut site, ns, u, |a| {
            a.projects = own;
            a.locked = locked;
            a.ssh_public_keys = keys;
            a.valid_until = valid;
            a.uid_number = fixed_uid;
        });
    }
    site
}

#[test]
fn planning_against_an_applied_plan_yields_nothing() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        let site = random_site(&mut rng);
        let first = converge(&site, &Observed::default());
        let again = run(&site, &first);
        assert_eq!(again.ops, [], "round {round}: second plan not empty");
        // And after an arbitrary edit, converging once is enough too.
        let mut edited = site.clone();
        if let Some(a) = edited.accounts.values_mut().next() {
            a.spec.locked = !a.spec.locked;
            a.spec.login_shell = Some("/bin/sh".into());
        }
        if let Some(p) = edited.projects.values_mut().next() {
            p.spec.members.clear();
        }
        let second = converge(&edited, &first);
        assert_eq!(
            run(&edited, &second).ops,
            [],
            "round {round}: plan after edit not empty"
        );
        // Every allocated uid is distinct.
        let uids: Vec<u32> = second
            .accounts
            .values()
            .filter_map(|e| e.number("uidNumber"))
            .collect();
        let unique: std::collections::BTreeSet<u32> = uids.iter().copied().collect();
        assert_eq!(uids.len(), unique.len(), "round {round}: duplicate uid");
    }
}

#[test]
fn a_username_held_by_two_entries_is_a_conflict_not_a_guess() {
    let mut site = Site::default();
    account(&mut site, "physics", "ada", |_| {});
    let mut dir = converge(&site, &Observed::default());
    dir.duplicate_accounts.insert(
        "ada".into(),
        vec![
            "uid=ada,ou=people,dc=test".into(),
            "uid=ada,ou=old,dc=test".into(),
        ],
    );
    let p = run(&site, &dir);
    let s = status(&p, Kind::Account, "physics", "ada");
    assert_eq!(s.phase, Phase::Conflict);
    assert!(s.message().unwrap().contains("uid=ada,ou=old,dc=test"));
    assert!(p.ops.iter().all(|o| o.target().key.name != "ada"));
}

#[test]
fn a_removed_account_is_deactivated_then_purged_behind_a_tombstone_and_its_name_kept() {
    let c = config();
    let mut site = Site::default();
    account(&mut site, "physics", "ada", |_| {});
    account(&mut site, "physics", "bob", |_| {});
    project(&mut site, "physics", "optics", |p| {
        p.members = vec!["ada".into(), "bob".into()]
    });
    let dir = converge(&site, &Observed::default());
    let ada_uid = dir.accounts["ada"].number("uidNumber").unwrap();
    // ada is removed (file mode --prune).
    let mut without = site.clone();
    without.accounts.remove(&Key::new("physics", "ada"));
    without
        .projects
        .get_mut(&Key::new("physics", "optics"))
        .unwrap()
        .spec
        .members = vec!["bob".into()];
    let prune = Policy {
        prune: true,
        ..Policy::new(&c)
    };
    let p = plan(&without, &dir, now(), &prune);
    let s = status(&p, Kind::Account, "physics", "ada");
    assert_eq!(s.phase, Phase::Deactivated);
    let purge_at = now()
        .checked_add(jiff::SignedDuration::from_hours(90 * 24))
        .unwrap();
    assert_eq!(s.next_transition, Some(("Purge", purge_at)));
    assert_eq!(p.next_wakeup, Some(purge_at));
    let deactivated = simulate(&dir, &p, c.uid_range, c.gid_range);
    assert_eq!(
        deactivated.accounts["ada"].first("rosterPurgeAt"),
        Some(generalized_time(purge_at).as_str())
    );
    // Nothing more happens before purgeAt, even without --prune (the directory remembers).
    let before = jiff::Timestamp::from_second(purge_at.as_second() - 1).unwrap();
    assert_eq!(
        plan(&without, &deactivated, before, &Policy::new(&c)).ops,
        []
    );
    // Deactivated is not removed: ada keeps her membership until the purge.
    assert!(
        deactivated.groups["optics"]
            .values("memberUid")
            .contains(&"ada".to_string())
    );
    // At purgeAt: her memberships go, the tombstone, then the entries.
    let p = plan(&without, &deactivated, purge_at, &Policy::new(&c));
    let verbs: Vec<(&str, &str)> = p.ops.iter().map(|o| (o.verb(), o.dn())).collect();
    assert_eq!(
        verbs,
        [
            ("modify", "cn=optics,ou=groups,dc=test"),
            ("add", "cn=Account:ada,ou=tombstones,dc=test"),
            ("delete", "uid=ada,ou=people,dc=test"),
            ("delete", "cn=ada,ou=groups,dc=test"),
        ]
    );
    assert_eq!(
        status(&p, Kind::Account, "physics", "ada").phase,
        Phase::Purged
    );
    let purged = simulate(&deactivated, &p, c.uid_range, c.gid_range);
    assert!(!purged.accounts.contains_key("ada"));
    assert_eq!(
        purged.tombstones["Account:ada"].number("uidNumber"),
        Some(ada_uid)
    );
    assert_eq!(
        plan(&without, &purged, purge_at, &Policy::new(&c)).ops,
        [],
        "a purge is done once"
    );
    // A project still listing the purged account carries on without it, and says so; a name
    // that never was an account stays Invalid.
    let mut stale = without.clone();
    stale
        .projects
        .get_mut(&Key::new("physics", "optics"))
        .unwrap()
        .spec
        .members = vec!["bob".into(), "ada".into()];
    let p = plan(&stale, &purged, purge_at, &Policy::new(&c));
    assert_eq!(p.ops, []);
    let optics = status(&p, Kind::Project, "physics", "optics");
    assert_eq!(optics.phase, Phase::Active);
    let note = optics
        .conditions
        .iter()
        .find(|c| c.type_ == "MembersPurged")
        .expect("MembersPurged");
    assert!(
        note.message.starts_with("spec.members[1] ada"),
        "{}",
        note.message
    );
    stale
        .projects
        .get_mut(&Key::new("physics", "optics"))
        .unwrap()
        .spec
        .members = vec!["bob".into(), "adda".into()];
    let p = plan(&stale, &purged, purge_at, &Policy::new(&c));
    assert_eq!(
        status(&p, Kind::Project, "physics", "optics").phase,
        Phase::Invalid
    );
    // The same Person declares the account again: same username, same uid.
    let back = plan(&site, &purged, purge_at, &Policy::new(&c));
    let Op::Add { uid, .. } = back
        .ops
        .iter()
        .find(|o| o.dn() == "uid=ada,ou=people,dc=test")
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(uid, &Some(Number::Fixed(ada_uid)));
    // Anyone else asking for the name: Conflict.
    let mut other = without.clone();
    account(&mut other, "chemistry", "ada", |_| {});
    let p = plan(&other, &purged, purge_at, &Policy::new(&c));
    assert_eq!(
        status(&p, Kind::Account, "chemistry", "ada").phase,
        Phase::Conflict
    );
    // A new account never gets ada's number, not even from a fresh counter.
    let mut fresh = without.clone();
    account(&mut fresh, "physics", "cyd", |_| {});
    let p = plan(&fresh, &purged, purge_at, &Policy::new(&c));
    let next = simulate(&purged, &p, c.uid_range, c.gid_range);
    assert_ne!(next.accounts["cyd"].number("uidNumber"), Some(ada_uid));
}

#[test]
fn purge_immediately_still_deactivates_first() {
    let c = config();
    let mut site = Site::default();
    account(&mut site, "physics", "ada", |_| {});
    let dir = converge(&site, &Observed::default());
    let mut removed = Policy::new(&c);
    removed
        .removed
        .insert(Key::new("physics", "ada"), DeletionPolicy::PurgeImmediately);
    let empty = Site::default();
    let p = plan(&empty, &dir, now(), &removed);
    assert!(
        p.ops.iter().all(|o| o.verb() == "modify"),
        "deactivation first"
    );
    let dir = simulate(&dir, &p, c.uid_range, c.gid_range);
    let p = plan(&empty, &dir, now(), &removed);
    assert!(
        p.ops.iter().any(|o| o.verb() == "delete"),
        "then the purge, with no grace"
    );
}

#[test]
fn expiry_is_announced_ahead_and_the_wakeup_comes_for_the_announcement() {
    let mut site = Site::default();
    account(&mut site, "physics", "soon", |a| {
        a.valid_until = Some("2026-11-30".into())
    });
    account(&mut site, "physics", "later", |a| {
        a.valid_until = Some("2027-06-30".into())
    });
    let p = run(&site, &Observed::default());
    let soon = status(&p, Kind::Account, "physics", "soon");
    let expiring = soon
        .conditions
        .iter()
        .find(|c| c.type_ == "Expiring")
        .expect("Expiring");
    assert!(
        expiring.message.contains("in 7 days"),
        "{}",
        expiring.message
    );
    let later = status(&p, Kind::Account, "physics", "later");
    assert!(later.conditions.iter().all(|c| c.type_ != "Expiring"));
    // The next wake-up is the earlier of soon's expiry and later's announcement; soon's comes first.
    assert_eq!(p.next_wakeup, Some("2026-12-01T00:00:00Z".parse().unwrap()));
    let mut only_later = Site::default();
    account(&mut only_later, "physics", "later", |a| {
        a.valid_until = Some("2027-06-30".into())
    });
    let p = run(&only_later, &Observed::default());
    assert_eq!(
        p.next_wakeup,
        Some("2027-06-17T00:00:00Z".parse().unwrap()),
        "14 days before 2027-07-01"
    );
}

#[test]
fn the_guard_holds_removals_beyond_its_limit_until_approved() {
    let mut c = config();
    c.guard.max_count = Some(25);
    c.guard.max_percent = Some(25);
    let mut site = Site::default();
    for i in 0..10 {
        account(&mut site, "physics", &format!("u{i}"), |_| {});
    }
    let dir = converge(&site, &Observed::default());
    let mut two = Site::default();
    for i in 0..2 {
        account(&mut two, "physics", &format!("u{i}"), |_| {});
    }
    let prune = Policy {
        prune: true,
        ..Policy::new(&c)
    };
    let p = plan(&two, &dir, now(), &prune);
    // 25 % of 10 managed accounts: 3 (rounded up) may go in this window; 5 are held.
    let deactivated = p
        .objects
        .iter()
        .filter(|o| o.phase == Phase::Deactivated)
        .count();
    let held: Vec<&ObjectStatus> = p.objects.iter().filter(|o| o.is_guarded()).collect();
    assert_eq!((deactivated, held.len()), (3, 5));
    assert!(p.has_blocked(), "guarded objects make the plan exit 3");
    assert!(
        held[0]
            .conditions
            .iter()
            .any(|c| c.message.contains("roster guard approve"))
    );
    let after = simulate(&dir, &p, c.uid_range, c.gid_range);
    // The window remembers what it used: nothing more goes now.
    let again = plan(&two, &after, now(), &prune);
    assert!(again.ops.is_empty(), "{:?}", again.ops);
    assert_eq!(guard_status(&c, &after, now()).used, 3);
    // An approval lifts the limit.
    let mut approved = after.clone();
    let until = now().as_second() + 3600;
    approved.counters.insert(
        GUARD_APPROVAL.into(),
        entry(
            "cn=guard-approved,ou=counters,dc=test",
            &[
                ("objectClass", &["rosterCounter"]),
                ("rosterCounterValue", &[&until.to_string()]),
            ],
        ),
    );
    let go = plan(&two, &approved, now(), &prune);
    assert_eq!(go.objects.iter().filter(|o| o.is_guarded()).count(), 0);
    let done = simulate(&approved, &go, c.uid_range, c.gid_range);
    assert_eq!(
        done.accounts
            .values()
            .filter(|e| e.first("rosterState") == Some("Deactivated"))
            .count(),
        8
    );
    // A window later the budget is back.
    let later = now()
        .checked_add(jiff::SignedDuration::from_hours(25))
        .unwrap();
    assert_eq!(guard_status(&c, &after, later).used, 0);
}

#[test]
fn an_objects_own_purge_after_applies_within_the_site_bounds() {
    let mut c = config();
    c.grace_periods.min_purge_after = "7d".into();
    c.grace_periods.max_purge_after = "30d".into();
    let mut site = Site::default();
    account(&mut site, "physics", "ada", |_| {});
    let dir = converge(&site, &Observed::default());
    let purge_in = |own: &str| {
        let mut p = Policy::new(&c);
        p.removed
            .insert(Key::new("physics", "ada"), DeletionPolicy::Deactivate);
        p.purge_after.insert(
            Key::new("physics", "ada"),
            crate::api::parse_duration(own).unwrap(),
        );
        let plan = plan(&Site::default(), &dir, now(), &p);
        let (_, at) = status(&plan, Kind::Account, "physics", "ada")
            .next_transition
            .unwrap();
        (at.as_second() - now().as_second()) / 86_400
    };
    assert_eq!(purge_in("10d"), 10);
    assert_eq!(purge_in("1d"), 7, "raised to the minimum");
    assert_eq!(purge_in("400d"), 30, "capped at the maximum");
}

#[test]
fn a_removed_project_is_deactivated_purged_behind_a_tombstone_and_keeps_its_gid_for_its_owner() {
    let c = config();
    let mut site = Site::default();
    project(&mut site, "physics", "optics", |p| {
        p.description = Some("x".into())
    });
    let dir = converge(&site, &Observed::default());
    let gid = dir.groups["optics"].number("gidNumber").unwrap();
    let prune = Policy {
        prune: true,
        ..Policy::new(&c)
    };
    let mut other = Site::default();
    account(&mut other, "physics", "ada", |_| {});
    let p = plan(&other, &dir, now(), &prune);
    assert_eq!(
        status(&p, Kind::Project, "physics", "optics").phase,
        Phase::Deactivated
    );
    let deactivated = simulate(&dir, &p, c.uid_range, c.gid_range);
    // Declared again before the purge: Active again, the removal undone.
    let back = simulate(
        &deactivated,
        &plan(&site, &deactivated, now(), &Policy::new(&c)),
        c.uid_range,
        c.gid_range,
    );
    assert_eq!(back.groups["optics"].first("rosterState"), Some("Active"));
    assert!(back.groups["optics"].first("rosterPurgeAt").is_none());
    // Not declared: purged at its time.
    let later = now()
        .checked_add(jiff::SignedDuration::from_hours(91 * 24))
        .unwrap();
    let p = plan(&other, &deactivated, later, &Policy::new(&c));
    assert_eq!(
        status(&p, Kind::Project, "physics", "optics").phase,
        Phase::Purged
    );
    let purged = simulate(&deactivated, &p, c.uid_range, c.gid_range);
    assert!(!purged.groups.contains_key("optics"));
    assert_eq!(
        purged.tombstones["Project:optics"].number("gidNumber"),
        Some(gid)
    );
    // The same Project again: the same gid; another namespace: Conflict.
    let again = plan(&site, &purged, later, &Policy::new(&c));
    let Op::Add { gid: g, .. } = &again.ops[0] else {
        panic!("{:?}", again.ops)
    };
    assert_eq!(g, &Some(Number::Fixed(gid)));
    let mut thief = Site::default();
    project(&mut thief, "chemistry", "optics", |_| {});
    assert_eq!(
        status(
            &plan(&thief, &purged, later, &Policy::new(&c)),
            Kind::Project,
            "chemistry",
            "optics"
        )
        .phase,
        Phase::Conflict
    );
}

fn days(n: i64) -> jiff::SignedDuration {
    jiff::SignedDuration::from_hours(n * 24)
}

fn at(t: jiff::Timestamp) -> String {
    generalized_time(t)
}

/// #19: the deadlines of a removal are decided once, by the run that declares it, from that
/// object's own policy (an import's 14 and 180 days), and recorded; a run that does not declare
/// it (another namespace's file-mode apply, a plan in a pull request) carries them out on time
/// and never recomputes them from the site's defaults (90 days).
#[test]
fn deadlines_are_decided_once_by_the_declaring_run_and_kept_by_every_other() {
    let c = config();
    let mut site = Site::default();
    account(&mut site, "physics", "ada", |_| {});
    account(&mut site, "chemistry", "bob", |_| {});
    let dir = converge(&site, &Observed::default());
    let ada = Key::new("physics", "ada");
    let mut gone = site.clone();
    gone.accounts.remove(&ada);
    // The source's run: ada is gone, deactivation after 14 days, purge after 180.
    let mut source = Policy::new(&c);
    source
        .removed
        .insert(ada.clone(), DeletionPolicy::Deactivate);
    source
        .deactivate_after
        .insert(ada.clone(), std::time::Duration::from_secs(14 * 86_400));
    source
        .purge_after
        .insert(ada.clone(), std::time::Duration::from_secs(180 * 86_400));
    let p = plan(&gone, &dir, now(), &source);
    assert_eq!(
        status(&p, Kind::Account, "physics", "ada").phase,
        Phase::Active
    );
    let recorded = simulate(&dir, &p, c.uid_range, c.gid_range);
    let e = &recorded.accounts["ada"];
    assert_eq!(e.first("rosterGoneAt"), Some(at(now()).as_str()));
    assert_eq!(
        e.first("rosterDeactivateAt"),
        Some(at(now() + days(14)).as_str())
    );
    assert_eq!(
        e.first("rosterPurgeAt"),
        Some(at(now() + days(180)).as_str())
    );
    assert!(e.first("pwdAccountLockedTime").is_none());
    // Recorded: the source's own next run writes nothing more.
    assert_eq!(plan(&gone, &recorded, now() + days(1), &source).ops, []);
    // Another namespace's run (chemistry only, no policy of ada's) a minute later: nothing.
    let mut chemistry = Site::default();
    account(&mut chemistry, "chemistry", "bob", |_| {});
    for prune in [false, true] {
        let other = Policy {
            prune,
            ..Policy::new(&c)
        };
        let p = plan(&chemistry, &recorded, now() + days(1), &other);
        assert_eq!(p.ops, [], "prune {prune}");
        assert_eq!(
            status(&p, Kind::Account, "physics", "ada").next_transition,
            Some(("Deactivate", now() + days(14)))
        );
    }
    // On its recorded day, any run deactivates, and keeps the recorded purge time.
    let p = plan(&chemistry, &recorded, now() + days(14), &Policy::new(&c));
    let locked = simulate(&recorded, &p, c.uid_range, c.gid_range);
    let e = &locked.accounts["ada"];
    assert_eq!(e.first("rosterState"), Some("Deactivated"));
    assert_eq!(e.first("pwdAccountLockedTime"), Some(LOCKED_FOREVER));
    assert_eq!(
        e.first("rosterPurgeAt"),
        Some(at(now() + days(180)).as_str())
    );
    // Not purged at the site's 90 days (+10), by either run …
    for (s, policy) in [(&chemistry, Policy::new(&c)), (&gone, source.clone())] {
        assert_eq!(plan(s, &locked, now() + days(100), &policy).ops, []);
    }
    // … but at 180.
    let p = plan(&chemistry, &locked, now() + days(180), &Policy::new(&c));
    assert!(
        p.ops
            .iter()
            .any(|o| o.verb() == "delete" && o.dn().starts_with("uid=ada"))
    );
}

/// A removal recorded before deadlines were recorded (only rosterGoneAt, still active) is not
/// deactivated by a run that does not know its policy; the source's run decides it then.
#[test]
fn a_gone_mark_without_a_deadline_waits_for_the_run_that_declares_it() {
    let c = config();
    let mut site = Site::default();
    account(&mut site, "physics", "ada", |_| {});
    let mut dir = converge(&site, &Observed::default());
    let ada = dir.accounts.get_mut("ada").unwrap();
    ada.attrs
        .insert("rostergoneat".into(), vec![at(now() - days(3))]);
    let empty = Site::default();
    let p = plan(&empty, &dir, now(), &Policy::new(&c));
    assert_eq!(p.ops, []);
    let s = status(&p, Kind::Account, "physics", "ada");
    assert_eq!(s.phase, Phase::Active);
    assert!(s.conditions.iter().any(|c| c.reason == "DeadlineUndecided"));
    let mut source = Policy::new(&c);
    let key = Key::new("physics", "ada");
    source
        .removed
        .insert(key.clone(), DeletionPolicy::Deactivate);
    source
        .deactivate_after
        .insert(key, std::time::Duration::from_secs(14 * 86_400));
    let p = plan(&empty, &dir, now(), &source);
    let d = simulate(&dir, &p, c.uid_range, c.gid_range);
    assert_eq!(
        d.accounts["ada"].first("rosterDeactivateAt"),
        Some(at(now() + days(11)).as_str()),
        "counted from when it went"
    );
}

/// An identity a run does not declare keeps its memberships until its purge: an import that did
/// not run (kept), an account absent without --prune, a removed one; another namespace's member
/// follows the project's own list.
#[test]
fn undeclared_identities_keep_their_memberships_until_purged() {
    let c = config();
    let mut site = Site::default();
    for u in ["ada", "imp", "gone"] {
        account(&mut site, "physics", u, |a| {
            a.projects = vec!["optics".into()]
        });
    }
    account(&mut site, "chemistry", "bob", |_| {});
    project(&mut site, "physics", "optics", |p| {
        p.members = vec!["bob".into()]
    });
    let dir = converge(&site, &Observed::default());
    let mut members: Vec<String> = dir.groups["optics"].values("memberUid").to_vec();
    members.sort();
    assert_eq!(members, ["ada", "bob", "gone", "imp"]);
    // physics alone: imp's source did not run (kept), gone is absent (no --prune), bob's project
    // list no longer names him.
    let mut physics = Site::default();
    account(&mut physics, "physics", "ada", |a| {
        a.projects = vec!["optics".into()]
    });
    project(&mut physics, "physics", "optics", |_| {});
    let mut policy = Policy::new(&c);
    policy.keep.insert(Key::new("physics", "imp"));
    let p = plan(&physics, &dir, now(), &policy);
    let after = simulate(&dir, &p, c.uid_range, c.gid_range);
    let mut members: Vec<String> = after.groups["optics"].values("memberUid").to_vec();
    members.sort();
    assert_eq!(members, ["ada", "gone", "imp"]);
    assert!(
        p.retained
            .contains(&("imp".to_string(), "optics".to_string()))
    );
    assert!(
        p.retained
            .contains(&("gone".to_string(), "optics".to_string()))
    );
    assert!(!p.retained.iter().any(|(u, _)| u == "ada" || u == "bob"));
    assert_eq!(
        plan(&physics, &after, now(), &policy).ops,
        [],
        "and stays so"
    );
}
