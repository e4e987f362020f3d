//! InterPodAffinity: required pod affinity and anti-affinity (the pod's own, and existing pods'
//! anti-affinity against it) filter by topology domain (`topologyKey`); preferred terms score.
//!
//! The pre-filter runs only when the pod has terms or some existing pod has required
//! anti-affinity (plain pods skip it entirely). Required anti-affinity, both ways, reads the
//! snapshot's term index ([`crate::cache::terms`]): where the pods a term selects run, and where
//! the pods carrying a term that selects this pod run, counted by topology value as pods come
//! and go, so a group anti-affine to itself costs O(values) per decision, not O(pods). Other
//! terms visit only the pods the pod index gives for their selector
//! ([`PlanState::for_pods_selected`]). Filter reads one flag array per topology key by the node's
//! label value id.

use std::collections::HashMap;
use std::sync::Arc;

use drover_api::core::{Pod, PodAffinityTerm};

use crate::cache::labels::{Column, Lookup};
use crate::cache::terms::{Counts, Side, TermKind, TermSig, plan_counts};
use crate::cache::{NodeInfo, PlanState, PodInfo};
use crate::framework::{
    CycleState, Filter, NodeView, Plugin, PreFilter, RegistryError, Score, Status,
    normalize_min_max,
};

pub const NAME: &str = "InterPodAffinity";
pub const AFFINITY_REASON: &str = "didn't match pod affinity rules";
pub const ANTI_AFFINITY_REASON: &str = "didn't match pod anti-affinity rules";
pub const EXISTING_ANTI_AFFINITY_REASON: &str = "didn't satisfy existing pods anti-affinity rules";

#[derive(Debug, Default)]
pub struct InterPodAffinity;

pub fn new(_args: &serde_json::Value) -> Result<Arc<dyn Plugin>, RegistryError> {
    Ok(Arc::new(InterPodAffinity))
}

/// Calls `f` with the pods `t`'s selector may match (a superset; `f` matches).
fn pods_selected(
    cluster: &PlanState<'_>,
    t: &PodAffinityTerm,
    f: impl FnMut(&NodeInfo, &Arc<PodInfo>),
) {
    cluster.for_pods_selected(t.label_selector.as_ref(), f)
}

/// Flag of a domain where a pod a required affinity term selects runs.
const MATCHED: u8 = 1;
/// Flag of a domain where the pod's own required anti-affinity forbids it.
const OWN_ANTI: u8 = 1;
/// Flag of a domain where an existing pod's required anti-affinity forbids it.
const EXISTING_ANTI: u8 = 2;

/// Values of one topology key (where matching pods run), each with flags (what put it there),
/// by label value id where the key's column knows the node (no string work), by value
/// otherwise; a node is checked with two array reads.
#[derive(Debug, Default)]
struct DomainSet {
    key: String,
    values: HashMap<String, u8>,
    ids: Option<(Column, Vec<u8>)>,
}

impl DomainSet {
    fn new(key: &str, cluster: &PlanState<'_>) -> DomainSet {
        DomainSet {
            key: key.to_string(),
            values: HashMap::new(),
            ids: cluster.snapshot().label_column(key).map(|col| {
                let bound = col.column.id_bound();
                (col, vec![0; bound])
            }),
        }
    }

    /// Adds the domain of `node` with `flag` (nothing when it lacks the key).
    fn add(&mut self, node: &NodeInfo, flag: u8) {
        if let Some((col, by_id)) = &mut self.ids {
            match col.lookup(node) {
                Lookup::Value(id) => {
                    if let Some(b) = by_id.get_mut(id as usize) {
                        *b |= flag;
                        return;
                    }
                }
                Lookup::Absent => return,
                Lookup::Unknown => {}
            }
        }
        if let Some(v) = node.labels().get(&self.key) {
            match self.values.get_mut(v) {
                Some(f) => *f |= flag,
                None => {
                    self.values.insert(v.clone(), flag);
                }
            }
        }
    }

    /// Adds with `flag` the domains whose value id has a count above zero.
    fn add_counts(&mut self, counts: &Counts<'_>, flag: u8) {
        // Without a column no node has the key: there is no domain to add.
        if let Some((_, by_id)) = &mut self.ids {
            for (id, b) in by_id.iter_mut().enumerate() {
                if counts.at(id) > 0 {
                    *b |= flag;
                }
            }
        }
    }

