//! How full a node is once a pod lands, per resource: what MostAllocated packs by and
//! LeastAllocated spreads by.

use crate::cache::{NodeInfo, PodInfo};
use crate::resources::FULL_DEVICE_MILLI;

/// Utilisation after the pod lands, 0–100, per (cpu, memory, gpu); gpu is `None` on nodes
/// without GPUs.
pub fn utilisation(pod: &PodInfo, node: &NodeInfo) -> (i64, i64, Option<i64>) {
    let frac = |used: i64, cap: i64| {
        if cap <= 0 {
            100
        } else {
            (used.clamp(0, cap) * 100) / cap
        }
    };
    let r = &pod.request;
    let cpu = frac(
        node.requested.cpu_milli + r.res.cpu_milli,
        node.allocatable.cpu_milli,
    );
    let mem = frac(
        node.requested.memory + r.res.memory,
        node.allocatable.memory,
    );
    let gpu = node.gpus().map(|set| {
        let cap = i64::from(set.healthy.count_ones()) * i64::from(FULL_DEVICE_MILLI);
        let used = cap - set.free_total() as i64 + r.gpu_milli() as i64;
        frac(used, cap)
    });
    (cpu, mem, gpu)
}
