//! The pods of one node: [`NodeContext`] (what every pod worker of a node shares) and
//! [`PodSupervisor`], which turns informer changes into one worker task per pod (see
//! [`worker`]). The supervisor is synchronous and cheap, so a hollow cluster keeps thousands of
//! them in one dispatcher task.

pub(crate) mod env;
pub mod status;
mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_api::core::{Container, Pod};
use drover_client::Client;
use drover_client::informer::Change;
use drover_device_plugins::DeviceManager;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::runtime::Runtime;
use crate::state::{PodRecord, StateStore};

pub use env::{
    AWAITED_ANNOTATION_PREFIX, DEFAULT_PATH, awaited_annotations, container_env, expand, field_ref,
};

/// First restart delay of a crashing container (Kubernetes' value).
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(10);
/// Longest restart delay.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Exponential restart backoff: `base`, doubling, capped at `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: DEFAULT_BACKOFF_BASE,
            max: DEFAULT_BACKOFF_MAX,
        }
    }
}

impl Backoff {
    /// The delay before restart number `step + 1`.
    pub fn delay(&self, step: u32) -> Duration {
        let factor = 1u32.checked_shl(step.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// Which containers are running, by pod folder and container name: the log server ends a
/// `follow` when its container stops.
#[derive(Debug, Default)]
pub struct LogIndex {
    running: Mutex<HashSet<(String, String)>>,
}

impl LogIndex {
    pub fn set_running(&self, pod_dir: &str, container: &str, running: bool) {
        let mut set = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let key = (pod_dir.to_string(), container.to_string());
        if running {
            set.insert(key);
        } else {
            set.remove(&key);
        }
    }

    pub fn is_running(&self, pod_dir: &str, container: &str) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(pod_dir.to_string(), container.to_string()))
    }

    /// Every running container, as `(pod folder, container)`.
    pub fn running(&self) -> Vec<(String, String)> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// What the pod workers of one node share.
///
/// Lock order: `in_use` is the only lock, never held across an await.
pub struct NodeContext {
    pub node_name: String,
    pub node_ip: String,
    pub client: Client,
    pub runtime: Arc<dyn Runtime>,
    pub devices: Arc<DeviceManager>,
    pub state: Option<StateStore>,
    pub backoff: Backoff,
    pub pids_limit: Option<u64>,
    pub logs: Arc<LogIndex>,
    /// Device id → the pod holding it.
    in_use: Mutex<HashMap<String, Claim>>,
}

/// The pod that holds a device: its uid (the identity) and `namespace/name` (for messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Claim {
    pub uid: String,
    pub key: String,
}

impl Claim {
    pub(crate) fn new(uid: &str, namespace: &str, name: &str) -> Self {
        Claim {
            uid: uid.to_string(),
            key: format!("{namespace}/{name}"),
        }
    }
}

impl std::fmt::Debug for NodeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeContext")
            .field("node", &self.node_name)
            .finish_non_exhaustive()
    }
}

