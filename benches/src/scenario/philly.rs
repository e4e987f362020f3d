//! `drover bench philly`: replay of the Microsoft Philly jobs (`philly_jobs_normalized.csv`:
//! `job_idx, submit_s, duration_s, num_gpus, vc`) on 8-GPU nodes (as many as the virtual
//! clusters of `philly_vc_nodes_from_HeliosArtifact.csv` hold, pooled), with times divided by
//! `--time-compression`.
//!
//! It runs on the scheduler's in-memory [`Simulator`] with a virtual clock — the same decision
//! code (filters, scores, gang planning) without the API server — because months of trace
//! cannot be replayed in wall time on this machine. A job of ≤ 8 GPUs is one pod; a larger one
//! is a gang of 8-GPU pods (the last takes the remainder), placed all or nothing.
//!
//! Two queueing policies over the same jobs:
//! - `drover`: what the scheduler service does — the queue in priority order (the trace has
//!   none, so submit order) and every unit that fits is placed (gang-aware backfill: a gang is
//!   placed whole or skipped, and smaller work behind it goes ahead).
//! - `fifo`: a strict FIFO admission gate in the harness (the scheduler has no FIFO mode):
//!   only the head of the queue may be placed; while it does not fit, nothing behind it runs.
//!
//! [`super::philly_live`] replays the same jobs through the real control plane on hollow nodes
//! (`--live`), sharing the parsing, the job split ([`job_pods`]) and the figures
//! ([`policy_result`]) with this file.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::path::PathBuf;
use std::time::Instant;

use drover_api::core::Pod;
use drover_api::scheduling::PodGroup;
use drover_scheduler::Simulator;
use drover_scheduler::testing::GpuProfile;
use serde::Serialize;

use crate::plot::Chart;
use crate::report::{Report, Table, num};
use crate::stats::{self, Summary};
use crate::workload::{Layout, Shape, bench_node};
use crate::{BenchError, Progress};

/// Relative to the data directory ([`crate::openb::data_dir`]).
pub const DEFAULT_JOBS: &str = "philly/philly_jobs_normalized.csv";
pub const DEFAULT_NODES: &str = "philly/philly_vc_nodes_from_HeliosArtifact.csv";
pub const POLICIES: &[&str] = &["drover", "fifo"];
/// [`PhillyReport::time_unit`] of the simulator: the replay's own (compressed) seconds.
pub const COMPRESSED: &str = "compressed seconds";

#[derive(Clone, Debug)]
pub struct Options {
    pub jobs_csv: PathBuf,
    pub nodes_csv: PathBuf,
    /// Override the node count from the VC file.
    pub nodes: Option<usize>,
    pub time_compression: f64,
    pub max_jobs: Option<usize>,
    pub policies: Vec<String>,
}

impl Options {
    pub fn params(&self) -> Vec<(String, String)> {
        let mut p = vec![
            ("jobs-csv".into(), self.jobs_csv.display().to_string()),
            ("nodes-csv".into(), self.nodes_csv.display().to_string()),
            ("time-compression".into(), self.time_compression.to_string()),
            ("policies".into(), self.policies.join(",")),
        ];
        if let Some(n) = self.max_jobs {
            p.push(("max-jobs".into(), n.to_string()));
        }
        if let Some(n) = self.nodes {
            p.push(("nodes".into(), n.to_string()));
        }
        p
    }
}

/// One trace job.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub idx: usize,
    pub submit_s: f64,
    pub duration_s: f64,
    pub gpus: u32,
}

impl Job {
    /// GPUs of each pod: 8s, then the remainder.
    pub fn pod_gpus(&self) -> Vec<u32> {
        let g = self.gpus.max(1);
        let mut v = vec![8; (g / 8) as usize];
        if !g.is_multiple_of(8) {
            v.push(g % 8);
        }
        v
    }
}

