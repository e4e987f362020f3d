//! The scheduler against the real API server, in process: nodes with simulated GPU inventories
//! are created by hand, and the tests play the node agent (finishing pods, completing
//! deletions) where a scenario needs it.

use std::collections::BTreeMap;
use std::time::Duration;

use drover_api::core::{Event, Namespace, Pod};
use drover_api::scheduling::{GangTopology, PodGroup, PriorityClass};
use drover_apiserver::{RunningServer, ServerConfig};
use drover_client::{Client, ClientConfig, DeleteParams, ListParams};
use drover_scheduler::queue::QueueConfig;
use drover_scheduler::testing::{GpuProfile, node, pod};
use drover_scheduler::{SchedulerConfig, run};
use tokio::sync::oneshot;

const NS: &str = "t";

struct Env {
    _server: RunningServer,
    client: Client,
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

async fn start() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = drover_apiserver::start(
        ServerConfig::new(dir.path()).listen("127.0.0.1:0".parse().expect("addr")),
    )
    .await
    .expect("apiserver");
    let client = Client::new(&ClientConfig {
        server: server.url(),
        token: server.admin_token.clone(),
    })
    .expect("client");
    client
        .all::<Namespace>()
        .create(&Namespace::new(NS))
        .await
        .expect("namespace");
    let (stop, rx) = oneshot::channel::<()>();
    let config = SchedulerConfig::default().with_queue(QueueConfig {
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        unschedulable_flush: Duration::from_secs(1),
    });
    let c = client.clone();
    tokio::spawn(async move {
        let _ = run(config, c, async {
            let _ = rx.await;
        })
        .await;
    });
    Env {
        _server: server,
        client,
        _dir: dir,
        _stop: stop,
    }
}

async fn pods(c: &Client) -> BTreeMap<String, Pod> {
    c.namespaced::<Pod>(NS)
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|p| (p.metadata.name.clone(), p))
        .collect()
}

/// Polls until `f` holds on the pods (or fails after 15 s).
async fn wait_for(
    c: &Client,
    what: &str,
    f: impl Fn(&BTreeMap<String, Pod>) -> bool,
) -> BTreeMap<String, Pod> {
    for _ in 0..300 {
        let p = pods(c).await;
        if f(&p) {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "timed out waiting for {what}: {:#?}",
        summary(&pods(c).await)
    );
}

fn summary(p: &BTreeMap<String, Pod>) -> Vec<(String, String, String)> {
    p.values()
        .map(|p| {
            let why = p
                .status
                .conditions
                .first()
                .map(|c| c.message.clone())
                .unwrap_or_default();
            (p.metadata.name.clone(), p.spec.node_name.clone(), why)
        })
        .collect()
}

fn bound<'a>(p: &'a BTreeMap<String, Pod>, prefix: &str) -> Vec<&'a Pod> {
    p.values()
        .filter(|p| p.metadata.name.starts_with(prefix) && p.is_bound())
        .collect()
}

async fn gang(c: &Client, name: &str, size: usize, gpus: u32, class: &str, topology: Option<&str>) {
    let mut g = PodGroup::new(NS, name, size as i32);
    g.spec.topology = topology.map(|k| GangTopology {
        key: k.into(),
        mode: "Required".into(),
    });
    c.namespaced::<PodGroup>(NS)
        .create(&g)
        .await
        .expect("podgroup");
    for i in 0..size {
        let mut p = pod(NS, &format!("{name}-{i}"))
            .gpus(gpus)
            .gang(name)
            .build();
        p.spec.priority_class_name = class.into();
        c.namespaced::<Pod>(NS).create(&p).await.expect("pod");
    }
}

