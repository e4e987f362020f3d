//! NVIDIA GPUs through NVML. `nvml-wrapper` loads `libnvidia-ml` at run time, so this builds
//! everywhere; where the library or the GPUs are missing, [`NvidiaPlugin::new`] answers
//! [`DeviceError::NoNvidiaGpus`].
//!
//! `discover.rs` reads GPUs, MIG devices and the topology matrix; `topology.rs` turns NVML's
//! answers into links; `health.rs` watches XID events.

mod discover;
pub mod health;
mod topology;

use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use drover_api::device::DeviceInventory;
use nvml_wrapper::Nvml;
use tokio::sync::broadcast;

use crate::health::HealthBook;
use crate::labels::device_resources_and_labels;
use crate::{Allocation, DeviceError, DevicePlugin, Discovery, HealthEvent, allocate};

pub const RESOURCE_NVIDIA_GPU: &str = "nvidia.com/gpu";

/// The device attribute holding the GPU's minor number (`/dev/nvidia<minor>`).
pub const ATTR_MINOR: &str = "minor";

/// Device files every CUDA process needs besides its GPUs' own.
pub const CONTROL_DEVICE_FILES: &[&str] =
    &["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"];

/// Names the library goes by: the development symlink, then the soname every driver installs.
const LIBRARY_NAMES: &[&str] = &["libnvidia-ml.so", "libnvidia-ml.so.1"];

pub struct NvidiaPlugin {
    nvml: Arc<Nvml>,
    health: Arc<HealthBook>,
    /// The last discovered inventory, so `allocate` need not walk NVML's topology again.
    last: Mutex<Option<DeviceInventory>>,
    _watcher: health::Watcher,
}

impl NvidiaPlugin {
    /// Loads NVML, finds the GPUs and starts watching their health.
    pub fn new() -> Result<Self, DeviceError> {
        let nvml = Arc::new(load()?);
        let count = nvml.device_count().map_err(|e| DeviceError::NoNvidiaGpus {
            reason: format!("nvml cannot count devices: {e}"),
        })?;
        if count == 0 {
            return Err(DeviceError::NoNvidiaGpus {
                reason: "the driver reports no devices".to_string(),
            });
        }
        let inventory = discover::inventory(&nvml)?;
        let uuids = inventory
            .devices
            .iter()
            .filter(|d| d.resource == RESOURCE_NVIDIA_GPU)
            .map(|d| d.id.clone())
            .collect();
        let health = Arc::new(HealthBook::default());
        let watcher = health::spawn(Arc::clone(&nvml), Arc::clone(&health), uuids)?;
        Ok(NvidiaPlugin {
            nvml,
            health,
            last: Mutex::new(Some(inventory)),
            _watcher: watcher,
        })
    }

    /// The driver version NVML reports.
    pub fn driver_version(&self) -> Option<String> {
        self.nvml.sys_driver_version().ok()
    }

    fn inventory(&self) -> Result<DeviceInventory, DeviceError> {
        let mut inventory = discover::inventory(&self.nvml)?;
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(inventory.clone());
        self.health.apply(&mut inventory);
        Ok(inventory)
    }

    fn cached_inventory(&self) -> Result<DeviceInventory, DeviceError> {
        let cached = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match cached {
            Some(mut inventory) => {
                self.health.apply(&mut inventory);
                Ok(inventory)
            }
            None => self.inventory(),
        }
    }
}

fn load() -> Result<Nvml, DeviceError> {
    let mut reasons = Vec::new();
    for name in LIBRARY_NAMES {
        match Nvml::builder().lib_path(OsStr::new(name)).init() {
            Ok(nvml) => return Ok(nvml),
            Err(err) => reasons.push(err.to_string()),
        }
    }
    Err(DeviceError::NoNvidiaGpus {
        reason: reasons.join("; "),
    })
}

impl DevicePlugin for NvidiaPlugin {
    fn name(&self) -> &str {
        "nvidia"
    }

    fn discover(&self) -> Result<Discovery, DeviceError> {
        let inventory = self.inventory()?;
        let (resources, labels) = device_resources_and_labels(&inventory);
        Ok(Discovery {
            inventory,
            resources,
            labels,
            cpu: None,
        })
    }

    fn subscribe_health(&self) -> broadcast::Receiver<HealthEvent> {
        self.health.subscribe()
    }

    fn allocate(&self, device_ids: &[String]) -> Result<Allocation, DeviceError> {
        let inventory = self.cached_inventory()?;
        let devices = allocate::resolve(self.name(), &inventory, device_ids)?;
        let mut device_files: Vec<PathBuf> = Vec::new();
        if !devices.is_empty() {
            device_files.extend(CONTROL_DEVICE_FILES.iter().map(PathBuf::from));
        }
        for device in &devices {
            if let Some(minor) = device.attributes.get(ATTR_MINOR) {
                let file = PathBuf::from(format!("/dev/nvidia{minor}"));
                if !device_files.contains(&file) {
                    device_files.push(file);
                }
            }
        }
        Ok(Allocation {
            device_ids: devices.iter().map(|d| d.id.clone()).collect(),
            env: allocate::gpu_env(&devices),
            device_files,
            mounts: Vec::new(),
        })
    }

    /// `nvidia-smi --gpu-reset` (NVML has no reset call); the driver refuses while any process
    /// still holds the GPU, which the caller has made sure no pod does.
    fn reset(&self, device_id: &str) -> Result<(), DeviceError> {
        let failed = |reason: String| DeviceError::ResetFailed {
            id: device_id.to_string(),
            reason,
        };
        let out = std::process::Command::new("nvidia-smi")
            .args(["--gpu-reset", "-i", device_id])
            .output()
            .map_err(|e| failed(format!("cannot run nvidia-smi: {e}")))?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr).trim().to_string();
            let text = if text.is_empty() {
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            } else {
                text
            };
            return Err(failed(format!(
                "nvidia-smi --gpu-reset: {}: {text}",
                out.status
            )));
        }
        self.health.mark_healthy(device_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
