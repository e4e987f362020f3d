//! Hollow nodes: many simulated nodes in one process, for `drover up --simulate-nodes` and the
//! scale harness. Each node has simulated devices (a shared [`Profile`]) and the simulated
//! runtime (pods "run" for their `drover.dev/sim-duration` annotation, then exit as
//! `drover.dev/sim-exit-code` says).
//!
//! Cost per node is kept to data, not tasks: all nodes share one client, ONE pod informer (every
//! bound pod, dispatched by `spec.nodeName` to each node's [`PodSupervisor`] from one task) and ONE
//! lease task that renews every node's lease in slices spread over the interval. Only pods have
//! tasks of their own. See `examples/hollow_scale.rs` for the measurement of memory and idle CPU
//! at 10,000 nodes.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use drover_api::core::Pod;
use drover_client::informer::{Change, Informer};
use drover_client::{Client, ListParams};
use drover_device_plugins::{DeviceError, DeviceManager, Profile, SimulatedPlugin, load_profile};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::lease::{DEFAULT_LEASE_DURATION_SECONDS, LeaseKeeper, renew_all};
use crate::node::{self, DEFAULT_MAX_PODS, NodeError, NodeFacts};
use crate::pods::{Backoff, NodeContext, PodSupervisor};
use crate::runtime::simulated::{DEFAULT_SIM_DURATION, SimulatedRuntime};
use crate::runtime::{Runtime, SIMULATED_RUNTIME};

/// Leases renewed at once.
pub const DEFAULT_LEASE_CONCURRENCY: usize = 32;
/// Nodes registered at once.
pub const DEFAULT_REGISTER_CONCURRENCY: usize = 32;
/// The lease interval is cut into this many slices; one slice of the nodes renews per slice.
const LEASE_SLICES: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum HollowError {
    #[error("hollow nodes: {0}")]
    Devices(#[from] DeviceError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("no hollow node named {0}")]
    NoSuchNode(String),
}

/// How hollow nodes behave.
#[derive(Clone, Debug)]
pub struct HollowOptions {
    pub lease_interval: Duration,
    pub lease_duration_seconds: i32,
    pub lease_concurrency: usize,
    pub register_concurrency: usize,
    /// How long a pod runs when it has no `drover.dev/sim-duration` annotation.
    pub default_pod_duration: Duration,
    pub backoff: Backoff,
    pub max_pods: u32,
}

impl Default for HollowOptions {
    fn default() -> Self {
        HollowOptions {
            lease_interval: crate::agent::DEFAULT_LEASE_INTERVAL,
            lease_duration_seconds: DEFAULT_LEASE_DURATION_SECONDS,
            lease_concurrency: DEFAULT_LEASE_CONCURRENCY,
            register_concurrency: DEFAULT_REGISTER_CONCURRENCY,
            default_pod_duration: DEFAULT_SIM_DURATION,
            backoff: Backoff::default(),
            max_pods: DEFAULT_MAX_PODS,
        }
    }
}

/// What the handle keeps of each node (to fail its devices on request).
struct NodeHandle {
    devices: Arc<DeviceManager>,
    facts: NodeFacts,
}

/// Running hollow nodes. Dropping it (or [`HollowCluster::shutdown`]) stops them.
pub struct HollowCluster {
    client: Client,
    names: Vec<String>,
    nodes: HashMap<String, NodeHandle>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for HollowCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HollowCluster")
            .field("nodes", &self.names.len())
            .finish()
    }
}

/// A made-up address per node (`10.x.y.z`), unique for up to 16 million nodes.
fn fake_ip(i: usize) -> String {
    let i = (i as u32 + 1) & 0x00ff_ffff;
    Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8).to_string()
}

