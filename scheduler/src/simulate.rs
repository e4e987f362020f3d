//! The decision without any API: schedule pods and gangs against a set of nodes in memory.
//! For criterion benchmarks and trace replay (the openb packing benchmark calls
//! [`Simulator::schedule`] once per arriving pod and reads [`Simulator::gpu_allocation`]).
//!
//! ```
//! use drover_scheduler::Simulator;
//! use drover_scheduler::testing::{GpuProfile, node, pod};
//!
//! let nodes = (0..4).map(|i| node(&format!("n{i}")).gpus(GpuProfile::A100x8).build());
//! let mut sim = Simulator::new(nodes);
//! let placed = sim.schedule(pod("ns", "train").gpus(4).build()).unwrap();
//! assert_eq!(placed.devices[0].ids.len(), 4);
//! let (used, total) = sim.gpu_allocation();
//! assert_eq!((used, total), (4000, 32000));
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use drover_api::core::{Node, Pod};
use drover_api::meta::Time;
use drover_api::scheduling::{PodGroup, topology_mode};

use crate::algorithm::planner::{
    DEFAULT_HARD_GANG_SIZE, DEFAULT_PLAN_BUDGET, default_planner, is_hard, plan_with,
};
use crate::algorithm::{
    BatchPlanner, Diagnosis, GangRequest, Search, TopologyRule, place_gang, schedule_pod,
    schedule_pod_with,
};
use crate::cache::{Cache, Placement, PlanState, PodInfo, Snapshot};
use crate::framework::{CycleState, Profile};

/// An in-memory cluster and the scheduler's decision over it.
pub struct Simulator {
    cache: Cache,
    profile: Arc<Profile>,
    /// Planner for hard gangs, as in the service (`None`: greedy only).
    planner: Option<Arc<dyn BatchPlanner>>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("nodes", &self.cache.node_count())
            .field("planner", &self.planner.as_ref().map(|p| p.name()))
            .finish()
    }
}

/// The gang request of a PodGroup and its pending pods.
fn gang_request(group: &PodGroup, pods: Vec<Pod>) -> GangRequest {
    GangRequest {
        key: format!("{}/{}", group.metadata.namespace, group.metadata.name).into(),
        members: pods
            .into_iter()
            .map(|p| Arc::new(PodInfo::new(Arc::new(p))))
            .collect(),
        min_member: group.spec.min_member.max(1) as u32,
        bound: vec![],
        topology: group.spec.topology.as_ref().map(|t| TopologyRule {
            key: t.key.clone(),
            required: t.mode != topology_mode::PREFERRED,
        }),
    }
}

impl Simulator {
    /// A cluster of `nodes` with the default profile.
    pub fn new(nodes: impl IntoIterator<Item = Node>) -> Simulator {
        Simulator::with_profile(Profile::default_profile(), nodes)
    }

    pub fn with_profile(profile: Profile, nodes: impl IntoIterator<Item = Node>) -> Simulator {
        let mut cache = Cache::new();
        for n in nodes {
            cache.upsert_node(Arc::new(n));
        }
        let profile = Arc::new(profile);
        Simulator {
            planner: Some(default_planner(profile.clone())),
            cache,
            profile,
        }
    }

    /// Uses `planner` for hard gangs (`None`: the greedy plan only).
    pub fn with_planner(mut self, planner: Option<Arc<dyn BatchPlanner>>) -> Simulator {
        self.planner = planner;
        self
    }

    /// Counts a pod's shape into the workload model the fragmentation score uses (a replay
    /// may seed it with the trace's distribution).
    pub fn observe(&mut self, pod: &Pod) {
        self.cache.observe(&PodInfo::new(Arc::new(pod.clone())));
    }

    pub fn snapshot(&mut self) -> Arc<Snapshot> {
        self.cache.snapshot()
    }

    /// Where the pod would go, without placing it.
    pub fn decide(&mut self, pod: &Pod) -> Result<Placement, Diagnosis> {
        self.decide_with(pod, Search::Classes)
    }

