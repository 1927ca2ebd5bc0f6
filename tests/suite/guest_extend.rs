//! `roster guest extend`: the real binary editing manifest files in place, patching Guests in
//! a real control plane (`hack/k8s`, with a real `kubectl` to create and read them), and running
//! as a kubectl plugin (`kubectl roster …` through a `kubectl-roster` symlink).

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::*;

/// A stream as a platform team keeps it: comments, several documents, two styles of layout.
const GUESTS: &str = "\
# Guests of the physics institute (reviewed every term)
---
apiVersion: v1
kind: Namespace
metadata: {name: physics}
---
apiVersion: roster.io/v1alpha1
kind: Guest
metadata:
  name: ada
  namespace: physics
spec:
  host: bob          # sponsor
  type: Personal
  purpose: visit 2025
  validUntil: \"2025-01-31\"   # first visit
  person:
    givenName: Ada
    familyName: Lovelace
  account:
    username: ada
---
apiVersion: roster.io/v1alpha1
kind: Guest
metadata: {name: cleo, namespace: physics}
spec:
    host: bob
    type: Personal
    validUntil: 2026-08-31
    person: {givenName: Cleo, familyName: Meyer}
    account: {username: cleo}
---
# the cluster monitoring account
apiVersion: roster.io/v1alpha1
kind: Guest
metadata: {name: svc, namespace: physics}
spec:
  host: bob
  adminGroup: it
  type: Technical
  person: {givenName: Monitoring, familyName: Service}
  account: {username: svc-mon}
...
";

const TODAY: &str = "2026-03-15";

fn write(dir: &Path, text: &str) -> PathBuf {
    let file = dir.join("guests.yaml");
    std::fs::write(&file, text).unwrap();
    file
}

fn read(file: &Path) -> String {
    std::fs::read_to_string(file).unwrap()
}

fn extend(file: &Path, name: &str, extra: &[&str]) -> (i32, String, String) {
    let path = file.display().to_string();
    let mut args = vec!["guest", "extend", name, "-f", &path];
    args.extend_from_slice(extra);
    roster(&args)
}

