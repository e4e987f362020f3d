//! Gangs and priorities: the PodGroup of the Kubernetes scheduler-plugins coscheduling API
//! (`scheduling.x-k8s.io/v1alpha1`), so existing gang manifests load, and
//! `scheduling.k8s.io/v1` PriorityClass.
//!
//! A pod joins a gang with the label [`POD_GROUP_LABEL`]; nothing in the gang is bound until
//! `minMember` of its pods can be placed together.

use serde::{Deserialize, Serialize};

use crate::error::{FieldError, FieldErrors};
use crate::meta::{Condition, ObjectMeta, Time};
use crate::quantity::ResourceList;
use crate::resource::Resource;
use crate::validation::{check_enum, check_min};

/// The label by which a pod joins a PodGroup.
pub const POD_GROUP_LABEL: &str = "scheduling.x-k8s.io/pod-group";
/// The largest priority a user-defined class may have; larger ones are reserved for classes
/// named `system-*`.
pub const HIGHEST_USER_DEFINABLE_PRIORITY: i32 = 1_000_000_000;
/// The largest priority of all (system classes and their margin).
pub const HIGHEST_PRIORITY: i32 = 2_000_001_000;

/// Phases of a PodGroup (the scheduler-plugins ones).
pub mod pod_group_phase {
    pub const PENDING: &str = "Pending";
    pub const PRE_SCHEDULING: &str = "PreScheduling";
    pub const SCHEDULING: &str = "Scheduling";
    pub const SCHEDULED: &str = "Scheduled";
    pub const RUNNING: &str = "Running";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
    pub const FINISHED: &str = "Finished";
    pub const UNKNOWN: &str = "Unknown";
    pub const ALL: &[&str] = &[
        PENDING,
        PRE_SCHEDULING,
        SCHEDULING,
        SCHEDULED,
        RUNNING,
        SUCCEEDED,
        FAILED,
        FINISHED,
        UNKNOWN,
    ];
}

/// How strictly a gang keeps to one topology domain.
pub mod topology_mode {
    /// Every member in one domain, or the gang waits.
    pub const REQUIRED: &str = "Required";
    /// One domain when possible.
    pub const PREFERRED: &str = "Preferred";
    pub const ALL: &[&str] = &[REQUIRED, PREFERRED];
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodGroup {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodGroupSpec,
    #[serde(default, skip_serializing_if = "PodGroupStatus::is_empty")]
    pub status: PodGroupStatus,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodGroupSpec {
    /// How many pods must be placeable together before any is bound.
    #[serde(default)]
    pub min_member: i32,
    /// Resources the whole gang needs at least, checked before its pods are tried.
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub min_resources: ResourceList,
    /// How long the gang may wait, once its first member is tried, before it is rejected whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_timeout_seconds: Option<i32>,
    /// Drover: the gang's priority class (its pods carry it too).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub priority_class_name: String,
    /// Drover: the queue the gang is admitted through.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub queue: String,
    /// Drover: keep the gang within one topology domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<GangTopology>,
}

/// A topology constraint on a whole gang.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GangTopology {
    /// The node label that names a domain (a rack, an NVLink domain, ...).
    pub key: String,
    /// `Required` (the default) or `Preferred`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodGroupStatus {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// The owner (e.g. the Job) that created the group.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub occupied_by: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub scheduled: i32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub running: i32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub succeeded: i32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

impl PodGroupStatus {
    pub fn is_empty(&self) -> bool {
        *self == PodGroupStatus::default()
    }
}

impl PodGroup {
    /// A group with a name, a namespace and a minimum size, its type fields set.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, min_member: i32) -> Self {
        let mut pg = PodGroup {
            metadata: ObjectMeta::named(namespace, name),
            spec: PodGroupSpec {
                min_member,
                ..Default::default()
            },
            ..Default::default()
        };
        pg.set_type_meta();
        pg
    }
}

fn validate_pod_group(pg: &PodGroup) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if let Err(e) = crate::validation::validate_object_meta(&pg.metadata, true) {
        errs.extend(e);
    }
    if pg.spec.min_member < 1 {
        errs.push(FieldError::invalid(
            "spec.minMember",
            format!("{}: expected at least 1", pg.spec.min_member),
        ));
    }
    crate::validation::check_positive(
        &mut errs,
        "spec.scheduleTimeoutSeconds",
        pg.spec.schedule_timeout_seconds,
    );
    errs.extend(crate::core::pod_validation::validate_resource_list(
        &pg.spec.min_resources,
        "spec.minResources",
    ));
    crate::validation::check_subdomain(
        &mut errs,
        "spec.priorityClassName",
        &pg.spec.priority_class_name,
    );
    crate::validation::check_subdomain(&mut errs, "spec.queue", &pg.spec.queue);
    if let Some(t) = &pg.spec.topology {
        if !crate::validation::is_qualified_name(&t.key) {
            errs.push(FieldError::invalid(
                "spec.topology.key",
                format!(
                    "{:?}: {}",
                    t.key,
                    crate::validation::QUALIFIED_NAME_EXPECTED
                ),
            ));
        }
        check_enum(
            &mut errs,
            "spec.topology.mode",
            &t.mode,
            topology_mode::ALL,
            true,
        );
    }
    check_enum(
        &mut errs,
        "status.phase",
        &pg.status.phase,
        pod_group_phase::ALL,
        true,
    );
    for (f, v) in [
        ("status.scheduled", pg.status.scheduled),
        ("status.running", pg.status.running),
        ("status.succeeded", pg.status.succeeded),
        ("status.failed", pg.status.failed),
    ] {
        check_min(&mut errs, f, Some(v), 0);
    }
    errs
}

