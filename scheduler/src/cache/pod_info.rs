//! What the scheduler keeps about one pod: its request in scheduler units, its resolved priority
//! and its gang, computed once when the pod is seen.

use std::sync::Arc;

use drover_api::core::{Pod, preemption_policy};
use drover_api::meta::Time;

use crate::resources::PodRequest;

/// A pod as the scheduler sees it.
#[derive(Debug)]
pub struct PodInfo {
    /// `namespace/name`.
    pub key: Arc<str>,
    pub pod: Arc<Pod>,
    pub request: PodRequest,
    /// The priority, resolved from the PriorityClass when the pod gives only a class name.
    pub priority: i32,
    /// `preemptionPolicy: Never` (from the pod or its class).
    pub never_preempts: bool,
    /// `namespace/podgroup` when the pod belongs to a gang.
    pub gang: Option<Arc<str>>,
}

impl PodInfo {
    /// A pod with its priority as the pod states it.
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let priority = pod.priority();
        let never = pod.spec.preemption_policy.as_deref() == Some(preemption_policy::NEVER);
        PodInfo::with_priority(pod, priority, never)
    }

    /// A pod with a priority resolved elsewhere (see `Cache::resolve_priority`).
    pub fn with_priority(pod: Arc<Pod>, priority: i32, never_preempts: bool) -> PodInfo {
        let m = &pod.metadata;
        let key: Arc<str> = format!("{}/{}", m.namespace, m.name).into();
        let gang = pod
            .pod_group()
            .map(|g| Arc::from(format!("{}/{}", m.namespace, g)));
        PodInfo {
            key,
            request: PodRequest::of(&pod),
            priority,
            never_preempts,
            gang,
            pod,
        }
    }

    pub fn namespace(&self) -> &str {
        &self.pod.metadata.namespace
    }

    pub fn name(&self) -> &str {
        &self.pod.metadata.name
    }

    pub fn labels(&self) -> &std::collections::BTreeMap<String, String> {
        &self.pod.metadata.labels
    }

    /// When the pod was created (its age orders the queue).
    pub fn created(&self) -> Option<Time> {
        self.pod.metadata.creation_timestamp
    }

    /// When the pod started running (for the cost of preempting it).
    pub fn started(&self) -> Option<Time> {
        self.pod.status.start_time
    }

    /// Whether the pod is being deleted.
    pub fn is_terminating(&self) -> bool {
        self.pod.metadata.deletion_timestamp.is_some()
    }

    /// Whether any required anti-affinity term is set (other pods must check it).
    pub fn has_required_anti_affinity(&self) -> bool {
        self.pod
            .spec
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .is_some_and(|a| {
                !a.required_during_scheduling_ignored_during_execution
                    .is_empty()
            })
    }
}
