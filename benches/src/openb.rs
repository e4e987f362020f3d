//! The openb packing benchmark: replay of the Alibaba GPU trace (cluster-trace-gpu-v2023) exactly
//! as the FGD paper does (Weng et al., USENIX ATC 2023). The cluster is the node list, empty at
//! start; pods are drawn uniformly with replacement from the pod list until their GPU request
//! reaches `demand` (130%) of the cluster's GPUs, shuffled, and placed one at a time, never
//! leaving; a pod that does not fit is not retried. The figure of merit is the GPU allocation
//! ratio (allocated GPU thousandths / all) as demand arrives, per policy, over seeds.
//!
//! Policies: Drover's profiles through [`drover_scheduler::Simulator`] ([`drover`]) and the
//! paper's reference policies implemented here ([`reference`]). Start at [`run`].

pub mod csv;
pub mod drover;
pub mod reference;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

pub use csv::{GpuAsk, NodeRow, PodRow, load_nodes, load_pods};
use drover::{DroverPlacer, DroverProfile};
use reference::{Reference, ReferencePlacer};

/// The node list of the paper's cluster (1,213 GPU nodes, 6,212 GPUs).
pub const DEFAULT_NODES_FILE: &str = "openb/openb_node_list_gpu_node.csv";
/// The default pod list (8,152 pods).
pub const DEFAULT_PODS_FILE: &str = "openb/openb_pod_list_default.csv";
/// Arrived demand at the end, as a fraction of the cluster's GPUs.
pub const DEFAULT_DEMAND: f64 = 1.3;
pub const DEFAULT_SEEDS: u64 = 10;
/// The allocation curve has a point every this much arrived demand.
pub const DEMAND_STEP: f64 = 0.05;

/// Why the replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum OpenbError {
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no header or no rows", file.display())]
    Empty { file: PathBuf },
    #[error("{}: missing column {column:?}", file.display())]
    MissingColumn { file: PathBuf, column: String },
    #[error("{}:{line}: column {column}: {message}", file.display())]
    Parse {
        file: PathBuf,
        line: usize,
        column: String,
        message: String,
    },
    #[error("invalid option: {0}")]
    Invalid(String),
    #[error("{policy} seed {seed}: {message}")]
    Inconsistent {
        policy: &'static str,
        seed: u64,
        message: String,
    },
}

/// A placement policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Drover's default profile (FGD gradient, packing breaks near-ties).
    Drover,
    /// Drover's fragmentation gradient alone: the paper's FGD.
    DroverFgd,
    /// Drover with MostAllocated (bin-packing) only.
    DroverMostAllocated,
    /// Drover with LeastAllocated (spreading) only.
    DroverLeastAllocated,
    Random,
    BestFit,
    GpuPacking,
}

impl Policy {
    pub const ALL: [Policy; 7] = [
        Policy::Random,
        Policy::DroverLeastAllocated,
        Policy::GpuPacking,
        Policy::DroverMostAllocated,
        Policy::BestFit,
        Policy::DroverFgd,
        Policy::Drover,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Policy::Drover => "drover",
            Policy::DroverFgd => "drover-fgd",
            Policy::DroverMostAllocated => "drover-most-allocated",
            Policy::DroverLeastAllocated => "drover-least-allocated",
            Policy::Random => "random",
            Policy::BestFit => "best-fit",
            Policy::GpuPacking => "gpu-packing",
        }
    }

    fn drover_profile(self) -> Option<DroverProfile> {
        match self {
            Policy::Drover => Some(DroverProfile::Default),
            Policy::DroverFgd => Some(DroverProfile::Fgd),
            Policy::DroverMostAllocated => Some(DroverProfile::MostAllocated),
            Policy::DroverLeastAllocated => Some(DroverProfile::LeastAllocated),
            _ => None,
        }
    }

    fn reference(self) -> Option<Reference> {
        match self {
            Policy::Random => Some(Reference::Random),
            Policy::BestFit => Some(Reference::BestFit),
            Policy::GpuPacking => Some(Reference::GpuPacking),
            _ => None,
        }
    }
}

impl std::str::FromStr for Policy {
    type Err = OpenbError;
    fn from_str(s: &str) -> Result<Policy, OpenbError> {
        Policy::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Policy::ALL.iter().map(|p| p.name()).collect();
                OpenbError::Invalid(format!(
                    "unknown policy {s:?} (one of {})",
                    names.join(", ")
                ))
            })
    }
}

