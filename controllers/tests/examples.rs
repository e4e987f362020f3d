//! The example manifests in deploy/examples: each decodes and validates; the CPU job completes
//! end to end (the node agent's part simulated: bind, then report success); the gang example
//! gets its PodGroup and training environment.

mod common;

use common::*;
use drover_api::Resource;
use drover_api::batch::{Job, job_condition};
use drover_api::core::pod_phase;
use drover_api::meta::find_condition;

const NS: &str = "default";

fn example(name: &str) -> Job {
    let path = format!("{}/../deploy/examples/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut job: Job = yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut checked = job.clone();
    checked.default_fields();
    if let Err(e) = checked.validate() {
        panic!("{path}: {e:?}");
    }
    job.metadata.namespace = NS.into();
    job
}

#[test]
fn every_example_decodes_and_validates() {
    for name in [
        "single-gpu-job.yaml",
        "indexed-array-job.yaml",
        "gang-training-job.yaml",
        "cpu-job.yaml",
    ] {
        let j = example(name);
        assert_eq!(j.kind, "Job", "{name}");
    }
    let gang = example("gang-training-job.yaml");
    assert!(gang.is_gang());
    assert_eq!(gang.gang_min_member(), Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_job_completes() {
    let c = cluster().await;
    let m = start_manager(&c.client, job_config());
    create_job(&c.client, NS, &example("cpu-job.yaml")).await;
    let mut finished = 0;
    while finished < 3 {
        let pods = eventually("active pods", 10, || async {
            let a = active_pods(&c.client, NS, "cpu-batch").await;
            (!a.is_empty()).then_some(a)
        })
        .await;
        assert!(pods.len() <= 2, "parallelism 2");
        bind(&c.client, &pods[0], "n1").await;
        set_phase(&c.client, &pods[0], pod_phase::SUCCEEDED).await;
        finished += 1;
        eventually("success counted", 10, || async {
            (get_job(&c.client, NS, "cpu-batch").await.status.succeeded == finished).then_some(())
        })
        .await;
    }
    let j = eventually("complete", 10, || async {
        let j = get_job(&c.client, NS, "cpu-batch").await;
        let done = find_condition(&j.status.conditions, job_condition::COMPLETE)
            .is_some_and(|c| c.is_true());
        done.then_some(j)
    })
    .await;
    assert_eq!(j.status.succeeded, 3);
    assert_eq!(job_pods(&c.client, NS, "cpu-batch").await.len(), 3);
    // Events are recorded after the status they explain: wait for them.
    let evs = eventually("a Completed event", 10, || async {
        let evs = events_for(&c.client, NS, "cpu-batch").await;
        evs.iter().any(|e| e.reason == "Completed").then_some(evs)
    })
    .await;
    assert!(evs.iter().any(|e| e.reason == "SuccessfulCreate"));
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gang_example_gets_its_group_and_environment() {
    let c = cluster().await;
    let m = start_manager(&c.client, job_config());
    create_job(&c.client, NS, &example("gang-training-job.yaml")).await;
    let pods = eventually("4 members", 10, || async {
        let a = active_pods(&c.client, NS, "train-gang").await;
        (a.len() == 4).then_some(a)
    })
    .await;
    let mut ranks: Vec<String> = pods
        .iter()
        .map(|p| {
            p.spec.containers[0]
                .env
                .iter()
                .find(|e| e.name == "RANK")
                .map(|e| e.value.clone())
                .unwrap_or_default()
        })
        .collect();
    ranks.sort();
    assert_eq!(ranks, ["0", "1", "2", "3"]);
    let pg = c
        .client
        .namespaced::<drover_api::scheduling::PodGroup>(NS)
        .get("train-gang")
        .await
        .expect("group");
    assert_eq!(pg.spec.min_member, 4);
    m.shutdown().await;
}
