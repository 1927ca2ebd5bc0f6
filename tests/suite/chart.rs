//! The deployment: the Helm chart `charts/roster` rendered and linted by Helm itself (PyPI
//! `helm-python-sdk`, Helm v4's Go SDK behind a C ABI, through `hack/helm.py`), every rendered
//! object and every file in `manifests/` validated with `kubernetes-validate --strict` for
//! Kubernetes 1.33 and 1.37, `manifests/` kept equal to the chart's defaults, the values schema
//! refusing wrong values, a security checklist on the Deployment and the RBAC, the configuration
//! the chart renders accepted by Roster's own parser, the README's configuration reference
//! complete and valid, and every example admitted by the CRD schemas. `make test` (`make tools`)
//! installs the Python tools into `.dev/venv`.

use crate::support;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use roster::config::{Config, ConfigError};
use serde_json::Value;
use support::{kubectl_bin, repo_root, scratch};

/// The values files the chart is rendered with: the defaults, then `charts/roster/ci/*`.
fn values_files() -> Vec<Option<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("-values.yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 2,
        "charts/roster/ci has too few values files"
    );
    std::iter::once(None)
        .chain(files.into_iter().map(Some))
        .collect()
}

pub(crate) fn chart_dir() -> PathBuf {
    repo_root().join("charts/roster")
}

fn label(values: &Option<PathBuf>) -> String {
    values
        .as_ref()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .unwrap_or_else(|| "defaults".into())
}

/// The venv's Python with helm_python importable.
fn python() -> PathBuf {
    let python = repo_root().join(".dev/venv/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import helm_python"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "helm-python-sdk is not installed in .dev/venv: run `make tools` (make test does)"
    );
    python
}

