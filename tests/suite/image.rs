//! Roster's image, built with podman from the project's Dockerfile (`hack/image.sh`, from the
//! binary under test on a debootstrapped Debian 12) and run as the chart runs it: each
//! container's spec is taken from the rendered Deployment (entrypoint, args, env, mounts,
//! securityContext) and turned into `podman run` flags by [`podman_args`], with a host
//! directory standing in for each volume as the kubelet would fill it. What podman cannot show
//! is said where it is skipped: resource limits (no cgroup delegation here), the pod network
//! (host networking on loopback instead; the metrics port is the probe's port only in the
//! chart's static check below), Secret/ConfigMap updates, and the projected token's rotation.
//!
//! Skipped, with the reason printed, only where podman cannot run containers at all
//! (`hack/image.sh --check`; on Debian as root it installs podman itself).

use crate::chart::{of_kind, render};
use crate::support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use support::{World, dev_env, repo_root, wait_for};

/// Where the kubelet mounts the ServiceAccount token, CA and namespace.
const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The uid and gid the chart runs as, and its fsGroup.
const NONROOT: u32 = 65532;

fn podman() -> Command {
    let mut c = Command::new("podman");
    c.args(["--runtime", "runc"]);
    c
}

/// `podman run --rm` with the limits this sandbox needs set explicitly (it cannot raise them).
fn run_flags(network: &str) -> Vec<String> {
    [
        "run",
        "--rm",
        "--network",
        network,
        "--ulimit",
        "nofile=20000:20000",
        "--ulimit",
        "nproc=32768:32768",
    ]
    .map(String::from)
    .to_vec()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The image built from the binary under test, removed when dropped.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = podman().args(["rmi", "--force", &self.0]).output();
    }
}

fn build_image() -> Option<Image> {
    let script = repo_root().join("hack/image.sh");
    let check = Command::new(&script).arg("--check").output().unwrap();
    if !check.status.success() {
        eprintln!(
            "SKIPPED: podman cannot run containers on this machine: {}",
            text(&check)
        );
        return None;
    }
    let tag = format!("localhost/roster:test-{}", std::process::id());
    let out = Command::new(&script)
        .args(["--binary", env!("CARGO_BIN_EXE_roster"), "--tag", &tag])
        .output()
        .unwrap();
    assert!(out.status.success(), "hack/image.sh: {}", text(&out));
    Some(Image(tag))
}

/// A volume as the kubelet fills it: a host directory, mounted at the container's mount paths.
fn volume(dir: &Path, name: &str, files: &[(&str, &[u8], u32)]) -> PathBuf {
    let v = dir.join("volumes").join(name);
    std::fs::create_dir_all(&v).unwrap();
    for (file, content, mode) in files {
        let f = v.join(file);
        std::fs::write(&f, content).unwrap();
        // Secret and ConfigMap files: root's, in the fsGroup, with the volume's mode made
        // group-readable as the kubelet does for an fsGroup.
        std::os::unix::fs::chown(&f, Some(0), Some(NONROOT)).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode | 0o040)).unwrap();
    }
    if files.is_empty() {
        // An emptyDir: writable by the pod.
        std::fs::set_permissions(&v, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    v
}

fn container<'a>(deployment: &'a Value, name: &str) -> &'a Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("the Deployment has no container {name}"))
}

