//! One isolated world for operator tests: a private directory subtree, a scratch directory,
//! a real control plane (`hack/k8s`), and a config file built from the `Config` types — with
//! the operator processes a test starts against it.

use std::path::{Path, PathBuf};
use std::process::Output;

use super::{
    Cluster, Proc, RELEASE_NAMESPACE, TestTree, operator_process, repo_root, scratch, wait_for,
};

/// The `operator:` settings operator tests run with: a 2 s resync and a 5 s lease, so a test
/// waits for passes and takeovers in seconds, in the release namespace the chart's RBAC uses.
pub fn operator_config() -> String {
    format!(
        "operator:\n  resyncInterval: 2s\n  leaseNamespace: {RELEASE_NAMESPACE}\n  leaseDurationSeconds: 5\n"
    )
}

pub struct World {
    pub tree: TestTree,
    pub dir: PathBuf,
    /// `dir/roster.yaml`: the tree's config, [`operator_config`] and the test's own YAML.
    pub config: PathBuf,
    pub cluster: Cluster,
}

impl World {
    /// A world named `name` whose config has `extra_config` (YAML) merged in; the namespaces
    /// `physics` and `chemistry` exist, and the chart's import role is bound in `physics`
    /// (where the example site's ImportSources are).
    pub async fn start(name: &str, extra_config: &str) -> World {
        let tree = TestTree::new(name).await;
        let dir = scratch(name);
        let cluster = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || Cluster::start(&dir))
                .await
                .unwrap()
        };
        let config = tree.write_config_with(&dir, &(operator_config() + extra_config));
        let w = World {
            tree,
            dir,
            config,
            cluster,
        };
        let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: physics}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: chemistry}\n";
        assert!(w.kubectl(&["apply", "-f", "-"], Some(ns)).status.success());
        w.cluster.bind_imports("physics");
        w
    }

    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.cluster.kubectl(args, stdin)
    }

    /// `kubectl ARGS`' standard output.
    pub fn get(&self, args: &[&str]) -> String {
        String::from_utf8(self.kubectl(args, None).stdout).unwrap()
    }

    /// An operator process with `config`, logging to `dir/IDENTITY.log`; its metrics port.
    pub fn operator(&self, config: &Path, identity: &str, leader_election: bool) -> (Proc, u16) {
        self.operator_with(config, identity, leader_election, &[])
    }

    pub fn operator_with(
        &self,
        config: &Path,
        identity: &str,
        leader_election: bool,
        extra: &[&str],
    ) -> (Proc, u16) {
        let log = self.dir.join(format!("{identity}.log"));
        operator_process(
            config,
            &self.cluster.operator_kubeconfig,
            &log,
            identity,
            leader_election,
            extra,
        )
    }

    /// `kubectl apply -R -f examples/site/{physics,chemistry}`: the example site without its
    /// import (`examples/site/sources`, 20 more people): the tests count and name
    /// what the two departments declare; `the_example_site_with_its_import_…` applies it all.
    pub fn apply_site(&self) {
        for part in ["physics", "chemistry"] {
            let site = repo_root().join("examples/site").join(part);
            let out = self.kubectl(&["apply", "-R", "-f", &site.display().to_string()], None);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Waits until `count` objects of `kind` (all namespaces) are Ready.
    pub fn wait_ready(&self, kind: &str, count: usize) {
        wait_for(&format!("{count} Ready {kind}"), || {
            let out = self.get(&["get", kind, "-A", "-o", "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}"]);
            out.lines().filter(|l| *l == "True").count() == count
        });
    }

    /// The operator's write requests, as the API server's audit log recorded them.
    pub fn api_writes(&self) -> Vec<String> {
        self.cluster.operator_writes()
    }
}
