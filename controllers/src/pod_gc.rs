//! Pod garbage collection (Kubernetes' PodGC).
//!
//! - Finished pods: when more than the threshold of finished pods exist, the oldest go; with a
//!   TTL set, finished pods older than it go. A Job's pod is kept until its end is counted (or its
//!   Job has finished or is gone), so deleting it loses nothing.
//! - Orphaned pods (`gcOrphaned`): a pod bound to a node that no longer exists has no agent to
//!   run it or to finish its deletion, so it would stay Running or Terminating forever. A pod is
//!   collected only when its node is missing twice, a quarantine apart
//!   ([`crate::config::DEFAULT_ORPHANED_POD_QUARANTINE`]): first from the node cache, then, after
//!   the quarantine, from the API server itself — a node deleted and registered again in between
//!   keeps its pods. A collected pod that had not finished is marked `Failed` with reason
//!   `NodeLost` (so its Job counts and replaces it), then deleted with grace 0; a finished pod is
//!   deleted with grace 0 at once. Each gets an event ([`crate::pod_failure`], the path the
//!   node-lifecycle controller fails pods on too).
//!
//! It runs on the controller runtime with two keys, one per sweep ([`ORPHANED`], [`FINISHED`]):
//! each sweep runs at start and then every period; a node leaving the cache brings the orphan
//! sweep forward. Both read the pod cache's indexes (pods by node, finished pods), never the
//! whole cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_api::core::{Node, Pod};
use drover_client::informer::Change;
use drover_client::{Client, DeleteParams};
use tokio::time::Instant;

use crate::events::Recorder;
use crate::job::pods::COUNTED_ANNOTATION;
use crate::node_lifecycle::NODE_LOST;
use crate::runtime::{Action, Caches, QueueHandle, Reconciler};

/// The work-queue key of the orphaned-pod sweep.
pub const ORPHANED: &str = "orphaned";
/// The work-queue key of the finished-pod sweep.
pub const FINISHED: &str = "finished";

/// A key the collector does not know (nothing else is ever queued on its queue).
#[derive(Debug, thiserror::Error)]
#[error("pod GC has no sweep named {0:?} (expected {ORPHANED:?} or {FINISHED:?})")]
pub struct UnknownSweep(String);

pub struct PodGc {
    client: Client,
    caches: Arc<Caches>,
    threshold: usize,
    ttl: Option<Duration>,
    period: Duration,
    /// How long a pod's node must stay missing before the pod is collected.
    quarantine: Duration,
    // Lock order: only this lock, never held across an await.
    seen: Mutex<Seen>,
    events: Recorder,
}

/// What the sweeps remember between runs.
#[derive(Default)]
struct Seen {
    /// When each finished pod was first seen finished.
    finished_at: HashMap<String, Instant>,
    /// Pods (by uid) whose node the cache did not have, and since when.
    orphaned_since: HashMap<String, Instant>,
}

impl PodGc {
    pub fn new(
        client: Client,
        caches: Arc<Caches>,
        threshold: usize,
        ttl: Option<Duration>,
        period: Duration,
        quarantine: Duration,
        events: Recorder,
    ) -> Self {
        PodGc {
            client,
            caches,
            threshold,
            ttl,
            period,
            quarantine,
            seen: Mutex::default(),
            events,
        }
    }

