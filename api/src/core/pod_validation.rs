//! Validation of pods and pod specs (also used for job templates). Every error names the full
//! field path (`spec.containers[0].resources.limits[nvidia.com/gpu]`) and says what was
//! expected. The rules are Kubernetes' where it has one.

use std::collections::BTreeSet;

use crate::core::container::{Container, pull_policy};
use crate::core::pod::{pod_phase, preemption_policy, restart_policy};
use crate::core::{Pod, PodSpec};
use crate::error::{FieldError, FieldErrorKind, FieldErrors};
use crate::quantity::{ResourceList, is_extended_resource};
use crate::scheduling::HIGHEST_PRIORITY;
use crate::validation::{
    check_enum, check_label, check_min, check_positive, check_subdomain, is_dns1123_label,
    is_env_var_name, is_qualified_name, validate_labels,
};

/// Resource names without a domain that Kubernetes knows.
const NATIVE_RESOURCES: &[&str] = &["cpu", "memory", "ephemeral-storage", "pods", "storage"];

/// Refuses devices chosen by a user: devices are the scheduler's to assign, through the binding
/// subresource, which checks them against the node's free devices. A pod (or template) written
/// with assignments would be started on devices another pod holds.
pub fn forbid_device_assignments(spec: &PodSpec, path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if !spec.device_assignments.is_empty() {
        errs.push(FieldError::forbidden(
            format!("{path}.deviceAssignments"),
            "devices are set only through the binding subresource (pods/binding), by the scheduler",
        ));
    }
    errs
}

/// Checks a pod on create: [`validate_pod`] and no devices chosen by the creator.
pub fn validate_pod_create(pod: &Pod) -> FieldErrors {
    let mut errs = validate_pod(pod);
    errs.extend(forbid_device_assignments(&pod.spec, "spec"));
    errs
}

/// Checks a pod (on create and update).
pub fn validate_pod(pod: &Pod) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if let Err(e) = crate::validation::validate_object_meta(&pod.metadata, true) {
        errs.extend(e);
    }
    errs.extend(validate_pod_spec(&pod.spec, "spec"));
    check_enum(
        &mut errs,
        "status.phase",
        &pod.status.phase,
        pod_phase::ALL,
        true,
    );
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
    let volumes: BTreeSet<&str> = spec.volumes.iter().map(|v| v.name.as_str()).collect();
    let mut names = BTreeSet::new();
    for (list, field) in [
        (&spec.containers, "containers"),
        (&spec.init_containers, "initContainers"),
    ] {
        for (i, c) in list.iter().enumerate() {
            let p = format!("{path}.{field}[{i}]");
            if !c.name.is_empty() && !names.insert(c.name.as_str()) {
                errs.push(FieldError::duplicate(
                    format!("{p}.name"),
                    format!("{:?}: expected container names unique in the pod", c.name),
                ));
            }
            validate_container(c, &p, &volumes, &mut errs);
        }
    }
    let mut seen = BTreeSet::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        let p = format!("{path}.volumes[{i}].name");
        if !is_dns1123_label(&v.name) {
            errs.push(FieldError::invalid(
                p,
                format!("{:?}: expected a lower-case RFC 1123 label", v.name),
            ));
        } else if !seen.insert(v.name.as_str()) {
            errs.push(FieldError::duplicate(
                p,
                format!("{:?}: expected volume names unique in the pod", v.name),
            ));
        }
    }
    check_subdomain(&mut errs, &format!("{path}.nodeName"), &spec.node_name);
    errs.extend(validate_labels(
        &spec.node_selector,
        &format!("{path}.nodeSelector"),
    ));
    check_subdomain(
        &mut errs,
        &format!("{path}.priorityClassName"),
        &spec.priority_class_name,
    );
    if let Some(p) = spec.priority
        && p > HIGHEST_PRIORITY
    {
        errs.push(FieldError::invalid(
            format!("{path}.priority"),
            format!("{p}: expected at most {HIGHEST_PRIORITY}"),
        ));
    }
    check_enum(
        &mut errs,
        &format!("{path}.preemptionPolicy"),
        spec.preemption_policy.as_deref().unwrap_or_default(),
        preemption_policy::ALL,
        true,
    );
    check_enum(
        &mut errs,
        &format!("{path}.restartPolicy"),
        &spec.restart_policy,
        restart_policy::ALL,
        true,
    );
    check_min(
        &mut errs,
        &format!("{path}.terminationGracePeriodSeconds"),
        spec.termination_grace_period_seconds,
        0,
    );
    check_positive(
        &mut errs,
        &format!("{path}.activeDeadlineSeconds"),
        spec.active_deadline_seconds,
    );
    check_label(&mut errs, &format!("{path}.hostname"), &spec.hostname);
    check_label(&mut errs, &format!("{path}.subdomain"), &spec.subdomain);
    check_subdomain(
        &mut errs,
        &format!("{path}.serviceAccountName"),
        &spec.service_account_name,
    );
    super::affinity::validate_placement(spec, path, &mut errs);
    errs.extend(validate_device_assignments(spec, path));
    if spec.rootfs.as_deref().is_some_and(|r| !r.starts_with('/')) {
        errs.push(FieldError::invalid(
            format!("{path}.rootfs"),
            "expected an absolute path",
        ));
    }
    errs
}

