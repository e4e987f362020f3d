//! One node as the scheduler accounts it: allocatable and requested resources, its devices with
//! the free share of each, and the pods on it (bound or assumed).

use std::sync::Arc;

use drover_api::core::{DeviceAssignment, Node};

use super::pod_info::PodInfo;
use super::topology::{MAX_DEVICES, Topology, TopologyInterner, bits};
use crate::resources::{FULL_DEVICE_MILLI, GPU_RESOURCE, Resources};

/// The devices of one resource on a node.
#[derive(Clone, Debug)]
pub struct DeviceSet {
    pub resource: Arc<str>,
    /// Device ids, in topology order (bit `i` of a mask is `ids[i]`).
    pub ids: Arc<[Arc<str>]>,
    pub topology: Arc<Topology>,
    /// Healthy devices (a mask). Unhealthy ones are never assigned.
    pub healthy: u64,
    /// Free thousandths of each device.
    pub free_milli: Vec<u32>,
}

impl DeviceSet {
    /// Healthy devices with nothing on them.
    pub fn whole_free_mask(&self) -> u64 {
        let mut m = 0u64;
        for (i, f) in self.free_milli.iter().enumerate() {
            if *f >= FULL_DEVICE_MILLI && self.healthy & (1 << i) != 0 {
                m |= 1 << i;
            }
        }
        m
    }

    pub fn whole_free(&self) -> u32 {
        self.whole_free_mask().count_ones()
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.ids.iter().position(|i| &**i == id)
    }

    pub fn is_healthy(&self, i: usize) -> bool {
        self.healthy & (1 << i) != 0
    }

    /// The device for a share of `milli`: the partly used healthy device with the least room
    /// that still holds it (best fit), else the free device the topology would give one GPU.
    pub fn choose_share(&self, milli: u32) -> Option<usize> {
        let partial = self
            .free_milli
            .iter()
            .enumerate()
            .filter(|(i, f)| self.is_healthy(*i) && **f < FULL_DEVICE_MILLI && **f >= milli)
            .min_by_key(|(i, f)| (**f, *i))
            .map(|(i, _)| i);
        partial.or_else(|| {
            self.topology
                .choose(self.whole_free_mask(), 1)
                .map(|m| m.trailing_zeros() as usize)
        })
    }

    /// Free thousandths over healthy devices.
    pub fn free_total(&self) -> u64 {
        self.free_milli
            .iter()
            .enumerate()
            .filter(|(i, _)| self.is_healthy(*i))
            .map(|(_, f)| u64::from(*f))
            .sum()
    }
}

/// A pod on a node, with the devices it holds.
#[derive(Clone, Debug)]
pub struct PodSlot {
    pub info: Arc<PodInfo>,
    pub devices: Arc<Vec<DeviceAssignment>>,
}

/// A node and what is used of it.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub name: Arc<str>,
    /// Its index in the snapshot (set when put there; 0 for a node outside any snapshot).
    pub index: usize,
    pub node: Arc<Node>,
    pub allocatable: Resources,
    pub requested: Resources,
    pub devices: Vec<DeviceSet>,
    pub pods: Vec<PodSlot>,
}

