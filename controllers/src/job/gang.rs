//! Gang Jobs: all pods start together, and a failure restarts them together.
//!
//! A Job is a gang when it has `spec.gang` or its template names a PodGroup (the label
//! `scheduling.x-k8s.io/pod-group`). The controller creates the PodGroup (owned by the Job) and
//! one pod per rank `0..parallelism` with the training environment (see [`super::pods`]).
//!
//! Attempts: `status.failed` counts the gang's restarts, and every pod is labelled with the
//! attempt it belongs to ([`GANG_ATTEMPT_LABEL`]). When a member of the current attempt fails or
//! is lost, the controller first writes `status.failed + 1` — the commit point: from then on
//! every existing pod is of a past attempt — and then deletes the old pods; a new attempt's
//! pods are created once no old pod still runs. A crash at any point therefore neither restarts
//! twice for one failure nor leaves the gang half-running.

use std::sync::Arc;
use std::time::Duration;

use drover_api::batch::Job;
use drover_api::core::Pod;
use drover_api::meta::OwnerReference;
use drover_api::scheduling::{GangTopology, POD_GROUP_LABEL, PodGroup};

use super::pods::{
    GangSlot, MASTER_ADDR_ANNOTATION, build_pod, master_port, node_address, owner_ref, pod_attempt,
    pod_index, set_master_pod,
};
use super::status::{
    apply_suspend, deadline_left, failure, is_active, is_ready, mark_complete, mark_failed,
};
use super::{CONFLICT_RETRY, JobController, JobError};
use crate::events::reason;
use crate::runtime::Action;

/// Whether `job` runs as a gang.
pub fn is_gang(job: &Job) -> bool {
    job.is_gang()
        || job
            .spec
            .template
            .metadata
            .labels
            .contains_key(POD_GROUP_LABEL)
}

/// The PodGroup's name: the template's label, else the Job's name.
pub fn group_name(job: &Job) -> String {
    job.spec
        .template
        .metadata
        .labels
        .get(POD_GROUP_LABEL)
        .filter(|g| !g.is_empty())
        .cloned()
        .unwrap_or_else(|| job.metadata.name.clone())
}

/// The PodGroup for a gang Job.
pub fn pod_group_for(job: &Job) -> PodGroup {
    let min = job
        .gang_min_member()
        .unwrap_or_else(|| job.parallelism())
        .max(1);
    let mut pg = PodGroup::new(&job.metadata.namespace, group_name(job), min);
    pg.metadata.owner_references = vec![OwnerReference {
        block_owner_deletion: Some(true),
        ..owner_ref(job)
    }];
    if let Some(g) = &job.spec.gang {
        pg.spec.schedule_timeout_seconds = g.schedule_timeout_seconds;
        pg.spec.topology = g.topology_key.as_ref().map(|k| GangTopology {
            key: k.clone(),
            mode: g.topology_mode.clone().unwrap_or_default(),
        });
    }
    pg.spec.priority_class_name = job.spec.template.spec.priority_class_name.clone();
    pg
}

/// What the current attempt needs.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No pod of this attempt yet: create the whole gang (once old pods have stopped).
    Start,
    /// Some ranks have no pod and none has been placed yet: create those ranks.
    Fill(Vec<i32>),
    /// A member failed or was lost: restart the gang, saying why.
    Restart(String),
    /// Every rank succeeded.
    Complete,
    /// Running as it should.
    Running,
}

