//! The workload model the fragmentation score measures against: how often each request shape
//! (cpu, whole GPUs, GPU share) has been asked for. Learnt from the pods the scheduler sees, or
//! seeded from a trace (the openb replay observes every pod of the trace first, as the FGD paper
//! does with its "typical pods").
//!
//! Fragmentation depends on a shape's cpu only through "does it fit the node's free cpu", so the
//! model also keeps the shapes grouped by their GPU part ([`GpuClass`]), each with its cpu
//! requests sorted and their cumulative weights: one pass over a node's devices per class, and a
//! binary search for the cpu, instead of one pass per shape.

use std::collections::HashMap;

use crate::resources::PodRequest;

/// Most shapes the fragmentation score weighs (the most popular ones; the openb trace has 81
/// GPU shapes).
pub const DEFAULT_MAX_SHAPES: usize = 256;
/// CPU requests are rounded up to this many millicores, so near-identical pods count together.
pub const CPU_GRAIN_MILLI: i64 = 100;
/// GPU shares are rounded up to this many thousandths.
pub const SHARE_GRAIN_MILLI: u32 = 10;

/// A request shape, coarsened so similar pods count together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    /// CPU in millicores, rounded up to [`CPU_GRAIN_MILLI`].
    pub cpu_milli: i64,
    pub whole_gpus: u32,
    /// GPU share in thousandths, rounded up to [`SHARE_GRAIN_MILLI`].
    pub share_milli: u32,
}

impl Shape {
    pub fn of(r: &PodRequest) -> Shape {
        let cpu = r.res.cpu_milli.max(0);
        Shape {
            cpu_milli: (cpu + CPU_GRAIN_MILLI - 1) / CPU_GRAIN_MILLI * CPU_GRAIN_MILLI,
            whole_gpus: r.whole_gpus(),
            share_milli: r.gpu_share_milli.div_ceil(SHARE_GRAIN_MILLI) * SHARE_GRAIN_MILLI,
        }
    }
}

/// The shapes that share one GPU part, with their cpu requests.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuClass {
    pub whole_gpus: u32,
    pub share_milli: u32,
    /// (cpu millicores, weight of the shapes of this class asking for at most that much cpu),
    /// ascending.
    pub cpu_cumulative: Vec<(i64, f64)>,
    /// Weight of the whole class.
    pub weight: f64,
}

impl GpuClass {
    /// Weight of the class's shapes whose cpu fits in `free_cpu`.
    pub fn weight_fitting(&self, free_cpu: i64) -> f64 {
        let k = self.cpu_cumulative.partition_point(|(c, _)| *c <= free_cpu);
        if k == 0 {
            0.0
        } else {
            self.cpu_cumulative[k - 1].1
        }
    }
}

/// Popularity of request shapes.
#[derive(Clone, Debug, Default)]
pub struct WorkloadModel {
    counts: HashMap<Shape, u64>,
    /// The top shapes with their weights (summing to 1), recomputed on change.
    top: Vec<(Shape, f64)>,
    /// The top shapes grouped by GPU part.
    classes: Vec<GpuClass>,
    dirty: bool,
    /// Cpu millicores and GPU thousandths asked for by every pod observed, cpu-only ones too.
    cpu_milli: i64,
    gpu_milli: u64,
}

impl WorkloadModel {
    /// Counts one more pod of this request (only GPU pods shape GPU fragmentation: every free
    /// GPU is a fragment for a cpu-only pod wherever the pod goes, so they add the same to
    /// every node's gradient).
    pub fn observe(&mut self, r: &PodRequest) {
        self.cpu_milli += r.res.cpu_milli.max(0);
        self.gpu_milli += r.gpu_milli();
        if !r.wants_gpu() {
            return;
        }
        *self.counts.entry(Shape::of(r)).or_default() += 1;
        self.dirty = true;
    }

    /// Whether shapes were observed since the last refresh.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Recomputes the top shapes if they changed.
    pub fn refresh(&mut self) {
        if !self.dirty {
            return;
        }
        let mut all: Vec<(Shape, u64)> = self.counts.iter().map(|(s, c)| (*s, *c)).collect();
        all.sort_by(|a, b| {
            b.1.cmp(&a.1)
                .then(a.0.whole_gpus.cmp(&b.0.whole_gpus))
                .then(a.0.share_milli.cmp(&b.0.share_milli))
                .then(a.0.cpu_milli.cmp(&b.0.cpu_milli))
        });
        all.truncate(DEFAULT_MAX_SHAPES);
        let total: u64 = all.iter().map(|(_, c)| c).sum();
        self.top = all
            .into_iter()
            .map(|(s, c)| (s, c as f64 / total.max(1) as f64))
            .collect();
        self.classes = classes_of(&self.top);
        self.dirty = false;
    }

    /// The shapes and their weights (empty until a GPU pod has been seen).
    pub fn shapes(&self) -> &[(Shape, f64)] {
        &self.top
    }

    /// Cpu millicores the workload asks for per GPU thousandth, cpu-only pods included (their
    /// cpu competes with GPU pods' for the GPU nodes); `None` until a GPU pod has been seen.
    pub fn cpu_per_gpu_milli(&self) -> Option<f64> {
        (self.gpu_milli > 0).then(|| self.cpu_milli as f64 / self.gpu_milli as f64)
    }

    /// The shapes grouped by GPU part (empty until a GPU pod has been seen).
    pub fn classes(&self) -> &[GpuClass] {
        &self.classes
    }
}

/// Groups weighted shapes by GPU part, cpu requests ascending with cumulative weights.
pub fn classes_of(shapes: &[(Shape, f64)]) -> Vec<GpuClass> {
    let mut by_gpu: HashMap<(u32, u32), Vec<(i64, f64)>> = HashMap::new();
    for (s, w) in shapes {
        by_gpu
            .entry((s.whole_gpus, s.share_milli))
            .or_default()
            .push((s.cpu_milli, *w));
    }
    let mut out: Vec<GpuClass> = by_gpu
        .into_iter()
        .map(|((whole_gpus, share_milli), mut cpus)| {
            cpus.sort_by_key(|(c, _)| *c);
            let mut acc = 0.0;
            let cpu_cumulative = cpus
                .into_iter()
                .map(|(c, w)| {
                    acc += w;
                    (c, acc)
                })
                .collect();
            GpuClass {
                whole_gpus,
                share_milli,
                cpu_cumulative,
                weight: acc,
            }
        })
        .collect();
    out.sort_by_key(|c| (c.whole_gpus, c.share_milli));
    out
}
