//! GpuTopology: chooses *which* devices a pod gets. Filter: enough healthy devices that a set
//! can be chosen. Score: how well connected the best set is (NVSwitch/NVLink over PCIe, one NUMA
//! node). Reserve: writes the chosen device ids into the placement. Unhealthy devices are never
//! chosen; a GPU share goes to the device the fragmentation gradient prefers
//! ([`gradient::share_device`](crate::shared::gradient::share_device)) when the cycle has one,
//! else to the partly used device it fits best; never past one device. The choice itself is
//! [`crate::shared::devices`], which Fragmentation scores with too.

use std::sync::Arc;

use crate::cache::{NodeInfo, Placement, PodInfo};
use crate::framework::{
    CycleState, Filter, NodeView, Plugin, PluginError, RegistryError, Reserve, Score, Status,
};
use crate::shared::devices::{assignments, choose, choose_in};

pub const NAME: &str = "GpuTopology";
pub const REASON: &str = "insufficient healthy devices";

#[derive(Debug, Default)]
pub struct GpuTopology;

pub fn new(_args: &serde_json::Value) -> Result<Arc<dyn Plugin>, RegistryError> {
    Ok(Arc::new(GpuTopology))
}

impl Plugin for GpuTopology {
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
    fn as_reserve(&self) -> Option<&dyn Reserve> {
        Some(self)
    }
}

impl Filter for GpuTopology {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if !pod.request.wants_gpu() && node.devices.is_empty() {
            return Status::success();
        }
        match choose(pod, node) {
            Some(_) => Status::success(),
            None => Status::unschedulable(REASON),
        }
    }
}

impl Score for GpuTopology {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        if pod.request.whole_gpus() < 2 {
            return 0;
        }
        match choose(pod, node) {
            Some(c) => c
                .whole
                .iter()
                .map(|(si, m)| node.devices[*si].topology.quality(*m))
                .min()
                .unwrap_or(0),
            None => 0,
        }
    }
}