impl Resource for PodGroup {
    const GROUP: &'static str = "scheduling.x-k8s.io";
    const VERSION: &'static str = "v1alpha1";
    const KIND: &'static str = "PodGroup";
    const PLURAL: &'static str = "podgroups";
    const SINGULAR: &'static str = "podgroup";
    const SHORT_NAMES: &'static [&'static str] = &["pg", "pgs"];
    const NAMESPACED: bool = true;
    const HAS_STATUS: bool = true;
    /// The pod-group controller and the scheduler count the members and move the phase.
    const STATUS_OWNED_BY_SYSTEM: bool = true;

    crate::impl_resource_meta!(PodGroup);

    fn validate(&self) -> Result<(), FieldErrors> {
        validate_pod_group(self).into_result()
    }

    fn default_fields(&mut self) {
        if let Some(t) = &mut self.spec.topology
            && t.mode.is_empty()
        {
            t.mode = topology_mode::REQUIRED.into();
        }
        if self.status.phase.is_empty() {
            self.status.phase = pod_group_phase::PENDING.into();
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
            "status.phase" => Some(self.status.phase.clone()),
            _ => None,
        }
    }
}

/// A named priority for pods (`scheduling.k8s.io/v1`). Its fields sit at the top level, as in
/// Kubernetes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PriorityClass {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Higher runs first and may preempt lower.
    #[serde(default)]
    pub value: i32,
    /// Whether pods naming no class get this one (at most one class should say so).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub global_default: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// `PreemptLowerPriority` (the default) or `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preemption_policy: Option<String>,
}

impl PriorityClass {
    /// A class with a name and a value, its type fields set.
    pub fn new(name: impl Into<String>, value: i32) -> Self {
        let mut pc = PriorityClass {
            metadata: ObjectMeta {
                name: name.into(),
                ..Default::default()
            },
            value,
            ..Default::default()
        };
        pc.set_type_meta();
        pc
    }
}

impl Resource for PriorityClass {
    const GROUP: &'static str = "scheduling.k8s.io";
    const VERSION: &'static str = "v1";
    const KIND: &'static str = "PriorityClass";
    const PLURAL: &'static str = "priorityclasses";
    const SINGULAR: &'static str = "priorityclass";
    const SHORT_NAMES: &'static [&'static str] = &["pc"];
    const NAMESPACED: bool = false;

    crate::impl_resource_meta!(PriorityClass);

    fn validate(&self) -> Result<(), FieldErrors> {
        let mut errs = FieldErrors::new();
        if let Err(e) = crate::validation::validate_object_meta(&self.metadata, false) {
            errs.extend(e);
        }
        let system = self.metadata.name.starts_with("system-");
        let max = if system {
            HIGHEST_PRIORITY
        } else {
            HIGHEST_USER_DEFINABLE_PRIORITY
        };
        if self.value > max {
            errs.push(FieldError::invalid(
                "value",
                format!(
                    "{}: expected at most {max} (larger values are reserved for system-* classes)",
                    self.value
                ),
            ));
        }
        check_enum(
            &mut errs,
            "preemptionPolicy",
            self.preemption_policy.as_deref().unwrap_or_default(),
            crate::core::preemption_policy::ALL,
            true,
        );
        errs.into_result()
    }

    fn validate_update(&self, old: &Self) -> Result<(), FieldErrors> {
        let mut errs = self.validate().err().unwrap_or_default();
        if self.value != old.value {
            errs.push(FieldError::forbidden(
                "value",
                format!(
                    "{} -> {}: the value of a priority class cannot change",
                    old.value, self.value
                ),
            ));
        }
        if self.preemption_policy != old.preemption_policy {
            errs.push(FieldError::forbidden(
                "preemptionPolicy",
                "the preemption policy of a priority class cannot change",
            ));
        }
        errs.into_result()
    }

    fn default_fields(&mut self) {
        self.preemption_policy
            .get_or_insert_with(|| crate::core::preemption_policy::PREEMPT_LOWER_PRIORITY.into());
    }

    fn spec_differs(&self, other: &Self) -> bool {
        self.value != other.value
            || self.global_default != other.global_default
            || self.description != other.description
            || self.preemption_policy != other.preemption_policy
    }
}
