//! The plain (non-gang) Job: conditions, counts, pod creation and removal.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use drover_api::batch::{Job, JobStatus, job_condition};
use drover_api::core::Pod;
use drover_api::meta::{Condition, Time, find_condition, set_condition};

use super::pods::{build_pod, pod_index};
use super::{CONFLICT_RETRY, JobController, JobError, tracking};
use crate::events::reason;
use crate::runtime::Action;

/// Whether `pod` still runs (or will): not finished and not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    !pod.is_terminal() && pod.metadata.deletion_timestamp.is_none()
}

/// Whether `pod` is Ready.
pub fn is_ready(pod: &Pod) -> bool {
    find_condition(&pod.status.conditions, "Ready").is_some_and(Condition::is_true)
}

/// When the Job finished: `completionTime`, else the `Failed` condition's transition.
pub fn finish_time(job: &Job) -> Option<Time> {
    job.status.completion_time.or_else(|| {
        find_condition(&job.status.conditions, job_condition::FAILED)
            .filter(|c| c.is_true())
            .and_then(|c| c.last_transition_time)
    })
}

fn condition(type_: &str, status: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        ..Default::default()
    }
}

/// Why the Job must fail now, if it must: (reason, message).
pub fn failure(job: &Job, status: &JobStatus, now: Time) -> Option<(&'static str, String)> {
    if status.failed > job.backoff_limit() {
        return Some((
            reason::BACKOFF_LIMIT_EXCEEDED,
            format!(
                "Job has reached the specified backoff limit ({})",
                job.backoff_limit()
            ),
        ));
    }
    let (Some(d), Some(start)) = (job.spec.active_deadline_seconds, status.start_time) else {
        return None;
    };
    (now >= start + chrono::Duration::seconds(d)).then(|| {
        (
            reason::DEADLINE_EXCEEDED,
            "Job was active longer than specified deadline".to_string(),
        )
    })
}

/// Time left before the active deadline, if one applies.
pub fn deadline_left(job: &Job, status: &JobStatus, now: Time) -> Option<Duration> {
    let (Some(d), Some(start)) = (job.spec.active_deadline_seconds, status.start_time) else {
        return None;
    };
    Some(
        (start + chrono::Duration::seconds(d) - now)
            .to_std()
            .unwrap_or_default(),
    )
}

/// Sets `Failed` on `status`.
pub fn mark_failed(status: &mut JobStatus, why: &str, message: String, now: Time) {
    set_condition(
        &mut status.conditions,
        condition(job_condition::FAILED, true, why, message),
        now,
    );
}

/// Sets `Complete` and the completion time on `status`.
pub fn mark_complete(status: &mut JobStatus, now: Time) {
    set_condition(
        &mut status.conditions,
        condition(
            job_condition::COMPLETE,
            true,
            "CompletionsReached",
            "Reached expected number of succeeded pods".into(),
        ),
        now,
    );
    status.completion_time = Some(now);
}

/// Applies `suspend`: the Suspended condition and the start time; returns whether suspended.
pub fn apply_suspend(job: &Job, status: &mut JobStatus, now: Time) -> bool {
    let was = find_condition(&status.conditions, job_condition::SUSPENDED)
        .is_some_and(Condition::is_true);
    if job.is_suspended() {
        set_condition(
            &mut status.conditions,
            condition(
                job_condition::SUSPENDED,
                true,
                "JobSuspended",
                "Job suspended".into(),
            ),
            now,
        );
        status.start_time = None;
        return true;
    }
    if was {
        set_condition(
            &mut status.conditions,
            condition(
                job_condition::SUSPENDED,
                false,
                "JobResumed",
                "Job resumed".into(),
            ),
            now,
        );
    }
    if status.start_time.is_none() {
        status.start_time = Some(now);
    }
    false
}

