//! Counting finished pods exactly once, across restarts and leader changes.
//!
//! Pods may vanish soon after they end (a lost node's pods are failed and then deleted), so the
//! pod handler writes every end it sees into an in-memory [`Ledger`]. A reconcile counts the
//! ledger's entries and the cache's finished, unmarked pods in one status write, which also lists
//! their uids in `status.uncountedTerminatedPods` (`{"succeeded": [...], "failed": [...]}`: here,
//! "counted, pod not yet marked"); it then marks each pod with [`COUNTED_ANNOTATION`] and drops
//! the uid from that list once the mark (or the pod's disappearance) is seen. A pod listed there
//! or marked is never counted again, so a crash between any two steps neither loses nor repeats
//! a count (Kubernetes does the same with a finalizer).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use drover_api::batch::{Job, JobStatus};
use drover_api::core::{Pod, pod_phase};
use serde::{Deserialize, Serialize};

use super::indexes;
use super::pods::{COUNTED_ANNOTATION, pod_index};

/// A pod's end, as seen by the pod handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ended {
    pub succeeded: bool,
    pub index: Option<i32>,
}

/// Ends seen but not yet counted, by Job key and pod uid.
#[derive(Clone, Default, Debug)]
pub struct Ledger {
    // Lock order: only this lock, never held across an await.
    inner: Arc<Mutex<HashMap<String, HashMap<String, Ended>>>>,
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, Ended>>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `pod`'s end if it has ended and is not counted yet.
    pub fn observe(&self, job: &str, pod: &Pod) {
        if let Some(e) = ended(pod) {
            self.lock()
                .entry(job.to_string())
                .or_default()
                .insert(pod.metadata.uid.clone(), e);
        }
    }

    pub fn entries(&self, job: &str) -> HashMap<String, Ended> {
        self.lock().get(job).cloned().unwrap_or_default()
    }

    pub fn remove(&self, job: &str, uids: &[String]) {
        let mut map = self.lock();
        if let Some(m) = map.get_mut(job) {
            for u in uids {
                m.remove(u);
            }
            if m.is_empty() {
                map.remove(job);
            }
        }
    }

    pub fn forget(&self, job: &str) {
        self.lock().remove(job);
    }
}

/// `pod`'s end, if it has ended and has not been counted.
pub fn ended(pod: &Pod) -> Option<Ended> {
    if pod.metadata.annotations.contains_key(COUNTED_ANNOTATION) {
        return None;
    }
    let succeeded = match pod.status.phase.as_str() {
        pod_phase::SUCCEEDED => true,
        pod_phase::FAILED => false,
        _ => return None,
    };
    Some(Ended {
        succeeded,
        index: pod_index(pod),
    })
}

/// The uids counted whose pods are not yet marked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uncounted {
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub succeeded: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub failed: BTreeSet<String>,
}

impl Uncounted {
    pub fn of(status: &JobStatus) -> Self {
        status
            .uncounted_terminated_pods
            .clone()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default()
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.succeeded.contains(uid) || self.failed.contains(uid)
    }

    fn store(&self, status: &mut JobStatus) {
        status.uncounted_terminated_pods = if self.succeeded.is_empty() && self.failed.is_empty() {
            None
        } else {
            serde_json::to_value(self).ok()
        };
    }
}

/// What a count did: pods to mark after the status is written, ledger entries to drop.
#[derive(Debug, Default)]
pub struct Counted {
    pub to_mark: Vec<String>,
    pub ledger_done: Vec<String>,
}

/// Counts new ends into `status` (counters, completed indexes, the uncounted list) and prunes
/// the list of pods already marked or gone. `pods` are the Job's pods in the cache.
pub fn count(
    job: &Job,
    status: &mut JobStatus,
    pods: &[Arc<Pod>],
    ledger: &HashMap<String, Ended>,
) -> Counted {
    let mut unc = Uncounted::of(status);
    let mut out = Counted::default();
    let by_uid: HashMap<&str, &Arc<Pod>> =
        pods.iter().map(|p| (p.metadata.uid.as_str(), p)).collect();
    // Prune: a listed pod that is marked, or gone, needs nothing more.
    for set in [&mut unc.succeeded, &mut unc.failed] {
        set.retain(|uid| {
            by_uid
                .get(uid.as_str())
                .is_some_and(|p| !p.metadata.annotations.contains_key(COUNTED_ANNOTATION))
        });
    }
    let mut new: HashMap<String, Ended> = ledger.clone();
    for p in pods {
        if let Some(e) = ended(p) {
            new.insert(p.metadata.uid.clone(), e);
        }
    }
    let mut completed = status
        .completed_indexes
        .as_deref()
        .map(indexes::parse)
        .unwrap_or_default();
    let completions = job.spec.completions.unwrap_or(i32::MAX);
    for (uid, e) in new {
        out.ledger_done.push(uid.clone());
        let marked = by_uid
            .get(uid.as_str())
            .is_some_and(|p| p.metadata.annotations.contains_key(COUNTED_ANNOTATION));
        if unc.contains(&uid) || marked {
            continue;
        }
        if e.succeeded {
            status.succeeded += 1;
            if let Some(i) = e.index.filter(|i| (0..completions).contains(i)) {
                completed.insert(i);
            }
            unc.succeeded.insert(uid.clone());
        } else {
            status.failed += 1;
            unc.failed.insert(uid.clone());
        }
        if by_uid.contains_key(uid.as_str()) {
            out.to_mark.push(uid);
        }
    }
    // Listed pods still unmarked (an earlier mark failed) are marked again.
    for uid in unc.succeeded.iter().chain(&unc.failed) {
        if by_uid.contains_key(uid.as_str()) && !out.to_mark.contains(uid) {
            out.to_mark.push(uid.clone());
        }
    }
    if job.is_indexed() {
        status.completed_indexes = indexes::format(&completed);
    }
    unc.store(status);
    out
}
