//! Job semantics against an in-process API server: indexed completion, backoff, deadline,
//! suspend, TTL, and the example manifests.

mod common;

use std::collections::BTreeSet;

use common::*;
use drover_api::batch::{Job, job_condition};
use drover_api::core::pod_phase;
use drover_api::meta::find_condition;

const NS: &str = "default";

fn job(name: &str, extra: &str) -> Job {
    job_from_yaml(&format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {{name: {name}}}
spec:
{extra}
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox
        command: ["true"]
"#
    ))
}

fn condition(j: &Job, t: &str) -> Option<String> {
    find_condition(&j.status.conditions, t)
        .filter(|c| c.is_true())
        .map(|c| c.reason.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_job_completes_every_index_once() {
    let c = cluster().await;
    let m = start_manager(&c.client, job_config());
    create_job(
        &c.client,
        NS,
        &job(
            "idx",
            "  completions: 4\n  parallelism: 2\n  completionMode: Indexed",
        ),
    )
    .await;
    let mut done = BTreeSet::new();
    let mut created = 0;
    for _ in 0..4 {
        // Each round: the active pods have distinct indexes; finish one.
        let pods = eventually("two active pods", 10, || async {
            let a = active_pods(&c.client, NS, "idx").await;
            (a.len() == 2.min(4 - done.len())).then_some(a)
        })
        .await;
        let idx: Vec<String> = pods
            .iter()
            .map(|p| p.metadata.annotations["batch.kubernetes.io/job-completion-index"].clone())
            .collect();
        let unique: BTreeSet<&String> = idx.iter().collect();
        assert_eq!(unique.len(), idx.len(), "duplicate index among {idx:?}");
        let p = &pods[0];
        let i = &p.metadata.annotations["batch.kubernetes.io/job-completion-index"];
        assert!(
            p.metadata.name.starts_with(&format!("idx-{i}-")),
            "{}",
            p.metadata.name
        );
        let env = &p.spec.containers[0].env;
        assert!(
            env.iter()
                .any(|e| e.name == "JOB_COMPLETION_INDEX" && &e.value == i)
        );
        assert_eq!(p.metadata.owner_references[0].kind, "Job");
        assert!(
            p.metadata
                .labels
                .contains_key("batch.kubernetes.io/controller-uid")
        );
        bind(&c.client, p, "n1").await;
        set_phase(&c.client, p, pod_phase::SUCCEEDED).await;
        done.insert(i.clone());
        created += 1;
    }
    let j = eventually("job complete", 10, || async {
        let j = get_job(&c.client, NS, "idx").await;
        condition(&j, job_condition::COMPLETE).map(|_| j)
    })
    .await;
    assert_eq!(j.status.completed_indexes.as_deref(), Some("0-3"));
    assert_eq!(j.status.succeeded, 4);
    assert!(j.status.completion_time.is_some());
    assert_eq!(job_pods(&c.client, NS, "idx").await.len(), created);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_limit_fails_the_job() {
    let c = cluster().await;
    let m = start_manager(&c.client, job_config());
    create_job(&c.client, NS, &job("flaky", "  backoffLimit: 2")).await;
    for round in 0..3 {
        let pods = eventually("one active pod", 10, || async {
            let a = active_pods(&c.client, NS, "flaky").await;
            (a.len() == 1).then_some(a)
        })
        .await;
        bind(&c.client, &pods[0], "n1").await;
        set_phase(&c.client, &pods[0], pod_phase::FAILED).await;
        let j = eventually("failure counted", 10, || async {
            let j = get_job(&c.client, NS, "flaky").await;
            (j.status.failed == round + 1).then_some(j)
        })
        .await;
        assert_eq!(j.status.failed, round + 1);
    }
    let j = eventually("job failed", 10, || async {
        let j = get_job(&c.client, NS, "flaky").await;
        condition(&j, job_condition::FAILED).map(|_| j)
    })
    .await;
    assert_eq!(
        condition(&j, job_condition::FAILED).as_deref(),
        Some("BackoffLimitExceeded")
    );
    assert_eq!(j.status.failed, 3);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        job_pods(&c.client, NS, "flaky").await.len(),
        3,
        "no pod after the failure"
    );
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_kills_active_pods() {
    let c = cluster().await;
    let m = start_manager(&c.client, job_config());
    create_job(
        &c.client,
        NS,
        &job(
            "slow",
            "  activeDeadlineSeconds: 1\n  parallelism: 2\n  completions: 2",
        ),
    )
    .await;
    let pods = eventually("pods", 10, || async {
        let a = active_pods(&c.client, NS, "slow").await;
        (a.len() == 2).then_some(a)
    })
    .await;
    bind(&c.client, &pods[0], "n1").await;
    set_phase(&c.client, &pods[0], pod_phase::RUNNING).await;
    let j = eventually("deadline", 10, || async {
        let j = get_job(&c.client, NS, "slow").await;
        condition(&j, job_condition::FAILED).map(|_| j)
    })
    .await;
    assert_eq!(
        condition(&j, job_condition::FAILED).as_deref(),
        Some("DeadlineExceeded")
    );
    eventually("active pods killed", 10, || async {
        active_pods(&c.client, NS, "slow")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_deletes_pods_and_resume_recreates() {
    let c = cluster().await;
    let m = start_manager(&c.client, job_config());
    create_job(
        &c.client,
        NS,
        &job("sus", "  parallelism: 2\n  completions: 2"),
    )
    .await;
    eventually("pods", 10, || async {
        (active_pods(&c.client, NS, "sus").await.len() == 2).then_some(())
    })
    .await;
    let api = c.client.namespaced::<Job>(NS);
    api.patch("sus", &serde_json::json!({"spec": {"suspend": true}}))
        .await
        .expect("suspend");
    let j = eventually("suspended", 10, || async {
        let j = get_job(&c.client, NS, "sus").await;
        let pods = active_pods(&c.client, NS, "sus").await;
        (condition(&j, job_condition::SUSPENDED).is_some() && pods.is_empty()).then_some(j)
    })
    .await;
    assert!(j.status.start_time.is_none());
    api.patch("sus", &serde_json::json!({"spec": {"suspend": false}}))
        .await
        .expect("resume");
    eventually("resumed", 10, || async {
        let j = get_job(&c.client, NS, "sus").await;
        let pods = active_pods(&c.client, NS, "sus").await;
        (condition(&j, job_condition::SUSPENDED).is_none()
            && pods.len() == 2
            && j.status.start_time.is_some())
        .then_some(())
    })
    .await;
    let j = get_job(&c.client, NS, "sus").await;
    assert_eq!(j.status.failed, 0, "suspension is not a failure");
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_deletes_finished_job_and_its_pods() {
    let c = cluster().await;
    let m = start_manager(&c.client, job_config());
    create_job(&c.client, NS, &job("short", "  ttlSecondsAfterFinished: 1")).await;
    let pods = eventually("pod", 10, || async {
        let a = active_pods(&c.client, NS, "short").await;
        (a.len() == 1).then_some(a)
    })
    .await;
    bind(&c.client, &pods[0], "n1").await;
    set_phase(&c.client, &pods[0], pod_phase::SUCCEEDED).await;
    eventually("complete", 10, || async {
        let j = get_job(&c.client, NS, "short").await;
        condition(&j, job_condition::COMPLETE).map(|_| ())
    })
    .await;
    eventually("job deleted after TTL", 10, || async {
        c.client
            .namespaced::<Job>(NS)
            .get_opt("short")
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    eventually("pods collected", 10, || async {
        job_pods(&c.client, NS, "short")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    m.shutdown().await;
}
