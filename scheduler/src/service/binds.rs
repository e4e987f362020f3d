//! Bindings in flight: each placement is bound by its own task (at most `bind_concurrency` at
//! once), which reports back over a channel; a unit is done when its last binding is in.

use std::collections::HashMap;
use std::sync::Arc;

use drover_client::Client;
use drover_client::events::Recorder;
use tokio::sync::{Semaphore, mpsc};
use tracing::{info_span, warn};

use crate::cache::{Placement, PodInfo};
use crate::framework::Bind;
use crate::plugins::default_binder::DefaultBinder;
use crate::queue::UnitKey;
use crate::report;

/// What a binding task reports back.
pub(super) struct BindResult {
    pub(super) unit: UnitKey,
    pub(super) pod: Arc<str>,
    pub(super) ok: bool,
}

/// Per unit, the bindings still out and whether all so far succeeded; and what a binding
/// task needs.
pub(super) struct Binds {
    left: HashMap<UnitKey, (usize, bool)>,
    binder: Arc<DefaultBinder>,
    slots: Arc<Semaphore>,
    tx: mpsc::Sender<BindResult>,
    client: Client,
    events: Recorder,
}

impl Binds {
    pub(super) fn new(
        concurrency: usize,
        tx: mpsc::Sender<BindResult>,
        client: Client,
        events: Recorder,
    ) -> Binds {
        Binds {
            left: HashMap::new(),
            binder: Arc::new(DefaultBinder),
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            tx,
            client,
            events,
        }
    }

    /// Whether some of the unit's bindings are still out.
    pub(super) fn is_binding(&self, unit: &UnitKey) -> bool {
        self.left.contains_key(unit)
    }

    /// The unit's `count` placements are about to be bound.
    pub(super) fn start(&mut self, unit: &UnitKey, count: usize) {
        self.left.insert(unit.clone(), (count, true));
    }

    /// Counts one binding's result: `Some(all succeeded)` once it was the unit's last.
    pub(super) fn finish(&mut self, r: &BindResult) -> Option<bool> {
        let left = self.left.get_mut(&r.unit)?;
        left.0 = left.0.saturating_sub(1);
        left.1 &= r.ok;
        if left.0 > 0 {
            return None;
        }
        let all_ok = left.1;
        self.left.remove(&r.unit);
        Some(all_ok)
    }

    /// Binds `pod` as `placement` says in a task of its own (waiting for a slot), records
    /// `Scheduled` on success and reports the result back.
    pub(super) fn spawn(&self, unit: &UnitKey, pod: Arc<PodInfo>, placement: Placement) {
        let (client, events, binder, slots, tx, unit) = (
            self.client.clone(),
            self.events.clone(),
            self.binder.clone(),
            self.slots.clone(),
            self.tx.clone(),
            unit.clone(),
        );
        tokio::spawn(async move {
            let _slot = slots.acquire_owned().await;
            let _span = info_span!("bind", pod = %pod.key, node = %placement.node_name);
            let ok = match binder.bind(&client, &pod, &placement).await {
                Ok(()) => {
                    let ids: Vec<&str> = placement
                        .devices
                        .iter()
                        .flat_map(|d| d.ids.iter().map(String::as_str))
                        .collect();
                    let mut msg = format!(
                        "Successfully assigned {} to {}",
                        pod.key, placement.node_name
                    );
                    if !ids.is_empty() {
                        msg.push_str(&format!(" (devices {})", ids.join(",")));
                    }
                    report::scheduled(&events, &pod.pod, &msg);
                    true
                }
                Err(e) => {
                    warn!(pod = %pod.key, node = %placement.node_name, error = %e, "binding failed");
                    false
                }
            };
            let _ = tx
                .send(BindResult {
                    unit,
                    pod: pod.key.clone(),
                    ok,
                })
                .await;
        });
    }
}
