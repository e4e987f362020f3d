//! Node profiles: what a simulated node has. Built-in ones are embedded YAML files
//! (`profiles/*.yaml`); custom ones are YAML files of the same shape.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use drover_api::device::LinkKind;
use serde::{Deserialize, Serialize};

use crate::DeviceError;
use crate::nvidia::RESOURCE_NVIDIA_GPU;

/// Most accelerators one simulated node may have.
pub const MAX_GPUS: u32 = 64;
/// NVLink lanes per GPU on an NVSwitch fabric when the profile does not say (H100 SXM).
pub const DEFAULT_NVSWITCH_LANES: u32 = 18;

const BUILTIN: &[(&str, &str)] = &[
    ("h100-8", include_str!("profiles/h100-8.yaml")),
    ("a100-8", include_str!("profiles/a100-8.yaml")),
    ("l4-4", include_str!("profiles/l4-4.yaml")),
    ("cpu", include_str!("profiles/cpu.yaml")),
];

/// What a simulated node has: CPUs, memory, NUMA layout and accelerators.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Logical CPUs.
    pub cpu: u32,
    #[serde(rename = "memoryGiB")]
    pub memory_gib: u64,
    #[serde(default = "one")]
    pub sockets: u32,
    #[serde(default = "one")]
    pub threads_per_core: u32,
    /// NUMA nodes; one per socket when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_nodes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<GpuSpec>,
}

/// The accelerators of a profile, all of one model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpuSpec {
    pub count: u32,
    pub model: String,
    #[serde(rename = "memoryMiB")]
    pub memory_mib: u64,
    #[serde(default = "default_resource")]
    pub resource: String,
    pub interconnect: Interconnect,
    /// NVLink lanes per GPU into the NVSwitch fabric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvlink_lanes: Option<u32>,
    /// NUMA node of each GPU; spread evenly over the nodes when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub numa: Vec<u32>,
    /// Groups of GPUs behind one PCIe switch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pcie_switches: Vec<Vec<u32>>,
    /// Links that override the interconnect's default for a pair (e.g. NVLink bridges).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<LinkSpec>,
    /// Attributes every device gets (compute capability, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interconnect {
    /// Every pair on an NVSwitch fabric.
    NVSwitch,
    /// PCIe only (plus any `links`): same switch, same socket, or across sockets.
    PCIe,
}

/// A link between two GPUs, by index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    pub a: u32,
    pub b: u32,
    pub kind: LinkKind,
    #[serde(default)]
    pub lanes: u32,
}

fn one() -> u32 {
    1
}

fn default_resource() -> String {
    RESOURCE_NVIDIA_GPU.to_string()
}

impl Profile {
    /// Parses and validates a profile; `source` names it in errors (a built-in name or a path).
    pub fn from_yaml(source: &str, text: &str) -> Result<Profile, DeviceError> {
        let profile: Profile =
            yaml_serde::from_str(text).map_err(|source_err| DeviceError::ParseProfile {
                profile: source.to_string(),
                source: source_err,
            })?;
        profile.validate(source)?;
        Ok(profile)
    }

    /// NUMA nodes, defaulting to one per socket.
    pub fn numa_count(&self) -> u32 {
        self.numa_nodes.unwrap_or(self.sockets).max(1)
    }

    /// Physical cores over all sockets.
    pub fn cores(&self) -> u32 {
        self.cpu / self.threads_per_core.max(1)
    }

    /// NUMA node of GPU `index`.
    pub fn gpu_numa(&self, index: u32) -> u32 {
        let Some(gpus) = &self.gpus else { return 0 };
        match gpus.numa.get(index as usize) {
            Some(&node) => node,
            None => index * self.numa_count() / gpus.count.max(1),
        }
    }