/// `podman run` flags for container `name` of a rendered Deployment: its securityContext (the
/// pod's, overridden by the container's), env (fieldRefs from `fields`), entrypoint, mounts
/// (each volume at the host directory `volumes` gives; the ServiceAccount's under
/// [`SERVICE_ACCOUNT`]); what comes before the image. Panics on what it cannot translate.
fn podman_flags(
    deployment: &Value,
    name: &str,
    volumes: &BTreeMap<&str, PathBuf>,
    fields: &BTreeMap<&str, String>,
) -> Vec<String> {
    let pod = &deployment["spec"]["template"]["spec"];
    let c = container(deployment, name);
    let sc = |key: &str| {
        let v = &c["securityContext"][key];
        if v.is_null() {
            pod["securityContext"][key].clone()
        } else {
            v.clone()
        }
    };
    let mut args = run_flags("host");
    let user = sc("runAsUser").as_u64().expect("the pod sets runAsUser");
    let group = sc("runAsGroup").as_u64().expect("the pod sets runAsGroup");
    assert_eq!(sc("runAsNonRoot"), true, "runAsNonRoot");
    assert_ne!(user, 0);
    args.push(format!("--user={user}:{group}"));
    if let Some(fs_group) = pod["securityContext"]["fsGroup"].as_u64() {
        args.push(format!("--group-add={fs_group}"));
    }
    if c["securityContext"]["readOnlyRootFilesystem"] == true {
        // podman's own tmpfs on /tmp, /run and /var/tmp would hide what the chart mounts.
        args.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
    }
    for cap in c["securityContext"]["capabilities"]["drop"]
        .as_array()
        .into_iter()
        .flatten()
    {
        args.push(format!("--cap-drop={}", cap.as_str().unwrap()));
    }
    assert!(
        c["securityContext"]["capabilities"]["add"].is_null(),
        "capabilities added"
    );
    if c["securityContext"]["allowPrivilegeEscalation"] == false {
        args.push("--security-opt=no-new-privileges".into());
    }
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "podman's default seccomp profile stands for RuntimeDefault"
    );
    for e in c["env"].as_array().into_iter().flatten() {
        let key = e["name"].as_str().unwrap();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            fields
                .get(path)
                .unwrap_or_else(|| panic!("no stand-in for the field {path}"))
                .clone()
        } else {
            panic!("env {key}: only values and fieldRefs are translated: {e}")
        };
        args.push(format!("--env={key}={value}"));
    }
    for (k, v) in fields.iter().filter(|(k, _)| k.starts_with("KUBERNETES_")) {
        args.push(format!("--env={k}={v}"));
    }
    if let Some(command) = c["command"].as_array() {
        args.push(format!("--entrypoint={}", Value::from(command.clone())));
    }
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let vname = m["name"].as_str().unwrap();
        let host = volumes
            .get(vname)
            .unwrap_or_else(|| panic!("no stand-in for the volume {vname}"));
        let ro = if m["readOnly"] == true { ":ro" } else { "" };
        args.push(format!(
            "--volume={}:{}{ro}",
            host.display(),
            m["mountPath"].as_str().unwrap()
        ));
    }
    if pod["automountServiceAccountToken"] == true {
        let sa = volumes
            .get(SERVICE_ACCOUNT)
            .expect("the ServiceAccount token is mounted");
        args.push(format!("--volume={}:{SERVICE_ACCOUNT}:ro", sa.display()));
    }
    args
}

/// [`podman_flags`], the image, the container's args and `extra_args`.
fn podman_args(
    deployment: &Value,
    name: &str,
    volumes: &BTreeMap<&str, PathBuf>,
    fields: &BTreeMap<&str, String>,
    image: &str,
    extra_args: &[&str],
) -> Vec<String> {
    let mut args = podman_flags(deployment, name, volumes, fields);
    args.push(image.to_string());
    for a in container(deployment, name)["args"]
        .as_array()
        .into_iter()
        .flatten()
    {
        args.push(a.as_str().unwrap().to_string());
    }
    args.extend(extra_args.iter().map(|a| a.to_string()));
    args
}

fn deployment(values: Option<PathBuf>) -> Value {
    let docs = render(&values);
    of_kind(&docs, "Deployment")[0].clone()
}

fn chart_config(values: Option<PathBuf>) -> String {
    let docs = render(&values);
    of_kind(&docs, "ConfigMap")
        .into_iter()
        .find_map(|d| d["data"]["roster.yaml"].as_str().map(str::to_string))
        .expect("the chart renders roster.yaml")
}

