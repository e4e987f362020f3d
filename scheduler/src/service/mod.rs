//! The scheduler as a service: informers feed the cache and the queue; the loop pops units,
//! decides on a snapshot, assumes the placements and binds them asynchronously (bounded
//! concurrency). Every failure path forgets the assumption and requeues with backoff.
//!
//! One task owns all state (cache, queue, pending pods); informer handlers and binding tasks
//! talk to it over channels, so no lock is shared. The state is grouped by what it is for:
//! the pending set and the objects that decide how it is scheduled ([`pending`]), the
//! why-pending reporter ([`reporter`]) and the bindings in flight ([`binds`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use drover_api::core::{Node, Pod};
use drover_api::scheduling::{PodGroup, PriorityClass, topology_mode};
use drover_client::clock::Clock;
use drover_client::informer::{Change, Informer};
use drover_client::leader::{ElectionConfig, LeaderElector};
use drover_client::stop::Stop;
use drover_client::{Client, ClientError, ListParams};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, info_span};

use crate::algorithm::planner::{
    DEFAULT_HARD_GANG_SIZE, DEFAULT_PLAN_BUDGET, default_planner, is_hard, plan_with,
};
use crate::algorithm::{
    BatchPlanner, Diagnosis, GangRequest, Preemptor, TopologyRule, find_victims, place_gang,
    schedule_pod,
};
use crate::cache::{Cache, Placement, PlanState, PodInfo};
use crate::framework::{CycleState, ProfileConfig, Profiles, Registry, RegistryError};
use crate::queue::{QueueConfig, SchedulingQueue, UnitKey};
use crate::report;

mod binds;
mod pending;
mod reporter;

use binds::{BindResult, Binds};
use pending::{Objects, Pending, unit_of};
use reporter::Reporter;

/// How long a gang short of `minMember` pods waits for its members without being reported as
/// pending (members of a job are created within moments of each other).
pub const MEMBER_ARRIVAL_GRACE: Duration = Duration::from_secs(5);

/// Binding tasks running at once.
pub const DEFAULT_BIND_CONCURRENCY: usize = 256;
/// Units decided before the loop looks at new events again.
pub const DEFAULT_UNITS_PER_ROUND: usize = 256;
/// How often the loop flushes unschedulable units and expires assumptions.
pub const DEFAULT_TICK: Duration = Duration::from_secs(1);
/// Refusals a pod placed elsewhere may lift: the pod's affinity peers arrive, or its spread
/// domains' minimum rises.
const WAITS_ON_PODS: [&str; 2] = [
    crate::plugins::inter_pod_affinity::AFFINITY_REASON,
    crate::plugins::pod_topology_spread::REASON,
];

/// Settings of the scheduler service.
#[derive(Clone)]
pub struct SchedulerConfig {
    pub profiles: Vec<ProfileConfig>,
    pub queue: QueueConfig,
    pub bind_concurrency: usize,
    /// Planner for hard batches (the ILP optimiser); `None`: the greedy plan only.
    pub planner: Option<Arc<dyn BatchPlanner>>,
    pub hard_gang_size: usize,
    pub plan_budget: Duration,
    /// Whether pending pods may preempt lower-priority ones.
    pub preemption: bool,
    /// Elect a leader through this Lease, so several schedulers can run and only one binds
    /// (`None`: schedule at once, alone).
    pub leader_election: Option<ElectionConfig>,
}

/// The scheduler's Lease, as Kubernetes names its own (`kube-system/kube-scheduler`).
pub const DEFAULT_LEASE_NAME: &str = "drover-scheduler";
pub const DEFAULT_LEASE_NAMESPACE: &str = "kube-system";

impl std::fmt::Debug for SchedulerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerConfig")
            .field("profiles", &self.profiles.len())
            .field("queue", &self.queue)
            .field("planner", &self.planner.as_ref().map(|p| p.name()))
            .finish()
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            profiles: vec![ProfileConfig::default()],
            queue: QueueConfig::default(),
            bind_concurrency: DEFAULT_BIND_CONCURRENCY,
            // The ILP optimiser for hard batches, the greedy plan as its fallback.
            planner: Some(default_planner(Arc::new(
                crate::framework::Profile::default_profile(),
            ))),
            hard_gang_size: DEFAULT_HARD_GANG_SIZE,
            plan_budget: DEFAULT_PLAN_BUDGET,
            preemption: true,
            leader_election: None,
        }
    }
}

