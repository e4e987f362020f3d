//! `drover bench philly --live`: the Philly replay of [`super::philly`] through the real control
//! plane — the API server, the scheduler service and hollow node agents
//! ([`drover_nodeagent::HollowCluster`], `h100-8` nodes) in this process — on the wall clock.
//!
//! Each job is submitted at its compressed submit time (from the start of the run): a job of
//! ≤ 8 GPUs as one pod, a larger one as a PodGroup (minMember: every pod) and its 8-GPU pods.
//! Every pod carries `drover.dev/sim-duration` = duration ÷ compression, so its hollow agent
//! "runs" it that long and then reports it Succeeded, which frees its GPUs for the scheduler.
//! A watch on the bound pods (a partial view: name, node, phase) records per job when its last
//! pod was bound (start) and when its last pod Succeeded (end); [`Tracker`] is that bookkeeping,
//! a pure step function over the watch's events.
//!
//! Times are reported in **trace seconds**: wall seconds × the compression. At high
//! compression a millisecond of the control plane's own latency (create → bound → started →
//! reported) is many trace seconds, so short queueing delays are dominated by it; the live
//! table says how many jobs started and finished, the simulator gives the noise-free figures.
//!
//! Policies: `drover` is the scheduler service as it runs (its queue, backfill, gang planning).
//! `fifo` is the same strict admission gate as the simulator's, in the harness: the next job is
//! submitted only when the one before it has all its pods bound.
//!
//! The scheduler's queue timers (backoff 1–10 s, the 60 s unschedulable flush) are wall-clock
//! policy; [`compressed_queue`] divides them by the compression (to ≥ 1 ms) so that a pod that
//! waits for room is retried on the trace's time scale, as in the simulator. The run ends when
//! every job has completed, or when nothing has happened for the idle timeout past the
//! expected end of every running pod.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use drover_api::core::{Pod, pod_phase, restart_policy};
use drover_api::scheduling::PodGroup;
use drover_client::{Client, ClientError, WatchEvent};
use drover_nodeagent::runtime::simulated::SIM_DURATION_ANNOTATION;
use drover_scheduler::queue::QueueConfig;
use futures::StreamExt;
use serde::Serialize;

use super::philly::{self, Job, PhillyReport, PolicyResult, Run};
use super::{ClusterSpec, setup};
use crate::cluster::{Cluster, ClusterOptions};
use crate::plot::Chart;
use crate::podrun::{BoundPodWatch, PodView};
use crate::report::{Report, Table, num};
use crate::workload::Layout;
use crate::{BenchError, Progress};

/// Hollow nodes when `--nodes` is not given: the contended cluster of the simulator runs.
pub const DEFAULT_NODES: usize = 64;
/// The run ends when nothing happened for this long past every running pod's expected end.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The device profile of the hollow nodes (8 GPUs, as the replay's jobs assume).
const PROFILE: &str = "h100-8";
/// The shortest queue timer [`compressed_queue`] sets.
const MIN_QUEUE_TIMER: Duration = Duration::from_millis(1);
/// How often the loop wakes when nothing arrives, to check the end of the run.
const POLL: Duration = Duration::from_millis(100);

#[derive(Clone, Debug)]
pub struct Options {
    /// The jobs, nodes (`None`: [`DEFAULT_NODES`]), compression and policies.
    pub trace: philly::Options,
    /// The in-process control plane: its scheduler (see [`compressed_queue`]); no `server`.
    pub cluster: ClusterOptions,
    pub idle_timeout: Duration,
}

impl Options {
    pub fn params(&self) -> Vec<(String, String)> {
        let mut p = self.trace.params();
        if self.trace.nodes.is_none() {
            p.push(("nodes".into(), DEFAULT_NODES.to_string()));
        }
        p.push(("live".into(), "true".into()));
        p.push((
            "idle-timeout-s".into(),
            self.idle_timeout.as_secs().to_string(),
        ));
        p
    }
}