impl NodeInfo {
    /// A node with nothing on it.
    pub fn new(node: Arc<Node>, interner: &mut TopologyInterner) -> NodeInfo {
        let mut allocatable = Resources::from_list(node.allocatable());
        if !node.allocatable().contains_key(drover_api::quantity::PODS) {
            allocatable.pods = i64::MAX;
        }
        let mut devices = Vec::new();
        if let Some(inv) = &node.status.devices {
            let mut resources: Vec<&str> =
                inv.devices.iter().map(|d| d.resource.as_str()).collect();
            resources.sort_unstable();
            resources.dedup();
            for resource in resources {
                let mut devs: Vec<_> = inv.devices_of(resource).take(MAX_DEVICES).collect();
                devs.sort_by_key(|d| (d.index, d.id.clone()));
                let ids: Vec<&str> = devs.iter().map(|d| d.id.as_str()).collect();
                let topology = interner.intern(Topology::key_of(inv, &ids));
                let healthy = devs
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| d.is_healthy())
                    .fold(0u64, |m, (i, _)| m | (1 << i));
                devices.push(DeviceSet {
                    resource: resource.into(),
                    ids: ids.iter().map(|i| Arc::from(*i)).collect(),
                    topology,
                    healthy,
                    free_milli: vec![FULL_DEVICE_MILLI; devs.len()],
                });
            }
        }
        NodeInfo {
            name: node.metadata.name.as_str().into(),
            index: 0,
            node,
            allocatable,
            requested: Resources::default(),
            devices,
            pods: Vec::new(),
        }
    }

    pub fn labels(&self) -> &std::collections::BTreeMap<String, String> {
        &self.node.metadata.labels
    }

    pub fn device_set(&self, resource: &str) -> Option<&DeviceSet> {
        self.devices.iter().find(|d| &*d.resource == resource)
    }

    pub fn gpus(&self) -> Option<&DeviceSet> {
        self.device_set(GPU_RESOURCE)
    }

    pub fn free_cpu_milli(&self) -> i64 {
        self.allocatable.cpu_milli - self.requested.cpu_milli
    }

    pub fn free_memory(&self) -> i64 {
        self.allocatable.memory - self.requested.memory
    }

    /// Free units of an extended resource: whole free devices when the node lists devices for
    /// it, allocatable minus requested otherwise.
    pub fn free_scalar(&self, resource: &str) -> i64 {
        match self.device_set(resource) {
            Some(set) => i64::from(set.whole_free()),
            None => self.allocatable.scalar(resource) - self.requested.scalar(resource),
        }
    }

    /// Whole GPUs the node has in all (healthy devices, or the allocatable count).
    pub fn gpu_capacity(&self) -> i64 {
        match self.gpus() {
            Some(set) => i64::from(set.healthy.count_ones()),
            None => self.allocatable.scalar(GPU_RESOURCE),
        }
    }

    /// Whether the pod `key` is on the node.
    pub fn has_pod(&self, key: &str) -> bool {
        self.pods.iter().any(|p| &*p.info.key == key)
    }

    /// Accounts a pod and the devices it holds. Devices a pod requests without naming them
    /// (bound by another scheduler) are taken from the best free ones so the counts stay true.
    pub fn add_pod(&mut self, info: Arc<PodInfo>, assigned: Arc<Vec<DeviceAssignment>>) {
        self.requested.add(&info.request.res);
        let mut named: Vec<(usize, usize, u32)> = Vec::new();
        for a in assigned.iter() {
            let Some(si) = self.devices.iter().position(|d| *d.resource == a.resource) else {
                continue;
            };
            for id in &a.ids {
                if let Some(di) = self.devices[si].index_of(id) {
                    named.push((si, di, a.share_milli.unwrap_or(FULL_DEVICE_MILLI)));
                }
            }
        }
        for (si, di, milli) in &named {
            let f = &mut self.devices[*si].free_milli[*di];
            *f = f.saturating_sub(*milli);
        }
        for si in 0..self.devices.len() {
            let set = &self.devices[si];
            let wanted = info.request.res.scalar(&set.resource).max(0) as u32;
            let have = named.iter().filter(|(s, _, _)| *s == si).count() as u32;
            if wanted > have
                && let Some(mask) = set.topology.choose(set.whole_free_mask(), wanted - have)
            {
                for b in bits(mask) {
                    self.devices[si].free_milli[b] = 0;
                }
            }
        }
        let share = info.request.gpu_share_milli;
        if share > 0
            && let Some(si) = self
                .devices
                .iter()
                .position(|d| &*d.resource == GPU_RESOURCE)
            && !named.iter().any(|(s, _, _)| *s == si)
            && let Some(di) = self.devices[si].choose_share(share)
        {
            let f = &mut self.devices[si].free_milli[di];
            *f = f.saturating_sub(share);
        }
        self.pods.push(PodSlot {
            info,
            devices: assigned,
        });
    }

    /// Removes a pod and gives back what it held.
    pub fn remove_pod(&mut self, key: &str) -> Option<PodSlot> {
        let pos = self.pods.iter().position(|p| &*p.info.key == key)?;
        let slot = self.pods.swap_remove(pos);
        self.requested.sub(&slot.info.request.res);
        // Rebuild device use from the pods left: robust against pods bound without device ids.
        self.recount_devices();
        Some(slot)
    }

    fn recount_devices(&mut self) {
        for set in &mut self.devices {
            set.free_milli
                .iter_mut()
                .for_each(|f| *f = FULL_DEVICE_MILLI);
        }
        let pods = std::mem::take(&mut self.pods);
        self.requested = Resources::default();
        for p in pods {
            self.add_pod(p.info, p.devices);
        }
    }

    /// The same node with a new Node object (labels, taints, devices may have changed), with
    /// its pods accounted again.
    pub fn rebuilt(&self, node: Arc<Node>, interner: &mut TopologyInterner) -> NodeInfo {
        let mut fresh = NodeInfo::new(node, interner);
        for p in &self.pods {
            fresh.add_pod(p.info.clone(), p.devices.clone());
        }
        fresh
    }
}