impl NodeContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node_name: String,
        node_ip: String,
        client: Client,
        runtime: Arc<dyn Runtime>,
        devices: Arc<DeviceManager>,
        state: Option<StateStore>,
        backoff: Backoff,
        pids_limit: Option<u64>,
    ) -> Self {
        NodeContext {
            node_name,
            node_ip,
            client,
            runtime,
            devices,
            state,
            backoff,
            pids_limit,
            logs: Arc::new(LogIndex::default()),
            in_use: Mutex::new(HashMap::new()),
        }
    }

    fn in_use(&self) -> std::sync::MutexGuard<'_, HashMap<String, Claim>> {
        self.in_use.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// For a pod the scheduler did not place on devices: the first free healthy devices of each
    /// device resource the container requests.
    pub(crate) fn pick_free_devices(
        &self,
        claim: &Claim,
        c: &Container,
    ) -> Result<Vec<String>, String> {
        let requests = c.resources.effective_requests();
        // Devices are offered only for extended resources: a pod of cpu and memory alone needs
        // no look at the inventory.
        if !requests
            .keys()
            .any(|r| drover_api::quantity::is_extended_resource(r))
        {
            return Ok(Vec::new());
        }
        let mut wanted: Vec<(String, i64)> = Vec::new();
        let discovery = match self.devices.discover() {
            Ok(d) => d,
            Err(e) => return Err(format!("cannot discover devices: {e}")),
        };
        for (resource, q) in &requests {
            if discovery.inventory.devices_of(resource).next().is_some() && q.value() > 0 {
                wanted.push((resource.clone(), q.value()));
            }
        }
        let mut picked = Vec::new();
        let mut in_use = self.in_use();
        for (resource, count) in wanted {
            let free: Vec<String> = discovery
                .inventory
                .devices_of(&resource)
                .filter(|d| d.is_healthy() && in_use.get(&d.id).is_none_or(|o| o.uid == claim.uid))
                .filter(|d| !picked.contains(&d.id))
                .take(count as usize)
                .map(|d| d.id.clone())
                .collect();
            if (free.len() as i64) < count {
                return Err(format!(
                    "container {} requests {count} {resource} but only {} healthy ones are free on node {}",
                    c.name,
                    free.len(),
                    self.node_name
                ));
            }
            for id in &free {
                in_use.insert(id.clone(), claim.clone());
            }
            picked.extend(free);
        }
        Ok(picked)
    }

    /// The devices a recovered pod had, for one container (those of the resources it requests).
    pub(crate) fn recorded_devices_for(&self, recorded: &[String], c: &Container) -> Vec<String> {
        let requests = c.resources.effective_requests();
        let Ok(discovery) = self.devices.discover() else {
            return Vec::new();
        };
        recorded
            .iter()
            .filter(|id| {
                discovery
                    .inventory
                    .device(id)
                    .is_some_and(|d| requests.contains_key(&d.resource))
            })
            .cloned()
            .collect()
    }

    /// Claims devices already known to be this pod's (a recovered pod's record), unchecked:
    /// they were checked when the pod was first allocated.
    pub(crate) fn claim_devices(&self, claim: &Claim, ids: &[String]) {
        let mut in_use = self.in_use();
        for id in ids {
            in_use.insert(id.clone(), claim.clone());
        }
    }

    /// Checks and claims, in one step, devices named by the pod's binding. The binding comes
    /// through the API and the API does not know this node's claims, so an id another pod holds,
    /// an id not in this node's inventory, or an unhealthy device is refused here: the message
    /// names the device, this pod and the holder.
    pub(crate) fn claim_assigned(&self, claim: &Claim, ids: &[String]) -> Result<(), String> {
        if ids.is_empty() {
            return Ok(());
        }
        let discovery = self
            .devices
            .discover()
            .map_err(|e| format!("cannot discover devices: {e}"))?;
        let mut in_use = self.in_use();
        check_assignment(&discovery.inventory, &in_use, claim, ids, &self.node_name)?;
        for id in ids {
            in_use.insert(id.clone(), claim.clone());
        }
        Ok(())
    }

    pub(crate) fn release_devices(&self, uid: &str) {
        self.in_use().retain(|_, owner| owner.uid != uid);
    }

    /// The pod holding a device, if any.
    pub fn holder_of(&self, device: &str) -> Option<String> {
        self.in_use().get(device).map(|c| c.key.clone())
    }
}

/// Why `ids` cannot be given to the pod of `claim`, if they cannot: an unknown id, an
/// unhealthy device, a device another pod holds, or an id named twice.
fn check_assignment(
    inventory: &drover_api::device::DeviceInventory,
    in_use: &HashMap<String, Claim>,
    claim: &Claim,
    ids: &[String],
    node: &str,
) -> Result<(), String> {
    let mut seen = HashSet::new();
    for id in ids {
        let pod = &claim.key;
        if !seen.insert(id.as_str()) {
            return Err(format!("device {id} is assigned twice to pod {pod}"));
        }
        let Some(device) = inventory.device(id) else {
            return Err(format!(
                "device {id} assigned to pod {pod} is not in the inventory of node {node}"
            ));
        };
        if !device.is_healthy() {
            let why = device.health_reason.as_deref().unwrap_or("no reason given");
            return Err(format!(
                "device {id} assigned to pod {pod} is unhealthy on node {node}: {why}"
            ));
        }
        if let Some(holder) = in_use.get(id).filter(|h| h.uid != claim.uid) {
            return Err(format!(
                "device {id} assigned to pod {pod} is already in use by pod {} on node {node}",
                holder.key
            ));
        }
    }
    Ok(())
}

