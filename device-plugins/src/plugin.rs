//! The trait every device plugin implements and the values it returns.

use std::collections::BTreeMap;
use std::path::PathBuf;

use drover_api::device::{CpuTopology, DeviceHealth, DeviceInventory};
use tokio::sync::broadcast;

use crate::DeviceError;

/// One kind of device on a node: discovers it, reports its health, hands it to pods.
///
/// Implementations are cheap to call from any thread; `discover` may do I/O (sysfs, NVML) and is
/// meant to be called at registration and now and then afterwards, not per pod.
pub trait DevicePlugin: Send + Sync {
    /// Short name for logs and errors (`cpu`, `nvidia`, `simulated`).
    fn name(&self) -> &str;

    /// What this plugin contributes to the node: devices, resources and labels. Devices carry
    /// their current health.
    fn discover(&self) -> Result<Discovery, DeviceError>;

    /// Health changes from now on. A receiver that lags has missed changes: call `discover`
    /// again for the current state.
    fn subscribe_health(&self) -> broadcast::Receiver<HealthEvent>;

    /// What a pod given `device_ids` needs: environment, device files, mounts. The ids must be
    /// ones this plugin offers and healthy; the error names the first that is not.
    fn allocate(&self, device_ids: &[String]) -> Result<Allocation, DeviceError>;

    /// Resets a device no pod is using, the recovery of faults that call for one; on success
    /// the device is healthy again (and announced). The default: this plugin cannot.
    fn reset(&self, device_id: &str) -> Result<(), DeviceError> {
        Err(DeviceError::ResetFailed {
            id: device_id.to_string(),
            reason: format!("plugin {} cannot reset devices", self.name()),
        })
    }
}

/// A plugin's share of a node's description.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Discovery {
    pub inventory: DeviceInventory,
    /// Capacity by resource name: `cpu` in millicores, `memory` in bytes, devices as counts
    /// (`nvidia.com/gpu` → 8). See [`Discovery::capacity`] for Kubernetes quantity strings.
    pub resources: BTreeMap<String, u64>,
    /// Node labels (`nvidia.com/gpu.product`, `drover.dev/numa-nodes`, ...).
    pub labels: BTreeMap<String, String>,
    /// Sockets, cores and hyperthreads, from the plugin that knows them.
    pub cpu: Option<CpuTopology>,
}

impl Discovery {
    /// Resources as Kubernetes quantity strings (`cpu: "192"` or `"1500m"`, `memory` in bytes).
    pub fn capacity(&self) -> BTreeMap<String, String> {
        self.resources
            .iter()
            .map(|(name, &value)| (name.clone(), quantity(name, value)))
            .collect()
    }

    /// Adds another plugin's discovery: devices and links are appended, resources of the same
    /// name add up, labels and CPU topology from `other` win over earlier ones.
    pub fn merge(&mut self, other: Discovery) {
        self.inventory.merge(other.inventory);
        for (name, value) in other.resources {
            *self.resources.entry(name).or_insert(0) += value;
        }
        self.labels.extend(other.labels);
        if other.cpu.is_some() {
            self.cpu = other.cpu;
        }
    }
}

/// Formats a resource value the way Kubernetes writes it.
fn quantity(name: &str, value: u64) -> String {
    if name == crate::RESOURCE_CPU && !value.is_multiple_of(1000) {
        format!("{value}m")
    } else if name == crate::RESOURCE_CPU {
        (value / 1000).to_string()
    } else {
        value.to_string()
    }
}

/// A change in one device's health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthEvent {
    pub device_id: String,
    pub health: DeviceHealth,
    /// Why it became unhealthy (an XID, "GPU lost", a test's words); `None` on recovery.
    pub reason: Option<String>,
}

/// What a pod needs to use its devices.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allocation {
    /// The allocated ids, in topology order.
    pub device_ids: Vec<String>,
    /// Environment for the pod's processes (`CUDA_VISIBLE_DEVICES`, ...).
    pub env: BTreeMap<String, String>,
    /// Host device files the pod must be able to open (`/dev/nvidia0`, `/dev/nvidiactl`, ...).
    pub device_files: Vec<PathBuf>,
    pub mounts: Vec<Mount>,
}

impl Allocation {
    /// Adds another plugin's allocation; device files and mounts are not repeated.
    pub fn merge(&mut self, other: Allocation) {
        self.device_ids.extend(other.device_ids);
        self.env.extend(other.env);
        for file in other.device_files {
            if !self.device_files.contains(&file) {
                self.device_files.push(file);
            }
        }
        for mount in other.mounts {
            if !self.mounts.contains(&mount) {
                self.mounts.push(mount);
            }
        }
    }
}

/// A host path made visible to the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub host_path: PathBuf,
    pub container_path: PathBuf,
    pub read_only: bool,
}
