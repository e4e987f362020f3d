//! A plan under construction: placements reserved on top of an immutable snapshot.
//!
//! A [`PlanState`] overlays copies of the nodes it changed on the snapshot, so reserving a gang
//! member, or evicting a preemption victim, never touches the snapshot. Dropping the plan
//! discards every reservation at once; nothing is held for a plan that does not complete.

use std::collections::HashMap;
use std::sync::Arc;

use drover_api::core::DeviceAssignment;
use drover_api::selector::LabelSelector;

use super::node_info::{NodeInfo, PodSlot};
use super::pod_index::{Bucket, Narrow, narrow};
use super::pod_info::PodInfo;
use super::snapshot::Snapshot;
use super::workload::WorkloadModel;
use crate::resources::PodRequest;

/// Where one pod goes: the node and the devices on it.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    /// `namespace/name` of the pod.
    pub pod: Arc<str>,
    /// The node's index in the snapshot.
    pub node: usize,
    pub node_name: Arc<str>,
    /// The devices chosen, per container and resource.
    pub devices: Vec<DeviceAssignment>,
}

/// Reservations and evictions over a snapshot.
#[derive(Clone, Debug)]
pub struct PlanState<'a> {
    base: &'a Snapshot,
    changed: HashMap<usize, Arc<NodeInfo>>,
    /// The placements reserved so far, in order.
    pub placements: Vec<Placement>,
    anti_affinity_pods: usize,
}

impl<'a> PlanState<'a> {
    pub fn new(base: &'a Snapshot) -> PlanState<'a> {
        PlanState {
            base,
            changed: HashMap::new(),
            placements: Vec::new(),
            anti_affinity_pods: base.anti_affinity_pods,
        }
    }

    pub fn snapshot(&self) -> &'a Snapshot {
        self.base
    }

    /// Node slots (indices run from 0 to this).
    pub fn slots(&self) -> usize {
        self.base.slots()
    }

    /// A node as the plan sees it.
    pub fn node(&self, idx: usize) -> Option<&NodeInfo> {
        // Most plans change nothing: skip the hash lookup on the hot path.
        if self.changed.is_empty() {
            return self.base.node(idx).map(|n| &**n);
        }
        match self.changed.get(&idx) {
            Some(n) => Some(n),
            None => self.base.node(idx).map(|n| &**n),
        }
    }

    /// Every node as the plan sees it.
    pub fn nodes(&self) -> impl Iterator<Item = (usize, &NodeInfo)> {
        (0..self.slots()).filter_map(|i| self.node(i).map(|n| (i, n)))
    }

    pub fn workload(&self) -> &WorkloadModel {
        &self.base.workload
    }

    /// Pods with required anti-affinity anywhere.
    pub fn anti_affinity_pods(&self) -> usize {
        self.anti_affinity_pods
    }

    /// Nodes that may fit the request: the index's buckets, plus every node the plan changed
    /// (an eviction may have made room the snapshot's index does not know of).
    pub fn candidates(&self, r: &PodRequest) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .base
            .candidates(r)
            .filter(|i| !self.changed.contains_key(i))
            .collect();
        out.extend(self.changed.keys().copied());
        out
    }

    /// Whether the plan changed node `idx` (its class in the snapshot no longer describes it).
    pub fn is_changed(&self, idx: usize) -> bool {
        !self.changed.is_empty() && self.changed.contains_key(&idx)
    }

    /// Nodes the plan changed, in index order.
    pub fn changed_nodes(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.changed.keys().copied().collect();
        v.sort_unstable();
        v
    }

    fn node_mut(&mut self, idx: usize) -> Option<&mut NodeInfo> {
        if !self.changed.contains_key(&idx) {
            let copy = self.base.node(idx)?.clone();
            self.changed.insert(idx, copy);
        }
        self.changed.get_mut(&idx).map(Arc::make_mut)
    }

    /// Reserves a placement for `pod`.
    pub fn reserve(&mut self, pod: &Arc<PodInfo>, placement: Placement) {
        if pod.has_required_anti_affinity() {
            self.anti_affinity_pods += 1;
        }
        if let Some(n) = self.node_mut(placement.node) {
            n.add_pod(pod.clone(), Arc::new(placement.devices.clone()));
        }
        self.placements.push(placement);
    }

    /// Takes a pod off a node (a preemption victim, in a plan).
    pub fn evict(&mut self, node: usize, key: &str) -> Option<PodSlot> {
        let slot = self.node_mut(node)?.remove_pod(key)?;
        if slot.info.has_required_anti_affinity() {
            self.anti_affinity_pods = self.anti_affinity_pods.saturating_sub(1);
        }
        Some(slot)
    }

    /// Calls `f` with each pod `sel` may select, with its node as the plan sees it: on nodes
    /// the plan left alone, the pods the snapshot's index gives for the selector (each once);
    /// on nodes it changed, every pod. `f` still matches the selector and namespace itself.
    pub fn for_pods_selected(
        &self,
        sel: Option<&LabelSelector>,
        mut f: impl FnMut(&NodeInfo, &Arc<PodInfo>),
    ) {
        let index = self.base.pod_index();
        match narrow(sel) {
            Narrow::Nothing => return,
            Narrow::Values(k, vs) => {
                for v in vs {
                    if let Some(b) = index.with_label(k, v) {
                        self.visit(b, &mut f);
                    }
                }
            }
            Narrow::Key(k) => {
                for b in index.with_key(k) {
                    self.visit(b, &mut f);
                }
            }
            Narrow::All => {
                for (i, node) in self.base.nodes() {
                    if !self.is_changed(i) {
                        node.pods.iter().for_each(|s| f(node, &s.info));
                    }
                }
            }
        }
        self.visit_changed(|_| true, &mut f);
    }

    fn visit(&self, bucket: &Bucket, f: &mut impl FnMut(&NodeInfo, &Arc<PodInfo>)) {
        for ((_, n), p) in bucket {
            if !self.is_changed(*n)
                && let Some(node) = self.base.node(*n)
            {
                f(node, p);
            }
        }
    }

    fn visit_changed(
        &self,
        keep: impl Fn(&PodInfo) -> bool,
        f: &mut impl FnMut(&NodeInfo, &Arc<PodInfo>),
    ) {
        for node in self.changed.values() {
            for s in node.pods.iter().filter(|s| keep(&s.info)) {
                f(node, &s.info);
            }
        }
    }
}