/// The scheduler's default queue timers divided by `compression` (to at least 1 ms).
pub fn compressed_queue(compression: f64) -> QueueConfig {
    let d = QueueConfig::default();
    let f = compression.max(1.0);
    let scale = |t: Duration| t.div_f64(f).max(MIN_QUEUE_TIMER);
    QueueConfig {
        initial_backoff: scale(d.initial_backoff),
        max_backoff: scale(d.max_backoff),
        unschedulable_flush: scale(d.unschedulable_flush),
    }
}

/// What the live run adds to a policy's figures.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct LiveResult {
    pub policy: String,
    /// Starting the control plane and registering the hollow nodes, seconds.
    pub setup_s: f64,
    pub pods_created: usize,
    pub create_errors: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Pods a hollow agent reported Failed (their job never completes).
    pub pods_failed: usize,
    /// Jobs whose pods were all bound.
    pub jobs_started: usize,
    /// Times the server ended the harness's watch and it was resumed.
    pub rewatches: usize,
    /// Whether the run ended on the idle timeout with jobs not completed.
    pub idle_timeout: bool,
    /// Each job's figures, in submit order.
    pub jobs: Vec<LiveJob>,
}

/// One job of a live run, in trace seconds.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct LiveJob {
    pub idx: usize,
    pub gpus: u32,
    /// Submit → all pods bound (if they were).
    pub queueing_s: Option<f64>,
    /// Submit → all pods Succeeded (if they did).
    pub jct_s: Option<f64>,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct LiveReport {
    #[serde(flatten)]
    pub philly: PhillyReport,
    pub live: Vec<LiveResult>,
}

pub async fn run(opts: &Options, progress: &Progress) -> Result<LiveReport, BenchError> {
    if opts.cluster.server.is_some() {
        return Err(BenchError::Invalid(
            "philly --live starts its own control plane and hollow nodes in this process; it \
             cannot be used with --server"
                .into(),
        ));
    }
    let mut trace = opts.trace.clone();
    trace.nodes = Some(trace.nodes.unwrap_or(DEFAULT_NODES));
    let (jobs, nodes) = philly::load(&trace)?;
    let mut results = Vec::new();
    let mut live = Vec::new();
    for policy in &trace.policies {
        let replay = Replay {
            jobs: &jobs,
            nodes,
            policy,
            opts,
            progress,
        };
        let (r, l) = replay.run().await?;
        results.push(r);
        live.push(l);
    }
    Ok(LiveReport {
        philly: PhillyReport {
            mode: "live: in-process control plane, hollow nodes, wall clock".into(),
            nodes,
            gpus: nodes * 8,
            jobs: jobs.len(),
            time_compression: trace.time_compression,
            time_unit: "trace seconds (wall × compression)".into(),
            results,
        },
        live,
    })
}

/// A job's pods as the live replay submits them: [`philly::job_pods`], run by the hollow
/// agent for the job's (compressed) duration, never restarted.
pub fn live_pods(namespace: &str, j: &Job) -> (Option<PodGroup>, Vec<Pod>) {
    let (group, mut pods) = philly::job_pods(namespace, j);
    for p in &mut pods {
        p.metadata.annotations.insert(
            SIM_DURATION_ANNOTATION.into(),
            j.duration_s.max(0.0).to_string(),
        );
        p.spec.restart_policy = restart_policy::NEVER.into();
    }
    (group, pods)
}

async fn create_job(
    client: Client,
    namespace: String,
    group: Option<PodGroup>,
    pods: Vec<Pod>,
) -> Result<(), ClientError> {
    if let Some(g) = &group {
        client.namespaced::<PodGroup>(&namespace).create(g).await?;
    }
    let api = client.namespaced::<Pod>(&namespace);
    for p in &pods {
        api.create_ack(p).await?;
    }
    Ok(())
}

/// One policy's replay, on a cluster of its own.
struct Replay<'a> {
    jobs: &'a [Job],
    nodes: usize,
    policy: &'a str,
    opts: &'a Options,
    progress: &'a Progress,
}

