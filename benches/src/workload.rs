//! What the scenarios create: nodes of a device profile with topology labels, and pods of a
//! shape mix.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use drover_api::core::{Node, Pod};
use drover_client::{Api, Client};
use drover_scheduler::testing::{GpuProfile, node, pod};
use rand::{RngExt, SeedableRng};

use crate::{BenchError, Progress};

/// Node label naming the node (pod anti-affinity and spread use it).
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// Node label naming the zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Node label naming the rack (what `--topology-key rack` means).
pub const RACK_LABEL: &str = "drover.dev/rack";
/// Nodes created at once.
pub const DEFAULT_NODE_CONCURRENCY: usize = 64;

/// The device profiles nodes can have (those of the simulated device plugins).
/// The node profiles `--profile` accepts (each also a built-in simulated device profile, which
/// `--hollow` nodes use).
pub const PROFILES: &[&str] = &["h100-8", "a100-8", "l4-4", "cpu"];

pub fn profile(name: &str) -> Result<Option<GpuProfile>, BenchError> {
    Ok(match name {
        "h100-8" => Some(GpuProfile::H100x8),
        "a100-8" => Some(GpuProfile::A100x8),
        "l4-4" => Some(GpuProfile::L4x4),
        "cpu" => None,
        other => {
            return Err(BenchError::Invalid(format!(
                "profile {other:?}: expected one of {}",
                PROFILES.join(", ")
            )));
        }
    })
}

/// How nodes are laid out in zones and racks.
#[derive(Clone, Debug)]
pub struct Layout {
    pub zones: usize,
    pub rack_size: usize,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            zones: 10,
            rack_size: 64,
        }
    }
}

/// Node `i` of a benchmark cluster: 192 cpu, 2Ti memory, 110 pods, the profile's GPUs, labels
/// for hostname, zone (`i % zones`) and rack (`i / rack_size`).
pub fn bench_node(prefix: &str, i: usize, gpus: Option<GpuProfile>, layout: &Layout) -> Node {
    let name = format!("{prefix}-{i}");
    let mut b = node(&name)
        .cpu("192")
        .memory("2Ti")
        .pods("110")
        .label(HOSTNAME_LABEL, &name)
        .label(ZONE_LABEL, &format!("zone-{}", i % layout.zones.max(1)))
        .label(RACK_LABEL, &format!("rack-{}", i / layout.rack_size.max(1)));
    if let Some(p) = gpus {
        b = b.gpus(p);
    }
    b.build()
}

/// Creates `nodes` through the API (object, then status), `concurrency` at a time.
pub async fn create_nodes(
    client: &Client,
    nodes: Vec<Node>,
    concurrency: usize,
    progress: &Progress,
) -> Result<(), BenchError> {
    progress.phase("nodes", nodes.len() as u64);
    let nodes = Arc::new(nodes);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (api, nodes, next, progress) = (
            client.all::<Node>(),
            nodes.clone(),
            next.clone(),
            progress.clone(),
        );
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(n) = nodes.get(i) else {
                    return Ok::<_, BenchError>(());
                };
                create_node(&api, n).await?;
                progress.inc(1);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| BenchError::Start(e.to_string()))??;
    }
    progress.finish();
    Ok(())
}

async fn create_node(api: &Api<Node>, n: &Node) -> Result<(), BenchError> {
    let mut created = match api.create(n).await {
        Ok(c) => c,
        Err(e) if e.is_already_exists() => api.get(&n.metadata.name).await?,
        Err(e) => return Err(e.into()),
    };
    created.status = n.status.clone();
    api.update_status(&created).await?;
    Ok(())
}

/// A pod shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// 100m cpu, 128Mi memory.
    Cpu,
    /// `n` whole GPUs with 4 cpu and 32Gi memory each.
    Gpu(u32),
    /// A share of one GPU in thousandths, with 1 cpu and 8Gi memory.
    Share(u32),
}

