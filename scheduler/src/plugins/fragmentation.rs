//! Fragmentation: Fragmentation Gradient Descent (FGD, Weng et al., USENIX ATC 2023). Prefers
//! the placement that fragments free GPU capacity least, measured against the workload's request
//! distribution.
//!
//! A node's fragmentation for one request shape is the GPU capacity (in thousandths) it has free
//! but cannot give that shape: all of it when the shape does not fit the node at all (cpu short,
//! too few whole free GPUs, no device with the share left), else the free part of devices too
//! small for it (partly used devices, for a whole-GPU shape; devices with less than the share
//! left, for a share). Its expected fragmentation weighs the shapes by popularity
//! ([`WorkloadModel`](crate::cache::WorkloadModel)). The raw score is minus the increase (the
//! gradient) the pod's placement causes on the node.
//!
//! Beyond the paper: each free GPU thousandth the placement leaves on the node costs
//! [`DEFAULT_PACK_WEIGHT`] thousandths of gradient, so among placements that fragment (nearly)
//! equally the fuller node wins — cpu-only pods go to nodes whose GPUs are spent, and empty
//! nodes stay empty for large requests; and the normalisation maps gradients
//! [`DEFAULT_TOLERANCE_MILLI`] or more worse than the best to zero, so the profile's other
//! scores only break near-ties.
//!
//! Also beyond the paper: cpu is the scarce co-resource (on openb, 130% GPU demand brings 106%
//! of the cluster's cpu, and the nodes' cpu per GPU differs tenfold by model). A node with `f`
//! free GPU thousandths and `c` free millicores can feed about `c / r` thousandths, `r` being
//! the workload's cpu per GPU thousandth (cpu-only pods included), so `max(0, f − c / r)` is
//! GPU capacity its cpu strands; the increase the placement causes costs
//! [`DEFAULT_CPU_STRAND_WEIGHT`] per thousandth. Unlike the per-shape fit, it sees the cpu
//! running short before any shape stops fitting: cpu-heavy pods go to cpu-rich nodes.
//!
//! And: FGD asks only whether a share fits a device's leftover, not whether the leftover can be
//! used up. Free thousandths that no sum of the popular shares (each at least
//! [`DEFAULT_FILL_MIN_POPULARITY`] of the GPU pods) fills exactly will never hold a pod, so
//! each costs [`DEFAULT_FILL_WEIGHT`] thousandths of gradient ([`Unfillable`]; in the device
//! choice too): a share goes where what it leaves is still a sum of popular shares.
//!
//! What each term is worth on the openb replay, and how its weight was tuned, is in
//! BENCHMARKS.md ("Fragmentation's terms, one at a time").

use std::sync::Arc;

use serde::Deserialize;

use crate::cache::topology::bits;
use crate::cache::workload::GpuClass;
use crate::cache::{NodeInfo, PlanState, PodInfo};
use crate::framework::registry::parse_args;
use crate::framework::{
    CycleState, MAX_NODE_SCORE, NodeView, Plugin, PreFilter, RegistryError, Score, Status,
    normalize_min_max,
};
use crate::shared::devices::{DeviceChoice, choose_in};
use crate::shared::gradient::{Unfillable, WorkloadShapes, cpu_stranded, node_fragmentation};

pub const NAME: &str = "Fragmentation";
/// A gradient this many thousandths of a GPU (expected fragment) worse than the best scores
/// zero; closer ones are near-ties that packing may break.
pub const DEFAULT_TOLERANCE_MILLI: f64 = 100.0;
/// See [`Args::pack_weight`].
pub const DEFAULT_PACK_WEIGHT: f64 = 0.003;
/// See [`Args::cpu_strand_weight`].
pub const DEFAULT_CPU_STRAND_WEIGHT: f64 = 1.0;
/// See [`Args::fill_weight`].
pub const DEFAULT_FILL_WEIGHT: f64 = 1.0;
/// See [`Args::fill_min_popularity`].
pub const DEFAULT_FILL_MIN_POPULARITY: f64 = 0.01;
/// Raw scores carry the gradient in millionths of a GPU.
const RAW_PER_MILLI: f64 = 1000.0;

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Args {
    /// Near-tie tolerance in thousandths of a GPU; 0 ranks by the gradient alone (min-max).
    #[serde(default = "default_tolerance")]
    pub tolerance_milli: f64,
    /// Packing pressure: thousandths of a GPU of gradient one free thousandth left on the node
    /// is worth; breaks near-ties toward the fuller node (0: the gradient alone).
    #[serde(default = "default_pack")]
    pub pack_weight: f64,
    /// Thousandths of a GPU of gradient one thousandth of GPU capacity stranded by the node's
    /// cpu (beyond what its free cpu can feed at the workload's cpu per GPU) is worth (0: off).
    #[serde(default = "default_cpu_strand")]
    pub cpu_strand_weight: f64,
    /// Thousandths of a GPU of gradient one free thousandth is worth that no sum of the
    /// workload's popular shares fills exactly, on the device that holds it (0: off).
    #[serde(default = "default_fill")]
    pub fill_weight: f64,
    /// Least popularity (fraction of the workload's GPU pods) of a share that counts as
    /// filling devices: rarer ones seldom come for a given hole.
    #[serde(default = "default_fill_min_popularity")]
    pub fill_min_popularity: f64,
}

