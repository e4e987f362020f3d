//! The required anti-affinity terms and topology spread constraints of the pods on nodes, each
//! with its counts by topology value, kept incrementally as pods are added, removed, assumed and
//! forgotten (see [`super::pod_index::PodIndex`], which owns a [`TermIndex`]).
//!
//! A term is known by its [`TermSig`]: what it selects (namespaces, label selector), its topology
//! key and whether it is an anti-affinity term or a spread constraint. Per term the index keeps,
//! by value id of the key's label column ([`super::labels::LabelIndex`]):
//!
//! - `matched`: pods on nodes the term selects (a pod whose own term it is counts too: the
//!   plugins take the incoming pod itself out when it is already on a node);
//! - `owners`: pods that carry the term (where existing anti-affinity forbids a pod it selects).
//!
//! A pod with a term its group shares (a Deployment's anti-affinity to itself, its spread
//! constraint) then finds the domains it must avoid, or the counts it must spread over, in one
//! lookup instead of matching every pod of the group: O(1) per pod add/remove and O(values) per
//! decision, where scanning was O(pods) per decision. A term lives while some pod on a node
//! carries it; it is counted from the pods-by-label index when it first appears. Terms whose
//! selector needs no label (empty, `NotIn`, `DoesNotExist` only) keep only their owners; their
//! matches are still scanned.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use drover_api::core::{Pod, PodAffinityTerm, TopologySpreadConstraint};
use drover_api::selector::LabelSelector;

use super::labels::LabelIndex;
use super::node_info::NodeInfo;
use super::plan::PlanState;
use super::pod_index::{Narrow, narrow};
use super::pod_info::PodInfo;

/// What a term is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TermKind {
    /// A required pod anti-affinity term.
    AntiAffinity,
    /// A topology spread constraint (terminating pods do not count).
    Spread,
}

/// The namespaces a term selects pods in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The owner's namespace.
    Own(String),
    /// These namespaces (sorted).
    Listed(Vec<String>),
    /// Any namespace (a `namespaceSelector` without `namespaces`, as the plugin reads it).
    Any,
}

/// A term, independent of the pod that carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TermSig {
    pub kind: TermKind,
    pub scope: Scope,
    pub topology_key: String,
    pub selector: Option<LabelSelector>,
}

// By hand: `LabelSelector` has no `Hash`; this hashes every field `Eq` compares.
impl Hash for TermSig {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.kind.hash(h);
        self.scope.hash(h);
        self.topology_key.hash(h);
        if let Some(s) = &self.selector {
            s.match_labels.hash(h);
            for r in &s.match_expressions {
                r.key.hash(h);
                r.operator.hash(h);
                r.values.hash(h);
            }
        }
    }
}

impl TermSig {
    /// A required anti-affinity term written by a pod in `owner_ns`.
    pub fn anti_affinity(t: &PodAffinityTerm, owner_ns: &str) -> TermSig {
        let scope = if !t.namespaces.is_empty() {
            let mut ns = t.namespaces.clone();
            ns.sort_unstable();
            ns.dedup();
            Scope::Listed(ns)
        } else if t.namespace_selector.is_some() {
            Scope::Any
        } else {
            Scope::Own(owner_ns.to_string())
        };
        TermSig {
            kind: TermKind::AntiAffinity,
            scope,
            topology_key: t.topology_key.clone(),
            selector: t.label_selector.clone(),
        }
    }

    /// A spread constraint of a pod in `ns` (`None`: without a selector it counts nothing).
    pub fn spread(c: &TopologySpreadConstraint, ns: &str) -> Option<TermSig> {
        Some(TermSig {
            kind: TermKind::Spread,
            scope: Scope::Own(ns.to_string()),
            topology_key: c.topology_key.clone(),
            selector: Some(c.label_selector.clone()?),
        })
    }

    /// Whether the term selects `q` (the same rule as `term_matches` for anti-affinity, and the
    /// spread pre-filter's for spread).
    pub fn selects(&self, q: &PodInfo) -> bool {
        let ns = q.namespace();
        let ns_ok = match &self.scope {
            Scope::Own(n) => n == ns,
            Scope::Listed(l) => l.iter().any(|n| n == ns),
            Scope::Any => true,
        };
        ns_ok
            && !(self.kind == TermKind::Spread && q.is_terminating())
            && self
                .selector
                .as_ref()
                .is_some_and(|s| s.matches(q.labels()))
    }
}

