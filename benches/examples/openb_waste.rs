//! Where the GPU capacity that the openb replay leaves unallocated sits at the end of one seed,
//! under one of Drover's profiles (the default one unless `--policy` says otherwise): why each node's free GPU thousandths are dead (no pod of the
//! list fits the node any more: its holes are too small for every GPU ask, or a GPU ask fits but
//! not the node's free cpu, or not its free memory) or still usable, and which pods share the
//! devices that hold the most free capacity.
//!
//! `cargo run --release -p drover-benches --example openb_waste -- [--seed N] [--top K]
//!  [--policy drover|drover-fgd|drover-most-allocated|drover-least-allocated]`

use std::collections::HashMap;

use anyhow::{Context, bail};
use drover_benches::openb::drover::{DroverProfile, build_profile, to_node, to_pod};
use drover_benches::openb::{
    DEFAULT_DEMAND, GpuAsk, OpenbOptions, PodRow, arrivals, load_nodes, load_pods,
};
use drover_scheduler::Simulator;
use drover_scheduler::cache::NodeInfo;
use drover_scheduler::testing::GPU_PRODUCT_LABEL;

/// Why a node's free GPU thousandths are left, in report order.
const REASONS: [&str; 4] = [
    "live: some pod of the list still fits",
    "dead: holes too small for every GPU ask",
    "dead: a GPU ask fits, not the free cpu",
    "dead: GPU and cpu fit, not the free memory",
];

fn main() -> anyhow::Result<()> {
    let (mut seed, mut top, mut profile) = (0u64, 15usize, DroverProfile::Default);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--seed" => seed = value.parse()?,
            "--top" => top = value.parse()?,
            "--policy" => {
                profile = match value.as_str() {
                    "drover" => DroverProfile::Default,
                    "drover-fgd" => DroverProfile::Fgd,
                    "drover-most-allocated" => DroverProfile::MostAllocated,
                    "drover-least-allocated" => DroverProfile::LeastAllocated,
                    other => bail!("unknown policy {other} (one of Drover's)"),
                }
            }
            other => bail!("unknown flag {other}"),
        }
    }
    let opts = OpenbOptions::default();
    let nodes = load_nodes(&opts.nodes_csv)?;
    let pods = load_pods(&opts.pods_csv)?;
    let api_pods: Vec<_> = pods.iter().map(|p| to_pod(p, &p.name)).collect();
    let total: u64 = nodes.iter().map(|n| u64::from(n.gpus) * 1000).sum();
    let profile = build_profile(profile)?;
    let mut sim = Simulator::with_profile(profile, nodes.iter().map(to_node));
    for p in &api_pods {
        sim.observe(p);
    }
    let (mut failed, mut smallest_failed) = (0usize, u64::MAX);
    for (i, &k) in arrivals(&pods, total, DEFAULT_DEMAND, seed)
        .iter()
        .enumerate()
    {
        let mut p = api_pods[k].clone();
        p.metadata.name = format!("{}-{i}", pods[k].name);
        // A pod that does not fit is not retried, as in the replay.
        if sim.schedule(p).is_err() {
            failed += 1;
            if pods[k].gpu != GpuAsk::None {
                smallest_failed = smallest_failed.min(pods[k].gpu.milli());
            }
        }
    }
    let (allocated, all) = sim.gpu_allocation();
    println!(
        "seed {seed}: {:.2}% of {} GPUs allocated, {:.1} GPUs free",
        allocated as f64 * 100.0 / all as f64,
        all / 1000,
        (all - allocated) as f64 / 1000.0
    );
    if failed > 0 {
        println!(
            "{failed} pods did not fit; the smallest GPU ask among them: {smallest_failed} thousandths"
        );
    }
    let snap = sim.snapshot();
    let mut by_reason = [(0usize, 0u64); REASONS.len()];
    let mut by_devices: HashMap<Vec<u32>, (usize, u64)> = HashMap::new();
    for (_, node) in snap.nodes() {
        let Some(set) = node.gpus() else { continue };
        let free = set.free_total();
        if free == 0 {
            continue;
        }
        let r = &mut by_reason[reason(node, &pods)];
        r.0 += 1;
        r.1 += free;
        for (i, shares) in shares_per_device(node).into_iter().enumerate() {
            let left = u64::from(set.free_milli[i]);
            if set.is_healthy(i) && left > 0 && !shares.is_empty() {
                let e = by_devices.entry(shares).or_default();
                e.0 += 1;
                e.1 += left;
            }
        }
    }
    println!(
        "\n{:<44} {:>6} {:>10} {:>9}",
        "free GPU by node", "nodes", "GPUs", "of all"
    );
    for (name, (n, milli)) in REASONS.iter().zip(by_reason) {
        println!(
            "{name:<44} {n:>6} {:>10.1} {:>8.2}%",
            milli as f64 / 1000.0,
            milli as f64 * 100.0 / all as f64
        );
    }
    let mut by_devices: Vec<_> = by_devices.into_iter().collect();
    by_devices.sort_by_key(|(shares, (_, left))| (std::cmp::Reverse(*left), shares.clone()));
    println!(
        "\n{:<28} {:>8} {:>10} {:>9}",
        "shares on a device", "devices", "GPUs free", "of all"
    );
    for (shares, (n, left)) in by_devices.into_iter().take(top) {
        println!(
            "{:<28} {n:>8} {:>10.1} {:>8.2}%",
            format!("{shares:?}"),
            left as f64 / 1000.0,
            left as f64 * 100.0 / all as f64
        );
    }
    Ok(())
}

/// The index into [`REASONS`] for a node with free GPU capacity.
fn reason(node: &NodeInfo, pods: &[PodRow]) -> usize {
    let Some(set) = node.gpus() else { return 0 };
    let model = node.labels().get(GPU_PRODUCT_LABEL);
    let healthy = || (0..set.free_milli.len()).filter(|&i| set.is_healthy(i));
    let gpu_fits = |p: &PodRow| {
        let model_ok = p.gpu_spec.is_empty() || model.is_some_and(|m| p.gpu_spec.contains(m));
        model_ok
            && match p.gpu {
                GpuAsk::None => false,
                GpuAsk::Whole(n) => {
                    healthy().filter(|&i| set.free_milli[i] >= 1000).count() >= n as usize
                }
                GpuAsk::Share(m) => healthy().any(|i| set.free_milli[i] >= m),
            }
    };
    let cpu_fits = |p: &PodRow| p.cpu_milli <= node.free_cpu_milli();
    let memory_fits = |p: &PodRow| p.memory_mib << 20 <= node.free_memory();
    if pods
        .iter()
        .any(|p| gpu_fits(p) && cpu_fits(p) && memory_fits(p))
    {
        0
    } else if !pods.iter().any(gpu_fits) {
        1
    } else if !pods.iter().any(|p| gpu_fits(p) && cpu_fits(p)) {
        2
    } else {
        3
    }
}

/// The GPU shares (thousandths) of the pods on each device of the node, ascending.
fn shares_per_device(node: &NodeInfo) -> Vec<Vec<u32>> {
    let Some(set) = node.gpus() else {
        return Vec::new();
    };
    let mut per = vec![Vec::new(); set.ids.len()];
    for slot in &node.pods {
        for a in slot.devices.iter() {
            for id in &a.ids {
                if let Some(i) = set.index_of(id) {
                    per[i].push(a.share_milli.unwrap_or(1000));
                }
            }
        }
    }
    for shares in &mut per {
        shares.sort_unstable();
    }
    per
}
