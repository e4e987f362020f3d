//! The event recorder every component shares: v1 Events about the objects a component acts on,
//! written in the background and best-effort, as Kubernetes' recorder does.
//!
//! ```text
//!  record() ──► bounded queue (one per worker; an object's events always take the same one)
//!                 └─ full: the event is dropped and counted (never blocks the caller)
//!            ──► worker ──► a repeat of (object uid, reason, message): PATCH count, lastTimestamp
//!                       └─► otherwise: CREATE
//! ```
//!
//! Recording never waits on the API server, so a component's own work (a scheduler's bindings,
//! a controller's reconcile) is not slowed by its events, and under overload events are shed
//! before anything that matters. Events of one object keep their order.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Client, ClientError};
use drover_api::Resource;
use drover_api::Time;
use drover_api::core::{Event, EventSource};
use drover_api::meta::{ObjectMeta, ObjectReference};

/// Events waiting to be written, over all workers, by default.
pub const DEFAULT_QUEUE: usize = 4096;
/// Concurrent writers by default.
pub const DEFAULT_WORKERS: usize = 4;
/// Remembered events (per worker) for aggregation, at most.
pub const MAX_REMEMBERED: usize = 4096;
/// Namespace of events about cluster-scoped objects (nodes), as Kubernetes does.
pub const CLUSTER_EVENTS_NAMESPACE: &str = "default";

/// How a [`Recorder`] writes.
#[derive(Clone, Debug)]
pub struct RecorderOptions {
    /// `source.component` and `reportingComponent`.
    pub component: String,
    /// `source.host` and `reportingInstance`.
    pub host: String,
    pub queue: usize,
    pub workers: usize,
}

impl RecorderOptions {
    pub fn new(component: impl Into<String>, host: impl Into<String>) -> Self {
        RecorderOptions {
            component: component.into(),
            host: host.into(),
            queue: DEFAULT_QUEUE,
            workers: DEFAULT_WORKERS,
        }
    }
}

struct Pending {
    at: Time,
    object: ObjectReference,
    type_: String,
    reason: String,
    message: String,
}

/// Records events in the background; cheap to clone. Must be made inside a tokio runtime. The
/// workers stop when the last clone is dropped, after writing what is queued.
#[derive(Clone)]
pub struct Recorder {
    queues: Arc<[mpsc::Sender<Pending>]>,
    dropped: Arc<AtomicU64>,
    drop_warning: Arc<Throttle>,
}

/// Lets a warning through at most once per [`WARN_EVERY`], counting the ones held back.
#[derive(Default)]
struct Throttle {
    last: std::sync::Mutex<Option<Instant>>,
    held: AtomicU64,
}

/// The least time between two warnings of one kind: a recorder that cannot keep up must not
/// flood the log instead.
const WARN_EVERY: Duration = Duration::from_secs(10);

impl Throttle {
    /// `Some(warnings held back since the last one)` when a warning may go out now.
    fn pass(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            Some(self.held.swap(0, Ordering::Relaxed))
        } else {
            self.held.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("workers", &self.queues.len())
            .field("dropped", &self.dropped())
            .finish()
    }
}

/// A reference to `obj` for `involvedObject`.
pub fn reference<T: Resource>(obj: &T) -> ObjectReference {
    let m = obj.meta();
    ObjectReference {
        api_version: T::api_version(),
        kind: T::KIND.to_string(),
        namespace: m.namespace.clone(),
        name: m.name.clone(),
        uid: m.uid.clone(),
        ..Default::default()
    }
}

impl Recorder {
    pub fn new(client: Client, options: RecorderOptions) -> Self {
        let workers = options.workers.max(1);
        let per_worker = (options.queue / workers).max(1);
        let options = Arc::new(options);
        let queues: Vec<_> = (0..workers)
            .map(|_| {
                let (tx, rx) = mpsc::channel(per_worker);
                tokio::spawn(run_worker(client.clone(), options.clone(), rx));
                tx
            })
            .collect();
        Recorder {
            queues: queues.into(),
            dropped: Arc::default(),
            drop_warning: Arc::default(),
        }
    }

    /// Queues an event about `object` that happened at `at`. Never waits: when the queue is
    /// full the event is dropped (and counted in [`Recorder::dropped`]).
    pub fn record(
        &self,
        at: Time,
        object: ObjectReference,
        type_: &str,
        reason: &str,
        message: impl Into<String>,
    ) {
        let mut h = DefaultHasher::new();
        object.uid.hash(&mut h);
        object.name.hash(&mut h);
        let queue = &self.queues[(h.finish() % self.queues.len() as u64) as usize];
        let pending = Pending {
            at,
            object,
            type_: type_.to_string(),
            reason: reason.to_string(),
            message: message.into(),
        };
        if queue.try_send(pending).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if self.drop_warning.pass().is_some() {
                tracing::warn!(
                    dropped = n,
                    "event queue full: dropping events (the API server is not keeping up)"
                );
            }
        }
    }

    /// Events dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// (involved object uid, reason, message): what makes two events the same.
type EventKey = (String, String, String);

/// Where the first of a series of same events went, and its count.
struct Seen {
    namespace: String,
    name: String,
    count: i32,
}

async fn run_worker(
    client: Client,
    options: Arc<RecorderOptions>,
    mut rx: mpsc::Receiver<Pending>,
) {
    let mut seen: HashMap<EventKey, Seen> = HashMap::new();
    let failures = Throttle::default();
    while let Some(p) = rx.recv().await {
        let reason = p.reason.clone();
        if let Err(e) = write(&client, &options, &mut seen, p).await {
            match failures.pass() {
                Some(0) => tracing::warn!(error = %e, reason, "cannot record event"),
                Some(held) => tracing::warn!(
                    error = %e,
                    reason,
                    "cannot record event ({held} more failed since the last warning)"
                ),
                None => tracing::debug!(error = %e, reason, "cannot record event"),
            }
        }
    }
}

async fn write(
    client: &Client,
    options: &RecorderOptions,
    seen: &mut HashMap<EventKey, Seen>,
    p: Pending,
) -> Result<(), ClientError> {
    let key = (p.object.uid.clone(), p.reason.clone(), p.message.clone());
    if let Some(s) = seen.get(&key) {
        let patch = serde_json::json!({"count": s.count + 1, "lastTimestamp": p.at});
        match client
            .namespaced::<Event>(&s.namespace)
            .patch(&s.name, &patch)
            .await
        {
            Ok(_) => {
                if let Some(s) = seen.get_mut(&key) {
                    s.count += 1;
                }
                return Ok(());
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    let namespace = if p.object.namespace.is_empty() {
        CLUSTER_EVENTS_NAMESPACE.to_string()
    } else {
        p.object.namespace.clone()
    };
    let mut ev = Event {
        metadata: ObjectMeta {
            generate_name: format!("{}.", p.object.name),
            namespace: namespace.clone(),
            ..Default::default()
        },
        involved_object: p.object,
        reason: p.reason,
        message: p.message,
        source: Some(EventSource {
            component: options.component.clone(),
            host: options.host.clone(),
        }),
        first_timestamp: Some(p.at),
        last_timestamp: Some(p.at),
        count: 1,
        type_: p.type_,
        reporting_component: options.component.clone(),
        reporting_instance: options.host.clone(),
        ..Default::default()
    };
    ev.set_type_meta();
    let created = client.all().create(&ev).await?;
    if seen.len() >= MAX_REMEMBERED && !seen.contains_key(&key) {
        seen.clear();
    }
    seen.insert(
        key,
        Seen {
            namespace,
            name: created.metadata.name,
            count: 1,
        },
    );
    Ok(())
}