/// The terms a pod carries (each once).
pub fn sigs_of(pod: &Pod) -> Vec<TermSig> {
    let ns = &pod.metadata.namespace;
    let mut out: Vec<TermSig> = Vec::new();
    let anti = pod
        .spec
        .affinity
        .iter()
        .flat_map(|a| &a.pod_anti_affinity)
        .flat_map(|a| &a.required_during_scheduling_ignored_during_execution)
        .map(|t| TermSig::anti_affinity(t, ns));
    let spread = pod
        .spec
        .topology_spread_constraints
        .iter()
        .filter_map(|c| TermSig::spread(c, ns));
    for s in anti.chain(spread) {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// Counts by value id (ids past the end count 0).
fn bump(v: &mut Vec<u32>, id: Option<u32>, up: bool) {
    let Some(id) = id else { return };
    let i = id as usize;
    if v.len() <= i {
        v.resize(i + 1, 0);
    }
    v[i] = if up { v[i] + 1 } else { v[i].saturating_sub(1) };
}

/// One term and its counts.
#[derive(Clone, Debug)]
pub struct TermCounts {
    pub sig: TermSig,
    /// Pods on nodes that carry it (the term goes with the last).
    carriers: usize,
    /// Pods it selects, by value id of its key; `None` when its selector needs no label (the
    /// index does not count those).
    matched: Option<Vec<u32>>,
    /// Pods that carry it, by value id of its key.
    owners: Vec<u32>,
}

impl TermCounts {
    /// Pods the term selects by value id, if counted.
    pub fn matched(&self) -> Option<&[u32]> {
        self.matched.as_deref()
    }

    /// Pods carrying the term by value id.
    pub fn owners(&self) -> &[u32] {
        &self.owners
    }
}

/// Terms by what a pod must carry for them to select it.
#[derive(Clone, Debug, Default)]
struct Targets {
    by_pair: HashMap<String, HashMap<String, Vec<usize>>>,
    by_key: HashMap<String, Vec<usize>>,
    any: Vec<usize>,
}

impl Targets {
    fn edit(&mut self, sig: &TermSig, id: usize, add: bool) {
        let edit = |v: &mut Vec<usize>| {
            if add {
                v.push(id);
            } else {
                v.retain(|&i| i != id);
            }
        };
        match narrow(sig.selector.as_ref()) {
            Narrow::Nothing => {}
            Narrow::Values(k, vs) => {
                let m = self.by_pair.entry(k.to_string()).or_default();
                for v in vs {
                    edit(m.entry(v.to_string()).or_default());
                    if m.get(v).is_some_and(Vec::is_empty) {
                        m.remove(v);
                    }
                }
                if m.is_empty() {
                    self.by_pair.remove(k);
                }
            }
            Narrow::Key(k) => {
                edit(self.by_key.entry(k.to_string()).or_default());
                if self.by_key.get(k).is_some_and(Vec::is_empty) {
                    self.by_key.remove(k);
                }
            }
            Narrow::All => edit(&mut self.any),
        }
    }

    /// Terms that may select a pod with these labels (each once: a pod has one value per key
    /// and a term is filed under one key).
    fn for_labels<'a>(
        &'a self,
        labels: &'a BTreeMap<String, String>,
    ) -> impl Iterator<Item = usize> + 'a {
        labels
            .iter()
            .flat_map(move |(k, v)| {
                let pair = self.by_pair.get(k).and_then(|m| m.get(v));
                pair.into_iter().chain(self.by_key.get(k)).flatten()
            })
            .chain(&self.any)
            .copied()
    }
}

/// Every term carried by a pod on a node, with its counts.
#[derive(Clone, Debug, Default)]
pub struct TermIndex {
    terms: Vec<Option<Arc<TermCounts>>>,
    free: Vec<usize>,
    ids: HashMap<TermSig, usize>,
    targets: Targets,
}

impl TermIndex {
    /// The term, if some pod on a node carries it.
    pub fn get(&self, sig: &TermSig) -> Option<&TermCounts> {
        let id = *self.ids.get(sig)?;
        self.terms.get(id)?.as_deref()
    }