    /// Folds the values added by name into the ids (once they are all in).
    fn finish(&mut self) {
        if let Some((col, by_id)) = &mut self.ids {
            self.values.retain(|v, f| match col.id(v) {
                Some(id) if (id as usize) < by_id.len() => {
                    by_id[id as usize] |= *f;
                    false
                }
                _ => true,
            });
        }
    }

    /// Whether the node's domain is in the set; `None` when the node lacks the key.
    fn contains(&self, node: &NodeInfo) -> Option<bool> {
        self.flags(node).map(|f| f != 0)
    }

    /// The flags of the node's domain (0: not in the set); `None` when the node lacks the key.
    fn flags(&self, node: &NodeInfo) -> Option<u8> {
        if let Some((col, by_id)) = &self.ids {
            match col.lookup(node) {
                Lookup::Value(id) => {
                    if let Some(b) = by_id.get(id as usize) {
                        return Some(*b);
                    }
                }
                Lookup::Absent => return None,
                Lookup::Unknown => {}
            }
        }
        let v = node.labels().get(&self.key)?;
        let mut f = self.values.get(v).copied().unwrap_or(0);
        if let Some((col, by_id)) = &self.ids
            && let Some(id) = col.id(v)
            && let Some(b) = by_id.get(id as usize)
        {
            f |= *b;
        }
        Some(f)
    }
}

/// The index of the set of `key` in `sets`, added when missing.
fn key_index(sets: &mut Vec<DomainSet>, key: &str, cluster: &PlanState<'_>) -> usize {
    match sets.iter().position(|d| d.key == key) {
        Some(i) => i,
        None => {
            sets.push(DomainSet::new(key, cluster));
            sets.len() - 1
        }
    }
}

/// The set of `key` in `sets`, added when missing.
fn domain_of<'s>(
    sets: &'s mut Vec<DomainSet>,
    key: &str,
    cluster: &PlanState<'_>,
) -> &'s mut DomainSet {
    let i = key_index(sets, key, cluster);
    &mut sets[i]
}

/// Domains computed by the pre-filter.
#[derive(Debug, Default)]
struct AffinityState {
    /// Per required affinity term: the values of its key where matching pods run.
    affinity: Vec<DomainSet>,
    /// No pod matches the affinity terms anywhere, but the pod matches them itself: the first
    /// pod of a group may go anywhere the key exists.
    first_of_group: bool,
    /// Domains where anti-affinity forbids this pod, one set per topology key: flagged
    /// [`OWN_ANTI`] (its own required terms) and/or [`EXISTING_ANTI`] (an existing pod's terms
    /// select it), so a node costs one lookup per key whichever side forbids it.
    anti: Vec<DomainSet>,
    /// Preferred terms: weight by (key, value).
    preferred: HashMap<(String, String), i64>,
    active: bool,
}

/// Whether `term`, written by a pod in `owner_ns`, selects `target`.
pub fn term_matches(term: &PodAffinityTerm, owner_ns: &str, target: &Pod) -> bool {
    let ns = &target.metadata.namespace;
    let ns_ok = if !term.namespaces.is_empty() {
        term.namespaces.iter().any(|n| n == ns)
    } else if term.namespace_selector.is_some() {
        true
    } else {
        ns == owner_ns
    };
    ns_ok
        && term
            .label_selector
            .as_ref()
            .is_some_and(|s| s.matches(&target.metadata.labels))
}

type Terms<'a> = (
    Vec<&'a PodAffinityTerm>,
    Vec<&'a PodAffinityTerm>,
    Vec<(i64, &'a PodAffinityTerm)>,
);

fn required(p: &Option<drover_api::core::PodAffinity>) -> Vec<&PodAffinityTerm> {
    p.as_ref()
        .map(|p| {
            p.required_during_scheduling_ignored_during_execution
                .iter()
                .collect()
        })
        .unwrap_or_default()
}

/// A pod's required anti-affinity terms.
fn required_anti(pod: &Pod) -> impl Iterator<Item = &PodAffinityTerm> {
    pod.spec
        .affinity
        .iter()
        .flat_map(|a| &a.pod_anti_affinity)
        .flat_map(|a| &a.required_during_scheduling_ignored_during_execution)
}

