//! Why pending, said once: the last message given for each pod and gang, so an unchanged reason
//! is not written again, and the tasks that write conditions, PodGroup status and events
//! (never on the scheduling loop's path).

use std::collections::HashMap;
use std::sync::Arc;

use drover_api::core::Pod;
use drover_api::scheduling::PodGroup;
use drover_client::Client;
use drover_client::events::Recorder;
use tracing::{debug, warn};

use crate::cache::PodInfo;
use crate::report;

pub(super) struct Reporter {
    /// Last why-pending message per pod / gang.
    said: HashMap<Arc<str>, String>,
    client: Client,
    /// Events, written in the background (never on a binding's path).
    events: Recorder,
}

impl Reporter {
    pub(super) fn new(client: Client, events: Recorder) -> Reporter {
        Reporter {
            said: HashMap::new(),
            client,
            events,
        }
    }

    /// Forgets what was said for `key` (placed, or no longer pending).
    pub(super) fn forget(&mut self, key: &str) {
        self.said.remove(key);
    }

    /// Records `message` as said for `key`: whether it differs from the last one.
    fn say(&mut self, key: Arc<str>, message: &str) -> bool {
        self.said.insert(key, message.to_string()).as_deref() != Some(message)
    }

    /// The pod is unschedulable with `message` (written when the message changed).
    pub(super) fn unschedulable(&mut self, p: &PodInfo, message: &str) {
        if self.said.get(&p.key).map(String::as_str) == Some(message) {
            return;
        }
        self.said.insert(p.key.clone(), message.to_string());
        let (client, events) = (self.client.clone(), self.events.clone());
        let (pod, msg) = (p.pod.clone(), message.to_string());
        tokio::spawn(async move {
            if let Err(e) = report::unschedulable(&client, &events, &pod, &msg).await {
                debug!(error = %e, "cannot report why the pod is pending");
            }
        });
    }

    /// Gang `g` is placed: its PodGroup says so (once).
    pub(super) fn gang_placed(&mut self, g: &Arc<str>, group: Arc<PodGroup>) {
        let msg = format!("gang {g} placed");
        if self.say(g.clone(), &msg) {
            let client = self.client.clone();
            tokio::spawn(async move {
                let _ = report::pod_group_status(&client, &group, true, "Scheduled", &msg).await;
            });
        }
    }

    /// Gang `g` cannot be placed (`timed_out`: past its schedule timeout): a warning event and
    /// its PodGroup's status, when either changed.
    pub(super) fn gang_failed(
        &mut self,
        g: &Arc<str>,
        group: Arc<PodGroup>,
        timed_out: bool,
        msg: String,
    ) {
        let tag = format!("{timed_out}{msg}");
        if self.say(g.clone(), &tag) {
            let client = self.client.clone();
            let reason = if timed_out {
                "Timeout"
            } else {
                "Unschedulable"
            };
            report::pod_group_event(&self.events, &group, "Warning", "FailedScheduling", &msg);
            tokio::spawn(async move {
                let _ = report::pod_group_status(&client, &group, false, reason, &msg).await;
            });
        }
    }

    /// Tells `victim` it is preempted by `by`, then deletes it.
    pub(super) fn preempt(&self, victim: Arc<PodInfo>, by: String) {
        let (client, events) = (self.client.clone(), self.events.clone());
        tokio::spawn(async move {
            if let Err(e) = report::preempt(&client, &events, &victim.pod, &by).await {
                warn!(pod = %victim.key, error = %e, "cannot preempt");
            }
        });
    }

    /// The preemptor `pod` (key `key`) is nominated to `node`, pending with `message`.
    pub(super) fn nominate(&mut self, key: Arc<str>, pod: Arc<Pod>, node: Arc<str>, message: &str) {
        let (client, msg) = (self.client.clone(), message.to_string());
        self.said.insert(key, msg.clone());
        tokio::spawn(async move {
            let _ = report::nominate(&client, &pod, &node, &msg).await;
        });
    }
}