/// Judges the current attempt's pods.
pub fn judge(world: i32, current: &[&Arc<Pod>]) -> Verdict {
    if current.is_empty() {
        return Verdict::Start;
    }
    if let Some(p) = current
        .iter()
        .find(|p| p.status.phase == drover_api::core::pod_phase::FAILED)
    {
        let why = if p.status.reason.is_empty() {
            "Failed".to_string()
        } else {
            p.status.reason.clone()
        };
        let msg = if p.status.message.is_empty() {
            String::new()
        } else {
            format!(": {}", p.status.message)
        };
        return Verdict::Restart(format!(
            "member {} (rank {}) failed ({why}){msg}",
            p.metadata.name,
            pod_index(p).unwrap_or(-1)
        ));
    }
    if let Some(p) = current
        .iter()
        .find(|p| p.metadata.deletion_timestamp.is_some() && !p.is_terminal())
    {
        return Verdict::Restart(format!(
            "member {} (rank {}) was deleted",
            p.metadata.name,
            pod_index(p).unwrap_or(-1)
        ));
    }
    let missing: Vec<i32> = (0..world)
        .filter(|r| !current.iter().any(|p| pod_index(p) == Some(*r)))
        .collect();
    if !missing.is_empty() {
        let placed = current.iter().any(|p| p.is_bound() || p.is_terminal());
        if !placed {
            return Verdict::Fill(missing);
        }
        return Verdict::Restart(format!("rank(s) {missing:?} lost"));
    }
    if current
        .iter()
        .all(|p| p.status.phase == drover_api::core::pod_phase::SUCCEEDED)
    {
        return Verdict::Complete;
    }
    Verdict::Running
}

async fn ensure_pod_group(c: &JobController, key: &str, job: &Job) -> Result<(), JobError> {
    let name = group_name(job);
    if c.caches
        .pod_groups
        .cache
        .get_named(&job.metadata.namespace, &name)
        .is_some()
    {
        return Ok(());
    }
    match c.client.all().create(&pod_group_for(job)).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_already_exists() => Ok(()),
        Err(source) => Err(JobError::Api {
            key: key.to_string(),
            source,
        }),
    }
}

/// Reconciles a gang Job.
pub async fn reconcile(
    c: &JobController,
    key: &str,
    job: &Job,
    pods: Vec<Arc<Pod>>,
) -> Result<Action, JobError> {
    let now = c.clock.now();
    let world = job.parallelism().max(1);
    let mut st = job.status.clone();
    let attempt = st.failed;
    let suspended = apply_suspend(job, &mut st, now);
    let (current, stale): (Vec<&Arc<Pod>>, Vec<&Arc<Pod>>) =
        pods.iter().partition(|p| pod_attempt(p) == Some(attempt));
    let mut verdict = judge(world, &current);
    let mut end = None;
    let mut restarted = None;
    if let Verdict::Restart(why) = &verdict {
        st.failed += 1;
        if st.failed > job.backoff_limit() {
            end = failure(job, &st, now).map(|(r, m)| (r, format!("{m}; last failure: {why}")));
        } else {
            restarted = Some(format!(
                "restarting the whole gang (restart {} of at most {}): {why}",
                st.failed,
                job.backoff_limit()
            ));
        }
    } else if verdict == Verdict::Complete {
        mark_complete(&mut st, now);
    } else {
        end = failure(job, &st, now);
    }
    if let Some((why, msg)) = &end {
        mark_failed(&mut st, why, msg.clone(), now);
        verdict = Verdict::Running;
    }
    st.active = i32::try_from(current.iter().filter(|p| is_active(p)).count()).unwrap_or(0);
    st.ready = Some(
        i32::try_from(
            current
                .iter()
                .filter(|p| is_active(p) && is_ready(p))
                .count(),
        )
        .unwrap_or(0),
    );
    st.succeeded = i32::try_from(
        current
            .iter()
            .filter(|p| p.status.phase == drover_api::core::pod_phase::SUCCEEDED)
            .count(),
    )
    .unwrap_or(0);
    if !c.write_status(key, job, st.clone()).await? {
        return Ok(Action::RequeueAfter(CONFLICT_RETRY));
    }
    // Committed. Act on pods.
    if let Some(msg) = restarted {
        c.events.warning(job, reason::GANG_RESTARTED, msg);
    }
    if let Some((why, msg)) = end {
        c.events.warning(job, why, msg);
        return Ok(Action::RequeueAfter(Duration::ZERO));
    }
    if matches!(verdict, Verdict::Restart(_) | Verdict::Complete) {
        if verdict == Verdict::Complete {
            c.events.normal(job, reason::COMPLETED, "Job completed");
        }
        // The next pass sees every pod as stale (or the Job as finished) and cleans up.
        return Ok(Action::RequeueAfter(Duration::ZERO));
    }
    for p in stale.iter().filter(|p| is_active(p)) {
        c.delete_pod(key, p).await?;
    }
    if suspended {
        for p in current.iter().filter(|p| is_active(p)) {
            c.delete_pod(key, p).await?;
        }
        return Ok(Action::AwaitChange);
    }
    let old_running = stale.iter().any(|p| !p.is_terminal());
    match verdict {
        Verdict::Start if !old_running => {
            ensure_pod_group(c, key, job).await?;
            create_ranks(c, key, job, attempt, world, (0..world).collect(), None).await?;
        }
        Verdict::Fill(ranks) => {
            let master = current
                .iter()
                .find(|p| pod_index(p) == Some(0))
                .map(|p| p.metadata.name.clone());
            ensure_pod_group(c, key, job).await?;
            create_ranks(c, key, job, attempt, world, ranks, master).await?;
        }
        _ => publish_master_addr(c, key, job, &current).await,
    }
    Ok(
        deadline_left(job, &st, now).map_or(Action::AwaitChange, |d| {
            Action::RequeueAfter(d + Duration::from_millis(1))
        }),
    )
}