    /// Checks what serde cannot: counts that divide, indices in range.
    pub fn validate(&self, source: &str) -> Result<(), DeviceError> {
        let invalid = |field: &str, reason: String| DeviceError::InvalidProfile {
            profile: source.to_string(),
            field: field.to_string(),
            reason,
        };
        if self.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty".into()));
        }
        for (field, value) in [
            ("cpu", self.cpu),
            ("sockets", self.sockets),
            ("threadsPerCore", self.threads_per_core),
            ("numaNodes", self.numa_count()),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be at least 1".into()));
            }
        }
        if self.memory_gib == 0 {
            return Err(invalid("memoryGiB", "must be at least 1".into()));
        }
        let per_node = self.threads_per_core * self.numa_count();
        if !self.cpu.is_multiple_of(per_node) {
            return Err(invalid(
                "cpu",
                format!(
                    "{} cpus do not divide into {} numa nodes of whole cores with {} threads each",
                    self.cpu,
                    self.numa_count(),
                    self.threads_per_core
                ),
            ));
        }
        if let Some(gpus) = &self.gpus {
            self.validate_gpus(gpus, &invalid)?;
        }
        Ok(())
    }

    fn validate_gpus(
        &self,
        gpus: &GpuSpec,
        invalid: &dyn Fn(&str, String) -> DeviceError,
    ) -> Result<(), DeviceError> {
        if gpus.count == 0 || gpus.count > MAX_GPUS {
            return Err(invalid(
                "gpus.count",
                format!("must be between 1 and {MAX_GPUS}, not {}", gpus.count),
            ));
        }
        if gpus.model.trim().is_empty() {
            return Err(invalid("gpus.model", "must not be empty".into()));
        }
        if gpus.resource.trim().is_empty() || !gpus.resource.contains('/') {
            return Err(invalid(
                "gpus.resource",
                format!(
                    "{:?} is not an extended resource name like nvidia.com/gpu",
                    gpus.resource
                ),
            ));
        }
        let in_range = |field: &str, i: u32| {
            if i < gpus.count {
                Ok(())
            } else {
                Err(invalid(
                    field,
                    format!("gpu {i} does not exist (count is {})", gpus.count),
                ))
            }
        };
        if !gpus.numa.is_empty() && gpus.numa.len() != gpus.count as usize {
            return Err(invalid(
                "gpus.numa",
                format!("has {} entries for {} gpus", gpus.numa.len(), gpus.count),
            ));
        }
        if let Some(node) = gpus.numa.iter().find(|&&n| n >= self.numa_count()) {
            return Err(invalid(
                "gpus.numa",
                format!(
                    "numa node {node} does not exist (there are {})",
                    self.numa_count()
                ),
            ));
        }
        let mut switched = BTreeSet::new();
        for group in &gpus.pcie_switches {
            for &i in group {
                in_range("gpus.pcieSwitches", i)?;
                if !switched.insert(i) {
                    return Err(invalid(
                        "gpus.pcieSwitches",
                        format!("gpu {i} is behind two switches"),
                    ));
                }
            }
        }
        for link in &gpus.links {
            in_range("gpus.links", link.a)?;
            in_range("gpus.links", link.b)?;
            if link.a == link.b {
                return Err(invalid(
                    "gpus.links",
                    format!("gpu {} is linked to itself", link.a),
                ));
            }
        }
        Ok(())
    }
}

/// Names of the built-in profiles, for `--node-profile` help.
pub fn list_profiles() -> Vec<&'static str> {
    BUILTIN.iter().map(|(name, _)| *name).collect()
}

fn parsed_builtins() -> &'static BTreeMap<&'static str, Arc<Profile>> {
    static PARSED: OnceLock<BTreeMap<&'static str, Arc<Profile>>> = OnceLock::new();
    PARSED.get_or_init(|| {
        BUILTIN
            .iter()
            .filter_map(|(name, text)| match Profile::from_yaml(name, text) {
                Ok(profile) => Some((*name, Arc::new(profile))),
                Err(err) => {
                    tracing::error!(profile = name, error = %err, "built-in profile is broken");
                    None
                }
            })
            .collect()
    })
}

/// A built-in profile, parsed once and shared.
pub fn builtin_profile(name: &str) -> Result<Arc<Profile>, DeviceError> {
    let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name) else {
        return Err(DeviceError::UnknownProfile {
            name: name.to_string(),
            available: list_profiles().join(", "),
        });
    };
    match parsed_builtins().get(name) {
        Some(profile) => Ok(Arc::clone(profile)),
        // Only a broken build gets here; parse again to return the error itself.
        None => Profile::from_yaml(name, text).map(Arc::new),
    }
}

/// A built-in profile by name, or a YAML file by path (anything with a `/` or ending in
/// `.yaml`/`.yml`).
pub fn load_profile(spec: &str) -> Result<Arc<Profile>, DeviceError> {
    let looks_like_path = spec.contains('/') || spec.ends_with(".yaml") || spec.ends_with(".yml");
    if !looks_like_path {
        return builtin_profile(spec);
    }
    let path = Path::new(spec);
    let text = std::fs::read_to_string(path).map_err(|source| DeviceError::ReadProfile {
        path: path.to_path_buf(),
        source,
    })?;
    Profile::from_yaml(spec, &text).map(Arc::new)
}
