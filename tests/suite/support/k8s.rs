//! A real Kubernetes control plane per test world: `hack/k8s` (kube-apiserver, embedded etcd and
//! kube-controller-manager from the Kubernetes Go modules) with Roster's CRDs installed, the
//! chart's ServiceAccount and RBAC applied (from `manifests/roster.yaml`, the chart rendered with
//! its defaults) and the operator's kubeconfig holding that ServiceAccount's token — never
//! cluster-admin, so a permission the chart lacks fails the test that needs it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Output, Stdio};

use super::{Proc, kubectl, repo_root};

/// The namespace the chart is installed into (its default rendering), where the operator's
/// ServiceAccount and leader-election Lease live.
pub const RELEASE_NAMESPACE: &str = "roster";
/// The username the API server knows the operator by.
pub const OPERATOR_USER: &str = "system:serviceaccount:roster:roster";

pub struct Cluster {
    pub dir: PathBuf,
    /// cluster-admin (a static token): what a platform engineer's kubectl has.
    pub kubeconfig: PathBuf,
    /// The chart's ServiceAccount, straight to the API server.
    pub operator_kubeconfig: PathBuf,
    /// The chart's ServiceAccount, through the fault-injecting proxy.
    pub proxied_kubeconfig: PathBuf,
    pub server: String,
    pub proxy: String,
    _stdin: ChildStdin,
    _proc: Proc,
}

/// Stops the control plane and removes its etcd data (the logs and the audit log stay in the
/// scratch directory for a look after a failure).
impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self._proc.0.kill();
        let _ = self._proc.0.wait();
        let _ = std::fs::remove_dir_all(self.dir.join("k8s/etcd"));
    }
}

/// `.dev/bin/roster-k8s`, which `hack/dev-up.sh` builds (hack/k8s/build.sh).
pub fn k8s_bin() -> PathBuf {
    let bin = repo_root().join(".dev/bin/roster-k8s");
    assert!(
        bin.exists(),
        "{} is missing: run hack/dev-up.sh (make test does), which builds hack/k8s",
        bin.display()
    );
    bin
}

impl Cluster {
    /// Starts a control plane with its state in `dir/k8s`.
    pub fn start(dir: &Path) -> Cluster {
        Cluster::start_with(dir, &[])
    }

    /// The same, with extra kube-apiserver flags.
    pub fn start_with(dir: &Path, apiserver_args: &[&str]) -> Cluster {
        let c = Cluster::start_bare(dir, apiserver_args);
        c.install_chart_rbac();
        c.write_operator_kubeconfigs();
        c
    }

    /// A control plane with the CRDs only: no namespace, ServiceAccount or RBAC of Roster's
    /// (a test installs them as the README says, then calls `write_operator_kubeconfigs`).
    pub fn start_bare(dir: &Path, apiserver_args: &[&str]) -> Cluster {
        let state = dir.join("k8s");
        std::fs::create_dir_all(&state).unwrap();
        let kubeconfig = state.join("kubeconfig");
        let mut cmd = Command::new(k8s_bin());
        cmd.args(["up", "--exit-with-stdin", "--dir"])
            .arg(&state)
            .arg("--crds")
            .arg(repo_root().join("crds"));
        for a in apiserver_args {
            cmd.arg(format!("--apiserver-arg={a}"));
        }
        let log = std::fs::File::create(state.join("up.log")).unwrap();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("roster-k8s runs");
        let stdin = child.stdin.take().unwrap();
        let mut proc = Proc(child);
        super::wait_within(
            &format!("the control plane (see {})", state.display()),
            180,
            || {
                kubeconfig.exists()
                    || proc.0.try_wait().unwrap().is_some_and(|status| {
                        panic!(
                            "roster-k8s up exited ({status}):\n{}",
                            std::fs::read_to_string(state.join("up.log")).unwrap_or_default()
                        )
                    })
            },
        );
        let text = std::fs::read_to_string(&kubeconfig).unwrap();
        let server = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .unwrap()
            .to_string();
        let proxy = std::fs::read_to_string(state.join("proxy-address")).unwrap();
        Cluster {
            dir: dir.to_path_buf(),
            kubeconfig,
            operator_kubeconfig: state.join("operator.kubeconfig"),
            proxied_kubeconfig: state.join("operator-proxied.kubeconfig"),
            server,
            proxy,
            _stdin: stdin,
            _proc: proc,
        }
    }

