//! v1 Pod: one or more containers run together on one node.
//!
//! The shape is Kubernetes' (so real manifests load), plus two Drover extensions in the spec:
//! `deviceAssignments` (the exact devices the scheduler chose, set through the binding
//! subresource) and `rootfs` (a root filesystem for OCI runtimes). Validation lives in
//! [`super::pod_validation`]; the containers' shapes in [`super::container`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::affinity::{Affinity, Toleration, TopologySpreadConstraint};
use crate::core::container::{Container, PodSecurityContext, Volume};
use crate::error::FieldErrors;
use crate::meta::{Condition, ObjectMeta, Time};
use crate::quantity::{ResourceList, add_resources, max_resources};
use crate::resource::Resource;
use crate::scheduling::POD_GROUP_LABEL;

/// The scheduler that places pods which name none.
pub const DEFAULT_SCHEDULER_NAME: &str = "drover";
/// The field selector of pods bound to some node: what node agents serving many nodes and
/// binding watchers select (one agent selects `spec.nodeName=<its node>`).
pub const BOUND_PODS_SELECTOR: &str = "spec.nodeName!=";
/// Seconds between SIGTERM and SIGKILL when a pod names none.
pub const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;

/// Phases of a pod.
pub mod pod_phase {
    pub const PENDING: &str = "Pending";
    pub const RUNNING: &str = "Running";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
    pub const UNKNOWN: &str = "Unknown";
    pub const ALL: &[&str] = &[PENDING, RUNNING, SUCCEEDED, FAILED, UNKNOWN];
}

/// Values of `spec.restartPolicy`.
pub mod restart_policy {
    pub const ALWAYS: &str = "Always";
    pub const ON_FAILURE: &str = "OnFailure";
    pub const NEVER: &str = "Never";
    pub const ALL: &[&str] = &[ALWAYS, ON_FAILURE, NEVER];
}

/// Values of `preemptionPolicy` (pods and priority classes).
pub mod preemption_policy {
    pub const PREEMPT_LOWER_PRIORITY: &str = "PreemptLowerPriority";
    pub const NEVER: &str = "Never";
    pub const ALL: &[&str] = &[PREEMPT_LOWER_PRIORITY, NEVER];
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pod {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default, skip_serializing_if = "PodStatus::is_empty")]
    pub status: PodStatus,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSpec {
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<Container>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// The node the pod is bound to; set through the binding subresource.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub priority_class_name: String,
    /// Resolved from the priority class by admission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// `PreemptLowerPriority` (the default) or `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preemption_policy: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scheduler_name: String,
    /// `Always` (the default), `OnFailure` or `Never`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub restart_policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_pid: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_ipc: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_name: String,
    /// Deprecated alias of `serviceAccountName`; accepted.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automount_service_account_token: Option<bool>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subdomain: String,
    /// Accepted for compatibility; Drover has no service links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_service_links: Option<bool>,
    /// Accepted for compatibility (`ClusterFirst`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dns_policy: String,
    /// Accepted for compatibility.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    /// Drover: the devices chosen for each container, set with the node through the binding
    /// subresource. The node agent gives each container exactly these devices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_assignments: Vec<DeviceAssignment>,
    /// Drover: a root filesystem (a directory) for OCI runtimes; without one the pod's containers
    /// run as host processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<String>,
}

