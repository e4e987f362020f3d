//! v1 Node: a worker machine, registered and kept up to date by its node agent.
//!
//! Besides Kubernetes' fields the status carries Drover's device inventory (which GPUs, how
//! they are linked) and the container runtimes the agent offers.

use serde::{Deserialize, Serialize};

use crate::device::DeviceInventory;
use crate::error::{FieldError, FieldErrors};
use crate::meta::{Condition, ObjectMeta, Time, find_condition};
use crate::quantity::ResourceList;
use crate::resource::Resource;
use crate::validation::{check_enum, is_label_value, is_qualified_name};

/// The condition the node agent keeps `True` while it is healthy and heartbeating.
pub const NODE_READY: &str = "Ready";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Node {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "NodeSpec::is_empty")]
    pub spec: NodeSpec,
    #[serde(default, skip_serializing_if = "NodeStatus::is_empty")]
    pub status: NodeStatus,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    /// Cordoned: no new pods are scheduled here.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unschedulable: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    #[serde(default, rename = "podCIDR", skip_serializing_if = "String::is_empty")]
    pub pod_cidr: String,
    #[serde(default, rename = "podCIDRs", skip_serializing_if = "Vec::is_empty")]
    pub pod_cidrs: Vec<String>,
    #[serde(
        default,
        rename = "providerID",
        skip_serializing_if = "String::is_empty"
    )]
    pub provider_id: String,
}

impl NodeSpec {
    pub fn is_empty(&self) -> bool {
        *self == NodeSpec::default()
    }
}

/// Keeps pods that do not tolerate it off a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    pub key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
    /// When a `NoExecute` taint was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_added: Option<Time>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeStatus {
    /// Everything the machine has.
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub capacity: ResourceList,
    /// What pods may use (capacity less reservations).
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub allocatable: ResourceList,
    /// `Ready`, `MemoryPressure`, `DiskPressure`, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NodeAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_info: Option<NodeSystemInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_endpoints: Option<NodeDaemonEndpoints>,
    /// Accepted for compatibility (images present on the node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<serde_json::Value>,
    /// Drover: the devices the node's device plugins found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<DeviceInventory>,
    /// Drover: the runtimes the agent can run pods with (`process`, `crun`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtimes: Vec<String>,
}

impl NodeStatus {
    pub fn is_empty(&self) -> bool {
        *self == NodeStatus::default()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeAddress {
    /// `Hostname`, `InternalIP`, `ExternalIP`, ...
    #[serde(rename = "type")]
    pub type_: String,
    pub address: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSystemInfo {
    #[serde(default, rename = "machineID")]
    pub machine_id: String,
    #[serde(default, rename = "systemUUID")]
    pub system_uuid: String,
    #[serde(default, rename = "bootID")]
    pub boot_id: String,
    #[serde(default)]
    pub kernel_version: String,
    #[serde(default)]
    pub os_image: String,
    #[serde(default)]
    pub container_runtime_version: String,
    #[serde(default)]
    pub kubelet_version: String,
    #[serde(default)]
    pub kube_proxy_version: String,
    #[serde(default)]
    pub operating_system: String,
    #[serde(default)]
    pub architecture: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeDaemonEndpoints {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_endpoint: Option<DaemonEndpoint>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonEndpoint {
    #[serde(rename = "Port")]
    pub port: i32,
}

impl Node {
    /// A node with a name, its type fields set.
    pub fn new(name: impl Into<String>) -> Self {
        let mut node = Node {
            metadata: ObjectMeta {
                name: name.into(),
                ..Default::default()
            },
            ..Default::default()
        };
        node.set_type_meta();
        node
    }

    /// Whether the `Ready` condition is `True`.
    pub fn is_ready(&self) -> bool {
        find_condition(&self.status.conditions, NODE_READY).is_some_and(Condition::is_true)
    }

    pub fn taints(&self) -> &[Taint] {
        &self.spec.taints
    }

    /// The resources pods may use: `allocatable`, or `capacity` when the agent reported none.
    pub fn allocatable(&self) -> &crate::quantity::ResourceList {
        if self.status.allocatable.is_empty() {
            &self.status.capacity
        } else {
            &self.status.allocatable
        }
    }
}

fn validate_node(node: &Node) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if let Err(e) = crate::validation::validate_object_meta(&node.metadata, false) {
        errs.extend(e);
    }
    for (i, t) in node.spec.taints.iter().enumerate() {
        let p = format!("spec.taints[{i}]");
        if !is_qualified_name(&t.key) {
            errs.push(FieldError::invalid(
                format!("{p}.key"),
                format!(
                    "{:?}: {}",
                    t.key,
                    crate::validation::QUALIFIED_NAME_EXPECTED
                ),
            ));
        }
        if !is_label_value(&t.value) {
            errs.push(FieldError::invalid(
                format!("{p}.value"),
                format!("{:?}: {}", t.value, crate::validation::LABEL_VALUE_EXPECTED),
            ));
        }
        check_enum(
            &mut errs,
            &format!("{p}.effect"),
            &t.effect,
            super::affinity::taint_effect::ALL,
            false,
        );
        let dup = node.spec.taints[..i]
            .iter()
            .any(|o| o.key == t.key && o.effect == t.effect);
        if dup {
            errs.push(FieldError::duplicate(
                p,
                format!(
                    "taint {}:{} appears twice: expected each key and effect once",
                    t.key, t.effect
                ),
            ));
        }
    }
    for (field, list) in [
        ("status.capacity", &node.status.capacity),
        ("status.allocatable", &node.status.allocatable),
    ] {
        errs.extend(super::pod_validation::validate_resource_list(list, field));
    }
    errs
}

impl Resource for Node {
    const GROUP: &'static str = "";
    const VERSION: &'static str = "v1";
    const KIND: &'static str = "Node";
    const PLURAL: &'static str = "nodes";
    const SINGULAR: &'static str = "node";
    const SHORT_NAMES: &'static [&'static str] = &["no"];
    const NAMESPACED: bool = false;
    const HAS_STATUS: bool = true;
    // `STATUS_OWNED_BY_SYSTEM` stays false: an agent registers its node with the status it
    // observed (capacity, devices, conditions), as the kubelet does.

    crate::impl_resource_meta!(Node);

    fn validate(&self) -> Result<(), FieldErrors> {
        validate_node(self).into_result()
    }

    fn copy_status_from(&mut self, other: &Self) {
        self.status = other.status.clone();
    }

    fn spec_differs(&self, other: &Self) -> bool {
        self.spec != other.spec
    }

    fn field(&self, path: &str) -> Option<String> {
        match path {
            "spec.unschedulable" => Some(self.spec.unschedulable.to_string()),
            _ => None,
        }
    }
}
