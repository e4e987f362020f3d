//! NodeResourcesFit: the node has room for the pod's cpu, memory, pod slot and extended
//! resources (`nvidia.com/gpu` counts healthy devices with nothing on them; a GPU share needs
//! one healthy device with that much left).

use std::borrow::Cow;
use std::sync::Arc;

use crate::cache::{NodeInfo, PodInfo};
use crate::framework::{Code, CycleState, Filter, NodeView, Plugin, RegistryError, Status};
use crate::resources::GPU_RESOURCE;

pub const NAME: &str = "NodeResourcesFit";

#[derive(Debug, Default)]
pub struct NodeResourcesFit;

pub fn new(_args: &serde_json::Value) -> Result<Arc<dyn Plugin>, RegistryError> {
    Ok(Arc::new(NodeResourcesFit))
}

impl Plugin for NodeResourcesFit {
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

/// Reasons the pod does not fit on the node (empty when it fits).
pub fn insufficient(pod: &PodInfo, node: &NodeInfo) -> Vec<Cow<'static, str>> {
    let r = &pod.request;
    let mut out: Vec<Cow<'static, str>> = Vec::new();
    if node.requested.pods + 1 > node.allocatable.pods {
        out.push("too many pods".into());
    }
    if r.res.cpu_milli > 0 && r.res.cpu_milli > node.free_cpu_milli() {
        out.push("insufficient cpu".into());
    }
    if r.res.memory > 0 && r.res.memory > node.free_memory() {
        out.push("insufficient memory".into());
    }
    for (name, want) in &r.res.scalar {
        if *want > 0 && *want > node.free_scalar(name) {
            out.push(format!("insufficient {name}").into());
        }
    }
    if r.gpu_share_milli > 0 {
        let fits = node.gpus().is_some_and(|set| {
            set.free_milli
                .iter()
                .enumerate()
                .any(|(i, f)| set.is_healthy(i) && *f >= r.gpu_share_milli)
        });
        if !fits {
            out.push(Cow::Owned(format!("insufficient {GPU_RESOURCE}")));
        }
    }
    out
}

impl Filter for NodeResourcesFit {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let reasons = insufficient(pod, node);
        if reasons.is_empty() {
            Status::success()
        } else {
            Status {
                code: Code::Unschedulable,
                reasons,
                plugin: NAME,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::PodInfo;
    use crate::testing::{GpuProfile, node, pod};

    #[test]
    fn table() {
        let mut full = node("n").gpus(GpuProfile::H100x8).info();
        full.add_pod(pod("ns", "big").gpus(8).info(), Arc::new(vec![]));
        let mut half_used = node("n").gpus(GpuProfile::H100x8).info();
        half_used.add_pod(pod("ns", "s").gpu_share(700).info(), Arc::new(vec![]));
        let cases: Vec<(&str, NodeInfo, Arc<PodInfo>, Vec<&str>)> = vec![
            (
                "fits",
                node("n").info(),
                pod("ns", "p").cpu("2").info(),
                vec![],
            ),
            (
                "cpu",
                node("n").cpu("1").info(),
                pod("ns", "p").cpu("2").info(),
                vec!["insufficient cpu"],
            ),
            (
                "memory and cpu",
                node("n").cpu("1").memory("1Gi").info(),
                pod("ns", "p").cpu("2").memory("2Gi").info(),
                vec!["insufficient cpu", "insufficient memory"],
            ),
            (
                "no gpus",
                node("n").info(),
                pod("ns", "p").gpus(1).info(),
                vec!["insufficient nvidia.com/gpu"],
            ),
            (
                "gpus taken",
                full,
                pod("ns", "p").gpus(1).info(),
                vec!["insufficient nvidia.com/gpu"],
            ),
            (
                "unhealthy gpus do not count",
                node("n").gpus(GpuProfile::L4x4).unhealthy(0).info(),
                pod("ns", "p").gpus(4).info(),
                vec!["insufficient nvidia.com/gpu"],
            ),
            (
                "share fits next to a share",
                half_used,
                pod("ns", "p").gpu_share(300).info(),
                vec![],
            ),
            (
                "pods",
                node("n").pods("0").info(),
                pod("ns", "p").info(),
                vec!["too many pods"],
            ),
        ];
        for (name, n, p, want) in cases {
            let got = NodeResourcesFit.filter(&CycleState::new(), &p, &n);
            let reasons: Vec<&str> = got.reasons.iter().map(|r| &**r).collect();
            assert_eq!(reasons, want, "{name}");
            assert_eq!(got.is_success(), want.is_empty(), "{name}");
        }
    }
}
