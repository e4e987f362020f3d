//! Validation of Jobs: counts, the completion mode, the gang policy, the pod template, and what
//! an update may change.

use crate::batch::{Job, completion_mode};
use crate::core::pod_validation::validate_pod_spec;
use crate::core::restart_policy;
use crate::error::{FieldError, FieldErrors};
use crate::scheduling::topology_mode;
use crate::validation::{check_enum, check_min, check_positive, validate_labels};

/// Checks a Job on create.
pub fn validate_job(job: &Job) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if let Err(e) = crate::validation::validate_object_meta(&job.metadata, true) {
        errs.extend(e);
    }
    let spec = &job.spec;
    check_min(&mut errs, "spec.parallelism", spec.parallelism, 0);
    check_min(&mut errs, "spec.completions", spec.completions, 0);
    check_min(&mut errs, "spec.backoffLimit", spec.backoff_limit, 0);
    check_min(
        &mut errs,
        "spec.backoffLimitPerIndex",
        spec.backoff_limit_per_index,
        0,
    );
    check_min(
        &mut errs,
        "spec.maxFailedIndexes",
        spec.max_failed_indexes,
        0,
    );
    check_positive(
        &mut errs,
        "spec.activeDeadlineSeconds",
        spec.active_deadline_seconds,
    );
    check_min(
        &mut errs,
        "spec.ttlSecondsAfterFinished",
        spec.ttl_seconds_after_finished,
        0,
    );
    let mode = spec.completion_mode.as_deref().unwrap_or_default();
    check_enum(
        &mut errs,
        "spec.completionMode",
        mode,
        completion_mode::ALL,
        true,
    );
    if mode == completion_mode::INDEXED && spec.completions.is_none() {
        errs.push(FieldError::required(
            "spec.completions",
            "expected completions with completionMode Indexed",
        ));
    }
    if mode == completion_mode::INDEXED {
        validate_indexed_bounds(job, &mut errs);
    }
    if spec.backoff_limit_per_index.is_some() && mode != completion_mode::INDEXED {
        errs.push(FieldError::forbidden(
            "spec.backoffLimitPerIndex",
            "expected only with completionMode Indexed",
        ));
    }
    if let Some(sel) = &spec.selector {
        errs.extend(sel.validate("spec.selector"));
        if !sel.matches(&spec.template.metadata.labels) {
            errs.push(FieldError::invalid(
                "spec.template.metadata.labels",
                format!("expected labels that match the selector {sel}"),
            ));
        }
    }
    errs.extend(validate_labels(
        &spec.template.metadata.labels,
        "spec.template.metadata.labels",
    ));
    errs.extend(crate::validation::validate_annotations(
        &spec.template.metadata.annotations,
        "spec.template.metadata.annotations",
    ));
    errs.extend(validate_pod_spec(&spec.template.spec, "spec.template.spec"));
    errs.extend(crate::core::pod_validation::forbid_device_assignments(
        &spec.template.spec,
        "spec.template.spec",
    ));
    let restart = spec.template.spec.restart_policy.as_str();
    if restart != restart_policy::NEVER && restart != restart_policy::ON_FAILURE {
        errs.push(FieldError::not_supported(
            "spec.template.spec.restartPolicy",
            format!("{restart:?}: expected Never or OnFailure (a Job's pods run to completion)"),
        ));
    }
    validate_gang(job, &mut errs);
    errs
}

/// The most completions (and pods at once) of an Indexed Job. Its status carries the completed
/// and failed indexes, and the controller tracks every index, so the count bounds memory in the
/// API server and the controller (Kubernetes' `maxParallelismForIndexedJob` and
/// `completionsSoftLimit`).
pub const MAX_INDEXED_COMPLETIONS: i32 = 100_000;

fn validate_indexed_bounds(job: &Job, errs: &mut FieldErrors) {
    let spec = &job.spec;
    for (path, value) in [
        ("spec.completions", spec.completions),
        ("spec.parallelism", spec.parallelism),
        ("spec.maxFailedIndexes", spec.max_failed_indexes),
    ] {
        if let Some(v) = value
            && v > MAX_INDEXED_COMPLETIONS
        {
            errs.push(FieldError::invalid(
                path,
                format!(
                    "{v}: expected at most {MAX_INDEXED_COMPLETIONS} with completionMode Indexed"
                ),
            ));
        }
    }
    if let (Some(m), Some(c)) = (spec.max_failed_indexes, spec.completions)
        && m > c
    {
        errs.push(FieldError::invalid(
            "spec.maxFailedIndexes",
            format!("{m}: expected at most the completions {c}"),
        ));
    }
}

fn validate_gang(job: &Job, errs: &mut FieldErrors) {
    let Some(g) = &job.spec.gang else { return };
    check_positive(errs, "spec.gang.minMember", g.min_member);
    if let (Some(m), Some(p)) = (g.min_member, job.spec.parallelism)
        && m > p
    {
        errs.push(FieldError::invalid(
            "spec.gang.minMember",
            format!("{m}: expected at most the parallelism {p} (a gang larger than the pods that run at once never starts)"),
        ));
    }
    check_positive(
        errs,
        "spec.gang.scheduleTimeoutSeconds",
        g.schedule_timeout_seconds,
    );
    if let Some(key) = &g.topology_key
        && !crate::validation::is_qualified_name(key)
    {
        errs.push(FieldError::invalid(
            "spec.gang.topologyKey",
            format!("{key:?}: {}", crate::validation::QUALIFIED_NAME_EXPECTED),
        ));
    }
    if let Some(mode) = &g.topology_mode {
        check_enum(
            errs,
            "spec.gang.topologyMode",
            mode,
            topology_mode::ALL,
            false,
        );
        if g.topology_key.is_none() {
            errs.push(FieldError::required(
                "spec.gang.topologyKey",
                "expected a topologyKey with topologyMode",
            ));
        }
    }
    if let Some(port) = g.master_port
        && !(1..=65535).contains(&port)
    {
        errs.push(FieldError::invalid(
            "spec.gang.masterPort",
            format!("{port}: expected a port between 1 and 65535"),
        ));
    }
}

/// What an update of a Job may change: parallelism, suspend, deadlines, backoff and TTL. The
/// selector (once set), the completion mode, the completions, the gang policy and the template are fixed,
/// except that the template may change while the Job is suspended and has never started (as
/// Kubernetes allows for queueing).
pub fn validate_job_update(new: &Job, old: &Job) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let fixed = |errs: &mut FieldErrors, path: &str, changed: bool| {
        if changed {
            errs.push(FieldError::forbidden(
                path,
                "field is immutable once the Job is created",
            ));
        }
    };
    fixed(
        &mut errs,
        "spec.selector",
        old.spec.selector.is_some() && new.spec.selector != old.spec.selector,
    );
    fixed(
        &mut errs,
        "spec.completionMode",
        new.spec.completion_mode != old.spec.completion_mode,
    );
    fixed(
        &mut errs,
        "spec.completions",
        new.spec.completions != old.spec.completions,
    );
    fixed(&mut errs, "spec.gang", new.spec.gang != old.spec.gang);
    let unstarted_suspended = old.is_suspended() && old.status.start_time.is_none();
    if new.spec.template != old.spec.template && !unstarted_suspended {
        errs.push(FieldError::forbidden(
            "spec.template",
            "the pod template is immutable unless the Job is suspended and has not started",
        ));
    }
    errs
}