/// Extends `name` in a fresh copy of [`GUESTS`] and checks the report and that the file is
/// [`GUESTS`] with exactly `from` replaced by `to`. Returns the file.
fn extends_in_file(
    test: &str,
    name: &str,
    args: &[&str],
    report: &str,
    from: &str,
    to: &str,
) -> PathBuf {
    let file = write(&scratch(test), GUESTS);
    let (code, out, err) = extend(&file, name, args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{report}\n"));
    assert_eq!(GUESTS.matches(from).count(), 1, "{from:?} is not one place");
    assert_eq!(read(&file), GUESTS.replace(from, to));
    file
}

#[test]
fn from_a_past_date_extends_from_today_changing_only_that_line() {
    extends_in_file(
        "extend-past",
        "ada",
        &["--months", "3", "--today", TODAY],
        "guest physics/ada: validUntil 2025-01-31 → 2026-06-15",
        "  validUntil: \"2025-01-31\"   # first visit",
        "  validUntil: \"2026-06-15\"   # first visit",
    );
}

#[test]
fn from_a_future_date_extends_from_that_date() {
    // 2026-08-31 + 6 months: February has no 31st.
    extends_in_file(
        "extend-future",
        "cleo",
        &["--months", "6", "-n", "physics", "--today", TODAY],
        "guest physics/cleo: validUntil 2026-08-31 → 2027-02-28",
        "    validUntil: 2026-08-31\n",
        "    validUntil: 2027-02-28\n",
    );
}

#[test]
fn a_missing_valid_until_is_inserted_under_spec() {
    let file = extends_in_file(
        "extend-insert",
        "svc",
        &["--months", "12", "--today", TODAY],
        "guest physics/svc: validUntil (none) → 2027-03-15",
        "  type: Technical\n",
        "  type: Technical\n  validUntil: \"2027-03-15\"\n",
    );
    // Again: now there is a date, and it is the base.
    let (code, out, _) = extend(&file, "svc", &["--months", "1", "--today", TODAY]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "guest physics/svc: validUntil 2027-03-15 → 2027-04-15\n"
    );
}

#[test]
fn without_a_date_given_today_is_the_real_utc_day() {
    let dir = scratch("extend-today");
    let file = write(&dir, GUESTS);
    let day = || {
        jiff::Timestamp::now()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date()
    };
    let before = day();
    let (code, out, err) = extend(&file, "ada", &["--months", "1"]);
    let after = day();
    assert_eq!(code, 0, "{err}");
    let expected: Vec<String> = [before, after]
        .iter()
        .map(|d| {
            let new = d.checked_add(jiff::Span::new().months(1)).unwrap();
            format!("guest physics/ada: validUntil 2025-01-31 → {new}\n")
        })
        .collect();
    assert!(expected.contains(&out), "{out}");
}

#[test]
fn months_other_than_the_offered_steps_are_refused() {
    let dir = scratch("extend-months");
    let file = write(&dir, GUESTS);
    for bad in ["0", "2", "5", "13", "24", "-1", "three"] {
        let (code, out, err) = extend(&file, "ada", &["--months", bad]);
        assert_eq!(code, 1, "--months {bad}: {out}{err}");
        assert!(
            err.contains("--months must be one of 1, 3, 6, 9 or 12"),
            "{err}"
        );
        assert_eq!(read(&file), GUESTS);
    }
}

#[test]
fn unknown_or_ambiguous_guests_are_refused() {
    let dir = scratch("extend-unknown");
    let twice = format!(
        "{GUESTS}---\n{}",
        GUESTS.replace("namespace: physics", "namespace: chemistry")
    );
    let file = write(&dir, &twice);
    let (code, _, err) = extend(&file, "nobody", &["--months", "1"]);
    assert_eq!(code, 1);
    assert!(err.contains("no Guest \"nobody\" in this file"), "{err}");
    let (code, _, err) = extend(&file, "ada", &["--months", "1", "-n", "biology"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no Guest \"ada\" in namespace biology"),
        "{err}"
    );
    let (code, _, err) = extend(&file, "ada", &["--months", "1"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("ambiguous") && err.contains("physics, chemistry") && err.contains("-n"),
        "{err}"
    );
    assert_eq!(read(&file), twice);
    // The Namespace document named like a guest is not a Guest.
    let (code, _, err) = extend(&file, "physics", &["--months", "1"]);
    assert_eq!(code, 1, "{err}");
    // -n picks one; only the chemistry copy changes.
    let (code, out, err) = extend(
        &file,
        "ada",
        &["--months", "1", "-n", "chemistry", "--today", TODAY],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "guest chemistry/ada: validUntil 2025-01-31 → 2026-04-15\n"
    );
    let text = read(&file);
    let (first, second) = text.split_at(GUESTS.len());
    assert_eq!(first, GUESTS);
    assert!(second.contains("validUntil: \"2026-04-15\"   # first visit"));
}

#[test]
fn a_dry_run_changes_nothing() {
    let dir = scratch("extend-dry");
    let file = write(&dir, GUESTS);
    let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
    let (code, out, err) = extend(
        &file,
        "ada",
        &["--months", "6", "--dry-run", "--today", TODAY],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!(
            "guest physics/ada: validUntil 2025-01-31 → 2026-09-15 (dry run: {} not changed)\n",
            file.display()
        )
    );
    assert_eq!(read(&file), GUESTS);
    assert_eq!(
        std::fs::metadata(&file).unwrap().modified().unwrap(),
        modified
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "no stray files"
    );
}

#[test]
fn the_file_is_replaced_atomically_keeping_its_mode_and_symlinks() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let dir = scratch("extend-atomic");
    let file = write(&dir, GUESTS);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let link = dir.join("link.yaml");
    symlink(&file, &link).unwrap();
    let (code, _, err) = extend(&link, "ada", &["--months", "1", "--today", TODAY]);
    assert_eq!(code, 0, "{err}");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(read(&file).contains("validUntil: \"2026-04-15\""));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
}

// ---------------------------------------------------------------------------------------------
// The cluster: a real control plane of the test's own, kubectl to set up and look.

struct Server {
    cluster: Cluster,
    kubeconfig: PathBuf,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let cluster = Cluster::start(dir);
        let kubeconfig = cluster.kubeconfig.clone();
        let server = Server {
            cluster,
            kubeconfig,
        };
        let out = server.kubectl(&["apply", "-f", "-"], Some(GUESTS));
        assert!(out.status.success(), "{}", text(&out));
        server
    }

    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.cluster.kubectl(args, stdin)
    }

    /// `kubectl get guest NAME -n physics -o jsonpath=…`.
    fn jsonpath(&self, name: &str, path: &str) -> String {
        let path = format!("jsonpath={path}");
        let out = self.kubectl(&["get", "guest", name, "-n", "physics", "-o", &path], None);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    fn valid_until(&self, name: &str) -> String {
        self.jsonpath(name, "{.spec.validUntil}")
    }

    fn resource_version(&self, name: &str) -> String {
        self.jsonpath(name, "{.metadata.resourceVersion}")
    }

    /// `roster guest extend` against this server.
    fn extend(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_roster"))
            .args(["guest", "extend"])
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("ROSTER_CONFIG")
            .output()
            .expect("roster runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn in_the_cluster_a_merge_patch_moves_valid_until() {
    let dir = scratch("extend-cluster");
    let s = Server::start(&dir);
    assert_eq!(s.valid_until("ada"), "2025-01-31");
    for (name, months, old, new) in [
        ("ada", "3", "2025-01-31", "2026-06-15"),
        ("cleo", "9", "2026-08-31", "2027-05-31"),
        // A Technical guest without validUntil: today + N.
        ("svc", "1", "(none)", "2026-04-15"),
    ] {
        let (code, out, err) =
            s.extend(&[name, "-n", "physics", "--months", months, "--today", TODAY]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            out,
            format!("guest physics/{name}: validUntil {old} → {new}\n")
        );
        assert_eq!(s.valid_until(name), new);
    }
    // The rest of the spec is untouched.
    assert_eq!(
        s.jsonpath(
            "ada",
            "{.spec.host} {.spec.purpose} {.spec.account.username}"
        ),
        "bob visit 2025 ada"
    );
}

#[test]
fn in_the_cluster_a_concurrent_change_is_a_conflict_and_dry_run_writes_nothing() {
    let dir = scratch("extend-conflict");
    let s = Server::start(&dir);
    let rv = s.resource_version("ada");
    assert!(!rv.is_empty());
    // Someone else changes the Guest after `rv` was read.
    let out = s.kubectl(
        &[
            "patch",
            "guest",
            "ada",
            "-n",
            "physics",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"purpose":"visit 2026"}}"#,
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    let (code, out, err) = s.extend(&[
        "ada",
        "-n",
        "physics",
        "--months",
        "1",
        "--resource-version",
        &rv,
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("guest physics/ada was changed by someone else")
            && err.contains("409 Conflict")
            && err.contains("nothing was written"),
        "{err}"
    );
    assert_eq!(s.valid_until("ada"), "2025-01-31");
    // The current resourceVersion goes through.
    let rv = s.resource_version("ada");
    let (code, _, err) = s.extend(&[
        "ada",
        "-n",
        "physics",
        "--months",
        "1",
        "--resource-version",
        &rv,
        "--today",
        TODAY,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(s.valid_until("ada"), "2026-04-15");
    // Dry run: reported, not written.
    let before = s.resource_version("ada");
    let (code, out, err) = s.extend(&[
        "ada",
        "-n",
        "physics",
        "--months",
        "12",
        "--dry-run",
        "--today",
        TODAY,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "guest physics/ada: validUntil 2026-04-15 → 2027-04-15 (dry run: the cluster not changed)\n"
    );
    // No accepted validity in status (no controller here): the limit is today + 12 months.
    assert_eq!(
        err,
        "warning: guest physics/ada: 2027-04-15 is more than 12 months after 2026-03-15 (the later of today and the accepted validUntil); the controller will not accept it\n"
    );
    assert_eq!(s.valid_until("ada"), "2026-04-15");
    assert_eq!(s.resource_version("ada"), before);
    // Unknown guests and bad steps.
    let (code, _, err) = s.extend(&["nobody", "-n", "physics", "--months", "1"]);
    assert_eq!(code, 1);
    assert!(err.contains("guest physics/nobody not found"), "{err}");
    let (code, _, err) = s.extend(&["ada", "-n", "physics", "--months", "4"]);
    assert_eq!(code, 1);
    assert!(err.contains("--months must be one of"), "{err}");
}

#[test]
fn kubectl_runs_it_as_a_plugin() {
    let dir = scratch("extend-plugin");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_roster"), bin.join("kubectl-roster")).unwrap();
    let file = write(&dir, GUESTS);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(kubectl_bin())
        .args(["roster", "guest", "extend", "ada", "--months", "1", "-f"])
        .arg(&file)
        .args(["--today", TODAY])
        .env("PATH", path)
        .env("HOME", &dir)
        .output()
        .expect("kubectl runs");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "guest physics/ada: validUntil 2025-01-31 → 2026-04-15\n"
    );
    assert!(read(&file).contains("validUntil: \"2026-04-15\"   # first visit"));
}
