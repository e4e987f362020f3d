//! Garbage collection: background, foreground and orphan deletion of a Job's pods and PodGroup,
//! and finished pods removed by TTL.

mod common;

use std::time::Duration;

use common::*;
use drover_api::batch::Job;
use drover_api::core::{Pod, pod_phase};
use drover_api::scheduling::PodGroup;
use drover_client::DeleteParams;

const NS: &str = "default";

fn job(name: &str) -> Job {
    job_from_yaml(&format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {{name: {name}}}
spec:
  parallelism: 2
  completions: 2
  gang: {{}}
  template:
    spec:
      restartPolicy: Never
      containers: [{{name: main, image: busybox, command: ["true"]}}]
"#
    ))
}

async fn setup(c: &Cluster, name: &str) {
    create_job(&c.client, NS, &job(name)).await;
    eventually("pods and group", 10, || async {
        let pg = c
            .client
            .namespaced::<PodGroup>(NS)
            .get_opt(name)
            .await
            .expect("pg");
        (job_pods(&c.client, NS, name).await.len() == 2 && pg.is_some()).then_some(())
    })
    .await;
}

async fn delete_job(c: &Cluster, name: &str, policy: &str) {
    let p = DeleteParams {
        propagation_policy: Some(policy.into()),
        ..Default::default()
    };
    c.client
        .namespaced::<Job>(NS)
        .delete(name, &p)
        .await
        .expect("delete job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_foreground_and_orphan() {
    let c = cluster().await;
    let m = start_manager(&c.client, job_config());
    let pgs = c.client.namespaced::<PodGroup>(NS);

    setup(&c, "bg").await;
    delete_job(&c, "bg", "Background").await;
    eventually("background: dependents gone", 10, || async {
        (job_pods(&c.client, NS, "bg").await.is_empty()
            && pgs.get_opt("bg").await.expect("pg").is_none())
        .then_some(())
    })
    .await;

    setup(&c, "fg").await;
    delete_job(&c, "fg", "Foreground").await;
    let marked = c
        .client
        .namespaced::<Job>(NS)
        .get_opt("fg")
        .await
        .expect("get");
    assert!(marked.is_none_or(|j| j.metadata.deletion_timestamp.is_some()));
    eventually("foreground: dependents then owner gone", 10, || async {
        let job = c
            .client
            .namespaced::<Job>(NS)
            .get_opt("fg")
            .await
            .expect("get");
        (job.is_none() && job_pods(&c.client, NS, "fg").await.is_empty()).then_some(())
    })
    .await;

    setup(&c, "orph").await;
    delete_job(&c, "orph", "Orphan").await;
    eventually(
        "orphan: owner gone, dependents kept without the reference",
        10,
        || async {
            let job = c
                .client
                .namespaced::<Job>(NS)
                .get_opt("orph")
                .await
                .expect("get");
            let pods = job_pods(&c.client, NS, "orph").await;
            let pg = pgs.get_opt("orph").await.expect("pg");
            (job.is_none()
                && pods.len() == 2
                && pods.iter().all(|p| p.metadata.owner_references.is_empty())
                && pg.is_some_and(|g| g.metadata.owner_references.is_empty()))
            .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        job_pods(&c.client, NS, "orph").await.len(),
        2,
        "orphans are kept"
    );
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_pods_are_collected_after_their_ttl() {
    let c = cluster().await;
    let mut cfg = job_config();
    cfg.terminated_pod_ttl = Some(Duration::from_secs(1));
    let m = start_manager(&c.client, cfg);
    let mut pod = Pod::new(NS, "loose", Default::default());
    pod.spec.containers = vec![drover_api::core::Container {
        name: "main".into(),
        image: "busybox".into(),
        ..Default::default()
    }];
    let pod = c.client.all().create(&pod).await.expect("create pod");
    bind(&c.client, &pod, "n1").await;
    set_phase(&c.client, &pod, pod_phase::SUCCEEDED).await;
    eventually("finished pod collected", 10, || async {
        c.client
            .namespaced::<Pod>(NS)
            .get_opt("loose")
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    m.shutdown().await;
}
