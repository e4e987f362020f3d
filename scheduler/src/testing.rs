//! Builders of nodes and pods for tests, benchmarks and simulations: GPU nodes with realistic
//! device inventories (the shapes of the simulated device profiles: `h100-8` on NVSwitch,
//! `a100-8` in NVLink pairs over two sockets, `l4-4` on PCIe) and pods with requests.
//!
//! Behind the `testing` feature: tests, the scheduler's benches and the bench harness turn it on;
//! the scheduler library itself never uses it.

use std::collections::BTreeMap;
use std::sync::Arc;

use drover_api::core::{
    Affinity, Container, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, Pod, PodSpec, ResourceRequirements, Taint, Toleration,
};
use drover_api::device::{Device, DeviceHealth, DeviceInventory, DeviceLink, LinkKind};
use drover_api::meta::Condition;
use drover_api::quantity::{Quantity, ResourceList};
use drover_api::scheduling::POD_GROUP_LABEL;

use crate::cache::{NodeInfo, PodInfo, TopologyInterner};
use crate::resources::{GPU_RESOURCE, GPU_SHARE_RESOURCE};

/// Label carrying the GPU model (as the device plugins set it).
pub const GPU_PRODUCT_LABEL: &str = "nvidia.com/gpu.product";

/// The GPU layouts of the simulated device profiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuProfile {
    /// 8 GPUs on one NVSwitch fabric, 2 NUMA nodes.
    H100x8,
    /// 8 GPUs, NVLink pairs 0-1 2-3 4-5 6-7, PCIe otherwise, 2 sockets.
    A100x8,
    /// 4 GPUs on PCIe, one socket.
    L4x4,
}

impl GpuProfile {
    pub fn model(self) -> &'static str {
        match self {
            GpuProfile::H100x8 => "NVIDIA H100 80GB HBM3",
            GpuProfile::A100x8 => "NVIDIA A100-SXM4-80GB",
            GpuProfile::L4x4 => "NVIDIA L4",
        }
    }

    pub fn count(self) -> u32 {
        match self {
            GpuProfile::L4x4 => 4,
            _ => 8,
        }
    }

    /// The inventory of a node named `node` with this profile.
    pub fn inventory(self, node: &str) -> DeviceInventory {
        let n = self.count();
        let numa = |i: u32| if n == 8 { i / 4 } else { 0 };
        let devices = (0..n)
            .map(|i| Device {
                id: format!("{node}-gpu{i}"),
                resource: GPU_RESOURCE.into(),
                index: i,
                model: self.model().into(),
                memory_mib: 81920,
                numa_node: Some(numa(i)),
                health: DeviceHealth::Healthy,
                ..Default::default()
            })
            .collect();
        let mut links = Vec::new();
        for a in 0..n {
            for b in a + 1..n {
                let (kind, lanes) = match self {
                    GpuProfile::H100x8 => (LinkKind::NVSwitch, 18),
                    GpuProfile::A100x8 if a / 2 == b / 2 => (LinkKind::NVLink, 12),
                    _ if numa(a) == numa(b) => (LinkKind::PCIeHostBridge, 0),
                    _ => (LinkKind::CrossSocket, 0),
                };
                links.push(DeviceLink {
                    a: format!("{node}-gpu{a}"),
                    b: format!("{node}-gpu{b}"),
                    kind,
                    lanes,
                });
            }
        }
        DeviceInventory {
            devices,
            links,
            numa_nodes: vec![],
        }
    }
}

fn q(s: &str) -> Quantity {
    Quantity::parse(s).unwrap_or_default()
}

/// Builds a Node.
#[derive(Clone, Debug)]
pub struct NodeBuilder {
    node: Node,
}

/// A Ready node with 64 cpu, 512Gi memory, 110 pods and no GPUs.
pub fn node(name: &str) -> NodeBuilder {
    let mut node = Node::new(name);
    node.status.allocatable = [("cpu", "64"), ("memory", "512Gi"), ("pods", "110")]
        .iter()
        .map(|(k, v)| (k.to_string(), q(v)))
        .collect();
    node.status.conditions.push(Condition {
        type_: "Ready".into(),
        status: "True".into(),
        ..Default::default()
    });
    NodeBuilder { node }
}

