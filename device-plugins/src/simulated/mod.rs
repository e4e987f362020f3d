//! Simulated devices: a node described by a [`Profile`] instead of hardware. Tests,
//! `drover up --simulate-nodes` and the scale harness use it; `fail_device` and
//! `recover_device` drive health changes so failure handling can be tested.
//!
//! A simulated node is cheap (the scale harness creates thousands in one process): the profile
//! is shared, there is no thread, and the health channel is created on first subscription.

mod profile;

use std::sync::Arc;

use drover_api::device::{
    CpuTopology, Device, DeviceInventory, DeviceLink, DeviceRecovery, LinkKind, NumaNode,
};
use tokio::sync::broadcast;

pub use profile::{
    DEFAULT_NVSWITCH_LANES, GpuSpec, Interconnect, LinkSpec, MAX_GPUS, Profile, builtin_profile,
    list_profiles, load_profile,
};

use crate::health::HealthBook;
use crate::labels::{RESOURCE_CPU, RESOURCE_MEMORY, cpu_labels, device_resources_and_labels};
use crate::xid::XidClass;
use crate::{Allocation, DeviceError, DevicePlugin, Discovery, HealthEvent, allocate, cpulist};

/// Attribute set on every simulated device.
pub const ATTR_SIMULATED: &str = "simulated";

pub struct SimulatedPlugin {
    profile: Arc<Profile>,
    node: String,
    health: HealthBook,
}

impl SimulatedPlugin {
    /// A node named `node_name` with the devices of `profile`; the name goes into device ids
    /// (`GPU-sim-<node>-<index>`) so many simulated nodes have distinct devices.
    pub fn new(profile: Arc<Profile>, node_name: impl Into<String>) -> Self {
        SimulatedPlugin {
            profile,
            node: node_name.into(),
            health: HealthBook::default(),
        }
    }

    /// Like [`SimulatedPlugin::new`], with the profile named as [`load_profile`] accepts.
    pub fn from_profile_name(
        profile: &str,
        node_name: impl Into<String>,
    ) -> Result<Self, DeviceError> {
        Ok(Self::new(load_profile(profile)?, node_name))
    }

    pub fn profile(&self) -> &Arc<Profile> {
        &self.profile
    }

    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// The id of GPU `index` on this node.
    pub fn device_id(&self, index: u32) -> String {
        format!("GPU-sim-{}-{index}", self.node)
    }

    /// All device ids, in index order.
    pub fn device_ids(&self) -> Vec<String> {
        (0..self.gpu_count()).map(|i| self.device_id(i)).collect()
    }

    fn gpu_count(&self) -> u32 {
        self.profile.gpus.as_ref().map_or(0, |g| g.count)
    }

