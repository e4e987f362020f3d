//! Gang jobs: the PodGroup and training environment, a whole-gang restart when one member
//! fails, PodGroup phases, and node loss (lease expiry → taint → NodeLost → replacement gang).

mod common;

use std::time::Duration;

use common::*;
use drover_api::batch::{Job, job_condition};
use drover_api::coordination::Lease;
use drover_api::core::{Node, pod_phase};
use drover_api::meta::find_condition;
use drover_api::scheduling::PodGroup;

const NS: &str = "default";

fn gang_job(name: &str, pods: i32) -> Job {
    job_from_yaml(&format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {{name: {name}}}
spec:
  parallelism: {pods}
  completions: {pods}
  completionMode: Indexed
  backoffLimit: 3
  gang: {{masterPort: 23456}}
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

fn env(p: &drover_api::core::Pod, name: &str) -> Option<String> {
    p.spec.containers[0]
        .env
        .iter()
        .find(|e| e.name == name)
        .map(|e| e.value.clone())
}

async fn pg_phase(c: &Cluster, name: &str) -> String {
    c.client
        .namespaced::<PodGroup>(NS)
        .get(name)
        .await
        .map(|g| g.status.phase)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gang_member_failure_restarts_the_whole_gang() {
    let c = cluster().await;
    let m = start_manager(&c.client, job_config());
    create_job(&c.client, NS, &gang_job("train", 3)).await;
    let pods = eventually("3 gang pods", 10, || async {
        let a = active_pods(&c.client, NS, "train").await;
        (a.len() == 3
            && a.iter()
                .all(|p| p.metadata.annotations.contains_key("drover.dev/master-pod")))
        .then_some(a)
    })
    .await;
    let pg = c
        .client
        .namespaced::<PodGroup>(NS)
        .get("train")
        .await
        .expect("podgroup");
    assert_eq!(pg.spec.min_member, 3);
    assert_eq!(pg.metadata.owner_references[0].kind, "Job");
    let rank0 = pods
        .iter()
        .find(|p| env(p, "RANK").as_deref() == Some("0"))
        .expect("rank 0")
        .metadata
        .name
        .clone();
    for p in &pods {
        assert_eq!(p.metadata.labels["scheduling.x-k8s.io/pod-group"], "train");
        assert_eq!(env(p, "WORLD_SIZE").as_deref(), Some("3"));
        assert_eq!(env(p, "MASTER_PORT").as_deref(), Some("23456"));
        assert_eq!(env(p, "LOCAL_RANK").as_deref(), Some("0"));
        assert_eq!(env(p, "NODE_RANK"), env(p, "RANK"));
        assert_eq!(p.metadata.annotations["drover.dev/master-pod"], rank0);
    }
    // Schedule and run them all.
    for (p, n) in pods.iter().zip(["n1", "n2", "n3"]) {
        bind(&c.client, p, n).await;
    }
    eventually("PodGroup Scheduled", 10, || async {
        (pg_phase(&c, "train").await == "Scheduled").then_some(())
    })
    .await;
    for p in &pods {
        set_phase(&c.client, p, pod_phase::RUNNING).await;
    }
    eventually("PodGroup Running", 10, || async {
        (pg_phase(&c, "train").await == "Running").then_some(())
    })
    .await;
    // MASTER_ADDR is published once rank 0 is bound.
    eventually("master addr", 10, || async {
        let a = active_pods(&c.client, NS, "train").await;
        a.iter()
            .all(|p| {
                p.metadata
                    .annotations
                    .contains_key("drover.dev/master-addr")
            })
            .then_some(())
    })
    .await;
    // One member fails: the whole gang is replaced.
    let victim = pods
        .iter()
        .find(|p| env(p, "RANK").as_deref() == Some("1"))
        .expect("rank 1");
    set_phase(&c.client, victim, pod_phase::FAILED).await;
    eventually("old members deleted", 10, || async {
        let all = job_pods(&c.client, NS, "train").await;
        let old_running = all
            .iter()
            .filter(|p| {
                pods.iter().any(|o| o.metadata.uid == p.metadata.uid)
                    && !p.is_terminal()
                    && p.metadata.deletion_timestamp.is_none()
            })
            .count();
        (old_running == 0).then_some(())
    })
    .await;
    // Pending new members may not appear while old ones still run: the agent finishes deleting.
    finish_deleting(&c.client, NS).await;
    let fresh = eventually("a whole new gang", 10, || async {
        let a = active_pods(&c.client, NS, "train").await;
        (a.len() == 3
            && a.iter().all(|p| {
                p.metadata
                    .labels
                    .get("drover.dev/gang-attempt")
                    .map(String::as_str)
                    == Some("1")
            }))
        .then_some(a)
    })
    .await;
    assert!(
        fresh
            .iter()
            .all(|p| !pods.iter().any(|o| o.metadata.uid == p.metadata.uid))
    );
    let j = get_job(&c.client, NS, "train").await;
    assert_eq!(j.status.failed, 1, "one gang failure counts once");
    // Events are recorded after the changes they explain: wait for them.
    eventually("a GangRestarted event naming rank 1", 10, || async {
        let evs = events_for(&c.client, NS, "train").await;
        evs.iter()
            .any(|e| e.reason == "GangRestarted" && e.message.contains("rank 1"))
            .then_some(())
    })
    .await;
    // The new gang succeeds: the Job completes.
    for (p, n) in fresh.iter().zip(["n1", "n2", "n3"]) {
        bind(&c.client, p, n).await;
        set_phase(&c.client, p, pod_phase::SUCCEEDED).await;
    }
    eventually("complete", 10, || async {
        let j = get_job(&c.client, NS, "train").await;
        find_condition(&j.status.conditions, job_condition::COMPLETE)
            .filter(|c| c.is_true())
            .map(|_| ())
    })
    .await;
    eventually("PodGroup Succeeded", 10, || async {
        (pg_phase(&c, "train").await == "Succeeded").then_some(())
    })
    .await;
    m.shutdown().await;
}

async fn renew(client: &drover_client::Client, node: &str) {
    let api = client.namespaced::<Lease>("kube-node-lease");
    let now = chrono::Utc::now();
    match api.get_opt(node).await.expect("get lease") {
        Some(mut l) => {
            l.spec.renew_time = Some(now);
            let _ = api.update(&l).await;
        }
        None => {
            let mut l = Lease::new("kube-node-lease", node);
            l.spec.holder_identity = Some(node.into());
            l.spec.lease_duration_seconds = Some(2);
            l.spec.renew_time = Some(now);
            let _ = client.all().create(&l).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_node_fails_pods_and_the_gang_is_replaced() {
    let c = cluster().await;
    // Agents on n1 and n2 heartbeat; n3's stops once the gang runs.
    let alive = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let hb = {
        let (cl, alive) = (c.client.clone(), alive.clone());
        tokio::spawn(async move {
            loop {
                for n in ["n1", "n2"] {
                    renew(&cl, n).await;
                }
                if alive.load(std::sync::atomic::Ordering::SeqCst) {
                    renew(&cl, "n3").await;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let m = start_manager(&c.client, fast_config());
    create_job(&c.client, NS, &gang_job("ddp", 2)).await;
    let pods = eventually("gang pods", 10, || async {
        let a = active_pods(&c.client, NS, "ddp").await;
        (a.len() == 2).then_some(a)
    })
    .await;
    bind(&c.client, &pods[0], "n1").await;
    bind(&c.client, &pods[1], "n3").await;
    for p in &pods {
        set_phase(&c.client, p, pod_phase::RUNNING).await;
    }
    let t0 = std::time::Instant::now();
    alive.store(false, std::sync::atomic::Ordering::SeqCst);
    let node = eventually("n3 tainted", 10, || async {
        let n = c.client.all::<Node>().get("n3").await.expect("node");
        let unknown =
            find_condition(&n.status.conditions, "Ready").is_some_and(|c| c.status == "Unknown");
        (unknown
            && n.spec
                .taints
                .iter()
                .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute"))
        .then_some(n)
    })
    .await;
    let ready = find_condition(&node.status.conditions, "Ready").map(|c| c.status.clone());
    assert_eq!(ready.as_deref(), Some("Unknown"));
    // The pod on n3 fails with NodeLost, the gang restarts, and a new gang is created.
    finish_deleting(&c.client, NS).await;
    let fresh = eventually("replacement gang", 15, || async {
        finish_deleting(&c.client, NS).await;
        let a = active_pods(&c.client, NS, "ddp").await;
        (a.len() == 2
            && a.iter()
                .all(|p| !pods.iter().any(|o| o.metadata.uid == p.metadata.uid)))
        .then_some(a)
    })
    .await;
    eprintln!(
        "node agent stopped → replacement gang created in {:?} (grace 2 s, eviction 1 s)",
        t0.elapsed()
    );
    assert_eq!(fresh.len(), 2);
    eventually("a NodeUnreachable event", 10, || async {
        let evs = events_for(&c.client, "default", "n3").await;
        evs.iter()
            .any(|e| e.reason == "NodeUnreachable")
            .then_some(())
    })
    .await;
    let lost_pod = pods[1].metadata.name.clone();
    eventually("a NodeLost event", 10, || async {
        let lost = events_for(&c.client, NS, &lost_pod).await;
        lost.iter().any(|e| e.reason == "NodeLost").then_some(())
    })
    .await;
    let j = get_job(&c.client, NS, "ddp").await;
    assert_eq!(j.status.failed, 1);
    // The node comes back: the taint goes.
    alive.store(true, std::sync::atomic::Ordering::SeqCst);
    eventually("taint removed", 10, || async {
        let n = c.client.all::<Node>().get("n3").await.expect("node");
        (!n.spec
            .taints
            .iter()
            .any(|t| t.key == "node.kubernetes.io/unreachable"))
        .then_some(())
    })
    .await;
    hb.abort();
    m.shutdown().await;
}