    /// Terms that may select a pod with these labels (`TermSig::selects` decides).
    pub fn selecting<'a>(
        &'a self,
        labels: &'a BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'a TermCounts> + 'a {
        self.targets
            .for_labels(labels)
            .filter_map(|id| self.terms.get(id)?.as_deref())
    }

    /// Terms carried by pods on nodes.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Counts pod `pod` on node `node` (already in the pods-by-label index); `scan` visits the
    /// (pod, node) pairs a selector may match, to count a term that appears.
    pub(super) fn add(
        &mut self,
        node: usize,
        pod: &PodInfo,
        labels: &LabelIndex,
        scan: impl Fn(&LabelSelector, &mut dyn FnMut(&PodInfo, usize)),
    ) {
        self.count_match(node, pod, labels, true);
        for sig in sigs_of(&pod.pod) {
            let at = labels.id_at(&sig.topology_key, node);
            if let Some(&id) = self.ids.get(&sig) {
                if let Some(t) = self.terms[id].as_mut() {
                    let t = Arc::make_mut(t);
                    t.carriers += 1;
                    bump(&mut t.owners, at, true);
                }
                continue;
            }
            let mut t = TermCounts {
                matched: None,
                owners: Vec::new(),
                carriers: 1,
                sig: sig.clone(),
            };
            bump(&mut t.owners, at, true);
            if !matches!(narrow(sig.selector.as_ref()), Narrow::All) {
                let mut m = Vec::new();
                if let Some(sel) = &sig.selector {
                    scan(sel, &mut |q, n| {
                        if sig.selects(q) {
                            bump(&mut m, labels.id_at(&sig.topology_key, n), true);
                        }
                    });
                }
                t.matched = Some(m);
            }
            let id = match self.free.pop() {
                Some(id) => id,
                None => {
                    self.terms.push(None);
                    self.terms.len() - 1
                }
            };
            self.terms[id] = Some(Arc::new(t));
            self.targets.edit(&sig, id, true);
            self.ids.insert(sig, id);
        }
    }

    /// Takes pod `pod` on node `node` out (before the pods-by-label index drops it).
    pub(super) fn remove(&mut self, node: usize, pod: &PodInfo, labels: &LabelIndex) {
        for sig in sigs_of(&pod.pod) {
            let Some(&id) = self.ids.get(&sig) else {
                continue;
            };
            let Some(t) = self.terms[id].as_mut() else {
                continue;
            };
            let t = Arc::make_mut(t);
            t.carriers -= 1;
            if t.carriers == 0 {
                self.terms[id] = None;
                self.free.push(id);
                self.targets.edit(&sig, id, false);
                self.ids.remove(&sig);
            } else {
                bump(&mut t.owners, labels.id_at(&sig.topology_key, node), false);
            }
        }
        self.count_match(node, pod, labels, false);
    }

    /// Counts `pod` in (or out of) every term that selects it.
    fn count_match(&mut self, node: usize, pod: &PodInfo, labels: &LabelIndex, up: bool) {
        let ids: Vec<usize> = self.targets.for_labels(pod.labels()).collect();
        for id in ids {
            let Some(t) = self.terms[id].as_mut() else {
                continue;
            };
            if t.matched.is_none() || !t.sig.selects(pod) {
                continue;
            }
            let at = labels.id_at(&t.sig.topology_key, node);
            if let Some(m) = Arc::make_mut(t).matched.as_mut() {
                bump(m, at, up);
            }
        }
    }
}

/// Which counts of a term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The pods it selects.
    Matched,
    /// The pods that carry it.
    Owners,
}

/// A term's counts by value id: the snapshot's, or recounted for a plan.
#[derive(Debug)]
pub enum Counts<'a> {
    Snapshot(&'a [u32]),
    Plan(Vec<i64>),
}

impl Counts<'_> {
    /// The count of value id `id`.
    pub fn at(&self, id: usize) -> i64 {
        match self {
            Counts::Snapshot(c) => c.get(id).map_or(0, |&n| i64::from(n)),
            Counts::Plan(c) => c.get(id).copied().unwrap_or(0),
        }
    }
}

