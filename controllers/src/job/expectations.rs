//! Expectations (as Kubernetes' job controller keeps them): pods this controller created or
//! deleted that its pod cache has not shown yet. A reconcile merges them into the cache's view,
//! so a slow watch never makes the controller create a pod twice or count a deleted one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_api::core::Pod;
use tokio::time::Instant;

/// How long an expectation waits for the watch before it is dropped (a relist fixes the rest).
pub const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Default, Debug)]
struct JobExpectations {
    /// Created pods by name, not yet seen in the cache.
    created: HashMap<String, (Arc<Pod>, Instant)>,
    /// Deleted pods by uid, still in the cache.
    deleted: HashMap<String, Instant>,
}

/// Expectations of every Job, keyed by the Job's `namespace/name`.
#[derive(Clone, Default, Debug)]
pub struct Expectations {
    // Lock order: only this lock, never held across an await.
    inner: Arc<Mutex<HashMap<String, JobExpectations>>>,
}

impl Expectations {
    fn with<R>(&self, job: &str, f: impl FnOnce(&mut JobExpectations) -> R) -> R {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let e = map.entry(job.to_string()).or_default();
        let now = Instant::now();
        e.created
            .retain(|_, (_, at)| now < *at + EXPECTATION_TIMEOUT);
        e.deleted.retain(|_, at| now < *at + EXPECTATION_TIMEOUT);
        let r = f(e);
        if e.created.is_empty() && e.deleted.is_empty() {
            map.remove(job);
        }
        r
    }

    pub fn created(&self, job: &str, pod: Pod) {
        self.with(job, |e| {
            e.created
                .insert(pod.metadata.name.clone(), (Arc::new(pod), Instant::now()))
        });
    }

    pub fn deleted(&self, job: &str, uid: &str) {
        self.with(job, |e| e.deleted.insert(uid.to_string(), Instant::now()));
    }

    /// The cache showed `pod` (present), or showed it gone.
    pub fn observe(&self, job: &str, pod: &Pod, gone: bool) {
        self.with(job, |e| {
            e.created.remove(&pod.metadata.name);
            if gone {
                e.deleted.remove(&pod.metadata.uid);
            }
        });
    }

    pub fn forget(&self, job: &str) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(job);
    }

    /// The cache's pods of a Job with the expectations applied.
    pub fn merge(&self, job: &str, mut pods: Vec<Arc<Pod>>) -> Vec<Arc<Pod>> {
        self.with(job, |e| {
            pods.retain(|p| !e.deleted.contains_key(&p.metadata.uid));
            for (name, (pod, _)) in &e.created {
                if !pods.iter().any(|p| &p.metadata.name == name) {
                    pods.push(pod.clone());
                }
            }
        });
        pods
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_api::core::PodSpec;

    fn pod(name: &str, uid: &str) -> Pod {
        let mut p = Pod::new("ns", name, PodSpec::default());
        p.metadata.uid = uid.into();
        p
    }

    #[tokio::test(start_paused = true)]
    async fn unseen_creations_count_and_deletions_hide() {
        let x = Expectations::default();
        x.created("ns/j", pod("a", "1"));
        let merged = x.merge("ns/j", vec![Arc::new(pod("b", "2"))]);
        assert_eq!(merged.len(), 2);
        x.deleted("ns/j", "2");
        let merged = x.merge("ns/j", vec![Arc::new(pod("b", "2"))]);
        assert_eq!(merged.len(), 1);
        x.observe("ns/j", &pod("a", "1"), false);
        x.observe("ns/j", &pod("b", "2"), true);
        assert!(x.merge("ns/j", vec![]).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn expectations_time_out() {
        let x = Expectations::default();
        x.created("ns/j", pod("a", "1"));
        tokio::time::advance(EXPECTATION_TIMEOUT + Duration::from_secs(1)).await;
        assert!(x.merge("ns/j", vec![]).is_empty());
    }
}