async fn finish(c: &Client, p: &Pod) {
    c.namespaced::<Pod>(NS)
        .patch_status(
            &p.metadata.name,
            &serde_json::json!({"status": {"phase": "Succeeded"}}),
        )
        .await
        .expect("finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_gangs_finish_one_after_another() {
    let env = start().await;
    let c = &env.client;
    for i in 0..2 {
        c.all()
            .create(&node(&format!("n{i}")).gpus(GpuProfile::L4x4).build())
            .await
            .expect("node");
    }
    // Each gang needs all 8 GPUs; together they need 16.
    gang(c, "a", 4, 2, "", None).await;
    gang(c, "b", 4, 2, "", None).await;
    let p = wait_for(c, "one whole gang", |p| {
        bound(p, "a-").len() + bound(p, "b-").len() == 4
    })
    .await;
    let (first, second) = if bound(&p, "a-").len() == 4 {
        ("a-", "b-")
    } else {
        ("b-", "a-")
    };
    assert_eq!(bound(&p, first).len(), 4, "{:#?}", summary(&p));
    assert!(
        bound(&p, second).is_empty(),
        "no partial gang: {:#?}",
        summary(&p)
    );
    // Devices are never given twice.
    let mut ids: Vec<String> = bound(&p, first)
        .iter()
        .flat_map(|p| p.spec.device_assignments.iter().flat_map(|d| d.ids.clone()))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 8);
    for p in bound(&p, first) {
        finish(c, p).await;
    }
    wait_for(c, "the second gang", |p| bound(p, second).len() == 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_gang_lands_in_one_domain() {
    let env = start().await;
    let c = &env.client;
    for (n, rack) in [("r1a", "r1"), ("r1b", "r1"), ("r2a", "r2"), ("r2b", "r2")] {
        c.all()
            .create(&node(n).label("rack", rack).gpus(GpuProfile::H100x8).build())
            .await
            .expect("node");
    }
    // A small pod on r1 leaves that rack one GPU short of two whole nodes.
    let small = pod(NS, "small")
        .gpus(1)
        .node_selector("kubernetes.io/hostname", "none")
        .build();
    let mut small = small;
    small.spec.node_selector.clear();
    small.spec.affinity = pod(NS, "x")
        .node_affinity_in("rack", &["r1"])
        .build()
        .spec
        .affinity;
    c.namespaced::<Pod>(NS).create(&small).await.expect("pod");
    wait_for(c, "small pod", |p| bound(p, "small").len() == 1).await;
    gang(c, "g", 2, 8, "", Some("rack")).await;
    let p = wait_for(c, "gang", |p| bound(p, "g-").len() == 2).await;
    for m in bound(&p, "g-") {
        assert!(m.spec.node_name.starts_with("r2"), "{:#?}", summary(&p));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_gang_preempts_a_whole_gang_and_nothing_else() {
    let env = start().await;
    let c = &env.client;
    for (name, value) in [("low", 0), ("high", 1000)] {
        c.all()
            .create(&PriorityClass::new(name, value))
            .await
            .expect("class");
    }
    for i in 0..3 {
        c.all()
            .create(&node(&format!("n{i}")).gpus(GpuProfile::H100x8).build())
            .await
            .expect("node");
    }
    // A long-running single pod (many GPU-hours) and a young low-priority gang fill the cluster.
    let mut old = pod(NS, "old").gpus(8).build();
    old.spec.priority_class_name = "low".into();
    c.namespaced::<Pod>(NS).create(&old).await.expect("pod");
    gang(c, "low", 2, 8, "low", None).await;
    let p = wait_for(c, "cluster full", |p| bound(p, "").len() == 3).await;
    let ten_hours_ago = chrono::Utc::now() - chrono::Duration::hours(10);
    for (name, since) in [
        ("old", ten_hours_ago),
        ("low-0", chrono::Utc::now()),
        ("low-1", chrono::Utc::now()),
    ] {
        let _ = &p;
        c.namespaced::<Pod>(NS)
            .patch_status(
                name,
                &serde_json::json!({"status": {"phase": "Running", "startTime": since}}),
            )
            .await
            .expect("running");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    gang(c, "high", 1, 8, "high", None).await;
    // Play the agent: complete deletions of pods being terminated.
    let mut done = false;
    for _ in 0..300 {
        let p = pods(c).await;
        for v in p
            .values()
            .filter(|p| p.metadata.deletion_timestamp.is_some())
        {
            assert!(
                v.metadata.name.starts_with("low-"),
                "only the low gang is preempted: {}",
                v.metadata.name
            );
            assert!(
                v.status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "DisruptionTarget")
            );
            let _ = c
                .namespaced::<Pod>(NS)
                .delete(
                    &v.metadata.name,
                    &DeleteParams {
                        grace_period_seconds: Some(0),
                        ..Default::default()
                    },
                )
                .await;
        }
        if bound(&p, "high-").len() == 1 {
            assert!(p.contains_key("old"), "the expensive pod stays");
            for m in ["low-0", "low-1"] {
                let going = p
                    .get(m)
                    .is_none_or(|v| v.metadata.deletion_timestamp.is_some());
                assert!(going, "the whole gang goes: {:#?}", summary(&p));
            }
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(done, "{:#?}", summary(&pods(c).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_pending_is_summarised_by_reason() {
    let env = start().await;
    let c = &env.client;
    c.all()
        .create(&node("a").gpus(GpuProfile::L4x4).build())
        .await
        .expect("node");
    c.all()
        .create(&node("b").gpus(GpuProfile::L4x4).build())
        .await
        .expect("node");
    c.all()
        .create(
            &node("c")
                .gpus(GpuProfile::H100x8)
                .taint("gpu-maintenance", "NoSchedule")
                .build(),
        )
        .await
        .expect("node");
    c.namespaced::<Pod>(NS)
        .create(&pod(NS, "big").gpus(8).build())
        .await
        .expect("pod");
    let want = "0/3 nodes available: 2 insufficient nvidia.com/gpu, 1 had untolerated taint {gpu-maintenance}";
    wait_for(c, "the reason", |p| {
        p.get("big").is_some_and(|p| {
            p.status.conditions.iter().any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason == "Unschedulable"
                    && c.message == want
            })
        })
    })
    .await;
    for _ in 0..100 {
        let evs = c
            .namespaced::<Event>(NS)
            .list(&ListParams::default())
            .await
            .expect("events");
        if evs
            .items
            .iter()
            .any(|e| e.reason == "FailedScheduling" && e.message == want && e.type_ == "Warning")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no FailedScheduling event");
}
