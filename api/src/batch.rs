//! `batch/v1` Job: pods run to completion, retried within a backoff limit.
//!
//! Drover adds one field, `spec.gang`: a Kubernetes Job becomes a gang job (all its pods start
//! together or none do, and a failure restarts the whole gang) with the single line `gang: {}`.
//! Validation is in [`validate_job`] and [`validate_job_update`]; the pod template is checked as
//! a pod spec.

use serde::{Deserialize, Serialize};

use crate::error::FieldErrors;
use crate::meta::{Condition, ObjectMeta, Time, find_condition};
use crate::resource::Resource;
use crate::selector::LabelSelector;

mod validation;

pub use validation::{validate_job, validate_job_update};

/// Retries before a Job is marked Failed, when it names no `backoffLimit`.
pub const DEFAULT_BACKOFF_LIMIT: i32 = 6;
/// The label that ties a Job's pods to it (set from the Job's uid, as Kubernetes does).
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// The label carrying the Job's name on its pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// The port rank 0 listens on for a gang job's rendezvous, when it names none.
pub const DEFAULT_MASTER_PORT: i32 = 29500;

/// Values of `spec.completionMode`.
pub mod completion_mode {
    pub const NON_INDEXED: &str = "NonIndexed";
    pub const INDEXED: &str = "Indexed";
    pub const ALL: &[&str] = &[NON_INDEXED, INDEXED];
}

/// Types of a Job's conditions.
pub mod job_condition {
    pub const COMPLETE: &str = "Complete";
    pub const FAILED: &str = "Failed";
    pub const SUSPENDED: &str = "Suspended";
    pub const FAILURE_TARGET: &str = "FailureTarget";
    pub const SUCCESS_CRITERIA_MET: &str = "SuccessCriteriaMet";
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Job {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: JobSpec,
    #[serde(default, skip_serializing_if = "JobStatus::is_empty")]
    pub status: JobStatus,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobSpec {
    /// How many pods run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<i32>,
    /// How many successful pods finish the Job (unset: any success, once all have stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completions: Option<i32>,
    /// `NonIndexed` (the default) or `Indexed` (each pod gets an index 0..completions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_limit: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_limit_per_index: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failed_indexes: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual_selector: Option<bool>,
    #[serde(default)]
    pub template: PodTemplateSpec,
    /// Accepted as written (Kubernetes' pod failure policy rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_failure_policy: Option<serde_json::Value>,
    /// Accepted as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_policy: Option<serde_json::Value>,
    /// Accepted as written (`TerminatingOrFailed` or `Failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_replacement_policy: Option<String>,
    /// Drover: run the Job's pods as one gang.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gang: Option<GangPolicy>,
}

/// A template from which a controller creates pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodTemplateSpec {
    #[serde(default, skip_serializing_if = "is_default_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: crate::core::PodSpec,
}

/// How a gang job's pods are scheduled together. Every field is optional: `gang: {}` is a gang
/// of all the Job's parallel pods.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GangPolicy {
    /// Pods that must be placeable together (default: the Job's parallelism).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_member: Option<i32>,
    /// How long the gang may wait for room before it is rejected whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_timeout_seconds: Option<i32>,
    /// A node label naming a domain the gang should fit in (a rack, an NVLink domain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_key: Option<String>,
    /// `Required` (the default when `topologyKey` is set) or `Preferred`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_mode: Option<String>,
    /// The rendezvous port of rank 0 (`MASTER_PORT`), default 29500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_port: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobStatus {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub active: i32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub succeeded: i32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminating: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// `Complete`, `Failed`, `Suspended`, `FailureTarget`, `SuccessCriteriaMet`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Finished indexes of an Indexed Job, as ranges: `1,3-5,7`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_indexes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_indexes: Option<String>,
    /// Accepted as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncounted_terminated_pods: Option<serde_json::Value>,
}

