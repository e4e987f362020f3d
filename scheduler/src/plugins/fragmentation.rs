//! Fragmentation: prefers the placement that fragments free GPU capacity least, measured
//! against the workload's request distribution (in the spirit of FGD, Weng et al., ATC 2023).
//!
//! A node's fragmentation for one request shape is the GPU capacity (in thousandths) it has free
//! but cannot give that shape: all of it when the shape does not fit the node at all (cpu or
//! GPUs short), else the free part of devices too small for it (partly used devices, for a
//! whole-GPU shape; devices with less than the share left, for a share). Its expected
//! fragmentation weighs the shapes by popularity. The score is minus the increase the pod's
//! placement causes, so whole nodes, sockets and NVLink groups stay free for large requests and
//! shares pack onto devices already shared.

use std::sync::Arc;

use super::gpu_topology::{DeviceChoice, choose};
use crate::cache::topology::bits;
use crate::cache::workload::Shape;
use crate::cache::{NodeInfo, PlanState, PodInfo};
use crate::framework::{
    CycleState, Plugin, PreFilter, RegistryError, Score, Status, normalize_min_max,
};
use crate::resources::FULL_DEVICE_MILLI;

pub const NAME: &str = "Fragmentation";

#[derive(Debug, Default)]
pub struct Fragmentation;

pub fn new(_args: &serde_json::Value) -> Result<Arc<dyn Plugin>, RegistryError> {
    Ok(Arc::new(Fragmentation))
}

/// The workload's shapes for this cycle.
struct Shapes(Vec<(Shape, f64)>);

impl Plugin for Fragmentation {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilter> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn Score> {
        Some(self)
    }
}

impl PreFilter for Fragmentation {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, cluster: &PlanState<'_>) -> Status {
        let mut shapes = cluster.workload().shapes().to_vec();
        if shapes.is_empty() && pod.request.wants_gpu() {
            // Nothing learnt yet: measure against the pod's own shape.
            shapes.push((Shape::of(&pod.request), 1.0));
        }
        state.insert(Shapes(shapes));
        Status::success()
    }
}

/// Free cpu and per-device free thousandths (healthy GPUs only) of a node.
struct Free {
    cpu: i64,
    gpus: Vec<u32>,
}

fn free_of(node: &NodeInfo) -> Option<Free> {
    let set = node.gpus()?;
    let gpus = (0..set.free_milli.len())
        .filter(|&i| set.is_healthy(i))
        .map(|i| set.free_milli[i])
        .collect();
    Some(Free {
        cpu: node.free_cpu_milli(),
        gpus,
    })
}

/// Expected fragmentation of `free` against `shapes`, in thousandths of a GPU.
fn fragmentation(free: &Free, shapes: &[(Shape, f64)]) -> f64 {
    let total: u32 = free.gpus.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let whole = free
        .gpus
        .iter()
        .filter(|f| **f >= FULL_DEVICE_MILLI)
        .count() as u32;
    shapes
        .iter()
        .map(|(s, w)| {
            let fits_cpu = s.cpu_milli <= free.cpu;
            let frag: u32 = if !fits_cpu || (s.whole_gpus > 0 && whole < s.whole_gpus) {
                total
            } else if s.whole_gpus > 0 {
                free.gpus.iter().filter(|f| **f < FULL_DEVICE_MILLI).sum()
            } else if s.share_milli > 0 {
                let small: u32 = free.gpus.iter().filter(|f| **f < s.share_milli).sum();
                if small == total { total } else { small }
            } else {
                0
            };
            w * f64::from(frag)
        })
        .sum()
}

/// `free` after the pod takes `choice` on `node`.
fn after(node: &NodeInfo, pod: &PodInfo, choice: &DeviceChoice) -> Option<Free> {
    let set = node.gpus()?;
    let mut milli = set.free_milli.clone();
    for (si, mask) in &choice.whole {
        if *node.devices[*si].resource == *set.resource {
            for b in bits(*mask) {
                milli[b] = 0;
            }
        }
    }
    if let Some((_, di, m)) = choice.share {
        milli[di] = milli[di].saturating_sub(m);
    }
    let gpus = (0..milli.len())
        .filter(|&i| set.is_healthy(i))
        .map(|i| milli[i])
        .collect();
    Some(Free {
        cpu: node.free_cpu_milli() - pod.request.res.cpu_milli,
        gpus,
    })
}

impl Score for Fragmentation {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(Shapes(shapes)) = state.get::<Shapes>() else {
            return 0;
        };
        let (Some(before), Some(choice)) = (free_of(node), choose(pod, node)) else {
            return 0;
        };
        let Some(after) = after(node, pod, &choice) else {
            return 0;
        };
        let delta = fragmentation(&after, shapes) - fragmentation(&before, shapes);
        -(delta * 1000.0) as i64
    }

    fn normalize(&self, scores: &mut [i64]) {
        normalize_min_max(scores, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Snapshot;
    use crate::testing::{GpuProfile, node, pod};

    #[test]
    fn shares_pack_onto_shared_devices() {
        let mut shared = node("a").gpus(GpuProfile::L4x4).info();
        shared.add_pod(pod("ns", "x").gpu_share(300).info(), Arc::new(vec![]));
        let fresh = node("b").gpus(GpuProfile::L4x4).info();
        let p = pod("ns", "p").gpu_share(300).info();
        let snap = Snapshot::default();
        let mut state = CycleState::new();
        Fragmentation.pre_filter(&mut state, &p, &PlanState::new(&snap));
        let whole = pod("ns", "w").gpus(1).info();
        state.insert(Shapes(vec![
            (Shape::of(&p.request), 0.5),
            (Shape::of(&whole.request), 0.5),
        ]));
        let on_shared = Fragmentation.score(&state, &p, &shared);
        let on_fresh = Fragmentation.score(&state, &p, &fresh);
        assert!(on_shared > on_fresh, "{on_shared} vs {on_fresh}");
    }

    #[test]
    fn cpu_pods_keep_off_gpu_nodes_they_would_strand() {
        let gpu_node = node("g").cpu("8").gpus(GpuProfile::L4x4).info();
        let cpu_node = node("c").cpu("8").info();
        let mut state = CycleState::new();
        state.insert(Shapes(vec![(
            Shape::of(&pod("ns", "t").cpu("4").gpus(1).info().request),
            1.0,
        )]));
        let p = pod("ns", "p").cpu("6").info();
        assert!(
            Fragmentation.score(&state, &p, &gpu_node) < Fragmentation.score(&state, &p, &cpu_node)
        );
    }
}