/// A message to a pod's worker.
pub(crate) enum PodMsg {
    Update(Arc<Pod>),
    Deleted(Arc<Pod>),
}

/// The pods of one node: one worker task per pod, fed by informer changes.
pub struct PodSupervisor {
    ctx: Arc<NodeContext>,
    workers: HashMap<String, mpsc::UnboundedSender<PodMsg>>,
    /// Records found in the state directory at start, by pod uid, not yet claimed by a pod.
    recovered: HashMap<String, PodRecord>,
    synced: bool,
}

impl std::fmt::Debug for PodSupervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodSupervisor")
            .field("node", &self.ctx.node_name)
            .field("pods", &self.workers.len())
            .finish()
    }
}

impl PodSupervisor {
    /// Claims the devices of the recovered pods that still run before anything else happens,
    /// so a pod whose informer event arrives first cannot be given a device a recovered pod
    /// holds.
    pub fn new(ctx: Arc<NodeContext>, recovered: Vec<PodRecord>) -> Self {
        for r in recovered.iter().filter(|r| r.final_phase.is_empty()) {
            ctx.claim_devices(&Claim::new(&r.uid, &r.namespace, &r.name), &r.devices);
        }
        PodSupervisor {
            ctx,
            workers: HashMap::new(),
            recovered: recovered.into_iter().map(|r| (r.uid.clone(), r)).collect(),
            synced: false,
        }
    }

    pub fn context(&self) -> &Arc<NodeContext> {
        &self.ctx
    }

    /// Pods with a live worker.
    pub fn pod_count(&self) -> usize {
        self.workers
            .iter()
            .filter(|(_, tx)| !tx.is_closed())
            .count()
    }

    /// Applies one informer change. Never blocks.
    pub fn handle(&mut self, change: &Change<Pod>) {
        match change {
            Change::Applied { new, .. } => self.applied(new),
            Change::Deleted(pod) => self.deleted(pod),
            Change::Synced => self.synced(),
        }
    }

