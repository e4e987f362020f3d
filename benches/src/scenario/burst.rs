//! `drover bench burst`: a burst of Jobs released at once on a cluster of real agents, timed
//! until every pod is **Running** — its process started and reported by its agent, not merely
//! bound. Run it against a cluster you started (`drover up --simulate-nodes 1000`), with
//! `--server`; in process it starts only an API server, scheduler and controllers, with no agent
//! to run the pods, and refuses.
//!
//! The jobs (the issue's mix, by seeded draw): 40% one GPU, 25% two, 15% four, 10% eight, 10%
//! gangs of 2, 4 or 8 pods of eight GPUs (whole nodes). They are created suspended
//! (`spec.suspend: true`), so nothing of them exists but the Job; then every Job is released
//! (`suspend: false`) as fast as the harness can patch them. Time zero is the first release.
//! Per job: time zero → the last of its pods seen Running (a watch on the jobs' pods). The
//! figures: when the first and the last job were all Running, and the per-job percentiles.
//! The Jobs are deleted at the end (their pods with them).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use drover_api::batch::Job;
use drover_api::core::{Pod, pod_phase};
use drover_client::{Api, DeleteParams, ListParams, WatchEvent};
use futures::StreamExt;
use serde::Serialize;

use crate::cluster::{Cluster, ClusterOptions, run_id};
use crate::plot::Chart;
use crate::report::{Report, Table, num};
use crate::stats::Latency;
use crate::{BenchError, Progress};

/// The label every pod of one run carries (from the Jobs' templates).
pub const RUN_LABEL: &str = "drover.dev/bench-burst";
/// Jobs created or released at once.
const CONCURRENCY: usize = 64;

#[derive(Clone, Debug)]
pub struct Options {
    pub cluster: ClusterOptions,
    pub jobs: usize,
    pub seed: u64,
    pub namespace: String,
    /// How long each pod's process sleeps.
    pub sleep: Duration,
    /// How long to wait for every pod to run.
    pub timeout: Duration,
}

impl Options {
    pub fn params(&self) -> Vec<(String, String)> {
        vec![
            ("jobs".into(), self.jobs.to_string()),
            ("seed".into(), self.seed.to_string()),
            ("namespace".into(), self.namespace.clone()),
            ("sleep-s".into(), self.sleep.as_secs().to_string()),
            ("timeout-s".into(), self.timeout.as_secs().to_string()),
        ]
    }
}

/// One job of the burst: its pods and the GPUs of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub pods: u32,
    pub gpus: u32,
    pub gang: bool,
}

/// The issue's mix for `jobs` jobs, drawn with `seed` (a small xorshift: the same seed gives the
/// same burst everywhere).
pub fn mix(jobs: usize, seed: u64) -> Vec<Shape> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % 100
    };
    (0..jobs)
        .map(|_| match next() {
            0..40 => Shape {
                pods: 1,
                gpus: 1,
                gang: false,
            },
            40..65 => Shape {
                pods: 1,
                gpus: 2,
                gang: false,
            },
            65..80 => Shape {
                pods: 1,
                gpus: 4,
                gang: false,
            },
            80..90 => Shape {
                pods: 1,
                gpus: 8,
                gang: false,
            },
            r => Shape {
                pods: [2, 4, 8][(r % 3) as usize],
                gpus: 8,
                gang: true,
            },
        })
        .collect()
}

fn job(name: &str, run: &str, shape: Shape, sleep: Duration) -> Result<Job, BenchError> {
    let mut spec = serde_json::json!({
        "parallelism": shape.pods,
        "completions": shape.pods,
        "suspend": true,
        "backoffLimit": 0,
        "template": {
            "metadata": {"labels": {RUN_LABEL: run}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "main",
                    "image": "busybox",
                    "command": ["sleep", sleep.as_secs().to_string()],
                    "resources": {"limits": {"nvidia.com/gpu": shape.gpus}},
                }],
            },
        },
    });
    if shape.gang {
        spec["gang"] = serde_json::json!({});
    }
    let value = serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": spec,
    });
    serde_json::from_value(value).map_err(|e| BenchError::Invalid(format!("job {name}: {e}")))
}

