//! Notices to people and project leaders (`roster::notice`) in file mode, against the real slapd
//! and a local relay (aiosmtpd): before an Account's and a Project's `validUntil`, and when a
//! deactivation takes effect — each once, recorded on the entry (`rosterNoticeSent`), so a run
//! later (a restart, the other mode) mails nothing again and writes nothing.

use crate::support;

use std::path::Path;

use support::*;

fn site(dir: &Path, bob_locked: bool) -> String {
    let text = format!(
        "---
apiVersion: roster.io/v1alpha1
kind: Person
metadata: {{name: ada, namespace: physics}}
spec: {{givenName: Ada, familyName: Lovelace, email: ada@physics.example.org}}
---
apiVersion: roster.io/v1alpha1
kind: Account
metadata: {{name: ada, namespace: physics}}
spec: {{person: ada, username: ada, validUntil: \"2030-06-30\", projects: [lab]}}
---
apiVersion: roster.io/v1alpha1
kind: Person
metadata: {{name: bob, namespace: physics}}
spec: {{givenName: Bob, familyName: Byte, displayName: Robert Byte, email: bob@physics.example.org}}
---
apiVersion: roster.io/v1alpha1
kind: Account
metadata: {{name: bob, namespace: physics}}
spec: {{person: bob, username: bob, locked: {bob_locked}}}
---
apiVersion: roster.io/v1alpha1
kind: Project
metadata: {{name: lab, namespace: physics}}
spec: {{leaders: [ada], members: [bob], validUntil: \"2030-06-20\"}}
"
    );
    let f = dir.join(if bob_locked {
        "locked.yaml"
    } else {
        "site.yaml"
    });
    std::fs::write(&f, text).unwrap();
    f.display().to_string()
}

/// (recipient, subject) of every message the relay has, in arrival order.
fn mails(maildir: &Path) -> Vec<(String, String)> {
    let mut out = vec![];
    for m in received(maildir) {
        let text = String::from_utf8(m).unwrap().replace("\r\n", "\n");
        let head = text.split_once("\n\n").unwrap().0.replace("\n ", " ");
        let get = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .unwrap_or_default()
                .to_string()
        };
        out.push((get("X-RcptTo"), get("Subject")));
    }
    out.sort();
    out
}

#[tokio::test]
async fn accounts_and_projects_are_told_once_before_they_end_and_when_deactivated() {
    let tree = TestTree::new("notices").await;
    let dir = scratch("notices");
    let relay = smtpd(&dir);
    let cfg = tree
        .write_config_with(
            &dir,
            &format!(
                "notices:\n  before: 14d\n  smtp: {{host: 127.0.0.1, port: {}, from: roster@hpc.example.org}}\n",
                relay.port
            ),
        )
        .display()
        .to_string();
    let run = |verb: &str, file: &str, now: &str| {
        let (code, out, err) = roster(&[verb, "-f", file, "--config", &cfg, "--now", now]);
        assert!(code == 0 || (verb == "plan" && code == 2), "{out}{err}");
        format!("{out}{err}")
    };
    let file = site(&dir, false);
    // Long before the ends: nothing to tell.
    run("apply", &file, "2030-05-01T00:00:00Z");
    assert!(mails(&relay.maildir).is_empty());

    // The project's end is within 14 days: its leader is told; planning says so and sends none.
    let planned = run("plan", &file, "2030-06-10T00:00:00Z");
    assert!(
        planned.contains("✉ Project physics/lab: projectExpiring would mail to ada@physics.example.org (expiring 2030-06-20)"),
        "{planned}"
    );
    assert!(mails(&relay.maildir).is_empty(), "a plan mails nothing");
    let out = run("apply", &file, "2030-06-10T00:00:00Z");
    assert!(
        out.contains("projectExpiring mailed to ada@physics.example.org"),
        "{out}"
    );
    assert_eq!(
        mails(&relay.maildir),
        [(
            "ada@physics.example.org".to_string(),
            "Project lab ends on 2030-06-20".to_string()
        )]
    );
    let body = String::from_utf8(received(&relay.maildir).remove(0)).unwrap();
    assert!(body.contains("Dear Ada Lovelace,"), "{body}");
    let mut ldap = admin().await;
    let group = entries(&mut ldap, &tree.dn, "(cn=lab)").await;
    assert_eq!(group[0].attrs["rosterNoticeSent"], ["expiring 2030-06-20"]);

    // The next run, a day later: nothing mailed again, nothing written.
    let before = fingerprint(&tree.dn).await;
    run("apply", &file, "2030-06-11T00:00:00Z");
    assert_eq!(mails(&relay.maildir).len(), 1);
    assert_eq!(
        fingerprint(&tree.dn).await,
        before,
        "a run with nothing to tell writes nothing"
    );

    // The account's end within 14 days, and bob locked: two more, each once.
    let locked = site(&dir, true);
    let out = run("apply", &locked, "2030-06-17T00:00:00Z");
    assert!(
        out.contains("accountExpiring mailed to ada@physics.example.org"),
        "{out}"
    );
    assert!(
        out.contains("accountDeactivated mailed to bob@physics.example.org"),
        "{out}"
    );
    run("apply", &locked, "2030-06-18T00:00:00Z");
    let got = mails(&relay.maildir);
    assert_eq!(
        got,
        [
            (
                "ada@physics.example.org".to_string(),
                "Project lab ends on 2030-06-20".to_string()
            ),
            (
                "ada@physics.example.org".to_string(),
                "Your account ada expires on 2030-06-30".to_string()
            ),
            (
                "bob@physics.example.org".to_string(),
                "Your account bob is deactivated".to_string()
            ),
        ],
        "{out}"
    );

    // The project ends: its leader is told it is deactivated.
    let out = run("apply", &locked, "2030-06-21T00:00:00Z");
    assert!(
        out.contains("projectDeactivated mailed to ada@physics.example.org"),
        "{out}"
    );
    assert_eq!(mails(&relay.maildir).len(), 4);
    let group = entries(&mut ldap, &tree.dn, "(cn=lab)").await;
    assert_eq!(
        group[0].attrs["rosterNoticeSent"],
        ["deactivated expired 2030-06-20"],
        "the record of the transition in force only"
    );

    // Bob unlocked: his record is over (removed); locked again later, he is told again.
    run("apply", &file, "2030-06-22T00:00:00Z");
    let bob = entries(&mut ldap, &tree.dn, "(uid=bob)").await;
    assert!(
        !bob[0].attrs.contains_key("rosterNoticeSent"),
        "{:?}",
        bob[0].attrs
    );
    run("apply", &locked, "2030-06-23T00:00:00Z");
    let to_bob = mails(&relay.maildir)
        .into_iter()
        .filter(|(to, _)| to == "bob@physics.example.org")
        .count();
    assert_eq!(to_bob, 2);
    tree.cleanup().await;
}
