//! `drover`: every component of the control plane as a subcommand, and the user's commands.
//!
//! `main` only parses flags and dispatches; each subcommand lives in `cmd/<name>.rs` with its
//! own `Args` and a `run` function.

mod cmd;

/// mimalloc instead of glibc's malloc: the API server's create path spent about a fifth of its
/// CPU in glibc's allocator (arena locks, consolidation) under 64 concurrent clients.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Drover: a control plane for GPU and mixed CPU/GPU batch clusters.
#[derive(Parser, Debug)]
#[command(name = "drover", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    global: cmd::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a whole control plane on this machine (API server on the embedded store, and the
    /// other components as they exist).
    Up(cmd::up::Args),
    /// Run the API server alone.
    Apiserver(cmd::up::ApiserverArgs),
    /// Run this machine's node agent against --server.
    Agent(cmd::agent::Args),
    /// Run the scheduler alone, against --server.
    Scheduler(cmd::scheduler::Args),
    /// Run the controller manager (jobs, gangs, node lifecycle, garbage collection).
    Controllers(cmd::controllers::Args),
    /// Create or update objects from YAML or JSON files.
    Apply(cmd::apply::Args),
    /// List objects, or show one.
    Get(cmd::get::Args),
    /// Show an object in detail, with its events.
    Describe(cmd::describe::Args),
    /// Delete objects by kind and name, or those in files.
    Delete(cmd::delete::Args),
    /// Print a container's log.
    Logs(cmd::logs::Args),
    /// Run a benchmark scenario against an in-process control plane (or --server).
    Bench(cmd::bench::Args),
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    // A benchmark's components would bury its progress and table under info logs.
    if matches!(cli.command, Command::Bench(_)) && cli.global.log == "info" {
        cli.global.log = "error".into();
    }
    cmd::init_tracing(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Up(a) => cmd::up::run_up(a, &cli.global).await,
            Command::Apiserver(a) => cmd::up::run_apiserver(a, &cli.global).await,
            Command::Agent(a) => cmd::agent::run(a, &cli.global).await,
            Command::Scheduler(a) => cmd::scheduler::run(a, &cli.global).await,
            Command::Controllers(a) => cmd::controllers::run(a, &cli.global).await,
            Command::Apply(a) => cmd::apply::run(a, &cli.global).await,
            Command::Get(a) => cmd::get::run(a, &cli.global).await,
            Command::Describe(a) => cmd::describe::run(a, &cli.global).await,
            Command::Delete(a) => cmd::delete::run(a, &cli.global).await,
            Command::Logs(a) => cmd::logs::run(a, &cli.global).await,
            Command::Bench(a) => cmd::bench::run(a, &cli.global).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cmd::render_error(&e));
            ExitCode::from(cmd::exit_code(&e))
        }
    }
}