impl Reserve for GpuTopology {
    fn reserve(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        placement: &mut Placement,
    ) -> Result<Status, PluginError> {
        match choose_in(state, pod, node) {
            Some(c) => {
                placement.devices = assignments(pod, node, &c);
                Ok(Status::success())
            }
            None => Ok(Status::unschedulable(REASON)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::GPU_RESOURCE;
    use crate::shared::gradient;
    use crate::testing::{GpuProfile, node, pod};
    use drover_api::core::DeviceAssignment;

    fn ids(p: &Placement) -> Vec<String> {
        p.devices.iter().flat_map(|d| d.ids.clone()).collect()
    }

    fn reserve(n: &NodeInfo, p: &PodInfo) -> Option<Vec<String>> {
        let mut pl = Placement {
            pod: p.key.clone(),
            node: 0,
            node_name: n.name.clone(),
            devices: vec![],
        };
        let st = GpuTopology
            .reserve(&mut CycleState::new(), p, n, &mut pl)
            .ok()?;
        st.is_success().then(|| ids(&pl))
    }

    fn names(n: &str, idx: &[u32]) -> Vec<String> {
        idx.iter().map(|i| format!("{n}-gpu{i}")).collect()
    }

    #[test]
    fn chooses_well_connected_sets() {
        let mut a100_one_used = node("a").gpus(GpuProfile::A100x8).info();
        a100_one_used.add_pod(
            pod("ns", "x").gpus(1).info(),
            Arc::new(vec![DeviceAssignment {
                container: "main".into(),
                resource: GPU_RESOURCE.into(),
                ids: vec!["a-gpu1".into()],
                share_milli: None,
            }]),
        );
        type Case = (&'static str, NodeInfo, Arc<PodInfo>, Option<Vec<String>>);
        let cases: Vec<Case> = vec![
            (
                "4 on a100 stay on one socket",
                node("a").gpus(GpuProfile::A100x8).info(),
                pod("ns", "p").gpus(4).info(),
                Some(names("a", &[0, 1, 2, 3])),
            ),
            (
                "4 on a100 with gpu1 used take the other socket",
                a100_one_used.clone(),
                pod("ns", "p").gpus(4).info(),
                Some(names("a", &[4, 5, 6, 7])),
            ),
            (
                "2 on a100 take an NVLink pair",
                a100_one_used.clone(),
                pod("ns", "p").gpus(2).info(),
                Some(names("a", &[2, 3])),
            ),
            (
                "1 on a100 takes the partner of a used gpu",
                a100_one_used,
                pod("ns", "p").gpus(1).info(),
                Some(names("a", &[0])),
            ),
            (
                "unhealthy never chosen",
                node("l").gpus(GpuProfile::L4x4).unhealthy(0).info(),
                pod("ns", "p").gpus(3).info(),
                Some(names("l", &[1, 2, 3])),
            ),
            (
                "too few healthy",
                node("l").gpus(GpuProfile::L4x4).unhealthy(2).info(),
                pod("ns", "p").gpus(4).info(),
                None,
            ),
            (
                "no gpus wanted",
                node("c").info(),
                pod("ns", "p").info(),
                Some(vec![]),
            ),
        ];
        for (name, n, p, want) in cases {
            assert_eq!(reserve(&n, &p), want, "{name}");
        }
    }

    #[test]
    fn shares_pack_and_never_pass_one_device() {
        let mut n = node("l").gpus(GpuProfile::L4x4).info();
        let first = pod("ns", "a").gpu_share(600).info();
        let got = reserve(&n, &first);
        assert_eq!(got, Some(names("l", &[0])));
        n.add_pod(first, Arc::new(vec![]));
        // 400 fits next to 600; 500 does not and goes to a fresh device.
        assert_eq!(
            reserve(&n, &pod("ns", "b").gpu_share(400).info()),
            Some(names("l", &[0]))
        );
        assert_eq!(
            reserve(&n, &pod("ns", "c").gpu_share(500).info()),
            Some(names("l", &[1]))
        );
    }

    #[test]
    fn shares_follow_the_fragmentation_gradient() {
        use crate::cache::{PlanState, Snapshot};
        // Device 0 has 400 left. Best fit would put a 300 share there and strand 100; the
        // gradient (measured against the pod's own shape, nothing learnt yet) takes a fresh
        // device and leaves 700, still good for another 300.
        let mut n = node("l").gpus(GpuProfile::L4x4).info();
        n.add_pod(pod("ns", "x").gpu_share(600).info(), Arc::new(vec![]));
        let p = pod("ns", "p").gpu_share(300).info();
        assert_eq!(reserve(&n, &p), Some(names("l", &[0])), "best fit");
        let snap = Snapshot::default();
        let mut state = CycleState::new();
        // What Fragmentation's pre-filter writes, with its default fill arguments.
        state.insert(gradient::WorkloadShapes::measure(
            PlanState::new(&snap).workload(),
            &p,
            0.01,
            1.0,
        ));
        let hinted = gradient::share_device(&state, &p, &n);
        assert!(hinted.is_some_and(|d| d != 0), "{hinted:?}");
        let choice = choose_in(&state, &p, &n).unwrap();
        assert_eq!(
            choice.share.map(|(_, d, m)| (d, m)),
            hinted.map(|d| (d, 300))
        );
        let mut pl = Placement {
            pod: p.key.clone(),
            node: 0,
            node_name: n.name.clone(),
            devices: vec![],
        };
        assert!(
            GpuTopology
                .reserve(&mut state, &p, &n, &mut pl)
                .unwrap()
                .is_success()
        );
        assert_eq!(ids(&pl), names("l", &[hinted.unwrap() as u32]));
        // An unhealthy device is never the hint; with only device 0 healthy the share fits
        // nowhere else and lands there.
        let mut sick = node("l")
            .gpus(GpuProfile::L4x4)
            .unhealthy(1)
            .unhealthy(2)
            .unhealthy(3)
            .info();
        sick.add_pod(pod("ns", "x").gpu_share(600).info(), Arc::new(vec![]));
        let choice = choose_in(&state, &p, &sick).unwrap();
        assert_eq!(choice.share.map(|(_, d, _)| d), Some(0));
        // Shares never pass one device: a 500 share does not fit next to 600.
        let big = pod("ns", "b").gpu_share(500).info();
        let mut only0 = node("l")
            .gpus(GpuProfile::L4x4)
            .unhealthy(1)
            .unhealthy(2)
            .unhealthy(3)
            .info();
        only0.add_pod(pod("ns", "x").gpu_share(600).info(), Arc::new(vec![]));
        assert!(choose_in(&state, &big, &only0).is_none());
    }
}
