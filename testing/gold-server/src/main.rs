//! Roster's Gold (SSSRMAP) protocol test server as a process, for `hack/dev-up.sh` and tests
//! that run outside the test binary. It stands in for a Gold 2.2 server: signed requests only,
//! Gold's framing, Gold's status codes (see the `roster_gold_server` library). State lives in memory.
//!
//! Prints the bound address (`127.0.0.1:PORT`) as stdout's first line, then serves until
//! killed. `--log FILE` appends one JSON object per request (`action`, `objects`, `actor`,
//! `code`, `signed`), flushed per request. `--control-dir D`: creating the file
//! `D/drop-next-ACTION` (e.g. `D/drop-next-Deposit`) makes the server perform the next signed,
//! authorized request with that action but close the connection without a reply; the server
//! deletes the file when it uses it.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use roster_gold_server::{DEFAULT_CHUNK_ROWS, Extras, GoldServer, Options};

#[derive(Parser)]
#[command(
    name = "roster-gold-server",
    about = "A Gold 2.2 (SSSRMAP) stand-in for tests"
)]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:7112")]
    bind: String,
    /// Gold's auth_key file: its first line is the shared secret.
    #[arg(long)]
    auth_key_file: PathBuf,
    /// An actor allowed to act (repeatable; default root).
    #[arg(long = "actor")]
    actors: Vec<String>,
    /// Append a JSON line per request to this file.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Directory watched for control files (drop-next-ACTION).
    #[arg(long)]
    control_dir: Option<PathBuf>,
    /// Rows per reply piece of a chunked query.
    #[arg(long, default_value_t = DEFAULT_CHUNK_ROWS)]
    chunk_rows: usize,
    /// An actor that may only query (repeatable): its writes get 444.
    #[arg(long = "reader")]
    readers: Vec<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let secret = match std::fs::read_to_string(&args.auth_key_file) {
        Ok(text) => text.lines().next().unwrap_or("").to_string(),
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", args.auth_key_file.display());
            return ExitCode::FAILURE;
        }
    };
    if secret.is_empty() {
        eprintln!(
            "error: {} has no key on its first line",
            args.auth_key_file.display()
        );
        return ExitCode::FAILURE;
    }
    let mut opts = Options::new(&secret);
    if !args.actors.is_empty() {
        opts.actors = args.actors;
    }
    opts.chunk_rows = args.chunk_rows.max(1);
    opts.readers = args.readers;
    if let Some(dir) = &args.control_dir
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        eprintln!("error: cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let extras = Extras {
        log_file: args.log,
        control_dir: args.control_dir,
    };
    let server = match GoldServer::start_with(&args.bind, opts, extras).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.bind);
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{}", server.addr());
    let _ = out.flush();
    let _ = tokio::signal::ctrl_c().await;
    ExitCode::SUCCESS
}