impl SchedulerConfig {
    pub fn with_planner(mut self, planner: Arc<dyn BatchPlanner>) -> Self {
        self.planner = Some(planner);
        self
    }
    /// The greedy plan only, no batch planner.
    pub fn without_planner(mut self) -> Self {
        self.planner = None;
        self
    }
    pub fn with_queue(mut self, queue: QueueConfig) -> Self {
        self.queue = queue;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("invalid scheduler configuration: {0}")]
    Config(#[from] RegistryError),
    #[error("api: {0}")]
    Client(#[from] ClientError),
}

enum Event {
    Pod(Arc<Pod>),
    PodDeleted(Arc<Pod>),
    Node(Arc<Node>),
    NodeDeleted(Arc<Node>),
    Group(Arc<PodGroup>),
    GroupDeleted(Arc<PodGroup>),
    Class(Arc<PriorityClass>),
    ClassDeleted(Arc<PriorityClass>),
    Synced,
}

fn forward<T: Send + Sync + 'static>(
    tx: &mpsc::UnboundedSender<Event>,
    applied: fn(Option<Arc<T>>, Arc<T>) -> Event,
    deleted: fn(Arc<T>) -> Event,
) -> impl Fn(&Change<T>) + Send + Sync + 'static {
    let tx = tx.clone();
    move |c| {
        // Unbounded: an informer handler must not block; the loop drains it every round.
        let _ = tx.send(match c {
            Change::Applied { old, new } => applied(old.clone(), new.clone()),
            Change::Deleted(o) => deleted(o.clone()),
            Change::Synced => Event::Synced,
        });
    }
}

