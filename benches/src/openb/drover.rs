//! Drover's own decision on the openb cluster: nodes and pods of the trace as API objects, placed
//! by [`Simulator`] with one of the scheduler's profiles.

use drover_api::core::{Node, Pod};
use drover_api::device::{Device, DeviceHealth, DeviceInventory};
use drover_api::quantity::Quantity;
use drover_scheduler::Simulator;
use drover_scheduler::framework::{PluginConfig, Profile, ProfileConfig, Registry};
use drover_scheduler::plugins::{fragmentation, least_allocated, most_allocated};
use drover_scheduler::resources::GPU_RESOURCE;
use drover_scheduler::testing::{GPU_PRODUCT_LABEL, node, pod};

use super::OpenbError;
use super::csv::{GpuAsk, NodeRow, PodRow};

/// Namespace of the replayed pods.
pub const NAMESPACE: &str = "openb";

/// Which of Drover's profiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DroverProfile {
    /// The default profile, unchanged.
    Default,
    /// The paper's FGD: the fragmentation gradient alone decides (no packing tie-break).
    Fgd,
    /// MostAllocated (bin-packing) for every pod, no fragmentation score.
    MostAllocated,
    /// LeastAllocated (spreading) for every pod, no fragmentation score.
    LeastAllocated,
}

fn config(profile: DroverProfile) -> ProfileConfig {
    let mut c = ProfileConfig::default();
    let drop = |c: &mut ProfileConfig, names: &[&str]| {
        c.plugins.retain(|p| !names.contains(&p.name.as_str()));
    };
    match profile {
        DroverProfile::Default => {}
        DroverProfile::Fgd => {
            drop(&mut c, &[most_allocated::NAME, least_allocated::NAME]);
            for p in &mut c.plugins {
                if p.name == fragmentation::NAME {
                    p.args = serde_json::json!({"toleranceMilli": 0.0, "packWeight": 0.0, "cpuStrandWeight": 0.0});
                }
            }
        }
        DroverProfile::MostAllocated => {
            drop(
                &mut c,
                &[
                    fragmentation::NAME,
                    most_allocated::NAME,
                    least_allocated::NAME,
                ],
            );
            c.plugins.push(PluginConfig::new(most_allocated::NAME, 3));
        }
        DroverProfile::LeastAllocated => {
            drop(
                &mut c,
                &[
                    fragmentation::NAME,
                    most_allocated::NAME,
                    least_allocated::NAME,
                ],
            );
            c.plugins.push(PluginConfig::new(least_allocated::NAME, 3));
        }
    }
    c
}

/// The profile, built.
pub fn build_profile(profile: DroverProfile) -> Result<Profile, OpenbError> {
    Profile::build(&config(profile), &Registry::with_defaults())
        .map_err(|e| OpenbError::Invalid(format!("profile {profile:?}: {e}")))
}

/// A node of the list as the API sees it: cpu, memory, its GPUs as simulated devices of its
/// model, and the model label (`nvidia.com/gpu.product`) that `gpu_spec` matches.
pub fn to_node(row: &NodeRow) -> Node {
    let mut b = node(&row.name)
        .cpu(&format!("{}m", row.cpu_milli))
        .memory(&format!("{}Mi", row.memory_mib));
    if row.gpus > 0 {
        b = b.label(GPU_PRODUCT_LABEL, &row.model);
    }
    let mut n = b.build();
    n.status.allocatable.remove("pods");
    if row.gpus > 0 {
        n.status.allocatable.insert(
            GPU_RESOURCE.into(),
            Quantity::from_value(i64::from(row.gpus)),
        );
        let devices = (0..row.gpus)
            .map(|i| Device {
                id: format!("{}-gpu{i}", row.name),
                resource: GPU_RESOURCE.into(),
                index: i,
                model: row.model.clone(),
                numa_node: Some(0),
                health: DeviceHealth::Healthy,
                ..Default::default()
            })
            .collect();
        n.status.devices = Some(DeviceInventory {
            devices,
            links: vec![],
            numa_nodes: vec![],
        });
    }
    n
}

/// A pod of the list as the API sees it, named `name`: cpu and memory requests, whole GPUs
/// (`nvidia.com/gpu`) or a share (`drover.dev/gpu-milli`), and `gpu_spec` as a required node
/// affinity on the model label.
pub fn to_pod(row: &PodRow, name: &str) -> Pod {
    let mut b = pod(NAMESPACE, name)
        .cpu(&format!("{}m", row.cpu_milli))
        .memory(&format!("{}Mi", row.memory_mib));
    b = match row.gpu {
        GpuAsk::None => b,
        GpuAsk::Whole(n) => b.gpus(n),
        GpuAsk::Share(m) => b.gpu_share(m),
    };
    if !row.gpu_spec.is_empty() {
        let models: Vec<&str> = row.gpu_spec.iter().map(String::as_str).collect();
        b = b.node_affinity_in(GPU_PRODUCT_LABEL, &models);
    }
    b.build()
}

/// The trace's pods, built once: the workload model is seeded from them, and each arrival is
/// a renamed copy.
pub struct DroverPlacer {
    sim: Simulator,
}

impl DroverPlacer {
    /// A cluster of `nodes`, its workload model seeded with every pod of the trace (the
    /// paper's FGD measures against the trace's pod-type frequencies).
    pub fn new(profile: Profile, nodes: &[Node], trace: &[Pod]) -> DroverPlacer {
        let mut sim = Simulator::with_profile(profile, nodes.iter().cloned());
        for p in trace {
            sim.observe(p);
        }
        DroverPlacer { sim }
    }

    /// Places the pod; the node's name, or `None` when no node fits.
    pub fn place(&mut self, pod: Pod) -> Option<String> {
        self.sim.schedule(pod).ok().map(|p| p.node_name.to_string())
    }

    pub fn gpu_allocation(&mut self) -> (u64, u64) {
        self.sim.gpu_allocation()
    }
}
