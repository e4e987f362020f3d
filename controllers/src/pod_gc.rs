//! Finished-pod garbage collection (Kubernetes' PodGC): when more than the threshold of finished
//! pods exist, the oldest go; with a TTL set, finished pods older than it go. A Job's pod is kept
//! until its end is counted (or its Job has finished or is gone), so deleting it loses nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use drover_api::client::{Client, DeleteParams};
use drover_api::core::Pod;
use tokio::time::Instant;

use crate::job::pods::COUNTED_ANNOTATION;
use crate::runtime::{Caches, Stop};

pub struct PodGc {
    client: Client,
    caches: Arc<Caches>,
    threshold: usize,
    ttl: Option<Duration>,
    period: Duration,
    /// When each finished pod was first seen finished.
    finished_at: HashMap<String, Instant>,
}

impl PodGc {
    pub fn new(
        client: Client,
        caches: Arc<Caches>,
        threshold: usize,
        ttl: Option<Duration>,
        period: Duration,
    ) -> Self {
        PodGc {
            client,
            caches,
            threshold,
            ttl,
            period,
            finished_at: HashMap::new(),
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

    /// One pass.
    pub async fn sweep(&mut self) {
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
