//! `drover scheduler`: the scheduler alone, against an API server.

use drover_scheduler::SchedulerConfig;

use super::GlobalArgs;

/// Flags of `drover scheduler` (the server and token come from the global flags).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Never preempt lower-priority pods to make room (whatever the pods' policy).
    #[arg(long)]
    pub no_preemption: bool,
    /// Binding calls in flight at once.
    #[arg(long, default_value_t = drover_scheduler::DEFAULT_BIND_CONCURRENCY)]
    pub bind_concurrency: usize,
    /// With --leader-elect, the Lease (kube-system/drover-scheduler) decides which of several
    /// schedulers binds; the others wait to take over.
    #[command(flatten)]
    pub election: super::controllers::LeaderElectArgs,
}

/// The scheduler's configuration from the flags.
pub fn config(args: &Args) -> SchedulerConfig {
    SchedulerConfig {
        preemption: !args.no_preemption,
        bind_concurrency: args.bind_concurrency,
        leader_election: args.election.election(
            drover_scheduler::DEFAULT_LEASE_NAMESPACE,
            drover_scheduler::DEFAULT_LEASE_NAME,
        ),
        ..SchedulerConfig::default()
    }
}

pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<()> {
    let client = global.client()?;
    drover_scheduler::run(config(&args), client, super::up::stop_signal()).await?;
    Ok(())
}

/// The scheduler inside `drover up`, with the default configuration, until the task is aborted.
pub async fn run_in_process(client: drover_client::Client) {
    if let Err(e) =
        drover_scheduler::run(SchedulerConfig::default(), client, std::future::pending()).await
    {
        tracing::error!(error = %e, "scheduler stopped");
    }
}