fn is_default_meta(m: &ObjectMeta) -> bool {
    *m == ObjectMeta::default()
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

impl JobStatus {
    pub fn is_empty(&self) -> bool {
        *self == JobStatus::default()
    }
}

impl Job {
    /// Whether the Job has a `Complete` or `Failed` condition that is true.
    pub fn is_finished(&self) -> bool {
        [job_condition::COMPLETE, job_condition::FAILED]
            .iter()
            .any(|t| find_condition(&self.status.conditions, t).is_some_and(Condition::is_true))
    }

    pub fn is_suspended(&self) -> bool {
        self.spec.suspend == Some(true)
    }

    pub fn is_indexed(&self) -> bool {
        self.spec.completion_mode.as_deref() == Some(completion_mode::INDEXED)
    }

    /// Whether the Job runs as a gang.
    pub fn is_gang(&self) -> bool {
        self.spec.gang.is_some()
    }

    /// The parallelism, defaulted to 1.
    pub fn parallelism(&self) -> i32 {
        self.spec.parallelism.unwrap_or(1)
    }

    /// The backoff limit, defaulted.
    pub fn backoff_limit(&self) -> i32 {
        self.spec.backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT)
    }

    /// The gang's minimum size: `gang.minMember`, or the parallelism (capped by completions).
    pub fn gang_min_member(&self) -> Option<i32> {
        let gang = self.spec.gang.as_ref()?;
        let default = match self.spec.completions {
            Some(c) => self.parallelism().min(c),
            None => self.parallelism(),
        };
        Some(gang.min_member.unwrap_or(default))
    }
}

impl Resource for Job {
    const GROUP: &'static str = "batch";
    const VERSION: &'static str = "v1";
    const KIND: &'static str = "Job";
    const PLURAL: &'static str = "jobs";
    const SINGULAR: &'static str = "job";
    const NAMESPACED: bool = true;
    const HAS_STATUS: bool = true;
    /// The job controller alone counts a Job's pods and decides it is Complete or Failed.
    const STATUS_OWNED_BY_SYSTEM: bool = true;

    crate::impl_resource_meta!(Job);

    fn validate(&self) -> Result<(), FieldErrors> {
        validate_job(self).into_result()
    }

    fn validate_update(&self, old: &Self) -> Result<(), FieldErrors> {
        let mut errs = validate_job(self);
        errs.extend(validate_job_update(self, old));
        errs.into_result()
    }

    /// Kubernetes' defaults: with neither parallelism nor completions, both are 1; parallelism
    /// alone leaves completions unset (a work queue). Once the Job has a uid and no selector of
    /// its own, the selector is generated from the uid and the template labelled to match. The template's restart policy stays as
    /// written: it must be `Never` or `OnFailure`.
    fn default_fields(&mut self) {
        let spec = &mut self.spec;
        if spec.completions.is_none() && spec.parallelism.is_none() {
            spec.completions = Some(1);
        }
        spec.parallelism.get_or_insert(1);
        if spec.backoff_limit.is_none() {
            spec.backoff_limit = Some(if spec.backoff_limit_per_index.is_some() {
                i32::MAX
            } else {
                DEFAULT_BACKOFF_LIMIT
            });
        }
        spec.completion_mode
            .get_or_insert_with(|| completion_mode::NON_INDEXED.into());
        spec.suspend.get_or_insert(false);
        if let Some(g) = &mut spec.gang
            && g.topology_key.is_some()
            && g.topology_mode.is_none()
        {
            g.topology_mode = Some(crate::scheduling::topology_mode::REQUIRED.into());
        }
        // The generated selector, once the server has given the Job a uid.
        let uid = &self.metadata.uid;
        if spec.selector.is_none() && spec.manual_selector != Some(true) && !uid.is_empty() {
            let labels = &mut spec.template.metadata.labels;
            labels.insert(CONTROLLER_UID_LABEL.into(), uid.clone());
            labels.insert(JOB_NAME_LABEL.into(), self.metadata.name.clone());
            spec.selector = Some(LabelSelector::from_labels(
                [(CONTROLLER_UID_LABEL.to_string(), uid.clone())].into(),
            ));
        }
        let restart = std::mem::take(&mut spec.template.spec.restart_policy);
        spec.template.spec.default_fields();
        spec.template.spec.restart_policy = restart;
    }

    fn copy_status_from(&mut self, other: &Self) {
        self.status = other.status.clone();
    }

    fn spec_differs(&self, other: &Self) -> bool {
        self.spec != other.spec
    }

    fn field(&self, path: &str) -> Option<String> {
        match path {
            "status.successful" => Some(self.status.succeeded.to_string()),
            _ => None,
        }
    }
}