async fn create_ranks(
    c: &JobController,
    key: &str,
    job: &Job,
    attempt: i32,
    world: i32,
    ranks: Vec<i32>,
    mut master: Option<String>,
) -> Result<(), JobError> {
    let slot = GangSlot {
        group: group_name(job),
        world_size: world,
        attempt,
        master_port: master_port(job),
    };
    for r in ranks {
        let mut pod = build_pod(job, Some(r), Some(&slot));
        if let Some(m) = &master {
            set_master_pod(&mut pod, m);
        }
        let created = c.create_pod(key, job, pod).await?;
        if r == 0 && master.is_none() {
            // Rank 0's name is generated: name it on itself, then on every later member.
            let name = created.metadata.name.clone();
            let api = c.client.namespaced::<Pod>(&job.metadata.namespace);
            let patch = serde_json::json!({"metadata": {"annotations": {super::pods::MASTER_POD_ANNOTATION: name}}});
            if let Err(e) = api.patch(&name, &patch).await {
                tracing::warn!(job = %key, error = %e, "cannot annotate rank 0");
            }
            master = Some(name);
        }
    }
    Ok(())
}

/// Once rank 0 is bound, writes its node's address on every member that lacks it.
async fn publish_master_addr(c: &JobController, key: &str, job: &Job, current: &[&Arc<Pod>]) {
    let Some(rank0) = current.iter().find(|p| pod_index(p) == Some(0)) else {
        return;
    };
    if !rank0.is_bound() {
        return;
    }
    let addr = match c.caches.nodes.cache.get(&rank0.spec.node_name) {
        Some(n) => node_address(&n).to_string(),
        None => rank0.spec.node_name.clone(),
    };
    let api = c.client.namespaced::<Pod>(&job.metadata.namespace);
    let patch = serde_json::json!({"metadata": {"annotations": {MASTER_ADDR_ANNOTATION: addr}}});
    for p in current.iter().filter(|p| {
        is_active(p) && p.metadata.annotations.get(MASTER_ADDR_ANNOTATION) != Some(&addr)
    }) {
        if let Err(e) = api.patch(&p.metadata.name, &patch).await
            && !e.is_not_found()
        {
            tracing::warn!(job = %key, pod = %p.metadata.name, error = %e, "cannot publish MASTER_ADDR");
        }
    }
}