impl Replay<'_> {
    async fn run(&self) -> Result<(PolicyResult, LiveResult), BenchError> {
        let spec = ClusterSpec {
            nodes: self.nodes,
            profile: PROFILE.into(),
            layout: Layout::default(),
            hollow: true,
            cluster: self.opts.cluster.clone(),
        };
        let (cluster, _prefix, setup_s) = setup(&spec, self.progress).await?;
        let result = self.drive(&cluster).await;
        cluster.shutdown().await;
        let (r, live) = result?;
        Ok((r, LiveResult { setup_s, ..live }))
    }

    async fn drive(&self, cluster: &Cluster) -> Result<(PolicyResult, LiveResult), BenchError> {
        let ns = format!("philly-{}-{}", self.policy, crate::cluster::run_id());
        cluster.ensure_namespace(&ns).await?;
        // The watch and the creators have connections of their own (the hollow agents too).
        // Only bound pods: the server sends a pod when it is bound (as ADDED), then its status.
        let watch = BoundPodWatch::new(&cluster.client, &ns)?;
        let creator = cluster.client.new_connection()?;
        let mut stream = watch.watch("").await?;
        let mut rv = String::new();
        let mut creators = tokio::task::JoinSet::new();
        let mut run = LiveRun::new(self);
        self.progress.phase(self.policy, self.jobs.len() as u64);
        loop {
            let now = Instant::now();
            for (i, group, pods) in run.due(&ns, now) {
                let (c, n) = (creator.clone(), ns.clone());
                creators.spawn(async move { (i, create_job(c, n, group, pods).await) });
            }
            if run.over(now) {
                break;
            }
            tokio::select! {
                ev = stream.next() => match ev {
                    Some(Ok(WatchEvent::Added(p) | WatchEvent::Modified(p))) => {
                        rv.clone_from(&p.metadata.resource_version);
                        run.observe(&p);
                    }
                    Some(Ok(WatchEvent::Bookmark(v))) => rv = v,
                    Some(Ok(WatchEvent::Deleted(_))) => {}
                    Some(Ok(WatchEvent::Error(_)) | Err(_)) | None => {
                        // Resume from the last version seen, or (expired) from the current state:
                        // repeats of what was seen change nothing in the tracker.
                        run.live.rewatches += 1;
                        stream = rewatch(&watch, &rv).await;
                    }
                },
                Some(done) = creators.join_next() => {
                    let (job, result) = done.map_err(|e| BenchError::Start(e.to_string()))?;
                    if let Err(e) = result {
                        run.create_failed(job, &e);
                    }
                }
                _ = tokio::time::sleep_until(run.wake(now).into()) => {}
            }
        }
        self.progress.finish();
        creators.abort_all();
        Ok(run.finish())
    }
}

/// The state of one live replay, owned by its loop: what was submitted, what the watch showed.
struct LiveRun<'a> {
    replay: &'a Replay<'a>,
    fifo: bool,
    total_gpus: u32,
    /// Wall time of the first job's submit time.
    origin: Instant,
    tracker: Tracker,
    live: LiveResult,
    next: usize,
    unplaceable: usize,
    /// FIFO: the job that must be bound before the next is submitted.
    head: Option<usize>,
    /// Activity, and when the last running pod is expected to finish.
    last_event: Instant,
    busy_until: Instant,
}