    fn index_of(&self, id: &str) -> Result<u32, DeviceError> {
        id.strip_prefix("GPU-sim-")
            .and_then(|rest| rest.strip_prefix(self.node.as_str()))
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|index| index.parse::<u32>().ok())
            .filter(|&index| index < self.gpu_count())
            .ok_or_else(|| DeviceError::UnknownDevice {
                plugin: self.name().to_string(),
                id: id.to_string(),
            })
    }

    /// Marks a device unhealthy, as a critical error on real hardware would, and announces it.
    pub fn fail_device(&self, id: &str, reason: &str) -> Result<(), DeviceError> {
        self.index_of(id)?;
        self.health.mark_unhealthy(id, reason);
        Ok(())
    }

    /// Raises an XID on a simulated GPU as the driver would: the application's own leave it in
    /// service; the others mark it unhealthy with what its class needs. Returns the class.
    pub fn inject_xid(&self, id: &str, xid: u64) -> Result<XidClass, DeviceError> {
        self.index_of(id)?;
        let class = crate::xid::classify(Some(xid));
        if let Some(recovery) = crate::xid::recovery(class) {
            self.health
                .mark_failed(id, &crate::xid::reason(Some(xid)), Some(recovery));
        }
        Ok(class)
    }

    /// Returns a failed device to service and announces it (what servicing the node does).
    pub fn recover_device(&self, id: &str) -> Result<(), DeviceError> {
        self.index_of(id)?;
        self.health.mark_healthy(id);
        Ok(())
    }

    fn numa_nodes(&self) -> Vec<NumaNode> {
        let p = &self.profile;
        let nodes = p.numa_count();
        let threads = p.threads_per_core.max(1);
        let cores = p.cores();
        let per_node = cores / nodes;
        // Linux numbers the first thread of every core before any second thread.
        (0..nodes)
            .map(|node| {
                let cpus: Vec<u32> = (0..threads)
                    .flat_map(|t| {
                        (node * per_node..(node + 1) * per_node).map(move |c| c + t * cores)
                    })
                    .collect();
                NumaNode {
                    id: node,
                    cpus: cpulist::format(&cpus),
                    memory_mib: p.memory_gib * 1024 / u64::from(nodes),
                }
            })
            .collect()
    }

    /// The node's devices, links and NUMA nodes, with current health.
    pub fn inventory(&self) -> DeviceInventory {
        let numa_nodes = self.numa_nodes();
        let mut inventory = DeviceInventory {
            devices: Vec::new(),
            links: Vec::new(),
            numa_nodes,
        };
        if let Some(gpus) = &self.profile.gpus {
            inventory.devices = (0..gpus.count)
                .map(|i| self.device(gpus, i, &inventory.numa_nodes))
                .collect();
            inventory.links = self.links(gpus);
        }
        self.health.apply(&mut inventory);
        inventory
    }

    fn device(&self, gpus: &GpuSpec, index: u32, numa_nodes: &[NumaNode]) -> Device {
        let numa = self.profile.gpu_numa(index);
        let mut attributes = gpus.attributes.clone();
        attributes.insert(ATTR_SIMULATED.to_string(), "true".to_string());
        Device {
            id: self.device_id(index),
            resource: gpus.resource.clone(),
            index,
            model: gpus.model.clone(),
            memory_mib: gpus.memory_mib,
            pci_bus_id: Some(format!("00000000:{:02X}:00.0", 0x10 + 2 * index)),
            numa_node: Some(numa),
            cpu_affinity: numa_nodes
                .iter()
                .find(|n| n.id == numa)
                .map(|n| n.cpus.clone()),
            attributes,
            ..Default::default()
        }
    }

    fn links(&self, gpus: &GpuSpec) -> Vec<DeviceLink> {
        let switch_of = |i: u32| gpus.pcie_switches.iter().position(|g| g.contains(&i));
        let mut links =
            Vec::with_capacity((gpus.count * gpus.count.saturating_sub(1) / 2) as usize);
        for a in 0..gpus.count {
            for b in a + 1..gpus.count {
                let explicit = gpus
                    .links
                    .iter()
                    .find(|l| (l.a == a && l.b == b) || (l.a == b && l.b == a));
                let (kind, lanes) = match (explicit, gpus.interconnect) {
                    (Some(l), _) => (l.kind, l.lanes),
                    (None, Interconnect::NVSwitch) => (
                        LinkKind::NVSwitch,
                        gpus.nvlink_lanes.unwrap_or(DEFAULT_NVSWITCH_LANES),
                    ),
                    (None, Interconnect::PCIe)
                        if switch_of(a).is_some() && switch_of(a) == switch_of(b) =>
                    {
                        (LinkKind::PCIeSwitch, 0)
                    }
                    (None, Interconnect::PCIe)
                        if self.profile.gpu_numa(a) == self.profile.gpu_numa(b) =>
                    {
                        (LinkKind::PCIeHostBridge, 0)
                    }
                    (None, Interconnect::PCIe) => (LinkKind::CrossSocket, 0),
                };
                links.push(DeviceLink {
                    a: self.device_id(a),
                    b: self.device_id(b),
                    kind,
                    lanes,
                });
            }
        }
        links
    }
}

impl DevicePlugin for SimulatedPlugin {
    fn name(&self) -> &str {
        "simulated"
    }

    fn discover(&self) -> Result<Discovery, DeviceError> {
        let p = &self.profile;
        let inventory = self.inventory();
        let (mut resources, mut labels) = device_resources_and_labels(&inventory);
        let cpu = CpuTopology {
            sockets: p.sockets,
            cores: p.cores(),
            threads: p.cpu,
            core_siblings: Vec::new(),
        };
        labels.extend(cpu_labels(&cpu, inventory.numa_nodes.len()));
        resources.insert(RESOURCE_CPU.to_string(), u64::from(p.cpu) * 1000);
        resources.insert(RESOURCE_MEMORY.to_string(), p.memory_gib << 30);
        Ok(Discovery {
            inventory,
            resources,
            labels,
            cpu: Some(cpu),
        })
    }

    fn subscribe_health(&self) -> broadcast::Receiver<HealthEvent> {
        self.health.subscribe()
    }

    /// A simulated reset succeeds unless the fault needs the node serviced.
    fn reset(&self, device_id: &str) -> Result<(), DeviceError> {
        self.index_of(device_id)?;
        let needs_drain = self
            .health
            .unhealthy()
            .get(device_id)
            .is_some_and(|u| u.recovery == Some(DeviceRecovery::Drain));
        if needs_drain {
            return Err(DeviceError::ResetFailed {
                id: device_id.to_string(),
                reason: "the fault needs the node serviced, not a reset".to_string(),
            });
        }
        self.health.mark_healthy(device_id);
        Ok(())
    }

    /// Environment only: simulated GPUs have no device files to hand over.
    fn allocate(&self, device_ids: &[String]) -> Result<Allocation, DeviceError> {
        if self.profile.gpus.is_none() {
            return match device_ids.first() {
                Some(id) => Err(DeviceError::UnknownDevice {
                    plugin: self.name().to_string(),
                    id: id.clone(),
                }),
                None => Ok(Allocation::default()),
            };
        }
        let inventory = self.inventory();
        let devices = allocate::resolve(self.name(), &inventory, device_ids)?;
        Ok(Allocation {
            device_ids: devices.iter().map(|d| d.id.clone()).collect(),
            env: allocate::gpu_env(&devices),
            device_files: Vec::new(),
            mounts: Vec::new(),
        })
    }
}

impl std::fmt::Debug for SimulatedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedPlugin")
            .field("profile", &self.profile.name)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
