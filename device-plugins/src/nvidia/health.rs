//! GPU health: a background thread waits for NVML's critical XID events and marks the GPU that
//! raised one unhealthy, with what its class of XID needs ([`crate::xid`]: a reset, or draining
//! the node; the application's own faults leave the GPU in service); every [`PROBE_INTERVAL`] it also asks NVML about every GPU, marking
//! those it cannot reach unhealthy and returning to service those that answer again after
//! [`RECOVERY_HOLD_DOWN`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nvml_wrapper::Nvml;
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::event::EventSet;
use nvml_wrapper::struct_wrappers::event::EventData;

use crate::health::HealthBook;
use crate::{DeviceError, xid};

/// How long one wait for an event may block, so the thread notices it should stop.
pub const EVENT_WAIT: Duration = Duration::from_secs(1);
/// How often every GPU is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a GPU stays unhealthy before a successful probe may return it to service.
pub const RECOVERY_HOLD_DOWN: Duration = Duration::from_secs(60);

/// Whether an XID makes the GPU unhealthy (an unknown XID does: better idle than corrupt).
pub fn xid_is_critical(xid: Option<u64>) -> bool {
    xid::classify(xid) != xid::XidClass::Application
}

/// The health thread; it stops (within [`EVENT_WAIT`]) when this is dropped.
pub(crate) struct Watcher {
    stop: Arc<AtomicBool>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Starts watching the GPUs with these UUIDs.
pub(crate) fn spawn(
    nvml: Arc<Nvml>,
    book: Arc<HealthBook>,
    uuids: Vec<String>,
) -> Result<Watcher, DeviceError> {
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = Arc::clone(&stop);
    thread::Builder::new()
        .name("nvml-health".into())
        .spawn(move || watch(&nvml, &book, &uuids, &thread_stop))
        .map_err(|source| DeviceError::Thread {
            what: "nvml health",
            source,
        })?;
    Ok(Watcher { stop })
}

fn watch(nvml: &Nvml, book: &HealthBook, uuids: &[String], stop: &AtomicBool) {
    let events = register(nvml, uuids);
    let mut last_probe = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match &events {
            Some(set) => match set.wait(EVENT_WAIT.as_millis() as u32) {
                Ok(event) => handle(book, event),
                Err(NvmlError::Timeout) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "waiting for nvml events failed");
                    thread::sleep(EVENT_WAIT);
                }
            },
            None => thread::sleep(EVENT_WAIT),
        }
        if last_probe.elapsed() >= PROBE_INTERVAL {
            probe(nvml, book, uuids);
            last_probe = Instant::now();
        }
    }
}

/// An event set with critical-XID events of every GPU that supports them; `None` if even an
/// empty set cannot be made (then only probing watches health).
fn register<'n>(nvml: &'n Nvml, uuids: &[String]) -> Option<EventSet<'n>> {
    let mut set = match nvml.create_event_set() {
        Ok(set) => set,
        Err(err) => {
            tracing::warn!(error = %err, "nvml event set unavailable; probing health only");
            return None;
        }
    };
    for uuid in uuids {
        let Ok(device) = nvml.device_by_uuid(uuid.as_str()) else {
            continue;
        };
        let supported = device
            .supported_event_types()
            .is_ok_and(|t| t.contains(EventTypes::CRITICAL_XID_ERROR));
        if !supported {
            tracing::info!(gpu = %uuid, "gpu does not report xid events; probing its health only");
            continue;
        }
        set = match device.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
            Ok(set) => set,
            Err(err) => {
                // Registration consumed the set; start a new one for the remaining GPUs.
                tracing::warn!(gpu = %uuid, error = %err, "registering xid events failed");
                nvml.create_event_set().ok()?
            }
        };
    }
    Some(set)
}

fn handle(book: &HealthBook, event: EventData<'_>) {
    if !event.event_type.contains(EventTypes::CRITICAL_XID_ERROR) {
        return;
    }
    let xid = match event.event_data {
        Some(XidError::Value(x)) => Some(x),
        _ => None,
    };
    let uuid = event.device.uuid();
    if !xid_is_critical(xid) {
        tracing::debug!(gpu = ?uuid, xid = ?xid, "application xid, gpu stays healthy");
        return;
    }
    let reason = xid::reason(xid);
    let recovery = xid::recovery(xid::classify(xid));
    match uuid {
        Ok(uuid) => {
            book.mark_failed(&uuid, &reason, recovery);
        }
        Err(err) => tracing::warn!(error = %err, %reason, "xid event from a gpu nvml cannot name"),
    }
}

fn probe(nvml: &Nvml, book: &HealthBook, uuids: &[String]) {
    let unhealthy = book.unhealthy();
    for uuid in uuids {
        let answer = nvml
            .device_by_uuid(uuid.as_str())
            .and_then(|d| d.memory_info().map(|_| ()));
        match answer {
            Err(err) => {
                book.mark_unhealthy(uuid, &format!("nvml cannot reach the gpu: {err}"));
            }
            Ok(()) => {
                if unhealthy
                    .get(uuid)
                    .is_some_and(|u| u.since.elapsed() >= RECOVERY_HOLD_DOWN)
                {
                    book.mark_healthy(uuid);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xid_classification() {
        let cases = [
            (Some(48), true),
            (Some(62), true),
            (Some(63), true),
            (Some(64), true),
            (Some(74), true),
            (Some(79), true),
            (Some(94), true),
            (Some(95), true),
            (Some(13), false),
            (Some(31), false),
            (Some(43), false),
            (Some(45), false),
            (Some(68), false),
            (Some(109), false),
            (None, true),
        ];
        for (xid, critical) in cases {
            assert_eq!(xid_is_critical(xid), critical, "xid {xid:?}");
        }
    }
}
