//! Preemption that understands gangs: a pending pod or gang that cannot fit may evict
//! lower-priority work, whole gangs or nothing (never one member of a running gang), choosing
//! the victims that lose least: fewest GPU-hours of running work (GPUs × time running), then
//! lowest priority. Victims are tried cheapest first until the preemptor fits, then every victim
//! that is not needed is given back.

use std::collections::HashMap;
use std::sync::Arc;

use crate::cache::{PlanState, PodInfo, Snapshot};
use crate::framework::{CycleState, Profile};

use super::gang::{GangRequest, place_gang};
use super::schedule_one::schedule_pod;

/// Most victim units considered for one preemptor.
pub const MAX_VICTIM_UNITS: usize = 512;

/// Who wants room.
#[derive(Clone, Copy, Debug)]
pub enum Preemptor<'a> {
    Pod(&'a Arc<PodInfo>),
    Gang(&'a GangRequest),
}

impl Preemptor<'_> {
    fn priority(&self) -> i32 {
        match self {
            Preemptor::Pod(p) => p.priority,
            Preemptor::Gang(g) => g.priority(),
        }
    }
}

/// Victims to evict, and where the preemptor's pods are expected to go.
#[derive(Clone, Debug, Default)]
pub struct PreemptionPlan {
    pub victims: Vec<Arc<PodInfo>>,
    /// (pod, node) for each of the preemptor's pods.
    pub nominated: Vec<(Arc<str>, Arc<str>)>,
}

/// A set of pods that go together (a gang, or one pod).
#[derive(Debug)]
struct Unit {
    key: Arc<str>,
    pods: Vec<(usize, Arc<PodInfo>)>,
    gpu_seconds: f64,
    priority: i32,
}

fn units(snapshot: &Snapshot, below: i32, now: chrono::DateTime<chrono::Utc>) -> Vec<Unit> {
    let mut by_key: HashMap<Arc<str>, Unit> = HashMap::new();
    for (i, node) in snapshot.nodes() {
        for slot in &node.pods {
            let p = &slot.info;
            if p.is_terminating() {
                continue;
            }
            let key = p.gang.clone().unwrap_or_else(|| p.key.clone());
            let running = p
                .started()
                .map_or(0.0, |s| (now - s).num_milliseconds().max(0) as f64 / 1000.0);
            let u = by_key.entry(key.clone()).or_insert_with(|| Unit {
                key,
                pods: Vec::new(),
                gpu_seconds: 0.0,
                priority: i32::MIN,
            });
            u.gpu_seconds += p.request.gpu_milli() as f64 / 1000.0 * running;
            u.priority = u.priority.max(p.priority);
            u.pods.push((i, p.clone()));
        }
    }
    let mut out: Vec<Unit> = by_key
        .into_values()
        .filter(|u| u.priority < below)
        .collect();
    out.sort_by(|a, b| {
        a.gpu_seconds
            .total_cmp(&b.gpu_seconds)
            .then(a.priority.cmp(&b.priority))
            .then(a.key.cmp(&b.key))
    });
    out.truncate(MAX_VICTIM_UNITS);
    out
}

/// Where the preemptor lands on `plan`, if it fits.
fn fits(
    profile: &Profile,
    plan: &PlanState<'_>,
    who: Preemptor<'_>,
) -> Option<Vec<(Arc<str>, Arc<str>)>> {
    match who {
        Preemptor::Pod(p) => {
            let mut copy = plan.clone();
            let placement = schedule_pod(profile, &mut copy, p, &mut CycleState::new()).ok()?;
            Some(vec![(placement.pod, placement.node_name)])
        }
        Preemptor::Gang(g) => {
            let placed = place_gang(profile, plan, g).ok()?;
            Some(
                placed
                    .placements
                    .iter()
                    .map(|p| (p.pod.clone(), p.node_name.clone()))
                    .collect(),
            )
        }
    }
}

fn plan_without<'a>(snapshot: &'a Snapshot, chosen: &[&Unit]) -> PlanState<'a> {
    let mut plan = PlanState::new(snapshot);
    for u in chosen {
        for (node, p) in &u.pods {
            plan.evict(*node, &p.key);
        }
    }
    plan
}

/// The cheapest whole units to evict so the preemptor fits, or `None`.
pub fn find_victims(
    profile: &Profile,
    snapshot: &Snapshot,
    who: Preemptor<'_>,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<PreemptionPlan> {
    let all = units(snapshot, who.priority(), now);
    let mut chosen: Vec<&Unit> = Vec::new();
    let mut found = None;
    for u in &all {
        chosen.push(u);
        let plan = plan_without(snapshot, &chosen);
        if let Some(n) = fits(profile, &plan, who) {
            found = Some(n);
            break;
        }
    }
    let mut nominated = found?;
    // Give back every victim the preemptor does not need, most expensive first.
    let mut k = chosen.len();
    while k > 0 {
        k -= 1;
        let mut without = chosen.clone();
        without.remove(k);
        if let Some(n) = fits(profile, &plan_without(snapshot, &without), who) {
            chosen = without;
            nominated = n;
        }
    }
    Some(PreemptionPlan {
        victims: chosen
            .iter()
            .flat_map(|u| u.pods.iter().map(|(_, p)| p.clone()))
            .collect(),
        nominated,
    })
}
