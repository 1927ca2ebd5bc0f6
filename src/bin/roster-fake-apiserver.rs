//! The fake Kubernetes API server as a process, for `hack/dev-up.sh`, `make demo-operator` and
//! tests that drive it with a real `kubectl`. Not for production: no authentication, no TLS.

use std::net::SocketAddr;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let mut bind: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let mut kubeconfig: Option<String> = None;
    let mut conflict_every = 0u64;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bind" => match args.next().and_then(|v| v.parse().ok()) {
                Some(b) => bind = b,
                None => return usage("--bind needs HOST:PORT"),
            },
            "--kubeconfig" => kubeconfig = args.next(),
            // Test hook: every Nth status write is refused with 409 Conflict.
            "--conflict-every" => match args.next().and_then(|v| v.parse().ok()) {
                Some(n) => conflict_every = n,
                None => return usage("--conflict-every needs a number"),
            },
            "-h" | "--help" => return usage(""),
            other => return usage(&format!("unknown argument {other}")),
        }
    }
    if !bind.ip().is_loopback() {
        return usage("refusing to listen beyond loopback: this server has no authentication");
    }
    let server = match roster::apiserver::ApiServer::start(bind).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot listen on {bind}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    server
        .shared
        .faults
        .conflict_every
        .store(conflict_every, std::sync::atomic::Ordering::SeqCst);
    if let Some(path) = kubeconfig
        && let Err(e) = std::fs::write(&path, server.kubeconfig())
    {
        eprintln!("error: cannot write {path}: {e}");
        return std::process::ExitCode::FAILURE;
    }
    println!("roster-fake-apiserver listening on {}", server.url());
    let _ = tokio::signal::ctrl_c().await;
    std::process::ExitCode::SUCCESS
}

fn usage(problem: &str) -> std::process::ExitCode {
    if !problem.is_empty() {
        eprintln!("error: {problem}");
    }
    eprintln!(
        "usage: roster-fake-apiserver [--bind 127.0.0.1:PORT] [--kubeconfig FILE] [--conflict-every N]"
    );
    if problem.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(2)
    }
}
