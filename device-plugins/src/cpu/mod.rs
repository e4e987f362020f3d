//! The CPU and memory plugin: sockets, cores, hyperthreads and NUMA nodes from
//! `/sys/devices/system`, with `sysinfo` counts where sysfs is missing (other systems, some
//! containers). It offers no devices, only the `cpu` and `memory` resources.

pub mod sysfs;

use std::path::PathBuf;

use drover_api::device::{CpuTopology, DeviceInventory, NumaNode};
use tokio::sync::broadcast;

use crate::health::HealthBook;
use crate::labels::{RESOURCE_CPU, RESOURCE_MEMORY, cpu_labels};
use crate::{Allocation, DeviceError, DevicePlugin, Discovery, HealthEvent, cpulist};

pub const DEFAULT_SYS_ROOT: &str = "/sys";

pub struct CpuPlugin {
    sys_root: PathBuf,
    /// CPUs never change health; the book only hands out receivers that stay quiet.
    health: HealthBook,
}

impl Default for CpuPlugin {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuPlugin {
    pub fn new() -> Self {
        Self::with_sys_root(DEFAULT_SYS_ROOT)
    }

    /// Reads `<root>/devices/system/{cpu,node}` instead of `/sys/...` (tests use fixtures).
    pub fn with_sys_root(root: impl Into<PathBuf>) -> Self {
        CpuPlugin {
            sys_root: root.into(),
            health: HealthBook::default(),
        }
    }

    fn system_dir(&self, name: &str) -> PathBuf {
        self.sys_root.join("devices/system").join(name)
    }

    fn cpu_topology(&self) -> Result<CpuTopology, DeviceError> {
        let dir = self.system_dir("cpu");
        match sysfs::read_cpus(&dir) {
            Ok(cpus) => Ok(sysfs::topology(&cpus)),
            Err(err) => {
                tracing::debug!(error = %err, "no cpu topology in sysfs, counting with sysinfo");
                sysinfo_topology()
            }
        }
    }
}

fn sysinfo_topology() -> Result<CpuTopology, DeviceError> {
    let mut system = sysinfo::System::new().map_err(|e| DeviceError::Cpu {
        reason: e.to_string(),
    })?;
    system.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
    let threads = system.cpus().len() as u32;
    if threads == 0 {
        return Err(DeviceError::Cpu {
            reason: "sysinfo found no cpus".to_string(),
        });
    }
    let cores = sysinfo::System::physical_core_count()
        .map(|c| c as u32)
        .unwrap_or(threads);
    Ok(CpuTopology {
        sockets: 1,
        cores,
        threads,
        core_siblings: Vec::new(),
    })
}

fn sysinfo_memory_bytes() -> Result<u64, DeviceError> {
    let mut system = sysinfo::System::new().map_err(|e| DeviceError::Cpu {
        reason: e.to_string(),
    })?;
    system.refresh_memory();
    Ok(system.total_memory())
}

impl DevicePlugin for CpuPlugin {
    fn name(&self) -> &str {
        "cpu"
    }

    fn discover(&self) -> Result<Discovery, DeviceError> {
        let cpu = self.cpu_topology()?;
        let numa_dir = self.system_dir("node");
        let mut numa_nodes = match sysfs::read_numa_nodes(&numa_dir) {
            Ok(nodes) => nodes,
            Err(err) => {
                tracing::debug!(error = %err, "no numa nodes in sysfs, assuming one");
                Vec::new()
            }
        };
        let numa_memory_mib: u64 = numa_nodes.iter().map(|n| n.memory_mib).sum();
        let memory_bytes = if numa_memory_mib > 0 {
            numa_memory_mib * 1024 * 1024
        } else {
            sysinfo_memory_bytes()?
        };
        if numa_nodes.is_empty() {
            let all: Vec<u32> = (0..cpu.threads).collect();
            numa_nodes.push(NumaNode {
                id: 0,
                cpus: cpulist::format(&all),
                memory_mib: memory_bytes / (1024 * 1024),
            });
        }
        let labels = cpu_labels(&cpu, numa_nodes.len());
        let resources = [
            (RESOURCE_CPU.to_string(), u64::from(cpu.threads) * 1000),
            (RESOURCE_MEMORY.to_string(), memory_bytes),
        ]
        .into();
        Ok(Discovery {
            inventory: DeviceInventory {
                numa_nodes,
                ..Default::default()
            },
            resources,
            labels,
            cpu: Some(cpu),
        })
    }

    fn subscribe_health(&self) -> broadcast::Receiver<HealthEvent> {
        self.health.subscribe()
    }

    fn allocate(&self, device_ids: &[String]) -> Result<Allocation, DeviceError> {
        match device_ids.first() {
            Some(id) => Err(DeviceError::UnknownDevice {
                plugin: self.name().to_string(),
                id: id.clone(),
            }),
            None => Ok(Allocation::default()),
        }
    }
}

#[cfg(test)]
mod tests;
