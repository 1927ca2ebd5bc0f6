//! The site in a box: what Roster wrote, seen through the systems that consume it. sssd (the
//! machine's, configured as README "Making a lock block logins" says; `hack/lib/sssd.sh`) answers
//! `getent`, `id` and the PAM account check (`pamtester roster-login USER acct_mgmt`, the phase
//! every login passes, SSH keys included); slurmctld with slurmd (`hack/lib/slurmctld.sh`,
//! `AccountingStorageEnforce=associations,limits,qos`) accepts or refuses `sbatch --uid USER`.
//! Nothing here reads slapd or slurmdbd to decide: only the consumers' answers count.
//!
//! Every test uses names and a uid range of its own (sssd sees the whole dev directory, every
//! test's subtree), so tests run in parallel; the restart test runs a slurmctld of its own.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::*;

/// A test's world: its subtree and config (uid range of its own, the cluster `box`), names with
/// its own prefix, and its scratch directory.
struct World {
    tree: TestTree,
    dir: PathBuf,
    config: PathBuf,
    prefix: String,
    slurm_conf: PathBuf,
}

fn require_consumers() -> (String, PathBuf) {
    let env = dev_env();
    let (Some(cluster), Some(conf)) = (env.get("BOX_CLUSTER"), env.get("BOX_SLURM_CONF")) else {
        panic!(
            "the consumers are not running: hack/dev-up.sh starts sssd and slurmctld when run as root (make test does)"
        );
    };
    (cluster.clone(), PathBuf::from(conf))
}

/// The tree's config with the dev slurmdbd's cluster `cluster` (the machine's slurmctld's, or a
/// test's own).
fn slurm_config(tree: &TestTree, dir: &Path, cluster: &str) -> PathBuf {
    let dev = repo_root().join(".dev");
    tree.write_config_with(
        dir,
        &format!(
            "slurm:\n  clusters: [{cluster}]\n  slurmConf: {}\n  sacctmgr: sacctmgr\n  databaseUrlFile: {}\n  rootAccount: root\n",
            dev.join("slurm/slurm.conf").display(),
            dev.join("slurm/ro.url").display(),
        ),
    )
}

impl World {
    /// `slot` gives the test its uid/gid range: 100 numbers from 40000 + 100 × slot.
    async fn new(name: &str, slot: u32) -> World {
        let (cluster, slurm_conf) = require_consumers();
        let mut tree = TestTree::new(name).await;
        let base = 40_000 + 100 * slot;
        tree.config.uid_range = roster::config::IdRange {
            min: base,
            max: base + 99,
        };
        tree.config.gid_range = roster::config::IdRange {
            min: base,
            max: base + 99,
        };
        let dir = scratch(name);
        let config = slurm_config(&tree, &dir, &cluster);
        let prefix = format!("c{}{}", std::process::id() % 100_000, slot);
        World {
            tree,
            dir,
            config,
            prefix,
            slurm_conf,
        }
    }

    fn name(&self, base: &str) -> String {
        format!("{}{base}", self.prefix)
    }

