//! `drover controllers`: the controller manager (job, gang, pod group, node lifecycle, garbage
//! collection), optionally leader-elected so several copies can run for availability.

use std::time::Duration;

use drover_client::Client;
use drover_client::leader::ElectionConfig;
use drover_controllers::ControllersConfig;
use drover_controllers::config as defaults;

use super::GlobalArgs;

/// Flags of `drover controllers`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub election: LeaderElectArgs,
    /// A node whose lease is not renewed for this long is marked unreachable.
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub node_monitor_grace_period: Duration,
    /// How often a node judged lost (or while leases cannot be seen) is looked at again; a
    /// healthy node is looked at when its lease changes and when its grace period would end.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub node_monitor_period: Duration,
    /// How long pods stay on an unreachable node before they are failed (NodeLost).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub pod_eviction_timeout: Duration,
    /// Nodes evicted per second in a healthy zone.
    #[arg(long, default_value_t = defaults::DEFAULT_NODE_EVICTION_RATE)]
    pub node_eviction_rate: f64,
    /// Nodes evicted per second in a zone where many nodes are unhealthy.
    #[arg(long, default_value_t = defaults::DEFAULT_SECONDARY_NODE_EVICTION_RATE)]
    pub secondary_node_eviction_rate: f64,
    /// Share of a zone's nodes unhealthy at which the secondary rate applies.
    #[arg(long, default_value_t = defaults::DEFAULT_UNHEALTHY_ZONE_THRESHOLD)]
    pub unhealthy_zone_threshold: f64,
    /// Finished pods kept before the oldest are deleted.
    #[arg(long, default_value_t = defaults::DEFAULT_TERMINATED_POD_GC_THRESHOLD)]
    pub terminated_pod_gc_threshold: usize,
    /// Delete finished pods this long after they finish (default: only by threshold).
    #[arg(long, value_parser = parse_duration)]
    pub terminated_pod_ttl: Option<Duration>,
    /// Namespace of the node agents' leases.
    #[arg(long, default_value = defaults::DEFAULT_NODE_LEASE_NAMESPACE)]
    pub node_lease_namespace: String,
    /// Reconciles per controller at once.
    #[arg(long, default_value_t = drover_controllers::runtime::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
}

impl Args {
    pub fn config(&self) -> ControllersConfig {
        let mut c = ControllersConfig::default();
        if let Some(id) = &self.election.identity {
            c.identity = id.clone();
        }
        c.leader_elect = self.election.leader_elect;
        c.lease_duration = self.election.leader_elect_lease_duration;
        c.renew_deadline = self.election.leader_elect_renew_deadline;
        c.retry_period = self.election.leader_elect_retry_period;
        c.node_monitor_grace_period = self.node_monitor_grace_period;
        c.node_monitor_period = self.node_monitor_period;
        c.pod_eviction_timeout = self.pod_eviction_timeout;
        c.node_eviction_rate = self.node_eviction_rate;
        c.secondary_node_eviction_rate = self.secondary_node_eviction_rate;
        c.unhealthy_zone_threshold = self.unhealthy_zone_threshold;
        c.terminated_pod_gc_threshold = self.terminated_pod_gc_threshold;
        c.terminated_pod_ttl = self.terminated_pod_ttl;
        c.node_lease_namespace = self.node_lease_namespace.clone();
        c.concurrency = self.concurrency;
        c
    }
}

/// Leader election flags, the same on `drover controllers` and `drover scheduler` (and named as
/// Kubernetes' components name them).
#[derive(clap::Args, Debug, Clone)]
pub struct LeaderElectArgs {
    /// Elect a leader through a Lease, so several copies can run and one acts.
    #[arg(long)]
    pub leader_elect: bool,
    /// This copy's identity in the leader lease (default: host name, pid and a random part).
    #[arg(long)]
    pub identity: Option<String>,
    /// How long a leader's lease lasts without renewal.
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub leader_elect_lease_duration: Duration,
    /// A leader that cannot renew for this long steps down.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub leader_elect_renew_deadline: Duration,
    /// How often leaders renew and candidates retry.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub leader_elect_retry_period: Duration,
}

impl LeaderElectArgs {
    /// The election in Lease `namespace/name`, when `--leader-elect` is given.
    pub fn election(&self, namespace: &str, name: &str) -> Option<ElectionConfig> {
        self.leader_elect.then(|| ElectionConfig {
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: self
                .identity
                .clone()
                .unwrap_or_else(drover_client::leader::default_identity),
            lease_duration: self.leader_elect_lease_duration,
            renew_deadline: self.leader_elect_renew_deadline,
            retry_period: self.leader_elect_retry_period,
        })
    }
}

/// `500ms`, `40s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration like 500ms, 40s or 5m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?}: expected ms, s, m or h"
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// Runs the controller manager until Ctrl-C or SIGTERM.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<()> {
    let client = global.client()?;
    drover_controllers::run(args.config(), client, stop_signal()).await?;
    Ok(())
}

/// The controllers inside `drover up`, with default settings, until the task is aborted.
pub async fn run_in_process(client: Client) {
    if let Err(e) =
        drover_controllers::run(ControllersConfig::default(), client, std::future::pending()).await
    {
        tracing::error!(error = %e, "controller manager stopped");
    }
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("40s"), Ok(Duration::from_secs(40)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3d").is_err());
        assert!(parse_duration("x").is_err());
    }
}
