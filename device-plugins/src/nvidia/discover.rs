//! Reading the GPUs, their MIG devices and the topology matrix out of NVML.

use std::collections::BTreeMap;

use drover_api::device::{Device, DeviceInventory};
use nvml_wrapper::Nvml;
use nvml_wrapper::error::NvmlError;

use super::topology::{NvlinkEnd, build_links, pcie_link_kind};
use super::{ATTR_MINOR, RESOURCE_NVIDIA_GPU};
use crate::health::ATTR_PARENT;
use crate::labels::ATTR_MIG_MODE;
use crate::{DeviceError, cpulist};

/// NVML's `NVML_NVLINK_MAX_LINKS`: links per GPU it can report.
const NVLINK_MAX_LINKS: u32 = 18;
/// Words of the CPU affinity mask asked for: 1024 CPUs.
const AFFINITY_WORDS: usize = 16;
const MIB: u64 = 1024 * 1024;
/// NVML's `NVML_DEVICE_MIG_ENABLE`.
const MIG_ENABLED: u32 = 1;

/// The GPUs (and their MIG devices) in NVML index order, their links and NUMA nodes.
pub(crate) fn inventory(nvml: &Nvml) -> Result<DeviceInventory, DeviceError> {
    let count = nvml
        .device_count()
        .map_err(|e| DeviceError::nvml("device_count", e))?;
    let mut gpus = Vec::new();
    let mut mig_devices = Vec::new();
    let mut bus_ids = Vec::new();
    let mut nvlinks = Vec::new();
    for index in 0..count {
        let device = nvml
            .device_by_index(index)
            .map_err(|e| DeviceError::nvml(format!("device_by_index({index})"), e))?;
        let gpu = gpu(&device, index)?;
        mig_devices.extend(migs(&device, &gpu));
        bus_ids.push(gpu.pci_bus_id.clone().unwrap_or_default());
        nvlinks.push(nvlink_ends(&device));
        gpus.push(gpu);
    }
    let ids: Vec<String> = gpus.iter().map(|g| g.id.clone()).collect();
    let pcie = |i: usize, j: usize| {
        let a = nvml.device_by_index(i as u32).ok()?;
        let b = nvml.device_by_index(j as u32).ok()?;
        a.topology_common_ancestor(b).ok().map(pcie_link_kind)
    };
    let links = build_links(&ids, &bus_ids, &nvlinks, pcie);
    gpus.extend(mig_devices);
    Ok(DeviceInventory {
        devices: gpus,
        links,
        numa_nodes: Vec::new(),
    })
}

fn gpu(device: &nvml_wrapper::Device<'_>, index: u32) -> Result<Device, DeviceError> {
    let uuid = device
        .uuid()
        .map_err(|e| DeviceError::nvml(format!("uuid of gpu {index}"), e))?;
    let mut attributes = BTreeMap::new();
    if let Ok(minor) = device.minor_number() {
        attributes.insert(ATTR_MINOR.to_string(), minor.to_string());
    }
    if let Ok(cc) = device.cuda_compute_capability() {
        attributes.insert(
            "computeCapability".to_string(),
            format!("{}.{}", cc.major, cc.minor),
        );
    }
    if let Ok(mode) = device.mig_mode() {
        let enabled = if mode.current == MIG_ENABLED {
            "enabled"
        } else {
            "disabled"
        };
        attributes.insert(ATTR_MIG_MODE.to_string(), enabled.to_string());
    }
    Ok(Device {
        id: uuid,
        resource: RESOURCE_NVIDIA_GPU.to_string(),
        index,
        model: device.name().unwrap_or_default(),
        memory_mib: device.memory_info().map_or(0, |m| m.total / MIB),
        pci_bus_id: device.pci_info().ok().map(|p| p.bus_id),
        numa_node: device.numa_node_id().ok(),
        cpu_affinity: device
            .cpu_affinity(AFFINITY_WORDS)
            .ok()
            .map(|words| cpulist::format(&cpulist::from_mask(&affinity_words(&words)))),
        attributes,
        ..Default::default()
    })
}

