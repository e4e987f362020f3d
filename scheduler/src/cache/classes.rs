//! Node equivalence classes: nodes with the same allocatable and requested resources, the same
//! free device shape (per device set: topology, healthy mask, free thousandths per device), the
//! same taints and the same `unschedulable` flag get the same verdict and the same score from
//! every plugin that reads only those (a [`NodeView::Shape`](crate::framework::NodeView) plugin).
//! A decision evaluates such plugins once per class, so its cost follows the number of distinct
//! free shapes, not the number of nodes; every node is still considered.
//!
//! The index is kept incrementally by the [`Snapshot`](super::Snapshot): a node moves to another
//! class whenever its accounting changes. Labels and names are deliberately not in the key
//! (racks and host names would make every node its own class); plugins that read them are
//! evaluated node by node, only on the nodes of classes that passed.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use drover_api::core::Taint;

use super::node_info::NodeInfo;
use crate::resources::{GPU_RESOURCE, Resources};

const NONE: u32 = u32::MAX;

/// One device set as far as a class is concerned (device ids left out).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct DeviceKey {
    resource: Arc<str>,
    /// Topologies are interned, so the same layout is the same allocation.
    topology: usize,
    healthy: u64,
    free_milli: Vec<u32>,
}

/// What nodes of one class share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassKey {
    allocatable: Resources,
    /// Requested resources with the pod count left out ([`ClassKey::pod_room`] stands for it).
    requested: Resources,
    /// Whether one more pod fits by count (all NodeResourcesFit asks of the pod count).
    pod_room: bool,
    devices: Vec<DeviceKey>,
    taints: Vec<Taint>,
    unschedulable: bool,
}

impl Hash for ClassKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.allocatable.hash(h);
        self.requested.hash(h);
        self.pod_room.hash(h);
        self.devices.hash(h);
        // Taint carries a timestamp without `Hash`; equal keys still hash equal.
        for t in &self.taints {
            (&t.key, &t.value, &t.effect).hash(h);
        }
        self.unschedulable.hash(h);
    }
}

impl ClassKey {
    pub fn of(node: &NodeInfo) -> ClassKey {
        let mut requested = node.requested.clone();
        requested.pods = 0;
        ClassKey {
            allocatable: node.allocatable.clone(),
            requested,
            pod_room: node.requested.pods < node.allocatable.pods,
            devices: node
                .devices
                .iter()
                .map(|d| DeviceKey {
                    resource: d.resource.clone(),
                    topology: Arc::as_ptr(&d.topology) as usize,
                    healthy: d.healthy,
                    free_milli: d.free_milli.clone(),
                })
                .collect(),
            taints: node.node.spec.taints.clone(),
            unschedulable: node.node.spec.unschedulable,
        }
    }
}

/// The nodes of one class.
#[derive(Clone, Debug)]
pub struct Class {
    key: ClassKey,
    /// Node indices, sorted (the first is where ties go).
    pub members: BTreeSet<u32>,
    /// Free whole GPUs and free cpu of each member (to skip classes a request cannot use).
    pub whole_gpus: i64,
    pub free_cpu_milli: i64,
}

/// Nodes by class.
#[derive(Clone, Debug, Default)]
pub struct ClassIndex {
    by_key: HashMap<ClassKey, u32>,
    classes: Vec<Option<Class>>,
    free: Vec<u32>,
    of_node: Vec<u32>,
}

impl ClassIndex {
    /// Puts node `idx` in the class its accounting says (or takes it out for `None`).
    pub fn set(&mut self, idx: usize, node: Option<&NodeInfo>) {
        if self.of_node.len() <= idx {
            self.of_node.resize(idx + 1, NONE);
        }
        let key = node.map(ClassKey::of);
        let old = self.of_node[idx];
        if old != NONE {
            if let (Some(k), Some(c)) = (&key, &self.classes[old as usize])
                && c.key == *k
            {
                return;
            }
            self.leave(idx, old);
        }
        let (Some(key), Some(node)) = (key, node) else {
            return;
        };
        let id = match self.by_key.get(&key) {
            Some(&id) => id,
            None => {
                let class = Class {
                    key: key.clone(),
                    members: BTreeSet::new(),
                    whole_gpus: node.free_scalar(GPU_RESOURCE),
                    free_cpu_milli: node.free_cpu_milli(),
                };
                let id = match self.free.pop() {
                    Some(id) => {
                        self.classes[id as usize] = Some(class);
                        id
                    }
                    None => {
                        self.classes.push(Some(class));
                        (self.classes.len() - 1) as u32
                    }
                };
                self.by_key.insert(key, id);
                id
            }
        };
        if let Some(c) = &mut self.classes[id as usize] {
            c.members.insert(idx as u32);
        }
        self.of_node[idx] = id;
    }

    fn leave(&mut self, idx: usize, id: u32) {
        self.of_node[idx] = NONE;
        let Some(c) = &mut self.classes[id as usize] else {
            return;
        };
        c.members.remove(&(idx as u32));
        if c.members.is_empty() {
            self.by_key.remove(&c.key);
            self.classes[id as usize] = None;
            self.free.push(id);
        }
    }

    /// The class of node `idx`.
    pub fn class_of(&self, idx: usize) -> Option<u32> {
        self.of_node.get(idx).copied().filter(|&c| c != NONE)
    }

    /// Upper bound of class ids (for per-cycle tables indexed by class).
    pub fn id_bound(&self) -> usize {
        self.classes.len()
    }

    pub fn class(&self, id: u32) -> Option<&Class> {
        self.classes.get(id as usize).and_then(Option::as_ref)
    }

    /// Every class with nodes in it.
    pub fn live(&self) -> impl Iterator<Item = (u32, &Class)> {
        self.classes
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| (i as u32, c)))
    }

    /// Classes with nodes in them.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{GpuProfile, node, pod};

    #[test]
    fn nodes_move_between_classes_as_their_shape_changes() {
        let mut idx = ClassIndex::default();
        // One interner, as in the cache: the same layout is the same topology.
        let mut interner = crate::cache::TopologyInterner::default();
        let mut info =
            |b: crate::testing::NodeBuilder| NodeInfo::new(Arc::new(b.build()), &mut interner);
        let a = info(node("a").label("rack", "r1").gpus(GpuProfile::H100x8));
        let b = info(node("b").label("rack", "r2").gpus(GpuProfile::H100x8));
        let c = info(node("c").gpus(GpuProfile::A100x8));
        idx.set(0, Some(&a));
        idx.set(1, Some(&b));
        idx.set(2, Some(&c));
        assert_eq!(idx.len(), 2, "labels are not in the key");
        assert_eq!(idx.class_of(0), idx.class_of(1));
        let mut b2 = b.clone();
        b2.add_pod(pod("ns", "p").gpus(2).info(), Arc::new(vec![]));
        idx.set(1, Some(&b2));
        assert_eq!(idx.len(), 3);
        assert_ne!(idx.class_of(0), idx.class_of(1));
        idx.set(1, None);
        assert_eq!(idx.len(), 2, "empty classes go");
        assert_eq!(idx.class_of(1), None);
        let members: Vec<u32> = idx
            .live()
            .flat_map(|(_, c)| c.members.iter().copied())
            .collect();
        assert_eq!(members.len(), 2);
    }
}
