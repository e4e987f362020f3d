//! `drover bench throughput`: N nodes of a profile, M pods of a shape mix; bound pods/s
//! (average and over time), create→bound latency percentiles, CPU and memory of the process
//! (which holds the whole control plane when it runs in process).

use serde::Serialize;

use super::{ClusterSpec, agents_row, ms, setup};
use crate::plot::Chart;
use crate::podrun::{PodRunSummary, RunOptions, run_pods};
use crate::report::{Report, Table, num};
use crate::workload::ShapeMix;
use crate::{BenchError, Progress};

pub const DEFAULT_SHAPE_MIX: &str = "cpu:80,gpu1:10,gpu2:5,gpu4:3,gpu8:2";

#[derive(Clone, Debug)]
pub struct Options {
    pub cluster: ClusterSpec,
    pub pods: usize,
    pub shape_mix: ShapeMix,
    pub seed: u64,
    pub run: RunOptions,
}

impl Options {
    pub fn params(&self) -> Vec<(String, String)> {
        vec![
            ("nodes".into(), self.cluster.nodes.to_string()),
            ("pods".into(), self.pods.to_string()),
            ("profile".into(), self.cluster.profile.clone()),
            ("shape-mix".into(), self.shape_mix.text.clone()),
            ("seed".into(), self.seed.to_string()),
            ("concurrency".into(), self.run.concurrency.to_string()),
            ("rate".into(), self.run.rate.to_string()),
            self.cluster.hollow_param(),
        ]
    }
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ThroughputReport {
    pub nodes: usize,
    pub pods: usize,
    pub profile: String,
    pub shape_mix: String,
    pub in_process: bool,
    /// Whether hollow node agents served the nodes.
    #[serde(default)]
    pub hollow: bool,
    pub setup_s: f64,
    /// GPU thousandths the workload asks for, and the cluster has.
    pub gpu_demand_milli: u64,
    /// `Scheduled` events written by the end of the run (the scheduler sheds events when the
    /// API server falls behind, rather than slowing its bindings).
    #[serde(default)]
    pub scheduled_events: Option<usize>,
    /// With `--hollow`: pods the agents had reported Running or Succeeded when the last pod was
    /// bound (the agents start pods after their binding, so the last few may still be Pending).
    #[serde(default)]
    pub pods_started: Option<usize>,
    pub run: PodRunSummary,
}

pub async fn run(opts: &Options, progress: &Progress) -> Result<ThroughputReport, BenchError> {
    let (cluster, _prefix, setup_s) = setup(&opts.cluster, progress).await?;
    let ns = format!("tp-{}", crate::cluster::run_id());
    let shapes = opts.shape_mix.draw(opts.pods, opts.seed);
    let gpu_demand_milli = shapes.iter().map(|s| s.gpu_milli()).sum();
    let pods = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| s.pod(&ns, &format!("p-{i}")))
        .collect();
    // Past this point an error still shuts the cluster (and its hollow nodes) down.
    let result = match cluster.ensure_namespace(&ns).await {
        Ok(()) => run_pods(&cluster.client, &ns, pods, &opts.run, progress).await,
        Err(e) => Err(e),
    };
    let scheduled_events = count_events(&cluster.client, &ns, "Scheduled").await;
    let pods_started = if opts.cluster.hollow {
        count_started(&cluster.client, &ns).await
    } else {
        None
    };
    let in_process = cluster.in_process;
    cluster.shutdown().await;
    let run = result?;
    Ok(ThroughputReport {
        nodes: opts.cluster.nodes,
        pods: opts.pods,
        profile: opts.cluster.profile.clone(),
        shape_mix: opts.shape_mix.text.clone(),
        in_process,
        hollow: opts.cluster.hollow,
        setup_s,
        gpu_demand_milli,
        scheduled_events,
        pods_started,
        run: run.summary(true),
    })
}

/// Events with `reason` in `namespace` (`None` if they cannot be listed). The scheduler's
/// events are best-effort: when the API server falls behind, its recorder sheds them.
async fn count_events(
    client: &drover_client::Client,
    namespace: &str,
    reason: &str,
) -> Option<usize> {
    let list = client
        .namespaced::<drover_api::core::Event>(namespace)
        .list(&drover_client::ListParams::default())
        .await
        .ok()?;
    Some(list.items.iter().filter(|e| e.reason == reason).count())
}

/// Pods in `namespace` that a node agent reported Running or Succeeded (`None` if they cannot
/// be listed).
async fn count_started(client: &drover_client::Client, namespace: &str) -> Option<usize> {
    use drover_api::core::pod_phase::{RUNNING, SUCCEEDED};
    let api = client.namespaced::<drover_api::core::Pod>(namespace);
    super::hollow::count_paged(&api, |p| {
        p.status.phase == RUNNING || p.status.phase == SUCCEEDED
    })
    .await
    .ok()
}

/// The figures of one batch of pods as table rows.
pub fn run_rows(r: &PodRunSummary) -> Vec<(&'static str, String)> {
    let mut rows = vec![
        ("pods created", num(r.created as f64, 0)),
        ("create errors", num(r.create_errors as f64, 0)),
        ("pods bound", num(r.bound as f64, 0)),
        ("pods pending at end", num(r.pending as f64, 0)),
        ("pods bound twice", num(r.bound_twice as f64, 0)),
        (
            "watch resumed (server ended it)",
            num(r.rewatches as f64, 0),
        ),
        ("creates/s", num(r.creates_per_s, 0)),
        ("bound pods/s (average)", num(r.pods_per_s, 0)),
        ("bound pods/s (peak bucket)", num(r.peak_pods_per_s, 0)),
        ("create→bound p50 ms", ms(r.latency.p50_ms)),
        ("create→bound p90 ms", ms(r.latency.p90_ms)),
        ("create→bound p99 ms", ms(r.latency.p99_ms)),
        ("create→bound max ms", ms(r.latency.max_ms)),
    ];
    rows.extend(r.usage.rows());
    rows
}

impl Report for ThroughputReport {
    fn tables(&self) -> Vec<Table> {
        let mut rows = vec![
            (
                "control plane",
                if self.in_process {
                    "in process".to_string()
                } else {
                    "remote (--server)".into()
                },
            ),
            agents_row(self.hollow),
            ("setup s (start + nodes)", num(self.setup_s, 1)),
            (
                "GPU demand (GPUs)",
                num(self.gpu_demand_milli as f64 / 1000.0, 1),
            ),
        ];
        rows.extend(run_rows(&self.run));
        if let Some(n) = self.scheduled_events {
            rows.push(("Scheduled events written (rest shed)", num(n as f64, 0)));
        }
        if let Some(n) = self.pods_started {
            rows.push((
                "pods Running/Succeeded (agent status) at end",
                num(n as f64, 0),
            ));
        }
        if let Some(e) = &self.run.first_error {
            rows.push(("first create error", e.clone()));
        }
        vec![Table::figures(
            format!(
                "throughput: {} nodes × {}, {} pods",
                self.nodes, self.profile, self.pods
            ),
            &rows,
        )]
    }

    fn charts(&self) -> Vec<Chart> {
        vec![
            Chart::new(
                "create→bound latency CDF",
                "latency (ms)",
                "fraction of pods",
            )
            .line("pods", self.run.latency_cdf_ms.clone()),
            Chart::new(
                "bound pods per second",
                "seconds since first create",
                "pods/s",
            )
            .line("bound", self.run.bound_per_s_over_time.clone()),
        ]
    }
}
