//! Failing a pod on the system's behalf — its node is unreachable, its device failed, its node
//! was deleted — as Kubernetes' node lifecycle and PodGC do: status `Failed` with a reason (so
//! its Job counts the failure and replaces it), a warning event, then a delete with grace 0,
//! since no agent will finish the deletion. The node-lifecycle controller and PodGC share this
//! one path.

use drover_api::core::{Pod, pod_phase};
use drover_client::{Client, DeleteParams};

use crate::events::Recorder;

/// Marks `pod` failed with `why` and `message` (unless it already finished), records the event,
/// then deletes it with grace 0. A pod that is already gone is left alone; a status write that
/// fails for another reason stops here, to be tried again on the caller's next pass.
pub(crate) async fn fail_and_delete(
    client: &Client,
    events: &Recorder,
    pod: &Pod,
    why: &str,
    message: &str,
) {
    let api = client.namespaced::<Pod>(&pod.metadata.namespace);
    if !pod.is_terminal() {
        let patch = serde_json::json!({"status": {"phase": pod_phase::FAILED, "reason": why, "message": message}});
        match api.patch_status(&pod.metadata.name, &patch).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return,
            Err(e) => {
                tracing::warn!(pod = %pod.metadata.name, error = %e, "cannot fail pod");
                return;
            }
        }
    }
    events.warning(pod, why, message);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        precondition_uid: Some(pod.metadata.uid.clone()),
        ..Default::default()
    };
    match api.delete(&pod.metadata.name, &params).await {
        Ok(_) => tracing::info!(pod = %pod.metadata.name, reason = why, "deleted failed pod"),
        Err(e) if e.is_not_found() || e.is_conflict() => {}
        Err(e) => tracing::warn!(pod = %pod.metadata.name, error = %e, "cannot delete failed pod"),
    }
}