    /// `roster apply -f` of `manifests` (with `extra` flags such as `--now`), which must work.
    fn apply(&self, manifests: &str, extra: &[&str]) {
        let file = self.dir.join("site.yaml");
        std::fs::write(&file, manifests).unwrap();
        let mut args = vec![
            "apply".to_string(),
            "-f".into(),
            file.display().to_string(),
            "--config".into(),
            self.config.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = roster(&a);
        assert_eq!(code, 0, "roster apply: {out}{err}");
    }

    /// `sbatch --test-only` as `user` in `account`: accepted, and what sbatch said.
    fn sbatch_test(&self, user: &str, account: &str) -> (bool, String) {
        sbatch(&self.slurm_conf, user, account, &["--test-only"])
    }
}

/// A Person, its Account (`extra` more spec lines) and nothing else.
fn person_with(ns: &str, user: &str, person_extra: &str, account_extra: &str) -> String {
    format!(
        "---\napiVersion: roster.io/v1alpha1\nkind: Person\nmetadata: {{name: {user}, namespace: {ns}}}\nspec:\n  givenName: Test\n  familyName: {user}\n{person_extra}---\napiVersion: roster.io/v1alpha1\nkind: Account\nmetadata: {{name: {user}, namespace: {ns}}}\nspec:\n  person: {user}\n  username: {user}\n{account_extra}"
    )
}

fn project(ns: &str, name: &str, members: &[&str]) -> String {
    format!(
        "---\napiVersion: roster.io/v1alpha1\nkind: Project\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  members: [{}]\n",
        members.join(", ")
    )
}

/// `getent -s sss passwd USER`: the line, if sssd knows the user.
fn getent_passwd(user: &str) -> Option<String> {
    let out = Command::new("getent")
        .args(["-s", "sss", "passwd", user])
        .output()
        .expect("getent runs");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `id USER` through NSS (files, then sss).
fn id(user: &str) -> String {
    let out = Command::new("id").arg(user).output().expect("id runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The PAM account phase through sssd: whether it lets `user` in, and what pamtester said.
fn pam_account(user: &str) -> (bool, String) {
    let out = Command::new("pamtester")
        .args(["roster-login", user, "acct_mgmt"])
        .output()
        .expect("pamtester runs (hack/lib/sssd.sh installs it)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A password login through sssd (PAM's auth phase, the password on pamtester's input).
fn pam_password(user: &str, password: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("pamtester")
        .args(["roster-login", user, "authenticate"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("pamtester runs");
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `sbatch --uid USER -A ACCOUNT` (as root, for the user) with `extra`.
fn sbatch(conf: &Path, user: &str, account: &str, extra: &[&str]) -> (bool, String) {
    let out = Command::new("sbatch")
        .args(["--uid", user, "-A", account])
        .args(extra)
        .args(["--wrap", "id"])
        .env("SLURM_CONF", conf)
        .output()
        .expect("sbatch runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn a_new_account_logs_in_and_runs_a_job_in_its_project_without_a_controller_restart() {
    let b = World::new("cons-new", 0).await;
    let (user, lab) = (b.name("ada"), b.name("lab"));
    // Before: the controller refuses a user nobody declared, and sssd does not know them. Asked
    // of another undeclared name: a lookup of `user` itself now would leave a "not found" in
    // sssd's negative cache, and slurmctld, resolving the uid when the association arrives,
    // would keep refusing the user (README "Slurm accounting").
    let stranger = b.name("nobody");
    assert_eq!(getent_passwd(&stranger), None);
    let (ok, said) = b.sbatch_test(&stranger, &lab);
    assert!(!ok, "a job for a user nobody declared: {said}");
    b.apply(
        &(person_with(
            "physics",
            &user,
            "",
            &format!("  projects: [{lab}]\n  defaultProject: {lab}\n  loginShell: /bin/zsh\n"),
        ) + &project("physics", &lab, &[])),
        &[],
    );
    let took = wait_within("sssd to show the new account", 60, || {
        getent_passwd(&user).is_some()
    });
    let line = getent_passwd(&user).unwrap();
    let fields: Vec<&str> = line.split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    assert!((40_000..40_100).contains(&uid), "{line}");
    assert_eq!(fields[5], format!("/home/{user}"), "{line}");
    assert_eq!(fields[6], "/bin/zsh", "{line}");
    let groups = id(&user);
    assert!(
        groups.contains(&format!("({lab})")),
        "project group in id: {groups}"
    );
    let (ok, said) = pam_account(&user);
    assert!(ok, "the PAM account check: {said}");
    // The association reached the running controller (slurmdbd pushes it): a real job runs as
    // the user, in the project, with no restart of slurmctld.
    let out_dir = b.dir.join("jobs");
    std::fs::create_dir_all(&out_dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&out_dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(&b.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = out_dir.join("job.out");
    let mut submitted = String::new();
    let job_took = wait_within("a job accepted for the new account", 60, || {
        let (ok, said) = sbatch(
            &b.slurm_conf,
            &user,
            &lab,
            &["-o", &output.display().to_string()],
        );
        submitted = said;
        ok
    });
    wait_within("the job's output", 60, || {
        std::fs::read_to_string(&output).is_ok_and(|t| t.contains(&format!("uid={uid}({user})")))
    });
    eprintln!(
        "sssd showed the account {:.1} s after the apply; a job was accepted {:.1} s later ({})",
        took.as_secs_f64(),
        job_took.as_secs_f64(),
        submitted.trim()
    );
    b.tree.cleanup().await;
}

#[tokio::test]
async fn a_lock_on_the_account_or_its_person_keeps_logins_and_jobs_out_until_unlocked() {
    let b = World::new("cons-lock", 1).await;
    let (user, lab) = (b.name("bob"), b.name("lab"));
    let site = |person: &str, account: &str| {
        person_with(
            "physics",
            &user,
            person,
            &format!("  projects: [{lab}]\n  defaultProject: {lab}\n{account}"),
        ) + &project("physics", &lab, &[])
    };
    b.apply(&site("", ""), &[]);
    wait_within("an open account", 60, || {
        pam_account(&user).0 && b.sbatch_test(&user, &lab).0
    });
    // A password of the site's own (Roster does not manage passwords): a password login works.
    let dn = format!("uid={user},{}", b.tree.config.people_dn());
    admin()
        .await
        .modify(
            &dn,
            vec![ldap3::Mod::Replace("userPassword", ["s3cret-Pw"].into())],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    assert!(
        pam_password(&user, "s3cret-Pw").0,
        "{}",
        pam_password(&user, "s3cret-Pw").1
    );
    for (person, account, what) in [
        ("", "  locked: true\n", "locked: true on the Account"),
        ("  locked: true\n", "", "locked: true on the Person"),
    ] {
        b.apply(&site(person, account), &[]);
        wait_within(&format!("{what}: PAM refuses"), 60, || {
            !pam_account(&user).0
        });
        wait_within(&format!("{what}: sbatch refuses"), 60, || {
            !b.sbatch_test(&user, &lab).0
        });
        let (_, said) = b.sbatch_test(&user, &lab);
        assert!(said.contains("AssocMaxSubmitJobLimit"), "{what}: {said}");
        // The password bind itself is refused (the ppolicy overlay: result 49).
        let (ok, said) = pam_password(&user, "s3cret-Pw");
        assert!(!ok, "{what}: a password login went through: {said}");
        // The user still resolves (a lock is not a removal): files keep their owner.
        assert!(getent_passwd(&user).is_some());
        b.apply(&site("", ""), &[]);
        wait_within(&format!("{what} lifted: PAM lets in"), 60, || {
            pam_account(&user).0
        });
        wait_within(&format!("{what} lifted: sbatch accepts"), 60, || {
            b.sbatch_test(&user, &lab).0
        });
    }
    b.tree.cleanup().await;
}

/// The two attributes of Roster's lock each keep the user out on their own, so a lock survives
/// an edit that loses one of them (README "Making a lock block logins").
#[tokio::test]
async fn each_half_of_the_lock_refuses_logins_by_itself() {
    let b = World::new("cons-halves", 2).await;
    let user = b.name("cy");
    b.apply(&person_with("physics", &user, "", "  locked: true\n"), &[]);
    wait_within("the locked account known to sssd", 60, || {
        getent_passwd(&user).is_some()
    });
    let dn = format!("uid={user},{}", b.tree.config.people_dn());
    let mut ldap = admin().await;
    for (drop_attr, refused_by) in [
        ("shadowExpire", "ppolicy (pwdAccountLockedTime)"),
        ("pwdAccountLockedTime", "shadow expiry (shadowExpire)"),
    ] {
        b.apply(&person_with("physics", &user, "", "  locked: true\n"), &[]);
        ldap.modify(&dn, vec![ldap3::Mod::Delete(drop_attr, Default::default())])
            .await
            .unwrap()
            .success()
            .unwrap();
        // The ppolicy check reads the directory at each login; the expiry check reads sssd's
        // copy of the entry, which a login refreshes when older than pam_id_timeout (5 s).
        wait_within(
            &format!("without {drop_attr}, {refused_by} to refuse"),
            30,
            || !pam_account(&user).0,
        );
    }
    b.tree.cleanup().await;
}

#[tokio::test]
async fn validity_ends_at_sssds_shadow_expiry_never_a_day_early() {
    let b = World::new("cons-expiry", 3).await;
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let yesterday = today.yesterday().unwrap();
    let (gone, lasts) = (b.name("dee"), b.name("eve"));
    // Applied three days ago: valid through yesterday, so nothing was locked then; only the
    // day count the directory holds (shadowExpire = today) refuses the login now.
    let three_days_ago =
        (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(72)).to_string();
    b.apply(
        &person_with(
            "physics",
            &gone,
            "",
            &format!("  validUntil: \"{yesterday}\"\n"),
        ),
        &["--now", &three_days_ago],
    );
    wait_within("the expired account known to sssd", 60, || {
        getent_passwd(&gone).is_some()
    });
    let (ok, said) = pam_account(&gone);
    assert!(!ok, "valid through yesterday, still let in: {said}");
    assert!(said.contains("expired"), "{said}");
    // Valid until the last second of today: let in today. (Rounding the day count down would
    // refuse from this morning.)
    b.apply(
        &person_with(
            "physics",
            &lasts,
            "",
            &format!("  validUntil: \"{today}T23:59:59Z\"\n"),
        ),
        &[],
    );
    wait_within("the account known to sssd", 60, || {
        getent_passwd(&lasts).is_some()
    });
    let (ok, said) = pam_account(&lasts);
    assert!(ok, "valid until tonight, refused today: {said}");
    b.tree.cleanup().await;
}

#[tokio::test]
async fn a_guest_past_its_login_grace_is_kept_out_and_an_extension_lets_it_back() {
    let b = World::new("cons-guest", 4).await;
    let (host, guest, lab) = (b.name("host"), b.name("vis"), b.name("lab"));
    let site = |valid: &str| {
        person_with("physics", &host, "", &format!("  projects: [{lab}]\n"))
            + &format!(
                "---\napiVersion: roster.io/v1alpha1\nkind: Project\nmetadata: {{name: {lab}, namespace: physics}}\nspec:\n  leaders: [{host}]\n---\napiVersion: roster.io/v1alpha1\nkind: Guest\nmetadata: {{name: {guest}, namespace: physics}}\nspec:\n  type: Personal\n  host: {host}\n  adminGroup: {lab}\n  validUntil: \"{valid}\"\n  person: {{givenName: Vera, familyName: Visitor}}\n  account: {{username: {guest}, projects: [{lab}]}}\n"
            )
    };
    let next_year = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .checked_add(jiff::Span::new().days(300))
        .unwrap();
    b.apply(&site(&next_year.to_string()), &[]);
    wait_within("the guest lets in and submits", 60, || {
        pam_account(&guest).0 && b.sbatch_test(&guest, &lab).0
    });
    // Its visit ended long ago: past the login grace, locked.
    b.apply(&site("2020-01-31"), &[]);
    wait_within("the expired guest refused by PAM", 60, || {
        !pam_account(&guest).0
    });
    wait_within("the expired guest refused by slurmctld", 60, || {
        !b.sbatch_test(&guest, &lab).0
    });
    // Extended: back in.
    b.apply(&site(&next_year.to_string()), &[]);
    wait_within("the extended guest let in", 60, || pam_account(&guest).0);
    wait_within("the extended guest submits", 60, || {
        b.sbatch_test(&guest, &lab).0
    });
    b.tree.cleanup().await;
}

#[tokio::test]
async fn a_removed_project_refuses_its_members_jobs_and_leaves_id_at_its_purge() {
    let b = World::new("cons-proj", 5).await;
    let (user, lab, other) = (b.name("fay"), b.name("lab"), b.name("keep"));
    let people = person_with(
        "physics",
        &user,
        "",
        &format!("  projects: [{lab}, {other}]\n  defaultProject: {other}\n"),
    );
    b.apply(
        &(people.clone() + &project("physics", &lab, &[]) + &project("physics", &other, &[])),
        &[],
    );
    wait_within("both projects usable", 60, || {
        b.sbatch_test(&user, &lab).0 && b.sbatch_test(&user, &other).0
    });
    assert!(id(&user).contains(&format!("({lab})")));
    // The project leaves the manifests (and the account's list): deactivated, not yet purged.
    let people = person_with(
        "physics",
        &user,
        "",
        &format!("  projects: [{other}]\n  defaultProject: {other}\n"),
    );
    b.apply(
        &(people.clone() + &project("physics", &other, &[])),
        &["--prune"],
    );
    wait_within("the removed project's jobs refused", 60, || {
        !b.sbatch_test(&user, &lab).0
    });
    assert!(
        b.sbatch_test(&user, &other).0,
        "the other project still works"
    );
    // Its purge, a year on: the group is gone from id.
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 400)).to_string();
    b.apply(
        &(people + &project("physics", &other, &[])),
        &["--prune", "--now", &later],
    );
    wait_within("the purged project's group gone from id", 60, || {
        !id(&user).contains(&format!("({lab})"))
    });
    assert!(id(&user).contains(&format!("({other})")), "{}", id(&user));
    b.tree.cleanup().await;
}

/// A controller of the test's own, restarted: the lock is in slurmdbd and the controller reads
/// it back, so a locked user stays refused (peers kept locks in the controller's memory only).
#[tokio::test]
async fn slurm_locks_survive_a_slurmctld_restart() {
    let b = World::new("cons-restart", 6).await;
    let cluster = format!("r{}", std::process::id() % 100_000);
    let ctld_dir = b.dir.join("slurmctld");
    // slurmctld and slurmd bind ports the test chooses (neither can be told port 0): a port
    // taken before they bind it makes `start` fail, and the start is tried on other ports. The
    // script writes the config at each start, so the restart chooses its ports again too.
    let run = |cmd: &str, ports: Option<(u16, u16)>| {
        let mut c = Command::new(repo_root().join("hack/lib/slurmctld.sh"));
        c.args([cmd, "--dir"])
            .arg(&ctld_dir)
            .args(["--cluster", &cluster, "--slurm-dir"])
            .arg(repo_root().join(".dev/slurm"));
        if let Some((ctld, slurmd)) = ports {
            c.args(["--ctld-port", &ctld.to_string()])
                .args(["--slurmd-port", &slurmd.to_string()]);
        }
        let status = c.stdin(Stdio::null()).status().unwrap();
        assert!(status.success(), "slurmctld.sh {cmd}");
    };
    let start = || {
        support::faults::on_free_ports("slurmctld.sh", &ctld_dir, || {
            run("start", Some((free_port(), free_port())))
        })
    };
    let stop = || run("stop", None);
    start();
    let conf = ctld_dir.join("slurm.conf");
    // The same config, for the test's own cluster.
    slurm_config(&b.tree, &b.dir, &cluster);
    let (user, lab) = (b.name("gus"), b.name("lab"));
    let site = |account: &str| {
        person_with(
            "physics",
            &user,
            "",
            &format!("  projects: [{lab}]\n  defaultProject: {lab}\n{account}"),
        ) + &project("physics", &lab, &[])
    };
    b.apply(&site(""), &[]);
    wait_within("the user submits", 60, || {
        sbatch(&conf, &user, &lab, &["--test-only"]).0
    });
    b.apply(&site("  locked: true\n"), &[]);
    wait_within("the lock enforced", 60, || {
        !sbatch(&conf, &user, &lab, &["--test-only"]).0
    });
    stop();
    start();
    let (ok, said) = sbatch(&conf, &user, &lab, &["--test-only"]);
    assert!(!ok, "after a restart the locked user submits: {said}");
    stop();
    let _ = sacctmgr(&["-i", "delete", "cluster", &cluster]);
    b.tree.cleanup().await;
}

/// Operator mode: `kubectl patch … locked: true` and the login and the job are refused; the
/// patch back, and both work again. The latencies are printed (the bench reports them at scale).
#[tokio::test]
async fn in_the_cluster_a_patched_lock_reaches_pam_and_slurmctld() {
    let b = World::new("cons-op", 7).await;
    let cluster = {
        let dir = b.dir.clone();
        tokio::task::spawn_blocking(move || Cluster::start(&dir))
            .await
            .unwrap()
    };
    let mut c = std::fs::read_to_string(&b.config).unwrap();
    c.push_str(&operator_config());
    std::fs::write(&b.config, c).unwrap();
    let (user, lab) = (b.name("hal"), b.name("lab"));
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: physics}\n";
    cluster.must(&["apply", "-f", "-"], Some(ns));
    cluster.must(
        &["apply", "-f", "-"],
        Some(
            &(person_with(
                "physics",
                &user,
                "",
                &format!("  projects: [{lab}]\n  defaultProject: {lab}\n"),
            ) + &project("physics", &lab, &[])),
        ),
    );
    let (_op, _) = operator_process(
        &b.config,
        &cluster.operator_kubeconfig,
        &b.dir.join("operator.log"),
        "cons",
        false,
        &[],
    );
    wait_within("the declared account logs in and submits", 60, || {
        pam_account(&user).0 && b.sbatch_test(&user, &lab).0
    });
    let patch = |locked: bool| {
        cluster.must(
            &[
                "patch",
                "account",
                &user,
                "-n",
                "physics",
                "--type",
                "merge",
                "-p",
                &format!("{{\"spec\":{{\"locked\":{locked}}}}}"),
            ],
            None,
        );
    };
    patch(true);
    let pam = wait_within("PAM to refuse the locked account", 60, || {
        !pam_account(&user).0
    });
    let slurm = wait_within("sbatch to refuse the locked account", 60, || {
        !b.sbatch_test(&user, &lab).0
    });
    eprintln!(
        "kubectl patch locked: true → PAM refused after {:.2} s, sbatch after {:.2} s",
        pam.as_secs_f64(),
        slurm.as_secs_f64()
    );
    patch(false);
    wait_within("PAM to let the unlocked account in", 60, || {
        pam_account(&user).0
    });
    wait_within("sbatch to accept the unlocked account", 60, || {
        b.sbatch_test(&user, &lab).0
    });
    b.tree.cleanup().await;
}
