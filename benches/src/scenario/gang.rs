//! `drover bench gang`: gangs of `size` pods × `gpus` GPUs with a required topology domain
//! (`--topology-key rack`), submitted one after another against a cluster first loaded with
//! `--running` pods placed by the scheduler.
//!
//! Per gang, from a watch on the gang pods (times are when the harness saw them):
//! - **decision latency**: last member's create ack → first member seen bound. The gang
//!   cannot be decided before its last member exists, and the first binding follows the
//!   decision, so this bounds the decision from above (it includes one binding round trip and
//!   the watch delivery).
//! - **all-bound latency**: last member's create ack → last member seen bound.
//! - **binding burst**: first member bound → last member bound.
//!
//! The partial-allocation check: a gang *held a partial allocation* when, at any moment of the
//! run, some but not all of its members were bound for longer than the burst allowance
//! (`--burst-allowance-ms`, default 1000): that is, its binding burst exceeded the allowance,
//! or it ended the run with 0 < bound < size. Members of one gang bound to nodes of different
//! domains count as topology violations (checked for the rack label the harness sets).

use std::time::{Duration, Instant};

use drover_api::core::Pod;
use drover_api::scheduling::{GangTopology, POD_GROUP_LABEL, PodGroup, topology_mode};
use drover_client::Api;
use futures::StreamExt;
use serde::Serialize;

use super::throughput::run_rows;
use super::{ClusterSpec, agents_row, ms, setup};
use crate::plot::Chart;
use crate::podrun::{PodRunSummary, RunOptions, run_pods, watch_bindings};
use crate::report::{Report, Table, num};
use crate::stats::{self, Latency};
use crate::workload::{RACK_LABEL, Shape, ShapeMix};
use crate::{BenchError, Progress};

pub const DEFAULT_RUNNING_MIX: &str = "cpu:70,gpu1:20,gpu2:10";
pub const DEFAULT_BURST_ALLOWANCE: Duration = Duration::from_millis(1000);

#[derive(Clone, Debug)]
pub struct Options {
    pub cluster: ClusterSpec,
    pub running: usize,
    pub running_mix: ShapeMix,
    pub gangs: usize,
    pub gang_size: usize,
    pub gpus_per_pod: u32,
    /// `rack` (the harness's rack label) or any node label key; empty: no topology rule.
    pub topology_key: String,
    pub burst_allowance: Duration,
    pub run: RunOptions,
}

impl Options {
    pub fn params(&self) -> Vec<(String, String)> {
        vec![
            ("nodes".into(), self.cluster.nodes.to_string()),
            ("profile".into(), self.cluster.profile.clone()),
            (
                "rack-size".into(),
                self.cluster.layout.rack_size.to_string(),
            ),
            ("running".into(), self.running.to_string()),
            ("running-mix".into(), self.running_mix.text.clone()),
            ("gangs".into(), self.gangs.to_string()),
            ("gang-size".into(), self.gang_size.to_string()),
            ("gpus-per-pod".into(), self.gpus_per_pod.to_string()),
            ("topology-key".into(), self.topology_key.clone()),
            (
                "burst-allowance-ms".into(),
                self.burst_allowance.as_millis().to_string(),
            ),
            self.cluster.hollow_param(),
        ]
    }

