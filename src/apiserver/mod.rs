//! A fake Kubernetes API server for tests: faithful enough that the real `roster` binary, a
//! kube-runtime `Controller` and a real `kubectl` behave against it as against a cluster.
//! No real API server can run on the project's machines (docs/testing.md says what this one does
//! and where it differs).

mod http;
pub mod patch;
pub mod selector;
pub mod store;
pub mod table;
pub mod types;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use store::Store;
use types::ResourceType;

/// State shared by every connection.
pub struct Shared {
    pub store: Mutex<Store>,
    /// Bumped after every write, so watches wake up.
    changed: tokio::sync::watch::Sender<u64>,
    /// Bumped to end every open watch (tests use it to force reconnects).
    close: tokio::sync::watch::Sender<u64>,
    /// While true, open watches deliver nothing (tests use it to make a watcher fall behind).
    paused: tokio::sync::watch::Sender<bool>,
    /// Injected faults (test hooks): see [`Faults`].
    pub faults: Faults,
}

/// Faults the server injects on request (test hooks, not in a real server): every Nth status
/// write is refused with `409 Conflict` as if the object had changed underneath, and the `410
/// Gone` answers that watches got are counted, so a test can show a client retried and relisted.
#[derive(Default)]
pub struct Faults {
    /// Refuse every Nth write to a status subresource with 409 (0: never).
    pub conflict_every: std::sync::atomic::AtomicU64,
    /// Status writes seen so far (the Nth is counted here).
    status_writes: std::sync::atomic::AtomicU64,
    /// 409s injected so far.
    pub conflicts: std::sync::atomic::AtomicU64,
    /// Watches ended with 410 Gone (an expired resourceVersion) so far.
    pub gone: std::sync::atomic::AtomicU64,
    /// TCP connections accepted so far (a client's connection use is observable).
    pub connections: std::sync::atomic::AtomicU64,
}

impl Faults {
    /// Counts a status write; true when this one is to be refused with 409.
    pub fn conflict_now(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        let every = self.conflict_every.load(SeqCst);
        let n = self.status_writes.fetch_add(1, SeqCst) + 1;
        if every > 0 && n.is_multiple_of(every) {
            self.conflicts.fetch_add(1, SeqCst);
            return true;
        }
        false
    }

    /// `{"conflictEvery": N, "conflicts": …, "gone": …, "connections": …}` for
    /// `GET /_roster/faults`.
    pub fn report(&self) -> serde_json::Value {
        use std::sync::atomic::Ordering::SeqCst;
        serde_json::json!({
            "conflictEvery": self.conflict_every.load(SeqCst),
            "conflicts": self.conflicts.load(SeqCst),
            "gone": self.gone.load(SeqCst),
            "connections": self.connections.load(SeqCst),
        })
    }
}

impl Shared {
    fn new(types: Vec<ResourceType>) -> Shared {
        Shared {
            store: Mutex::new(Store::new(types)),
            changed: tokio::sync::watch::channel(0).0,
            close: tokio::sync::watch::channel(0).0,
            paused: tokio::sync::watch::channel(false).0,
            faults: Faults::default(),
        }
    }

    fn notify(&self) {
        let rv = self.store.lock().expect("store lock").rv;
        self.changed.send_replace(rv);
    }

    /// Forgets the watch history: watches resuming from an older resourceVersion get 410 Gone.
    pub fn compact(&self) {
        self.store.lock().expect("store lock").compact();
    }

    /// Ends every open watch; clients reconnect from their last resourceVersion.
    pub fn close_watches(&self) {
        self.close.send_modify(|n| *n += 1);
    }

    /// Holds (true) or releases (false) delivery on every watch.
    pub fn pause_watches(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    /// Writes so far by verb and resource (`update-status accounts.roster.io` …).
    pub fn writes(&self) -> BTreeMap<String, u64> {
        self.store.lock().expect("store lock").writes.clone()
    }
}

/// A running server.
pub struct ApiServer {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Serves Roster's CRDs and the core kinds on `bind` (port 0: any free port).
    pub async fn start(bind: SocketAddr) -> std::io::Result<ApiServer> {
        ApiServer::start_with(bind, types::default_types()).await
    }

    pub async fn start_with(
        bind: SocketAddr,
        types: Vec<ResourceType>,
    ) -> std::io::Result<ApiServer> {
        let listener = tokio::net::TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(types));
        {
            // Like every cluster: these namespaces exist from the start.
            let mut store = shared.store.lock().expect("store lock");
            if let Some(t) = store
                .types
                .iter()
                .position(|t| t.kind == "Namespace" && t.group.is_empty())
            {
                for ns in ["default", "kube-system", "kube-public"] {
                    let obj = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                    store
                        .create(t, "", obj, false)
                        .map_err(|e| std::io::Error::other(e.message))?;
                }
            }
        }
        let task = tokio::spawn(http::serve(listener, shared.clone()));
        Ok(ApiServer { addr, shared, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig pointing at this server (plain HTTP, no credentials).
    pub fn kubeconfig(&self) -> String {
        kubeconfig(&self.url())
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A kubeconfig for a server URL.
pub fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: roster-fake\n  cluster:\n    server: {url}\ncontexts:\n- name: roster-fake\n  context:\n    cluster: roster-fake\n    user: roster-fake\n    namespace: default\ncurrent-context: roster-fake\nusers:\n- name: roster-fake\n  user: {{}}\npreferences: {{}}\n"
    )
}
