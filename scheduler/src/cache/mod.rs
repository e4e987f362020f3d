//! The scheduler's cache: nodes with their free resources and devices, the pods on them, and
//! the placements assumed but not yet confirmed by the API.
//!
//! The cache owns a [`Snapshot`] behind an `Arc`; a decision takes a clone of the `Arc` (an
//! immutable view) and the cache changes nodes copy-on-write afterwards. An assumed placement
//! counts as used at once; it is confirmed when the watch shows the pod bound, forgotten when
//! its binding fails, and expires if neither happens within [`DEFAULT_ASSUME_TTL`].

pub mod classes;
pub mod labels;
pub mod node_info;
pub mod plan;
pub mod pod_index;
pub mod pod_info;
pub mod snapshot;
pub mod terms;
pub mod topology;
pub mod workload;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use drover_api::core::{DeviceAssignment, Node};
use tokio::time::Instant;

pub use node_info::{DeviceSet, NodeInfo, PodSlot};
pub use plan::{Placement, PlanState};
pub use pod_info::PodInfo;
pub use snapshot::Snapshot;
pub use topology::{Topology, TopologyInterner};
pub use workload::WorkloadModel;

/// How long an assumed placement lives after its binding finished without the watch
/// confirming it.
pub const DEFAULT_ASSUME_TTL: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct PodEntry {
    info: Arc<PodInfo>,
    node: Arc<str>,
    devices: Arc<Vec<DeviceAssignment>>,
    /// Some while assumed: `None` until the binding finishes, then its expiry.
    assumed: Option<Option<Instant>>,
}

/// Nodes and the pods on them.
#[derive(Debug, Default)]
pub struct Cache {
    state: Arc<Snapshot>,
    interner: TopologyInterner,
    pods: HashMap<Arc<str>, PodEntry>,
    by_node: HashMap<Arc<str>, HashSet<Arc<str>>>,
}

impl Cache {
    pub fn new() -> Cache {
        Cache::default()
    }

    /// The current state, immutable.
    pub fn snapshot(&mut self) -> Arc<Snapshot> {
        if self.state.workload.is_dirty() {
            let s = Arc::make_mut(&mut self.state);
            Arc::make_mut(&mut s.workload).refresh();
        }
        self.state.clone()
    }

    fn state(&mut self) -> &mut Snapshot {
        Arc::make_mut(&mut self.state)
    }

    /// Counts a pending pod's shape into the workload model.
    pub fn observe(&mut self, info: &PodInfo) {
        Arc::make_mut(&mut self.state().workload).observe(&info.request);
    }

    pub fn node_count(&self) -> usize {
        self.state.len()
    }

    /// Adds or updates a node.
    pub fn upsert_node(&mut self, node: Arc<Node>) {
        let name: Arc<str> = node.metadata.name.as_str().into();
        let existing = self.state.node_named(&name).cloned();
        let info = match existing {
            Some(old) => old.rebuilt(node, &mut self.interner),
            None => {
                let mut fresh = NodeInfo::new(node, &mut self.interner);
                for key in self.by_node.get(&name).into_iter().flatten() {
                    if let Some(e) = self.pods.get(key) {
                        fresh.add_pod(e.info.clone(), e.devices.clone());
                    }
                }
                fresh
            }
        };
        // The count of pods with required anti-affinity is kept by `insert`/`remove_pod` over
        // every pod the cache holds, so node changes leave it alone (recounting here cost a
        // scan of every pod per node heartbeat).
        self.state().put(info);
    }

    pub fn remove_node(&mut self, name: &str) {
        self.state().remove(name);
    }

    /// Whether the cache holds the pod (bound or assumed).
    pub fn has_pod(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    /// Whether the pod is assumed and not yet confirmed.
    pub fn is_assumed(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|e| e.assumed.is_some())
    }

    fn insert(&mut self, entry: PodEntry) {
        let key = entry.info.key.clone();
        self.remove_pod(&key);
        if let Some(idx) = self.state.index_of(&entry.node) {
            let (info, devices) = (entry.info.clone(), entry.devices.clone());
            self.state().update(idx, |n| n.add_pod(info, devices));
        }
        if entry.info.has_required_anti_affinity() {
            self.state().anti_affinity_pods += 1;
        }
        self.by_node
            .entry(entry.node.clone())
            .or_default()
            .insert(key.clone());
        self.pods.insert(key, entry);
    }

    /// A pod the API shows bound (confirms an assumed placement of it).
    pub fn add_bound_pod(&mut self, info: Arc<PodInfo>) {
        let node: Arc<str> = info.pod.spec.node_name.as_str().into();
        if let Some(e) = self.pods.get_mut(&info.key)
            && e.node == node
            && e.assumed.is_some()
            && info.pod.spec.device_assignments.is_empty()
        {
            // Confirmed without device ids: keep the ones assumed.
            e.assumed = None;
            return;
        }
        let devices = Arc::new(info.pod.spec.device_assignments.clone());
        self.insert(PodEntry {
            info,
            node,
            devices,
            assumed: None,
        });
    }

    /// Counts a placement as used before the API confirms it.
    pub fn assume(&mut self, info: Arc<PodInfo>, placement: &Placement) {
        self.insert(PodEntry {
            info,
            node: placement.node_name.clone(),
            devices: Arc::new(placement.devices.clone()),
            assumed: Some(None),
        });
    }

    /// The binding finished: the assumption now expires unless the watch confirms it.
    pub fn finish_binding(&mut self, key: &str, now: Instant) {
        if let Some(e) = self.pods.get_mut(key)
            && let Some(deadline) = &mut e.assumed
        {
            *deadline = Some(now + DEFAULT_ASSUME_TTL);
        }
    }

    /// Undoes an assumed placement (its binding failed). Confirmed pods stay.
    pub fn forget(&mut self, key: &str) {
        if self.is_assumed(key) {
            self.remove_pod(key);
        }
    }

    /// Drops assumptions whose binding finished long ago without confirmation.
    pub fn expire_assumed(&mut self, now: Instant) -> Vec<Arc<str>> {
        let expired: Vec<Arc<str>> = self
            .pods
            .iter()
            .filter(|(_, e)| matches!(e.assumed, Some(Some(d)) if d <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &expired {
            self.remove_pod(k);
        }
        expired
    }

    /// Removes a pod (deleted, finished, or its assumption undone).
    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let entry = self.pods.remove(key)?;
        if let Some(idx) = self.state.index_of(&entry.node) {
            self.state().update(idx, |n| {
                n.remove_pod(key);
            });
        }
        if entry.info.has_required_anti_affinity() {
            let s = self.state();
            s.anti_affinity_pods = s.anti_affinity_pods.saturating_sub(1);
        }
        if let Some(set) = self.by_node.get_mut(&entry.node) {
            set.remove(key);
        }
        Some(entry.info)
    }

    /// Bound or assumed pods of a gang (by `namespace/group`).
    pub fn gang_members(&self, gang: &str) -> Vec<Arc<PodInfo>> {
        self.pods
            .values()
            .filter(|e| e.info.gang.as_deref() == Some(gang))
            .map(|e| e.info.clone())
            .collect()
    }

    /// The node a pod is on (bound or assumed).
    pub fn node_of(&self, key: &str) -> Option<Arc<str>> {
        self.pods.get(key).map(|e| e.node.clone())
    }
}
