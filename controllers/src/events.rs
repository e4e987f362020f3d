//! Events: v1 Events about the objects controllers act on (pod created, gang restarted, node
//! unreachable, pod evicted, job finished), aggregated like Kubernetes' recorder: a repeat of the
//! same reason and message on the same object bumps `count` and `lastTimestamp` instead of
//! creating a new Event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use drover_api::Resource;
use drover_api::client::{Client, ClientError};
use drover_api::core::{Event, EventSource, event_type};
use drover_api::meta::{ObjectMeta, ObjectReference};

use crate::clock::Clock;

/// `source.component` of the controllers' events.
pub const COMPONENT: &str = "drover-controller-manager";
/// Namespace of events about cluster-scoped objects (nodes), as Kubernetes does.
pub const CLUSTER_EVENTS_NAMESPACE: &str = "default";
/// Remembered events for aggregation, at most.
pub const MAX_REMEMBERED: usize = 4096;

/// Reasons the controllers record.
pub mod reason {
    pub const SUCCESSFUL_CREATE: &str = "SuccessfulCreate";
    pub const SUCCESSFUL_DELETE: &str = "SuccessfulDelete";
    pub const FAILED_CREATE: &str = "FailedCreate";
    pub const COMPLETED: &str = "Completed";
    pub const BACKOFF_LIMIT_EXCEEDED: &str = "BackoffLimitExceeded";
    pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
    pub const SUSPENDED: &str = "Suspended";
    pub const RESUMED: &str = "Resumed";
    pub const GANG_RESTARTED: &str = "GangRestarted";
    pub const NODE_NOT_READY: &str = "NodeNotReady";
    pub const NODE_UNREACHABLE: &str = "NodeUnreachable";
    pub const NODE_READY: &str = "NodeReady";
    pub const NODE_LOST: &str = "NodeLost";
    pub const DEVICE_FAILED: &str = "DeviceFailed";
    pub const POD_GROUP_PHASE: &str = "PodGroupPhaseChanged";
}

/// (involved object uid, reason, message): what makes two events the same.
type EventKey = (String, String, String);

#[derive(Clone, Debug)]
struct Seen {
    namespace: String,
    name: String,
    count: i32,
}

/// Records events; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    clock: Clock,
    host: String,
    // Lock order: only this lock, never held across an await.
    seen: Arc<Mutex<HashMap<EventKey, Seen>>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
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
    pub fn new(client: Client, clock: Clock, host: impl Into<String>) -> Self {
        Recorder {
            client,
            clock,
            host: host.into(),
            seen: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A `Normal` event about `obj`.
    pub async fn normal<T: Resource>(&self, obj: &T, reason: &str, message: impl Into<String>) {
        self.record(reference(obj), event_type::NORMAL, reason, message.into())
            .await;
    }

    /// A `Warning` event about `obj`.
    pub async fn warning<T: Resource>(&self, obj: &T, reason: &str, message: impl Into<String>) {
        self.record(reference(obj), event_type::WARNING, reason, message.into())
            .await;
    }

    /// Records an event; failures are logged, never returned (an event is never worth failing
    /// a reconcile over).
    pub async fn record(&self, obj: ObjectReference, type_: &str, reason: &str, message: String) {
        tracing::info!(kind = %obj.kind, object = %obj.name, reason, %message, "event");
        if let Err(e) = self.try_record(obj, type_, reason, message).await {
            tracing::warn!(error = %e, reason, "cannot record event");
        }
    }

    async fn try_record(
        &self,
        obj: ObjectReference,
        type_: &str,
        reason: &str,
        message: String,
    ) -> Result<(), ClientError> {
        let now = self.clock.now();
        let key = (obj.uid.clone(), reason.to_string(), message.clone());
        let seen = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if let Some(s) = seen {
            let patch = serde_json::json!({"count": s.count + 1, "lastTimestamp": now});
            match self
                .client
                .namespaced::<Event>(&s.namespace)
                .patch(&s.name, &patch)
                .await
            {
                Ok(_) => {
                    self.remember(
                        key,
                        Seen {
                            count: s.count + 1,
                            ..s
                        },
                    );
                    return Ok(());
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        let namespace = if obj.namespace.is_empty() {
            CLUSTER_EVENTS_NAMESPACE.to_string()
        } else {
            obj.namespace.clone()
        };
        let mut ev = Event {
            metadata: ObjectMeta {
                generate_name: format!("{}.", obj.name),
                namespace: namespace.clone(),
                ..Default::default()
            },
            involved_object: obj,
            reason: reason.to_string(),
            message,
            source: Some(EventSource {
                component: COMPONENT.into(),
                host: self.host.clone(),
            }),
            first_timestamp: Some(now),
            last_timestamp: Some(now),
            count: 1,
            type_: type_.to_string(),
            reporting_component: COMPONENT.into(),
            reporting_instance: self.host.clone(),
            ..Default::default()
        };
        ev.set_type_meta();
        let created = self.client.all().create(&ev).await?;
        self.remember(
            key,
            Seen {
                namespace,
                name: created.metadata.name,
                count: 1,
            },
        );
        Ok(())
    }

    fn remember(&self, key: EventKey, seen: Seen) {
        let mut map = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_REMEMBERED && !map.contains_key(&key) {
            map.clear();
        }
        map.insert(key, seen);
    }
}