    /// The chart's ServiceAccount, ClusterRoles, Role and bindings.
    fn install_chart_rbac(&self) {
        let rendered = std::fs::read_to_string(repo_root().join("manifests/roster.yaml")).unwrap();
        let wanted = [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
        ];
        let mut docs = vec![format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {RELEASE_NAMESPACE}}}\n"
        )];
        for doc in rendered.split("\n---") {
            let kind = doc
                .lines()
                .find_map(|l| l.strip_prefix("kind: "))
                .unwrap_or("");
            if wanted.contains(&kind.trim()) {
                docs.push(doc.to_string());
            }
        }
        self.must(&["apply", "-f", "-"], Some(&docs.join("\n---\n")));
    }

    /// A token for the chart's ServiceAccount (TokenRequest, as the kubelet would mount one)
    /// in `operator_kubeconfig` and `proxied_kubeconfig`.
    pub fn write_operator_kubeconfigs(&self) {
        let token = self.must(
            &[
                "create",
                "token",
                "roster",
                "-n",
                RELEASE_NAMESPACE,
                "--duration=48h",
            ],
            None,
        );
        let token = token.trim();
        let admin = std::fs::read_to_string(&self.kubeconfig).unwrap();
        let as_operator = |server: &str| {
            admin
                .lines()
                .map(|l| {
                    if l.trim().starts_with("token: ") {
                        format!("      token: {token}")
                    } else if l.trim().starts_with("server: ") {
                        format!("      server: {server}")
                    } else {
                        l.replace("user: admin", "user: roster")
                            .replace("name: admin", "name: roster")
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        std::fs::write(&self.operator_kubeconfig, as_operator(&self.server)).unwrap();
        std::fs::write(&self.proxied_kubeconfig, as_operator(&self.proxy)).unwrap();
    }

    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        kubectl(&self.kubeconfig, &self.dir, args, stdin)
    }

    /// kubectl that must succeed; its standard output.
    pub fn must(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Lets the chart's ServiceAccount read imports and write their reports in `ns`, as
    /// docs/install.md tells a site to for a namespace added after the install.
    pub fn bind_imports(&self, ns: &str) {
        let binding = format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: roster-imports, namespace: {ns}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: roster-imports}}\nsubjects: [{{kind: ServiceAccount, name: roster, namespace: {RELEASE_NAMESPACE}}}]\n"
        );
        self.must(&["apply", "-f", "-"], Some(&binding));
    }

    /// One of the proxy's fault controls (`/_fault/...`, hack/k8s/proxy.go): its JSON report.
    pub fn fault(&self, method: &str, path: &str) -> serde_json::Value {
        let out = Command::new("curl")
            .args(["-fsS", "-X", method, "--cacert"])
            .arg(self.dir.join("k8s/pki/ca.crt"))
            .arg(format!("{}{path}", self.proxy))
            .output()
            .expect("curl runs");
        assert!(
            out.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The API server's audit log: one event per write request (reads are not recorded).
    pub fn audit(&self) -> Vec<serde_json::Value> {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.join("k8s/audit.log")) {
            f.read_to_string(&mut text).unwrap();
        }
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The operator's write requests the API server recorded, but for its leader-election
    /// Lease: `verb resource[/subresource] namespace/name code`.
    pub fn operator_writes(&self) -> Vec<String> {
        self.audit()
            .iter()
            .filter(|e| e["user"]["username"] == OPERATOR_USER)
            .filter(|e| e["objectRef"]["resource"] != "leases")
            .map(|e| {
                let o = &e["objectRef"];
                let sub = o["subresource"]
                    .as_str()
                    .map(|s| format!("/{s}"))
                    .unwrap_or_default();
                format!(
                    "{} {}{} {}/{} {}",
                    e["verb"].as_str().unwrap_or(""),
                    o["resource"].as_str().unwrap_or(""),
                    sub,
                    o["namespace"].as_str().unwrap_or(""),
                    o["name"].as_str().unwrap_or(""),
                    e["responseStatus"]["code"]
                )
            })
            .collect()
    }
}