fn default_fill_min_popularity() -> f64 {
    DEFAULT_FILL_MIN_POPULARITY
}

fn default_fill() -> f64 {
    DEFAULT_FILL_WEIGHT
}

fn default_cpu_strand() -> f64 {
    DEFAULT_CPU_STRAND_WEIGHT
}

fn default_pack() -> f64 {
    DEFAULT_PACK_WEIGHT
}

fn default_tolerance() -> f64 {
    DEFAULT_TOLERANCE_MILLI
}

impl Default for Args {
    fn default() -> Self {
        Args {
            tolerance_milli: DEFAULT_TOLERANCE_MILLI,
            pack_weight: DEFAULT_PACK_WEIGHT,
            cpu_strand_weight: DEFAULT_CPU_STRAND_WEIGHT,
            fill_weight: DEFAULT_FILL_WEIGHT,
            fill_min_popularity: DEFAULT_FILL_MIN_POPULARITY,
        }
    }
}

#[derive(Debug, Default)]
pub struct Fragmentation {
    args: Args,
}

pub fn new(args: &serde_json::Value) -> Result<Arc<dyn Plugin>, RegistryError> {
    let args: Args = parse_args(NAME, args)?;
    if !(args.pack_weight >= 0.0 && args.pack_weight.is_finite()) {
        return Err(RegistryError::args(
            NAME,
            format!("packWeight {} must be ≥ 0", args.pack_weight),
        ));
    }
    if !(args.cpu_strand_weight >= 0.0 && args.cpu_strand_weight.is_finite()) {
        return Err(RegistryError::args(
            NAME,
            format!("cpuStrandWeight {} must be ≥ 0", args.cpu_strand_weight),
        ));
    }
    if !(args.fill_weight >= 0.0 && args.fill_weight.is_finite()) {
        return Err(RegistryError::args(
            NAME,
            format!("fillWeight {} must be ≥ 0", args.fill_weight),
        ));
    }
    if !(args.fill_min_popularity >= 0.0 && args.fill_min_popularity <= 1.0) {
        return Err(RegistryError::args(
            NAME,
            format!(
                "fillMinPopularity {} must be in [0, 1]",
                args.fill_min_popularity
            ),
        ));
    }
    if !(args.tolerance_milli >= 0.0 && args.tolerance_milli.is_finite()) {
        return Err(RegistryError::args(
            NAME,
            format!("toleranceMilli {} must be ≥ 0", args.tolerance_milli),
        ));
    }
    Ok(Arc::new(Fragmentation { args }))
}

impl Plugin for Fragmentation {
    fn name(&self) -> &'static str {
        NAME
    }
    /// Reads free cpu and per-device free thousandths of healthy GPUs and the topology's device
    /// choice, all of which a node class shares.
    fn node_view(&self, _: &CycleState, _: &PodInfo) -> NodeView {
        NodeView::Shape
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
        state.insert(WorkloadShapes::measure(
            cluster.workload(),
            pod,
            self.args.fill_min_popularity,
            self.args.fill_weight,
        ));
        Status::success()
    }
}

/// Free cpu and per-device free thousandths (healthy GPUs only) of a node, and where each
/// entry of `gpus` sits in the device set.
struct Free {
    cpu: i64,
    gpus: Vec<u32>,
    index: Vec<usize>,
}

