//! `slipway`: the command line for people working on or operating Slipway.
//!
//! # Layout
//! - [`dev`]: `slipway dev`, the local stack and the demo (what `scripts/dev` runs).
//! - [`send`]: `slipway send stripe|github`, signed provider events to a running starter.
//! - [`agents`], [`jobs`]: read commands over the REST API and Temporal visibility.
//! - [`replay`]: replay recorded histories against this build's workflows.
//! - [`reconcile`]: run a reconciler now through its schedule and print its report.
//! - `openapi`: the REST API's OpenAPI document, from which `clients/typescript` is generated.
//! - [`env`]: settings (environment first, then the defaults of `scripts/dev.env`).
//! - [`api`]: the starter's REST API, tokens, tables. [`progress`]: spinners and step lines.
//!
//! Exit codes: 0 success; 1 failure (refused event, failed wait, failed replay, unreachable
//! service, or the demo's failure); 2 bad usage; 130 interrupted.

mod agents;
mod api;
mod dev;
mod env;
mod jobs;
mod progress;
mod reconcile;
mod replay;
mod send;

use clap::{Parser, Subcommand};

/// Run Slipway locally, send it signed test events, inspect agents and jobs, replay histories.
#[derive(Debug, Parser)]
#[command(name = "slipway", version, propagate_version = true, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const AFTER_HELP: &str = "Settings come from the environment, else the local stack's defaults \
(scripts/dev.env): SLIPWAY_HTTP_ADDR, STRIPE_WEBHOOK_SECRET, GITHUB_WEBHOOK_SECRET, \
SLIPWAY_JWT_SECRET, SLIPWAY_TASK_QUEUE, TEMPORAL_ADDRESS, ...";

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the local stack (Temporal dev server + Web UI, sandbox, worker, starter) and run the demo.
    Dev(dev::DevArgs),
    /// Send a signed Stripe or GitHub webhook event to a running starter.
    Send {
        #[command(subcommand)]
        target: send::SendCommand,
    },
    /// Inspect agents (REST API).
    Agents {
        #[command(subcommand)]
        command: agents::AgentsCommand,
    },
    /// Inspect coding jobs (Temporal visibility and the REST API).
    Jobs {
        #[command(subcommand)]
        command: jobs::JobsCommand,
    },
    /// Replay recorded workflow histories against the current workflow code.
    Replay(replay::ReplayArgs),
    /// Run a reconciler now (through its Temporal Schedule) and print what it did.
    Reconcile(reconcile::ReconcileArgs),
    /// The orphans the latest sweep found (provider resources no live owner holds); `--delete`.
    Orphans(reconcile::OrphansArgs),
    /// Print the REST API's OpenAPI 3.1 document (what `GET /api/openapi.json` serves).
    Openapi,
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Dev(args) => dev::run(args).await,
        Command::Send { target } => send::run(target).await,
        Command::Agents { command } => agents::run(command).await,
        Command::Jobs { command } => jobs::run(command).await,
        Command::Replay(args) => replay::run(args).await,
        Command::Reconcile(args) => reconcile::run(args).await,
        Command::Orphans(args) => reconcile::orphans(args).await,
        Command::Openapi => {
            let doc = slipway_starter::openapi::document();
            println!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(0)
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    // Do not wait for background tasks (e.g. a replayer's) on the way out.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
