//! `drover bench constraints`: the throughput measurement with one constraint per sub-run, in
//! the manner of Kubernetes' scheduler_perf: required node affinity (zones), required pod
//! affinity (same zone as the group), required pod anti-affinity (one pod of a group per node),
//! and topology spread (max skew 1 over zones, DoNotSchedule). Pods are small CPU pods so the
//! constraint, not capacity, is what the scheduler works on. Each sub-run starts its own
//! control plane and nodes (in process), in its own namespace.

use drover_api::core::{Affinity, Pod, PodAffinity, PodAffinityTerm, TopologySpreadConstraint};
use drover_scheduler::testing::selector;
use serde::Serialize;

use super::throughput::run_rows;
use super::{ClusterSpec, agents_row, setup};
use crate::plot::Chart;
use crate::podrun::{PodRunSummary, RunOptions, run_pods};
use crate::report::{Report, Table, num};
use crate::workload::{HOSTNAME_LABEL, Shape, ZONE_LABEL};
use crate::{BenchError, Progress};

/// The sub-runs, in order.
pub const KINDS: &[&str] = &[
    "node-affinity",
    "pod-affinity",
    "pod-anti-affinity",
    "topology-spread",
];

#[derive(Clone, Debug)]
pub struct Options {
    pub cluster: ClusterSpec,
    /// Pods per sub-run.
    pub pods: usize,
    /// Which sub-runs (default: all of [`KINDS`]).
    pub kinds: Vec<String>,
    pub run: RunOptions,
}