fn free_of(node: &NodeInfo) -> Option<Free> {
    let set = node.gpus()?;
    let index: Vec<usize> = (0..set.free_milli.len())
        .filter(|&i| set.is_healthy(i))
        .collect();
    Some(Free {
        cpu: node.free_cpu_milli(),
        gpus: index.iter().map(|&i| set.free_milli[i]).collect(),
        index,
    })
}

/// The gradient of placing `pod` on `node` with `choice` (fragmentation after minus before),
/// and the free GPU thousandths left.
fn gradient(
    node: &NodeInfo,
    pod: &PodInfo,
    choice: &DeviceChoice,
    before: &Free,
    classes: &[GpuClass],
    fill: &Unfillable,
) -> Option<(f64, u32)> {
    let set = node.gpus()?;
    let mut gpus = before.gpus.clone();
    for (si, mask) in &choice.whole {
        if *node.devices[*si].resource == *set.resource {
            for b in bits(*mask) {
                if let Some(k) = before.index.iter().position(|&i| i == b) {
                    gpus[k] = 0;
                }
            }
        }
    }
    if let Some((_, di, m)) = choice.share
        && let Some(k) = before.index.iter().position(|&i| i == di)
    {
        gpus[k] = gpus[k].saturating_sub(m);
    }
    let cpu = before.cpu - pod.request.res.cpu_milli;
    let delta = node_fragmentation(cpu, &gpus, classes)
        - node_fragmentation(before.cpu, &before.gpus, classes)
        + fill.of_node(&gpus)
        - fill.of_node(&before.gpus);
    Some((delta, gpus.iter().sum()))
}

impl Score for Fragmentation {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(WorkloadShapes {
            classes,
            cpu_per_gpu_milli: ratio,
            fill,
        }) = state.get::<WorkloadShapes>()
        else {
            return 0;
        };
        let (Some(before), Some(choice)) = (free_of(node), choose_in(state, pod, node)) else {
            return 0;
        };
        gradient(node, pod, &choice, &before, classes, fill).map_or(0, |(delta, left)| {
            let mut cost = delta + self.args.pack_weight * f64::from(left);
            if let Some(r) = *ratio
                && self.args.cpu_strand_weight > 0.0
            {
                let total: u32 = before.gpus.iter().sum();
                let cpu_after = before.cpu - pod.request.res.cpu_milli;
                cost += self.args.cpu_strand_weight
                    * (cpu_stranded(left, cpu_after, r) - cpu_stranded(total, before.cpu, r));
            }
            -(cost * RAW_PER_MILLI).round() as i64
        })
    }

    fn normalize(&self, scores: &mut [i64]) {
        if self.args.tolerance_milli <= 0.0 {
            normalize_min_max(scores, false);
            return;
        }
        normalize_tolerance(scores, self.args.tolerance_milli * RAW_PER_MILLI);
    }
}

