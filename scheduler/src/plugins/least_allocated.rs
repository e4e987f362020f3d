//! LeastAllocated: spreading. Prefers the node with the most cpu and memory left after the pod
//! lands. In the default profile it scores CPU-only pods.

use std::sync::Arc;

use serde::Deserialize;

use crate::cache::{NodeInfo, PodInfo};
use crate::framework::registry::parse_args;
use crate::framework::{CycleState, MAX_NODE_SCORE, NodeView, Plugin, RegistryError, Score};
use crate::shared::utilisation::utilisation;

pub const NAME: &str = "LeastAllocated";

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Args {
    /// Score only pods that ask for no GPU.
    #[serde(default)]
    pub cpu_pods_only: bool,
}

#[derive(Debug, Default)]
pub struct LeastAllocated {
    args: Args,
}

pub fn new(args: &serde_json::Value) -> Result<Arc<dyn Plugin>, RegistryError> {
    Ok(Arc::new(LeastAllocated {
        args: parse_args(NAME, args)?,
    }))
}

impl Plugin for LeastAllocated {
    fn name(&self) -> &'static str {
        NAME
    }
    fn node_view(&self, _: &CycleState, pod: &PodInfo) -> NodeView {
        if self.args.cpu_pods_only && pod.request.wants_gpu() {
            NodeView::Neutral
        } else {
            NodeView::Shape
        }
    }
    fn as_score(&self) -> Option<&dyn Score> {
        Some(self)
    }
}

impl Score for LeastAllocated {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        if self.args.cpu_pods_only && pod.request.wants_gpu() {
            return 0;
        }
        let (cpu, mem, _) = utilisation(pod, node);
        MAX_NODE_SCORE - (cpu + mem) / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pod};

    #[test]
    fn emptier_node_scores_higher() {
        let p = pod("ns", "p").cpu("16").memory("128Gi").info();
        let plugin = LeastAllocated::default();
        let cases = [
            ("64 cores", node("a").info(), 75),
            ("32 cores", node("b").cpu("32").info(), 63),
        ];
        for (name, n, want) in cases {
            assert_eq!(plugin.score(&CycleState::new(), &p, &n), want, "{name}");
        }
        assert!(new(&serde_json::json!({"bogus": 1})).is_err());
    }
}
