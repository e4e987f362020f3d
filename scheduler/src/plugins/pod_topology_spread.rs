//! PodTopologySpread: `topologySpreadConstraints`. `DoNotSchedule` constraints filter (placing
//! the pod must keep the skew between domains within `maxSkew`); all constraints score (fewer
//! matching pods in the node's domain is better). A constraint that some pod on a node carries
//! too (every pod of a spread group does) has its counts by topology value kept by the
//! snapshot's term index ([`crate::cache::terms`]) and its domains by the label column, so the
//! pre-filter visits no pod and no node; otherwise it counts the pods the pod index gives for
//! the selector. Filter reads counts by the node's label value id.

use std::collections::HashMap;
use std::sync::Arc;

use drover_api::core::unsatisfiable_action;
use drover_api::selector::LabelSelector;

use crate::cache::labels::{Column, Lookup};
use crate::cache::terms::{Side, TermSig, plan_counts};
use crate::cache::{NodeInfo, PlanState, PodInfo};
use crate::framework::{
    CycleState, Filter, NodeView, Plugin, PreFilter, RegistryError, Score, Status,
    normalize_min_max,
};
use crate::shared::node_selection::node_matches;

pub const NAME: &str = "PodTopologySpread";
pub const REASON: &str = "didn't match pod topology spread constraints";
pub const MISSING_LABEL_REASON: &str =
    "didn't match pod topology spread constraints (missing required label)";

#[derive(Debug, Default)]
pub struct PodTopologySpread;

pub fn new(_args: &serde_json::Value) -> Result<Arc<dyn Plugin>, RegistryError> {
    Ok(Arc::new(PodTopologySpread))
}

#[derive(Debug)]
struct Constraint {
    key: String,
    max_skew: i64,
    hard: bool,
    self_match: i64,
    counts: HashMap<String, i64>,
    min: i64,
    /// The key's label column and the counts by value id (a node lookup without strings).
    column: Option<Column>,
    counts_by_id: Vec<i64>,
}

impl Constraint {
    /// Matching pods in the node's domain; `None` when the node lacks the key.
    fn count_at(&self, node: &NodeInfo) -> Option<i64> {
        match self.column.as_ref().map(|c| c.lookup(node)) {
            Some(Lookup::Value(id)) => {
                Some(self.counts_by_id.get(id as usize).copied().unwrap_or(0))
            }
            Some(Lookup::Absent) => None,
            _ => node.labels().get(&self.key).map(|v| {
                match self.column.as_ref().and_then(|c| c.id(v)) {
                    Some(id) => self.counts_by_id.get(id as usize).copied().unwrap_or(0),
                    None => self.counts.get(v).copied().unwrap_or(0),
                }
            }),
        }
    }
}

/// A node's domain for a constraint on `key`: its value id (no node constraints, known node), or
/// its value when it has the key and the pod's node constraints admit it; `None`: not counted.
fn domain_of<'n>(
    node: &'n NodeInfo,
    any_node: bool,
    column: Option<&Column>,
    key: &str,
    pod: &PodInfo,
) -> Option<Result<u32, &'n String>> {
    if any_node && let Some(Lookup::Value(id)) = column.map(|c| c.lookup(node)) {
        return Some(Ok(id));
    }
    let v = node.labels().get(key)?;
    node_matches(&pod.pod, &node.name, node.labels()).then_some(Err(v))
}

#[derive(Debug, Default)]
struct SpreadState(Vec<Constraint>);

impl Plugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }
    fn node_view(&self, state: &CycleState, _: &PodInfo) -> NodeView {
        match state.get::<SpreadState>() {
            Some(SpreadState(cs)) if cs.is_empty() => NodeView::Neutral,
            _ => NodeView::PerNode,
        }
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilter> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn Filter> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn Score> {
        Some(self)
    }
}

