//! The `roster` command line (DESIGN.md §5.6).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod converge;
pub mod guest;

use crate::config::Config;
use crate::ldap::{Directory, schema_ldif};

/// Declarative people, accounts, projects and guests for HPC sites.
#[derive(Parser, Debug)]
#[command(name = "roster", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the CustomResourceDefinitions of all five kinds as YAML.
    Crd {
        /// Write one file per CRD (`<plural>.roster.io.yaml`) into this directory instead.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Print Roster's LDAP schema (cn=config LDIF) for loading into the directory.
    LdapSchema {
        /// Leave out the openssh-lpk definitions (for directories that already have them).
        #[arg(long)]
        without_openssh_lpk: bool,
    },
    /// Show what `apply` would change in the directory (exit 0 none, 2 changes, 3 some objects
    /// Invalid/Conflict, 1 error).
    Plan(converge::Args),
    /// Converge the directory to the manifests (exit 0 converged, 3 finished with
    /// Invalid/Conflict objects, 1 error).
    Apply(converge::Args),
    /// Run the operator: converge the cluster's Persons, Accounts and Projects continuously.
    Run {
        /// The configuration file.
        #[arg(long, env = "ROSTER_CONFIG")]
        config: PathBuf,
        /// This replica's identity in the leader Lease and in Events (default: POD_NAME or the
        /// host name with the process id).
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Serve /metrics, /healthz and /readyz here instead of operator.metricsAddress.
        #[arg(long)]
        metrics_address: Option<std::net::SocketAddr>,
        /// Run without leader election (one replica only).
        #[arg(long)]
        no_leader_election: bool,
        /// Log format: json (default) or text.
        #[arg(long, default_value = "json")]
        log_format: String,
        /// Tests only: add the seconds written in this file to the clock (read at every use),
        /// or stand at the instant `@<unix seconds>` written in it.
        #[arg(long, hide = true)]
        clock_offset_file: Option<PathBuf>,
        /// Write the address metrics are served on to this file once bound (written whole,
        /// then renamed into place): with `--metrics-address 127.0.0.1:0`, the port chosen.
        #[arg(long)]
        metrics_address_file: Option<PathBuf>,
    },
    /// The mass-deactivation guard: see what it holds, approve or reject.
    Guard {
        #[command(subcommand)]
        command: GuardCommand,
        /// The configuration file.
        #[arg(long, env = "ROSTER_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// Imports from upstream lists: plan them on files, or ask the operator for a run now.
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// Show what Gold holds for the site (users, projects, memberships, allocations), read
    /// over Gold's protocol with the configured key.
    Gold {
        /// The configuration file.
        #[arg(long, env = "ROSTER_CONFIG")]
        config: PathBuf,
    },
    /// Work with Guests: `guest extend NAME --months N` moves validUntil on by 1, 3, 6, 9 or 12
    /// months, in the cluster or in a manifest file (-f).
    Guest {
        #[command(subcommand)]
        command: guest::GuestCommand,
    },
    /// Work with the configuration file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum ImportCommand {
    /// What the ImportSources in the manifests would do (the same as `roster plan`, which runs
    /// them too): created, reactivated and gone records, errors and the deletion guard.
    Plan(converge::Args),
    /// Run the ImportSources in the manifests and apply the result (the same as `roster apply`).
    Apply(converge::Args),
    /// Ask the operator to run an ImportSource now (sets `roster.io/run-requested`).
    Run {
        /// The ImportSource.
        name: String,
        /// Its namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum GuardCommand {
    /// The limit, what the current window has used, and any approval in force.
    Status,
    /// Let the held removals proceed: lifts the guard for one window.
    Approve,
    /// Keep the held identities: withdraws any approval, and with `--kubernetes` releases the
    /// finalizers of deleted Accounts whose removal is held, without touching any backend.
    Reject {
        /// Also release held finalizers in the cluster (operator mode).
        #[arg(long)]
        kubernetes: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a configuration, then bind to the directory and check that it holds Roster's
    /// schema and containers.
    Check {
        /// The configuration file.
        #[arg(long, env = "ROSTER_CONFIG")]
        config: PathBuf,
        /// Only validate the file; do not contact the directory.
        #[arg(long)]
        offline: bool,
    },
    /// Print the effective configuration: the file validated, with every default filled in.
    Show {
        /// The configuration file.
        #[arg(long, env = "ROSTER_CONFIG")]
        config: PathBuf,
    },
}

/// Runs one command and maps the outcome to the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Crd { dir: None } => {
            print!("{}", crate::api::crds_yaml());
            ExitCode::SUCCESS
        }
        Command::Crd { dir: Some(dir) } => {
            for (file, yaml) in crate::api::crd_files() {
                let path = dir.join(file);
                if let Err(e) = std::fs::write(&path, yaml) {
                    eprintln!("error: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Command::LdapSchema {
            without_openssh_lpk,
        } => {
            print!("{}", schema_ldif(!without_openssh_lpk));
            ExitCode::SUCCESS
        }
        Command::Config {
            command: ConfigCommand::Check { config, offline },
        } => config_check(&config, offline).await,
        Command::Config {
            command: ConfigCommand::Show { config },
        } => match Config::load(&config) {
            Ok(c) => {
                print!("{}", c.to_yaml());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            config,
            identity,
            metrics_address,
            no_leader_election,
            log_format,
            clock_offset_file,
            metrics_address_file,
        } => {
            crate::telemetry::init_logging(log_format != "text");
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let metrics_address = match metrics_address {
                Some(a) => a,
                None => config
                    .operator
                    .metrics_address
                    .parse()
                    .expect("validated by Config::load"),
            };
            let identity = identity.unwrap_or_else(default_identity);
            let opts = crate::operator::Options {
                config,
                identity,
                metrics_address,
                leader_election: !no_leader_election,
                metrics_address_file,
                clock: match clock_offset_file {
                    Some(f) => crate::clock::Clock::offset_by_file(f),
                    None => crate::clock::Clock::system(),
                },
            };
            match crate::operator::run(opts).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "the operator stopped");
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Guard { command, config } => guard(command, config).await,
        Command::Gold { config } => gold_show(&config).await,
        Command::Import { command } => match command {
            ImportCommand::Plan(args) => converge::run(args, false).await,
            ImportCommand::Apply(args) => converge::run(args, true).await,
            ImportCommand::Run { name, namespace } => import_run(&name, &namespace).await,
        },
        Command::Plan(args) => converge::run(args, false).await,
        Command::Apply(args) => converge::run(args, true).await,
        Command::Guest { command } => guest::run(command).await,
    }
}

async fn import_run(name: &str, namespace: &str) -> ExitCode {
    use kube::api::{Api, Patch, PatchParams};
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let api: Api<crate::api::ImportSource> = Api::namespaced(client, namespace);
    let token = jiff::Timestamp::now().to_string();
    let patch = serde_json::json!({"metadata": {"annotations": {crate::api::RUN_REQUESTED_ANNOTATION: token}}});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            println!(
                "importsource {namespace}/{name}: run requested ({token}); see `kubectl get importsource {name} -n {namespace}`"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: importsource {namespace}/{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn gold_show(path: &std::path::Path) -> ExitCode {
    let fail = |m: String| {
        eprintln!("error: {m}");
        ExitCode::FAILURE
    };
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    let client = match crate::gold::client(&config) {
        Ok(Some(c)) => c,
        Ok(None) => return fail(format!("{} has no gold: section", path.display())),
        Err(e) => return fail(e.to_string()),
    };
    let g = match crate::gold::observe::observe(&client).await {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let tf = |b: bool| if b { "active" } else { "INACTIVE" };
    println!(
        "{:<14} {:<9} {:<14} {:<24} ORGANIZATION",
        "USER", "STATE", "DEFAULT", "NAME"
    );
    for (name, u) in &g.users {
        println!(
            "{name:<14} {:<9} {:<14} {:<24} {}",
            tf(u.active),
            u.default_project,
            u.common_name,
            u.organization
        );
    }
    println!();
    println!(
        "{:<14} {:<9} MEMBERS (* admin, - suspended)",
        "PROJECT", "STATE"
    );
    for (name, p) in &g.projects {
        let members: Vec<String> = g
            .members
            .iter()
            .filter(|((project, _), _)| project == name)
            .map(|((_, user), m)| {
                format!(
                    "{user}{}{}",
                    if m.admin { "*" } else { "" },
                    if m.active { "" } else { "-" }
                )
            })
            .collect();
        println!("{name:<14} {:<9} {}", tf(p.active), members.join(" "));
    }
    println!();
    println!(
        "{:<14} {:<12} {:<12} {:>12} {:>12}",
        "ALLOCATION", "STARTS", "ENDS", "DEPOSITED", "LEFT"
    );
    let day = |t: i64| {
        jiff::Timestamp::from_second(t)
            .map(|t| t.strftime("%Y-%m-%d").to_string())
            .unwrap_or_else(|_| t.to_string())
    };
    for (project, id) in &g.accounts {
        for a in g.allocations.get(id).into_iter().flatten() {
            println!(
                "{project:<14} {:<12} {:<12} {:>12} {:>12}",
                day(a.start),
                day(a.end),
                a.deposited,
                a.amount
            );
        }
    }
    ExitCode::SUCCESS
}

async fn guard(command: GuardCommand, config: Option<PathBuf>) -> ExitCode {
    fn fail(message: impl std::fmt::Display) -> ExitCode {
        eprintln!("error: {message}");
        ExitCode::FAILURE
    }
    let Some(path) = config else {
        return fail("--config (or ROSTER_CONFIG) is required");
    };
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let mut dir = match Directory::connect(&config).await {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let observed = match dir
        .observe(&config.ldap.base_dn, config.ldap.page_size)
        .await
    {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    let now = jiff::Timestamp::now();
    let status = crate::plan::guard_status(&config, &observed, now);
    let counter = format!(
        "cn={},{}",
        crate::plan::GUARD_APPROVAL,
        config.counters_dn()
    );
    match command {
        GuardCommand::Status => {
            let limit = if status.limit == usize::MAX {
                "unlimited".to_string()
            } else {
                status.limit.to_string()
            };
            println!(
                "guard: {} of {limit} removal-caused deactivations/purges used in the last {} ({} managed accounts)",
                status.used, status.window, status.managed
            );
            match status.approved_until {
                Some(t) => println!("approved: removals are not limited until {t}"),
                None => println!("not approved: removals beyond the limit are held"),
            }
            ExitCode::SUCCESS
        }
        GuardCommand::Approve => {
            let until = now.checked_add(status.window).unwrap_or(now);
            if let Err(e) = dir
                .set_counter(&counter, crate::plan::GUARD_APPROVAL, until.as_second())
                .await
            {
                return fail(e);
            }
            println!("approved until {until}: held removals proceed on the next run or pass");
            ExitCode::SUCCESS
        }
        GuardCommand::Reject { kubernetes } => {
            if let Err(e) = dir.remove_entry(&counter).await {
                return fail(e);
            }
            if kubernetes {
                match crate::operator::release_held(&config, &observed).await {
                    Ok(n) => {
                        println!("released {n} held finalizer(s); those identities stay Active")
                    }
                    Err(e) => return fail(e),
                }
            }
            println!(
                "rejected: held removals stay held; the identities stay Active until declared again or approved"
            );
            ExitCode::SUCCESS
        }
    }
}

/// The host name and process id: unique enough among replicas outside a pod.
fn default_identity() -> String {
    let host =
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "roster".into());
    format!("{}-{}", host.trim(), std::process::id())
}

async fn config_check(path: &std::path::Path, offline: bool) -> ExitCode {
    fn fail(message: impl std::fmt::Display) -> ExitCode {
        eprintln!("error: {message}");
        ExitCode::FAILURE
    }
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    if offline {
        println!("config {}: valid", path.display());
        return ExitCode::SUCCESS;
    }
    let mut dir = match Directory::connect(&config).await {
        Ok(d) => d,
        Err(e) => return fail(e.to_string()),
    };
    if let Err(e) = dir.check_schema().await {
        return fail(e.to_string());
    }
    if let Err(e) = dir.check_containers(&config).await {
        return fail(e.to_string());
    }
    if let Some(slurm) = &config.slurm {
        // Writes to a cluster slurmdbd does not know are silently dropped: check at start-up.
        use crate::backend::Backend;
        let mut backend = crate::slurm::Slurm::new(&config).expect("Slurm is configured");
        if let Err(e) = backend.observe().await {
            return fail(e);
        }
        println!(
            "slurm: clusters {} known to slurmdbd; accounting database readable",
            slurm.clusters.join(", ")
        );
    }
    match crate::gold::client(&config) {
        Err(e) => return fail(e),
        Ok(None) => {}
        Ok(Some(client)) => {
            // A signed query proves the address, the key and the actor's right to read.
            let probe = crate::gold::Request::new("Query", "Organization")
                .get("Name")
                .option("Limit", "1");
            if let Err(e) = client.send(&probe).await {
                return fail(e);
            }
            // A write that changes nothing proves the actor's right to write: Gold authorizes
            // the action before it looks for matches (an actor without rights gets 444 here,
            // not on the first real change). The name cannot exist: Roster's names never
            // start with a space.
            let write = crate::gold::Request::new("Modify", "Organization")
                .set("Description", "roster config check")
                .filter("Name", " roster-config-check");
            if let Err(e) = client.send(&write).await {
                return fail(format!(
                    "gold: actor {} may query but not write ({e}); give it Gold's write roles on User, Project, ProjectUser, Organization, Allocation and Deposit",
                    client.actor
                ));
            }
            println!(
                "gold: {} accepted a signed query and a write as actor {}",
                client.addr, client.actor
            );
        }
    }
    println!(
        "config {}: valid; directory {} bound as {} has Roster's schema and containers",
        path.display(),
        config.ldap.uri,
        config.ldap.bind_dn
    );
    ExitCode::SUCCESS
}
