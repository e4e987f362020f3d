//! Which devices a pod gets on a node: the best-connected free whole devices per device set,
//! and for a GPU share the device it fits best or the one the fragmentation gradient prefers.
//! GpuTopology filters, scores and reserves with it; Fragmentation scores the choice it makes.

use drover_api::core::DeviceAssignment;

use super::gradient::share_device;
use crate::cache::topology::bits;
use crate::cache::{NodeInfo, PodInfo};
use crate::framework::CycleState;
use crate::resources::{GPU_RESOURCE, GPU_SHARE_RESOURCE};

/// The devices chosen on one node: per device set, a mask of whole devices, or one device for
/// a share.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceChoice {
    /// (device set index, whole devices mask)
    pub whole: Vec<(usize, u64)>,
    /// (device set index, device index, thousandths)
    pub share: Option<(usize, usize, u32)>,
}

/// The best devices for the pod on the node, or `None` when they cannot be had. A pod that
/// asks for no device gets an empty choice.
pub fn choose(pod: &PodInfo, node: &NodeInfo) -> Option<DeviceChoice> {
    let mut c = DeviceChoice::default();
    for (si, set) in node.devices.iter().enumerate() {
        let wanted = pod.request.res.scalar(&set.resource).max(0) as u32;
        if wanted > 0 {
            c.whole
                .push((si, set.topology.choose(set.whole_free_mask(), wanted)?));
        }
        let share = pod.request.gpu_share_milli;
        if share > 0 && *set.resource == *GPU_RESOURCE {
            c.share = Some((si, set.choose_share(share)?, share));
        }
    }
    if pod.request.gpu_share_milli > 0 && c.share.is_none() {
        return None;
    }
    Some(c)
}

/// [`choose`], with a GPU share on the device the fragmentation gradient prefers for this cycle
/// (when it offers one that is healthy, holds the share and is not among the pod's whole
/// devices); the best-fit device otherwise.
pub fn choose_in(state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Option<DeviceChoice> {
    let mut c = choose(pod, node)?;
    if let Some((si, _, milli)) = c.share
        && let Some(di) = share_device(state, pod, node)
    {
        let set = &node.devices[si];
        let taken = c
            .whole
            .iter()
            .any(|(s, m)| *s == si && di < 64 && m & (1 << di) != 0);
        if set.is_healthy(di) && set.free_milli.get(di).is_some_and(|f| *f >= milli) && !taken {
            c.share = Some((si, di, milli));
        }
    }
    Some(c)
}

/// The device assignments of a choice, split over the containers by what each asks for.
pub fn assignments(pod: &PodInfo, node: &NodeInfo, c: &DeviceChoice) -> Vec<DeviceAssignment> {
    let containers = &pod.pod.spec.containers;
    let first = containers
        .first()
        .map(|c| c.name.clone())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (si, mask) in &c.whole {
        let set = &node.devices[*si];
        let mut ids: Vec<String> = bits(*mask)
            .iter()
            .map(|&b| set.ids[b].to_string())
            .collect();
        for ct in containers {
            let n = ct
                .resources
                .effective_requests()
                .get(&*set.resource)
                .map_or(0, |q| q.value().max(0) as usize)
                .min(ids.len());
            if n > 0 {
                let rest = ids.split_off(n);
                out.push(DeviceAssignment {
                    container: ct.name.clone(),
                    resource: set.resource.to_string(),
                    ids: std::mem::replace(&mut ids, rest),
                    share_milli: None,
                });
            }
        }
        if !ids.is_empty() {
            out.push(DeviceAssignment {
                container: first.clone(),
                resource: set.resource.to_string(),
                ids,
                share_milli: None,
            });
        }
    }
    if let Some((si, di, milli)) = c.share {
        let set = &node.devices[si];
        let container = containers
            .iter()
            .find(|ct| {
                ct.resources
                    .effective_requests()
                    .contains_key(GPU_SHARE_RESOURCE)
            })
            .map_or(first, |ct| ct.name.clone());
        out.push(DeviceAssignment {
            container,
            resource: set.resource.to_string(),
            ids: vec![set.ids[di].to_string()],
            share_milli: Some(milli),
        });
    }
    out
}
