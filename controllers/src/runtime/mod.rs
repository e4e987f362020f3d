//! The shared controller runtime (after kube-runtime): informer caches shared between
//! controllers ([`caches`]), a de-duplicating work queue with bounded concurrency and backoff
//! ([`queue`]), and the driver that runs a [`Reconciler`] over it ([`Controller`]).
//!
//! ```text
//! watch ──▶ Cache (api::client::informer) ──▶ on_change ──▶ mapper ──▶ WorkQueue ──▶ reconcile(key)
//!                                                                        ▲              │
//!                                                                        └── Action / error_policy
//! ```

pub mod caches;
pub mod queue;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

pub use caches::Caches;
pub use queue::{DEFAULT_CONCURRENCY, DEFAULT_RETRY_BASE, DEFAULT_RETRY_MAX, Outcome, WorkQueue};

pub use drover_client::stop::{Stop, StopSender};

/// What to do with a key after a reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing until the next change.
    AwaitChange,
    /// Reconcile again after this long (deadlines, TTLs, polling).
    RequeueAfter(Duration),
}

impl Action {
    /// The earlier of two actions.
    pub fn min(self, other: Action) -> Action {
        match (self, other) {
            (Action::AwaitChange, o) | (o, Action::AwaitChange) => o,
            (Action::RequeueAfter(a), Action::RequeueAfter(b)) => Action::RequeueAfter(a.min(b)),
        }
    }
}

/// A controller: moves one key's actual state towards its desired state. Every reconcile must
/// be idempotent; the runtime guarantees one key is never reconciled twice at once.
pub trait Reconciler: Send + Sync + 'static {
    /// The controller's name (logs, spans).
    const NAME: &'static str;
    type Error: std::error::Error + Send + Sync + 'static;

    fn reconcile(&self, key: &str) -> impl Future<Output = Result<Action, Self::Error>> + Send;

    /// What to do after an error: `None` retries with the queue's backoff (the default).
    fn error_policy(&self, _key: &str, _error: &Self::Error) -> Option<Action> {
        None
    }
}

/// A handle to push keys onto a controller's queue; cheap to clone, usable from informer
/// callbacks (which cannot await).
#[derive(Clone)]
pub struct QueueHandle {
    // Lock order: only this lock, never held across an await.
    queue: Arc<Mutex<WorkQueue>>,
    notify: Arc<Notify>,
}

impl std::fmt::Debug for QueueHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueHandle").finish_non_exhaustive()
    }
}

impl QueueHandle {
    pub fn new(queue: WorkQueue) -> Self {
        QueueHandle {
            queue: Arc::new(Mutex::new(queue)),
            notify: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WorkQueue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enqueues `key` now.
    pub fn add(&self, key: impl AsRef<str>) {
        self.lock().add(key.as_ref());
        self.notify.notify_one();
    }

    /// Enqueues `key` after `delay`.
    pub fn add_after(&self, key: impl AsRef<str>, delay: Duration) {
        let now = Instant::now();
        self.lock().add_at(key.as_ref(), now + delay, now);
        self.notify.notify_one();
    }
}

/// Runs a [`Reconciler`] over its queue until shutdown; then waits for reconciles in flight.
pub struct Controller<R: Reconciler> {
    reconciler: Arc<R>,
    queue: QueueHandle,
}

impl<R: Reconciler> Controller<R> {
    pub fn new(reconciler: R, queue: QueueHandle) -> Self {
        Controller {
            reconciler: Arc::new(reconciler),
            queue,
        }
    }

    /// Drives the queue: pops keys while slots are free, runs each in its own task, records
    /// outcomes. Returns after `shutdown` resolves and every reconcile in flight has finished.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tasks: JoinSet<(String, Outcome)> = JoinSet::new();
        // Which key each task runs, so a panicked reconcile still frees its key.
        let mut running: std::collections::HashMap<tokio::task::Id, String> = Default::default();
        loop {
            let (keys, deadline) = {
                let mut q = self.queue.lock();
                let now = Instant::now();
                let mut keys = Vec::new();
                while let Some(k) = q.pop(now) {
                    keys.push(k);
                }
                (keys, q.next_deadline())
            };
            for key in keys {
                let r = self.reconciler.clone();
                let span = tracing::info_span!("reconcile", controller = R::NAME, key = %key);
                let k = key.clone();
                let handle = tasks.spawn(
                    async move {
                        let outcome = match r.reconcile(&key).await {
                            Ok(a) => Outcome::Done(after(a)),
                            Err(e) => {
                                tracing::warn!(error = %e, "reconcile failed");
                                match r.error_policy(&key, &e) {
                                    Some(a) => Outcome::Done(after(a)),
                                    None => Outcome::Failed,
                                }
                            }
                        };
                        (key, outcome)
                    }
                    .instrument(span),
                );
                running.insert(handle.id(), k);
            }
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.queue.notify.notified() => {}
                _ = sleep => {}
                Some(done) = tasks.join_next_with_id() => {
                    let (id, key, outcome) = match done {
                        Ok((id, (key, outcome))) => (id, key, outcome),
                        Err(e) => {
                            tracing::error!(controller = R::NAME, error = %e, "reconcile task panicked");
                            let key = running.get(&e.id()).cloned().unwrap_or_default();
                            (e.id(), key, Outcome::Failed)
                        }
                    };
                    running.remove(&id);
                    self.queue.lock().done(&key, outcome, Instant::now());
                }
            }
        }
        while tasks.join_next().await.is_some() {}
    }
}

fn after(a: Action) -> Option<Instant> {
    match a {
        Action::AwaitChange => None,
        Action::RequeueAfter(d) => Some(Instant::now() + d),
    }
}
