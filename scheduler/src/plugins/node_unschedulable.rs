//! NodeUnschedulable: a cordoned node (`spec.unschedulable`) takes only pods that tolerate
//! `node.kubernetes.io/unschedulable`.

use std::sync::Arc;

use drover_api::core::{Taint, tolerates};

use crate::cache::{NodeInfo, PodInfo};
use crate::framework::{CycleState, Filter, NodeView, Plugin, RegistryError, Status};

pub const NAME: &str = "NodeUnschedulable";
pub const TAINT_KEY: &str = "node.kubernetes.io/unschedulable";
pub const REASON: &str = "were unschedulable";

#[derive(Debug, Default)]
pub struct NodeUnschedulable;

pub fn new(_args: &serde_json::Value) -> Result<Arc<dyn Plugin>, RegistryError> {
    Ok(Arc::new(NodeUnschedulable))
}

impl Plugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        NAME
    }
    fn node_view(&self, _: &CycleState, _: &PodInfo) -> NodeView {
        NodeView::Shape
    }
    fn as_filter(&self) -> Option<&dyn Filter> {
        Some(self)
    }
}

impl Filter for NodeUnschedulable {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if !node.node.spec.unschedulable {
            return Status::success();
        }
        let taint = Taint {
            key: TAINT_KEY.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if tolerates(&pod.pod.spec.tolerations, &taint) {
            Status::success()
        } else {
            Status::unresolvable(REASON)
        }
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
                "schedulable",
                node("n").info(),
                pod("ns", "p").info(),
                Code::Success,
            ),
            (
                "cordoned",
                node("n").unschedulable().info(),
                pod("ns", "p").info(),
                Code::UnschedulableAndUnresolvable,
            ),
            (
                "cordoned but tolerated",
                node("n").unschedulable().info(),
                pod("ns", "p").tolerate(TAINT_KEY).info(),
                Code::Success,
            ),
        ];
        for (name, n, p, want) in cases {
            let got = NodeUnschedulable.filter(&CycleState::new(), &p, &n);
            assert_eq!(got.code, want, "{name}");
        }
    }
}
