//! Checks shared by every plugin's `allocate`, and the environment that makes a set of GPUs
//! visible to CUDA programs.

use std::collections::{BTreeMap, BTreeSet};

use drover_api::device::{Device, DeviceInventory};

use crate::DeviceError;
use crate::health::ATTR_PARENT;
use crate::labels::ATTR_MIG_MODE;

/// The devices behind `ids`, in topology order (best-connected neighbours adjacent). Refuses
/// ids that are repeated, unknown to `plugin`, unhealthy, or split into MIG slices.
pub(crate) fn resolve<'a>(
    plugin: &str,
    inventory: &'a DeviceInventory,
    ids: &[String],
) -> Result<Vec<&'a Device>, DeviceError> {
    let mut seen = BTreeSet::new();
    for id in ids {
        if !seen.insert(id.as_str()) {
            return Err(DeviceError::DuplicateDevice { id: id.clone() });
        }
        let device = inventory
            .device(id)
            .ok_or_else(|| DeviceError::UnknownDevice {
                plugin: plugin.to_string(),
                id: id.clone(),
            })?;
        if !device.is_healthy() {
            return Err(DeviceError::UnhealthyDevice {
                id: id.clone(),
                reason: device
                    .health_reason
                    .clone()
                    .unwrap_or_else(|| "no reason given".to_string()),
            });
        }
        if device.attributes.get(ATTR_MIG_MODE).map(String::as_str) == Some("enabled") {
            return Err(DeviceError::NotAllocatable {
                id: id.clone(),
                reason: "MIG is enabled on it; allocate its MIG devices instead".to_string(),
            });
        }
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    Ok(inventory
        .order_by_topology(&refs)
        .iter()
        .filter_map(|id| inventory.device(id))
        .collect())
}

/// `CUDA_VISIBLE_DEVICES` lists the GPUs by index (MIG slices by id) in the given order, with
/// `CUDA_DEVICE_ORDER=PCI_BUS_ID` so CUDA numbers GPUs as NVML does; `NVIDIA_VISIBLE_DEVICES`
/// lists the ids, for container runtimes. With no devices both hide every GPU, so a pod that
/// asked for none cannot use a GPU another pod was given.
pub(crate) fn gpu_env(devices: &[&Device]) -> BTreeMap<String, String> {
    let cuda: Vec<String> = devices
        .iter()
        .map(|d| {
            if d.attributes.contains_key(ATTR_PARENT) {
                d.id.clone()
            } else {
                d.index.to_string()
            }
        })
        .collect();
    let ids: Vec<&str> = devices.iter().map(|d| d.id.as_str()).collect();
    let nvidia = if ids.is_empty() {
        "void".to_string()
    } else {
        ids.join(",")
    };
    BTreeMap::from([
        ("CUDA_DEVICE_ORDER".to_string(), "PCI_BUS_ID".to_string()),
        ("CUDA_VISIBLE_DEVICES".to_string(), cuda.join(",")),
        ("NVIDIA_VISIBLE_DEVICES".to_string(), nvidia),
    ])
}
