//! NodeName: a pod that names a node (`spec.nodeName`) fits only there.

use std::sync::Arc;

use crate::cache::{NodeInfo, PodInfo};
use crate::framework::{CycleState, Filter, NodeView, Plugin, RegistryError, Status};

pub const NAME: &str = "NodeName";
pub const REASON: &str = "didn't match the requested node name";

#[derive(Debug, Default)]
pub struct NodeName;

pub fn new(_args: &serde_json::Value) -> Result<Arc<dyn Plugin>, RegistryError> {
    Ok(Arc::new(NodeName))
}

impl Plugin for NodeName {
    fn name(&self) -> &'static str {
        NAME
    }
    fn node_view(&self, _: &CycleState, pod: &PodInfo) -> NodeView {
        if pod.pod.spec.node_name.is_empty() {
            NodeView::Neutral
        } else {
            NodeView::PerNode
        }
    }
    fn as_filter(&self) -> Option<&dyn Filter> {
        Some(self)
    }
}

impl Filter for NodeName {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let want = &pod.pod.spec.node_name;
        if want.is_empty() || *want == *node.name {
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
            ("no name", pod("ns", "p").info(), Code::Success),
            (
                "same name",
                pod("ns", "p").node_name("n1").info(),
                Code::Success,
            ),
            (
                "other name",
                pod("ns", "p").node_name("n2").info(),
                Code::UnschedulableAndUnresolvable,
            ),
        ];
        let n = node("n1").info();
        for (name, p, want) in cases {
            assert_eq!(
                NodeName.filter(&CycleState::new(), &p, &n).code,
                want,
                "{name}"
            );
        }
    }
}