    fn applied(&mut self, pod: &Arc<Pod>) {
        let uid = &pod.metadata.uid;
        if pod.spec.node_name != self.ctx.node_name {
            // Moved away (cannot happen through the API, but be safe): treat as deleted.
            if self.workers.contains_key(uid) {
                self.deleted(pod);
            }
            return;
        }
        if let Some(tx) = self.workers.get(uid) {
            let _ = tx.send(PodMsg::Update(pod.clone()));
            return;
        }
        let record = self.recovered.remove(uid);
        if pod.is_terminal() && record.is_none() {
            // Finished before this agent started (or on another run): nothing to do.
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let key = format!("{}/{}", pod.metadata.namespace, pod.metadata.name);
        let span = tracing::info_span!("pod", pod = %key, node = %self.ctx.node_name);
        let worker = worker::Worker::new(self.ctx.clone(), pod.clone(), record);
        tokio::spawn(worker.run(rx).instrument(span));
        self.workers.insert(uid.clone(), tx);
    }

    fn deleted(&mut self, pod: &Arc<Pod>) {
        let uid = &pod.metadata.uid;
        if let Some(tx) = self.workers.remove(uid) {
            let _ = tx.send(PodMsg::Deleted(pod.clone()));
        } else if let Some(record) = self.recovered.remove(uid) {
            self.ctx.release_devices(&record.uid);
            self.forget(record);
        }
    }

    /// After the first list: records of pods that no longer exist belong to pods deleted while
    /// the agent was down; their processes are killed and their folders removed.
    fn synced(&mut self) {
        if self.synced {
            return;
        }
        self.synced = true;
        let orphans: Vec<PodRecord> = self.recovered.drain().map(|(_, r)| r).collect();
        for record in orphans {
            self.ctx.release_devices(&record.uid);
            self.forget(record);
        }
    }

    fn forget(&self, record: PodRecord) {
        tracing::info!(pod = %format!("{}/{}", record.namespace, record.name), "pod was deleted while the agent was away; cleaning up");
        for (name, c) in &record.containers {
            if let Some(run) = c.running
                && crate::runtime::procfs::is_alive(run.process)
                && let Ok(pid) = i32::try_from(run.process.pid)
            {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let (runtime, uid, name) = (self.ctx.runtime.clone(), record.uid.clone(), name.clone());
            tokio::task::spawn_blocking(move || runtime.cleanup(&uid, &name));
        }
        if let Some(state) = &self.ctx.state {
            state.remove(&record.namespace, &record.name, &record.uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_api::device::{Device, DeviceHealth, DeviceInventory};

    fn inventory() -> DeviceInventory {
        let gpu = |id: &str, health| Device {
            id: id.into(),
            resource: "nvidia.com/gpu".into(),
            health,
            health_reason: (health == DeviceHealth::Unhealthy).then(|| "XID 79".to_string()),
            ..Default::default()
        };
        DeviceInventory {
            devices: vec![
                gpu("gpu-0", DeviceHealth::Healthy),
                gpu("gpu-1", DeviceHealth::Healthy),
                gpu("gpu-2", DeviceHealth::Unhealthy),
            ],
            ..Default::default()
        }
    }

    /// A case: its name, the claimant, the ids it is bound to, and Ok or a fragment of the error.
    type AssignmentCase<'a> = (&'a str, &'a Claim, &'a [&'a str], Result<(), &'a str>);

    #[test]
    fn assignments_never_give_a_device_twice() {
        let holder = Claim::new("u-a", "default", "a");
        let me = Claim::new("u-b", "default", "b");
        let in_use: HashMap<String, Claim> = [("gpu-0".to_string(), holder.clone())].into();
        // (case, claimant, ids, Ok or a fragment of the error)
        let cases: &[AssignmentCase] = &[
            ("free device", &me, &["gpu-1"], Ok(())),
            ("nothing", &me, &[], Ok(())),
            ("the holder again", &holder, &["gpu-0", "gpu-1"], Ok(())),
            (
                "held by another pod",
                &me,
                &["gpu-1", "gpu-0"],
                Err("device gpu-0 assigned to pod default/b is already in use by pod default/a"),
            ),
            (
                "not on this node",
                &me,
                &["gpu-9"],
                Err("device gpu-9 assigned to pod default/b is not in the inventory of node n1"),
            ),
            (
                "unhealthy",
                &me,
                &["gpu-2"],
                Err("device gpu-2 assigned to pod default/b is unhealthy on node n1: XID 79"),
            ),
            (
                "named twice",
                &me,
                &["gpu-1", "gpu-1"],
                Err("assigned twice"),
            ),
        ];
        let inv = inventory();
        for (name, claim, ids, want) in cases {
            let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
            let got = check_assignment(&inv, &in_use, claim, &ids, "n1");
            match (want, &got) {
                (Ok(()), Ok(())) => {}
                (Err(fragment), Err(message)) => {
                    assert!(message.contains(fragment), "{name}: {message}")
                }
                _ => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    /// Every sequence of claims keeps each device with at most one pod: property over random
    /// assignment orders of three pods on two healthy devices.
    #[test]
    fn claims_are_exclusive_in_any_order() {
        let inv = inventory();
        let pods: Vec<Claim> = (0..3)
            .map(|i| Claim::new(&format!("u{i}"), "ns", &format!("p{i}")))
            .collect();
        let wants: [&[&str]; 3] = [&["gpu-0"], &["gpu-0", "gpu-1"], &["gpu-1"]];
        let orders = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        for order in orders {
            let mut in_use: HashMap<String, Claim> = HashMap::new();
            for i in order {
                let ids: Vec<String> = wants[i].iter().map(|s| s.to_string()).collect();
                if check_assignment(&inv, &in_use, &pods[i], &ids, "n1").is_ok() {
                    for id in ids {
                        assert!(in_use.insert(id, pods[i].clone()).is_none(), "{order:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff {
            base: Duration::from_secs(10),
            max: Duration::from_secs(300),
        };
        let delays: Vec<u64> = (0..7).map(|s| b.delay(s).as_secs()).collect();
        assert_eq!(delays, vec![10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(b.delay(100), Duration::from_secs(300));
    }
}