/// Reconciles a plain Job.
pub async fn reconcile_plain(
    c: &JobController,
    key: &str,
    job: &Job,
    pods: Vec<Arc<Pod>>,
) -> Result<Action, JobError> {
    let now = c.clock.now();
    let mut st = job.status.clone();
    let counted = tracking::count(job, &mut st, &pods, &c.ledger.entries(key));
    let was_suspended =
        find_condition(&st.conditions, job_condition::SUSPENDED).is_some_and(Condition::is_true);
    let suspended = apply_suspend(job, &mut st, now);
    let active: Vec<&Arc<Pod>> = pods.iter().filter(|p| is_active(p)).collect();
    let mut to_delete: Vec<&Arc<Pod>> = Vec::new();
    let mut to_create: Vec<Option<i32>> = Vec::new();
    let mut finished_event = None;
    if let Some((why, msg)) = failure(job, &st, now) {
        mark_failed(&mut st, why, msg.clone(), now);
        to_delete.extend(active.iter().copied());
        finished_event = Some((true, why, msg));
    } else if is_complete(job, &st, active.len()) {
        mark_complete(&mut st, now);
        to_delete.extend(active.iter().copied());
        finished_event = Some((false, reason::COMPLETED, "Job completed".to_string()));
    } else if suspended {
        to_delete.extend(active.iter().copied());
    } else {
        let (create, excess) = plan(job, &st, &active);
        to_create = create;
        to_delete = excess;
    }
    st.active = i32::try_from((active.len() + to_create.len()).saturating_sub(to_delete.len()))
        .unwrap_or(i32::MAX);
    st.ready =
        Some(i32::try_from(active.iter().filter(|p| is_ready(p)).count()).unwrap_or(i32::MAX));
    // Commit the counts (and the end, if any) before acting on pods.
    if !c.write_status(key, job, st.clone()).await? {
        return Ok(Action::RequeueAfter(CONFLICT_RETRY));
    }
    c.ledger.remove(key, &counted.ledger_done);
    c.mark_counted(key, job, &counted.to_mark, &pods).await;
    if suspended && !was_suspended {
        c.events.normal(job, reason::SUSPENDED, "Job suspended");
    } else if !suspended && was_suspended {
        c.events.normal(job, reason::RESUMED, "Job resumed");
    }
    for p in to_delete {
        c.delete_pod(key, p).await?;
    }
    for index in to_create {
        c.create_pod(key, job, build_pod(job, index, None)).await?;
    }
    if let Some((failed, why, msg)) = finished_event {
        if failed {
            c.events.warning(job, why, msg);
        } else {
            c.events.normal(job, why, msg);
        }
        return Ok(Action::RequeueAfter(Duration::ZERO));
    }
    Ok(
        deadline_left(job, &st, now).map_or(Action::AwaitChange, |d| {
            Action::RequeueAfter(d + Duration::from_millis(1))
        }),
    )
}

/// Whether the Job has all the successes it needs.
pub fn is_complete(job: &Job, st: &JobStatus, active: usize) -> bool {
    match job.spec.completions {
        Some(n) if job.is_indexed() => {
            let done = st
                .completed_indexes
                .as_deref()
                .map(super::indexes::parse)
                .unwrap_or_default();
            (0..n).all(|i| done.contains(&i))
        }
        Some(n) => st.succeeded >= n,
        None => st.succeeded > 0 && active == 0,
    }
}

/// Pods to create (by index, `None` for NonIndexed) and active pods in excess.
pub fn plan<'a>(
    job: &Job,
    st: &JobStatus,
    active: &[&'a Arc<Pod>],
) -> (Vec<Option<i32>>, Vec<&'a Arc<Pod>>) {
    let parallelism = usize::try_from(job.parallelism().max(0)).unwrap_or(0);
    if job.is_indexed() {
        let n = job.spec.completions.unwrap_or(0);
        let done = st
            .completed_indexes
            .as_deref()
            .map(super::indexes::parse)
            .unwrap_or_default();
        let running: BTreeSet<i32> = active.iter().filter_map(|p| pod_index(p)).collect();
        let mut excess: Vec<&Arc<Pod>> = Vec::new();
        let mut seen = BTreeSet::new();
        for p in active {
            // Duplicates of an index, finished indexes and bad indexes go.
            match pod_index(p) {
                Some(i) if (0..n).contains(&i) && !done.contains(&i) && seen.insert(i) => {}
                _ => excess.push(p),
            }
        }
        let kept = active.len() - excess.len();
        let pending: Vec<Option<i32>> = (0..n)
            .filter(|i| !done.contains(i) && !running.contains(i))
            .take(parallelism.saturating_sub(kept))
            .map(Some)
            .collect();
        return (pending, excess);
    }
    let want = match job.spec.completions {
        Some(n) => parallelism.min(usize::try_from((n - st.succeeded).max(0)).unwrap_or(0)),
        None if st.succeeded > 0 => 0,
        None => parallelism,
    };
    if active.len() >= want {
        // Excess: the youngest first (the least work lost), unbound before bound.
        let mut sorted: Vec<&Arc<Pod>> = active.to_vec();
        sorted.sort_by_key(|p| {
            (
                p.is_bound(),
                std::cmp::Reverse(p.metadata.creation_timestamp),
            )
        });
        let excess = sorted.into_iter().take(active.len() - want).collect();
        return (Vec::new(), excess);
    }
    (vec![None; want - active.len()], Vec::new())
}
