use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = roster::cli::Cli::parse();
    if !matches!(cli.command, roster::cli::Command::Run { .. }) {
        // The one-shot commands print their own results; logs only on request.
        if std::env::var_os("ROSTER_LOG").is_some() {
            roster::telemetry::init_logging(false);
        }
    }
    roster::cli::run(cli).await
}
