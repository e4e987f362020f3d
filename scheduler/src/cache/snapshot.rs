//! The immutable snapshot a decision runs on: every node's accounting, and an index of nodes by
//! free-resource shape so a decision looks only at nodes that can fit the request.
//!
//! The index buckets nodes by (free whole GPUs, free-CPU class); a request visits only the buckets
//! whose bounds can hold it. Every node that can fit is in a visited bucket, so no feasible node is
//! skipped — this is pruning, not sampling.

use std::collections::HashMap;
use std::sync::Arc;

use super::classes::ClassIndex;
use super::labels::{Column, LabelIndex};
use super::node_info::NodeInfo;
use super::pod_index::PodIndex;
use super::pod_info::PodInfo;
use super::workload::WorkloadModel;
use crate::resources::{GPU_RESOURCE, PodRequest};

/// Free-GPU levels of the index (the last holds "this many or more").
const GPU_LEVELS: usize = 17;
/// Free-CPU classes: class `c` holds nodes with fewer than `2^c` free cores.
const CPU_CLASSES: usize = 24;
const NONE: u32 = u32::MAX;

/// Nodes by free-resource shape.
#[derive(Clone, Debug, Default)]
pub struct ShapeIndex {
    buckets: Vec<Vec<u32>>,
    /// For each node index: (bucket, position in it), or NONE.
    at: Vec<(u32, u32)>,
}

impl ShapeIndex {
    fn bucket_of(node: &NodeInfo) -> usize {
        let gpus = node
            .free_scalar(GPU_RESOURCE)
            .clamp(0, GPU_LEVELS as i64 - 1) as usize;
        let cores = (node.free_cpu_milli().max(0) / 1000) as u64;
        let class = ((64 - cores.leading_zeros()) as usize).min(CPU_CLASSES - 1);
        gpus * CPU_CLASSES + class
    }

    /// Puts node `idx` in the bucket its free shape says (or takes it out for `None`).
    pub fn set(&mut self, idx: usize, node: Option<&NodeInfo>) {
        if self.buckets.is_empty() {
            self.buckets = vec![Vec::new(); GPU_LEVELS * CPU_CLASSES];
        }
        if self.at.len() <= idx {
            self.at.resize(idx + 1, (NONE, NONE));
        }
        let want = node.map(Self::bucket_of);
        let (b, p) = self.at[idx];
        if b != NONE {
            if want == Some(b as usize) {
                return;
            }
            let bucket = &mut self.buckets[b as usize];
            bucket.swap_remove(p as usize);
            if let Some(&moved) = bucket.get(p as usize) {
                self.at[moved as usize].1 = p;
            }
            self.at[idx] = (NONE, NONE);
        }
        if let Some(w) = want {
            self.at[idx] = (w as u32, self.buckets[w].len() as u32);
            self.buckets[w].push(idx as u32);
        }
    }

    /// Nodes whose bucket can hold the request, in no particular order.
    pub fn candidates<'a>(&'a self, r: &PodRequest) -> impl Iterator<Item = usize> + 'a {
        let min_gpus = (r.whole_gpus() as usize).min(GPU_LEVELS - 1);
        let cpu = r.res.cpu_milli;
        (min_gpus..GPU_LEVELS)
            .flat_map(move |g| {
                (0..CPU_CLASSES).filter_map(move |c| {
                    // Class c holds nodes with fewer than 2^c free cores (the last: any).
                    let upper = if c + 1 == CPU_CLASSES {
                        i64::MAX
                    } else {
                        (1i64 << c) * 1000 - 1
                    };
                    (upper >= cpu).then_some(g * CPU_CLASSES + c)
                })
            })
            .filter_map(move |b| self.buckets.get(b))
            .flat_map(|bucket| bucket.iter().map(|&i| i as usize))
    }
}

/// Every node's accounting at one moment. Cheap to clone: nodes are shared until changed.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    nodes: Vec<Option<Arc<NodeInfo>>>,
    by_name: HashMap<Arc<str>, usize>,
    index: ShapeIndex,
    classes: ClassIndex,
    labels: LabelIndex,
    /// Pods on the nodes by label, and required anti-affinity by what it selects.
    pods: PodIndex,
    count: usize,
    /// Pods with required anti-affinity on any node (others must respect them).
    pub anti_affinity_pods: usize,
    pub workload: Arc<WorkloadModel>,
}

