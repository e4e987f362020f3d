//! The fragmentation gradient's arithmetic (FGD, see the Fragmentation plugin): how much free
//! GPU capacity a node strands for the workload's request shapes, what cpu strands, which free
//! thousandths no mix of popular shares fills, and which device a GPU share should take.
//! Fragmentation's pre-filter measures the workload once per cycle ([`WorkloadShapes`], kept in
//! the cycle state); its score and the device choice ([`super::devices::choose_in`]) read it.

use crate::cache::workload::{GpuClass, SHARE_GRAIN_MILLI, Shape, classes_of};
use crate::cache::{NodeInfo, PodInfo, WorkloadModel};
use crate::framework::CycleState;
use crate::resources::FULL_DEVICE_MILLI;

/// The workload's shapes for this cycle, grouped by GPU part; its cpu millicores per GPU
/// thousandth; and the cost of each device's unfillable free thousandths. Written to the cycle
/// state by Fragmentation's pre-filter.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkloadShapes {
    pub classes: Vec<GpuClass>,
    /// `None`: no GPU demand known.
    pub cpu_per_gpu_milli: Option<f64>,
    pub fill: Unfillable,
}

impl WorkloadShapes {
    /// The shapes `pod` is measured against: the workload's, or (nothing learnt yet) the pod's
    /// own; shares of at least `fill_min_popularity` of the GPU pods count as filling devices,
    /// each unfillable thousandth costing `fill_weight`.
    pub fn measure(
        workload: &WorkloadModel,
        pod: &PodInfo,
        fill_min_popularity: f64,
        fill_weight: f64,
    ) -> WorkloadShapes {
        let mut classes = workload.classes().to_vec();
        let mut ratio = workload.cpu_per_gpu_milli();
        if classes.is_empty() && pod.request.wants_gpu() {
            // Nothing learnt yet: measure against the pod's own shape.
            classes = classes_of(&[(Shape::of(&pod.request), 1.0)]);
            ratio = Some(pod.request.res.cpu_milli.max(0) as f64 / pod.request.gpu_milli() as f64);
        }
        let all: f64 = classes.iter().map(|c| c.weight).sum();
        let shares: Vec<u32> = classes
            .iter()
            .filter(|c| c.whole_gpus == 0 && c.share_milli > 0)
            .filter(|c| c.weight >= fill_min_popularity * all)
            .map(|c| c.share_milli)
            .collect();
        WorkloadShapes {
            fill: Unfillable::new(&shares, fill_weight),
            classes,
            cpu_per_gpu_milli: ratio,
        }
    }
}

/// Per device, the free thousandths that no sum of the workload's popular GPU shares fills
/// exactly (an unbounded knapsack over the shares, in [`SHARE_GRAIN_MILLI`] steps), times the
/// fill weight. With shares of 320 and 470 a device left with 530 keeps 60 that no pod will use
/// (470 fills the rest), one left with 640 none (two 320s): among placements that fragment
/// alike, prefer the one whose leftover some mix of shares fills to the last thousandth.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Unfillable {
    /// Cost of a device with `k × SHARE_GRAIN_MILLI` free; empty when off.
    cost: Vec<f64>,
}

impl Unfillable {
    /// The table for these share sizes (thousandths), weighted by `weight`.
    pub fn new(shares: &[u32], weight: f64) -> Unfillable {
        if weight <= 0.0 || shares.is_empty() {
            return Unfillable::default();
        }
        let steps: Vec<usize> = shares
            .iter()
            .map(|s| s.div_ceil(SHARE_GRAIN_MILLI) as usize)
            .filter(|k| *k > 0)
            .collect();
        let n = (FULL_DEVICE_MILLI / SHARE_GRAIN_MILLI) as usize + 1;
        // filled[k]: the most of k steps that a sum of shares fills.
        let mut filled = vec![0usize; n];
        for k in 1..n {
            filled[k] = steps
                .iter()
                .filter(|s| **s <= k)
                .map(|s| filled[k - s] + s)
                .max()
                .unwrap_or(0);
        }
        Unfillable {
            cost: (0..n)
                .map(|k| weight * ((k - filled[k]) as u32 * SHARE_GRAIN_MILLI) as f64)
                .collect(),
        }
    }

    /// Cost of a device with `free` thousandths free (what is below the grain cannot be
    /// filled either).
    pub fn of(&self, free: u32) -> f64 {
        let Some(last) = self.cost.len().checked_sub(1) else {
            return 0.0;
        };
        let k = (free / SHARE_GRAIN_MILLI) as usize;
        self.cost[k.min(last)] + f64::from(free % SHARE_GRAIN_MILLI) * self.cost_per_milli()
    }

    fn cost_per_milli(&self) -> f64 {
        // cost[1] is the weight times one grain (no share is smaller than the grain).
        self.cost
            .get(1)
            .map_or(0.0, |c| c / f64::from(SHARE_GRAIN_MILLI))
    }