impl<'a> LiveRun<'a> {
    fn new(replay: &'a Replay<'a>) -> LiveRun<'a> {
        let origin = Instant::now();
        LiveRun {
            replay,
            fifo: replay.policy == "fifo",
            total_gpus: (replay.nodes * 8) as u32,
            origin,
            tracker: Tracker::new(replay.jobs),
            live: LiveResult {
                policy: replay.policy.into(),
                ..Default::default()
            },
            next: 0,
            unplaceable: 0,
            head: None,
            last_event: origin,
            busy_until: origin,
        }
    }

    fn first(&self) -> f64 {
        self.replay.jobs.first().map_or(0.0, |j| j.submit_s)
    }

    /// When job `j` arrives, on the wall clock.
    fn arrival(&self, j: &Job) -> Instant {
        self.origin + Duration::from_secs_f64((j.submit_s - self.first()).max(0.0))
    }

    /// The jobs to create now (those that have arrived, behind the FIFO gate if any), as
    /// (position, group, pods); jobs larger than the cluster are counted as unplaceable.
    fn due(&mut self, namespace: &str, now: Instant) -> Vec<(usize, Option<PodGroup>, Vec<Pod>)> {
        let jobs = self.replay.jobs;
        if self
            .head
            .is_some_and(|h| self.tracker.started(h) || self.tracker.settled(h))
        {
            self.head = None;
        }
        let mut due = Vec::new();
        while self.head.is_none() && jobs.get(self.next).is_some_and(|j| self.arrival(j) <= now) {
            let (i, j) = (self.next, &jobs[self.next]);
            self.next += 1;
            if j.gpus.max(1) > self.total_gpus {
                self.unplaceable += 1;
                self.replay.progress.inc(1);
                continue;
            }
            let (group, pods) = live_pods(namespace, j);
            self.tracker.submit(i, &pods);
            self.live.pods_created += pods.len();
            self.last_event = now;
            if self.fifo {
                self.head = Some(i);
            }
            due.push((i, group, pods));
        }
        due
    }

    /// Whether the run is over: every job settled, or nothing happened for the idle timeout.
    fn over(&mut self, now: Instant) -> bool {
        let jobs = self.replay.jobs.len();
        if self.next == jobs && self.tracker.settled_count() + self.unplaceable == jobs {
            return true;
        }
        let waiting = self.next == jobs || self.head.is_some();
        let timeout = self.replay.opts.idle_timeout;
        if waiting && now >= self.last_event.max(self.busy_until) + timeout {
            self.live.idle_timeout = true;
            self.replay.progress.println(format!(
                "{}: {} jobs not completed after {timeout:?} without progress",
                self.replay.policy,
                jobs - self.unplaceable - self.tracker.done_count(),
            ));
            return true;
        }
        false
    }

    /// When to look again if nothing arrives: the next arrival, or a poll of [`Self::over`].
    fn wake(&self, now: Instant) -> Instant {
        match self.replay.jobs.get(self.next) {
            Some(j) if self.head.is_none() => self.arrival(j).min(now + POLL),
            _ => now + POLL,
        }
    }

    fn observe(&mut self, pod: &PodView) {
        let at = Instant::now();
        let t = self.first() + at.saturating_duration_since(self.origin).as_secs_f64();
        let step = self.tracker.observe(pod, t);
        if let Some(job) = step.bound {
            let d = Duration::from_secs_f64(self.replay.jobs[job].duration_s.max(0.0));
            self.busy_until = self.busy_until.max(at + d);
        }
        if step.settled {
            self.replay.progress.inc(1);
        }
        self.last_event = at;
    }

    fn create_failed(&mut self, job: usize, e: &ClientError) {
        self.live.create_errors += 1;
        self.live.first_error.get_or_insert_with(|| e.to_string());
        if self.tracker.abandon(job) {
            self.replay.progress.inc(1);
        }
    }

    fn finish(mut self) -> (PolicyResult, LiveResult) {
        let Replay {
            jobs, policy, opts, ..
        } = *self.replay;
        let f = opts.trace.time_compression;
        self.live.pods_failed = self.tracker.pods_failed;
        self.live.jobs_started = self.tracker.started_count();
        self.live.jobs = jobs
            .iter()
            .zip(&self.tracker.jobs)
            .map(|(j, s)| LiveJob {
                idx: j.idx,
                gpus: j.gpus,
                queueing_s: s.start.map(|t| (t - j.submit_s) * f),
                jct_s: s.end.map(|t| (t - j.submit_s) * f),
            })
            .collect();
        let runs = self.tracker.runs();
        let result = PolicyResult {
            jobs_unplaceable: self.unplaceable,
            jobs_not_done: jobs.len() - self.unplaceable - self.tracker.done_count(),
            wall_s: self.origin.elapsed().as_secs_f64(),
            ..philly::policy_result(policy, jobs, &runs, &self.tracker.usage, self.total_gpus, f)
        };
        (result, self.live)
    }
}