fn read(path: &PathBuf) -> Result<String, BenchError> {
    std::fs::read_to_string(path).map_err(|e| BenchError::Data {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Parses the jobs file (header first), sorted by submit time.
pub fn parse_jobs(text: &str, path: &str) -> Result<Vec<Job>, BenchError> {
    let mut jobs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .skip(1)
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let bad = |what: &str| BenchError::Data {
            path: path.into(),
            message: format!("line {}: {what}", n + 1),
        };
        if f.len() < 4 {
            return Err(bad("expected job_idx,submit_s,duration_s,num_gpus,vc"));
        }
        let idx = f[0].parse().map_err(|_| bad("job_idx"))?;
        // A job's pods are named after its index: two jobs with one index would collide.
        if !seen.insert(idx) {
            return Err(bad(&format!(
                "job_idx {idx} appears twice: expected unique job_idx"
            )));
        }
        jobs.push(Job {
            idx,
            submit_s: f[1].parse().map_err(|_| bad("submit_s"))?,
            duration_s: f[2].parse().map_err(|_| bad("duration_s"))?,
            gpus: f[3].parse().map_err(|_| bad("num_gpus"))?,
        });
    }
    jobs.sort_by(|a, b| a.submit_s.total_cmp(&b.submit_s).then(a.idx.cmp(&b.idx)));
    Ok(jobs)
}

/// Sums the `node num` column of the VC file.
pub fn parse_node_count(text: &str, path: &str) -> Result<usize, BenchError> {
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split(',')
                .nth(1)
                .and_then(|n| n.trim().parse::<usize>().ok())
                .ok_or_else(|| BenchError::Data {
                    path: path.into(),
                    message: format!("bad line {l:?}: expected vc,node num"),
                })
        })
        .sum()
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct PolicyResult {
    pub policy: String,
    pub jobs_done: usize,
    pub jobs_unplaceable: usize,
    /// Jobs that were submitted but had not completed when the replay ended (live mode only:
    /// the simulator runs every placeable job to its end).
    #[serde(default)]
    pub jobs_not_done: usize,
    /// Job completion time (submit → finish) of the completed jobs, in the report's time unit.
    pub jct_s: Summary,
    /// Queueing delay (submit → start) of the completed jobs, in the report's time unit.
    pub queueing_s: Summary,
    pub makespan_s: f64,
    /// Time-weighted mean GPU allocation from the first submit to the last finish.
    pub gpu_utilisation: f64,
    pub decisions: usize,
    pub decision_us_mean: f64,
    pub wall_s: f64,
    pub utilisation_over_time: Vec<(f64, f64)>,
    /// (JCT seconds, fraction of jobs at or below).
    pub jct_cdf_s: Vec<(f64, f64)>,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct PhillyReport {
    pub mode: String,
    pub nodes: usize,
    pub gpus: usize,
    pub jobs: usize,
    pub time_compression: f64,
    /// What the times are in: [`COMPRESSED`] seconds, or trace seconds (live mode).
    #[serde(default)]
    pub time_unit: String,
    pub results: Vec<PolicyResult>,
}

/// The jobs of `opts` (the first `max_jobs`, times divided by the compression) and the node
/// count, after checking the options.
pub fn load(opts: &Options) -> Result<(Vec<Job>, usize), BenchError> {
    if let Some(p) = opts
        .policies
        .iter()
        .find(|p| !POLICIES.contains(&p.as_str()))
    {
        return Err(BenchError::Invalid(format!(
            "policy {p:?}: expected one of {}",
            POLICIES.join(", ")
        )));
    }
    let mut jobs = parse_jobs(&read(&opts.jobs_csv)?, &opts.jobs_csv.display().to_string())?;
    if let Some(n) = opts.max_jobs {
        jobs.truncate(n);
    }
    let nodes = match opts.nodes {
        Some(n) => n,
        None => parse_node_count(
            &read(&opts.nodes_csv)?,
            &opts.nodes_csv.display().to_string(),
        )?,
    };
    if opts.time_compression.is_nan() || opts.time_compression <= 0.0 {
        return Err(BenchError::Invalid("--time-compression must be > 0".into()));
    }
    let f = opts.time_compression;
    for j in &mut jobs {
        j.submit_s /= f;
        j.duration_s /= f;
    }
    Ok((jobs, nodes))
}

pub fn run(opts: &Options, progress: &Progress) -> Result<PhillyReport, BenchError> {
    let (jobs, nodes) = load(opts)?;
    let results = opts
        .policies
        .iter()
        .map(|p| replay(&jobs, nodes, p == "fifo", p, progress))
        .collect();
    Ok(PhillyReport {
        mode: "simulator, virtual clock".into(),
        nodes,
        gpus: nodes * 8,
        jobs: jobs.len(),
        time_compression: opts.time_compression,
        time_unit: COMPRESSED.into(),
        results,
    })
}

/// A job's start (all its pods placed) and end (all finished).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Run {
    pub start: f64,
    pub end: f64,
}

/// Replays `jobs` (times already compressed) on `nodes` 8-GPU nodes.
pub fn replay(
    jobs: &[Job],
    nodes: usize,
    fifo: bool,
    policy: &str,
    progress: &Progress,
) -> PolicyResult {
    let wall = Instant::now();
    let layout = Layout::default();
    let mut sim = Simulator::new(
        (0..nodes).map(|i| bench_node("philly", i, Some(GpuProfile::H100x8), &layout)),
    );
    let total_gpus = (nodes * 8) as u32;
    progress.phase(policy, jobs.len() as u64);
    let mut runs: Vec<Option<Run>> = vec![None; jobs.len()];
    let mut unplaceable = 0usize;
    let mut pending: VecDeque<usize> = VecDeque::new();
    // (end time in µs, job): a min-heap of completions.
    let mut ends: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut next = 0usize;
    let mut used: u32 = 0;
    let mut usage: Vec<(f64, u32)> = Vec::new();
    let (mut decisions, mut decision_time) = (0usize, 0f64);
    loop {
        let t_arr = jobs.get(next).map(|j| j.submit_s);
        let t_end = ends.peek().map(|Reverse((t, _))| *t as f64 / 1e6);
        let t = match (t_arr, t_end) {
            (None, None) => break,
            (Some(a), None) => a,
            (None, Some(e)) => e,
            (Some(a), Some(e)) => a.min(e),
        };
        while let Some(Reverse((te, j))) = ends.peek().copied() {
            if te as f64 / 1e6 > t {
                break;
            }
            ends.pop();
            for k in 0..jobs[j].pod_gpus().len() {
                sim.remove("philly", &format!("j{}-{k}", jobs[j].idx));
            }
            used -= jobs[j].gpus.max(1);
            progress.inc(1);
        }
        while jobs.get(next).is_some_and(|j| j.submit_s <= t) {
            if jobs[next].gpus.max(1) > total_gpus {
                unplaceable += 1;
                progress.inc(1);
            } else {
                pending.push_back(next);
            }
            next += 1;
        }
        // One pass over the queue. Free capacity only shrinks during a pass, so a job at least
        // as large (same kind) as one that did not fit is skipped.
        let (mut min_failed_single, mut min_failed_gang) = (u32::MAX, u32::MAX);
        let mut i = 0;
        while i < pending.len() {
            let j = &jobs[pending[i]];
            let g = j.gpus.max(1);
            let gang = g > 8;
            let skip = if gang {
                g >= min_failed_gang
            } else {
                g >= min_failed_single
            };
            let placed = !skip && {
                let d = Instant::now();
                let ok = place(&mut sim, j);
                decision_time += d.elapsed().as_secs_f64();
                decisions += 1;
                ok
            };
            if placed {
                runs[pending[i]] = Some(Run {
                    start: t,
                    end: t + j.duration_s,
                });
                ends.push(Reverse((((t + j.duration_s) * 1e6) as u64, pending[i])));
                used += g;
                pending.remove(i);
                continue;
            }
            if gang {
                min_failed_gang = min_failed_gang.min(g);
            } else {
                min_failed_single = min_failed_single.min(g);
            }
            // Nothing fits when not even one GPU is free.
            if fifo || min_failed_single == 1 {
                break;
            }
            i += 1;
        }
        if usage.last().is_none_or(|p| p.1 != used) {
            usage.push((t, used));
        }
    }
    progress.finish();
    PolicyResult {
        jobs_unplaceable: unplaceable,
        decisions,
        decision_us_mean: decision_time * 1e6 / decisions.max(1) as f64,
        wall_s: wall.elapsed().as_secs_f64(),
        ..policy_result(policy, jobs, &runs, &usage, total_gpus, 1.0)
    }
}

/// The figures of one replay: `runs[i]` is job `i`'s run if it completed, `usage` the GPUs in
/// use from each time on (ascending times), all in the jobs' (compressed) seconds; reported
/// times are multiplied by `scale`. The counts the caller knows best (unplaceable, decisions,
/// wall time) are left at zero.
pub fn policy_result(
    policy: &str,
    jobs: &[Job],
    runs: &[Option<Run>],
    usage: &[(f64, u32)],
    total_gpus: u32,
    scale: f64,
) -> PolicyResult {
    let first = jobs.first().map_or(0.0, |j| j.submit_s);
    let done: Vec<(&Job, Run)> = jobs
        .iter()
        .zip(runs)
        .filter_map(|(j, r)| r.map(|r| (j, r)))
        .collect();
    let end = done.iter().map(|(_, r)| r.end).fold(first, f64::max);
    let makespan = end - first;
    // GPU-seconds in use up to the last completion: each step lasts until the next one.
    let area: f64 = usage
        .iter()
        .zip(usage.iter().skip(1).map(|u| u.0).chain([end]))
        .map(|((t, used), next)| f64::from(*used) * (next.min(end) - t).max(0.0))
        .sum();
    let total = f64::from(total_gpus.max(1));
    let thin = usage.len().div_ceil(1000).max(1);
    let jct: Vec<f64> = done
        .iter()
        .map(|(j, r)| (r.end - j.submit_s) * scale)
        .collect();
    PolicyResult {
        policy: policy.into(),
        jobs_done: done.len(),
        jobs_unplaceable: 0,
        jobs_not_done: 0,
        jct_s: Summary::of(jct.clone()),
        queueing_s: Summary::of(
            done.iter()
                .map(|(j, r)| (r.start - j.submit_s) * scale)
                .collect(),
        ),
        makespan_s: makespan * scale,
        gpu_utilisation: area / (total * makespan.max(1e-9)),
        decisions: 0,
        decision_us_mean: 0.0,
        wall_s: 0.0,
        utilisation_over_time: usage
            .iter()
            .step_by(thin)
            .map(|(t, u)| ((t - first) * scale, f64::from(*u) / total))
            .collect(),
        jct_cdf_s: stats::cdf_values(jct, 400),
    }
}

/// Places a job's pods (a gang when more than one), all or nothing.
fn place(sim: &mut Simulator, j: &Job) -> bool {
    let (group, pods) = job_pods("philly", j);
    let n = pods.len();
    match group {
        None => pods
            .into_iter()
            .next()
            .is_some_and(|p| sim.schedule(p).is_ok()),
        Some(group) => sim.schedule_gang(&group, pods).is_ok_and(|p| p.len() == n),
    }
}

/// A job's pods, `j<idx>-<k>` with the GPUs of [`Job::pod_gpus`], and for more than one pod
/// their PodGroup `j<idx>` (minMember: all of them), which the pods name by label.
pub fn job_pods(namespace: &str, j: &Job) -> (Option<PodGroup>, Vec<Pod>) {
    let mut pods: Vec<Pod> = j
        .pod_gpus()
        .iter()
        .enumerate()
        .map(|(k, g)| Shape::Gpu(*g).pod(namespace, &format!("j{}-{k}", j.idx)))
        .collect();
    if pods.len() == 1 {
        return (None, pods);
    }
    let name = format!("j{}", j.idx);
    for p in &mut pods {
        p.metadata
            .labels
            .insert(drover_api::scheduling::POD_GROUP_LABEL.into(), name.clone());
    }
    let group = PodGroup::new(namespace, name, pods.len() as i32);
    (Some(group), pods)
}

impl PhillyReport {
    /// The unit of the times (reports written before it was recorded are the simulator's).
    fn unit(&self) -> &str {
        if self.time_unit.is_empty() {
            COMPRESSED
        } else {
            &self.time_unit
        }
    }
}

impl Report for PhillyReport {
    fn tables(&self) -> Vec<Table> {
        let mut t = Table::new(
            format!(
                "philly: {} jobs on {} nodes ({} GPUs), time compressed ×{} — {}; times in {}",
                self.jobs,
                self.nodes,
                self.gpus,
                self.time_compression,
                self.mode,
                self.unit()
            ),
            &[
                "policy",
                "done",
                "not done",
                "unplaceable",
                "avg JCT s",
                "p99 JCT s",
                "avg queue s",
                "p99 queue s",
                "GPU util",
                "decision µs",
                "wall s",
            ],
        );
        for r in &self.results {
            t.row([
                r.policy.clone(),
                num(r.jobs_done as f64, 0),
                num(r.jobs_not_done as f64, 0),
                num(r.jobs_unplaceable as f64, 0),
                num(r.jct_s.mean, 1),
                num(r.jct_s.p99, 1),
                num(r.queueing_s.mean, 1),
                num(r.queueing_s.p99, 1),
                format!("{:.1}%", r.gpu_utilisation * 100.0),
                // Only the simulator times its decisions.
                if r.decisions == 0 {
                    "-".into()
                } else {
                    num(r.decision_us_mean, 1)
                },
                num(r.wall_s, 1),
            ]);
        }
        vec![t]
    }

    fn charts(&self) -> Vec<Chart> {
        let mut c = Chart::new(
            "GPU allocation over time",
            self.unit(),
            "fraction of GPUs allocated",
        );
        for r in &self.results {
            c = c.line(&r.policy, r.utilisation_over_time.clone());
        }
        let mut jct = Chart::new(
            "job completion time CDF",
            &format!("JCT ({})", self.unit()),
            "fraction of jobs",
        );
        for r in &self.results {
            jct = jct.line(&r.policy, r.jct_cdf_s.clone());
        }
        vec![c, jct]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_split_into_8_gpu_pods() {
        let j = |g| Job {
            idx: 0,
            submit_s: 0.0,
            duration_s: 1.0,
            gpus: g,
        };
        assert_eq!(j(1).pod_gpus(), vec![1]);
        assert_eq!(j(8).pod_gpus(), vec![8]);
        assert_eq!(j(12).pod_gpus(), vec![8, 4]);
        assert_eq!(j(32).pod_gpus(), vec![8, 8, 8, 8]);
    }

    #[test]
    fn parses_and_sorts() {
        let jobs = parse_jobs(
            "job_idx,submit_s,duration_s,num_gpus,vc\n1,5,10,2,a\n0,0,3,1,b\n",
            "x",
        )
        .unwrap();
        assert_eq!(jobs[0].idx, 0);
        assert_eq!(parse_node_count("vc,node num\na,3\nb,4\n", "x").unwrap(), 7);
        let twice = parse_jobs(
            "job_idx,submit_s,duration_s,num_gpus,vc\n1,5,10,2,a\n1,6,3,1,b\n",
            "x",
        )
        .unwrap_err()
        .to_string();
        assert!(
            twice.contains("line 3") && twice.contains("job_idx 1"),
            "{twice}"
        );
    }
}