    /// Cost of every device of a node.
    pub fn of_node(&self, gpus: &[u32]) -> f64 {
        if self.cost.is_empty() {
            return 0.0;
        }
        gpus.iter().map(|f| self.of(*f)).sum()
    }
}

/// Free GPU thousandths a pod of `class` cannot use, given that its cpu fits: `gpus` are the
/// free thousandths of each healthy device, `total` their sum.
pub fn class_fragment(gpus: &[u32], total: u32, class: &GpuClass) -> u32 {
    if class.whole_gpus > 0 {
        let whole = gpus.iter().filter(|f| **f >= FULL_DEVICE_MILLI).count() as u32;
        if whole < class.whole_gpus {
            total
        } else {
            gpus.iter().filter(|f| **f < FULL_DEVICE_MILLI).sum()
        }
    } else if class.share_milli > 0 {
        if gpus.iter().any(|f| *f >= class.share_milli) {
            gpus.iter().filter(|f| **f < class.share_milli).sum()
        } else {
            total
        }
    } else {
        // A cpu-only pod can use no GPU: all of it is a fragment to it.
        total
    }
}

/// Expected fragmentation of a node with `free_cpu` millicores and devices with `gpus` free
/// thousandths (healthy ones), against the workload `classes`, in thousandths of a GPU.
pub fn node_fragmentation(free_cpu: i64, gpus: &[u32], classes: &[GpuClass]) -> f64 {
    let total: u32 = gpus.iter().sum();
    if total == 0 {
        return 0.0;
    }
    classes
        .iter()
        .map(|c| {
            let fit = c.weight_fitting(free_cpu);
            fit * f64::from(class_fragment(gpus, total, c)) + (c.weight - fit) * f64::from(total)
        })
        .sum()
}

/// GPU thousandths out of `free_gpu` that `free_cpu` millicores cannot feed at `ratio`
/// millicores per thousandth.
pub fn cpu_stranded(free_gpu: u32, free_cpu: i64, ratio: f64) -> f64 {
    if ratio <= 0.0 {
        return 0.0;
    }
    (f64::from(free_gpu) - free_cpu.max(0) as f64 / ratio).max(0.0)
}

/// The device (index in the node's GPU set) a share of `milli` should take by the gradient:
/// the one whose use raises the node's fragmentation (and unfillable free capacity, `fill`)
/// least (ties to the fuller device, then the lower index). `None` when no device holds the
/// share.
pub fn share_device_for(
    free_cpu_after: i64,
    free_milli: &[u32],
    healthy: impl Fn(usize) -> bool,
    milli: u32,
    classes: &[GpuClass],
    fill: &Unfillable,
) -> Option<usize> {
    let mut gpus: Vec<u32> = (0..free_milli.len())
        .map(|i| if healthy(i) { free_milli[i] } else { 0 })
        .collect();
    let mut best: Option<(f64, u32, usize)> = None;
    let mut seen: Vec<u32> = Vec::new();
    for i in 0..gpus.len() {
        let f = gpus[i];
        // Devices with the same free thousandths leave the same node behind.
        if !healthy(i) || f < milli || seen.contains(&f) {
            continue;
        }
        seen.push(f);
        gpus[i] = f - milli;
        let frag =
            node_fragmentation(free_cpu_after, &gpus, classes) + fill.of(f - milli) - fill.of(f);
        gpus[i] = f;
        let key = (frag, f, i);
        if best.is_none_or(|b| (key.0, key.1) < (b.0, b.1)) {
            best = Some(key);
        }
    }
    best.map(|b| b.2)
}

