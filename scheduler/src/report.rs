//! What the scheduler tells people: pod conditions (`PodScheduled`, `DisruptionTarget`), the
//! nominated node, PodGroup status, and Events (`Scheduled`, `FailedScheduling`, `Preempted`).

use drover_api::core::{Pod, event_type};
use drover_api::meta::{Condition, ObjectReference, set_condition};
use drover_api::scheduling::PodGroup;
use drover_client::events::{Recorder, RecorderOptions, reference};
use drover_client::{Client, ClientError, DeleteParams};

/// The component name on events.
pub const COMPONENT: &str = "drover-scheduler";

/// The scheduler's event recorder: events are written in the background and best-effort (see
/// [`drover_client::events`]), so a binding never waits for its `Scheduled` event and an
/// overloaded API server sheds events before bindings. Must be made inside a tokio runtime.
pub fn recorder(client: &Client) -> Recorder {
    Recorder::new(client.clone(), RecorderOptions::new(COMPONENT, ""))
}

/// Records an event about `involved`.
fn event(events: &Recorder, involved: ObjectReference, type_: &str, reason: &str, message: &str) {
    events.record(chrono::Utc::now(), involved, type_, reason, message);
}

/// Sets a condition (and optionally the nominated node) on a pod's status.
pub async fn pod_condition(
    client: &Client,
    pod: &Pod,
    condition: Condition,
    nominated: Option<&str>,
) -> Result<(), ClientError> {
    let mut conditions = pod.status.conditions.clone();
    set_condition(&mut conditions, condition, chrono::Utc::now());
    let mut status = serde_json::json!({ "conditions": conditions });
    if let Some(n) = nominated {
        status["nominatedNodeName"] = serde_json::Value::String(n.to_string());
    }
    client
        .namespaced::<Pod>(&pod.metadata.namespace)
        .patch_status(&pod.metadata.name, &serde_json::json!({ "status": status }))
        .await
        .map(|_| ())
}

/// `PodScheduled=False`, reason `Unschedulable`, and a `FailedScheduling` warning.
pub async fn unschedulable(
    client: &Client,
    events: &Recorder,
    pod: &Pod,
    message: &str,
) -> Result<(), ClientError> {
    let cond = Condition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: "Unschedulable".into(),
        message: message.into(),
        ..Default::default()
    };
    pod_condition(client, pod, cond, None).await?;
    event(
        events,
        reference(pod),
        event_type::WARNING,
        "FailedScheduling",
        message,
    );
    Ok(())
}

/// The `Scheduled` event.
pub fn scheduled(events: &Recorder, pod: &Pod, message: &str) {
    event(
        events,
        reference(pod),
        event_type::NORMAL,
        "Scheduled",
        message,
    );
}

/// Tells a victim why, then deletes it.
pub async fn preempt(
    client: &Client,
    events: &Recorder,
    victim: &Pod,
    by: &str,
) -> Result<(), ClientError> {
    let message = format!("preempted by {by}");
    let cond = Condition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: "PreemptionByScheduler".into(),
        message: message.clone(),
        ..Default::default()
    };
    pod_condition(client, victim, cond, None).await?;
    event(
        events,
        reference(victim),
        event_type::NORMAL,
        "Preempted",
        &message,
    );
    match client
        .namespaced::<Pod>(&victim.metadata.namespace)
        .delete(&victim.metadata.name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sets the nominated node of a preemptor.
pub async fn nominate(
    client: &Client,
    pod: &Pod,
    node: &str,
    message: &str,
) -> Result<(), ClientError> {
    let cond = Condition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: "Unschedulable".into(),
        message: message.into(),
        ..Default::default()
    };
    pod_condition(client, pod, cond, Some(node)).await
}

/// Why a gang is pending, on its PodGroup (message and a `Scheduled` condition).
pub async fn pod_group_status(
    client: &Client,
    group: &PodGroup,
    scheduled: bool,
    reason: &str,
    message: &str,
) -> Result<(), ClientError> {
    let mut conditions = group.status.conditions.clone();
    set_condition(
        &mut conditions,
        Condition {
            type_: "Scheduled".into(),
            status: if scheduled { "True" } else { "False" }.into(),
            reason: reason.into(),
            message: message.into(),
            ..Default::default()
        },
        chrono::Utc::now(),
    );
    let patch = serde_json::json!({ "status": { "conditions": conditions, "message": message } });
    client
        .namespaced::<PodGroup>(&group.metadata.namespace)
        .patch_status(&group.metadata.name, &patch)
        .await
        .map(|_| ())
}

/// An event about a PodGroup.
pub fn pod_group_event(
    events: &Recorder,
    group: &PodGroup,
    type_: &str,
    reason: &str,
    message: &str,
) {
    event(events, reference(group), type_, reason, message);
}