impl NodeBuilder {
    pub fn cpu(mut self, v: &str) -> Self {
        self.node.status.allocatable.insert("cpu".into(), q(v));
        self
    }
    pub fn memory(mut self, v: &str) -> Self {
        self.node.status.allocatable.insert("memory".into(), q(v));
        self
    }
    pub fn pods(mut self, v: &str) -> Self {
        self.node.status.allocatable.insert("pods".into(), q(v));
        self
    }
    /// GPUs of a profile, with their inventory and model label.
    pub fn gpus(mut self, profile: GpuProfile) -> Self {
        let name = self.node.metadata.name.clone();
        self.node.status.devices = Some(profile.inventory(&name));
        self.node.status.allocatable.insert(
            GPU_RESOURCE.into(),
            Quantity::from_value(i64::from(profile.count())),
        );
        self.label(GPU_PRODUCT_LABEL, &profile.model().replace(' ', "-"))
    }
    /// Marks GPU `index` unhealthy.
    pub fn unhealthy(mut self, index: u32) -> Self {
        if let Some(inv) = &mut self.node.status.devices
            && let Some(d) = inv.devices.iter_mut().find(|d| d.index == index)
        {
            d.health = DeviceHealth::Unhealthy;
        }
        self
    }
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.node.metadata.labels.insert(k.into(), v.into());
        self
    }
    pub fn taint(mut self, key: &str, effect: &str) -> Self {
        self.node.spec.taints.push(Taint {
            key: key.into(),
            effect: effect.into(),
            ..Default::default()
        });
        self
    }
    pub fn unschedulable(mut self) -> Self {
        self.node.spec.unschedulable = true;
        self
    }
    pub fn build(self) -> Node {
        self.node
    }
    /// The node's accounting, with nothing on it.
    pub fn info(self) -> NodeInfo {
        NodeInfo::new(Arc::new(self.node), &mut TopologyInterner::default())
    }
}

/// Builds a Pod.
#[derive(Clone, Debug)]
pub struct PodBuilder {
    pod: Pod,
}

/// A pending pod with one container and no requests.
pub fn pod(namespace: &str, name: &str) -> PodBuilder {
    let spec = PodSpec {
        containers: vec![Container {
            name: "main".into(),
            image: "busybox".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut pod = Pod::new(namespace, name, spec);
    pod.metadata.creation_timestamp = Some(chrono::Utc::now());
    PodBuilder { pod }
}

impl PodBuilder {
    fn requests(&mut self) -> &mut ResourceList {
        &mut self.pod.spec.containers[0].resources.requests
    }
    fn set(mut self, k: &str, v: Quantity) -> Self {
        self.requests().insert(k.into(), v);
        let reqs: ResourceRequirements = self.pod.spec.containers[0].resources.clone();
        if drover_api::quantity::is_extended_resource(k) {
            self.pod.spec.containers[0].resources.limits = reqs
                .requests
                .iter()
                .filter(|(k, _)| drover_api::quantity::is_extended_resource(k))
                .map(|(k, v)| (k.clone(), *v))
                .collect();
        }
        self
    }
    pub fn cpu(self, v: &str) -> Self {
        self.set("cpu", q(v))
    }
    pub fn memory(self, v: &str) -> Self {
        self.set("memory", q(v))
    }
    pub fn gpus(self, n: u32) -> Self {
        self.set(GPU_RESOURCE, Quantity::from_value(i64::from(n)))
    }
    /// A share of one GPU, in thousandths.
    pub fn gpu_share(self, milli: u32) -> Self {
        self.set(GPU_SHARE_RESOURCE, Quantity::from_value(i64::from(milli)))
    }
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.pod.metadata.labels.insert(k.into(), v.into());
        self
    }
    pub fn gang(self, group: &str) -> Self {
        self.label(POD_GROUP_LABEL, group)
    }
    pub fn priority(mut self, p: i32) -> Self {
        self.pod.spec.priority = Some(p);
        self
    }
    pub fn node_selector(mut self, k: &str, v: &str) -> Self {
        self.pod.spec.node_selector.insert(k.into(), v.into());
        self
    }
    /// Requires a node label `k` with one of `values`.
    pub fn node_affinity_in(mut self, k: &str, values: &[&str]) -> Self {
        let term = NodeSelectorTerm {
            match_expressions: vec![NodeSelectorRequirement {
                key: k.into(),
                operator: "In".into(),
                values: values.iter().map(|s| s.to_string()).collect(),
            }],
            match_fields: vec![],
        };
        let a = self.pod.spec.affinity.get_or_insert_with(Affinity::default);
        a.node_affinity = Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![term],
            }),
            preferred_during_scheduling_ignored_during_execution: vec![],
        });
        self
    }
    pub fn tolerate(mut self, key: &str) -> Self {
        self.pod.spec.tolerations.push(Toleration {
            key: key.into(),
            operator: "Exists".into(),
            ..Default::default()
        });
        self
    }
    pub fn affinity(mut self, a: Affinity) -> Self {
        self.pod.spec.affinity = Some(a);
        self
    }
    pub fn spread(mut self, c: drover_api::core::TopologySpreadConstraint) -> Self {
        self.pod.spec.topology_spread_constraints.push(c);
        self
    }
    pub fn node_name(mut self, n: &str) -> Self {
        self.pod.spec.node_name = n.into();
        self
    }
    pub fn scheduler_name(mut self, n: &str) -> Self {
        self.pod.spec.scheduler_name = n.into();
        self
    }
    pub fn build(self) -> Pod {
        self.pod
    }
    pub fn info(self) -> Arc<PodInfo> {
        Arc::new(PodInfo::new(Arc::new(self.pod)))
    }
}

/// A label selector matching `k=v`.
pub fn selector(k: &str, v: &str) -> drover_api::selector::LabelSelector {
    drover_api::selector::LabelSelector::from_labels(BTreeMap::from([(k.into(), v.into())]))
}
