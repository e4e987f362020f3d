//! MostAllocated: bin-packing. Prefers the node that is fullest after the pod lands (GPUs count
//! three times cpu and memory), so whole nodes stay free for large requests. The default for
//! GPU pods.

use std::sync::Arc;

use serde::Deserialize;

use crate::cache::{NodeInfo, PodInfo};
use crate::framework::registry::parse_args;
use crate::framework::{CycleState, NodeView, Plugin, RegistryError, Score};
use crate::shared::utilisation::utilisation;

pub const NAME: &str = "MostAllocated";

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Args {
    /// Score only pods that ask for GPUs (others get the same score everywhere).
    #[serde(default)]
    pub gpu_pods_only: bool,
}

#[derive(Debug, Default)]
pub struct MostAllocated {
    args: Args,
}

pub fn new(args: &serde_json::Value) -> Result<Arc<dyn Plugin>, RegistryError> {
    Ok(Arc::new(MostAllocated {
        args: parse_args(NAME, args)?,
    }))
}

impl Plugin for MostAllocated {
    fn name(&self) -> &'static str {
        NAME
    }
    fn node_view(&self, _: &CycleState, pod: &PodInfo) -> NodeView {
        if self.args.gpu_pods_only && !pod.request.wants_gpu() {
            NodeView::Neutral
        } else {
            NodeView::Shape
        }
    }
    fn as_score(&self) -> Option<&dyn Score> {
        Some(self)
    }
}

impl Score for MostAllocated {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        if self.args.gpu_pods_only && !pod.request.wants_gpu() {
            return 0;
        }
        match utilisation(pod, node) {
            (cpu, mem, Some(gpu)) => (cpu + mem + 3 * gpu) / 5,
            (cpu, mem, None) => (cpu + mem) / 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{GpuProfile, node, pod};

    #[test]
    fn fuller_node_scores_higher() {
        let empty = node("a").gpus(GpuProfile::H100x8).info();
        let mut busy = node("b").gpus(GpuProfile::H100x8).info();
        busy.add_pod(pod("ns", "x").gpus(4).info(), Arc::new(vec![]));
        let p = pod("ns", "p").gpus(2).info();
        let plugin = MostAllocated::default();
        let cases = [("empty", &empty, 15), ("half used", &busy, 45)];
        for (name, n, want) in cases {
            assert_eq!(plugin.score(&CycleState::new(), &p, n), want, "{name}");
        }
        let cpu_pod = pod("ns", "c").cpu("1").info();
        let gpu_only = MostAllocated {
            args: Args {
                gpu_pods_only: true,
            },
        };
        assert_eq!(gpu_only.score(&CycleState::new(), &cpu_pod, &busy), 0);
    }
}
