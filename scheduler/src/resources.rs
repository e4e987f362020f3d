//! Resource arithmetic in the scheduler's own units: CPU in millicores, memory in bytes, pods and
//! extended resources in whole units, GPU shares in thousandths of one device.
//!
//! A pod asks for part of a GPU with the extended resource [`GPU_SHARE_RESOURCE`]
//! (`drover.dev/gpu-milli: 500` is half a GPU). Extended resources are whole numbers in the API,
//! so the share is counted in thousandths; it is served from one `nvidia.com/gpu` device, and the
//! shares on one device never add past [`FULL_DEVICE_MILLI`].

use std::collections::BTreeMap;

use drover_api::core::Pod;
use drover_api::quantity::{CPU, MEMORY, NVIDIA_GPU, PODS, ResourceList};

/// The extended resource by which a pod asks for a share of one GPU, in thousandths.
pub const GPU_SHARE_RESOURCE: &str = "drover.dev/gpu-milli";
/// The resource GPU shares are carved from.
pub const GPU_RESOURCE: &str = NVIDIA_GPU;
/// One whole device, in thousandths.
pub const FULL_DEVICE_MILLI: u32 = 1000;

/// Amounts of resources: cpu (millicores), memory (bytes), pods, and extended resources.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    pub cpu_milli: i64,
    pub memory: i64,
    pub pods: i64,
    /// Extended resources (`nvidia.com/gpu`, ...), whole units.
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// From an API resource list (the GPU share resource is left out: devices account for it).
    pub fn from_list(list: &ResourceList) -> Resources {
        let mut r = Resources::default();
        for (name, q) in list {
            match name.as_str() {
                CPU => r.cpu_milli = q.milli(),
                MEMORY => r.memory = q.value(),
                PODS => r.pods = q.value(),
                GPU_SHARE_RESOURCE => {}
                n if drover_api::quantity::is_extended_resource(n) => {
                    r.scalar.insert(n.to_string(), q.value());
                }
                _ => {}
            }
        }
        r
    }

    /// An extended resource's amount (0 when absent).
    pub fn scalar(&self, name: &str) -> i64 {
        self.scalar.get(name).copied().unwrap_or(0)
    }

    pub fn add(&mut self, other: &Resources) {
        self.cpu_milli += other.cpu_milli;
        self.memory += other.memory;
        self.pods += other.pods;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    pub fn sub(&mut self, other: &Resources) {
        self.cpu_milli -= other.cpu_milli;
        self.memory -= other.memory;
        self.pods -= other.pods;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }
}

/// What one pod needs from a node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodRequest {
    /// cpu, memory, pods (always 1) and extended resources, including whole `nvidia.com/gpu`.
    pub res: Resources,
    /// A share of one GPU, in thousandths (0: none). Only meaningful without whole GPUs.
    pub gpu_share_milli: u32,
}

impl PodRequest {
    /// The request of a pod, by Kubernetes' rules plus the GPU share.
    pub fn of(pod: &Pod) -> PodRequest {
        let list = pod.requests();
        let mut res = Resources::from_list(&list);
        res.pods = 1;
        let share = list.get(GPU_SHARE_RESOURCE).map_or(0, |q| {
            q.value().clamp(0, i64::from(FULL_DEVICE_MILLI)) as u32
        });
        // A whole-GPU request wins over a share: the share would be inside one of them.
        let gpu_share_milli = if res.scalar(GPU_RESOURCE) > 0 {
            0
        } else {
            share
        };
        PodRequest {
            res,
            gpu_share_milli,
        }
    }

    /// Whole GPUs asked for.
    pub fn whole_gpus(&self) -> u32 {
        self.res.scalar(GPU_RESOURCE).clamp(0, i64::from(u32::MAX)) as u32
    }

    /// GPUs asked for, in thousandths (whole and shared together).
    pub fn gpu_milli(&self) -> u64 {
        u64::from(self.whole_gpus()) * u64::from(FULL_DEVICE_MILLI)
            + u64::from(self.gpu_share_milli)
    }

    /// Whether the pod needs any GPU.
    pub fn wants_gpu(&self) -> bool {
        self.gpu_milli() > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_api::core::{Container, PodSpec, ResourceRequirements};
    use drover_api::quantity::Quantity;

    fn pod(reqs: &[(&str, &str)]) -> Pod {
        let requests = reqs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity::parse(v).unwrap()))
            .collect();
        let c = Container {
            name: "c".into(),
            resources: ResourceRequirements {
                requests,
                ..Default::default()
            },
            ..Default::default()
        };
        Pod::new(
            "ns",
            "p",
            PodSpec {
                containers: vec![c],
                ..Default::default()
            },
        )
    }

    #[test]
    fn requests_in_scheduler_units() {
        // (case, requests, cpu milli, memory, whole gpus, share)
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], i64, i64, u32, u32);
        let cases: &[Case] = &[
            (
                "cpu and memory",
                &[("cpu", "500m"), ("memory", "1Gi")],
                500,
                1 << 30,
                0,
                0,
            ),
            ("whole gpus", &[("nvidia.com/gpu", "4")], 0, 0, 4, 0),
            (
                "gpu share",
                &[("drover.dev/gpu-milli", "300")],
                0,
                0,
                0,
                300,
            ),
            (
                "share capped",
                &[("drover.dev/gpu-milli", "3000")],
                0,
                0,
                0,
                1000,
            ),
            (
                "whole wins over share",
                &[("nvidia.com/gpu", "1"), ("drover.dev/gpu-milli", "300")],
                0,
                0,
                1,
                0,
            ),
        ];
        for (name, reqs, cpu, mem, gpus, share) in cases {
            let r = PodRequest::of(&pod(reqs));
            assert_eq!(r.res.cpu_milli, *cpu, "{name}");
            assert_eq!(r.res.memory, *mem, "{name}");
            assert_eq!(r.whole_gpus(), *gpus, "{name}");
            assert_eq!(r.gpu_share_milli, *share, "{name}");
            assert_eq!(r.res.pods, 1, "{name}");
        }
    }
}
