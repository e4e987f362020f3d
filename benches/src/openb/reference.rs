//! The reference policies of the FGD paper, implemented in the harness on a plain model of the
//! cluster (free cpu, memory and per-GPU thousandths): Random, BestFit and GpuPacking. Device
//! choice is the same for all three: a share goes to the partly used GPU with the least room that
//! holds it, else to an empty one; whole GPUs take the first empty ones.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::csv::{FULL_GPU_MILLI, GpuAsk, NodeRow, PodRow};

/// Which reference policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reference {
    /// Any node that fits, uniformly.
    Random,
    /// The node with the least normalised cpu + memory + GPU left after the pod lands.
    BestFit,
    /// FGD paper's GPU packing: a share onto a partly used GPU first, then nodes with some GPU
    /// in use, then idle nodes; within a tier, the node with most GPU in use.
    GpuPacking,
}

#[derive(Clone, Debug)]
struct SimNode {
    cpu_cap: i64,
    mem_cap: i64,
    cpu_free: i64,
    mem_free: i64,
    gpus: Vec<u32>,
    model: String,
}

impl SimNode {
    fn gpu_free(&self) -> u64 {
        self.gpus.iter().map(|g| u64::from(*g)).sum()
    }

    /// The devices the pod would take: (device, thousandths) pairs, or `None` if it does not fit.
    fn devices_for(&self, pod: &PodRow) -> Option<Vec<(usize, u32)>> {
        if pod.cpu_milli > self.cpu_free || pod.memory_mib > self.mem_free {
            return None;
        }
        if !pod.gpu_spec.is_empty() && !pod.gpu_spec.contains(&self.model) {
            return None;
        }
        match pod.gpu {
            GpuAsk::None => Some(vec![]),
            GpuAsk::Whole(n) => {
                let free: Vec<(usize, u32)> = self
                    .gpus
                    .iter()
                    .enumerate()
                    .filter(|(_, g)| **g >= FULL_GPU_MILLI)
                    .take(n as usize)
                    .map(|(i, _)| (i, FULL_GPU_MILLI))
                    .collect();
                (free.len() == n as usize).then_some(free)
            }
            GpuAsk::Share(m) => {
                let partial = self
                    .gpus
                    .iter()
                    .enumerate()
                    .filter(|(_, g)| **g < FULL_GPU_MILLI && **g >= m)
                    .min_by_key(|(i, g)| (**g, *i))
                    .map(|(i, _)| i);
                let empty = || self.gpus.iter().position(|g| *g >= FULL_GPU_MILLI);
                partial.or_else(empty).map(|i| vec![(i, m)])
            }
        }
    }

    fn has_partial_fitting(&self, m: u32) -> bool {
        self.gpus.iter().any(|g| *g < FULL_GPU_MILLI && *g >= m)
    }
}

/// A cluster placed on by a reference policy.
#[derive(Debug)]
pub struct ReferencePlacer {
    policy: Reference,
    nodes: Vec<SimNode>,
    rng: StdRng,
}

impl ReferencePlacer {
    pub fn new(policy: Reference, nodes: &[NodeRow], seed: u64) -> ReferencePlacer {
        ReferencePlacer {
            policy,
            nodes: nodes
                .iter()
                .map(|n| SimNode {
                    cpu_cap: n.cpu_milli,
                    mem_cap: n.memory_mib,
                    cpu_free: n.cpu_milli,
                    mem_free: n.memory_mib,
                    gpus: vec![FULL_GPU_MILLI; n.gpus as usize],
                    model: n.model.clone(),
                })
                .collect(),
            // Its own stream, so the policy's choices do not shift the workload's draws.
            rng: StdRng::seed_from_u64(seed ^ 0x005e_ed0f_7a11),
        }
    }

    /// Places the pod; the node's index, or `None` when no node fits.
    pub fn place(&mut self, pod: &PodRow) -> Option<usize> {
        let feasible = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.devices_for(pod).map(|d| (i, d)));
        let chosen = match self.policy {
            Reference::Random => {
                let all: Vec<(usize, Vec<(usize, u32)>)> = feasible.collect();
                if all.is_empty() {
                    None
                } else {
                    let k = self.rng.random_range(0..all.len());
                    all.into_iter().nth(k)
                }
            }
            Reference::BestFit => {
                let left = |n: &SimNode| {
                    let frac = |free: i64, cap: i64| {
                        if cap > 0 {
                            free as f64 / cap as f64
                        } else {
                            0.0
                        }
                    };
                    let gpu_cap = n.gpus.len() as f64 * f64::from(FULL_GPU_MILLI);
                    let gpu_left = n.gpu_free() as f64 - pod.gpu.milli() as f64;
                    frac(n.cpu_free - pod.cpu_milli, n.cpu_cap)
                        + frac(n.mem_free - pod.memory_mib, n.mem_cap)
                        + if gpu_cap > 0.0 {
                            gpu_left / gpu_cap
                        } else {
                            0.0
                        }
                };
                feasible.min_by(|a, b| {
                    left(&self.nodes[a.0])
                        .total_cmp(&left(&self.nodes[b.0]))
                        .then(a.0.cmp(&b.0))
                })
            }
            Reference::GpuPacking => {
                let key = |n: &SimNode| {
                    let used = n.gpus.len() as u64 * u64::from(FULL_GPU_MILLI) - n.gpu_free();
                    let tier = match pod.gpu {
                        GpuAsk::Share(m) if n.has_partial_fitting(m) => 3,
                        _ if used > 0 => 2,
                        _ => 1,
                    };
                    (tier, used)
                };
                feasible.max_by(|a, b| {
                    key(&self.nodes[a.0])
                        .cmp(&key(&self.nodes[b.0]))
                        .then(b.0.cmp(&a.0))
                })
            }
        };
        let (i, devices) = chosen?;
        let n = &mut self.nodes[i];
        n.cpu_free -= pod.cpu_milli;
        n.mem_free -= pod.memory_mib;
        for (d, m) in devices {
            n.gpus[d] -= m;
        }
        Some(i)
    }

    /// GPU thousandths in use and in all.
    pub fn gpu_allocation(&self) -> (u64, u64) {
        self.nodes.iter().fold((0, 0), |(u, t), n| {
            let cap = n.gpus.len() as u64 * u64::from(FULL_GPU_MILLI);
            (u + cap - n.gpu_free(), t + cap)
        })
    }
}