#[tokio::test]
async fn the_image_runs_as_the_chart_runs_it() {
    let Some(image) = build_image() else {
        return;
    };
    let image = image.0.clone();
    let run = |args: &[String]| podman().args(args).output().unwrap();

    // The binary in the image is the one under test.
    let mut version = run_flags("none");
    version.extend([image.clone(), "--version".into()]);
    let out = run(&version);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(env!("CARGO_PKG_VERSION")),
        "{}",
        text(&out)
    );

    // The chart's defaults and the image agree: the probes are on the port the rendered config
    // serves metrics on, the image's entrypoint runs what the chart's args say.
    let chart = deployment(None);
    let roster = container(&chart, "roster");
    assert!(
        roster["command"].is_null(),
        "the chart uses the image's ENTRYPOINT"
    );
    let port = roster["ports"][0]["containerPort"].as_u64().unwrap();
    let config = chart_config(None);
    assert!(
        config.contains(&format!("metricsAddress: 0.0.0.0:{port}")),
        "{config}"
    );
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(roster[probe]["httpGet"]["port"], roster["ports"][0]["name"]);
    }

    // `config check --offline` with the chart's ConfigMap mounted, as the chart runs it.
    let w = World::start("image", "").await;
    let dir = &w.dir;
    let tmp = volume(dir, "tmp", &[]);
    let tree_config = &w.tree.config;
    let password_file = tree_config.resolve(tree_config.ldap.bind_password_file.as_ref().unwrap());
    let password = std::fs::read(password_file).unwrap();
    let secrets = volume(dir, "secrets", &[("ldap-bind-password", &password, 0o440)]);
    let chart_cm = volume(
        dir,
        "chart-config",
        &[("roster.yaml", config.as_bytes(), 0o644)],
    );
    let fields: BTreeMap<&str, String> = [
        ("metadata.name", "roster-0".to_string()),
        ("metadata.namespace", "roster".to_string()),
    ]
    .into();
    let mut volumes: BTreeMap<&str, PathBuf> = [
        ("config", chart_cm.clone()),
        ("secrets", secrets.clone()),
        ("tmp", tmp.clone()),
    ]
    .into();
    // No token yet: config check does not need one.
    volumes.insert(SERVICE_ACCOUNT, volume(dir, "no-token", &[]));
    let mut check = podman_flags(&chart, "roster", &volumes, &fields);
    check.push(image.clone());
    check.extend(
        [
            "config",
            "check",
            "--offline",
            "--config",
            "/etc/roster/config/roster.yaml",
        ]
        .map(String::from),
    );
    let out = run(&check);
    assert!(out.status.success(), "{}", text(&out));

    // `roster run` in the image, as the chart's container, against the dev directory and this
    // test's control plane, as the chart's ServiceAccount (a TokenRequest token, the API
    // server's CA and the namespace where the kubelet puts them).
    let mut cfg = roster::config::Config::load(&w.config).unwrap();
    cfg.ldap.bind_password_file = Some("/etc/roster/secrets/ldap-bind-password".into());
    let ours = volume(
        dir,
        "config",
        &[("roster.yaml", cfg.to_yaml().as_bytes(), 0o644)],
    );
    volumes.insert("config", ours);
    let token = w.cluster.must(
        &["create", "token", "roster", "-n", "roster", "--duration=1h"],
        None,
    );
    let ca = std::fs::read(w.cluster.dir.join("k8s/pki/ca.crt")).unwrap();
    let sa = volume(
        dir,
        "serviceaccount",
        &[
            ("token", token.trim().as_bytes(), 0o644),
            ("ca.crt", &ca, 0o644),
            ("namespace", b"roster", 0o644),
        ],
    );
    volumes.insert(SERVICE_ACCOUNT, sa);
    let server = w.cluster.server.trim_start_matches("https://").to_string();
    let (host, api_port) = server.rsplit_once(':').unwrap();
    let mut fields = fields.clone();
    fields.insert("KUBERNETES_SERVICE_HOST", host.to_string());
    fields.insert("KUBERNETES_SERVICE_PORT", api_port.to_string());
    let name = format!("roster-image-{}", std::process::id());
    let mut args = podman_args(
        &chart,
        "roster",
        &volumes,
        &fields,
        &image,
        // Host networking: a port of its own instead of the pod's 8080, reported in /tmp.
        &[
            "--metrics-address",
            "127.0.0.1:0",
            "--metrics-address-file",
            "/tmp/metrics-address",
        ],
    );
    args.insert(1, format!("--name={name}"));
    args.insert(1, "--detach".into());
    let out = run(&args);
    assert!(out.status.success(), "{}", text(&out));
    struct Stop(String);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = podman().args(["rm", "--force", &self.0]).output();
        }
    }
    let _stop = Stop(name.clone());
    let logs = || text(&podman().args(["logs", &name]).output().unwrap());
    let address_file = tmp.join("metrics-address");
    wait_for("the container's metrics address", || address_file.exists());
    let address = std::fs::read_to_string(&address_file).unwrap();
    let get =
        |path: &str| support::try_http_status(address.trim(), "GET", path).map(|(code, _)| code);
    let manifest = support::person_account(
        "physics",
        &format!("img{}", std::process::id() % 100000),
        "",
    );
    let applied = w.kubectl(&["apply", "-f", "-"], Some(&manifest));
    assert!(applied.status.success(), "{}", text(&applied));
    wait_for("an Account Ready through the container", || {
        w.get(&[
            "get",
            "account",
            "-n",
            "physics",
            "-o",
            "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
        ]) == "True"
    });
    let probes: Vec<(String, Option<u16>)> = ["/healthz", "/readyz"]
        .iter()
        .map(|p| (p.to_string(), get(p)))
        .collect();
    assert!(
        probes.iter().all(|(_, code)| *code == Some(200)),
        "{probes:?}\n{}",
        logs()
    );
    let user = format!("img{}", std::process::id() % 100000);
    let mut ldap = support::admin().await;
    let found = support::entries(
        &mut ldap,
        &w.tree.config.people_dn(),
        &format!("(uid={user})"),
    )
    .await;
    assert_eq!(found.len(), 1, "{}", logs());
    assert!(
        logs().contains("\"level\":\"INFO\""),
        "JSON logs: {}",
        logs()
    );

    // The munged sidecar from the same image with the chart's arguments and the site's key,
    // and sacctmgr in the image talking to the dev slurmdbd through its socket.
    let all = deployment(Some(
        repo_root().join("charts/roster/ci/all-features-values.yaml"),
    ));
    let slurm_conf = dev_env()["SLURM_CONF"].clone();
    let key = std::fs::read(
        Path::new(&slurm_conf)
            .parent()
            .unwrap()
            .join("munge/munge.key"),
    )
    .unwrap();
    let conf: String = std::fs::read_to_string(&slurm_conf)
        .unwrap()
        .lines()
        .map(|l| {
            if l.starts_with("AuthInfo=") {
                "AuthInfo=socket=/run/munge/munge.socket.2".to_string()
            } else if l.starts_with("AccountingStoragePass=") {
                String::new()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let socket = volume(dir, "munge-socket", &[]);
    let munge_volumes: BTreeMap<&str, PathBuf> = [
        (
            "munge-key",
            volume(dir, "munge-key", &[("munge.key", &key, 0o400)]),
        ),
        ("munge-socket", socket.clone()),
        ("munge-state", volume(dir, "munge-state", &[])),
        (
            "slurm-conf",
            volume(dir, "slurm-conf", &[("slurm.conf", conf.as_bytes(), 0o644)]),
        ),
    ]
    .into();
    let mut munge_volumes = munge_volumes;
    munge_volumes.insert(SERVICE_ACCOUNT, volumes[SERVICE_ACCOUNT].clone());
    let munged = format!("roster-munged-{}", std::process::id());
    let mut args = podman_args(&all, "munged", &munge_volumes, &fields, &image, &[]);
    args.insert(1, format!("--name={munged}"));
    args.insert(1, "--detach".into());
    let out = run(&args);
    assert!(out.status.success(), "{}", text(&out));
    let _stop_munged = Stop(munged.clone());
    wait_for("munged's socket", || socket.join("munge.socket.2").exists());
    // The operator container's mounts of munge and slurm.conf, running sacctmgr.
    let mut all_volumes = munge_volumes.clone();
    all_volumes.extend(volumes.clone());
    let roster_c = container(&all, "roster");
    let mounts: Vec<&str> = roster_c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(
        mounts.contains(&"munge-socket") && mounts.contains(&"slurm-conf"),
        "{mounts:?}"
    );
    let mut sacctmgr = podman_flags(
        &all,
        "roster",
        &all_volumes_for(&all, &all_volumes, dir),
        &fields,
    );
    sacctmgr.push("--entrypoint=[\"/usr/bin/sacctmgr\"]".into());
    sacctmgr.push("--env=SLURM_CONF=/etc/slurm/slurm.conf".into());
    sacctmgr.push(image.clone());
    sacctmgr.extend(["-nP", "list", "cluster", "format=Cluster"].map(String::from));
    let out = run(&sacctmgr);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out)
            .lines()
            .any(|l| l.trim() == dev_env()["SLURM_CLUSTER"]),
        "{}",
        text(&out)
    );
}