/// The best raw score maps to the top and a score `tolerance` or more below it to zero,
/// linearly between: near-ties stay close (other scores may break them), clearly worse
/// gradients fall to the bottom whatever the spread of the rest.
fn normalize_tolerance(scores: &mut [i64], tolerance: f64) {
    let Some(&best) = scores.iter().max() else {
        return;
    };
    for s in scores.iter_mut() {
        let gap = ((best - *s) as f64 / tolerance).min(1.0);
        *s = MAX_NODE_SCORE - (gap * MAX_NODE_SCORE as f64).round() as i64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Snapshot;
    use crate::cache::workload::{Shape, classes_of};
    use crate::testing::{GpuProfile, node, pod};

    use crate::shared::gradient::test_class as class;

    #[test]
    fn cpu_classes_count_only_what_fits() {
        let c = class(
            1,
            0,
            &[(2000, 0.25), (4000, 0.25), (4000, 0.25), (16_000, 0.25)],
        );
        assert_eq!(c.weight_fitting(1000), 0.0);
        assert_eq!(c.weight_fitting(2000), 0.25);
        assert_eq!(c.weight_fitting(8000), 0.75);
        assert_eq!(c.weight_fitting(64_000), 1.0);
    }

    #[test]
    fn normalisation_keeps_near_ties_close() {
        // Tolerance 10 thousandths = 10_000 raw.
        let mut s = vec![0, -5_000, -10_000, -50_000];
        normalize_tolerance(&mut s, 10_000.0);
        assert_eq!(s, vec![100, 50, 0, 0]);
        assert!(new(&serde_json::json!({"toleranceMilli": -1.0})).is_err());
        assert!(new(&serde_json::json!({"toleranceMilli": 0.0})).is_ok());
    }

    #[test]
    fn shares_pack_onto_shared_devices() {
        let mut shared = node("a").gpus(GpuProfile::L4x4).info();
        shared.add_pod(pod("ns", "x").gpu_share(300).info(), Arc::new(vec![]));
        let fresh = node("b").gpus(GpuProfile::L4x4).info();
        let p = pod("ns", "p").gpu_share(300).info();
        let snap = Snapshot::default();
        let mut state = CycleState::new();
        let plugin = Fragmentation::default();
        plugin.pre_filter(&mut state, &p, &PlanState::new(&snap));
        let whole = pod("ns", "w").gpus(1).info();
        state.insert(WorkloadShapes {
            classes: classes_of(&[
                (Shape::of(&p.request), 0.5),
                (Shape::of(&whole.request), 0.5),
            ]),
            cpu_per_gpu_milli: None,
            fill: Unfillable::default(),
        });
        let on_shared = plugin.score(&state, &p, &shared);
        let on_fresh = plugin.score(&state, &p, &fresh);
        assert!(on_shared > on_fresh, "{on_shared} vs {on_fresh}");
    }

    #[test]
    fn cpu_pods_keep_off_gpu_nodes_they_would_strand() {
        let gpu_node = node("g").cpu("8").gpus(GpuProfile::L4x4).info();
        let cpu_node = node("c").cpu("8").info();
        let mut state = CycleState::new();
        state.insert(WorkloadShapes {
            classes: classes_of(&[(
                Shape::of(&pod("ns", "t").cpu("4").gpus(1).info().request),
                1.0,
            )]),
            cpu_per_gpu_milli: Some(4.0),
            fill: Unfillable::default(),
        });
        let p = pod("ns", "p").cpu("6").info();
        let plugin = Fragmentation::default();
        assert!(plugin.score(&state, &p, &gpu_node) < plugin.score(&state, &p, &cpu_node));
    }

    #[test]
    fn cpu_strand_by_hand() {
        // 4 cpu per GPU thousandth: 2000 free thousandths need 8000 millicores.
        assert_eq!(cpu_stranded(2000, 8000, 4.0), 0.0);
        // 4000 millicores feed 1000: the other 1000 are stranded.
        assert_eq!(cpu_stranded(2000, 4000, 4.0), 1000.0);
        assert_eq!(cpu_stranded(2000, -10, 4.0), 2000.0);
        assert_eq!(cpu_stranded(2000, 0, 0.0), 0.0);
        // Same pod, same fragments otherwise: the cpu-rich node takes the cpu-heavy pod.
        let lean = node("lean").cpu("16").gpus(GpuProfile::L4x4).info();
        let rich = node("rich").cpu("64").gpus(GpuProfile::L4x4).info();
        let mut state = CycleState::new();
        state.insert(WorkloadShapes {
            classes: Vec::new(),
            cpu_per_gpu_milli: Some(4.0),
            fill: Unfillable::default(),
        });
        let p = pod("ns", "p").cpu("12").info();
        let plugin = Fragmentation::default();
        assert!(plugin.score(&state, &p, &rich) > plugin.score(&state, &p, &lean));
        assert!(new(&serde_json::json!({"cpuStrandWeight": -1.0})).is_err());
    }

    #[test]
    fn unfillable_by_hand() {
        // Shares of 50 and 220: 60 keeps 10 unfilled, 100 fills (2 × 50), 270 fills
        // (220 + 50), 30 fills nothing.
        let fill = Unfillable::new(&[50, 220], 1.0);
        // (free thousandths, unfillable)
        let cases = [
            (0, 0.0),
            (30, 30.0),
            (60, 10.0),
            (100, 0.0),
            (230, 10.0),
            (270, 0.0),
            (1000, 0.0),
            (65, 15.0),
        ];
        for (free, want) in cases {
            assert_eq!(fill.of(free), want, "{free}");
        }
        assert_eq!(fill.of_node(&[60, 30, 100]), 40.0);
        assert_eq!(Unfillable::new(&[50, 220], 2.0).of(60), 20.0);
        // Off: no weight, or no shares.
        assert_eq!(Unfillable::new(&[50], 0.0).of_node(&[30]), 0.0);
        assert_eq!(Unfillable::new(&[], 1.0).of_node(&[30]), 0.0);
        assert!(new(&serde_json::json!({"fillWeight": -1.0})).is_err());
    }
}