/// NVML's mask words are C `unsigned long`s: 64 bits on the Linux targets Drover supports,
/// 32 elsewhere, hence the conversion clippy finds useless here.
#[allow(clippy::useless_conversion)]
fn affinity_words(words: &[std::os::raw::c_ulong]) -> Vec<u64> {
    words.iter().map(|&w| u64::from(w)).collect()
}

/// The MIG devices of a GPU in MIG mode, each its own device with resource
/// `nvidia.com/mig-<profile>` (as the device plugin's mixed strategy names them).
fn migs(device: &nvml_wrapper::Device<'_>, parent: &Device) -> Vec<Device> {
    if parent.attributes.get(ATTR_MIG_MODE).map(String::as_str) != Some("enabled") {
        return Vec::new();
    }
    let Ok(slots) = device.mig_device_count() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for slot in 0..slots {
        // Empty slots answer NotFound.
        let Ok(mig) = device.mig_device_by_index(slot) else {
            continue;
        };
        let Ok(uuid) = mig.uuid() else { continue };
        let model = mig.name().unwrap_or_default();
        let mut attributes = BTreeMap::from([
            (ATTR_PARENT.to_string(), parent.id.clone()),
            ("mig.parentIndex".to_string(), parent.index.to_string()),
        ]);
        if let Some(minor) = parent.attributes.get(ATTR_MINOR) {
            attributes.insert(ATTR_MINOR.to_string(), minor.clone());
        }
        found.push(Device {
            id: uuid,
            resource: mig_resource(&model),
            index: slot,
            memory_mib: mig.memory_info().map_or(0, |m| m.total / MIB),
            model,
            pci_bus_id: parent.pci_bus_id.clone(),
            numa_node: parent.numa_node,
            cpu_affinity: parent.cpu_affinity.clone(),
            attributes,
            ..Default::default()
        });
    }
    found
}

/// `nvidia.com/mig-1g.10gb` from a MIG device name like `NVIDIA A100-SXM4-80GB MIG 1g.10gb`.
pub(crate) fn mig_resource(name: &str) -> String {
    match name.rsplit_once("MIG ") {
        Some((_, profile)) if !profile.trim().is_empty() => {
            format!("nvidia.com/mig-{}", profile.trim().replace(' ', "-"))
        }
        _ => "nvidia.com/mig".to_string(),
    }
}

/// Where each active NVLink of a GPU leads; empty without NVLink.
fn nvlink_ends(device: &nvml_wrapper::Device<'_>) -> Vec<NvlinkEnd> {
    let mut ends = Vec::new();
    for link in 0..NVLINK_MAX_LINKS {
        let wrapper = device.link_wrapper_for(link);
        match wrapper.is_active() {
            Ok(true) => {}
            Ok(false) => continue,
            // Past the GPU's last link, or no NVLink at all.
            Err(NvmlError::InvalidArg | NvmlError::NotSupported) => break,
            Err(_) => continue,
        }
        let Ok(remote) = wrapper.remote_pci_info() else {
            continue;
        };
        let remote_is_switch = matches!(
            wrapper.remote_device_type(link),
            Ok(nvml_wrapper::enum_wrappers::nv_link::IntDeviceType::Switch)
        );
        ends.push(NvlinkEnd {
            remote_bus_id: remote.bus_id,
            remote_is_switch,
        });
    }
    ends
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mig_resources() {
        let cases = [
            (
                "NVIDIA A100-SXM4-80GB MIG 1g.10gb",
                "nvidia.com/mig-1g.10gb",
            ),
            (
                "NVIDIA H100 80GB HBM3 MIG 3g.40gb",
                "nvidia.com/mig-3g.40gb",
            ),
            ("NVIDIA A100-SXM4-40GB", "nvidia.com/mig"),
        ];
        for (name, want) in cases {
            assert_eq!(mig_resource(name), want);
        }
    }
}
