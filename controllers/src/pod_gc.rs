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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use drover_api::core::{Node, Pod};
use drover_client::{Client, DeleteParams};
use tokio::time::Instant;

use crate::events::Recorder;
use crate::job::pods::COUNTED_ANNOTATION;
use crate::node_lifecycle::NODE_LOST;
use crate::runtime::{Caches, Stop};

pub struct PodGc {
    client: Client,
    caches: Arc<Caches>,
    threshold: usize,
    ttl: Option<Duration>,
    period: Duration,
    /// When each finished pod was first seen finished.
    finished_at: HashMap<String, Instant>,
    /// How long a pod's node must stay missing before the pod is collected.
    quarantine: Duration,
    /// Pods (by uid) whose node the cache did not have, and since when.
    orphaned_since: HashMap<String, Instant>,
    events: Recorder,
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
            finished_at: HashMap::new(),
            quarantine,
            orphaned_since: HashMap::new(),
            events,
        }
    }

    pub async fn run(mut self, stop: Stop) {
        loop {
            tokio::select! {
                _ = stop.wait() => return,
                _ = tokio::time::sleep(self.period) => {}
            }
            self.sweep().await;
        }
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
    pub async fn sweep(&mut self) {
        self.sweep_orphaned().await;
        self.sweep_finished().await;
    }

    /// Collects pods whose node is gone (see the module documentation).
    pub async fn sweep_orphaned(&mut self) {
        if !self.caches.nodes.cache.is_synced() {
            // An empty cache is not "every node is gone".
            return;
        }
        let now = Instant::now();
        let orphans: Vec<Arc<Pod>> = self
            .caches
            .pods
            .cache
            .list()
            .into_iter()
            .filter(|p| {
                p.is_bound()
                    && self
                        .caches
                        .nodes
                        .cache
                        .get_named("", &p.spec.node_name)
                        .is_none()
            })
            .collect();
        self.orphaned_since
            .retain(|uid, _| orphans.iter().any(|p| &p.metadata.uid == uid));
        // Per pass, whether the API server still has each node: the second look.
        let mut node_exists: HashMap<String, bool> = HashMap::new();
        for p in orphans {
            let since = match self.orphaned_since.get(&p.metadata.uid) {
                Some(since) => *since,
                None => {
                    self.orphaned_since.insert(p.metadata.uid.clone(), now);
                    continue;
                }
            };
            if now.saturating_duration_since(since) < self.quarantine {
                continue;
            }
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
            if exists {
                // Registered again: the cache will catch up; nothing to collect.
                self.orphaned_since.remove(&p.metadata.uid);
                continue;
            }
            self.collect_orphan(&p).await;
            self.orphaned_since.remove(&p.metadata.uid);
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
    pub async fn sweep_finished(&mut self) {
        let now = Instant::now();
        let finished: Vec<Arc<Pod>> = self
            .caches
            .pods
            .cache
            .list()
            .into_iter()
            .filter(|p| p.is_terminal())
            .collect();
        self.finished_at
            .retain(|uid, _| finished.iter().any(|p| &p.metadata.uid == uid));
        for p in &finished {
            self.finished_at
                .entry(p.metadata.uid.clone())
                .or_insert(now);
        }
        let mut candidates: Vec<(Instant, Arc<Pod>)> = finished
            .iter()
            .filter(|p| self.deletable(p))
            .map(|p| {
                (
                    self.finished_at
                        .get(&p.metadata.uid)
                        .copied()
                        .unwrap_or(now),
                    p.clone(),
                )
            })
            .collect();
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
