//! Pod status: built from the agent's record of the pod ([`build`]) and written through the
//! `status` subresource by one reporter task per pod ([`Reporter`]), which keeps only the
//! newest status (updates coalesce) and retries while the API server is away.

use std::time::Duration;

use drover_api::core::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodIp, PodStatus, pod_phase,
};
use drover_api::meta::{Condition, Time, set_condition};
use drover_client::Client;
use tokio::sync::watch;

use crate::state::{ContainerRecord, PodRecord, TerminatedRecord};

/// First wait before retrying a failed status write.
pub const STATUS_RETRY_INITIAL: Duration = Duration::from_millis(200);
/// Longest wait between status write attempts.
pub const STATUS_RETRY_MAX: Duration = Duration::from_secs(5);

fn terminated(t: &TerminatedRecord) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit.code,
        signal: t.exit.signal,
        reason: if t.reason.is_empty() {
            t.exit.reason().to_string()
        } else {
            t.reason.clone()
        },
        message: t.message.clone(),
        started_at: t.started_at,
        finished_at: Some(t.finished_at),
        container_id: String::new(),
    }
}

fn container_status(name: &str, image: &str, r: Option<&ContainerRecord>) -> ContainerStatus {
    let default = ContainerRecord::default();
    let r = r.unwrap_or(&default);
    let state = if let Some(run) = &r.running {
        ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(run.started_at),
            }),
            ..Default::default()
        }
    } else if let Some((reason, message)) = &r.waiting {
        ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: reason.clone(),
                message: message.clone(),
            }),
            ..Default::default()
        }
    } else if let Some(t) = &r.terminated {
        ContainerState {
            terminated: Some(terminated(t)),
            ..Default::default()
        }
    } else {
        ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: "ContainerCreating".into(),
                message: String::new(),
            }),
            ..Default::default()
        }
    };
    let running = r.running.is_some();
    ContainerStatus {
        name: name.to_string(),
        state: Some(state),
        last_state: r.last_terminated.as_ref().map(|t| ContainerState {
            terminated: Some(terminated(t)),
            ..Default::default()
        }),
        ready: running,
        started: Some(running),
        restart_count: r.restart_count,
        image: image.to_string(),
        image_id: String::new(),
        container_id: r
            .running
            .map(|run| format!("process://{}", run.process.pid))
            .unwrap_or_default(),
    }
}

fn condition(type_: &str, ok: bool, reason: &str) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: if ok {
            String::new()
        } else {
            reason.to_string()
        },
        ..Default::default()
    }
}

/// The pod's status as the agent sees it: `phase`, container statuses, conditions (merged into
/// the ones already on `pod`, so the scheduler's `PodScheduled` stays), times and addresses.
pub fn build(
    pod: &Pod,
    record: &PodRecord,
    phase: &str,
    message: &str,
    reason: &str,
    node_ip: &str,
) -> PodStatus {
    let now: Time = chrono::Utc::now();
    let spec = &pod.spec;
    let init_statuses: Vec<ContainerStatus> = spec
        .init_containers
        .iter()
        .map(|c| container_status(&c.name, &c.image, record.containers.get(&c.name)))
        .collect();
    let statuses: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| container_status(&c.name, &c.image, record.containers.get(&c.name)))
        .collect();
    let initialized = init_statuses.iter().all(|s| {
        s.state
            .as_ref()
            .and_then(|st| st.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 0 && t.signal.is_none())
    });
    let ready = !statuses.is_empty() && statuses.iter().all(|s| s.ready);
    let done = phase == pod_phase::SUCCEEDED || phase == pod_phase::FAILED;
    let not_ready = if done {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let mut conditions = pod.status.conditions.clone();
    for c in [
        condition("Initialized", initialized, "ContainersNotInitialized"),
        condition("ContainersReady", ready, not_ready),
        condition("Ready", ready, not_ready),
    ] {
        set_condition(&mut conditions, c, now);
    }
    let ips = vec![PodIp {
        ip: node_ip.to_string(),
    }];
    PodStatus {
        phase: phase.to_string(),
        conditions,
        message: message.to_string(),
        reason: reason.to_string(),
        host_ip: node_ip.to_string(),
        host_ips: ips.clone(),
        pod_ip: node_ip.to_string(),
        pod_ips: ips,
        start_time: record.start_time,
        nominated_node_name: pod.status.nominated_node_name.clone(),
        qos_class: pod.status.qos_class.clone(),
        container_statuses: statuses,
        init_container_statuses: init_statuses,
    }
}

/// The merge patch that sets `status`; `message` and `reason` are cleared explicitly when empty
/// (a merge patch leaves absent fields as they were).
pub fn patch_body(status: &PodStatus) -> serde_json::Value {
    let mut value = serde_json::to_value(status).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(obj) = value.as_object_mut() {
        for key in ["message", "reason"] {
            obj.entry(key).or_insert(serde_json::Value::Null);
        }
    }
    serde_json::json!({ "status": value })
}

/// Sends a pod's status to the API server: newest first, retried until it lands.
#[derive(Debug)]
pub struct Reporter {
    tx: watch::Sender<(u64, Option<PodStatus>)>,
    acked: watch::Receiver<u64>,
    seq: u64,
}

impl Reporter {
    /// Spawns the reporter task of pod `namespace/name` (it ends with the sender).
    pub fn spawn(client: Client, namespace: String, name: String) -> Reporter {
        let (tx, rx) = watch::channel((0, None));
        let (ack_tx, acked) = watch::channel(0);
        let span = tracing::info_span!("status", pod = %format!("{namespace}/{name}"));
        tokio::spawn(tracing::Instrument::instrument(
            report_loop(client, namespace, name, rx, ack_tx),
            span,
        ));
        Reporter { tx, acked, seq: 0 }
    }

    /// Queues a status (replacing any not yet sent); returns its sequence number.
    pub fn send(&mut self, status: PodStatus) -> u64 {
        self.seq += 1;
        self.tx.send_replace((self.seq, Some(status)));
        self.seq
    }

    /// Waits until the status with sequence `seq` (or a newer one) has been written, or the pod
    /// is gone.
    pub async fn flushed(&mut self, seq: u64) {
        let _ = self.acked.wait_for(|a| *a >= seq).await;
    }
}

async fn report_loop(
    client: Client,
    namespace: String,
    name: String,
    mut rx: watch::Receiver<(u64, Option<PodStatus>)>,
    acked: watch::Sender<u64>,
) {
    let api = client.namespaced::<Pod>(&namespace);
    let mut retry = STATUS_RETRY_INITIAL;
    while rx.changed().await.is_ok() {
        loop {
            let (seq, status) = rx.borrow_and_update().clone();
            let Some(status) = status else { break };
            match api.patch_status(&name, &patch_body(&status)).await {
                Ok(_) => {
                    retry = STATUS_RETRY_INITIAL;
                    acked.send_replace(seq);
                    break;
                }
                Err(e) if e.is_not_found() => {
                    tracing::debug!("pod is gone; status dropped");
                    acked.send_replace(u64::MAX);
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?retry, "cannot write the pod's status; will retry");
                    // Wait, but take a newer status as soon as one arrives. Once the worker
                    // has dropped its sender none will, and `changed` returns at once: sleep
                    // then, or the retries would spin.
                    if let Ok(Err(_)) = tokio::time::timeout(retry, rx.changed()).await {
                        tokio::time::sleep(retry).await;
                    }
                    retry = (retry * 2).min(STATUS_RETRY_MAX);
                }
            }
        }
    }
}
