//! The Job controller (batch/v1 semantics): creates a Job's pods up to its parallelism, counts
//! their ends ([`tracking`]), retries within `backoffLimit`, enforces `activeDeadlineSeconds`,
//! honours `suspend`, sets the `Complete` / `Failed` conditions, and deletes finished Jobs after
//! `ttlSecondsAfterFinished`. A gang Job ([`gang`]) runs its pods as one unit.
//!
//! The controller reads the shared caches and merges its own [`expectations`] into them, so a
//! slow watch never makes it create a pod twice.

pub mod expectations;
pub mod gang;
pub mod indexes;
pub mod pods;
mod status;
pub mod tracking;

use std::sync::Arc;
use std::time::Duration;

use drover_api::Resource;
use drover_api::batch::{Job, JobStatus};
use drover_api::core::Pod;
use drover_client::informer::{Change, object_key};
use drover_client::{Client, ClientError, DeleteParams};
use tracing::Instrument;

use crate::clock::Clock;
use crate::events::Recorder;
use crate::runtime::{Action, Caches, QueueHandle, Reconciler};

pub use expectations::Expectations;
pub use tracking::Ledger;

/// Retry soon after a conflict (the cache is catching up with our own write).
pub const CONFLICT_RETRY: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("job {key}: {source}")]
    Api {
        key: String,
        #[source]
        source: ClientError,
    },
}

/// The Job controller and its context.
pub struct JobController {
    pub(crate) client: Client,
    pub(crate) caches: Arc<Caches>,
    pub(crate) clock: Clock,
    pub(crate) events: Recorder,
    pub(crate) expectations: Expectations,
    pub(crate) ledger: Ledger,
}

/// The key of the Job that controls `pod`, if one does.
pub fn job_key_of(pod: &Pod) -> Option<String> {
    let owner = pod.metadata.controller()?;
    (owner.kind == Job::KIND).then(|| format!("{}/{}", pod.metadata.namespace, owner.name))
}

impl JobController {
    pub fn new(client: Client, caches: Arc<Caches>, clock: Clock, events: Recorder) -> Self {
        JobController {
            client,
            caches,
            clock,
            events,
            expectations: Expectations::default(),
            ledger: Ledger::default(),
        }
    }

    /// Feeds the queue from Job and pod changes (and keeps expectations and the ledger current).
    pub fn watch(&self, queue: &QueueHandle) {
        let q = queue.clone();
        self.caches.jobs.changes.subscribe(move |c: &Change<Job>| {
            if let Some(j) = c.object() {
                q.add(object_key(&**j));
            }
        });
        let q = queue.clone();
        let (x, ledger) = (self.expectations.clone(), self.ledger.clone());
        self.caches.pods.changes.subscribe(move |c: &Change<Pod>| {
            let (pod, gone) = match c {
                Change::Applied { new, .. } => (new, false),
                Change::Deleted(p) => (p, true),
                Change::Synced => return,
            };
            if let Some(key) = job_key_of(pod) {
                x.observe(&key, pod, gone);
                ledger.observe(&key, pod);
                q.add(key);
            }
        });
    }