/// The watch again after the server ended it: from `rv`, or (expired) from the current state;
/// while the server does not answer, every 100 ms (the run's own idle timeout ends it).
async fn rewatch(
    watch: &BoundPodWatch,
    rv: &str,
) -> futures::stream::BoxStream<'static, Result<WatchEvent<PodView>, ClientError>> {
    loop {
        for from in [rv, ""] {
            if let Ok(s) = watch.watch(from).await {
                return s;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One pod of a submitted job.
#[derive(Debug)]
struct PodState {
    job: usize,
    gpus: u32,
    bound: bool,
    finished: bool,
}

/// One job: its pods' progress and, once known, its start and end (in the jobs' seconds).
#[derive(Debug, Default)]
struct JobState {
    pods: usize,
    bound: usize,
    succeeded: usize,
    /// A pod failed, or the job could not be created: it will not complete.
    failed: bool,
    start: Option<f64>,
    end: Option<f64>,
}

/// What one watch event changed.
#[derive(Debug, Default, PartialEq)]
pub struct Step {
    /// The job of a pod seen bound for the first time.
    pub bound: Option<usize>,
    /// The pod's job has just completed or failed.
    pub settled: bool,
}

/// Per-job bookkeeping of the live replay, fed the watch's pod views in order: a pod counts
/// as holding its GPUs from the first event that shows it bound to the first that shows it
/// Succeeded or Failed. Repeated or stale views change nothing.
#[derive(Debug)]
pub struct Tracker {
    pods: HashMap<String, PodState>,
    jobs: Vec<JobState>,
    used: u32,
    /// GPUs held from each time on.
    pub usage: Vec<(f64, u32)>,
    pub pods_failed: usize,
}

impl Tracker {
    pub fn new(jobs: &[Job]) -> Tracker {
        Tracker {
            pods: HashMap::new(),
            jobs: jobs.iter().map(|_| JobState::default()).collect(),
            used: 0,
            usage: Vec::new(),
            pods_failed: 0,
        }
    }

    /// Job `job` is being created with `pods`.
    pub fn submit(&mut self, job: usize, pods: &[Pod]) {
        for p in pods {
            let gpus = (p.spec.containers.iter())
                .filter_map(|c| c.resources.requests.get(drover_api::quantity::NVIDIA_GPU))
                .map(|q| q.value() as u32)
                .sum();
            self.pods.insert(
                p.metadata.name.clone(),
                PodState {
                    job,
                    gpus,
                    bound: false,
                    finished: false,
                },
            );
        }
        self.jobs[job].pods = pods.len();
    }

    /// The job could not be created. True if that settles it.
    pub fn abandon(&mut self, job: usize) -> bool {
        let j = &mut self.jobs[job];
        let settled = !j.failed && j.end.is_none();
        j.failed = true;
        settled
    }

    pub fn observe(&mut self, pod: &PodView, t: f64) -> Step {
        let mut step = Step::default();
        let Some(p) = self.pods.get_mut(&pod.metadata.name) else {
            return step;
        };
        let job = &mut self.jobs[p.job];
        let was_settled = job.failed || job.end.is_some();
        let mut used = self.used;
        if !p.bound && !p.finished && !pod.spec.node_name.is_empty() {
            p.bound = true;
            used += p.gpus;
            job.bound += 1;
            step.bound = Some(p.job);
            if job.bound == job.pods {
                job.start = Some(t);
            }
        }
        let phase = pod.status.phase.as_str();
        if !p.finished && (phase == pod_phase::SUCCEEDED || phase == pod_phase::FAILED) {
            p.finished = true;
            if p.bound {
                used -= p.gpus;
            }
            if phase == pod_phase::FAILED {
                self.pods_failed += 1;
                job.failed = true;
            } else {
                job.succeeded += 1;
                if job.succeeded == job.pods && !job.failed {
                    job.end = Some(t);
                }
            }
        }
        step.settled = !was_settled && (job.failed || job.end.is_some());
        if used != self.used {
            self.used = used;
            match self.usage.last_mut() {
                Some(last) if last.0 == t => last.1 = used,
                _ => self.usage.push((t, used)),
            }
        }
        step
    }

    pub fn started(&self, job: usize) -> bool {
        self.jobs[job].start.is_some()
    }

    pub fn settled(&self, job: usize) -> bool {
        self.jobs[job].failed || self.jobs[job].end.is_some()
    }

    pub fn settled_count(&self) -> usize {
        (0..self.jobs.len()).filter(|j| self.settled(*j)).count()
    }

    pub fn started_count(&self) -> usize {
        self.jobs.iter().filter(|j| j.start.is_some()).count()
    }

    pub fn done_count(&self) -> usize {
        self.jobs.iter().filter(|j| j.end.is_some()).count()
    }

    /// Each job's run, if it completed.
    pub fn runs(&self) -> Vec<Option<Run>> {
        self.jobs
            .iter()
            .map(|j| j.start.zip(j.end).map(|(start, end)| Run { start, end }))
            .collect()
    }
}

impl Report for LiveReport {
    fn tables(&self) -> Vec<Table> {
        let mut t = Table::new(
            "philly --live: the run",
            &[
                "policy",
                "setup s",
                "pods",
                "create errors",
                "pods failed",
                "jobs started",
                "rewatches",
                "ended on idle timeout",
            ],
        );
        for l in &self.live {
            t.row([
                l.policy.clone(),
                num(l.setup_s, 1),
                num(l.pods_created as f64, 0),
                num(l.create_errors as f64, 0),
                num(l.pods_failed as f64, 0),
                num(l.jobs_started as f64, 0),
                num(l.rewatches as f64, 0),
                l.idle_timeout.to_string(),
            ]);
        }
        let mut tables = self.philly.tables();
        tables.push(t);
        tables
    }

    fn charts(&self) -> Vec<Chart> {
        self.philly.charts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::podrun::{ViewMeta, ViewSpec, ViewStatus};

    fn view(name: &str, node: &str, phase: &str) -> PodView {
        PodView {
            metadata: ViewMeta {
                name: name.into(),
                resource_version: String::new(),
            },
            spec: ViewSpec {
                node_name: node.into(),
            },
            status: ViewStatus {
                phase: phase.into(),
            },
        }
    }

    #[test]
    fn a_gang_starts_when_all_its_pods_are_bound_and_ends_when_all_succeed() {
        let job = |idx, gpus| Job {
            idx,
            submit_s: 0.0,
            duration_s: 1.0,
            gpus,
        };
        let jobs = vec![job(0, 16), job(1, 2)];
        let mut t = Tracker::new(&jobs);
        for (i, j) in jobs.iter().enumerate() {
            t.submit(i, &live_pods("ns", j).1);
        }
        let step = t.observe(&view("j0-0", "n1", "Pending"), 1.0);
        assert_eq!(step.bound, Some(0));
        assert!(!t.started(0));
        // A repeat changes nothing.
        assert_eq!(
            t.observe(&view("j0-0", "n1", "Running"), 1.5),
            Step::default()
        );
        t.observe(&view("j0-1", "n2", "Pending"), 2.0);
        assert!(t.started(0));
        t.observe(&view("j1-0", "n1", "Running"), 2.0);
        assert_eq!(t.usage, vec![(1.0, 8), (2.0, 18)]);
        t.observe(&view("j0-0", "n1", "Succeeded"), 3.0);
        let step = t.observe(&view("j0-1", "n2", "Succeeded"), 4.0);
        assert!(step.settled);
        let step = t.observe(&view("j1-0", "n1", "Failed"), 5.0);
        assert!(step.settled);
        assert_eq!(
            t.runs(),
            vec![
                Some(Run {
                    start: 2.0,
                    end: 4.0
                }),
                None
            ]
        );
        assert_eq!(
            (t.done_count(), t.settled_count(), t.pods_failed),
            (1, 2, 1)
        );
        assert_eq!(t.usage.last(), Some(&(5.0, 0)));
    }

    #[test]
    fn queue_timers_scale_down_to_a_floor() {
        let q = compressed_queue(1000.0);
        assert_eq!(q.initial_backoff, Duration::from_millis(1));
        assert_eq!(q.max_backoff, Duration::from_millis(10));
        assert_eq!(q.unschedulable_flush, Duration::from_millis(60));
        assert_eq!(compressed_queue(1e9).max_backoff, MIN_QUEUE_TIMER);
    }
}