fn validate_container(c: &Container, p: &str, volumes: &BTreeSet<&str>, errs: &mut FieldErrors) {
    if c.name.is_empty() {
        errs.push(FieldError::required(
            format!("{p}.name"),
            "expected a container name",
        ));
    } else if !is_dns1123_label(&c.name) {
        errs.push(FieldError::invalid(
            format!("{p}.name"),
            format!(
                "{:?}: expected a lower-case RFC 1123 label (letters, digits and '-', at most 63 characters)",
                c.name
            ),
        ));
    }
    if c.image.is_empty() && c.command.is_empty() {
        errs.push(FieldError::required(
            format!("{p}.image"),
            "expected an image, or a command to run on the host",
        ));
    }
    for (i, e) in c.env.iter().enumerate() {
        if !is_env_var_name(&e.name) {
            errs.push(FieldError::invalid(
                format!("{p}.env[{i}].name"),
                format!(
                    "{:?}: expected a non-empty name without '=' or control characters",
                    e.name
                ),
            ));
        }
        if !e.value.is_empty() && e.value_from.is_some() {
            errs.push(FieldError::invalid(
                format!("{p}.env[{i}].valueFrom"),
                "expected either value or valueFrom, not both",
            ));
        }
        if let Some(f) = e.value_from.as_ref().and_then(|v| v.field_ref.as_ref())
            && f.field_path.is_empty()
        {
            errs.push(FieldError::required(
                format!("{p}.env[{i}].valueFrom.fieldRef.fieldPath"),
                "expected a field path such as metadata.name",
            ));
        }
    }
    validate_resources(c, p, errs);
    for (i, port) in c.ports.iter().enumerate() {
        let pp = format!("{p}.ports[{i}]");
        if !(1..=65535).contains(&port.container_port) {
            errs.push(FieldError::invalid(
                format!("{pp}.containerPort"),
                format!(
                    "{}: expected a port between 1 and 65535",
                    port.container_port
                ),
            ));
        }
        if let Some(h) = port.host_port
            && !(0..=65535).contains(&h)
        {
            errs.push(FieldError::invalid(
                format!("{pp}.hostPort"),
                format!("{h}: expected a port between 0 and 65535"),
            ));
        }
        check_enum(
            errs,
            &format!("{pp}.protocol"),
            &port.protocol,
            crate::core::container::protocol::ALL,
            true,
        );
    }
    check_enum(
        errs,
        &format!("{p}.imagePullPolicy"),
        &c.image_pull_policy,
        pull_policy::ALL,
        true,
    );
    for (i, m) in c.volume_mounts.iter().enumerate() {
        if !volumes.contains(m.name.as_str()) {
            errs.push(FieldError::new(
                FieldErrorKind::NotFound,
                format!("{p}.volumeMounts[{i}].name"),
                format!(
                    "{:?}: expected the name of one of the pod's volumes",
                    m.name
                ),
            ));
        }
        if m.mount_path.is_empty() {
            errs.push(FieldError::required(
                format!("{p}.volumeMounts[{i}].mountPath"),
                "expected an absolute path",
            ));
        }
    }
}

/// Kubernetes' rules on requests and limits: valid names, no negatives, whole extended
/// resources, requests at most the limits, and extended resources never overcommitted.
fn validate_resources(c: &Container, p: &str, errs: &mut FieldErrors) {
    let r = &c.resources;
    for (list, field) in [(&r.limits, "limits"), (&r.requests, "requests")] {
        let lp = format!("{p}.resources.{field}");
        for name in list.keys() {
            if !is_resource_name(name) {
                errs.push(FieldError::invalid(
                    format!("{lp}[{name}]"),
                    format!(
                        "{name:?}: expected a standard resource (cpu, memory, ephemeral-storage, hugepages-<size>) or a domain-qualified name such as nvidia.com/gpu"
                    ),
                ));
            }
        }
        errs.extend(validate_resource_list(list, &lp));
    }
    for (name, req) in &r.requests {
        let path = format!("{p}.resources.requests[{name}]");
        match r.limits.get(name) {
            Some(limit) if is_extended_resource(name) && req != limit => {
                errs.push(FieldError::invalid(
                    path,
                    format!(
                        "{req}: expected a request equal to the limit {limit} ({name} cannot be overcommitted)"
                    ),
                ))
            }
            Some(limit) if req > limit => errs.push(FieldError::invalid(
                path,
                format!("{req}: expected a request less than or equal to the limit {limit}"),
            )),
            None if is_extended_resource(name) => errs.push(FieldError::required(
                format!("{p}.resources.limits[{name}]"),
                format!(
                    "expected a limit equal to the request {req} ({name} cannot be overcommitted)"
                ),
            )),
            _ => {}
        }
    }
}