/// Devices of one resource given to one container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceAssignment {
    /// The container's name.
    pub container: String,
    /// The extended resource, e.g. `nvidia.com/gpu`.
    pub resource: String,
    /// Device ids, as in the node's device inventory.
    pub ids: Vec<String>,
    /// For a shared device: the share of it, in thousandths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_milli: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodStatus {
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Unknown`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// `PodScheduled`, `Initialized`, `ContainersReady`, `Ready`, `DisruptionTarget`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// A short CamelCase reason (`NodeLost`, `DeadlineExceeded`, `Evicted`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, rename = "hostIP", skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
    #[serde(default, rename = "hostIPs", skip_serializing_if = "Vec::is_empty")]
    pub host_ips: Vec<PodIp>,
    #[serde(default, rename = "podIP", skip_serializing_if = "String::is_empty")]
    pub pod_ip: String,
    #[serde(default, rename = "podIPs", skip_serializing_if = "Vec::is_empty")]
    pub pod_ips: Vec<PodIp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// The node a preempting pod expects to run on once its victims are gone.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub nominated_node_name: String,
    /// `Guaranteed`, `Burstable` or `BestEffort`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub qos_class: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_statuses: Vec<ContainerStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_container_statuses: Vec<ContainerStatus>,
}

impl PodStatus {
    pub fn is_empty(&self) -> bool {
        *self == PodStatus::default()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodIp {
    pub ip: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerStatus {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ContainerState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_state: Option<ContainerState>,
    #[serde(default)]
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<bool>,
    #[serde(default)]
    pub restart_count: i32,
    /// Always written, as Kubernetes does (its clients require `image` and `imageID`).
    #[serde(default)]
    pub image: String,
    /// The image's digest; for a process runtime, empty but present.
    #[serde(default, rename = "imageID")]
    pub image_id: String,
    #[serde(
        default,
        rename = "containerID",
        skip_serializing_if = "String::is_empty"
    )]
    pub container_id: String,
}

/// At most one of the three is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<ContainerStateWaiting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<ContainerStateRunning>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminated: Option<ContainerStateTerminated>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerStateWaiting {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerStateRunning {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerStateTerminated {
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    #[serde(
        default,
        rename = "containerID",
        skip_serializing_if = "String::is_empty"
    )]
    pub container_id: String,
}

impl Pod {
    /// A pod with a name, a namespace and a spec, its type fields set.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, spec: PodSpec) -> Self {
        let mut pod = Pod {
            metadata: ObjectMeta::named(namespace, name),
            spec,
            ..Default::default()
        };
        pod.set_type_meta();
        pod
    }

    /// The pod's effective request, as the scheduler counts it (Kubernetes' rules): the sum over
    /// containers, raised to each init container's request where that is larger. A resource with
    /// a limit and no request is requested at its limit.
    pub fn requests(&self) -> ResourceList {
        let mut total = ResourceList::new();
        for c in &self.spec.containers {
            add_resources(&mut total, &c.resources.effective_requests());
        }
        for c in &self.spec.init_containers {
            max_resources(&mut total, &c.resources.effective_requests());
        }
        total
    }

    /// The gang this pod belongs to (the `scheduling.x-k8s.io/pod-group` label).
    pub fn pod_group(&self) -> Option<&str> {
        self.metadata
            .labels
            .get(POD_GROUP_LABEL)
            .map(String::as_str)
            .filter(|g| !g.is_empty())
    }

    /// Whether the pod has finished for good (`Succeeded` or `Failed`).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.status.phase.as_str(),
            pod_phase::SUCCEEDED | pod_phase::FAILED
        )
    }

    /// Whether the pod is bound to a node.
    pub fn is_bound(&self) -> bool {
        !self.spec.node_name.is_empty()
    }

    /// The priority admission resolved, or 0.
    pub fn priority(&self) -> i32 {
        self.spec.priority.unwrap_or(0)
    }

    /// The scheduler responsible for the pod (the default one when it names none).
    pub fn scheduler_name(&self) -> &str {
        if self.spec.scheduler_name.is_empty() {
            DEFAULT_SCHEDULER_NAME
        } else {
            &self.spec.scheduler_name
        }
    }

    /// The container named `name`, among containers and init containers.
    pub fn container(&self, name: &str) -> Option<&Container> {
        self.spec
            .containers
            .iter()
            .chain(&self.spec.init_containers)
            .find(|c| c.name == name)
    }
}

/// A pod's quality-of-service classes (`status.qosClass`).
pub mod qos_class {
    pub const GUARANTEED: &str = "Guaranteed";
    pub const BURSTABLE: &str = "Burstable";
    pub const BEST_EFFORT: &str = "BestEffort";
}

impl PodSpec {
    /// The quality-of-service class, as Kubernetes derives it from CPU and memory: BestEffort
    /// when no container requests or limits either, Guaranteed when every container limits both
    /// and requests exactly its limits (or nothing, which defaults to them), else Burstable.
    pub fn qos_class(&self) -> &'static str {
        let mut any = false;
        let mut guaranteed = true;
        for c in self.containers.iter().chain(&self.init_containers) {
            for resource in ["cpu", "memory"] {
                let request = c.resources.requests.get(resource);
                let limit = c.resources.limits.get(resource);
                any |= request.is_some() || limit.is_some();
                match (request, limit) {
                    (_, None) => guaranteed = false,
                    (Some(r), Some(l)) if r != l => guaranteed = false,
                    _ => {}
                }
            }
        }
        match (any, guaranteed) {
            (false, _) => qos_class::BEST_EFFORT,
            (true, true) => qos_class::GUARANTEED,
            (true, false) => qos_class::BURSTABLE,
        }
    }

    /// Fills in the server's defaults (used for pods and for job templates).
    pub fn default_fields(&mut self) {
        if self.scheduler_name.is_empty() {
            self.scheduler_name = DEFAULT_SCHEDULER_NAME.into();
        }
        if self.restart_policy.is_empty() {
            self.restart_policy = restart_policy::ALWAYS.into();
        }
        self.termination_grace_period_seconds
            .get_or_insert(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS);
        self.preemption_policy
            .get_or_insert_with(|| preemption_policy::PREEMPT_LOWER_PRIORITY.into());
        for c in self.containers.iter_mut().chain(&mut self.init_containers) {
            c.default_fields();
        }
    }
}

impl Resource for Pod {
    const GROUP: &'static str = "";
    const VERSION: &'static str = "v1";
    const KIND: &'static str = "Pod";
    const PLURAL: &'static str = "pods";
    const SINGULAR: &'static str = "pod";
    const SHORT_NAMES: &'static [&'static str] = &["po"];
    const NAMESPACED: bool = true;
    const HAS_STATUS: bool = true;
    /// The scheduler, the node agent and the controllers report a pod's status; a body's
    /// `phase: Succeeded` would otherwise finish a pod that never ran.
    const STATUS_OWNED_BY_SYSTEM: bool = true;

    crate::impl_resource_meta!(Pod);

    fn validate(&self) -> Result<(), FieldErrors> {
        super::pod_validation::validate_pod_create(self).into_result()
    }

    fn validate_update(&self, old: &Self) -> Result<(), FieldErrors> {
        let mut errs = super::pod_validation::validate_pod(self);
        errs.extend(super::pod_validation::validate_pod_update(self, old));
        errs.into_result()
    }

    fn default_fields(&mut self) {
        self.spec.default_fields();
        if self.status.phase.is_empty() {
            self.status.phase = pod_phase::PENDING.into();
        }
        if self.status.qos_class.is_empty() {
            self.status.qos_class = self.spec.qos_class().into();
        }
    }

    fn copy_status_from(&mut self, other: &Self) {
        self.status = other.status.clone();
    }

    fn spec_differs(&self, other: &Self) -> bool {
        self.spec != other.spec
    }

    fn field(&self, path: &str) -> Option<String> {
        match path {
            "spec.nodeName" => Some(self.spec.node_name.clone()),
            "spec.schedulerName" => Some(self.spec.scheduler_name.clone()),
            "status.phase" => Some(self.status.phase.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ContainerStatus;

    /// Kubernetes' clients require `image` and `imageID` in a container status (the Python
    /// client refuses a pod without them), so they are written even when empty.
    fn pod(resources: &[(&str, &str, &str)]) -> super::PodSpec {
        let containers = resources
            .iter()
            .enumerate()
            .map(|(i, (resource, request, limit))| {
                let mut c = serde_json::json!({"name": format!("c{i}"), "resources": {}});
                if !request.is_empty() {
                    c["resources"]["requests"] = serde_json::json!({*resource: request});
                }
                if !limit.is_empty() {
                    c["resources"]["limits"] = serde_json::json!({*resource: limit});
                }
                c
            })
            .collect::<Vec<_>>();
        serde_json::from_value(serde_json::json!({"containers": containers})).expect("spec")
    }

    #[test]
    fn qos_class_follows_kubernetes() {
        use super::qos_class::*;
        assert_eq!(pod(&[]).qos_class(), BEST_EFFORT);
        assert_eq!(pod(&[("nvidia.com/gpu", "", "1")]).qos_class(), BEST_EFFORT);
        assert_eq!(pod(&[("cpu", "100m", "")]).qos_class(), BURSTABLE);
        assert_eq!(pod(&[("cpu", "1", "2")]).qos_class(), BURSTABLE);
        // Limits on CPU only: memory is not limited, so not Guaranteed.
        assert_eq!(pod(&[("cpu", "1", "1")]).qos_class(), BURSTABLE);
        let both: super::PodSpec = serde_json::from_value(serde_json::json!({"containers": [{
            "name": "c",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"},
                          "requests": {"cpu": "1000m", "memory": "1Gi"}}
        }]}))
        .expect("spec");
        assert_eq!(
            both.qos_class(),
            GUARANTEED,
            "equal quantities in other units"
        );
    }

    #[test]
    fn container_status_always_carries_image_and_image_id() {
        let status = ContainerStatus {
            name: "main".into(),
            ..Default::default()
        };
        let json = serde_json::to_value(&status).expect("serialize");
        assert_eq!(json["image"], "");
        assert_eq!(json["imageID"], "");
        let back: ContainerStatus = serde_json::from_value(json).expect("round trip");
        assert_eq!(back, status);
    }
}