    fn label_key(&self) -> String {
        if self.topology_key == "rack" {
            RACK_LABEL.into()
        } else {
            self.topology_key.clone()
        }
    }
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct GangResult {
    pub name: String,
    pub bound: usize,
    pub decision_ms: Option<f64>,
    pub all_bound_ms: Option<f64>,
    pub burst_ms: Option<f64>,
    pub held_partial: bool,
    pub domains: usize,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct GangReport {
    pub nodes: usize,
    pub in_process: bool,
    /// Whether hollow node agents served the nodes.
    #[serde(default)]
    pub hollow: bool,
    pub setup_s: f64,
    pub load: PodRunSummary,
    pub gang_size: usize,
    pub gpus_per_pod: u32,
    pub topology_key: String,
    pub burst_allowance_ms: f64,
    pub gangs: Vec<GangResult>,
    pub gangs_placed: usize,
    pub decision: Latency,
    pub all_bound: Latency,
    pub max_burst_ms: f64,
    pub gangs_held_partial: usize,
    pub topology_violations: usize,
    pub pods_bound_twice: usize,
}

fn node_index(name: &str) -> usize {
    name.rsplit('-')
        .next()
        .and_then(|i| i.parse().ok())
        .unwrap_or(0)
}

pub async fn run(opts: &Options, progress: &Progress) -> Result<GangReport, BenchError> {
    if opts.gang_size == 0 || opts.gpus_per_pod == 0 || opts.gpus_per_pod > 8 {
        return Err(BenchError::Invalid(
            "gang size must be ≥ 1 and GPUs per pod 1..=8".into(),
        ));
    }
    let (cluster, _prefix, setup_s) = setup(&opts.cluster, progress).await?;
    let result = run_on(&cluster, opts, progress).await;
    let in_process = cluster.in_process;
    cluster.shutdown().await;
    let (load, gangs, twice) = result?;
    let placed: Vec<&GangResult> = gangs.iter().filter(|g| g.bound == opts.gang_size).collect();
    let decision = Latency::from_ms(placed.iter().filter_map(|g| g.decision_ms).collect());
    let all_bound = Latency::from_ms(placed.iter().filter_map(|g| g.all_bound_ms).collect());
    Ok(GangReport {
        nodes: opts.cluster.nodes,
        in_process,
        hollow: opts.cluster.hollow,
        setup_s,
        load,
        gang_size: opts.gang_size,
        gpus_per_pod: opts.gpus_per_pod,
        topology_key: opts.topology_key.clone(),
        burst_allowance_ms: opts.burst_allowance.as_secs_f64() * 1000.0,
        gangs_placed: placed.len(),
        decision,
        all_bound,
        max_burst_ms: gangs.iter().filter_map(|g| g.burst_ms).fold(0.0, f64::max),
        gangs_held_partial: gangs.iter().filter(|g| g.held_partial).count(),
        topology_violations: gangs.iter().filter(|g| g.domains > 1).count(),
        pods_bound_twice: twice,
        gangs,
    })
}

async fn run_on(
    cluster: &crate::cluster::Cluster,
    opts: &Options,
    progress: &Progress,
) -> Result<(PodRunSummary, Vec<GangResult>, usize), BenchError> {
    let id = crate::cluster::run_id();
    let load_ns = format!("load-{id}");
    cluster.ensure_namespace(&load_ns).await?;
    let load_pods = opts
        .running_mix
        .draw(opts.running, 1)
        .iter()
        .enumerate()
        .map(|(i, s)| s.pod(&load_ns, &format!("r-{i}")))
        .collect();
    let mut ro = opts.run.clone();
    ro.label = "load".into();
    let load = run_pods(&cluster.client, &load_ns, load_pods, &ro, progress)
        .await?
        .summary(false);

    let ns = format!("gang-{id}");
    cluster.ensure_namespace(&ns).await?;
    let (seen, watcher) = watch_bindings(&cluster.client, &ns).await?;
    let groups: Api<PodGroup> = cluster.client.namespaced(&ns);
    let pods_api: Api<Pod> = cluster.client.namespaced(&ns);
    let label_key = opts.label_key();
    let mut results = Vec::new();
    progress.phase("gangs", opts.gangs as u64);
    for g in 0..opts.gangs {
        let name = format!("g-{g}");
        let mut pg = PodGroup::new(&ns, &name, opts.gang_size as i32);
        if !opts.topology_key.is_empty() {
            pg.spec.topology = Some(GangTopology {
                key: label_key.clone(),
                mode: topology_mode::REQUIRED.into(),
            });
        }
        groups.create(&pg).await?;
        let members: Vec<Pod> = (0..opts.gang_size)
            .map(|i| {
                let mut p = Shape::Gpu(opts.gpus_per_pod).pod(&ns, &format!("{name}-{i}"));
                p.metadata
                    .labels
                    .insert(POD_GROUP_LABEL.into(), name.clone());
                p
            })
            .collect();
        let acks: Vec<Result<Instant, drover_client::ClientError>> =
            futures::stream::iter(members.iter())
                .map(|p| {
                    let api = pods_api.clone();
                    async move { api.create(p).await.map(|_| Instant::now()) }
                })
                .buffer_unordered(opts.run.concurrency.max(1))
                .collect()
                .await;
        let mut last_ack = None::<Instant>;
        for a in acks {
            let a = a?;
            last_ack = Some(last_ack.map_or(a, |l| l.max(a)));
        }
        let last_ack = last_ack.unwrap_or_else(Instant::now);
        // Wait for the whole gang, or until nothing moves for the idle timeout.
        let mut last_change = (0usize, Instant::now());
        let times = loop {
            let times: Vec<(Instant, String)> = seen
                .lock()
                .map(|s| {
                    members
                        .iter()
                        .filter_map(|m| s.bound.get(&m.metadata.name).cloned())
                        .collect()
                })
                .unwrap_or_default();
            if times.len() == members.len() {
                break times;
            }
            if times.len() != last_change.0 {
                last_change = (times.len(), Instant::now());
            } else if last_change.1.elapsed() >= opts.run.idle_timeout {
                progress.println(format!(
                    "gang {name}: {}/{} bound after {:?} without progress",
                    times.len(),
                    members.len(),
                    opts.run.idle_timeout
                ));
                break times;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let first = times.iter().map(|t| t.0).min();
        let last = times.iter().map(|t| t.0).max();
        let since = |t: Instant| t.saturating_duration_since(last_ack).as_secs_f64() * 1000.0;
        let burst = first.zip(last).map(|(f, l)| l.duration_since(f));
        let complete = times.len() == members.len();
        let domains: std::collections::HashSet<usize> = times
            .iter()
            .map(|t| node_index(&t.1) / opts.cluster.layout.rack_size.max(1))
            .collect();
        results.push(GangResult {
            name: name.clone(),
            bound: times.len(),
            decision_ms: first.map(since),
            all_bound_ms: if complete { last.map(since) } else { None },
            burst_ms: burst.map(|b| b.as_secs_f64() * 1000.0),
            held_partial: (!times.is_empty() && !complete)
                || burst.is_some_and(|b| b > opts.burst_allowance),
            domains: if label_key == RACK_LABEL {
                domains.len()
            } else {
                1
            },
        });
        progress.inc(1);
        if !complete {
            break;
        }
    }
    progress.finish();
    watcher.abort();
    let twice = seen.lock().map(|s| s.twice).unwrap_or(0);
    Ok((load, results, twice))
}

impl Report for GangReport {
    fn tables(&self) -> Vec<Table> {
        let rows = vec![
            (
                "control plane",
                if self.in_process {
                    "in process".to_string()
                } else {
                    "remote (--server)".into()
                },
            ),
            agents_row(self.hollow),
            (
                "gang",
                format!(
                    "{} pods × {} GPUs, topology {:?}",
                    self.gang_size, self.gpus_per_pod, self.topology_key
                ),
            ),
            (
                "gangs placed / tried",
                format!("{} / {}", self.gangs_placed, self.gangs.len()),
            ),
            ("decision p50 ms", ms(self.decision.p50_ms)),
            ("decision p99 ms", ms(self.decision.p99_ms)),
            ("decision max ms", ms(self.decision.max_ms)),
            ("all-bound p50 ms", ms(self.all_bound.p50_ms)),
            ("all-bound p99 ms", ms(self.all_bound.p99_ms)),
            ("max binding burst ms", ms(self.max_burst_ms)),
            (
                "gangs that held a partial allocation",
                self.gangs_held_partial.to_string(),
            ),
            (
                "gangs split over domains",
                self.topology_violations.to_string(),
            ),
            ("pods bound twice", self.pods_bound_twice.to_string()),
        ];
        let mut load = run_rows(&self.load);
        load.truncate(8);
        vec![
            Table::figures(
                format!(
                    "gang: {} nodes, burst allowance {} ms",
                    self.nodes,
                    num(self.burst_allowance_ms, 0)
                ),
                &rows,
            ),
            Table::figures("load placed first", &load),
        ]
    }

    fn charts(&self) -> Vec<Chart> {
        let ms_of = |f: fn(&GangResult) -> Option<f64>| -> Vec<Duration> {
            self.gangs
                .iter()
                .filter_map(f)
                .map(|v| Duration::from_secs_f64(v / 1000.0))
                .collect()
        };
        vec![
            Chart::new("gang latency CDF", "latency (ms)", "fraction of gangs")
                .line("decision", stats::cdf(&ms_of(|g| g.decision_ms), 200))
                .line("all bound", stats::cdf(&ms_of(|g| g.all_bound_ms), 200)),
        ]
    }
}
