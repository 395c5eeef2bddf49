//! The `bulkfhir` command: `serve`, `load`, `migrate`, `clients`, and `synth` for benchmarks.

use std::{path::PathBuf, process::ExitCode};

use bulkfhir::{
    auth::clients::Client,
    config::{Flags, Settings},
    load,
    startup::Application,
    store::Stores,
    telemetry,
};
use clap::{Parser, Subcommand};

mod jobs_command;

/// Loading and export churn through millions of small JSON values, which mimalloc handles better
/// than the system allocator; built without transparent huge pages (`no_thp`), which cost RSS
/// and CPU here (figures in docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "bulkfhir", version, about = "A FHIR Bulk Data ($export) server")]
struct Cli {
    /// TOML config file (defaults: config/default.toml, built in).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Every setting is a flag too (`--workers 2`), declared on `Settings`.
    #[command(flatten)]
    settings: Flags,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (applies migrations first).
    Serve,
    /// Load NDJSON files, Bundle files, or directories of them.
    Load {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Register, list and remove SMART backend clients. Authorization is on while any exists.
    Clients {
        #[command(subcommand)]
        command: ClientsCommand,
    },
    /// See and cancel export jobs in the database (status, owner, level, progress, files, age).
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Write a benchmark population: whole copies of a sample (NDJSON) with fresh ids.
    Synth {
        /// At least this many resources (rounded up to whole copies of the sample).
        #[arg(long)]
        resources: u64,
        /// Directory the `copy-NNNNNN.ndjson` files are written to.
        #[arg(long)]
        out: PathBuf,
        /// Sample NDJSON files or directories (UUID ids, as Synthea writes them).
        #[arg(required = true)]
        sample: Vec<PathBuf>,
    },
    /// De-identify NDJSON or Bundle files (or directories of them) with the anonymization
    /// configuration given as --config (Microsoft's FHIR Tools for Anonymization format);
    /// writes DIR/<file name>. Needs no database and reads no server settings.
    Anonymize {
        #[arg(long)]
        out: PathBuf,
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ClientsCommand {
    /// Register a client (or replace the registration of the same client id).
    Add {
        /// The client_id the client puts in `iss` and `sub` of its assertions.
        client_id: String,
        /// The client's public keys: a JWKS file, or the JWKS JSON itself.
        #[arg(long, conflicts_with = "jwks_url", required_unless_present = "jwks_url")]
        jwks: Option<String>,
        /// Where the client publishes its JWKS (https).
        #[arg(long)]
        jwks_url: Option<String>,
        /// A scope the client may be granted, e.g. system/*.read or system/Observation.rs (repeatable).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
    },
    /// List registered clients.
    List,
    /// Remove a client: its tokens stop working at once.
    Remove { client_id: String },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// The most recent jobs, newest first, one a line.
    List {
        /// How many jobs to show.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// One job: its request, progress and files.
    Show { id: String },
    /// Cancel a job as the client's DELETE does: it stops and its files are deleted.
    Cancel { id: String },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Needs no database and reads no server settings.
    if let Command::Anonymize { out, inputs } = &cli.command {
        return anonymize(cli.config.as_deref(), inputs, out);
    }
    let (settings, warnings) = match Settings::load(cli.config.as_deref(), &cli.settings) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("bulkfhir: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(settings.log_format);
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let result = match cli.command {
        Command::Serve => serve(settings).await,
        Command::Load { paths, .. } => load_files(&settings, &paths).await,
        Command::Clients { command, .. } => manage_clients(&settings, command).await,
        Command::Jobs { command, .. } => jobs_command::run(&settings, command).await,
        Command::Migrate => Stores::connect(&settings.database_url, 1).await.map(|_| {
            eprintln!("migrations applied");
            ExitCode::SUCCESS
        }).map_err(Into::into),
        Command::Synth { resources, out, sample } => synth(&sample, resources, &out),
        Command::Anonymize { .. } => unreachable!("handled before the settings load"),
    };
    result.unwrap_or_else(|e| {
        eprintln!("bulkfhir: {}", describe(&e));
        ExitCode::FAILURE
    })
}

/// The error and its causes, each once: many errors (sqlx's, ours around them) already quote
/// their source in their own message, so `{:#}` would repeat it.
fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain().map(ToString::to_string) {
        if !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    text
}

async fn serve(settings: Settings) -> anyhow::Result<ExitCode> {
    let app = Application::build(settings).await?;
    let shutdown = app.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        shutdown.cancel();
    });
    app.run_until_stopped().await?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    drop(ctrl_c.await);
}

async fn load_files(settings: &Settings, paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let stores = Stores::connect(&settings.database_url, 4).await?;
    let report = load::load_with(stores.resources.as_ref(), paths, settings.validation).await?;
    for failure in &report.failures {
        eprintln!("{}: {}: {}", failure.file.display(), failure.location, failure.reason);
    }
    for (resource_type, count) in &report.loaded {
        println!("{resource_type:<28} {count:>10}");
    }
    for (resource_type, count) in &report.deleted {
        println!("{:<28} {count:>10}", format!("{resource_type} (deleted)"));
    }
    let seconds = report.elapsed.as_secs_f64();
    println!(
        "{:<28} {:>10}  in {seconds:.1} s ({:.0} resources/s), {} failed",
        "total",
        report.total(),
        report.total() as f64 / seconds.max(1e-9),
        report.failures.len()
    );
    Ok(if report.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn manage_clients(settings: &Settings, command: ClientsCommand) -> anyhow::Result<ExitCode> {
    // Two connections: Postgres keeps one for LISTEN.
    let stores = Stores::connect(&settings.database_url, 2).await?;
    match command {
        ClientsCommand::Add { client_id, jwks, jwks_url, scopes } => {
            let jwks = jwks
                .map(|given| if given.trim_start().starts_with('{') { Ok(given) } else { std::fs::read_to_string(&given) })
                .transpose()
                .map_err(|e| anyhow::anyhow!("cannot read the JWKS file: {e}"))?;
            let client = Client::new(&client_id, jwks.as_deref(), jwks_url.as_deref(), &scopes).map_err(|e| anyhow::anyhow!("{e}"))?;
            stores.auth.put_client(&client.to_record()).await?;
            println!("client '{}' registered with scopes: {}", client.id, client.scopes);
        }
        ClientsCommand::List => {
            for client in stores.auth.clients().await? {
                let keys = client.jwks_url.as_deref().unwrap_or("inline JWKS");
                println!("{}\t{}\t{}", client.client_id, client.scopes, keys);
            }
        }
        ClientsCommand::Remove { client_id } => {
            if !stores.auth.remove_client(&client_id).await? {
                eprintln!("bulkfhir: no client '{client_id}'");
                return Ok(ExitCode::FAILURE);
            }
            println!("client '{client_id}' removed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn anonymize(config: Option<&std::path::Path>, inputs: &[PathBuf], out: &std::path::Path) -> ExitCode {
    let Some(config) = config else {
        eprintln!("bulkfhir: anonymize needs --config FILE (the anonymization configuration)");
        return ExitCode::from(2);
    };
    match bulkfhir::anonymize::command::run(config, inputs, out) {
        Ok(r) => {
            println!("{} resources from {} files written to {}", r.resources, r.files, out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bulkfhir: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

fn synth(sample: &[PathBuf], resources: u64, out: &std::path::Path) -> anyhow::Result<ExitCode> {
    let report = load::synth::synthesize(sample, resources, out)?;
    println!(
        "{} resources ({} copies of the sample), {} bytes, in {} files under {}",
        report.resources,
        report.copies,
        report.bytes,
        report.files.len(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}
