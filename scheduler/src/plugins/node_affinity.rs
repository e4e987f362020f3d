//! NodeAffinity: `nodeSelector` and required node affinity filter (this is also how a pod asks
//! for a GPU model, `nvidia.com/gpu.product`); preferred node affinity scores.

use std::sync::Arc;

use drover_api::core::{NodeSelectorRequirement, Pod};

use crate::cache::labels::{Column, Lookup};
use crate::cache::{NodeInfo, PlanState, PodInfo};
use crate::framework::{
    CycleState, Filter, MAX_NODE_SCORE, NodeView, Plugin, PreFilter, RegistryError, Score, Status,
};
use crate::shared::node_selection::{node_matches, term_matches};

pub const NAME: &str = "NodeAffinity";
pub const REASON: &str = "didn't match Pod's node affinity/selector";

#[derive(Debug, Default)]
pub struct NodeAffinity;

pub fn new(_args: &serde_json::Value) -> Result<Arc<dyn Plugin>, RegistryError> {
    Ok(Arc::new(NodeAffinity))
}

impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
    fn node_view(&self, _: &CycleState, pod: &PodInfo) -> NodeView {
        let spec = &pod.pod.spec;
        let affinity = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref());
        if spec.node_selector.is_empty() && affinity.is_none() {
            NodeView::Neutral
        } else {
            NodeView::PerNode
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

/// One label requirement (a `nodeSelector` entry or a term's expression) with its verdict per
/// value id of the key's column, worked out once per pod: a node the column describes is then
/// checked with two array reads instead of a string map lookup and string compares.
#[derive(Debug)]
struct Req {
    key: String,
    check: Check,
    ids: Option<(Column, Vec<bool>, bool)>,
}

#[derive(Debug)]
enum Check {
    Equals(String),
    Expr(NodeSelectorRequirement),
}

impl Check {
    fn admits(&self, value: Option<&str>) -> bool {
        match self {
            Check::Equals(v) => value == Some(v.as_str()),
            Check::Expr(r) => r.matches_value(value),
        }
    }
}

impl Req {
    fn new(key: &str, check: Check, cluster: &PlanState<'_>) -> Req {
        let ids = cluster.snapshot().label_column(key).map(|col| {
            let mut by_id = vec![false; col.column.id_bound()];
            for (v, id) in col.column.values() {
                if let Some(b) = by_id.get_mut(id as usize) {
                    *b = check.admits(Some(v));
                }
            }
            let absent = check.admits(None);
            (col, by_id, absent)
        });
        Req {
            key: key.to_string(),
            check,
            ids,
        }
    }

    fn admits(&self, node: &NodeInfo) -> bool {
        if let Some((col, by_id, absent)) = &self.ids {
            match col.lookup(node) {
                Lookup::Value(id) => {
                    if let Some(b) = by_id.get(id as usize) {
                        return *b;
                    }
                }
                Lookup::Absent => return *absent,
                Lookup::Unknown => {}
            }
        }
        self.check
            .admits(node.labels().get(&self.key).map(String::as_str))
    }
}

/// A required term: its label expressions by id, its field expressions as they are.
#[derive(Debug)]
struct Term {
    exprs: Vec<Req>,
    fields: Vec<NodeSelectorRequirement>,
}

/// The pod's `nodeSelector` and required node affinity, compiled against the snapshot's label
/// index by the pre-filter; decides exactly as [`node_matches`].
#[derive(Debug, Default)]
struct Required {
    selector: Vec<Req>,
    /// `None`: no required node affinity.
    terms: Option<Vec<Term>>,
}

impl Required {
    fn new(pod: &Pod, cluster: &PlanState<'_>) -> Required {
        let selector = pod
            .spec
            .node_selector
            .iter()
            .map(|(k, v)| Req::new(k, Check::Equals(v.clone()), cluster))
            .collect();
        let terms = pod
            .spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|sel| {
                sel.node_selector_terms
                    .iter()
                    // An empty term matches nothing (see `term_matches`).
                    .filter(|t| !(t.match_expressions.is_empty() && t.match_fields.is_empty()))
                    .map(|t| Term {
                        exprs: t
                            .match_expressions
                            .iter()
                            .map(|r| Req::new(&r.key, Check::Expr(r.clone()), cluster))
                            .collect(),
                        fields: t.match_fields.clone(),
                    })
                    .collect()
            });
        Required { selector, terms }
    }

    fn admits(&self, node: &NodeInfo) -> bool {
        self.selector.iter().all(|r| r.admits(node))
            && self.terms.as_ref().is_none_or(|ts| {
                ts.iter().any(|t| {
                    t.exprs.iter().all(|r| r.admits(node))
                        && t.fields.iter().all(|r| {
                            let v = (r.key == "metadata.name").then_some(&*node.name);
                            r.matches_value(v)
                        })
                })
            })
    }
}

/// The compiled requirements of the pod this cycle is for.
#[derive(Debug)]
struct RequiredState(Required);

impl PreFilter for NodeAffinity {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, cluster: &PlanState<'_>) -> Status {
        state.insert(RequiredState(Required::new(&pod.pod, cluster)));
        Status::success()
    }
}

impl Filter for NodeAffinity {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let ok = match state.get::<RequiredState>() {
            Some(RequiredState(r)) => r.admits(node),
            None => node_matches(&pod.pod, &node.name, node.labels()),
        };
        if ok {
            Status::success()
        } else {
            Status::unresolvable(REASON)
        }
    }
}

impl Score for NodeAffinity {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(na) = pod
            .pod
            .spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
        else {
            return 0;
        };
        na.preferred_during_scheduling_ignored_during_execution
            .iter()
            .filter(|p| term_matches(&p.preference, &node.name, node.labels()))
            .map(|p| i64::from(p.weight))
            .sum()
    }

    fn normalize(&self, scores: &mut [i64]) {
        let max = scores.iter().copied().max().unwrap_or(0);
        if max > 0 {
            scores
                .iter_mut()
                .for_each(|s| *s = *s * MAX_NODE_SCORE / max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testing::{GPU_PRODUCT_LABEL, GpuProfile, node, pod};

    #[test]
    fn table() {
        let h100 = GpuProfile::H100x8.model().replace(' ', "-");
        let cases = [
            ("no constraint", pod("ns", "p").info(), Code::Success),
            (
                "selector matches",
                pod("ns", "p").node_selector("zone", "a").info(),
                Code::Success,
            ),
            (
                "selector differs",
                pod("ns", "p").node_selector("zone", "b").info(),
                Code::UnschedulableAndUnresolvable,
            ),
            (
                "gpu model by affinity",
                pod("ns", "p")
                    .node_affinity_in(GPU_PRODUCT_LABEL, &[&h100])
                    .info(),
                Code::Success,
            ),
            (
                "other gpu model",
                pod("ns", "p")
                    .node_affinity_in(GPU_PRODUCT_LABEL, &["NVIDIA-L4"])
                    .info(),
                Code::UnschedulableAndUnresolvable,
            ),
        ];
        let n = node("n").label("zone", "a").gpus(GpuProfile::H100x8).info();
        for (name, p, want) in cases {
            assert_eq!(
                NodeAffinity.filter(&CycleState::new(), &p, &n).code,
                want,
                "{name}"
            );
        }
    }
}