#[derive(Clone, Debug, Serialize)]
pub struct BurstReport {
    pub jobs: usize,
    pub pods: usize,
    pub gpus: u64,
    /// Time zero → every release patch answered.
    pub release_ms: f64,
    /// Time zero → the first job with all its pods Running.
    pub first_job_running_ms: f64,
    /// Time zero → the last job with all its pods Running (every pod Running).
    pub all_running_ms: Option<f64>,
    pub jobs_running: usize,
    pub pods_running: usize,
    /// Per job: time zero → all its pods Running.
    pub job_latency: Latency,
    pub gang_latency: Latency,
}

impl Report for BurstReport {
    fn tables(&self) -> Vec<Table> {
        let all = self
            .all_running_ms
            .map_or_else(|| "not reached".to_string(), |ms| num(ms, 0));
        vec![
            Table::figures(
                "burst: jobs released at once, until every pod runs",
                &[
                    ("jobs", self.jobs.to_string()),
                    ("pods", self.pods.to_string()),
                    ("GPUs asked for", self.gpus.to_string()),
                    ("release (all patches answered) ms", num(self.release_ms, 0)),
                    (
                        "first job all Running ms",
                        num(self.first_job_running_ms, 0),
                    ),
                    ("every pod Running ms", all),
                    ("jobs all Running", self.jobs_running.to_string()),
                    ("pods Running", self.pods_running.to_string()),
                ],
            ),
            latency_table("per job: release → all its pods Running", &self.job_latency),
            latency_table("gang jobs only", &self.gang_latency),
        ]
    }

    fn charts(&self) -> Vec<Chart> {
        Vec::new()
    }
}

fn latency_table(title: &str, l: &Latency) -> Table {
    let mut t = Table::new(title, &["jobs", "p50 ms", "p90 ms", "p99 ms", "max ms"]);
    t.row([
        l.count.to_string(),
        num(l.p50_ms, 0),
        num(l.p90_ms, 0),
        num(l.p99_ms, 0),
        num(l.max_ms, 0),
    ]);
    t
}

