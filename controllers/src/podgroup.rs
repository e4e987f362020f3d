//! The PodGroup controller: a gang's phase and member counts, from its pods.
//!
//! Only the newest gang attempt counts (pods labelled with a lower `drover.dev/gang-attempt`
//! are being replaced). Phases: `Pending`; `Scheduled` when at least `minMember` are bound;
//! `Running` when at least `minMember` run; `Succeeded` when at least `minMember` succeeded
//! and none runs; `Failed` when a member failed.

use std::sync::Arc;

use drover_api::core::{Pod, pod_phase};
use drover_api::scheduling::{PodGroup, PodGroupStatus, pod_group_phase};
use drover_client::informer::{Change, object_key};
use drover_client::{Client, ClientError};

use crate::clock::Clock;
use crate::events::{Recorder, reason};
use crate::job::pods::pod_attempt;
use crate::runtime::{Action, Caches, QueueHandle, Reconciler};

#[derive(Debug, thiserror::Error)]
pub enum PodGroupError {
    #[error("pod group {key}: {source}")]
    Api {
        key: String,
        #[source]
        source: ClientError,
    },
}

pub struct PodGroupController {
    client: Client,
    caches: Arc<Caches>,
    clock: Clock,
    events: Recorder,
}

/// Counts and phase of a group's members.
pub fn summarize(min_member: i32, members: &[Arc<Pod>]) -> (i32, i32, i32, i32, &'static str) {
    let newest = members.iter().filter_map(|p| pod_attempt(p)).max();
    let current: Vec<&Arc<Pod>> = members
        .iter()
        .filter(|p| newest.is_none() || pod_attempt(p) == newest)
        .collect();
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(current.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let scheduled = count(&|p| p.is_bound());
    let running = count(&|p| p.status.phase == pod_phase::RUNNING);
    let succeeded = count(&|p| p.status.phase == pod_phase::SUCCEEDED);
    let failed = count(&|p| p.status.phase == pod_phase::FAILED);
    let min = min_member.max(1);
    let phase = if failed > 0 {
        pod_group_phase::FAILED
    } else if succeeded >= min && running == 0 {
        pod_group_phase::SUCCEEDED
    } else if running + succeeded >= min && running > 0 {
        pod_group_phase::RUNNING
    } else if scheduled >= min {
        pod_group_phase::SCHEDULED
    } else {
        pod_group_phase::PENDING
    };
    (scheduled, running, succeeded, failed, phase)
}

impl PodGroupController {
    pub fn new(client: Client, caches: Arc<Caches>, clock: Clock, events: Recorder) -> Self {
        PodGroupController {
            client,
            caches,
            clock,
            events,
        }
    }

    pub fn watch(&self, queue: &QueueHandle) {
        let q = queue.clone();
        self.caches
            .pod_groups
            .changes
            .subscribe(move |c: &Change<PodGroup>| {
                if let Some(pg) = c.object() {
                    q.add(object_key(&**pg));
                }
            });
        let q = queue.clone();
        self.caches.pods.changes.subscribe(move |c: &Change<Pod>| {
            let mut groups = Vec::new();
            if let Change::Applied { old: Some(old), .. } = c {
                groups.extend(
                    old.pod_group()
                        .map(|g| format!("{}/{g}", old.metadata.namespace)),
                );
            }
            if let Some(p) = c.object() {
                groups.extend(
                    p.pod_group()
                        .map(|g| format!("{}/{g}", p.metadata.namespace)),
                );
            }
            for g in groups {
                q.add(g);
            }
        });
    }
}

impl Reconciler for PodGroupController {
    const NAME: &'static str = "podgroup";
    type Error = PodGroupError;

    async fn reconcile(&self, key: &str) -> Result<Action, PodGroupError> {
        let Some(pg) = self.caches.pod_groups.cache.get(key) else {
            return Ok(Action::AwaitChange);
        };
        let ns = &pg.metadata.namespace;
        let members: Vec<Arc<Pod>> = self.caches.members_of(ns, &pg.metadata.name);
        let (scheduled, running, succeeded, failed, phase) =
            summarize(pg.spec.min_member, &members);
        let mut status = PodGroupStatus {
            scheduled,
            running,
            succeeded,
            failed,
            phase: phase.into(),
            ..pg.status.clone()
        };
        if status.schedule_start_time.is_none() && !members.is_empty() {
            status.schedule_start_time = Some(self.clock.now());
        }
        if let Some(owner) = pg.metadata.controller() {
            status.occupied_by = format!("{}/{}", ns, owner.name);
        }
        if status == pg.status {
            return Ok(Action::AwaitChange);
        }
        let mut updated = (*pg).clone();
        let changed_phase = updated.status.phase != status.phase;
        updated.status = status;
        match self
            .client
            .namespaced::<PodGroup>(ns)
            .update_status(&updated)
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_conflict() => {
                return Ok(Action::RequeueAfter(crate::job::CONFLICT_RETRY));
            }
            Err(e) if e.is_not_found() => return Ok(Action::AwaitChange),
            Err(source) => {
                return Err(PodGroupError::Api {
                    key: key.to_string(),
                    source,
                });
            }
        }
        if changed_phase {
            let message = format!(
                "phase {phase}: {scheduled} scheduled, {running} running, {succeeded} succeeded, {failed} failed (minMember {})",
                pg.spec.min_member
            );
            self.events
                .normal(&updated, reason::POD_GROUP_PHASE, message);
        }
        Ok(Action::AwaitChange)
    }
}
