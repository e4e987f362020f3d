//! Pods on nodes by label, kept by the snapshot as nodes change: (label key, value) → the pods
//! carrying it, each with its node; and the pods with required anti-affinity by a label key
//! their terms need the target to carry. The inter-pod affinity and topology spread pre-filters
//! visit only the pods a selector can match instead of every pod on every node.
//!
//! The index is a candidate set, never a verdict: callers still match namespace and selector on
//! each pod it gives. Buckets are shared (`Arc`) so cloning a snapshot stays cheap; a change
//! copies only the buckets it touches.

use std::collections::HashMap;
use std::sync::Arc;

use drover_api::core::Pod;
use drover_api::selector::{LabelSelector, label_operator};

use super::pod_info::PodInfo;

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

/// Where a required anti-affinity term is indexed: by a label (key and value) or a label key
/// every pod it selects carries, or with the terms that may select any pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AntiKey {
    Any,
    Key(Arc<str>),
    Pair(Arc<str>, Arc<str>),
}

/// The keys a pod's required anti-affinity terms are indexed under.
fn anti_keys(pod: &Pod) -> Vec<AntiKey> {
    let mut keys = Vec::new();
    for t in pod
        .spec
        .affinity
        .iter()
        .flat_map(|a| &a.pod_anti_affinity)
        .flat_map(|a| &a.required_during_scheduling_ignored_during_execution)
    {
        match narrow(t.label_selector.as_ref()) {
            Narrow::Nothing => {}
            Narrow::Values(k, vs) => {
                keys.extend(vs.into_iter().map(|v| AntiKey::Pair(k.into(), v.into())))
            }
            Narrow::Key(k) => keys.push(AntiKey::Key(k.into())),
            Narrow::All => keys.push(AntiKey::Any),
        }
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

#[derive(Clone, Debug, Default)]
pub struct PodIndex {
    /// Label key → value → pods carrying it.
    by_label: HashMap<Arc<str>, Arc<ByValue>>,
    /// Required anti-affinity terms by what they select.
    anti: HashMap<AntiKey, Arc<Bucket>>,
}

impl PodIndex {
    pub fn add(&mut self, node: usize, pod: &Arc<PodInfo>) {
        let id = (pod.key.clone(), node);
        for (k, v) in pod.labels() {
            let values = Arc::make_mut(self.by_label.entry(k.as_str().into()).or_default());
            Arc::make_mut(values.entry(v.as_str().into()).or_default())
                .insert(id.clone(), pod.clone());
        }
        for k in anti_keys(&pod.pod) {
            Arc::make_mut(self.anti.entry(k).or_default()).insert(id.clone(), pod.clone());
        }
    }

    pub fn remove(&mut self, node: usize, pod: &PodInfo) {
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
        for k in anti_keys(&pod.pod) {
            if let Some(b) = self.anti.get_mut(&k) {
                Arc::make_mut(b).remove(&id);
                if b.is_empty() {
                    self.anti.remove(&k);
                }
            }
        }
    }

    /// Brings the index from node `idx` holding `before` to holding `after`: pods that left
    /// are dropped, pods that came are added (the same `PodInfo` is the same pod).
    pub fn update_node(&mut self, idx: usize, before: &[Arc<PodInfo>], after: &[Arc<PodInfo>]) {
        for p in before {
            if !after.iter().any(|q| Arc::ptr_eq(p, q)) {
                self.remove(idx, p);
            }
        }
        for p in after {
            if !before.iter().any(|q| Arc::ptr_eq(p, q)) {
                self.add(idx, p);
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

    /// Pods whose required anti-affinity may select a pod with these labels: those indexed
    /// under one of its labels or label keys, and those whose terms need no label. A pod may
    /// come more than once (once per bucket it is in).
    pub fn anti_affinity_for<'a>(
        &'a self,
        labels: &'a std::collections::BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'a Bucket> + 'a {
        let by_label = labels.iter().flat_map(|(k, v)| {
            let k: Arc<str> = k.as_str().into();
            [AntiKey::Pair(k.clone(), v.as_str().into()), AntiKey::Key(k)]
        });
        by_label
            .chain(std::iter::once(AntiKey::Any))
            .filter_map(|k| self.anti.get(&k).map(|b| &**b))
    }
}