    /// Queues both sweeps now, and the orphan sweep whenever a node leaves the cache.
    pub fn watch(&self, queue: &QueueHandle) {
        queue.add(ORPHANED);
        queue.add(FINISHED);
        let q = queue.clone();
        self.caches
            .nodes
            .changes
            .subscribe(move |c: &Change<Node>| {
                if matches!(c, Change::Deleted(_)) {
                    q.add(ORPHANED);
                }
            });
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn deletable(&self, p: &Pod) -> bool {
        let Some(owner) = p.metadata.controller().filter(|o| o.kind == "Job") else {
            return true;
        };
        if p.metadata.annotations.contains_key(COUNTED_ANNOTATION) {
            return true;
        }
        match self
            .caches
            .jobs
            .cache
            .get_named(&p.metadata.namespace, &owner.name)
        {
            Some(j) if j.metadata.uid == owner.uid => j.is_finished(),
            _ => true,
        }
    }

    /// One pass: orphaned pods, then finished ones.
    pub async fn sweep(&self) {
        self.sweep_orphaned().await;
        self.sweep_finished().await;
    }

    /// Collects pods whose node is gone (see the module documentation).
    pub async fn sweep_orphaned(&self) {
        if !self.caches.nodes.cache.is_synced() {
            // An empty cache is not "every node is gone".
            return;
        }
        let now = Instant::now();
        let orphans: Vec<Arc<Pod>> = self
            .caches
            .nodes_with_pods()
            .into_iter()
            .filter(|node| self.caches.nodes.cache.get_named("", node).is_none())
            .flat_map(|node| self.caches.pods_on(&node))
            .collect();
        // Which orphans have waited out their quarantine (the rest are remembered).
        let due: Vec<Arc<Pod>> = {
            let mut seen = self.seen();
            seen.orphaned_since
                .retain(|uid, _| orphans.iter().any(|p| &p.metadata.uid == uid));
            orphans
                .into_iter()
                .filter(|p| match seen.orphaned_since.get(&p.metadata.uid) {
                    Some(since) => now.saturating_duration_since(*since) >= self.quarantine,
                    None => {
                        seen.orphaned_since.insert(p.metadata.uid.clone(), now);
                        false
                    }
                })
                .collect()
        };
        // Per pass, whether the API server still has each node: the second look.
        let mut node_exists: HashMap<String, bool> = HashMap::new();
        for p in due {
            let node = &p.spec.node_name;
            let exists = match node_exists.get(node) {
                Some(e) => *e,
                None => match self.client.all::<Node>().get_opt(node).await {
                    Ok(n) => *node_exists.entry(node.clone()).or_insert(n.is_some()),
                    Err(e) => {
                        tracing::warn!(node = %node, error = %e, "cannot check the node of a pod");
                        continue;
                    }
                },
            };
            if !exists {
                self.collect_orphan(&p).await;
            }
            // Collected, or registered again (the cache will catch up): forget it either way.
            self.seen().orphaned_since.remove(&p.metadata.uid);
        }
    }

    async fn collect_orphan(&self, p: &Pod) {
        let message = format!(
            "Pod {} was bound to node {}, which no longer exists",
            p.metadata.name, p.spec.node_name
        );
        crate::pod_failure::fail_and_delete(&self.client, &self.events, p, NODE_LOST, &message)
            .await;
    }

    /// Deletes finished pods past the threshold or the TTL.
    pub async fn sweep_finished(&self) {
        let now = Instant::now();
        let finished: Vec<Arc<Pod>> = self.caches.finished_pods();
        let mut candidates: Vec<(Instant, Arc<Pod>)> = {
            let mut seen = self.seen();
            let uids: std::collections::HashSet<&str> =
                finished.iter().map(|p| p.metadata.uid.as_str()).collect();
            seen.finished_at
                .retain(|uid, _| uids.contains(uid.as_str()));
            finished
                .iter()
                .filter(|p| self.deletable(p))
                .map(|p| {
                    let at = *seen
                        .finished_at
                        .entry(p.metadata.uid.clone())
                        .or_insert(now);
                    (at, p.clone())
                })
                .collect()
        };
        candidates.sort_by_key(|(at, p)| (*at, p.metadata.creation_timestamp));
        let excess = finished.len().saturating_sub(self.threshold);
        for (i, (at, p)) in candidates.iter().enumerate() {
            let expired = self
                .ttl
                .is_some_and(|ttl| now.saturating_duration_since(*at) >= ttl);
            if i >= excess && !expired {
                continue;
            }
            let params = DeleteParams {
                precondition_uid: Some(p.metadata.uid.clone()),
                ..Default::default()
            };
            match self
                .client
                .namespaced::<Pod>(&p.metadata.namespace)
                .delete(&p.metadata.name, &params)
                .await
            {
                Ok(_) => tracing::info!(pod = %p.metadata.name, "deleted finished pod"),
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => {
                    tracing::warn!(pod = %p.metadata.name, error = %e, "cannot delete finished pod")
                }
            }
        }
    }
}

impl Reconciler for PodGc {
    const NAME: &'static str = "pod-gc";
    type Error = UnknownSweep;

    async fn reconcile(&self, key: &str) -> Result<Action, UnknownSweep> {
        match key {
            ORPHANED => self.sweep_orphaned().await,
            FINISHED => self.sweep_finished().await,
            other => return Err(UnknownSweep(other.to_string())),
        }
        Ok(Action::RequeueAfter(self.period))
    }

    fn error_policy(&self, _key: &str, _error: &UnknownSweep) -> Option<Action> {
        // Nothing would ever make an unknown key known: drop it rather than retry.
        Some(Action::AwaitChange)
    }
}