impl PreFilter for PodTopologySpread {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, cluster: &PlanState<'_>) -> Status {
        let mut out = Vec::new();
        for c in &pod.pod.spec.topology_spread_constraints {
            let selector = c.label_selector.clone().unwrap_or_else(|| LabelSelector {
                match_labels: Default::default(),
                match_expressions: vec![],
            });
            let matches = |p: &PodInfo| {
                c.label_selector.is_some()
                    && p.namespace() == pod.namespace()
                    && !p.is_terminating()
                    && selector.matches(p.labels())
            };
            let column = cluster.snapshot().label_column(&c.topology_key);
            // Without node constraints every node counts: its domain by id, no string work.
            let spec = &pod.pod.spec;
            let any_node = spec.node_selector.is_empty()
                && spec
                    .affinity
                    .as_ref()
                    .and_then(|a| a.node_affinity.as_ref())
                    .is_none();
            let mut by_id: Vec<Option<i64>> =
                vec![None; column.as_ref().map_or(0, |c| c.column.id_bound())];
            let mut counts: HashMap<String, i64> = HashMap::new();
            // A constraint some pod on a node carries too (a group spread over zones) is
            // counted by the index, and its domains are the values nodes have: no pod or node
            // to visit.
            let indexed = any_node
                .then(|| TermSig::spread(c, pod.namespace()))
                .flatten()
                .and_then(|sig| cluster.snapshot().pod_index().terms().get(&sig))
                .and_then(|e| plan_counts(cluster, e, Side::Matched, &pod.key));
            if let (Some(n), Some(col)) = (&indexed, &column) {
                for (id, d) in by_id.iter_mut().enumerate() {
                    if col.column.nodes_with(id as u32) > 0 {
                        *d = Some(n.at(id));
                    }
                }
            }
            // Every eligible node's domain counts, matching pods or not (the minimum is over
            // domains); then each matching pod counts in its node's domain.
            let nodes = cluster.nodes().filter(|_| indexed.is_none());
            for (_, node) in nodes {
                match domain_of(node, any_node, column.as_ref(), &c.topology_key, pod) {
                    Some(Ok(id)) => {
                        by_id[id as usize].get_or_insert(0);
                    }
                    Some(Err(v)) => {
                        counts.entry(v.clone()).or_default();
                    }
                    None => {}
                }
            }
            let count = |node: &NodeInfo, q: &Arc<PodInfo>| {
                if q.key == pod.key || !matches(q) {
                    return;
                }
                match domain_of(node, any_node, column.as_ref(), &c.topology_key, pod) {
                    Some(Ok(id)) => *by_id[id as usize].get_or_insert(0) += 1,
                    Some(Err(v)) => *counts.entry(v.clone()).or_default() += 1,
                    None => {}
                }
            };
            // Without a selector nothing matches.
            if indexed.is_none() && c.label_selector.is_some() {
                cluster.for_pods_selected(c.label_selector.as_ref(), count)
            }
            if let Some(col) = &column {
                counts.retain(|v, n| match col.id(v) {
                    Some(id) => {
                        *by_id[id as usize].get_or_insert(0) += *n;
                        false
                    }
                    None => true,
                });
            }
            let counts_by_id: Vec<i64> = by_id.iter().map(|n| n.unwrap_or(0)).collect();
            // Domains: by id, and by name for values the column lacks.
            let domains = by_id.iter().flatten().chain(counts.values());
            let mut min = domains.clone().copied().min().unwrap_or(0);
            if c.min_domains
                .is_some_and(|m| (domains.count() as i64) < i64::from(m))
            {
                min = 0;
            }
            out.push(Constraint {
                key: c.topology_key.clone(),
                max_skew: i64::from(c.max_skew.max(1)),
                hard: c.when_unsatisfiable != unsatisfiable_action::SCHEDULE_ANYWAY,
                self_match: i64::from(matches(pod)),
                counts,
                min,
                column,
                counts_by_id,
            });
        }
        state.insert(SpreadState(out));
        Status::success()
    }
}

impl Filter for PodTopologySpread {
    fn filter(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(SpreadState(cs)) = state.get::<SpreadState>() else {
            return Status::success();
        };
        for c in cs.iter().filter(|c| c.hard) {
            let Some(here) = c.count_at(node) else {
                return Status::unresolvable(MISSING_LABEL_REASON);
            };
            if here + c.self_match - c.min > c.max_skew {
                return Status::unschedulable(REASON);
            }
        }
        Status::success()
    }
}

impl Score for PodTopologySpread {
    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(SpreadState(cs)) = state.get::<SpreadState>() else {
            return 0;
        };
        cs.iter().map(|c| c.count_at(node).unwrap_or(0)).sum()
    }

    fn normalize(&self, scores: &mut [i64]) {
        normalize_min_max(scores, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Snapshot;
    use crate::framework::Code;
    use crate::testing::{node, pod, selector};
    use drover_api::core::TopologySpreadConstraint;

    #[test]
    fn table() {
        let mut snap = Snapshot::default();
        let mut a = node("a").label("zone", "z1").info();
        for i in 0..2 {
            a.add_pod(
                pod("ns", &format!("w{i}")).label("app", "web").info(),
                Arc::new(vec![]),
            );
        }
        snap.put(a);
        snap.put(node("b").label("zone", "z2").info());
        snap.put(node("c").info());
        let spread = |skew, when: &str| TopologySpreadConstraint {
            max_skew: skew,
            topology_key: "zone".into(),
            when_unsatisfiable: when.into(),
            label_selector: Some(selector("app", "web")),
            ..Default::default()
        };
        let cases = [
            (
                "skew 1 forbids the fuller zone",
                pod("ns", "p")
                    .label("app", "web")
                    .spread(spread(1, "DoNotSchedule"))
                    .info(),
                [
                    Code::Unschedulable,
                    Code::Success,
                    Code::UnschedulableAndUnresolvable,
                ],
            ),
            (
                "skew 3 allows it",
                pod("ns", "p")
                    .label("app", "web")
                    .spread(spread(3, "DoNotSchedule"))
                    .info(),
                [
                    Code::Success,
                    Code::Success,
                    Code::UnschedulableAndUnresolvable,
                ],
            ),
            (
                "soft constraint never filters",
                pod("ns", "p")
                    .label("app", "web")
                    .spread(spread(1, "ScheduleAnyway"))
                    .info(),
                [Code::Success; 3],
            ),
        ];
        for (name, p, want) in cases {
            let plan = PlanState::new(&snap);
            let mut st = CycleState::new();
            PodTopologySpread.pre_filter(&mut st, &p, &plan);
            let got: Vec<Code> = (0..3)
                .map(|i| {
                    PodTopologySpread
                        .filter(&st, &p, plan.node(i).unwrap())
                        .code
                })
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }
}