impl Shape {
    pub fn parse(s: &str) -> Result<Shape, BenchError> {
        let bad = || {
            BenchError::Invalid(format!(
                "shape {s:?}: expected cpu, gpuN (1-8) or shareM (1-999)"
            ))
        };
        if s == "cpu" {
            Ok(Shape::Cpu)
        } else if let Some(n) = s.strip_prefix("gpu") {
            n.parse()
                .ok()
                .filter(|n| (1..=8).contains(n))
                .map(Shape::Gpu)
                .ok_or_else(bad)
        } else if let Some(m) = s.strip_prefix("share") {
            m.parse()
                .ok()
                .filter(|m| (1..1000).contains(m))
                .map(Shape::Share)
                .ok_or_else(bad)
        } else {
            Err(bad())
        }
    }

    /// GPU thousandths asked for.
    pub fn gpu_milli(self) -> u64 {
        match self {
            Shape::Cpu => 0,
            Shape::Gpu(n) => u64::from(n) * 1000,
            Shape::Share(m) => u64::from(m),
        }
    }

    pub fn pod(self, namespace: &str, name: &str) -> Pod {
        let b = pod(namespace, name);
        let mut p = match self {
            Shape::Cpu => b.cpu("100m").memory("128Mi"),
            Shape::Gpu(n) => b
                .cpu(&(4 * n).to_string())
                .memory(&format!("{}Gi", 32 * n))
                .gpus(n),
            Shape::Share(m) => b.cpu("1").memory("8Gi").gpu_share(m),
        }
        .build();
        // The server sets these; a client-set timestamp would only be ignored.
        p.metadata.creation_timestamp = None;
        // As a manifest has them (and the client then sends the pod without copying it).
        drover_api::Resource::set_type_meta(&mut p);
        p
    }
}

/// Weighted shapes, e.g. `cpu:80,gpu1:10,gpu8:2,share500:8`.
#[derive(Clone, Debug)]
pub struct ShapeMix {
    pub shapes: Vec<(Shape, f64)>,
    pub text: String,
}

impl ShapeMix {
    pub fn parse(s: &str) -> Result<ShapeMix, BenchError> {
        let mut shapes = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, w) = part.split_once(':').unwrap_or((part, "1"));
            let w: f64 = w
                .parse()
                .ok()
                .filter(|w: &f64| *w >= 0.0 && w.is_finite())
                .ok_or_else(|| BenchError::Invalid(format!("shape weight {w:?} in {part:?}")))?;
            shapes.push((Shape::parse(name)?, w));
        }
        if shapes.iter().map(|s| s.1).sum::<f64>() <= 0.0 {
            return Err(BenchError::Invalid(format!(
                "shape mix {s:?} has no positive weight"
            )));
        }
        Ok(ShapeMix {
            shapes,
            text: s.to_string(),
        })
    }

    /// `count` shapes drawn with `seed` (the same seed gives the same workload).
    pub fn draw(&self, count: usize, seed: u64) -> Vec<Shape> {
        let total: f64 = self.shapes.iter().map(|s| s.1).sum();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..count)
            .map(|_| {
                let mut x = rng.random::<f64>() * total;
                for (s, w) in &self.shapes {
                    if x < *w {
                        return *s;
                    }
                    x -= w;
                }
                self.shapes[self.shapes.len() - 1].0
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_draw_deterministically() {
        let m = ShapeMix::parse("cpu:3,gpu2:1,share250:0").unwrap();
        let a = m.draw(1000, 7);
        assert_eq!(a, m.draw(1000, 7));
        let gpu2 = a.iter().filter(|s| **s == Shape::Gpu(2)).count();
        assert!((150..350).contains(&gpu2), "{gpu2}");
        assert!(!a.contains(&Shape::Share(250)));
        assert!(ShapeMix::parse("gpu9").is_err());
        assert!(ShapeMix::parse("cpu:0").is_err());
    }
}