/// The gradient's choice of device for the pod's GPU share on `node`, for the device-choosing
/// plugin to follow (`None`: no share, no workload learnt, or no device holds it).
pub fn share_device(state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Option<usize> {
    let WorkloadShapes { classes, fill, .. } = state.get::<WorkloadShapes>()?;
    let set = node.gpus()?;
    let milli = pod.request.gpu_share_milli;
    if milli == 0 || classes.is_empty() {
        return None;
    }
    share_device_for(
        node.free_cpu_milli() - pod.request.res.cpu_milli,
        &set.free_milli,
        |i| set.is_healthy(i),
        milli,
        classes,
        fill,
    )
}

/// A workload class for tests: `cpu` as (millicores, weight) steps, cumulated as the cache does.
#[cfg(test)]
pub(crate) fn test_class(whole_gpus: u32, share_milli: u32, cpu: &[(i64, f64)]) -> GpuClass {
    let mut acc = 0.0;
    GpuClass {
        whole_gpus,
        share_milli,
        cpu_cumulative: cpu
            .iter()
            .map(|(c, w)| {
                acc += w;
                (*c, acc)
            })
            .collect(),
        weight: acc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fill weight Fragmentation uses by default.
    const FILL_WEIGHT: f64 = 1.0;

    use super::test_class as class;

    #[test]
    fn fragment_per_class_by_hand() {
        let gpus = [1000, 1000, 600, 200];
        // (case, class, fragment)
        let cases = [
            ("1 gpu: the partly used ones", class(1, 0, &[(0, 1.0)]), 800),
            ("4 gpus: only 2 whole, all", class(4, 0, &[(0, 1.0)]), 2800),
            ("share 500: the 200 left", class(0, 500, &[(0, 1.0)]), 200),
            ("share 700: 600 and 200", class(0, 700, &[(0, 1.0)]), 800),
            (
                "share 1000: both partly used",
                class(0, 1000, &[(0, 1.0)]),
                800,
            ),
            ("cpu only: every free gpu", class(0, 0, &[(0, 1.0)]), 2800),
        ];
        for (name, c, want) in cases {
            assert_eq!(class_fragment(&gpus, 2800, &c), want, "{name}");
        }
    }

    #[test]
    fn expected_fragmentation_by_hand() {
        // Half the pods want 4 cores and half a GPU, half 8 cores and one GPU.
        let classes = [class(0, 500, &[(4000, 0.5)]), class(1, 0, &[(8000, 0.5)])];
        let gpus = [1000, 600, 200];
        // 6 cores free: the share fits (200 is its fragment), the whole GPU does not (cpu):
        // 0.5 × 200 + 0.5 × 1800.
        assert_eq!(node_fragmentation(6000, &gpus, &classes), 1000.0);
        // 10 cores free: the whole GPU fits, 600 + 200 partly used: 0.5 × 200 + 0.5 × 800.
        assert_eq!(node_fragmentation(10_000, &gpus, &classes), 500.0);
        // Nothing free, nothing fragmented.
        assert_eq!(node_fragmentation(10_000, &[0, 0], &classes), 0.0);
    }

    #[test]
    fn gradient_by_hand() {
        let classes = [class(0, 500, &[(0, 0.5)]), class(1, 0, &[(0, 0.5)])];
        let cpu = 64_000;
        // Before: [1000, 600]: 0 for the share, 600 for the whole GPU → 300.
        let before = node_fragmentation(cpu, &[1000, 600], &classes);
        assert_eq!(before, 300.0);
        // A 500 share on the 600 device: [1000, 100] → 0.5 × 100 + 0.5 × 100 = 100 (−200).
        assert_eq!(
            node_fragmentation(cpu, &[1000, 100], &classes) - before,
            -200.0
        );
        // On the empty device: [500, 600] → 0 + 0.5 × 1100 = 550 (+250).
        assert_eq!(
            node_fragmentation(cpu, &[500, 600], &classes) - before,
            250.0
        );
        assert_eq!(
            share_device_for(
                cpu,
                &[1000, 600],
                |_| true,
                500,
                &classes,
                &Unfillable::default()
            ),
            Some(1)
        );
    }

    #[test]
    fn share_device_follows_the_gradient_not_best_fit() {
        // Everyone asks for 400: a 300 share on the 400 device strands 100 (best fit would
        // take it); on an empty device it leaves 700, still good for a 400.
        let classes = [class(0, 400, &[(0, 1.0)])];
        let free = [400, 1000, 1000];
        assert_eq!(
            share_device_for(
                64_000,
                &free,
                |_| true,
                300,
                &classes,
                &Unfillable::default()
            ),
            Some(1)
        );
        // Unhealthy devices and devices without room are never chosen.
        assert_eq!(
            share_device_for(
                64_000,
                &free,
                |i| i == 0,
                300,
                &classes,
                &Unfillable::default()
            ),
            Some(0)
        );
        assert_eq!(
            share_device_for(
                64_000,
                &[200],
                |_| true,
                300,
                &classes,
                &Unfillable::default()
            ),
            None
        );
    }

    #[test]
    fn shares_leave_what_other_shares_fill() {
        // Shares of 300 and 400; a 400 share. On the 960 device it leaves 560 (400 fills all
        // but 160 of it; 960 itself missed only 60), on the empty one 600 (two 300s). FGD alone
        // sees no fragment either way (both leave room for either share) and takes the fuller
        // device; counting what no sum of shares fills takes the empty one.
        let classes = [class(0, 300, &[(0, 0.5)]), class(0, 400, &[(0, 0.5)])];
        let free = [1000, 960];
        let off = Unfillable::default();
        let fill = Unfillable::new(&[300, 400], FILL_WEIGHT);
        assert_eq!(fill.of(560) - fill.of(960), 100.0);
        assert_eq!(fill.of(600) - fill.of(1000), 0.0);
        assert_eq!(
            share_device_for(64_000, &free, |_| true, 400, &classes, &off),
            Some(1)
        );
        assert_eq!(
            share_device_for(64_000, &free, |_| true, 400, &classes, &fill),
            Some(0)
        );
    }
}
