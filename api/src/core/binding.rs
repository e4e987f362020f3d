//! v1 Binding: the body of `pods/{name}/binding`, by which the scheduler assigns a pod to a node
//! (and, in Drover, to specific devices on it). Not a stored kind.

use serde::{Deserialize, Serialize};

use crate::core::{DeviceAssignment, Pod};
use crate::error::{FieldError, FieldErrors};
use crate::meta::{ObjectMeta, ObjectReference};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Binding {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    /// The pod's name and namespace.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The node: `kind: Node` (or empty) and its name.
    #[serde(default)]
    pub target: ObjectReference,
    /// Drover: the devices chosen for each container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_assignments: Vec<DeviceAssignment>,
}

impl Binding {
    /// A binding of pod `namespace/name` to `node`.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        node: impl Into<String>,
        device_assignments: Vec<DeviceAssignment>,
    ) -> Self {
        Binding {
            api_version: "v1".into(),
            kind: "Binding".into(),
            metadata: ObjectMeta::named(namespace, name),
            target: ObjectReference {
                kind: "Node".into(),
                name: node.into(),
                ..Default::default()
            },
            device_assignments,
        }
    }

    /// Checks the binding on its own.
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let mut errs = FieldErrors::new();
        if self.target.name.is_empty() {
            errs.push(FieldError::required(
                "target.name",
                "expected the name of the node to bind to",
            ));
        }
        if !self.target.kind.is_empty() && self.target.kind != "Node" {
            errs.push(FieldError::not_supported(
                "target.kind",
                format!("{:?}: expected Node", self.target.kind),
            ));
        }
        errs.into_result()
    }

    /// Binds `pod`: sets its node and device assignments. Refused when the pod is already bound
    /// or finished, or when the devices name containers the pod does not have. This is the only
    /// way `spec.nodeName` and `spec.deviceAssignments` change: a plain update may not.
    pub fn apply_to(&self, pod: &mut Pod) -> Result<(), FieldErrors> {
        self.validate()?;
        let mut errs = FieldErrors::new();
        if pod.is_bound() {
            errs.push(FieldError::forbidden(
                "spec.nodeName",
                format!(
                    "pod is already bound to node {:?}: expected an unbound pod",
                    pod.spec.node_name
                ),
            ));
        }
        if pod.is_terminal() {
            errs.push(FieldError::forbidden(
                "status.phase",
                format!(
                    "pod has finished ({}): expected a pending pod",
                    pod.status.phase
                ),
            ));
        }
        errs.into_result()?;
        let mut bound = pod.clone();
        bound.spec.node_name = self.target.name.clone();
        bound.spec.device_assignments = self.device_assignments.clone();
        let errs = super::pod_validation::validate_device_assignments(&bound.spec, "spec");
        errs.into_result()?;
        *pod = bound;
        Ok(())
    }
}