impl Snapshot {
    /// Slots of nodes (some may be empty after deletions).
    pub fn slots(&self) -> usize {
        self.nodes.len()
    }

    /// Nodes in the snapshot.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn node(&self, idx: usize) -> Option<&Arc<NodeInfo>> {
        self.nodes.get(idx).and_then(Option::as_ref)
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    pub fn node_named(&self, name: &str) -> Option<&Arc<NodeInfo>> {
        self.index_of(name).and_then(|i| self.node(i))
    }

    /// Every node, with its index.
    pub fn nodes(&self) -> impl Iterator<Item = (usize, &Arc<NodeInfo>)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
    }

    /// Nodes that may fit the request, from the shape index.
    pub fn candidates<'a>(&'a self, r: &PodRequest) -> impl Iterator<Item = usize> + 'a {
        self.index.candidates(r)
    }

    /// Nodes by equivalence class (same free shape, taints and flags).
    pub fn classes(&self) -> &ClassIndex {
        &self.classes
    }

    /// Every node's value of a label key, as ids.
    pub fn label_column(&self, key: &str) -> Option<Column> {
        self.labels.column(key)
    }

    /// The pods on the nodes, by label (kept as nodes change).
    pub fn pod_index(&self) -> &PodIndex {
        &self.pods
    }

    /// Adds or replaces a node.
    pub fn put(&mut self, mut info: NodeInfo) -> usize {
        let idx = match self.by_name.get(&*info.name) {
            Some(&i) => i,
            None => {
                let i = self.nodes.len();
                self.nodes.push(None);
                self.by_name.insert(info.name.clone(), i);
                i
            }
        };
        if self.nodes[idx].is_none() {
            self.count += 1;
        }
        info.index = idx;
        self.index.set(idx, Some(&info));
        self.classes.set(idx, Some(&info));
        let old = self.nodes[idx].take();
        // The term counts are by the node's topology values: when its labels change, its pods
        // leave under the old values and come back under the new ones.
        let mut before = pods_of(old.as_deref());
        if old.as_ref().is_some_and(|o| o.labels() != info.labels()) {
            self.pods.update_node(idx, &before, &[], &self.labels);
            before.clear();
        }
        self.labels.set(idx, Some(&info), old.as_deref());
        self.pods
            .update_node(idx, &before, &pods_of(Some(&info)), &self.labels);
        self.nodes[idx] = Some(Arc::new(info));
        idx
    }

    /// Changes a node in place (copy on write when a decision still holds the old one).
    pub fn update(&mut self, idx: usize, f: impl FnOnce(&mut NodeInfo)) {
        let Some(Some(node)) = self.nodes.get_mut(idx) else {
            return;
        };
        let before = pods_of(Some(node));
        f(Arc::make_mut(node));
        let node = self.nodes[idx].clone();
        self.pods
            .update_node(idx, &before, &pods_of(node.as_deref()), &self.labels);
        self.index.set(idx, node.as_deref());
        self.classes.set(idx, node.as_deref());
    }

    /// Removes a node (its slot stays for reuse by the same name).
    pub fn remove(&mut self, name: &str) -> Option<Arc<NodeInfo>> {
        let idx = self.index_of(name)?;
        let old = self.nodes[idx].take();
        if old.is_some() {
            self.count -= 1;
        }
        self.index.set(idx, None);
        self.classes.set(idx, None);
        // Pods leave under the node's topology values, before they are forgotten.
        self.pods
            .update_node(idx, &pods_of(old.as_deref()), &[], &self.labels);
        self.labels.set(idx, None, old.as_deref());
        old
    }
}

/// The pods on a node (shared, for the pod index to compare).
fn pods_of(node: Option<&NodeInfo>) -> Vec<Arc<PodInfo>> {
    node.map_or_else(Vec::new, |n| {
        n.pods.iter().map(|s| s.info.clone()).collect()
    })
}
