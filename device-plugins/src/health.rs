//! Health bookkeeping shared by the plugins: which devices are unhealthy and why, and the
//! broadcast channel that announces changes.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use drover_api::device::{DeviceHealth, DeviceInventory, DeviceRecovery};
use tokio::sync::broadcast;

use crate::HealthEvent;

/// Room for health events a slow subscriber has not read yet; beyond it, it lags and must
/// rediscover.
pub(crate) const HEALTH_CHANNEL_CAPACITY: usize = 64;

/// The attribute naming the parent GPU of a MIG device: a parent's failure is its children's.
pub(crate) const ATTR_PARENT: &str = "mig.parent";

/// Unhealthy devices and the channel announcing changes. Both start empty and small: a
/// simulated node holds one of these and the scale harness creates thousands of nodes, so the
/// channel is only created when someone subscribes.
#[derive(Debug, Default)]
pub(crate) struct HealthBook {
    unhealthy: Mutex<BTreeMap<String, Unhealthy>>,
    sender: OnceLock<broadcast::Sender<HealthEvent>>,
}

#[derive(Clone, Debug)]
pub(crate) struct Unhealthy {
    pub reason: String,
    pub since: Instant,
    /// What brings it back, when the fault says.
    pub recovery: Option<DeviceRecovery>,
}

impl HealthBook {
    pub fn subscribe(&self) -> broadcast::Receiver<HealthEvent> {
        self.sender
            .get_or_init(|| broadcast::channel(HEALTH_CHANNEL_CAPACITY).0)
            .subscribe()
    }

    fn send(&self, event: HealthEvent) {
        tracing::info!(device = %event.device_id, health = %event.health, reason = ?event.reason, "device health changed");
        if let Some(sender) = self.sender.get() {
            // An error only means nobody is listening right now.
            let _ = sender.send(event);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Unhealthy>> {
        // The map stays consistent even if a holder panicked: every update is one insert/remove.
        self.unhealthy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks a device unhealthy; announces it unless it already was, for the same reason.
    pub fn mark_unhealthy(&self, id: &str, reason: &str) -> bool {
        self.mark_failed(id, reason, None)
    }

    /// Marks a device unhealthy with what brings it back; announces it unless it already was,
    /// for the same reason.
    pub fn mark_failed(&self, id: &str, reason: &str, recovery: Option<DeviceRecovery>) -> bool {
        {
            let mut map = self.lock();
            if map.get(id).is_some_and(|u| u.reason == reason) {
                return false;
            }
            map.insert(
                id.to_string(),
                Unhealthy {
                    reason: reason.to_string(),
                    since: Instant::now(),
                    recovery,
                },
            );
        }
        self.send(HealthEvent {
            device_id: id.to_string(),
            health: DeviceHealth::Unhealthy,
            reason: Some(reason.to_string()),
        });
        true
    }

    /// Marks a device healthy again; announces it if it was not.
    pub fn mark_healthy(&self, id: &str) -> bool {
        if self.lock().remove(id).is_none() {
            return false;
        }
        self.send(HealthEvent {
            device_id: id.to_string(),
            health: DeviceHealth::Healthy,
            reason: None,
        });
        true
    }

    pub fn unhealthy(&self) -> BTreeMap<String, Unhealthy> {
        self.lock().clone()
    }

    /// Writes current health into a freshly discovered inventory (a MIG device is unhealthy
    /// when its parent GPU is).
    pub fn apply(&self, inventory: &mut DeviceInventory) {
        let map = self.lock();
        if map.is_empty() {
            return;
        }
        for device in &mut inventory.devices {
            let own = map.get(&device.id).map(|u| (u.reason.clone(), u.recovery));
            let parent = device
                .attributes
                .get(ATTR_PARENT)
                .and_then(|p| map.get(p))
                .map(|u| (format!("parent GPU unhealthy: {}", u.reason), u.recovery));
            if let Some((reason, recovery)) = own.or(parent) {
                device.health = DeviceHealth::Unhealthy;
                device.health_reason = Some(reason);
                device.recovery = recovery;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_announced_once() {
        let book = HealthBook::default();
        let mut rx = book.subscribe();
        assert!(book.mark_unhealthy("a", "xid 79"));
        assert!(!book.mark_unhealthy("a", "xid 79"));
        assert!(book.mark_healthy("a"));
        assert!(!book.mark_healthy("a"));
        let first = rx.try_recv().ok();
        let second = rx.try_recv().ok();
        assert_eq!(first.map(|e| e.health), Some(DeviceHealth::Unhealthy));
        assert_eq!(second.map(|e| e.health), Some(DeviceHealth::Healthy));
        assert!(rx.try_recv().is_err());
    }
}