    /// [`Simulator::decide`], visiting nodes as `search` says (the property tests compare).
    pub fn decide_with(&mut self, pod: &Pod, search: Search) -> Result<Placement, Diagnosis> {
        let info = Arc::new(PodInfo::new(Arc::new(pod.clone())));
        let snap = self.cache.snapshot();
        let mut plan = PlanState::new(&snap);
        schedule_pod_with(
            &self.profile,
            &mut plan,
            &info,
            &mut CycleState::new(),
            search,
        )
    }

    /// Node equivalence classes in the cluster now.
    pub fn node_classes(&mut self) -> usize {
        self.cache.snapshot().classes().len()
    }

    /// Places the pod and keeps it there (as if bound). The pod's shape is observed first.
    pub fn schedule(&mut self, pod: Pod) -> Result<Placement, Diagnosis> {
        let info = Arc::new(PodInfo::new(Arc::new(pod)));
        self.cache.observe(&info);
        let snap = self.cache.snapshot();
        let mut plan = PlanState::new(&snap);
        let placement = schedule_pod(&self.profile, &mut plan, &info, &mut CycleState::new())?;
        drop(plan);
        drop(snap);
        self.commit(&info, &placement);
        Ok(placement)
    }

    /// Places a gang all or nothing.
    pub fn schedule_gang(
        &mut self,
        group: &PodGroup,
        pods: Vec<Pod>,
    ) -> Result<Vec<Placement>, Diagnosis> {
        let gang = gang_request(group, pods);
        for m in &gang.members {
            self.cache.observe(m);
        }
        let placements = self.plan_gang(&gang)?;
        let by_key: HashMap<&str, &Arc<PodInfo>> =
            gang.members.iter().map(|m| (&*m.key, m)).collect();
        for p in &placements {
            if let Some(info) = by_key.get(&*p.pod) {
                self.commit(info, p);
            }
        }
        Ok(placements)
    }

    /// Where a gang would go, without placing it (nor observing its shapes).
    pub fn decide_gang(
        &mut self,
        group: &PodGroup,
        pods: Vec<Pod>,
    ) -> Result<Vec<Placement>, Diagnosis> {
        let gang = gang_request(group, pods);
        self.plan_gang(&gang)
    }

    /// The service's path: a hard gang goes to the planner first (its plan validated by every
    /// filter), the greedy plan is the fallback.
    fn plan_gang(&mut self, gang: &GangRequest) -> Result<Vec<Placement>, Diagnosis> {
        let snap = self.cache.snapshot();
        let planner = self
            .planner
            .as_deref()
            .filter(|_| is_hard(gang, DEFAULT_HARD_GANG_SIZE));
        let budget = DEFAULT_PLAN_BUDGET;
        if let Some(plan) = planner.and_then(|p| plan_with(p, &self.profile, &snap, gang, budget)) {
            return Ok(plan);
        }
        Ok(place_gang(&self.profile, &PlanState::new(&snap), gang)?.placements)
    }

    fn commit(&mut self, info: &Arc<PodInfo>, placement: &Placement) {
        let mut bound = (*info.pod).clone();
        bound.spec.node_name = placement.node_name.to_string();
        bound.spec.device_assignments = placement.devices.clone();
        bound.status.start_time = Some(Time::default().max(chrono::Utc::now()));
        let bound = PodInfo::with_priority(Arc::new(bound), info.priority, info.never_preempts);
        self.cache.add_bound_pod(Arc::new(bound));
    }

    /// Adds a pod already bound (`spec.nodeName` set); devices it does not name are taken from
    /// the best free ones. For loading a cluster before measuring.
    pub fn add_bound(&mut self, pod: Pod) {
        self.cache
            .add_bound_pod(Arc::new(PodInfo::new(Arc::new(pod))));
    }

    /// Takes a pod off its node (finished or deleted).
    pub fn remove(&mut self, namespace: &str, name: &str) {
        self.cache.remove_pod(&format!("{namespace}/{name}"));
    }

    /// GPU thousandths allocated and in all (healthy devices).
    pub fn gpu_allocation(&mut self) -> (u64, u64) {
        let snap = self.cache.snapshot();
        let mut used = 0;
        let mut total = 0;
        for (_, n) in snap.nodes() {
            if let Some(set) = n.gpus() {
                let cap = u64::from(set.healthy.count_ones()) * 1000;
                total += cap;
                used += cap - set.free_total();
            }
        }
        (used, total)
    }
}