impl HollowCluster {
    /// Registers `n` hollow nodes named `<prefix>-<i>` with the devices of `profile` (a built-in
    /// profile name or a YAML path) and starts serving them.
    pub async fn start(
        client: Client,
        n: usize,
        profile: &str,
        name_prefix: &str,
        options: HollowOptions,
    ) -> Result<HollowCluster, HollowError> {
        let profile: Arc<Profile> = load_profile(profile)?;
        let runtime: Arc<dyn Runtime> =
            Arc::new(SimulatedRuntime::new(options.default_pod_duration));
        let names: Vec<String> = (0..n).map(|i| format!("{name_prefix}-{i}")).collect();
        let registered = futures::stream::iter(names.iter().enumerate())
            .map(|(i, name)| {
                let client = client.clone();
                let profile = profile.clone();
                let max_pods = options.max_pods;
                async move {
                    let devices = Arc::new(DeviceManager::simulated(Arc::new(
                        SimulatedPlugin::new(profile, name.clone()),
                    )));
                    let facts = NodeFacts {
                        name: name.clone(),
                        ip: fake_ip(i),
                        hostname: name.clone(),
                        log_port: 0,
                        max_pods,
                        runtimes: vec![SIMULATED_RUNTIME.to_string()],
                        limits_unavailable: None,
                        agent_version: "drover-hollow".into(),
                    };
                    let discovery = devices.discover()?;
                    node::register(&client, &facts, &discovery).await?;
                    Ok::<_, HollowError>((name.clone(), NodeHandle { devices, facts }))
                }
            })
            .buffer_unordered(options.register_concurrency.max(1))
            .collect::<Vec<_>>()
            .await;
        let mut nodes = HashMap::with_capacity(n);
        for r in registered {
            let (name, handle) = r?;
            nodes.insert(name, handle);
        }
        let mut supervisors: HashMap<String, PodSupervisor> = HashMap::with_capacity(n);
        for (name, h) in &nodes {
            let ctx = NodeContext::new(
                name.clone(),
                h.facts.ip.clone(),
                client.clone(),
                runtime.clone(),
                h.devices.clone(),
                None,
                options.backoff,
                None,
            );
            supervisors.insert(name.clone(), PodSupervisor::new(Arc::new(ctx), Vec::new()));
        }
        let mut tasks = JoinSet::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Bound pods only, as each real agent watches `spec.nodeName=<its node>`: pods waiting
        // for the scheduler are none of the nodes' business.
        let bound = ListParams::default().fields(drover_api::core::BOUND_PODS_SELECTOR);
        let informer = Informer::new(client.all::<Pod>(), bound).on_change(move |c| {
            let _ = tx.send(crate::agent::copy_change(c));
        });
        tasks.spawn(informer.run(std::future::pending()));
        tasks.spawn(async move {
            while let Some(change) = rx.recv().await {
                dispatch(&mut supervisors, &change);
            }
        });
        let mut keepers: Vec<LeaseKeeper> = names
            .iter()
            .map(|n| LeaseKeeper::new(n.clone(), options.lease_duration_seconds))
            .collect();
        let lease_client = client.clone();
        let (interval, concurrency) = (options.lease_interval, options.lease_concurrency);
        tasks.spawn(async move {
            let slice_len = keepers.len().div_ceil(LEASE_SLICES as usize).max(1);
            let mut tick = tokio::time::interval(interval / LEASE_SLICES);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut slice = 0usize;
            loop {
                tick.tick().await;
                let start = slice * slice_len;
                if start < keepers.len() {
                    let end = (start + slice_len).min(keepers.len());
                    let failed =
                        renew_all(&lease_client, &mut keepers[start..end], concurrency).await;
                    if failed > 0 {
                        tracing::warn!(failed, "hollow lease renewals failed");
                    }
                }
                slice = (slice + 1) % LEASE_SLICES as usize;
            }
        });
        tracing::info!(nodes = n, "hollow nodes running");
        Ok(HollowCluster {
            client,
            names,
            nodes,
            tasks,
        })
    }

    /// The nodes' names, in creation order.
    pub fn node_names(&self) -> &[String] {
        &self.names
    }

    /// Fails a simulated device of a node and reports it in the node's status.
    pub async fn fail_device(
        &self,
        node_name: &str,
        device_id: &str,
        reason: &str,
    ) -> Result<(), HollowError> {
        let h = self
            .nodes
            .get(node_name)
            .ok_or_else(|| HollowError::NoSuchNode(node_name.to_string()))?;
        if let Some(sim) = h.devices.simulated_plugin() {
            sim.fail_device(device_id, reason)?;
        }
        let discovery = h.devices.discover()?;
        node::update_status(&self.client, &h.facts, &discovery).await?;
        Ok(())
    }

    /// Stops serving the nodes (their Node objects stay; their leases will expire).
    pub async fn shutdown(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

fn dispatch(supervisors: &mut HashMap<String, PodSupervisor>, change: &Change<Pod>) {
    match change {
        Change::Synced => {
            for s in supervisors.values_mut() {
                s.handle(change);
            }
        }
        Change::Applied { old, new } => {
            // A pod leaves a node only by being deleted, but be safe about a changed nodeName.
            if let Some(old) = old
                .as_ref()
                .filter(|o| o.spec.node_name != new.spec.node_name)
                && let Some(s) = supervisors.get_mut(&old.spec.node_name)
            {
                s.handle(&Change::Deleted(old.clone()));
            }
            if let Some(s) = supervisors.get_mut(&new.spec.node_name) {
                s.handle(change);
            }
        }
        Change::Deleted(pod) => {
            if let Some(s) = supervisors.get_mut(&pod.spec.node_name) {
                s.handle(change);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_ips_are_distinct() {
        assert_eq!(fake_ip(0), "10.0.0.1");
        assert_eq!(fake_ip(255), "10.0.1.0");
        assert_ne!(fake_ip(70_000), fake_ip(70_001));
    }
}