/// A term's counts by value id as `plan` sees the cluster, without pod `exclude` (the pod
/// being decided, which the plugins never count against itself); `None` when the index does
/// not count this side of the term. Nodes the plan changed, and the node `exclude` is on, are
/// recounted from their pods; every other node's pods are as the snapshot counted them.
pub fn plan_counts<'a>(
    plan: &PlanState<'a>,
    t: &'a TermCounts,
    side: Side,
    exclude: &str,
) -> Option<Counts<'a>> {
    let base = match side {
        Side::Matched => t.matched()?,
        Side::Owners => t.owners(),
    };
    let snap = plan.snapshot();
    let mut recount = plan.changed_nodes();
    if let Some(n) = snap.pod_index().node_of(exclude)
        && !recount.contains(&n)
    {
        recount.push(n);
    }
    if recount.is_empty() {
        return Some(Counts::Snapshot(base));
    }
    let labels = snap.label_column(&t.sig.topology_key);
    let bound = labels.as_ref().map_or(0, |c| c.column.id_bound());
    let mut out: Vec<i64> = (0..bound.max(base.len()))
        .map(|i| i64::from(base.get(i).copied().unwrap_or(0)))
        .collect();
    let counts = |q: &PodInfo| match side {
        Side::Matched => t.sig.selects(q),
        Side::Owners => sigs_of(&q.pod).contains(&t.sig),
    };
    let id_of = |n: &NodeInfo| {
        let v = n.labels().get(&t.sig.topology_key)?;
        labels.as_ref()?.id(v)
    };
    for n in recount {
        // Out: what the snapshot counted on the node; in: what the plan has there.
        if let Some(node) = snap.node(n)
            && let Some(id) = id_of(node)
        {
            let gone = node.pods.iter().filter(|s| counts(&s.info)).count();
            out[id as usize] -= gone as i64;
        }
        if let Some(node) = plan.node(n)
            && let Some(id) = id_of(node)
        {
            let here = node
                .pods
                .iter()
                .filter(|s| &*s.info.key != exclude && counts(&s.info))
                .count();
            out[id as usize] += here as i64;
        }
    }
    Some(Counts::Plan(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{Cache, Placement, Snapshot};
    use crate::testing::{node, pod, selector};
    use drover_api::core::{Affinity, PodAffinity};

    const HOST: &str = "kubernetes.io/hostname";

    /// A pod of group `g` in `ns`: anti-affine to its group by host, spread over zones.
    fn member(ns: &str, name: &str, g: &str) -> Arc<PodInfo> {
        pod(ns, name)
            .label("app", g)
            .affinity(Affinity {
                pod_anti_affinity: Some(PodAffinity {
                    required_during_scheduling_ignored_during_execution: vec![PodAffinityTerm {
                        label_selector: Some(selector("app", g)),
                        topology_key: HOST.into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            })
            .spread(TopologySpreadConstraint {
                max_skew: 1,
                topology_key: "zone".into(),
                when_unsatisfiable: "DoNotSchedule".into(),
                label_selector: Some(selector("app", g)),
                ..Default::default()
            })
            .info()
    }

    fn sigs(p: &PodInfo) -> (TermSig, TermSig) {
        let s = sigs_of(&p.pod);
        (s[0].clone(), s[1].clone())
    }

    /// Counts by value name, for reading.
    fn by_value(snap: &Snapshot, key: &str, counts: &[u32]) -> Vec<(String, u32)> {
        let col = snap.label_column(key).expect("column");
        let mut v: Vec<(String, u32)> = col
            .column
            .values()
            .map(|(v, id)| (v.to_string(), counts.get(id as usize).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect();
        v.sort();
        v
    }

    fn cluster() -> Cache {
        let mut c = Cache::new();
        for (n, z) in [("n0", "z0"), ("n1", "z0"), ("n2", "z1")] {
            c.upsert_node(Arc::new(node(n).label(HOST, n).label("zone", z).build()));
        }
        c
    }

    fn place(c: &mut Cache, p: &Arc<PodInfo>, n: &str) {
        let snap = c.snapshot();
        let idx = snap.index_of(n).expect("node");
        c.assume(
            p.clone(),
            &Placement {
                pod: p.key.clone(),
                node: idx,
                node_name: n.into(),
                devices: vec![],
            },
        );
    }

    #[test]
    fn counts_follow_pods_assumed_bound_forgotten_and_removed() {
        let mut c = cluster();
        let (a0, a1, a2) = (
            member("ns", "a0", "a"),
            member("ns", "a1", "a"),
            member("ns", "a2", "a"),
        );
        // A pod of group a in another namespace: selected by nothing of ns's group.
        let other = member("other", "a0", "a");
        let (anti, spread) = sigs(&a0);
        place(&mut c, &a0, "n0");
        place(&mut c, &a1, "n2");
        place(&mut c, &other, "n1");
        let snap = c.snapshot();
        let t = snap.pod_index().terms().get(&anti).expect("anti term");
        let host = |v: &[u32]| by_value(&snap, HOST, v);
        assert_eq!(
            host(t.matched().expect("counted")),
            [("n0".into(), 1), ("n2".into(), 1)]
        );
        assert_eq!(host(t.owners()), [("n0".into(), 1), ("n2".into(), 1)]);
        let s = snap.pod_index().terms().get(&spread).expect("spread term");
        let zone = by_value(&snap, "zone", s.matched().expect("counted"));
        assert_eq!(zone, [("z0".into(), 1), ("z1".into(), 1)]);
        // Other's term selects other alone (its own namespace).
        let (other_anti, _) = sigs(&other);
        let t = snap
            .pod_index()
            .terms()
            .get(&other_anti)
            .expect("other's term");
        assert_eq!(host(t.matched().expect("counted")), [("n1".into(), 1)]);
        drop(snap);

        // Confirmed by the watch: no change. A binding that failed: forgotten.
        c.add_bound_pod(Arc::new(PodInfo::new(Arc::new({
            let mut p = (*a0.pod).clone();
            p.spec.node_name = "n0".into();
            p
        }))));
        c.forget(&a1.key);
        place(&mut c, &a2, "n1");
        let snap = c.snapshot();
        let t = snap.pod_index().terms().get(&anti).expect("anti term");
        let host = |v: &[u32]| by_value(&snap, HOST, v);
        assert_eq!(
            host(t.matched().expect("counted")),
            [("n0".into(), 1), ("n1".into(), 1)]
        );
        let s = snap.pod_index().terms().get(&spread).expect("spread term");
        let zone = by_value(&snap, "zone", s.matched().expect("counted"));
        assert_eq!(zone, [("z0".into(), 2)]);
        drop(snap);

        // The last carriers leave: the terms go.
        c.remove_pod(&a0.key);
        c.remove_pod(&a2.key);
        let snap = c.snapshot();
        assert!(snap.pod_index().terms().get(&anti).is_none());
        assert!(snap.pod_index().terms().get(&spread).is_none());
        assert_eq!(snap.pod_index().terms().len(), 2, "other's two terms stay");
    }

    #[test]
    fn a_term_that_appears_counts_the_pods_already_there_and_relabels_move_counts() {
        let mut c = cluster();
        // Plain pods of group b first (no terms), then a carrier.
        for (i, n) in ["n0", "n1", "n2"].iter().enumerate() {
            place(
                &mut c,
                &pod("ns", &format!("plain{i}")).label("app", "b").info(),
                n,
            );
        }
        let carrier = member("ns", "b0", "b");
        let (_, spread) = sigs(&carrier);
        place(&mut c, &carrier, "n2");
        let snap = c.snapshot();
        let s = snap.pod_index().terms().get(&spread).expect("spread term");
        let zone = |snap: &Snapshot, v: &[u32]| by_value(snap, "zone", v);
        assert_eq!(
            zone(&snap, s.matched().expect("counted")),
            [("z0".into(), 2), ("z1".into(), 2)]
        );
        drop(snap);
        // n2 moves to zone z0: its two pods count there.
        c.upsert_node(Arc::new(
            node("n2").label(HOST, "n2").label("zone", "z0").build(),
        ));
        let snap = c.snapshot();
        let s = snap.pod_index().terms().get(&spread).expect("spread term");
        assert_eq!(
            zone(&snap, s.matched().expect("counted")),
            [("z0".into(), 4)]
        );
        let col = snap.label_column("zone").expect("zone");
        assert_eq!(col.column.nodes_with(col.id("z1").expect("z1")), 0);
        assert_eq!(col.column.nodes_with(col.id("z0").expect("z0")), 3);
    }

    #[test]
    fn a_plan_recounts_the_nodes_it_changed_and_leaves_the_pod_itself_out() {
        let mut c = cluster();
        let (a0, a1) = (member("ns", "a0", "a"), member("ns", "a1", "a"));
        place(&mut c, &a0, "n0");
        place(&mut c, &a1, "n1");
        let snap = c.snapshot();
        let (anti, _) = sigs(&a0);
        let t = snap.pod_index().terms().get(&anti).expect("anti term");
        let id = |n: &str| {
            let col = snap.label_column(HOST).expect("host");
            col.id(n).expect("id") as usize
        };
        let mut plan = PlanState::new(&snap);
        // a1 itself is on n1: it does not count against itself.
        let own = plan_counts(&plan, t, Side::Owners, &a1.key).expect("owners");
        assert_eq!((own.at(id("n0")), own.at(id("n1"))), (1, 0));
        // A plan that evicts a0 and reserves a2 on n2.
        plan.evict(id("n0"), &a0.key);
        let a2 = member("ns", "a2", "a");
        plan.reserve(
            &a2,
            Placement {
                pod: a2.key.clone(),
                node: id("n2"),
                node_name: "n2".into(),
                devices: vec![],
            },
        );
        let m = plan_counts(&plan, t, Side::Matched, "ns/incoming").expect("matched");
        let got: Vec<i64> = ["n0", "n1", "n2"].iter().map(|n| m.at(id(n))).collect();
        assert_eq!(got, [0, 1, 1]);
    }
}