pub async fn run(opts: &Options, progress: &Progress) -> Result<BurstReport, BenchError> {
    if opts.cluster.server.is_none() {
        return Err(BenchError::Invalid(
            "burst needs node agents to run its pods: start a cluster (drover up \
             --simulate-nodes 1000) and pass --server"
                .into(),
        ));
    }
    let cluster = Cluster::start(&opts.cluster).await?;
    let run = format!("burst-{}", run_id());
    let shapes = mix(opts.jobs, opts.seed);
    let jobs: Api<Job> = cluster.client.namespaced(&opts.namespace);
    let pods: Api<Pod> = cluster.client.namespaced(&opts.namespace);
    let names: Vec<String> = (0..shapes.len()).map(|i| format!("{run}-{i}")).collect();

    progress.phase("create suspended jobs", shapes.len() as u64);
    let mut bodies = Vec::with_capacity(shapes.len());
    for (name, shape) in names.iter().zip(&shapes) {
        bodies.push(job(name, &run, *shape, opts.sleep)?);
    }
    let created = futures::stream::iter(bodies.iter().map(|j| jobs.create_ack(j)))
        .buffer_unordered(CONCURRENCY)
        .inspect(|_| progress.inc(1))
        .collect::<Vec<_>>()
        .await;
    created.into_iter().collect::<Result<Vec<()>, _>>()?;

    // Running pods by job, from a watch opened before the release.
    let want: HashMap<String, (u32, bool)> = names
        .iter()
        .zip(&shapes)
        .map(|(n, s)| (n.clone(), (s.pods, s.gang)))
        .collect();
    let params = ListParams::default().labels(format!("{RUN_LABEL}={run}"));
    let mut stream = Box::pin(pods.watch(&params, "").await?);

    progress.phase("release", shapes.len() as u64);
    let zero = Instant::now();
    let release = serde_json::json!({"spec": {"suspend": false}});
    let released = futures::stream::iter(names.iter().map(|n| jobs.patch(n, &release)))
        .buffer_unordered(CONCURRENCY)
        .inspect(|_| progress.inc(1))
        .collect::<Vec<_>>()
        .await;
    let release_ms = zero.elapsed().as_secs_f64() * 1000.0;
    released.into_iter().collect::<Result<Vec<Job>, _>>()?;

    let total_pods: usize = shapes.iter().map(|s| s.pods as usize).sum();
    progress.phase("pods running", total_pods as u64);
    let mut running: HashMap<String, HashSet<String>> = HashMap::new();
    let mut done: HashMap<String, Duration> = HashMap::new();
    let deadline = tokio::time::Instant::now() + opts.timeout;
    while done.len() < want.len() {
        let next = tokio::time::timeout_at(deadline, stream.next()).await;
        let event = match next {
            Err(_) => break,
            Ok(None) => {
                // The server ended the watch: resume from now (a pod seen before stays seen).
                stream = Box::pin(pods.watch(&params, "").await?);
                continue;
            }
            Ok(Some(e)) => e?,
        };
        let (WatchEvent::Added(p) | WatchEvent::Modified(p)) = event else {
            continue;
        };
        if p.status.phase != pod_phase::RUNNING {
            continue;
        }
        let Some(job) = p.metadata.labels.get("batch.kubernetes.io/job-name") else {
            continue;
        };
        let Some((pods_wanted, _)) = want.get(job) else {
            continue;
        };
        let set = running.entry(job.clone()).or_default();
        if set.insert(p.metadata.uid.clone()) {
            progress.inc(1);
        }
        if set.len() >= *pods_wanted as usize && !done.contains_key(job) {
            done.insert(job.clone(), zero.elapsed());
        }
    }
    progress.finish();
    let all_running_ms = (done.len() == want.len())
        .then(|| done.values().max().map(|d| d.as_secs_f64() * 1000.0))
        .flatten();
    let latencies: Vec<Duration> = done.values().copied().collect();
    let gangs: Vec<Duration> = done
        .iter()
        .filter(|(j, _)| want.get(*j).is_some_and(|(_, gang)| *gang))
        .map(|(_, d)| *d)
        .collect();
    let report = BurstReport {
        jobs: shapes.len(),
        pods: total_pods,
        gpus: shapes.iter().map(|s| u64::from(s.pods * s.gpus)).sum(),
        release_ms,
        first_job_running_ms: latencies
            .iter()
            .min()
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        all_running_ms,
        jobs_running: done.len(),
        pods_running: running.values().map(HashSet::len).sum(),
        job_latency: Latency::from_durations(&latencies),
        gang_latency: Latency::from_durations(&gangs),
    };

    // Clean up: the Jobs, and their pods with them (background propagation).
    let delete = DeleteParams {
        propagation_policy: Some("Background".into()),
        ..Default::default()
    };
    let jobs = Arc::new(jobs);
    let _ = futures::stream::iter(names.iter().map(|n| {
        let (jobs, delete) = (jobs.clone(), delete.clone());
        async move { jobs.delete(n, &delete).await }
    }))
    .buffer_unordered(CONCURRENCY)
    .collect::<Vec<_>>()
    .await;
    cluster.shutdown().await;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The draw follows the issue's mix (within a few points on 10,000 jobs) and repeats per seed.
    #[test]
    fn the_mix_is_the_issues() {
        let shapes = mix(10_000, 7);
        assert_eq!(shapes, mix(10_000, 7));
        let share = |f: &dyn Fn(&Shape) -> bool| {
            shapes.iter().filter(|s| f(s)).count() as f64 / shapes.len() as f64 * 100.0
        };
        // (what, share wanted in %, which jobs it counts)
        type Case<'a> = (&'a str, f64, &'a dyn Fn(&Shape) -> bool);
        let cases: [Case; 5] = [
            ("1 GPU", 40.0, &|s| !s.gang && s.gpus == 1),
            ("2 GPUs", 25.0, &|s| !s.gang && s.gpus == 2),
            ("4 GPUs", 15.0, &|s| !s.gang && s.gpus == 4),
            ("8 GPUs", 10.0, &|s| !s.gang && s.gpus == 8),
            ("gangs", 10.0, &|s| {
                s.gang && s.gpus == 8 && [2, 4, 8].contains(&s.pods)
            }),
        ];
        for (what, want, f) in cases {
            let got = share(f);
            assert!((got - want).abs() < 2.0, "{what}: {got:.1}% (want {want}%)");
        }
    }
}