/// `hack/helm.py COMMAND charts/roster [ARGS]`: (success, stdout, stderr).
fn helm(command: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(python())
        .arg(repo_root().join("hack/helm.py"))
        .arg(command)
        .arg(chart_dir())
        .args(args)
        .output()
        .expect("hack/helm.py runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn values_args(values: &Option<PathBuf>) -> Vec<String> {
    match values {
        Some(p) => vec!["-f".into(), p.to_string_lossy().into_owned()],
        None => vec![],
    }
}

/// The chart rendered with `values` as a YAML stream; panics with Helm's message on failure.
fn render_text(values: &Option<PathBuf>) -> String {
    let args = values_args(values);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = helm("template", &args);
    assert!(ok, "rendering with {} failed:\n{err}", label(values));
    out
}

fn documents(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .expect("rendered YAML parses")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

pub(crate) fn render(values: &Option<PathBuf>) -> Vec<Value> {
    documents(&render_text(values))
}

pub(crate) fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn name(doc: &Value) -> String {
    format!(
        "{} {}",
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// Kinds `kubernetes-validate` has no schema for: custom resources (Roster's own are checked by
/// `validate_object`, the CRDs themselves are validated) and the Prometheus Operator's
/// ServiceMonitor.
fn unvalidatable(kind: &str, api_version: &str) -> bool {
    kind == "ServiceMonitor" || api_version.starts_with("roster.io/")
}

/// Runs `kubernetes-validate --strict` on `files` for 1.33 and 1.37 and checks that exactly
/// `expected` resources passed and that the only kinds without a schema are the expected ones.
fn kubernetes_validate(files: &[PathBuf], expected: usize, skipped: usize) {
    let tool = repo_root().join(".dev/venv/bin/kubernetes-validate");
    assert!(
        tool.exists(),
        "{} is missing: run `make tools` (make test does)",
        tool.display()
    );
    for version in ["1.33.0", "1.37.0"] {
        let out = Command::new(&tool)
            .args(["--strict", "--kubernetes-version", version])
            .args(files)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "kubernetes-validate {version} failed:\n{text}"
        );
        let passed = text.matches(" passed for resource ").count();
        let no_schema: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("Couldn't find schema"))
            .collect();
        assert_eq!(passed, expected, "{version}:\n{text}");
        assert_eq!(no_schema.len(), skipped, "{version}:\n{text}");
        assert!(
            no_schema
                .iter()
                .all(|l| l.contains("kind ServiceMonitor") || l.contains("roster.io/")),
            "{version}: unexpected kinds without a schema:\n{text}"
        );
    }
}

#[test]
fn chart_app_version_is_the_crate_version() {
    let chart = std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap();
    let chart: Value = serde_saphyr::from_str(&chart).unwrap();
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "charts/roster/Chart.yaml appVersion must be the crate version in Cargo.toml"
    );
    assert_eq!(chart["name"], "roster");
}

/// The chart's `crds/` and `manifests/crds/` are byte-for-byte the repository's `crds/`.
#[test]
fn chart_and_manifests_crds_are_the_repository_crds() {
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let source = repo_root().join("crds");
    for copy in [chart_dir().join("crds"), repo_root().join("manifests/crds")] {
        assert_eq!(
            names(&copy),
            names(&source),
            "{}: run `make manifests`",
            copy.display()
        );
        for f in names(&source) {
            assert_eq!(
                std::fs::read_to_string(copy.join(&f)).unwrap(),
                std::fs::read_to_string(source.join(&f)).unwrap(),
                "{}/{f} is stale: run `make manifests`",
                copy.display()
            );
        }
    }
}

/// `helm lint --strict` (warnings are failures), with every values file, for both versions.
#[test]
fn chart_lints_clean_with_every_values_file() {
    for values in values_files() {
        for kube in ["v1.33.0", "v1.37.0"] {
            let mut args = values_args(&values);
            args.extend(["--strict".into(), "--kube-version".into(), kube.into()]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (ok, out, err) = helm("lint", &args);
            assert!(ok, "helm lint {} {kube}:\n{out}{err}", label(&values));
            assert!(out.contains("1 chart(s) linted, 0 failed"), "{out}");
        }
    }
}

/// Every object the chart renders, with every values file, passes `kubernetes-validate
/// --strict` for Kubernetes 1.33 and 1.37 (ServiceMonitor excepted: no schema for it).
#[test]
fn rendered_objects_pass_kubernetes_validate() {
    let dir = scratch("chart-render");
    let mut files = vec![];
    let (mut expected, mut skipped) = (0, 0);
    for values in values_files() {
        let text = render_text(&values);
        for d in documents(&text) {
            let kind = d["kind"].as_str().unwrap_or("");
            if unvalidatable(kind, d["apiVersion"].as_str().unwrap_or("")) {
                skipped += 1;
            } else {
                expected += 1;
            }
        }
        let file = dir.join(format!("{}.yaml", label(&values)));
        std::fs::write(&file, text).unwrap();
        files.push(file);
    }
    assert!(
        skipped >= 1,
        "the all-features values render a ServiceMonitor"
    );
    kubernetes_validate(&files, expected, skipped);
}

/// `manifests/roster.yaml` is the chart rendered with its defaults (`make manifests`), the
/// kustomization builds (with the real kubectl's kustomize) into exactly the namespace, the
/// CRDs and those objects, and every file in `manifests/` passes `kubernetes-validate`.
#[test]
fn manifests_are_the_chart_defaults_and_validate() {
    let (ok, generated, err) = helm("template", &["--generated"]);
    assert!(ok, "{err}");
    let on_disk = std::fs::read_to_string(repo_root().join("manifests/roster.yaml")).unwrap();
    assert!(
        on_disk == generated,
        "manifests/roster.yaml differs from the chart rendered with its defaults: run `make manifests`"
    );

    let out = Command::new(kubectl_bin())
        .args(["kustomize"])
        .arg(repo_root().join("manifests"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize manifests/: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let built: BTreeSet<String> = documents(&String::from_utf8_lossy(&out.stdout))
        .iter()
        .map(name)
        .collect();
    let mut expected: BTreeSet<String> = documents(&generated).iter().map(name).collect();
    expected.insert("Namespace roster".into());
    for (file, _) in roster::api::crd_files() {
        expected.insert(format!(
            "CustomResourceDefinition {}",
            file.trim_end_matches(".yaml")
        ));
    }
    assert_eq!(built, expected, "kubectl kustomize manifests/");

    let mut files = vec![];
    let mut count = 0;
    for dir in ["manifests", "manifests/crds"] {
        for e in std::fs::read_dir(repo_root().join(dir)).unwrap() {
            let p = e.unwrap().path();
            let f = p.file_name().unwrap().to_string_lossy();
            if f.ends_with(".yaml") && f != "kustomization.yaml" {
                count += documents(&std::fs::read_to_string(&p).unwrap()).len();
                files.push(p);
            }
        }
    }
    files.sort();
    kubernetes_validate(&files, count, 0);
}

/// values.schema.json (and the chart's own checks) refuse wrong values: rendering fails and
/// Helm's message names the key.
#[test]
fn wrong_values_are_refused() {
    let dir = scratch("chart-bad-values");
    let cases = [
        ("replicaCount: 0", "replicaCount"),
        ("replicaCount: two", "replicaCount"),
        ("unknownKey: 1", "unknownKey"),
        ("image: {pullPolicy: Sometimes}", "pullPolicy"),
        ("image: {digest: latest}", "digest"),
        ("logFormat: xml", "logFormat"),
        ("config: {managerId: Site A}", "managerId"),
        ("config: {ldap: {uri: http://ldap.example.org}}", "uri"),
        ("config: {ldap: {tls: {mode: tls}}}", "mode"),
        (
            "config: {ldap: {bindPasswordFile: /pw}}",
            "bindPasswordFile",
        ),
        ("config: {ldap: {tls: {caFile: /ca.pem}}}", "caFile"),
        (
            "config: {operator: {metricsAddress: '0.0.0.0:1'}}",
            "metricsAddress",
        ),
        ("config: {operator: {leaseNamespace: x}}", "leaseNamespace"),
        ("config: {uidRange: {min: 0, max: 10}}", "min"),
        ("config: {guard: {maxPercent: 150}}", "maxPercent"),
        (
            "config: {gracePeriods: {accountPurgeAfter: 3 months}}",
            "accountPurgeAfter",
        ),
        ("config: {slurm: {clusters: []}}", "clusters"),
        (
            "config: {slurm: {clusters: [hpc1], databaseUrlFile: /x}}",
            "slurm",
        ),
        ("config: {gold: {host: gold, authKeyFile: /x}}", "gold"),
        ("config: {gold: {host: gold, attempts: 99}}", "gold"),
        ("config: {gllod: {}}", "gllod"),
        ("rbac: {importNamespaces: [Physics]}", "importNamespaces"),
        ("secrets: {ldapBindPassword: {name: ''}}", "name"),
        ("resources: {requests: {cpu: 10m, memory: null}}", "memory"),
        ("metrics: {port: 80}", "port"),
        ("networkPolicy: {apiServerPorts: []}", "apiServerPorts"),
        // The schema's if/then: several replicas need leader election.
        ("leaderElection: {enabled: false}", "replicaCount"),
        // The templates' own checks.
        (
            "secrets: {ldapCA: {configMap: a, secret: b}}",
            "set configMap or secret, not both",
        ),
        (
            "metrics: {service: {enabled: false}, serviceMonitor: {enabled: true}}",
            "needs metrics.service.enabled",
        ),
    ];
    for (i, (yaml, needle)) in cases.iter().enumerate() {
        let file = dir.join(format!("bad-{i}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let (ok, _, err) = helm("template", &["-f", &file.to_string_lossy()]);
        assert!(!ok, "accepted: {yaml}");
        assert!(
            err.contains(needle),
            "{yaml}: the message does not name {needle}:\n{err}"
        );
    }
    // Leader election off with one replica is fine.
    let file = dir.join("one-replica.yaml");
    std::fs::write(&file, "replicaCount: 1\nleaderElection: {enabled: false}\n").unwrap();
    let docs = render(&Some(file));
    let args =
        &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(
        args.as_array()
            .unwrap()
            .contains(&"--no-leader-election".into())
    );
}

fn containers(deployment: &Value) -> Vec<&Value> {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .collect()
}

/// The checklist a platform team runs on an operator's Deployment and RBAC, with every values
/// file.
#[test]
fn deployment_and_rbac_checklist() {
    for values in values_files() {
        let at = label(&values);
        let docs = render(&values);
        let deployments = of_kind(&docs, "Deployment");
        assert_eq!(deployments.len(), 1, "{at}");
        let d = deployments[0];
        let pod = &d["spec"]["template"]["spec"];
        let psc = &pod["securityContext"];
        assert_eq!(psc["runAsNonRoot"], true, "{at}: runAsNonRoot");
        assert_eq!(
            psc["seccompProfile"]["type"], "RuntimeDefault",
            "{at}: seccomp"
        );
        assert!(
            pod["hostNetwork"].is_null() && pod["hostPID"].is_null(),
            "{at}"
        );
        for c in containers(d) {
            let cn = c["name"].as_str().unwrap();
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{at} {cn}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{at} {cn}");
            assert_eq!(
                sc["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{at} {cn}"
            );
            assert!(sc["capabilities"]["add"].is_null(), "{at} {cn}");
            assert!(
                sc["privileged"].is_null() || sc["privileged"] == false,
                "{at} {cn}"
            );
            assert!(sc["runAsUser"] != 0, "{at} {cn}: root");
            let req = &c["resources"]["requests"];
            assert!(
                req["cpu"].is_string() && req["memory"].is_string(),
                "{at} {cn}: resource requests"
            );
            assert!(
                c["resources"]["limits"]["memory"].is_string(),
                "{at} {cn}: memory limit"
            );
        }
        let roster = containers(d)
            .into_iter()
            .find(|c| c["name"] == "roster")
            .expect("the roster container");
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            assert_eq!(roster[probe]["httpGet"]["path"], path, "{at} {probe}");
            assert_eq!(roster[probe]["httpGet"]["port"], "metrics", "{at} {probe}");
        }
        let port = &roster["ports"][0];
        assert_eq!(port["name"], "metrics", "{at}");
        // The config's metrics address is the container's port.
        let config = rendered_config(&docs);
        assert_eq!(
            config.operator.metrics_address,
            format!("0.0.0.0:{}", port["containerPort"]),
            "{at}"
        );
        assert!(
            !roster["env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["value"].as_str().is_some_and(|v| v.contains("password"))),
            "{at}: a secret in the environment"
        );

        rbac_checklist(&docs, &at);
    }
}

fn rbac_checklist(docs: &[Value], at: &str) {
    let roles: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
        .collect();
    assert!(!roles.is_empty(), "{at}: no RBAC");
    for role in &roles {
        for rule in role["rules"].as_array().unwrap() {
            for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                for v in rule[field].as_array().into_iter().flatten() {
                    assert!(
                        !v.as_str().unwrap().contains('*'),
                        "{at}: {}: wildcard in {field}",
                        name(role)
                    );
                }
            }
            assert!(rule["nonResourceURLs"].is_null(), "{at}: {}", name(role));
            // delete only on the kinds Roster derives, whose ownerReferences it changes (the
            // OwnerReferencesPermissionEnforcement admission plugin requires delete for that).
            let derived = rule["apiGroups"] == serde_json::json!(["roster.io"])
                && rule["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|r| r == "people" || r == "accounts");
            for verb in rule["verbs"].as_array().unwrap() {
                let verb = verb.as_str().unwrap();
                assert!(
                    !matches!(
                        verb,
                        "escalate" | "bind" | "impersonate" | "deletecollection"
                    ) && (verb != "delete" || derived),
                    "{at}: {}: verb {verb}",
                    name(role)
                );
            }
        }
    }
    let bindings: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
        .collect();
    for b in &bindings {
        let role = b["roleRef"]["name"].as_str().unwrap();
        assert!(
            !matches!(role, "cluster-admin" | "admin" | "edit"),
            "{at}: {} binds {role}",
            name(b)
        );
        assert!(
            roles.iter().any(|r| r["metadata"]["name"] == role),
            "{at}: {} binds a role the chart does not define",
            name(b)
        );
    }
    // Cluster-wide: Roster's kinds and Events only. Secrets, ConfigMaps and Leases only
    // through namespaced bindings.
    for crb in bindings
        .iter()
        .filter(|b| b["kind"] == "ClusterRoleBinding")
    {
        let role = roles
            .iter()
            .find(|r| r["kind"] == "ClusterRole" && r["metadata"]["name"] == crb["roleRef"]["name"])
            .unwrap();
        for rule in role["rules"].as_array().unwrap() {
            for g in rule["apiGroups"].as_array().unwrap() {
                assert!(
                    g == "roster.io" || g == "events.k8s.io",
                    "{at}: cluster-wide access to group {g}"
                );
            }
        }
    }
    for role in roles.iter().filter(|r| r["kind"] == "Role") {
        assert!(role["metadata"]["namespace"].is_string(), "{at}");
    }
}

/// The ConfigMap's `roster.yaml`, parsed by Roster's own parser (as `roster run` will).
fn rendered_config(docs: &[Value]) -> Config {
    let cm = of_kind(docs, "ConfigMap")
        .into_iter()
        .find(|c| c["data"]["roster.yaml"].is_string())
        .expect("the config ConfigMap");
    let text = cm["data"]["roster.yaml"].as_str().unwrap();
    match Config::parse(text, PathBuf::from("/etc/roster/config")) {
        Ok(c) => c,
        // The CA file is mounted in the pod, not here: that is the only problem allowed.
        Err(ConfigError::Invalid { problems, .. })
            if problems.iter().all(|p| p.key == "ldap.tls.caFile") =>
        {
            let without = text.replace("caFile: ", "# caFile: ");
            Config::parse(&without, PathBuf::from("/etc/roster/config")).unwrap()
        }
        Err(e) => panic!("the rendered config is invalid: {e}\n{text}"),
    }
}

/// Every file the rendered config names is mounted into the roster container from the Secret
/// or ConfigMap the values name.
#[test]
fn rendered_config_is_valid_and_its_files_are_mounted() {
    for values in values_files() {
        let at = label(&values);
        let docs = render(&values);
        let config = rendered_config(&docs);
        let d = of_kind(&docs, "Deployment")[0];
        let pod = &d["spec"]["template"]["spec"];
        let roster = containers(d)
            .into_iter()
            .find(|c| c["name"] == "roster")
            .unwrap();
        // Every path a volume puts into the container: mountPath/item path.
        let mut mounted = BTreeSet::new();
        for m in roster["volumeMounts"].as_array().unwrap() {
            let vol = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == m["name"])
                .unwrap();
            let mp = m["mountPath"].as_str().unwrap();
            let mut items = vec![];
            for src in vol["projected"]["sources"].as_array().into_iter().flatten() {
                for kind in ["secret", "configMap"] {
                    items.extend(src[kind]["items"].as_array().into_iter().flatten());
                }
            }
            for kind in ["secret", "configMap"] {
                items.extend(vol[kind]["items"].as_array().into_iter().flatten());
            }
            for item in items {
                mounted.insert(format!("{mp}/{}", item["path"].as_str().unwrap()));
            }
            if vol["configMap"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("-config"))
            {
                mounted.insert(format!("{mp}/roster.yaml"));
            }
        }
        let mut named = vec![];
        if let Some(f) = &config.ldap.bind_password_file {
            named.push(f.clone());
        }
        if let Some(f) = &config.ldap.tls.ca_file {
            named.push(f.clone());
        }
        if let Some(s) = &config.slurm {
            named.extend(s.database_url_file.clone());
            named.extend(s.slurm_conf.clone());
        }
        if let Some(g) = &config.gold {
            named.extend(g.auth_key_file.clone());
        }
        if let Some(smtp) = &config.guests.smtp {
            named.extend(smtp.password_file.clone());
            named.extend(smtp.ca_file.clone());
            if smtp.username.is_some() {
                assert!(
                    smtp.password_file.is_some(),
                    "{at}: the SMTP password is mounted"
                );
            }
        }
        assert!(config.ldap.bind_password_file.is_some(), "{at}");
        for f in named {
            let f = f.to_string_lossy().into_owned();
            assert!(
                mounted.contains(&f),
                "{at}: {f} is not mounted ({mounted:?})"
            );
        }
        assert!(mounted.contains("/etc/roster/config/roster.yaml"), "{at}");
        let args: Vec<&str> = roster["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            &args[..3],
            ["run", "--config", "/etc/roster/config/roster.yaml"]
        );
        // The Lease the Role allows is the one the config names.
        let role = of_kind(&docs, "Role")
            .into_iter()
            .find(|r| {
                r["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .ends_with("-leader-election")
            })
            .unwrap();
        let lease_rule = role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resourceNames"].is_array())
            .unwrap();
        assert_eq!(
            lease_rule["resourceNames"][0].as_str(),
            Some(config.operator.lease_name.as_str()),
            "{at}"
        );
        assert!(
            config.operator.lease_namespace.is_none(),
            "{at}: POD_NAMESPACE decides"
        );
    }
}

/// NOTES.txt says what to do next: the Secrets to create and the CRD upgrade step.
#[test]
fn notes_say_what_to_do_next() {
    let (ok, notes, err) = helm("notes", &[]);
    assert!(ok, "{err}");
    for needle in [
        "create secret generic roster-ldap",
        "roster ldap-schema",
        "kubectl apply --server-side --force-conflicts -f crds/",
        "kubectl get accounts -A",
        "placeholder",
    ] {
        assert!(
            notes.contains(needle),
            "NOTES.txt lacks {needle:?}:\n{notes}"
        );
    }
}

/// The Grafana dashboard is valid JSON, queries only metrics the operator exports (the families
/// its registry declares, with the sample names OpenMetrics gives counters and histograms), and
/// ships unchanged in its ConfigMap.
#[test]
fn the_dashboard_queries_real_metrics() {
    let text = std::fs::read_to_string(chart_dir().join("dashboards/roster.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("dashboards/roster.json parses");
    let metrics = roster::telemetry::Metrics::default();
    let families: BTreeMap<String, String> = metrics
        .families()
        .iter()
        .map(|(n, t)| (n.trim_end_matches("_total").to_string(), t.to_string()))
        .collect();
    assert!(families.len() >= 10, "{families:?}");
    let exported = |sample: &str| {
        let kind = |family: &str| families.get(family).map(String::as_str);
        match kind(sample) {
            Some("gauge") => true,
            _ => [
                ("_total", "counter"),
                ("_sum", "histogram"),
                ("_count", "histogram"),
                ("_bucket", "histogram"),
            ]
            .iter()
            .any(|(suffix, t)| sample.strip_suffix(suffix).and_then(kind) == Some(*t)),
        }
    };
    let metric = regex::Regex::new(r"roster_[a-z_]+").unwrap();
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            queried.extend(metric.find_iter(expr).map(|m| m.as_str().to_string()));
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    for m in &queried {
        assert!(
            exported(m),
            "the dashboard queries {m}, which the operator does not export: {families:?}"
        );
    }
    let values = Some(chart_dir().join("ci/all-features-values.yaml"));
    let docs = render(&values);
    let cm = of_kind(&docs, "ConfigMap")
        .into_iter()
        .find(|c| c["data"]["roster.json"].is_string())
        .expect("the dashboard ConfigMap");
    let shipped: Value = serde_json::from_str(cm["data"]["roster.json"].as_str().unwrap()).unwrap();
    assert_eq!(shipped, dashboard);
}

/// Every example manifest is admitted by the CRD schemas and their CEL rules, as the API
/// server would admit it.
#[test]
fn every_example_passes_the_crd_schemas() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p);
            }
        }
    }
    let mut files = vec![];
    walk(&repo_root().join("examples"), &mut files);
    let mut objects = 0;
    for f in files {
        for doc in documents(&std::fs::read_to_string(&f).unwrap()) {
            // The import's ConfigMap is Kubernetes' own kind (the API server checks it in
            // tests/suite/kubectl.rs, file mode's loader in src/site.rs).
            if doc["apiVersion"] == "v1" && doc["kind"] == "ConfigMap" {
                continue;
            }
            if let Err(errors) = roster::api::validate::validate_object(&doc, None) {
                panic!("{}: {}: {errors:?}", f.display(), name(&doc));
            }
            objects += 1;
        }
    }
    assert!(objects >= 20, "only {objects} example objects found");
}

/// The fenced YAML block under "## Configuration" in the README.
fn readme_reference() -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = &readme[readme.find("\n## Configuration\n").expect("the section")..];
    let start = section.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let end = section[start..].find("\n```").unwrap();
    section[start..start + end].to_string()
}

/// Every key path of the configuration types, found by deserializing `Config` from a tracer:
/// serde hands a struct's deserializer the names of all its fields, so the tracer answers
/// every struct with all of them, and every option with "some".
fn config_keys() -> BTreeSet<String> {
    let keys = RefCell::new(BTreeSet::new());
    <Config as serde::Deserialize>::deserialize(tracer::Tracer {
        path: String::new(),
        keys: &keys,
    })
    .expect("the tracer builds a Config");
    keys.into_inner()
}

/// The key paths of a YAML document (lists are looked into, without an index).
fn yaml_keys(v: &Value, path: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                out.insert(p.clone());
                yaml_keys(v, &p, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| yaml_keys(i, path, out)),
        _ => {}
    }
}

/// The README's configuration reference parses with Roster's own parser (which refuses
/// unknown keys) and documents every key the configuration has — alternatives that exclude
/// each other (`bindPasswordFile`/`bindPasswordEnv`, …) as a commented-out line next to them.
#[test]
fn the_readme_configuration_reference_is_complete_and_valid() {
    let reference = readme_reference();
    // Its files exist in the pod; here they are made in a scratch directory.
    let dir = scratch("readme-config");
    std::fs::write(dir.join("ldap-ca.pem"), "").unwrap();
    let text = reference.replace("/etc/roster/secrets/", &format!("{}/", dir.display()));
    if let Err(e) = Config::parse(&text, dir.clone()) {
        panic!("the README's configuration reference is invalid: {e}");
    }
    let value: Value = serde_saphyr::from_str(&reference).unwrap();
    let mut documented = BTreeSet::new();
    yaml_keys(&value, "", &mut documented);
    let commented: BTreeSet<String> = reference
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("# "))
        .filter_map(|l| l.split_once(':').map(|(k, _)| k.to_string()))
        .collect();
    let keys = config_keys();
    assert!(keys.len() > 60, "the tracer found only {keys:?}");
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| {
            !documented.contains(*k)
                && !k.rsplit_once('.').is_some_and(|(parent, leaf)| {
                    documented.contains(parent) && commented.contains(leaf)
                })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the README's configuration reference lacks {missing:?}"
    );
    let unknown: Vec<&String> = documented.difference(&keys).collect();
    assert!(unknown.is_empty(), "not configuration keys: {unknown:?}");
}

/// The key paths under `config` in values.schema.json (objects' properties, the object branch
/// of `oneOf`).
fn schema_keys(schema: &Value, path: &str, out: &mut BTreeSet<String>) {
    if let Some(props) = schema["properties"].as_object() {
        for (k, v) in props {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            out.insert(p.clone());
            schema_keys(v, &p, out);
        }
    }
    for branch in schema["oneOf"].as_array().into_iter().flatten() {
        schema_keys(branch, path, out);
    }
}

/// values.schema.json describes exactly the configuration's keys, less those the chart fills
/// in itself (secret files, the CA, slurm.conf, the Lease's namespace, the metrics address).
#[test]
fn values_schema_config_matches_the_config_types() {
    let text = std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    let mut in_schema = BTreeSet::new();
    schema_keys(&schema["properties"]["config"], "", &mut in_schema);
    let chart_managed: BTreeSet<String> = [
        "ldap.bindPasswordFile",
        "ldap.bindPasswordEnv",
        "ldap.tls.caFile",
        "operator.leaseNamespace",
        "operator.metricsAddress",
        "slurm.slurmConf",
        "slurm.databaseUrlFile",
        "slurm.databaseUrlEnv",
        "gold.authKeyFile",
        "gold.authKeyEnv",
        "guests.smtp.caFile",
        "guests.smtp.passwordFile",
        "guests.smtp.passwordEnv",
        "notices.smtp.caFile",
        "notices.smtp.passwordFile",
        "notices.smtp.passwordEnv",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let expected: BTreeSet<String> = config_keys().difference(&chart_managed).cloned().collect();
    assert_eq!(
        in_schema.difference(&expected).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "values.schema.json has config keys Roster does not know"
    );
    assert_eq!(
        expected.difference(&in_schema).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "values.schema.json lacks config keys"
    );
}

mod tracer {
    //! A serde Deserializer that answers every request with a placeholder, recording the
    //! field names of every struct it is asked for.

    use std::cell::RefCell;
    use std::collections::BTreeSet;

    use serde::de::value::{Error, StrDeserializer};
    use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

    /// Every number is asked for as a u64 (a 1 fits every field).
    macro_rules! numbers_as_u64 {
        ($($method:ident)*) => {
            $(fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
                v.visit_u64(1)
            })*
        };
    }

    pub struct Tracer<'a> {
        pub path: String,
        pub keys: &'a RefCell<BTreeSet<String>>,
    }

    impl<'a> Tracer<'a> {
        fn at(&self, field: &str) -> Tracer<'a> {
            Tracer {
                path: if self.path.is_empty() {
                    field.to_string()
                } else {
                    format!("{}.{field}", self.path)
                },
                keys: self.keys,
            }
        }
    }

    impl<'de> de::Deserializer<'de> for Tracer<'_> {
        type Error = Error;

        fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            v.visit_str("x")
        }
        fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            v.visit_bool(false)
        }
        fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            v.visit_u64(1)
        }
        fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            v.visit_f64(1.0)
        }
        fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            v.visit_some(self)
        }
        fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            v.visit_unit()
        }
        fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            v.visit_seq(One(Some(self)))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            v: V,
        ) -> Result<V::Value, Error> {
            for f in fields {
                self.keys.borrow_mut().insert(self.at(f).path);
            }
            v.visit_map(Fields {
                tracer: self,
                fields,
                next: 0,
            })
        }
        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _name: &'static str,
            variants: &'static [&'static str],
            v: V,
        ) -> Result<V::Value, Error> {
            v.visit_enum(Unit(variants[0]))
        }
        fn deserialize_newtype_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            v: V,
        ) -> Result<V::Value, Error> {
            v.visit_newtype_struct(self)
        }

        serde::forward_to_deserialize_any! {
            char str string bytes byte_buf identifier ignored_any map unit_struct tuple
            tuple_struct
        }
        numbers_as_u64!(
            deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_u8
            deserialize_u16 deserialize_u32 deserialize_f32
        );
    }

    /// A struct's fields, each with a traced value.
    struct Fields<'a> {
        tracer: Tracer<'a>,
        fields: &'static [&'static str],
        next: usize,
    }

    impl<'de> de::MapAccess<'de> for Fields<'_> {
        type Error = Error;
        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            k: K,
        ) -> Result<Option<K::Value>, Error> {
            let Some(f) = self.fields.get(self.next) else {
                return Ok(None);
            };
            k.deserialize(StrDeserializer::<Error>::new(f)).map(Some)
        }
        fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, v: V) -> Result<V::Value, Error> {
            let f = self.fields[self.next];
            self.next += 1;
            v.deserialize(self.tracer.at(f))
        }
    }

    /// A list of one traced element.
    struct One<'a>(Option<Tracer<'a>>);

    impl<'de> de::SeqAccess<'de> for One<'_> {
        type Error = Error;
        fn next_element_seed<T: DeserializeSeed<'de>>(
            &mut self,
            s: T,
        ) -> Result<Option<T::Value>, Error> {
            self.0.take().map(|t| s.deserialize(t)).transpose()
        }
    }

    /// The first variant of an enum, as a unit variant.
    struct Unit(&'static str);

    impl<'de> de::EnumAccess<'de> for Unit {
        type Error = Error;
        type Variant = Self;
        fn variant_seed<V: DeserializeSeed<'de>>(self, v: V) -> Result<(V::Value, Self), Error> {
            let d: StrDeserializer<Error> = self.0.into_deserializer();
            Ok((v.deserialize(d)?, self))
        }
    }

    impl<'de> de::VariantAccess<'de> for Unit {
        type Error = Error;
        fn unit_variant(self) -> Result<(), Error> {
            Ok(())
        }
        fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _: T) -> Result<T::Value, Error> {
            Err(de::Error::custom("only unit variants"))
        }
        fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, Error> {
            Err(de::Error::custom("only unit variants"))
        }
        fn struct_variant<V: Visitor<'de>>(
            self,
            _: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Error> {
            Err(de::Error::custom("only unit variants"))
        }
    }
}
