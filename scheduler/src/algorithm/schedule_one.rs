//! One pod, one cycle: pre-filter, filter the candidate nodes, score the feasible ones, reserve
//! on the best. Runs on a [`PlanState`], so a gang's members see each other's reservations.

use std::sync::Arc;

use crate::cache::{NodeInfo, Placement, PlanState, PodInfo};
use crate::framework::{Code, CycleState, Profile, Status};

use super::diagnosis::Diagnosis;
use super::search::{Search, best_node};

/// Restricts a cycle to some nodes (a gang's topology domain), by index, sorted.
#[derive(Clone, Debug)]
pub struct NodeSubset {
    pub nodes: Arc<Vec<usize>>,
    /// Why other nodes are out, for the diagnosis.
    pub reason: String,
}

/// Runs the filters on one node; the first failure wins.
pub fn run_filters(
    profile: &Profile,
    state: &CycleState,
    pod: &PodInfo,
    node: &NodeInfo,
) -> Status {
    for p in &profile.filters {
        if let Some(f) = p.as_filter() {
            let s = f.filter(state, pod, node);
            if !s.is_success() {
                return s.with_plugin(p.name());
            }
        }
    }
    Status::success()
}

/// Every node's verdict, summarised (the slow path, only when nothing fits).
pub fn diagnose(
    profile: &Profile,
    state: &CycleState,
    pod: &PodInfo,
    plan: &PlanState<'_>,
) -> Diagnosis {
    let subset = state.get::<NodeSubset>();
    let mut d = Diagnosis {
        nodes: plan.snapshot().len(),
        ..Default::default()
    };
    for (i, node) in plan.nodes() {
        if let Some(s) = subset
            && s.nodes.binary_search(&i).is_err()
        {
            d.add(&s.reason);
            continue;
        }
        let s = run_filters(profile, state, pod, node);
        if s.code == Code::Unschedulable {
            d.resolvable = true;
        }
        for r in &s.reasons {
            d.add(r);
        }
    }
    d
}

/// Runs the pre-filters; a failure there applies to every node.
pub fn pre_filter(
    profile: &Profile,
    state: &mut CycleState,
    pod: &PodInfo,
    plan: &PlanState<'_>,
) -> Result<(), Diagnosis> {
    for p in &profile.pre_filters {
        if let Some(f) = p.as_pre_filter() {
            let s = f.pre_filter(state, pod, plan);
            if !s.is_success() {
                let mut d = Diagnosis::note(plan.snapshot().len(), s.reasons.join(", "));
                d.resolvable = s.code == Code::Unschedulable;
                return Err(d);
            }
        }
    }
    Ok(())
}

/// Feasible nodes for the pod (every candidate from the index that passes all filters).
pub fn feasible_nodes(
    profile: &Profile,
    state: &CycleState,
    pod: &PodInfo,
    plan: &PlanState<'_>,
) -> Vec<usize> {
    let candidates: Vec<usize> = match state.get::<NodeSubset>() {
        Some(s) => s.nodes.iter().copied().collect(),
        None => plan.candidates(&pod.request),
    };
    candidates
        .into_iter()
        .filter(|&i| {
            plan.node(i)
                .is_some_and(|n| run_filters(profile, state, pod, n).is_success())
        })
        .collect()
}

/// Weighted, normalised scores of the feasible nodes.
pub fn score_nodes(
    profile: &Profile,
    state: &CycleState,
    pod: &PodInfo,
    plan: &PlanState<'_>,
    feasible: &[usize],
) -> Vec<i64> {
    let mut total = vec![0i64; feasible.len()];
    if feasible.len() < 2 {
        return total;
    }
    let mut raw = vec![0i64; feasible.len()];
    for (p, weight) in &profile.scores {
        let Some(s) = p.as_score() else { continue };
        for (slot, &i) in raw.iter_mut().zip(feasible) {
            *slot = plan.node(i).map_or(0, |n| s.score(state, pod, n));
        }
        s.normalize(&mut raw);
        for (t, r) in total.iter_mut().zip(&raw) {
            *t += weight * r;
        }
    }
    total
}

/// Places one pod on the plan: the best feasible node, with devices reserved.
pub fn schedule_pod(
    profile: &Profile,
    plan: &mut PlanState<'_>,
    pod: &Arc<PodInfo>,
    state: &mut CycleState,
) -> Result<Placement, Diagnosis> {
    schedule_pod_with(profile, plan, pod, state, Search::Classes)
}

/// The best node by visiting every candidate node, each with every plugin (the reference).
fn best_node_per_node(
    profile: &Profile,
    state: &CycleState,
    pod: &PodInfo,
    plan: &PlanState<'_>,
) -> Option<usize> {
    let feasible = feasible_nodes(profile, state, pod, plan);
    let scores = score_nodes(profile, state, pod, plan, &feasible);
    // Highest score; ties to the lowest node index, so decisions are reproducible.
    feasible
        .iter()
        .zip(&scores)
        .max_by_key(|(i, s)| (**s, std::cmp::Reverse(**i)))
        .map(|(i, _)| *i)
}

/// [`schedule_pod`] with a choice of how nodes are visited.
pub fn schedule_pod_with(
    profile: &Profile,
    plan: &mut PlanState<'_>,
    pod: &Arc<PodInfo>,
    state: &mut CycleState,
    search: Search,
) -> Result<Placement, Diagnosis> {
    pre_filter(profile, state, pod, plan)?;
    let best = match search {
        Search::Classes => best_node(profile, state, pod, plan),
        Search::PerNode => best_node_per_node(profile, state, pod, plan),
    };
    let Some(idx) = best else {
        return Err(diagnose(profile, state, pod, plan));
    };
    let Some(node) = plan.node(idx) else {
        return Err(Diagnosis::note(
            plan.snapshot().len(),
            "chosen node vanished",
        ));
    };
    let mut placement = Placement {
        pod: pod.key.clone(),
        node: idx,
        node_name: node.name.clone(),
        devices: Vec::new(),
    };
    for (k, p) in profile.reserves.iter().enumerate() {
        let Some(r) = p.as_reserve() else { continue };
        let status = match r.reserve(state, pod, node, &mut placement) {
            Ok(s) => s,
            Err(e) => Status::error(e.to_string()),
        };
        if !status.is_success() {
            for q in profile.reserves[..k].iter().rev() {
                if let Some(r) = q.as_reserve() {
                    r.unreserve(state, pod, &placement);
                }
            }
            return Err(Diagnosis::note(
                plan.snapshot().len(),
                format!("{} on node {}: {}", p.name(), node.name, status),
            ));
        }
    }
    plan.reserve(pod, placement.clone());
    Ok(placement)
}

/// Asks the permit plugins about a reserved pod.
pub fn permit(profile: &Profile, state: &CycleState, pod: &PodInfo) -> Status {
    for p in &profile.permits {
        if let Some(pm) = p.as_permit() {
            let s = pm.permit(state, pod);
            if !s.is_success() {
                return s.with_plugin(p.name());
            }
        }
    }
    Status::success()
}