/// What to replay.
#[derive(Clone, Debug)]
pub struct OpenbOptions {
    pub nodes_csv: PathBuf,
    pub pods_csv: PathBuf,
    pub seeds: Vec<u64>,
    /// Arrived demand at the end, as a fraction of the cluster's GPUs (1.3).
    pub demand: f64,
    pub policies: Vec<Policy>,
    /// Replays run at once (0: one per core). Placement times are measured per thread.
    pub threads: usize,
}

/// Where the shared data lives: `DROVER_DATA_DIR`, else `shared/data` beside the workspace.
pub fn data_dir() -> PathBuf {
    match std::env::var_os("DROVER_DATA_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"),
    }
}

impl Default for OpenbOptions {
    fn default() -> Self {
        let data = data_dir();
        OpenbOptions {
            nodes_csv: data.join(DEFAULT_NODES_FILE),
            pods_csv: data.join(DEFAULT_PODS_FILE),
            seeds: (0..DEFAULT_SEEDS).collect(),
            demand: DEFAULT_DEMAND,
            policies: Policy::ALL.to_vec(),
            threads: 0,
        }
    }
}

/// Mean, min and max over seeds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(v: &[f64]) -> Summary {
        if v.is_empty() {
            return Summary::default();
        }
        Summary {
            mean: v.iter().sum::<f64>() / v.len() as f64,
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// Per-placement decision time, microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub p50_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
    pub max_us: f64,
}

impl Timing {
    fn of(nanos: &mut [u64]) -> Timing {
        if nanos.is_empty() {
            return Timing::default();
        }
        nanos.sort_unstable();
        let at = |q: f64| nanos[((nanos.len() - 1) as f64 * q).round() as usize] as f64 / 1e3;
        Timing {
            p50_us: at(0.5),
            p99_us: at(0.99),
            mean_us: nanos.iter().sum::<u64>() as f64 / nanos.len() as f64 / 1e3,
            max_us: at(1.0),
        }
    }
}

/// A point of the allocation curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Arrived GPU demand, as a fraction of the cluster's GPUs.
    pub demand: f64,
    /// Allocated GPU thousandths / all, when that demand had arrived.
    pub allocation: f64,
}

/// One seed's replay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedReport {
    pub seed: u64,
    pub arrived: usize,
    pub placed: usize,
    pub failed: usize,
    /// GPU thousandths asked for by arrived pods, and by placed ones.
    pub arrived_gpu_milli: u64,
    pub placed_gpu_milli: u64,
    /// GPU thousandths in use at the end, as the placer accounts them (equals
    /// `placed_gpu_milli`; checked).
    pub allocated_gpu_milli: u64,
    pub total_gpu_milli: u64,
    pub allocation_at_full: f64,
    pub allocation_at_demand: f64,
    /// Allocation at each demand step (`DEMAND_STEP`, 2×, ... up to the demand).
    pub curve: Vec<f64>,
    /// Per arrival, in order: the pod's name and the node it went to.
    #[serde(skip)]
    pub placements: Vec<(String, Option<String>)>,
}

/// One policy over all seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyReport {
    pub policy: Policy,
    pub name: String,
    /// Allocation when the whole demand (130%) has arrived.
    pub allocation_at_demand: Summary,
    /// Allocation when 100% demand has arrived.
    pub allocation_at_full: Summary,
    /// Mean over seeds.
    pub curve: Vec<CurvePoint>,
    pub placement: Timing,
    pub seeds: Vec<SeedReport>,
}

/// The whole replay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpenbReport {
    pub nodes_csv: PathBuf,
    pub pods_csv: PathBuf,
    pub nodes: usize,
    pub gpus: u64,
    pub pod_types: usize,
    pub demand: f64,
    pub seeds: Vec<u64>,
    pub policies: Vec<PolicyReport>,
}

/// The arrivals of one seed: indices into the pod list, drawn uniformly with replacement until
/// their GPU request reaches `demand` × `total_milli`, then shuffled.
pub fn arrivals(pods: &[PodRow], total_milli: u64, demand: f64, seed: u64) -> Vec<usize> {
    let target = (total_milli as f64 * demand).ceil() as u64;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut asked = 0u64;
    // A list without GPU pods never reaches the target: stop at a bound rather than loop.
    let bound = pods.len().max(1) * 1000 + (target as usize);
    while asked < target && !pods.is_empty() && out.len() < bound {
        let k = rng.random_range(0..pods.len());
        asked += pods[k].gpu.milli();
        out.push(k);
    }
    out.shuffle(&mut rng);
    out
}

/// Demand steps of the curve: `DEMAND_STEP`, 2×, ... ≤ `demand`.
fn steps(demand: f64) -> Vec<f64> {
    let n = (demand / DEMAND_STEP + 1e-9).floor() as usize;
    (1..=n).map(|k| k as f64 * DEMAND_STEP).collect()
}

