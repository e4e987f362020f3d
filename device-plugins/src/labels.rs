//! Node resources and labels derived from an inventory, shared by the plugins so a simulated
//! node is labelled exactly like a real one.

use std::collections::BTreeMap;

use drover_api::device::{CpuTopology, DeviceInventory, LinkKind};

pub const RESOURCE_CPU: &str = "cpu";
pub const RESOURCE_MEMORY: &str = "memory";

pub const LABEL_NUMA_NODES: &str = "drover.dev/numa-nodes";
pub const LABEL_CPU_SOCKETS: &str = "drover.dev/cpu.sockets";
pub const LABEL_CPU_CORES: &str = "drover.dev/cpu.cores";
pub const LABEL_CPU_THREADS_PER_CORE: &str = "drover.dev/cpu.threads-per-core";
/// The best fabric joining all of a node's accelerators: `nvswitch`, `nvlink` or `pcie`.
pub const LABEL_GPU_INTERCONNECT: &str = "drover.dev/gpu.interconnect";

/// A device with this attribute set to `enabled` is split into slices and is not offered
/// whole.
pub(crate) const ATTR_MIG_MODE: &str = "mig.mode";

/// Counts per device resource, and per resource `R` the labels `R.count`, `R.product` and
/// `R.memory` (MiB), as NVIDIA's GPU feature discovery writes them for `nvidia.com/gpu`.
pub(crate) fn device_resources_and_labels(
    inventory: &DeviceInventory,
) -> (BTreeMap<String, u64>, BTreeMap<String, String>) {
    let mut resources: BTreeMap<String, u64> = BTreeMap::new();
    let mut labels = BTreeMap::new();
    for device in &inventory.devices {
        if device.attributes.get(ATTR_MIG_MODE).map(String::as_str) == Some("enabled") {
            continue;
        }
        let count = resources.entry(device.resource.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            if !device.model.is_empty() {
                labels.insert(
                    format!("{}.product", device.resource),
                    label_value(&device.model),
                );
            }
            if device.memory_mib > 0 {
                labels.insert(
                    format!("{}.memory", device.resource),
                    device.memory_mib.to_string(),
                );
            }
        }
    }
    for (resource, count) in &resources {
        labels.insert(format!("{resource}.count"), count.to_string());
    }
    if let Some(fabric) = interconnect(inventory) {
        labels.insert(LABEL_GPU_INTERCONNECT.to_string(), fabric.to_string());
    }
    (resources, labels)
}

/// Labels describing CPUs and NUMA nodes.
pub(crate) fn cpu_labels(cpu: &CpuTopology, numa_nodes: usize) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_NUMA_NODES.to_string(), numa_nodes.to_string());
    labels.insert(LABEL_CPU_SOCKETS.to_string(), cpu.sockets.to_string());
    labels.insert(LABEL_CPU_CORES.to_string(), cpu.cores.to_string());
    labels.insert(
        LABEL_CPU_THREADS_PER_CORE.to_string(),
        cpu.threads_per_core().to_string(),
    );
    labels
}

fn interconnect(inventory: &DeviceInventory) -> Option<&'static str> {
    let best = inventory.links.iter().map(|l| l.kind).min()?;
    Some(match best {
        LinkKind::NVSwitch => "nvswitch",
        LinkKind::NVLink => "nvlink",
        _ => "pcie",
    })
}

/// A Kubernetes label value: spaces become dashes (`NVIDIA-H100-80GB-HBM3`, as GPU feature
/// discovery writes it), other characters outside `[A-Za-z0-9._-]` are dropped, 63 at most.
pub(crate) fn label_value(text: &str) -> String {
    let value: String = text
        .trim()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') => Some(c),
            _ => None,
        })
        .take(63)
        .collect();
    value
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_valid() {
        let cases = [
            ("NVIDIA H100 80GB HBM3", "NVIDIA-H100-80GB-HBM3"),
            ("NVIDIA A100-SXM4-80GB", "NVIDIA-A100-SXM4-80GB"),
            (" (weird) name! ", "weird-name"),
        ];
        for (input, want) in cases {
            assert_eq!(label_value(input), want);
        }
    }
}
