//! `drover agent`: the node agent of this machine (registers the node and its devices, runs
//! the pods bound to it, serves their logs). Also what `drover up` uses to start its local
//! agent and its simulated nodes.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use drover_client::Client;
use drover_client::config::drover_home;
use drover_nodeagent::{AgentConfig, HollowCluster, HollowOptions};

use super::GlobalArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Name of the node (default: this machine's host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Devices: auto (cpu, plus NVIDIA GPUs if present), nvidia, none, or simulated:PROFILE
    /// (h100-8, a100-8, l4-4, cpu, or a profile YAML file).
    #[arg(long, default_value = "auto")]
    pub devices: String,
    /// Where the agent keeps pod records and logs, private to it (default:
    /// ~/.drover/agent).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// How often the node's lease is renewed (e.g. 5s, 500ms, 1m).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub lease_interval: Duration,
    /// Port of the log server the API server proxies `drover logs` to (0 picks one).
    #[arg(long, default_value_t = drover_nodeagent::logserver::DEFAULT_LOG_PORT)]
    pub log_port: u16,
    /// The node's address (default: the one this machine uses to reach the API server).
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// Where the log server listens (default: the node's address).
    #[arg(long)]
    pub log_address: Option<IpAddr>,
    /// First restart delay of a crashing container; it doubles up to 5 minutes.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub restart_backoff: Duration,
    /// The cgroup file system used for resource limits.
    #[arg(long, default_value = drover_nodeagent::runtime::cgroup::DEFAULT_CGROUP_ROOT)]
    pub cgroup_root: PathBuf,
    /// Run containers without cgroup limits.
    #[arg(long)]
    pub no_cgroups: bool,
    #[command(flatten)]
    pub pods: PodUserArgs,
}

/// Who pods run as and where they work; shared by `agent` and `up`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PodUserArgs {
    /// User pods run as when their securityContext names none: NAME, UID, NAME:GID or UID:GID
    /// (default, when the agent runs as root: the `drover` system user, created if missing;
    /// an agent that is not root runs pods as itself and cannot switch users).
    #[arg(long, value_name = "NAME|UID[:GID]")]
    pub pod_user: Option<String>,
    /// Directory under which each node keeps its pods' working directories
    /// (`<dir>/<node>/<pod uid>`); every directory above it must be enterable by the pod user
    /// (default: /var/lib/drover/work as root, else <state dir>/work).
    #[arg(long, value_name = "DIR")]
    pub pod_work_root: Option<PathBuf>,
}

impl PodUserArgs {
    fn apply(&self, cfg: AgentConfig) -> AgentConfig {
        cfg.with_pod_user(self.pod_user.clone())
            .with_pod_work_root(self.pod_work_root.clone())
    }
}

/// Parses `500ms`, `10s`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration like 10s or 500ms"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// This machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl Args {
    fn config(&self) -> anyhow::Result<AgentConfig> {
        let state_dir = match &self.state_dir {
            Some(d) => d.clone(),
            None => drover_home()?.join("agent"),
        };
        let mut cfg = AgentConfig::new(self.name.clone().unwrap_or_else(host_name), state_dir)
            .with_devices(self.devices.clone())
            .with_lease_interval(self.lease_interval)
            .with_log_port(self.log_port)
            .with_backoff(
                self.restart_backoff,
                drover_nodeagent::pods::DEFAULT_BACKOFF_MAX,
            )
            .with_cgroup_root((!self.no_cgroups).then(|| self.cgroup_root.clone()));
        cfg = self.pods.apply(cfg);
        cfg.node_ip = self.node_ip;
        cfg.log_address = self.log_address;
        Ok(cfg)
    }
}

pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<()> {
    let client = global.client()?;
    let cfg = args.config()?;
    let name = cfg.node_name.clone();
    drover_nodeagent::run(cfg, client, super::up::stop_signal())
        .await
        .with_context(|| format!("node agent {name}"))?;
    Ok(())
}

/// For `drover up`: the local agent (real devices, named after the host), `simulate` full
/// agents with simulated devices of `profile` that run pods as real processes (nodes `sim-0`,
/// `sim-1`, ...; each with its own state directory under `state_root` and its own log port),
/// and `hollow` hollow nodes (simulated devices and a simulated runtime: pods do not run, they
/// "finish" after a while; nodes `hollow-0`, ...) for scale. Every task stops when `stop`
/// turns true (agents leave their pods' processes running for the next `drover up`).
pub async fn spawn_for_up(
    client: &Client,
    state_root: PathBuf,
    simulate: usize,
    hollow: usize,
    profile: &str,
    pods: &PodUserArgs,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut agents = vec![(
        host_name(),
        AgentConfig::new(host_name(), state_root.join("agent")).with_devices("auto"),
    )];
    for i in 0..simulate {
        let name = format!("sim-{i}");
        let cfg = AgentConfig::new(name.clone(), state_root.join("sim").join(&name))
            .with_devices(format!("simulated:{profile}"));
        agents.push((name, cfg));
    }
    for (name, cfg) in agents {
        let cfg = pods.apply(cfg.with_log_port(0));
        let agent_client = client.clone();
        let stop = stopped(stop.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = drover_nodeagent::run(cfg, agent_client, stop).await {
                tracing::error!(node = %name, error = %e, "node agent stopped");
            }
        }));
    }
    if simulate > 0 {
        println!(
            "{simulate} simulated {profile} nodes (real processes, simulated devices): sim-0 .. sim-{}",
            simulate - 1
        );
    }
    if hollow > 0 {
        let cluster = HollowCluster::start(
            client.clone(),
            hollow,
            profile,
            "hollow",
            HollowOptions::default(),
        )
        .await
        .with_context(|| format!("cannot start {hollow} hollow nodes with profile {profile}"))?;
        println!(
            "{hollow} hollow {profile} nodes (simulated runtime: pods do not run): hollow-0 .. hollow-{}",
            hollow - 1
        );
        let stop = stopped(stop.clone());
        tasks.push(tokio::spawn(async move {
            // The cluster lives as long as this task.
            let _cluster = cluster;
            stop.await
        }));
    }
    Ok(tasks)
}