fn is_resource_name(name: &str) -> bool {
    if name.contains('/') {
        is_qualified_name(name)
    } else {
        NATIVE_RESOURCES.contains(&name) || name.starts_with("hugepages-")
    }
}

/// Checks the quantities of a resource list: no negatives, whole numbers for extended
/// resources.
pub fn validate_resource_list(list: &ResourceList, path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    for (name, q) in list {
        let p = format!("{path}[{name}]");
        if q.is_negative() {
            errs.push(FieldError::invalid(
                p,
                format!("{q}: expected a quantity greater than or equal to 0"),
            ));
        } else if is_extended_resource(name) && !q.is_whole() {
            errs.push(FieldError::invalid(
                p,
                format!("{q}: expected a whole number ({name} is an extended resource)"),
            ));
        }
    }
    errs
}

/// Checks `deviceAssignments` against the spec's containers: each names a container of the
/// pod, a resource, and distinct device ids.
pub fn validate_device_assignments(spec: &PodSpec, path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let mut all_ids = BTreeSet::new();
    for (i, a) in spec.device_assignments.iter().enumerate() {
        let p = format!("{path}.deviceAssignments[{i}]");
        let container = spec
            .containers
            .iter()
            .chain(&spec.init_containers)
            .find(|c| c.name == a.container);
        if container.is_none() {
            errs.push(FieldError::new(
                FieldErrorKind::NotFound,
                format!("{p}.container"),
                format!(
                    "{:?}: expected the name of one of the pod's containers",
                    a.container
                ),
            ));
        }
        if !is_qualified_name(&a.resource) {
            errs.push(FieldError::invalid(
                format!("{p}.resource"),
                format!(
                    "{:?}: expected a resource name such as nvidia.com/gpu",
                    a.resource
                ),
            ));
        }
        if a.ids.is_empty() {
            errs.push(FieldError::required(
                format!("{p}.ids"),
                "expected at least one device id",
            ));
        }
        for (j, id) in a.ids.iter().enumerate() {
            let shared = a.share_milli.is_some();
            if id.is_empty() || (!shared && !all_ids.insert((a.resource.as_str(), id.as_str()))) {
                errs.push(FieldError::duplicate(
                    format!("{p}.ids[{j}]"),
                    format!("{id:?}: expected a distinct, non-empty device id"),
                ));
            }
        }
        if let Some(s) = a.share_milli
            && !(1..=1000).contains(&s)
        {
            errs.push(FieldError::invalid(
                format!("{p}.shareMilli"),
                format!("{s}: expected a share between 1 and 1000 thousandths"),
            ));
        }
    }
    errs
}

/// What an update may change: Kubernetes lets the images, `activeDeadlineSeconds` (set, or
/// shortened) and `tolerations` (added to) change; everything else in the spec is fixed. The
/// node and the devices are set once, through the binding subresource
/// ([`crate::core::Binding::apply_to`]), never by an update.
pub fn validate_pod_update(new: &Pod, old: &Pod) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if new.spec.node_name != old.spec.node_name {
        errs.push(FieldError::forbidden(
            "spec.nodeName",
            "the node is set through the binding subresource (pods/binding), not by an update",
        ));
    }
    if new.spec.device_assignments != old.spec.device_assignments {
        errs.push(FieldError::forbidden(
            "spec.deviceAssignments",
            "devices are set through the binding subresource (pods/binding), not by an update",
        ));
    }
    if let Some(old_deadline) = old.spec.active_deadline_seconds {
        match new.spec.active_deadline_seconds {
            Some(d) if d <= old_deadline => {}
            _ => errs.push(FieldError::forbidden(
                "spec.activeDeadlineSeconds",
                format!("expected a deadline of at most {old_deadline} once one is set"),
            )),
        }
    }
    if !old
        .spec
        .tolerations
        .iter()
        .all(|t| new.spec.tolerations.contains(t))
    {
        errs.push(FieldError::forbidden(
            "spec.tolerations",
            "tolerations may be added but not removed or changed",
        ));
    }
    // Compare the rest with the mutable fields taken from the old pod.
    let mut comparable = new.spec.clone();
    comparable.active_deadline_seconds = old.spec.active_deadline_seconds;
    comparable.tolerations = old.spec.tolerations.clone();
    comparable.node_name = old.spec.node_name.clone();
    comparable.device_assignments = old.spec.device_assignments.clone();
    for (c, o) in comparable
        .containers
        .iter_mut()
        .zip(&old.spec.containers)
        .chain(
            comparable
                .init_containers
                .iter_mut()
                .zip(&old.spec.init_containers),
        )
    {
        c.image = o.image.clone();
    }
    if comparable != old.spec {
        errs.push(FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than containers[*].image, \
             initContainers[*].image, activeDeadlineSeconds and tolerations (additions)",
        ));
    }
    errs
}