fn terms(pod: &Pod) -> Terms<'_> {
    let Some(a) = &pod.spec.affinity else {
        return (vec![], vec![], vec![]);
    };
    let mut preferred = Vec::new();
    for (sign, p) in [(1, &a.pod_affinity), (-1, &a.pod_anti_affinity)] {
        for w in p
            .iter()
            .flat_map(|p| &p.preferred_during_scheduling_ignored_during_execution)
        {
            preferred.push((sign * i64::from(w.weight), &w.pod_affinity_term));
        }
    }
    let (aff, anti) = (required(&a.pod_affinity), required(&a.pod_anti_affinity));
    (aff, anti, preferred)
}

impl Plugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
    fn node_view(&self, state: &CycleState, _: &PodInfo) -> NodeView {
        // Inactive: no terms of its own and no existing anti-affinity; nothing filters or scores.
        match state.get::<AffinityState>() {
            Some(s) if !s.active => NodeView::Neutral,
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

impl PreFilter for InterPodAffinity {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, cluster: &PlanState<'_>) -> Status {
        let (aff, anti, preferred) = terms(&pod.pod);
        let mut s = AffinityState::default();
        if aff.is_empty()
            && anti.is_empty()
            && preferred.is_empty()
            && cluster.anti_affinity_pods() == 0
        {
            state.insert(s);
            return Status::success();
        }
        s.active = true;
        s.affinity = aff
            .iter()
            .map(|t| DomainSet::new(&t.topology_key, cluster))
            .collect();
        let ns = pod.namespace();
        let mut any_affinity_match = false;
        for (i, t) in aff.iter().enumerate() {
            let d = &mut s.affinity[i];
            pods_selected(cluster, t, |node, q| {
                if q.key != pod.key && term_matches(t, ns, &q.pod) {
                    any_affinity_match = true;
                    d.add(node, MATCHED);
                }
            });
        }
        let terms = cluster.snapshot().pod_index().terms();
        for t in &anti {
            let d = domain_of(&mut s.anti, &t.topology_key, cluster);
            // A term some pod on a node carries too (a group anti-affine to itself) is counted
            // by the index: no pod to visit.
            let counted = terms
                .get(&TermSig::anti_affinity(t, ns))
                .and_then(|e| plan_counts(cluster, e, Side::Matched, &pod.key));
            match counted {
                Some(c) => d.add_counts(&c, OWN_ANTI),
                None => pods_selected(cluster, t, |node, q| {
                    if q.key != pod.key && term_matches(t, ns, &q.pod) {
                        d.add(node, OWN_ANTI);
                    }
                }),
            }
        }
        for (w, t) in &preferred {
            let p = &mut s.preferred;
            pods_selected(cluster, t, |node, q| {
                if q.key != pod.key
                    && term_matches(t, ns, &q.pod)
                    && let Some(v) = node.labels().get(&t.topology_key)
                {
                    *p.entry((t.topology_key.clone(), v.clone())).or_default() += w;
                }
            });
        }
        let sets = &mut s.anti;
        // Every term a pod on a node carries is in the index, with where its carriers
        // run; the plan's pods are recounted for the terms the index knows, and
        // visited for those it does not.
        for e in terms.selecting(pod.labels()) {
            if e.sig.kind != TermKind::AntiAffinity || !e.sig.selects(pod) {
                continue;
            }
            if let Some(c) = plan_counts(cluster, e, Side::Owners, &pod.key) {
                domain_of(sets, &e.sig.topology_key, cluster).add_counts(&c, EXISTING_ANTI);
            }
        }
        for n in cluster.changed_nodes() {
            let Some(node) = cluster.node(n) else {
                continue;
            };
            for q in node.pods.iter().map(|s| &s.info) {
                if q.key == pod.key || !q.has_required_anti_affinity() {
                    continue;
                }
                for t in required_anti(&q.pod) {
                    if terms
                        .get(&TermSig::anti_affinity(t, q.namespace()))
                        .is_none()
                        && term_matches(t, q.namespace(), &pod.pod)
                    {
                        domain_of(sets, &t.topology_key, cluster).add(node, EXISTING_ANTI);
                    }
                }
            }
        }
        s.first_of_group = !any_affinity_match && aff.iter().all(|t| term_matches(t, ns, &pod.pod));
        for d in s.affinity.iter_mut().chain(&mut s.anti) {
            d.finish();
        }
        state.insert(s);
        Status::success()
    }
}

impl Filter for InterPodAffinity {
    fn filter(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.get::<AffinityState>() else {
            return Status::success();
        };
        if !s.active {
            return Status::success();
        }
        for d in &s.affinity {
            match d.contains(node) {
                Some(true) => {}
                Some(false) if s.first_of_group => {}
                _ => return Status::unresolvable(AFFINITY_REASON),
            }
        }
        let flags = s.anti.iter().fold(0, |f, d| f | d.flags(node).unwrap_or(0));
        if flags & OWN_ANTI != 0 {
            return Status::unschedulable(ANTI_AFFINITY_REASON);
        }
        if flags & EXISTING_ANTI != 0 {
            return Status::unschedulable(EXISTING_ANTI_AFFINITY_REASON);
        }
        Status::success()
    }
}

impl Score for InterPodAffinity {
    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(s) = state.get::<AffinityState>() else {
            return 0;
        };
        if s.preferred.is_empty() {
            return 0;
        }
        s.preferred
            .iter()
            .filter(|((k, v), _)| node.labels().get(k) == Some(v))
            .map(|(_, w)| *w)
            .sum()
    }

    fn normalize(&self, scores: &mut [i64]) {
        normalize_min_max(scores, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Snapshot;
    use crate::framework::Code;
    use crate::testing::{node, pod, selector};
    use drover_api::core::{Affinity, PodAffinity};

    fn term(k: &str, v: &str, key: &str) -> PodAffinityTerm {
        PodAffinityTerm {
            label_selector: Some(selector(k, v)),
            topology_key: key.into(),
            ..Default::default()
        }
    }

    fn required(aff: bool, t: PodAffinityTerm) -> Affinity {
        let p = PodAffinity {
            required_during_scheduling_ignored_during_execution: vec![t],
            ..Default::default()
        };
        if aff {
            Affinity {
                pod_affinity: Some(p),
                ..Default::default()
            }
        } else {
            Affinity {
                pod_anti_affinity: Some(p),
                ..Default::default()
            }
        }
    }

    #[test]
    fn table() {
        // Rack r1 runs a "db" pod on n1 (with anti-affinity to "noisy"); rack r2 is empty.
        let mut snap = Snapshot::default();
        let mut n1 = node("n1").label("rack", "r1").info();
        let db = pod("ns", "db")
            .label("app", "db")
            .affinity(required(false, term("app", "noisy", "rack")))
            .info();
        n1.add_pod(db, Arc::new(vec![]));
        snap.put(n1);
        snap.put(node("n2").label("rack", "r1").info());
        snap.put(node("n3").label("rack", "r2").info());
        snap.anti_affinity_pods = 1;
        let cases = [
            (
                "plain pod anywhere",
                pod("ns", "p").info(),
                [Code::Success; 3],
            ),
            (
                "affinity to db: rack r1",
                pod("ns", "p")
                    .affinity(required(true, term("app", "db", "rack")))
                    .info(),
                [
                    Code::Success,
                    Code::Success,
                    Code::UnschedulableAndUnresolvable,
                ],
            ),
            (
                "anti-affinity to db: rack r2",
                pod("ns", "p")
                    .affinity(required(false, term("app", "db", "rack")))
                    .info(),
                [Code::Unschedulable, Code::Unschedulable, Code::Success],
            ),
            (
                "db's anti-affinity keeps noisy away",
                pod("ns", "p").label("app", "noisy").info(),
                [Code::Unschedulable, Code::Unschedulable, Code::Success],
            ),
            (
                "first of a self-affine group",
                pod("ns", "p")
                    .label("app", "web")
                    .affinity(required(true, term("app", "web", "rack")))
                    .info(),
                [Code::Success; 3],
            ),
        ];
        for (name, p, want) in cases {
            let plan = PlanState::new(&snap);
            let mut st = CycleState::new();
            InterPodAffinity.pre_filter(&mut st, &p, &plan);
            let got: Vec<Code> = (0..3)
                .map(|i| InterPodAffinity.filter(&st, &p, plan.node(i).unwrap()).code)
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }
}