enum Placer {
    Drover(Box<DroverPlacer>),
    Reference(Box<ReferencePlacer>),
}

/// The inputs shared by every replay.
struct Inputs {
    nodes: Vec<NodeRow>,
    pods: Vec<PodRow>,
    api_nodes: Vec<drover_api::core::Node>,
    api_pods: Vec<drover_api::core::Pod>,
    total_milli: u64,
}

/// Replays one seed under one policy; placement times go to `nanos`.
fn replay(
    inputs: &Inputs,
    policy: Policy,
    seed: u64,
    demand: f64,
    nanos: &mut Vec<u64>,
) -> Result<SeedReport, OpenbError> {
    let mut placer = match (policy.drover_profile(), policy.reference()) {
        (Some(p), _) => Placer::Drover(Box::new(DroverPlacer::new(
            drover::build_profile(p)?,
            &inputs.api_nodes,
            &inputs.api_pods,
        ))),
        (None, Some(r)) => {
            Placer::Reference(Box::new(ReferencePlacer::new(r, &inputs.nodes, seed)))
        }
        (None, None) => return Err(OpenbError::Invalid(format!("policy {}", policy.name()))),
    };
    let order = arrivals(&inputs.pods, inputs.total_milli, demand, seed);
    let total = inputs.total_milli as f64;
    let steps = steps(demand);
    let mut curve = Vec::with_capacity(steps.len());
    let (mut asked, mut placed_milli, mut placed) = (0u64, 0u64, 0usize);
    let mut placements = Vec::with_capacity(order.len());
    let mut full = None;
    for (i, &k) in order.iter().enumerate() {
        let row = &inputs.pods[k];
        let name = format!("{}-{i}", row.name);
        let start = Instant::now();
        let node = match &mut placer {
            Placer::Drover(d) => {
                let mut pod = inputs.api_pods[k].clone();
                pod.metadata.name = name.clone();
                d.place(pod)
            }
            Placer::Reference(r) => r.place(row).map(|n| inputs.nodes[n].name.clone()),
        };
        nanos.push(start.elapsed().as_nanos() as u64);
        asked += row.gpu.milli();
        if node.is_some() {
            placed += 1;
            placed_milli += row.gpu.milli();
        }
        placements.push((name, node));
        let alloc = placed_milli as f64 / total;
        while curve.len() < steps.len() && asked as f64 >= steps[curve.len()] * total - 1e-6 {
            if full.is_none() && steps[curve.len()] >= 1.0 - 1e-9 {
                full = Some(alloc);
            }
            curve.push(alloc);
        }
    }
    let alloc = placed_milli as f64 / total;
    curve.resize(steps.len(), alloc);
    let (allocated, all) = match &mut placer {
        Placer::Drover(d) => d.gpu_allocation(),
        Placer::Reference(r) => r.gpu_allocation(),
    };
    let inconsistent = |message: String| OpenbError::Inconsistent {
        policy: policy.name(),
        seed,
        message,
    };
    if allocated != placed_milli || all != inputs.total_milli {
        return Err(inconsistent(format!(
            "the placer holds {allocated}/{all} GPU thousandths, the placed pods ask for \
             {placed_milli}/{}",
            inputs.total_milli
        )));
    }
    Ok(SeedReport {
        seed,
        arrived: order.len(),
        placed,
        failed: order.len() - placed,
        arrived_gpu_milli: asked,
        placed_gpu_milli: placed_milli,
        allocated_gpu_milli: allocated,
        total_gpu_milli: inputs.total_milli,
        allocation_at_full: full.unwrap_or(alloc),
        allocation_at_demand: alloc,
        curve,
        placements,
    })
}

