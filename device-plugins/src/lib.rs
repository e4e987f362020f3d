//! Device discovery, health and allocation for Drover's node agent.
//!
//! Start with [`DevicePlugin`] (in `plugin.rs`): the one trait every kind of device implements —
//! discover the inventory, report health changes, allocate devices to a pod. Then
//! [`DeviceManager`] (in `manager.rs`), which the node agent uses: it parses `--devices`
//! (`auto`, `none`, `nvidia`, `simulated:PROFILE`), combines several plugins, merges what they
//! discover and fans in their health events.
//!
//! The implementations:
//! - [`CpuPlugin`] (`cpu/`): sockets, cores, hyperthread siblings and NUMA nodes from
//!   `/sys/devices/system`, with `sysinfo` as the fallback; it provides `cpu` and `memory`.
//! - [`NvidiaPlugin`] (`nvidia/`): GPUs through NVML (loaded at run time, so the crate builds and
//!   runs on machines without a GPU), their topology matrix, MIG devices and XID-driven health.
//! - [`SimulatedPlugin`] (`simulated/`): devices described by a profile (built-in or YAML), for
//!   tests, `drover up --simulate-nodes` and the scale harness; devices can be failed on purpose,
//!   or given an XID (`inject_xid`).
//! - [`xid`]: what each XID calls for (nothing, a reset, draining the node).
//!
//! The pure topology logic (link lookup, ordering a set of devices so neighbours are the best
//! connected) lives on [`drover_api::device::DeviceInventory`], so the scheduler can use it
//! without depending on this crate.

mod allocate;
pub mod cpu;
pub mod cpulist;
mod error;
mod health;
mod labels;
mod manager;
pub mod nvidia;
mod plugin;
pub mod simulated;
pub mod xid;

pub use cpu::CpuPlugin;
pub use error::DeviceError;
pub use labels::{
    LABEL_CPU_CORES, LABEL_CPU_SOCKETS, LABEL_CPU_THREADS_PER_CORE, LABEL_GPU_INTERCONNECT,
    LABEL_NUMA_NODES, RESOURCE_CPU, RESOURCE_MEMORY,
};
pub use manager::{DEVICE_SPEC_FORMS, DeviceManager, HealthEvents, HealthRecvError};
pub use nvidia::{NvidiaPlugin, RESOURCE_NVIDIA_GPU};
pub use plugin::{Allocation, DevicePlugin, Discovery, HealthEvent, Mount};
pub use simulated::{Profile, SimulatedPlugin, builtin_profile, list_profiles, load_profile};