/// Runs the scheduler until `shutdown` resolves; with `config.leader_election`, only while it
/// holds the Lease (a standby campaigns until the leader is gone, then starts from a fresh list
/// of the cluster, as any restart does).
pub async fn run(
    config: SchedulerConfig,
    client: Client,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SchedulerError> {
    let Some(election) = config.leader_election.clone() else {
        return run_alone(config, client, shutdown).await;
    };
    // A bad configuration fails now, not once elected.
    Profiles::build(&config.profiles, &Registry::with_defaults())?;
    let elector = LeaderElector::new(&client, election, Clock::new());
    let work = move |leading: Stop| {
        let (config, client) = (config.clone(), client.clone());
        async move {
            if let Err(e) = run_alone(config, client, leading.wait()).await {
                tracing::error!(error = %e, "scheduler stopped");
            }
        }
    };
    drover_client::stop::run_until(shutdown, |stop| elector.run(stop, work)).await;
    Ok(())
}

/// The scheduling loop itself, until `shutdown` resolves.
async fn run_alone(
    config: SchedulerConfig,
    client: Client,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SchedulerError> {
    let profiles = Profiles::build(&config.profiles, &Registry::with_defaults())?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    Informer::new(client.all::<Pod>(), ListParams::default())
        .on_change(forward(&tx, |_, n| Event::Pod(n), Event::PodDeleted))
        .spawn(stopped(stop_rx.clone()));
    Informer::new(client.all::<Node>(), ListParams::default())
        .on_change(forward(&tx, |_, n| Event::Node(n), Event::NodeDeleted))
        .spawn(stopped(stop_rx.clone()));
    Informer::new(client.all::<PodGroup>(), ListParams::default())
        .on_change(forward(&tx, |_, n| Event::Group(n), Event::GroupDeleted))
        .spawn(stopped(stop_rx.clone()));
    Informer::new(client.all::<PriorityClass>(), ListParams::default())
        .on_change(forward(&tx, |_, n| Event::Class(n), Event::ClassDeleted))
        .spawn(stopped(stop_rx.clone()));
    drop(tx);
    let (bind_tx, mut bind_rx) = mpsc::channel(4096);
    let events = report::recorder(&client);
    let mut s = State {
        cache: Cache::new(),
        queue: SchedulingQueue::new(config.queue.clone()),
        profiles,
        pending: Pending::default(),
        objects: Objects::default(),
        reporter: Reporter::new(client.clone(), events.clone()),
        binds: Binds::new(config.bind_concurrency, bind_tx, client, events),
        preempting: HashMap::new(),
        synced: 0,
        config,
    };
    info!("scheduler started");
    tokio::pin!(shutdown);
    let mut more = false;
    loop {
        let wake = if more {
            Instant::now()
        } else {
            let tick = Instant::now() + DEFAULT_TICK;
            s.queue.next_wakeup().map_or(tick, |w| w.min(tick))
        };
        tokio::select! {
            _ = &mut shutdown => break,
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                s.apply(ev);
                while let Ok(ev) = rx.try_recv() {
                    s.apply(ev);
                }
            }
            Some(r) = bind_rx.recv() => {
                s.on_bound(r);
                while let Ok(r) = bind_rx.try_recv() {
                    s.on_bound(r);
                }
            }
            _ = tokio::time::sleep_until(wake) => s.tick(),
        }
        more = s.synced >= 4 && s.schedule_round();
    }
    let _ = stop_tx.send(true);
    info!("scheduler stopped");
    Ok(())
}

/// Everything the loop owns, grouped by what it is for.
struct State {
    cache: Cache,
    queue: SchedulingQueue,
    profiles: Profiles,
    pending: Pending,
    objects: Objects,
    /// Why pending, said once per change.
    reporter: Reporter,
    binds: Binds,
    /// Victims a unit's preemption is waiting for.
    preempting: HashMap<UnitKey, Vec<Arc<str>>>,
    /// Informers that have listed everything (scheduling starts once all four have).
    synced: usize,
    config: SchedulerConfig,
}

fn key_of(pod: &Pod) -> Arc<str> {
    format!("{}/{}", pod.metadata.namespace, pod.metadata.name).into()
}

fn created_ms(pod: &Pod) -> i64 {
    pod.metadata
        .creation_timestamp
        .map_or(0, |t| t.timestamp_millis())
}

impl State {
    fn apply(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::Pod(pod) => self.apply_pod(pod, now),
            Event::PodDeleted(pod) => {
                let key = key_of(&pod);
                self.drop_pending(&key);
                if self.cache.remove_pod(&key).is_some() {
                    self.queue.on_cluster_change(now);
                }
            }
            Event::Node(n) => {
                self.cache.upsert_node(n);
                self.queue.on_cluster_change(now);
            }
            Event::NodeDeleted(n) => {
                self.cache.remove_node(&n.metadata.name);
                // A spread domain may be gone.
                self.queue.on_cluster_change(now);
            }
            Event::Group(g) => {
                let key: Arc<str> = format!("{}/{}", g.metadata.namespace, g.metadata.name).into();
                self.objects.groups.insert(key.clone(), g);
                self.queue.wake(&UnitKey::Gang(key), now);
            }
            Event::GroupDeleted(g) => {
                self.objects
                    .groups
                    .remove(format!("{}/{}", g.metadata.namespace, g.metadata.name).as_str());
            }
            Event::Class(c) => {
                self.objects.classes.insert(c.metadata.name.clone(), c);
            }
            Event::ClassDeleted(c) => {
                self.objects.classes.remove(&c.metadata.name);
            }
            Event::Synced => self.synced += 1,
        }
    }

    fn apply_pod(&mut self, pod: Arc<Pod>, now: Instant) {
        let key = key_of(&pod);
        if pod.is_terminal() {
            self.drop_pending(&key);
            if self.cache.remove_pod(&key).is_some() {
                self.queue.on_cluster_change(now);
            }
            return;
        }
        if pod.is_bound() {
            self.drop_pending(&key);
            let info = Arc::new(self.objects.resolve(&pod));
            self.cache.add_bound_pod(info);
            self.queue.on_pod_placed(now);
            return;
        }
        if pod.metadata.deletion_timestamp.is_some()
            || self.profiles.for_name(pod.scheduler_name()).is_none()
        {
            self.drop_pending(&key);
            return;
        }
        let info = Arc::new(self.objects.resolve(&pod));
        if !self.pending.contains(&key) {
            self.cache.observe(&info);
        }
        let unit = unit_of(&info);
        let priority = info.priority;
        self.pending.insert(key, info, now);
        self.queue.add(unit.clone(), priority, created_ms(&pod));
        self.queue.wake(&unit, now);
    }

    fn drop_pending(&mut self, key: &str) {
        let Some((info, last)) = self.pending.remove(key) else {
            return;
        };
        self.reporter.forget(key);
        let unit = unit_of(&info);
        if last && !self.binds.is_binding(&unit) {
            self.queue.remove(&unit);
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        self.queue.flush(now);
        let expired = self.cache.expire_assumed(now);
        if !expired.is_empty() {
            self.queue.on_cluster_change(now);
        }
        for key in expired {
            if let Some(info) = self.pending.get(&key) {
                self.queue
                    .add(unit_of(info), info.priority, created_ms(&info.pod));
            }
        }
    }

    /// Decides up to a round of units; says whether more are ready.
    fn schedule_round(&mut self) -> bool {
        for _ in 0..DEFAULT_UNITS_PER_ROUND {
            let Some(unit) = self.queue.pop(Instant::now()) else {
                return false;
            };
            self.schedule_unit(unit);
        }
        true
    }

    fn schedule_unit(&mut self, unit: UnitKey) {
        let now = Instant::now();
        match &unit {
            UnitKey::Pod(k) => {
                let Some(pod) = self.pending.get(k).cloned() else {
                    self.queue.remove(&unit);
                    return;
                };
                if self.cache.has_pod(k) {
                    return;
                }
                let Some(profile) = self.profiles.for_name(pod.pod.scheduler_name()).cloned()
                else {
                    self.queue.remove(&unit);
                    return;
                };
                let _span = info_span!("schedule", pod = %k).entered();
                let snap = self.cache.snapshot();
                let mut plan = PlanState::new(&snap);
                match schedule_pod(&profile, &mut plan, &pod, &mut CycleState::new()) {
                    Ok(p) => {
                        drop(plan);
                        drop(snap);
                        self.commit(&unit, vec![(pod, p)]);
                    }
                    Err(d) => {
                        drop(plan);
                        drop(snap);
                        self.failed(&unit, vec![pod], d, now);
                    }
                }
            }
            UnitKey::Gang(g) => self.schedule_gang(&unit, g.clone(), now),
        }
    }

    fn schedule_gang(&mut self, unit: &UnitKey, g: Arc<str>, now: Instant) {
        let _span = info_span!("schedule", gang = %g).entered();
        let mut members: Vec<Arc<PodInfo>> = self
            .pending
            .members(&g)
            .filter(|k| !self.cache.has_pod(k))
            .filter_map(|k| self.pending.get(k).cloned())
            .collect();
        members.sort_by(|a, b| natural(&a.key, &b.key));
        if members.is_empty() {
            return;
        }
        let Some(group) = self.objects.groups.get(&g).cloned() else {
            let d = Diagnosis::note(self.cache.node_count(), format!("waiting for PodGroup {g}"));
            self.failed(unit, members, d, now);
            return;
        };
        let Some(profile) = self
            .profiles
            .for_name(members[0].pod.scheduler_name())
            .cloned()
        else {
            return;
        };
        let bound = self.cache.gang_members(&g);
        let min_member = group.spec.min_member.max(1) as u32;
        let since = self.pending.gang_since(&g).unwrap_or(now);
        if ((members.len() + bound.len()) as u32) < min_member
            && now.duration_since(since) < MEMBER_ARRIVAL_GRACE
        {
            // Members are still being created: wait for them quietly, without a backoff, so the
            // last one to arrive starts the gang's placement at once.
            self.queue.wait_for_members(unit, now);
            return;
        }
        let gang = GangRequest {
            key: g.clone(),
            members: members.clone(),
            min_member,
            bound,
            topology: group.spec.topology.as_ref().map(|t| TopologyRule {
                key: t.key.clone(),
                required: t.mode != topology_mode::PREFERRED,
            }),
        };
        let snap = self.cache.snapshot();
        let planned = self
            .config
            .planner
            .as_deref()
            .filter(|_| is_hard(&gang, self.config.hard_gang_size))
            .and_then(|p| plan_with(p, &profile, &snap, &gang, self.config.plan_budget));
        let result = match planned {
            Some(p) => Ok(p),
            None => place_gang(&profile, &PlanState::new(&snap), &gang).map(|p| p.placements),
        };
        drop(snap);
        match result {
            Ok(placements) => {
                let by_key: HashMap<&str, &Arc<PodInfo>> =
                    members.iter().map(|m| (&*m.key, m)).collect();
                let pairs = placements
                    .into_iter()
                    .filter_map(|p| by_key.get(&*p.pod).map(|m| ((*m).clone(), p)))
                    .collect();
                self.pending.gang_placed(&g);
                self.reporter.gang_placed(&g, group);
                self.commit(unit, pairs);
            }
            Err(d) => {
                let timeout = group
                    .spec
                    .schedule_timeout_seconds
                    .map(|s| Duration::from_secs(s.max(0) as u64));
                let since = self.pending.gang_since(&g).unwrap_or(now);
                let timed_out = timeout.is_some_and(|t| now.duration_since(since) >= t);
                self.reporter
                    .gang_failed(&g, group, timed_out, d.to_string());
                self.failed(unit, members, d, now);
            }
        }
    }

    fn commit(&mut self, unit: &UnitKey, placements: Vec<(Arc<PodInfo>, Placement)>) {
        self.preempting.remove(unit);
        self.binds.start(unit, placements.len());
        self.queue.on_pod_placed(Instant::now());
        for (pod, placement) in placements {
            self.cache.assume(pod.clone(), &placement);
            self.reporter.forget(&pod.key);
            self.binds.spawn(unit, pod, placement);
        }
    }

    fn on_bound(&mut self, r: BindResult) {
        let now = Instant::now();
        if r.ok {
            self.cache.finish_binding(&r.pod, now);
        } else {
            // Unreserve: the placement is no longer counted, which may let others in.
            self.cache.forget(&r.pod);
            self.queue.on_cluster_change(now);
        }
        let Some(all_ok) = self.binds.finish(&r) else {
            return;
        };
        let still_pending = match &r.unit {
            UnitKey::Pod(k) => !all_ok && self.pending.contains(k),
            UnitKey::Gang(g) => self.pending.members(g).any(|k| !self.cache.has_pod(k)),
        };
        if still_pending {
            self.queue.backoff(&r.unit, now);
        } else {
            self.queue.remove(&r.unit);
        }
    }

    fn failed(&mut self, unit: &UnitKey, pods: Vec<Arc<PodInfo>>, d: Diagnosis, now: Instant) {
        let mut message = d.to_string();
        debug!(%unit, %message, "unschedulable");
        let mut preempted = false;
        if self.config.preemption && d.resolvable && pods.iter().all(|p| !p.never_preempts) {
            preempted = self.try_preempt(unit, &pods, &mut message);
        }
        for p in &pods {
            self.reporter.unschedulable(p, &message);
        }
        if preempted {
            self.queue.backoff(unit, now);
        } else if d
            .reasons
            .keys()
            .any(|r| WAITS_ON_PODS.contains(&r.as_str()))
        {
            self.queue.unschedulable_until_pod_placed(unit, now);
        } else {
            self.queue.unschedulable(unit, now);
        }
    }

    /// Preempts for the unit unless victims of an earlier preemption are still going.
    fn try_preempt(&mut self, unit: &UnitKey, pods: &[Arc<PodInfo>], message: &mut String) -> bool {
        if let Some(victims) = self.preempting.get(unit)
            && victims.iter().any(|v| self.cache.has_pod(v))
        {
            message.push_str("; waiting for preempted pods to terminate");
            return true;
        }
        let Some(profile) = self
            .profiles
            .for_name(pods[0].pod.scheduler_name())
            .cloned()
        else {
            return false;
        };
        let snap = self.cache.snapshot();
        let gang;
        let who = match unit {
            UnitKey::Pod(_) => Preemptor::Pod(&pods[0]),
            UnitKey::Gang(g) => {
                let Some(group) = self.objects.groups.get(g) else {
                    return false;
                };
                gang = GangRequest {
                    key: g.clone(),
                    members: pods.to_vec(),
                    min_member: group.spec.min_member.max(1) as u32,
                    bound: self.cache.gang_members(g),
                    topology: group.spec.topology.as_ref().map(|t| TopologyRule {
                        key: t.key.clone(),
                        required: t.mode != topology_mode::PREFERRED,
                    }),
                };
                Preemptor::Gang(&gang)
            }
        };
        let Some(plan) = find_victims(&profile, &snap, who, chrono::Utc::now()) else {
            return false;
        };
        drop(snap);
        info!(%unit, victims = plan.victims.len(), "preempting");
        message.push_str(&format!(
            "; preempting {} lower-priority pod(s)",
            plan.victims.len()
        ));
        self.preempting.insert(
            unit.clone(),
            plan.victims.iter().map(|v| v.key.clone()).collect(),
        );
        let by = unit.to_string();
        for v in plan.victims {
            self.reporter.preempt(v, by.clone());
        }
        for (pod, node) in plan.nominated {
            if let Some(p) = self.pending.get(&pod) {
                let p = p.pod.clone();
                self.reporter.nominate(pod, p, node, message);
            }
        }
        true
    }
}

/// Orders `p-2` before `p-10`.
fn natural(a: &str, b: &str) -> std::cmp::Ordering {
    let split = |s: &str| {
        let digits = s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (head, tail) = s.split_at(s.len() - digits);
        (head.to_string(), tail.parse::<u64>().unwrap_or(0))
    };
    split(a).cmp(&split(b))
}