/// Replays every (policy, seed) pair; `progress(done, total)` after each.
pub fn run(
    opts: &OpenbOptions,
    progress: &dyn Fn(usize, usize),
) -> Result<OpenbReport, OpenbError> {
    if !(opts.demand > 0.0 && opts.demand.is_finite()) {
        return Err(OpenbError::Invalid(format!(
            "demand {} must be > 0",
            opts.demand
        )));
    }
    if opts.seeds.is_empty() || opts.policies.is_empty() {
        return Err(OpenbError::Invalid("no seeds or no policies".into()));
    }
    let nodes = load_nodes(&opts.nodes_csv)?;
    let pods = load_pods(&opts.pods_csv)?;
    let total_milli: u64 = nodes.iter().map(|n| u64::from(n.gpus) * 1000).sum();
    if total_milli == 0 {
        return Err(OpenbError::Invalid(format!(
            "{}: no GPUs in the cluster",
            opts.nodes_csv.display()
        )));
    }
    if !pods.iter().any(|p| p.gpu != GpuAsk::None) {
        return Err(OpenbError::Invalid(format!(
            "{}: no pod asks for a GPU",
            opts.pods_csv.display()
        )));
    }
    let inputs = Inputs {
        api_nodes: nodes.iter().map(drover::to_node).collect(),
        api_pods: pods.iter().map(|p| drover::to_pod(p, &p.name)).collect(),
        nodes,
        pods,
        total_milli,
    };
    let jobs: Vec<(Policy, u64)> = opts
        .policies
        .iter()
        .flat_map(|p| opts.seeds.iter().map(move |s| (*p, *s)))
        .collect();
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(jobs.len());
    let next = AtomicUsize::new(0);
    type Done = (usize, Result<SeedReport, OpenbError>, Vec<u64>);
    let (tx, rx) = mpsc::channel::<Done>();
    let mut results: Vec<Option<(SeedReport, Vec<u64>)>> = vec![None; jobs.len()];
    let mut first_error = None;
    std::thread::scope(|s| {
        for _ in 0..threads {
            let tx = tx.clone();
            let (jobs, next, inputs) = (&jobs, &next, &inputs);
            s.spawn(move || {
                loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(policy, seed)) = jobs.get(j) else {
                        break;
                    };
                    let mut nanos = Vec::new();
                    let r = replay(inputs, policy, seed, opts.demand, &mut nanos);
                    if tx.send((j, r, nanos)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (done, (j, r, nanos)) in rx.iter().enumerate() {
            match r {
                Ok(rep) => results[j] = Some((rep, nanos)),
                Err(e) => {
                    // Stop handing out work; the first error is the answer.
                    next.store(jobs.len(), Ordering::Relaxed);
                    first_error.get_or_insert(e);
                }
            }
            progress(done + 1, jobs.len());
        }
    });
    if let Some(e) = first_error {
        return Err(e);
    }
    let steps = steps(opts.demand);
    let mut policies = Vec::new();
    for &policy in &opts.policies {
        let mut seeds = Vec::new();
        let mut nanos = Vec::new();
        for (j, (p, _)) in jobs.iter().enumerate() {
            if *p == policy
                && let Some((rep, n)) = results[j].take()
            {
                seeds.push(rep);
                nanos.extend(n);
            }
        }
        let at = |f: fn(&SeedReport) -> f64| Summary::of(&seeds.iter().map(f).collect::<Vec<_>>());
        let curve = steps
            .iter()
            .enumerate()
            .map(|(k, d)| CurvePoint {
                demand: *d,
                allocation: seeds.iter().map(|s| s.curve[k]).sum::<f64>() / seeds.len() as f64,
            })
            .collect();
        policies.push(PolicyReport {
            policy,
            name: policy.name().into(),
            allocation_at_demand: at(|s| s.allocation_at_demand),
            allocation_at_full: at(|s| s.allocation_at_full),
            curve,
            placement: Timing::of(&mut nanos),
            seeds,
        });
    }
    Ok(OpenbReport {
        nodes_csv: opts.nodes_csv.clone(),
        pods_csv: opts.pods_csv.clone(),
        nodes: inputs.nodes.len(),
        gpus: total_milli / 1000,
        pod_types: inputs.pods.len(),
        demand: opts.demand,
        seeds: opts.seeds.clone(),
        policies,
    })
}

impl OpenbReport {
    /// A plain-text table: policy, allocation at the demand and at 100%, placement times.
    pub fn table(&self) -> String {
        let mut out = format!(
            "openb: {} nodes, {} GPUs, {} pods in the list, demand {:.0}%, {} seeds\n",
            self.nodes,
            self.gpus,
            self.pod_types,
            self.demand * 100.0,
            self.seeds.len()
        );
        out.push_str(&format!(
            "{:<24} {:>9} {:>17} {:>9} {:>9} {:>9} {:>9}\n",
            "policy", "alloc@end", "(min–max)", "alloc@100", "p50 µs", "p99 µs", "mean µs"
        ));
        for p in &self.policies {
            out.push_str(&format!(
                "{:<24} {:>8.2}% {:>7.2}–{:>6.2}% {:>8.2}% {:>9.1} {:>9.1} {:>9.1}\n",
                p.name,
                p.allocation_at_demand.mean * 100.0,
                p.allocation_at_demand.min * 100.0,
                p.allocation_at_demand.max * 100.0,
                p.allocation_at_full.mean * 100.0,
                p.placement.p50_us,
                p.placement.p99_us,
                p.placement.mean_us,
            ));
        }
        out
    }
}
