//! Device recovery: a device whose fault calls for a reset ([`DeviceRecovery::Reset`], from its
//! XID's class) is reset by the agent once no pod holds it any more — the node-lifecycle
//! controller fails the pods on a failed device, and the agent releases the device when their
//! processes are gone. A reset that fails is tried again later, backing off to
//! [`MAX_RESET_BACKOFF`]; a device that needs the node serviced ([`DeviceRecovery::Drain`]) is
//! left alone. A successful reset announces the device healthy, and the status loop reports it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use drover_api::device::{DeviceHealth, DeviceRecovery};
use drover_device_plugins::{HealthEvents, HealthRecvError};
use tokio::time::Instant;

use crate::pods::NodeContext;

/// How soon a device waiting for its pods to leave is looked at again.
pub const RESET_POLL: Duration = Duration::from_millis(500);
/// The longest wait between two failed resets of one device.
pub const MAX_RESET_BACKOFF: Duration = Duration::from_secs(300);

/// A device waiting for its reset: when to try next, and the wait after a failure.
#[derive(Debug)]
struct Pending {
    next: Instant,
    backoff: Duration,
}

/// Runs forever: watches health events and resets the devices that need it.
pub async fn recover_devices(ctx: Arc<NodeContext>, mut health: HealthEvents) {
    let mut pending: BTreeMap<String, Pending> = BTreeMap::new();
    resync(&ctx, &mut pending);
    loop {
        let poll = tokio::time::sleep(RESET_POLL);
        tokio::select! {
            ev = health.recv() => match ev {
                Ok(ev) if ev.health == DeviceHealth::Unhealthy => {
                    pending.entry(ev.device_id).or_insert(Pending {
                        next: Instant::now(),
                        backoff: RESET_POLL,
                    });
                }
                Ok(ev) => {
                    pending.remove(&ev.device_id);
                }
                Err(HealthRecvError::Closed) => {
                    health = ctx.devices.health_events();
                    tokio::time::sleep(RESET_POLL).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "missed device health events; rediscovering");
                    resync(&ctx, &mut pending);
                }
            },
            _ = poll, if !pending.is_empty() => {}
        }
        try_resets(&ctx, &mut pending);
    }
}

/// Adds every device the inventory says waits for a reset.
fn resync(ctx: &NodeContext, pending: &mut BTreeMap<String, Pending>) {
    let Ok(discovery) = ctx.devices.discover() else {
        return;
    };
    for d in &discovery.inventory.devices {
        if !d.is_healthy() && d.recovery == Some(DeviceRecovery::Reset) {
            pending.entry(d.id.clone()).or_insert(Pending {
                next: Instant::now(),
                backoff: RESET_POLL,
            });
        }
    }
}

/// Resets the pending devices that are due, need a reset, and that no pod holds.
fn try_resets(ctx: &NodeContext, pending: &mut BTreeMap<String, Pending>) {
    let now = Instant::now();
    if pending.values().all(|p| p.next > now) {
        return;
    }
    let discovery = match ctx.devices.discover() {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "cannot discover devices to reset");
            return;
        }
    };
    pending.retain(|id, p| {
        let Some(device) = discovery.inventory.device(id) else {
            return false;
        };
        if device.is_healthy() || device.recovery != Some(DeviceRecovery::Reset) {
            // Back already, or a fault a reset does not mend (the node needs servicing).
            return false;
        }
        if p.next > now {
            return true;
        }
        if let Some(holder) = ctx.holder_of(id) {
            tracing::debug!(device = %id, pod = %holder, "device waits for its pod to leave before its reset");
            p.next = now + RESET_POLL;
            return true;
        }
        match ctx.devices.reset(id) {
            Ok(()) => {
                tracing::info!(device = %id, reason = ?device.health_reason, "device reset; back in service");
                false
            }
            Err(e) => {
                tracing::warn!(device = %id, error = %e, retry_in = ?p.backoff, "device reset failed");
                p.next = now + p.backoff;
                p.backoff = (p.backoff * 2).min(MAX_RESET_BACKOFF);
                true
            }
        }
    });
}
