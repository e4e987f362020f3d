//! Pods on nodes by label, kept by the snapshot as nodes change: (label key, value) → the pods
//! carrying it, each with its node; and the required anti-affinity terms and spread constraints
//! the pods carry, with counts by topology value ([`TermIndex`]). The inter-pod affinity and
//! topology spread pre-filters read a shared term's counts, or visit only the pods a selector
//! can match, instead of every pod on every node.
//!
//! The index is a candidate set, never a verdict: callers still match namespace and selector on
//! each pod it gives. Buckets are shared (`Arc`) so cloning a snapshot stays cheap; a change
//! copies only the buckets it touches.

use std::collections::HashMap;
use std::sync::Arc;

use drover_api::selector::{LabelSelector, label_operator};

use super::labels::LabelIndex;
use super::pod_info::PodInfo;
use super::terms::TermIndex;

/// Pods by (pod key, node index).
pub type Bucket = HashMap<(Arc<str>, usize), Arc<PodInfo>>;

/// The pods of one label key, by value.
type ByValue = HashMap<Arc<str>, Arc<Bucket>>;

/// What a selector lets the index narrow to.
#[derive(Debug, PartialEq, Eq)]
pub enum Narrow<'s> {
    /// The selector matches no pod.
    Nothing,
    /// Pods carrying `key` with one of these values.
    Values(&'s str, Vec<&'s str>),
    /// Pods carrying `key`, any value.
    Key(&'s str),
    /// Any pod may match.
    All,
}

/// The narrowest candidate set the index can give for `sel` (`None`: matches nothing).
pub fn narrow(sel: Option<&LabelSelector>) -> Narrow<'_> {
    let Some(sel) = sel else {
        return Narrow::Nothing;
    };
    if let Some((k, v)) = sel.match_labels.iter().next() {
        return Narrow::Values(k, vec![v]);
    }
    // (An `In` list's values, deduplicated: a pod carries one value of a key, so the buckets
    // of distinct values never share a pod.)
    let mut key = None;
    for r in &sel.match_expressions {
        match r.operator.as_str() {
            label_operator::IN => {
                let mut vs: Vec<&str> = r.values.iter().map(|v| v.as_str()).collect();
                vs.sort_unstable();
                vs.dedup();
                return Narrow::Values(&r.key, vs);
            }
            label_operator::EXISTS => key = key.or(Some(r.key.as_str())),
            label_operator::NOT_IN | label_operator::DOES_NOT_EXIST => {}
            _ => return Narrow::Nothing,
        }
    }
    key.map_or(Narrow::All, Narrow::Key)
}

#[derive(Clone, Debug, Default)]
pub struct PodIndex {
    /// Label key → value → pods carrying it.
    by_label: HashMap<Arc<str>, Arc<ByValue>>,
    /// The node of each pod (shared like the buckets: a snapshot clone copies no pod).
    node_of: Arc<HashMap<Arc<str>, usize>>,
    /// Required anti-affinity terms and spread constraints, with counts by topology value.
    terms: TermIndex,
}

/// Calls `f` with the pods (and their nodes) `by_label` holds that `sel` may select; a selector
/// that needs no label gives nothing (the term index does not count those).
fn scan_by_label(
    by_label: &HashMap<Arc<str>, Arc<ByValue>>,
    sel: &LabelSelector,
    f: &mut dyn FnMut(&PodInfo, usize),
) {
    let mut visit = |b: &Bucket| b.iter().for_each(|((_, n), p)| f(p, *n));
    match narrow(Some(sel)) {
        Narrow::Values(k, vs) => {
            for v in vs {
                if let Some(b) = by_label.get(k).and_then(|m| m.get(v)) {
                    visit(b);
                }
            }
        }
        Narrow::Key(k) => by_label
            .get(k)
            .iter()
            .flat_map(|m| m.values())
            .for_each(|b| visit(b)),
        Narrow::Nothing | Narrow::All => {}
    }
}

impl PodIndex {
    /// Adds pod `pod` on node `node`; `labels` gives the nodes' topology values.
    pub fn add(&mut self, node: usize, pod: &Arc<PodInfo>, labels: &LabelIndex) {
        let id = (pod.key.clone(), node);
        for (k, v) in pod.labels() {
            let values = Arc::make_mut(self.by_label.entry(k.as_str().into()).or_default());
            Arc::make_mut(values.entry(v.as_str().into()).or_default())
                .insert(id.clone(), pod.clone());
        }
        Arc::make_mut(&mut self.node_of).insert(pod.key.clone(), node);
        let by_label = &self.by_label;
        self.terms
            .add(node, pod, labels, |sel, f| scan_by_label(by_label, sel, f));
    }

    /// Removes pod `pod` from node `node` (`labels`: as when it was added).
    pub fn remove(&mut self, node: usize, pod: &PodInfo, labels: &LabelIndex) {
        self.terms.remove(node, pod, labels);
        if self.node_of.get(&pod.key) == Some(&node) {
            Arc::make_mut(&mut self.node_of).remove(&pod.key);
        }
        let id = (pod.key.clone(), node);
        for (k, v) in pod.labels() {
            let Some(values) = self.by_label.get_mut(k.as_str()) else {
                continue;
            };
            let values = Arc::make_mut(values);
            if let Some(b) = values.get_mut(v.as_str()) {
                Arc::make_mut(b).remove(&id);
                if b.is_empty() {
                    values.remove(v.as_str());
                }
            }
            if values.is_empty() {
                self.by_label.remove(k.as_str());
            }
        }
    }

    /// Brings the index from node `idx` holding `before` to holding `after`: pods that left
    /// are dropped, pods that came are added (the same `PodInfo` is the same pod).
    pub fn update_node(
        &mut self,
        idx: usize,
        before: &[Arc<PodInfo>],
        after: &[Arc<PodInfo>],
        labels: &LabelIndex,
    ) {
        for p in before {
            if !after.iter().any(|q| Arc::ptr_eq(p, q)) {
                self.remove(idx, p, labels);
            }
        }
        for p in after {
            if !before.iter().any(|q| Arc::ptr_eq(p, q)) {
                self.add(idx, p, labels);
            }
        }
    }

    /// Pods carrying label `key` = `value`.
    pub fn with_label(&self, key: &str, value: &str) -> Option<&Bucket> {
        self.by_label.get(key)?.get(value).map(|b| &**b)
    }

    /// Pods carrying label `key`, by value.
    pub fn with_key(&self, key: &str) -> impl Iterator<Item = &Bucket> {
        self.by_label
            .get(key)
            .into_iter()
            .flat_map(|m| m.values().map(|b| &**b))
    }

    /// The node pod `key` is on.
    pub fn node_of(&self, key: &str) -> Option<usize> {
        self.node_of.get(key).copied()
    }

    /// The required anti-affinity terms and spread constraints of the pods, with their counts.
    pub fn terms(&self) -> &TermIndex {
        &self.terms
    }
}