/// The all-features Deployment's operator container mounts more than this test stands in for
/// (Gold, SMTP, the LDAP CA): empty directories in their place, as nothing there is read.
fn all_volumes_for<'a>(
    deployment: &'a Value,
    given: &BTreeMap<&str, PathBuf>,
    dir: &Path,
) -> BTreeMap<&'a str, PathBuf> {
    let mut out = BTreeMap::new();
    for m in container(deployment, "roster")["volumeMounts"]
        .as_array()
        .unwrap()
    {
        let name = m["name"].as_str().unwrap();
        let path = given
            .get(name)
            .cloned()
            .unwrap_or_else(|| volume(dir, name, &[]));
        out.insert(name, path);
    }
    out.insert(SERVICE_ACCOUNT, given[SERVICE_ACCOUNT].clone());
    out
}

/// The Dockerfile's Rust stage cannot run here (no Rust image can be pulled), so its context is
/// checked instead: what its COPY lines take, each let through by `.dockerignore`, makes a
/// workspace cargo resolves with the lockfile as it is (`--locked`), the product crate in it.
#[test]
fn the_dockerfiles_build_stage_has_a_complete_workspace() {
    let root = repo_root();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    let build_stage = dockerfile
        .split("\nFROM ")
        .find(|s| s.contains(" AS build"))
        .expect("a build stage");
    let ctx = support::scratch("docker-context");
    let mut copied = vec![];
    for line in build_stage.lines().filter(|l| l.starts_with("COPY ")) {
        let parts: Vec<&str> = line.split_whitespace().skip(1).collect();
        assert!(!parts[0].starts_with("--from"), "{line}");
        for src in &parts[..parts.len() - 1] {
            let allowed = ignore
                .lines()
                .any(|l| l.trim_end_matches('/') == format!("!{}", src.trim_end_matches('/')));
            assert!(allowed, ".dockerignore keeps {src} out of the context");
            let from = root.join(src);
            let to = ctx.join(src);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            let out = Command::new("cp")
                .args(["-r", "--"])
                .arg(&from)
                .arg(&to)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", text(&out));
            copied.push(src.to_string());
        }
    }
    let _ = std::fs::remove_dir_all(ctx.join("testing/gold-server/target"));
    // `cargo tree` resolves for this host only, from the local registry cache.
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--locked",
            "--offline",
            "-p",
            "roster",
            "-e",
            "normal",
            "--depth",
            "1",
        ])
        .arg("--manifest-path")
        .arg(ctx.join("Cargo.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{copied:?}: {}", text(&out));
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.starts_with("roster v"), "{tree}");
    assert!(tree.contains("kube v"), "{tree}");
}
