//! Events: v1 Events about the objects controllers act on (pod created, gang restarted, node
//! unreachable, pod evicted, job finished), through the shared background recorder
//! ([`drover_client::events`]): aggregated like Kubernetes' recorder (a repeat of the same
//! reason and message on the same object bumps `count` and `lastTimestamp`), written without
//! holding up a reconcile, and dropped rather than queued without bound when the API server
//! falls behind.

use drover_api::Resource;
use drover_api::core::event_type;
use drover_api::meta::ObjectReference;
use drover_client::Client;
use drover_client::events::{self, RecorderOptions, reference};

use crate::clock::Clock;

/// `source.component` of the controllers' events.
pub const COMPONENT: &str = "drover-controller-manager";

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
    pub const DEVICE_NEEDS_DRAIN: &str = "DeviceNeedsDrain";
    pub const DEVICES_SERVICED: &str = "DevicesServiced";
    pub const POD_GROUP_PHASE: &str = "PodGroupPhaseChanged";
}

/// Records events; cheap to clone. Event times come from the controllers' [`Clock`].
#[derive(Clone, Debug)]
pub struct Recorder {
    inner: events::Recorder,
    clock: Clock,
}

impl Recorder {
    /// Must be called inside a tokio runtime (the recorder's writers are tasks).
    pub fn new(client: Client, clock: Clock, host: impl Into<String>) -> Self {
        Recorder {
            inner: events::Recorder::new(client, RecorderOptions::new(COMPONENT, host)),
            clock,
        }
    }

    /// A `Normal` event about `obj`.
    pub fn normal<T: Resource>(&self, obj: &T, reason: &str, message: impl Into<String>) {
        self.record(reference(obj), event_type::NORMAL, reason, message.into());
    }

    /// A `Warning` event about `obj`.
    pub fn warning<T: Resource>(&self, obj: &T, reason: &str, message: impl Into<String>) {
        self.record(reference(obj), event_type::WARNING, reason, message.into());
    }

    /// Records an event (in the background; failures are logged, never returned: an event is
    /// never worth failing a reconcile over).
    pub fn record(&self, obj: ObjectReference, type_: &str, reason: &str, message: String) {
        tracing::info!(kind = %obj.kind, object = %obj.name, reason, %message, "event");
        self.inner
            .record(self.clock.now(), obj, type_, reason, message);
    }
}