impl Options {
    pub fn params(&self) -> Vec<(String, String)> {
        vec![
            ("nodes".into(), self.cluster.nodes.to_string()),
            ("pods".into(), self.pods.to_string()),
            ("profile".into(), self.cluster.profile.clone()),
            (
                "kinds".into(),
                if self.kinds.is_empty() {
                    KINDS.join(",")
                } else {
                    self.kinds.join(",")
                },
            ),
            ("concurrency".into(), self.run.concurrency.to_string()),
            ("rate".into(), self.run.rate.to_string()),
            self.cluster.hollow_param(),
        ]
    }
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct SubRun {
    pub kind: String,
    pub run: PodRunSummary,
    /// Pods whose placement breaks the constraint (checked on the final placements).
    pub violations: usize,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ConstraintsReport {
    pub nodes: usize,
    pub pods_per_run: usize,
    pub in_process: bool,
    /// Whether hollow node agents served the nodes.
    #[serde(default)]
    pub hollow: bool,
    pub setup_s: f64,
    pub runs: Vec<SubRun>,
}

/// The pods of sub-run `kind`. Anti-affinity groups hold at most `nodes` pods each.
pub fn pods(kind: &str, ns: &str, count: usize, nodes: usize) -> Result<Vec<Pod>, BenchError> {
    let zones_allowed = ["zone-0", "zone-1", "zone-2"];
    (0..count)
        .map(|i| {
            let mut p = Shape::Cpu.pod(ns, &format!("p-{i}"));
            let term = |k: &str, v: &str, key: &str| PodAffinityTerm {
                label_selector: Some(selector(k, v)),
                topology_key: key.into(),
                ..Default::default()
            };
            match kind {
                "node-affinity" => {
                    p = drover_scheduler::testing::pod(ns, &p.metadata.name.clone())
                        .cpu("100m")
                        .memory("128Mi")
                        .node_affinity_in(ZONE_LABEL, &zones_allowed)
                        .build();
                    p.metadata.creation_timestamp = None;
                }
                "pod-affinity" => {
                    let g = format!("g{}", i % 10);
                    p.metadata.labels.insert("affinity-group".into(), g.clone());
                    p.spec.affinity = Some(Affinity {
                        pod_affinity: Some(PodAffinity {
                            required_during_scheduling_ignored_during_execution: vec![term(
                                "affinity-group",
                                &g,
                                ZONE_LABEL,
                            )],
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                }
                "pod-anti-affinity" => {
                    let g = format!("g{}", i / nodes.max(1));
                    p.metadata.labels.insert("anti-group".into(), g.clone());
                    p.spec.affinity = Some(Affinity {
                        pod_anti_affinity: Some(PodAffinity {
                            required_during_scheduling_ignored_during_execution: vec![term(
                                "anti-group",
                                &g,
                                HOSTNAME_LABEL,
                            )],
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                }
                "topology-spread" => {
                    p.metadata.labels.insert("spread".into(), "s".into());
                    p.spec
                        .topology_spread_constraints
                        .push(TopologySpreadConstraint {
                            max_skew: 1,
                            topology_key: ZONE_LABEL.into(),
                            when_unsatisfiable: "DoNotSchedule".into(),
                            label_selector: Some(selector("spread", "s")),
                            ..Default::default()
                        });
                }
                other => {
                    return Err(BenchError::Invalid(format!(
                        "constraint kind {other:?}: expected one of {}",
                        KINDS.join(", ")
                    )));
                }
            }
            Ok(p)
        })
        .collect()
}

/// Node index from a bench node name (`<prefix>-<i>`).
fn node_index(name: &str) -> usize {
    name.rsplit('-')
        .next()
        .and_then(|i| i.parse().ok())
        .unwrap_or(0)
}

/// Placements that break sub-run `kind`'s constraint (zones are `i % zones`).
pub fn violations(
    kind: &str,
    pods: &[Pod],
    placed: &std::collections::HashMap<String, (std::time::Instant, String)>,
    zones: usize,
) -> usize {
    let zone = |node: &str| node_index(node) % zones.max(1);
    let mut bad = 0;
    let mut seen = std::collections::HashMap::new();
    let mut per_zone = vec![0i64; zones.max(1)];
    let mut group_zone = std::collections::HashMap::new();
    for p in pods {
        let Some((_, node)) = placed.get(&p.metadata.name) else {
            continue;
        };
        match kind {
            "node-affinity" if zone(node) > 2 => bad += 1,
            "pod-affinity" => {
                let g = p
                    .metadata
                    .labels
                    .get("affinity-group")
                    .cloned()
                    .unwrap_or_default();
                if *group_zone.entry(g).or_insert(zone(node)) != zone(node) {
                    bad += 1;
                }
            }
            "pod-anti-affinity" => {
                let g = p
                    .metadata
                    .labels
                    .get("anti-group")
                    .cloned()
                    .unwrap_or_default();
                if seen.insert((g, node.clone()), ()).is_some() {
                    bad += 1;
                }
            }
            "topology-spread" => per_zone[zone(node)] += 1,
            _ => {}
        }
    }
    if kind == "topology-spread" {
        let (lo, hi) = (
            per_zone.iter().min().copied().unwrap_or(0),
            per_zone.iter().max().copied().unwrap_or(0),
        );
        bad += (hi - lo - 1).max(0) as usize;
    }
    bad
}

pub async fn run(opts: &Options, progress: &Progress) -> Result<ConstraintsReport, BenchError> {
    let kinds: Vec<String> = if opts.kinds.is_empty() {
        KINDS.iter().map(|k| k.to_string()).collect()
    } else {
        opts.kinds.clone()
    };
    // Like scheduler_perf, each sub-run gets a fresh control plane and nodes (in process), so
    // one workload's pods never weigh on the next one's decisions. Against --server they share
    // the cluster, each in its own namespace.
    let mut runs = Vec::new();
    let (mut setup_s, mut in_process) = (0.0, true);
    for kind in &kinds {
        let (cluster, _prefix, s) = setup(&opts.cluster, progress).await?;
        setup_s += s;
        in_process = cluster.in_process;
        let result = sub_run(&cluster, kind, opts, progress).await;
        cluster.shutdown().await;
        let (run, v) = result?;
        progress.println(format!("{kind}: {} pods/s", num(run.pods_per_s, 0)));
        runs.push(SubRun {
            kind: kind.clone(),
            run,
            violations: v,
        });
    }
    Ok(ConstraintsReport {
        nodes: opts.cluster.nodes,
        pods_per_run: opts.pods,
        in_process,
        hollow: opts.cluster.hollow,
        setup_s,
        runs,
    })
}

async fn sub_run(
    cluster: &crate::cluster::Cluster,
    kind: &str,
    opts: &Options,
    progress: &Progress,
) -> Result<(PodRunSummary, usize), BenchError> {
    let ns = format!("c-{kind}-{}", crate::cluster::run_id());
    cluster.ensure_namespace(&ns).await?;
    let pods = pods(kind, &ns, opts.pods, opts.cluster.nodes)?;
    let mut ro = opts.run.clone();
    ro.label = kind.into();
    let run = run_pods(&cluster.client, &ns, pods.clone(), &ro, progress).await?;
    // Only zones that have nodes are domains.
    let zones = opts.cluster.layout.zones.min(opts.cluster.nodes);
    let v = violations(kind, &pods, &run.bound, zones);
    Ok((run.summary(true), v))
}

impl Report for ConstraintsReport {
    fn tables(&self) -> Vec<Table> {
        let mut t = Table::new(
            format!(
                "constraints: {} nodes, {} pods per sub-run",
                self.nodes, self.pods_per_run
            ),
            &[
                "sub-run",
                "bound",
                "pending",
                "pods/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms",
                "violations",
                "bound twice",
            ],
        );
        for r in &self.runs {
            let l = &r.run.latency;
            t.row([
                r.kind.clone(),
                num(r.run.bound as f64, 0),
                num(r.run.pending as f64, 0),
                num(r.run.pods_per_s, 0),
                num(l.p50_ms, 2),
                num(l.p90_ms, 2),
                num(l.p99_ms, 2),
                num(l.max_ms, 2),
                r.violations.to_string(),
                r.run.bound_twice.to_string(),
            ]);
        }
        let mut detail = vec![t];
        if let Some(r) = self.runs.first() {
            let mut rows = vec![agents_row(self.hollow)];
            rows.extend(run_rows(&r.run));
            detail.push(Table::figures("first sub-run in detail", &rows));
        }
        detail
    }

    fn charts(&self) -> Vec<Chart> {
        let mut cdf = Chart::new(
            "create→bound latency CDF",
            "latency (ms)",
            "fraction of pods",
        );
        let mut rate = Chart::new(
            "bound pods per second",
            "seconds since first create",
            "pods/s",
        );
        for r in &self.runs {
            cdf = cdf.line(&r.kind, r.run.latency_cdf_ms.clone());
            rate = rate.line(&r.kind, r.run.bound_per_s_over_time.clone());
        }
        vec![cdf, rate]
    }
}
