//! One file per scenario. Each has an `Options` struct (with `params()` to print what it ran
//! with), a `run(&Options, &Progress)` and a serde report implementing [`crate::Report`].

pub mod api;
pub mod burst;
pub mod constraints;
pub mod gang;
pub mod hollow;
pub mod openb;
pub mod philly;
pub mod philly_live;
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
    /// Serve the nodes by simulated node agents (leases, pod status) instead of creating bare
    /// Node objects; in process only. See [`hollow`].
    pub hollow: bool,
    pub cluster: ClusterOptions,
}

impl ClusterSpec {
    /// The parameter row every pod scenario prints, so a run can be repeated.
    pub fn hollow_param(&self) -> (String, String) {
        ("hollow".into(), self.hollow.to_string())
    }
}

/// Starts the cluster and creates its nodes (skipped against `--server` when `nodes` is 0), or
/// with `spec.hollow` starts hollow nodes, which [`Cluster::shutdown`] stops.
/// Returns the cluster, the node name prefix, and the seconds the setup took.
pub async fn setup(
    spec: &ClusterSpec,
    progress: &Progress,
) -> Result<(Cluster, String, f64), BenchError> {
    let t = Instant::now();
    let gpus = workload::profile(&spec.profile)?;
    if spec.hollow && spec.cluster.server.is_some() {
        return Err(BenchError::Invalid(
            "--hollow runs the node agents in this process against the in-process control \
             plane; it cannot be used with --server"
                .into(),
        ));
    }
    let mut cluster = Cluster::start(&spec.cluster).await?;
    let prefix = format!("bench-{}", crate::cluster::run_id());
    if spec.hollow {
        match hollow::start(&cluster.client, spec, &prefix, progress).await {
            Ok(h) => cluster.hollow = Some(h),
            Err(e) => {
                cluster.shutdown().await;
                return Err(e);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        return Ok((cluster, prefix, t.elapsed().as_secs_f64()));
    }
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
    // Let the scheduler's informers see every node before the clock starts (the hollow path
    // above waits the same).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    Ok((cluster, prefix, t.elapsed().as_secs_f64()))
}

/// The report row saying what served the nodes.
fn agents_row(hollow: bool) -> (&'static str, String) {
    let agents = if hollow {
        "hollow (simulated agents: leases, pod status)"
    } else {
        "none (bare Node objects)"
    };
    ("node agents", agents.into())
}

fn ms(v: f64) -> String {
    crate::report::num(v, 2)
}