    fn err(key: &str) -> impl Fn(ClientError) -> JobError + '_ {
        move |source| JobError::Api {
            key: key.to_string(),
            source,
        }
    }

    /// The Job's pods: the cache's, by controller uid, with expectations merged.
    pub(crate) fn pods_of(&self, key: &str, job: &Job) -> Vec<Arc<Pod>> {
        let uid = &job.metadata.uid;
        let pods: Vec<Arc<Pod>> = self
            .caches
            .pods_owned_by(uid)
            .into_iter()
            .filter(|p| {
                p.metadata.namespace == job.metadata.namespace
                    && p.metadata.controller().is_some_and(|o| &o.uid == uid)
            })
            .collect();
        self.expectations.merge(key, pods)
    }

    pub(crate) async fn create_pod(&self, key: &str, job: &Job, pod: Pod) -> Result<Pod, JobError> {
        match self.client.all().create(&pod).await {
            Ok(created) => {
                self.expectations.created(key, created.clone());
                self.events.normal(
                    job,
                    crate::events::reason::SUCCESSFUL_CREATE,
                    format!("Created pod: {}", created.metadata.name),
                );
                Ok(created)
            }
            Err(e) => {
                self.events.warning(
                    job,
                    crate::events::reason::FAILED_CREATE,
                    format!("Error creating pod: {e}"),
                );
                Err(Self::err(key)(e))
            }
        }
    }

    pub(crate) async fn delete_pod(&self, key: &str, pod: &Pod) -> Result<(), JobError> {
        if pod.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let api = self.client.namespaced::<Pod>(&pod.metadata.namespace);
        let params = DeleteParams {
            precondition_uid: Some(pod.metadata.uid.clone()),
            ..Default::default()
        };
        match api.delete(&pod.metadata.name, &params).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() || e.is_conflict() => {}
            Err(e) => return Err(Self::err(key)(e)),
        }
        self.expectations.deleted(key, &pod.metadata.uid);
        Ok(())
    }

    /// Writes the status when it changed; `Ok(false)` on a conflict (retry soon).
    pub(crate) async fn write_status(
        &self,
        key: &str,
        job: &Job,
        status: JobStatus,
    ) -> Result<bool, JobError> {
        if status == job.status {
            return Ok(true);
        }
        let mut updated = job.clone();
        updated.status = status;
        match self
            .client
            .namespaced::<Job>(&job.metadata.namespace)
            .update_status(&updated)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_conflict() => Ok(false),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(Self::err(key)(e)),
        }
    }

    /// Marks counted pods (see [`tracking`]).
    pub(crate) async fn mark_counted(
        &self,
        key: &str,
        job: &Job,
        uids: &[String],
        pods: &[Arc<Pod>],
    ) {
        let api = self.client.namespaced::<Pod>(&job.metadata.namespace);
        let patch =
            serde_json::json!({"metadata": {"annotations": {pods::COUNTED_ANNOTATION: "true"}}});
        for p in pods.iter().filter(|p| uids.contains(&p.metadata.uid)) {
            if let Err(e) = api.patch(&p.metadata.name, &patch).await
                && !e.is_not_found()
            {
                tracing::warn!(job = %key, pod = %p.metadata.name, error = %e, "cannot mark pod counted");
            }
        }
    }

    /// A finished Job: clean up its TTL.
    async fn finished(&self, key: &str, job: &Job) -> Result<Action, JobError> {
        let Some(ttl) = job.spec.ttl_seconds_after_finished else {
            return Ok(Action::AwaitChange);
        };
        let Some(finished_at) = status::finish_time(job) else {
            return Ok(Action::AwaitChange);
        };
        let expires = finished_at + chrono::Duration::seconds(i64::from(ttl));
        let left = crate::clock::until(&self.clock, expires);
        if !left.is_zero() {
            return Ok(Action::RequeueAfter(left));
        }
        tracing::info!(job = %key, "deleting finished job after its TTL");
        let params = DeleteParams {
            propagation_policy: Some("Background".into()),
            precondition_uid: Some(job.metadata.uid.clone()),
            ..Default::default()
        };
        match self
            .client
            .namespaced::<Job>(&job.metadata.namespace)
            .delete(&job.metadata.name, &params)
            .await
        {
            Ok(_) => Ok(Action::AwaitChange),
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(Action::AwaitChange),
            Err(e) => Err(Self::err(key)(e)),
        }
    }
}

impl Reconciler for JobController {
    const NAME: &'static str = "job";
    type Error = JobError;

    async fn reconcile(&self, key: &str) -> Result<Action, JobError> {
        self.reconcile_job(key)
            .instrument(tracing::info_span!("job", job = %key))
            .await
    }
}

impl JobController {
    async fn reconcile_job(&self, key: &str) -> Result<Action, JobError> {
        let Some(job) = self.caches.jobs.cache.get(key) else {
            self.expectations.forget(key);
            self.ledger.forget(key);
            return Ok(Action::AwaitChange);
        };
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(Action::AwaitChange);
        }
        let pods = self.pods_of(key, &job);
        if job.is_finished() {
            // Pods still running after the end are stopped; ends are still counted.
            let mut st = job.status.clone();
            let counted = if gang::is_gang(&job) {
                None
            } else {
                Some(tracking::count(
                    &job,
                    &mut st,
                    &pods,
                    &self.ledger.entries(key),
                ))
            };
            if !self.write_status(key, &job, st).await? {
                return Ok(Action::RequeueAfter(CONFLICT_RETRY));
            }
            if let Some(c) = counted {
                self.ledger.remove(key, &c.ledger_done);
                self.mark_counted(key, &job, &c.to_mark, &pods).await;
            }
            for p in pods.iter().filter(|p| status::is_active(p)) {
                self.delete_pod(key, p).await?;
            }
            return self.finished(key, &job).await;
        }
        if gang::is_gang(&job) {
            gang::reconcile(self, key, &job, pods).await
        } else {
            status::reconcile_plain(self, key, &job, pods).await
        }
    }
}
