//! The directory's change feed (`roster::ldap::feed`, RFC 4533 refreshAndPersist against the
//! dev slapd's syncprov): an observation kept current from it equals a fresh bulk observation
//! after every kind of write a pass makes — accounts, groups and counters added, an account
//! locked, one deactivated, then purged behind a tombstone — and after a write behind Roster's
//! back. The ground for incremental passes (issue 26).

use crate::support;

use std::path::PathBuf;
use std::time::Duration;

use roster::ldap::Directory;
use roster::ldap::feed::{Feed, Follower};
use support::{TestTree, person_account, roster, scratch};

/// Applies the feed's messages until the follower's observation equals a fresh one of `base`
/// (read again after every message); panics after 30 s.
async fn caught_up(feed: &mut Feed, follower: &mut Follower, fresh: &mut Directory, base: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = fresh.observe(base, 500).await.unwrap();
        if follower.observed == now {
            return;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, feed.next()).await {
            Ok(r) => follower.apply(r.unwrap().expect("the feed ended")),
            Err(_) => assert_eq!(follower.observed, now, "the feed fell behind for 30 s"),
        }
    }
}

#[tokio::test]
async fn a_followed_observation_equals_a_fresh_one_after_every_kind_of_write() {
    let tree = TestTree::new("feed").await;
    let dir = scratch("feed");
    let cfg = tree.write_config(&dir);
    let config = roster::config::Config::load(&cfg).unwrap();
    let base = tree.dn.clone();
    let p = format!("f{}", std::process::id() % 100000);
    let site = |name: &str, users: &[&str], spec: &dyn Fn(&str) -> String| -> String {
        let members: Vec<String> = users.iter().map(|u| format!("{p}{u}")).collect();
        let mut s = format!(
            "---\napiVersion: roster.io/v1alpha1\nkind: Project\nmetadata: {{name: {p}, namespace: physics}}\nspec:\n  members: [{}]\n",
            members.join(", ")
        );
        for u in users {
            s.push_str(&person_account("physics", &format!("{p}{u}"), &spec(u)));
            s.push('\n');
        }
        let f: PathBuf = dir.join(format!("{name}.yaml"));
        std::fs::write(&f, s).unwrap();
        f.display().to_string()
    };
    let cfg = cfg.display().to_string();
    let apply = |file: &str, now: &str, extra: &[&str]| {
        let mut args = vec!["apply", "-f", file, "--config", &cfg, "--now", now];
        args.extend(extra);
        let (code, out, err) = roster(&args);
        assert_eq!(code, 0, "{out}{err}");
    };
    let mut feed = Directory::connect(&config)
        .await
        .unwrap()
        .follow(&base)
        .await
        .unwrap();
    let mut follower = Follower::default();
    while !follower.refreshed {
        follower.apply(feed.next().await.unwrap().expect("the feed ended"));
    }
    let mut fresh = Directory::connect(&config).await.unwrap();
    caught_up(&mut feed, &mut follower, &mut fresh, &base).await;
    assert!(follower.observed.accounts.is_empty());

    // Three accounts, their groups, the project and the counters.
    let plain = |_: &str| String::new();
    let three = site("three", &["a", "b", "c"], &plain);
    apply(&three, "2030-01-01T00:00:00Z", &[]);
    caught_up(&mut feed, &mut follower, &mut fresh, &base).await;
    assert_eq!(follower.observed.accounts.len(), 3);
    assert!(!follower.observed.counters.is_empty());
    // One locked.
    let lock_b = |u: &str| {
        if u == "b" {
            "  locked: true\n".to_string()
        } else {
            String::new()
        }
    };
    let locked = site("locked", &["a", "b", "c"], &lock_b);
    apply(&locked, "2030-01-01T00:00:00Z", &[]);
    caught_up(&mut feed, &mut follower, &mut fresh, &base).await;
    assert!(
        follower.observed.accounts[&format!("{p}b")]
            .attrs
            .contains_key("pwdaccountlockedtime")
    );
    // One removed (deactivated), then purged behind its tombstone: entries leave the feed.
    let two = site("two", &["a", "b"], &lock_b);
    apply(&two, "2030-01-02T00:00:00Z", &["--prune"]);
    caught_up(&mut feed, &mut follower, &mut fresh, &base).await;
    apply(&two, "2030-06-01T00:00:00Z", &[]);
    caught_up(&mut feed, &mut follower, &mut fresh, &base).await;
    assert!(!follower.observed.accounts.contains_key(&format!("{p}c")));
    assert!(
        follower
            .observed
            .tombstones
            .contains_key(&format!("Account:{p}c"))
    );
    // A write behind Roster's back.
    let mut ldap = support::admin().await;
    let dn = follower.observed.accounts[&format!("{p}a")].dn.clone();
    ldap.modify(
        &dn,
        vec![ldap3::Mod::Replace("loginShell", ["/bin/false"].into())],
    )
    .await
    .unwrap()
    .success()
    .unwrap();
    caught_up(&mut feed, &mut follower, &mut fresh, &base).await;
    assert_eq!(
        follower.observed.accounts[&format!("{p}a")].attrs["loginshell"],
        ["/bin/false"]
    );
    assert!(!follower.lost);
    tree.cleanup().await;
}
