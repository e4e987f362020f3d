//! TaintToleration: `NoSchedule`/`NoExecute` taints a pod does not tolerate keep it off the node;
//! untolerated `PreferNoSchedule` taints lower the node's score.

use std::sync::Arc;

use drover_api::core::{Taint, taint_effect, tolerates};

use crate::cache::{NodeInfo, PodInfo};
use crate::framework::{
    CycleState, Filter, NodeView, Plugin, RegistryError, Score, Status, normalize_min_max,
};

pub const NAME: &str = "TaintToleration";

#[derive(Debug, Default)]
pub struct TaintToleration;

pub fn new(_args: &serde_json::Value) -> Result<Arc<dyn Plugin>, RegistryError> {
    Ok(Arc::new(TaintToleration))
}

impl Plugin for TaintToleration {
    fn name(&self) -> &'static str {
        NAME
    }
    fn node_view(&self, _: &CycleState, _: &PodInfo) -> NodeView {
        NodeView::Shape
    }
    fn as_filter(&self) -> Option<&dyn Filter> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn Score> {
        Some(self)
    }
}

/// `had untolerated taint {key}` (or `{key: value}`), as the why-pending summary counts it.
pub fn reason(t: &Taint) -> String {
    if t.value.is_empty() {
        format!("had untolerated taint {{{}}}", t.key)
    } else {
        format!("had untolerated taint {{{}: {}}}", t.key, t.value)
    }
}

impl Filter for TaintToleration {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let blocking = node.node.spec.taints.iter().find(|t| {
            (t.effect == taint_effect::NO_SCHEDULE || t.effect == taint_effect::NO_EXECUTE)
                && !tolerates(&pod.pod.spec.tolerations, t)
        });
        match blocking {
            None => Status::success(),
            Some(t) => Status::unresolvable(reason(t)),
        }
    }
}

impl Score for TaintToleration {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        node.node
            .spec
            .taints
            .iter()
            .filter(|t| {
                t.effect == taint_effect::PREFER_NO_SCHEDULE
                    && !tolerates(&pod.pod.spec.tolerations, t)
            })
            .count() as i64
    }

    fn normalize(&self, scores: &mut [i64]) {
        normalize_min_max(scores, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testing::{node, pod};

    #[test]
    fn table() {
        let cases = [
            (
                "no taint",
                node("n").info(),
                pod("ns", "p").info(),
                Code::Success,
                "",
            ),
            (
                "untolerated",
                node("n").taint("gpu-maintenance", "NoSchedule").info(),
                pod("ns", "p").info(),
                Code::UnschedulableAndUnresolvable,
                "had untolerated taint {gpu-maintenance}",
            ),
            (
                "tolerated",
                node("n").taint("gpu-maintenance", "NoSchedule").info(),
                pod("ns", "p").tolerate("gpu-maintenance").info(),
                Code::Success,
                "",
            ),
            (
                "prefer only scores",
                node("n").taint("spot", "PreferNoSchedule").info(),
                pod("ns", "p").info(),
                Code::Success,
                "",
            ),
        ];
        for (name, n, p, want, why) in cases {
            let got = TaintToleration.filter(&CycleState::new(), &p, &n);
            assert_eq!(got.code, want, "{name}");
            assert_eq!(
                got.reasons.first().map(|r| &**r).unwrap_or(""),
                why,
                "{name}"
            );
        }
        let mut scores = vec![
            TaintToleration.score(
                &CycleState::new(),
                &pod("ns", "p").info(),
                &node("a").info(),
            ),
            TaintToleration.score(
                &CycleState::new(),
                &pod("ns", "p").info(),
                &node("b").taint("spot", "PreferNoSchedule").info(),
            ),
        ];
        TaintToleration.normalize(&mut scores);
        assert_eq!(scores, vec![100, 0]);
    }
}
