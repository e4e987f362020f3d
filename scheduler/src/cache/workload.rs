//! The workload model the fragmentation score measures against: how often each request shape
//! (cpu class, whole GPUs, GPU share) has been asked for. Learnt from the pods the scheduler sees,
//! or seeded from a trace.

use std::collections::HashMap;

use crate::resources::PodRequest;

/// Most shapes the fragmentation score weighs (the most popular ones).
pub const DEFAULT_MAX_SHAPES: usize = 24;

/// A request shape, coarsened so similar pods count together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    /// CPU in millicores, rounded up to a power-of-two number of half cores.
    pub cpu_milli: i64,
    pub whole_gpus: u32,
    /// GPU share in thousandths, rounded up to 50.
    pub share_milli: u32,
}

impl Shape {
    pub fn of(r: &PodRequest) -> Shape {
        let half_cores = (r.res.cpu_milli.max(0) as u64).div_ceil(500).max(1);
        Shape {
            cpu_milli: (half_cores.next_power_of_two() * 500) as i64,
            whole_gpus: r.whole_gpus(),
            share_milli: r.gpu_share_milli.div_ceil(50) * 50,
        }
    }
}

/// Popularity of request shapes.
#[derive(Clone, Debug, Default)]
pub struct WorkloadModel {
    counts: HashMap<Shape, u64>,
    /// The top shapes with their weights (summing to 1), recomputed on change.
    top: Vec<(Shape, f64)>,
    dirty: bool,
}

impl WorkloadModel {
    /// Counts one more pod of this request (only GPU pods shape GPU fragmentation).
    pub fn observe(&mut self, r: &PodRequest) {
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
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cpu_milli.cmp(&b.0.cpu_milli)));
        all.truncate(DEFAULT_MAX_SHAPES);
        let total: u64 = all.iter().map(|(_, c)| c).sum();
        self.top = all
            .into_iter()
            .map(|(s, c)| (s, c as f64 / total.max(1) as f64))
            .collect();
        self.dirty = false;
    }

    /// The shapes and their weights (empty until a GPU pod has been seen).
    pub fn shapes(&self) -> &[(Shape, f64)] {
        &self.top
    }
}
