//! One file per scenario. Each has an `Options` struct (with `params()` to print what it ran
//! with), a `run(&Options, &Progress)` and a serde report implementing [`crate::Report`].

pub mod api;
pub mod constraints;
pub mod gang;
pub mod openb;
pub mod philly;
pub mod throughput;

use std::time::Instant;

use crate::cluster::{Cluster, ClusterOptions};
use crate::workload::{self, Layout};
use crate::{BenchError, Progress};

/// The cluster part every pod scenario shares.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub nodes: usize,
    pub profile: String,
    pub layout: Layout,
    pub cluster: ClusterOptions,
}

/// Starts the cluster and creates its nodes (skipped against `--server` when `nodes` is 0).
/// Returns the cluster, the node name prefix, and the seconds the setup took.
pub async fn setup(
    spec: &ClusterSpec,
    progress: &Progress,
) -> Result<(Cluster, String, f64), BenchError> {
    let t = Instant::now();
    let gpus = workload::profile(&spec.profile)?;
    let cluster = Cluster::start(&spec.cluster).await?;
    let prefix = format!("bench-{}", crate::cluster::run_id());
    let nodes = (0..spec.nodes)
        .map(|i| workload::bench_node(&prefix, i, gpus, &spec.layout))
        .collect();
    workload::create_nodes(
        &cluster.client,
        nodes,
        workload::DEFAULT_NODE_CONCURRENCY,
        progress,
    )
    .await?;
    // Let the scheduler's informers see every node before the clock starts.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    Ok((cluster, prefix, t.elapsed().as_secs_f64()))
}

fn ms(v: f64) -> String {
    crate::report::num(v, 2)
}
