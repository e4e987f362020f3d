//! Test harness: an in-process API server, a controller manager, and a simulated scheduler and
//! node agent (bindings and status patches made by the test).
//!
//! Integration tests run on real time with second-scale settings: the embedded store commits on
//! its own thread, so under tokio's paused clock every write would let virtual time jump ahead.
//! The pure parts (queue, expectations, rate limits) are tested on the paused clock.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use drover_api::Resource;
use drover_api::batch::Job;
use drover_api::core::{Binding, Pod, pod_phase};
use drover_apiserver::{RunningServer, ServerConfig};
use drover_client::{Api, Client, ClientConfig, ListParams};
use drover_controllers::ControllersConfig;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Cluster {
    pub server: RunningServer,
    pub client: Client,
    _dir: tempfile::TempDir,
}

pub async fn cluster() -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = drover_apiserver::start(
        ServerConfig::new(dir.path()).listen("127.0.0.1:0".parse().expect("addr")),
    )
    .await
    .expect("start apiserver");
    let client = Client::new(&ClientConfig {
        server: server.url(),
        token: server.admin_token.clone(),
    })
    .expect("client");
    for n in ["n1", "n2", "n3"] {
        add_node(&client, n).await;
    }
    Cluster {
        server,
        client,
        _dir: dir,
    }
}

pub async fn add_node(client: &Client, name: &str) {
    let mut node = drover_api::core::Node::new(name);
    node.status.addresses = vec![drover_api::core::NodeAddress {
        type_: "InternalIP".into(),
        address: format!(
            "10.0.0.{}",
            name.len() + name.bytes().last().unwrap_or(0) as usize % 200
        ),
    }];
    client.all().create(&node).await.expect("create node");
}

/// Settings for tests that do not exercise node health (nodes never heartbeat there).
pub fn job_config() -> ControllersConfig {
    ControllersConfig {
        node_monitor_grace_period: Duration::from_secs(600),
        ..fast_config()
    }
}

/// Fast settings for tests.
pub fn fast_config() -> ControllersConfig {
    ControllersConfig {
        node_monitor_grace_period: Duration::from_secs(2),
        node_monitor_period: Duration::from_millis(200),
        pod_eviction_timeout: Duration::from_secs(1),
        node_eviction_rate: 10.0,
        gc_period: Duration::from_millis(500),
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(300),
        ..Default::default()
    }
}

pub struct Manager {
    pub stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<()>,
}

impl Manager {
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }

    /// Stops the manager abruptly, as a crash would (no lease release).
    pub fn kill(self) {
        self.task.abort();
    }
}

pub fn start_manager(client: &Client, config: ControllersConfig) -> Manager {
    let (tx, rx) = oneshot::channel::<()>();
    let client = client.clone();
    let task = tokio::spawn(async move {
        let _ = drover_controllers::run(config, client, async {
            let _ = rx.await;
        })
        .await;
    });
    Manager {
        stop: Some(tx),
        task,
    }
}

/// Polls `f` until it returns `Some`, or panics after `secs`.
pub async fn eventually<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn job_from_yaml(text: &str) -> Job {
    yaml_serde::from_str(text).expect("job yaml")
}

pub async fn create_job(client: &Client, ns: &str, job: &Job) -> Job {
    let mut j = job.clone();
    j.metadata.namespace = ns.to_string();
    client.all().create(&j).await.expect("create job")
}

pub async fn get_job(client: &Client, ns: &str, name: &str) -> Job {
    client
        .namespaced::<Job>(ns)
        .get(name)
        .await
        .expect("get job")
}

pub async fn job_pods(client: &Client, ns: &str, job: &str) -> Vec<Pod> {
    let mut pods = client
        .namespaced::<Pod>(ns)
        .list(&ListParams::default().labels(format!("batch.kubernetes.io/job-name={job}")))
        .await
        .expect("list pods")
        .items;
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    pods
}

/// Pods of the job that are neither finished nor being deleted.
pub async fn active_pods(client: &Client, ns: &str, job: &str) -> Vec<Pod> {
    job_pods(client, ns, job)
        .await
        .into_iter()
        .filter(|p| !p.is_terminal() && p.metadata.deletion_timestamp.is_none())
        .collect()
}

pub async fn bind(client: &Client, pod: &Pod, node: &str) {
    let api: Api<Pod> = client.namespaced(&pod.metadata.namespace);
    let b = Binding::new(&pod.metadata.namespace, &pod.metadata.name, node, vec![]);
    for _ in 0..20 {
        match api
            .create_subresource(&pod.metadata.name, "binding", &b)
            .await
        {
            Ok(_) => return,
            Err(e) if e.is_conflict() => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("bind: {e}"),
        }
    }
    panic!("bind: kept conflicting");
}

pub async fn set_phase(client: &Client, pod: &Pod, phase: &str) {
    let api: Api<Pod> = client.namespaced(&pod.metadata.namespace);
    let mut status = serde_json::json!({"status": {"phase": phase}});
    if phase == pod_phase::RUNNING {
        status["status"]["conditions"] = serde_json::json!([{"type": "Ready", "status": "True"}]);
    }
    api.patch_status(&pod.metadata.name, &status)
        .await
        .expect("patch status");
}

/// What a node agent does with pods marked for deletion: stop them and delete them for good.
pub async fn finish_deleting(client: &Client, ns: &str) {
    let api: Api<Pod> = client.namespaced(ns);
    let pods = api.list(&ListParams::default()).await.expect("list").items;
    for p in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
    {
        let params = drover_client::DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        let _ = api.delete(&p.metadata.name, &params).await;
    }
}

pub fn kind_of<T: Resource>() -> &'static str {
    T::KIND
}

pub async fn events_for(client: &Client, ns: &str, name: &str) -> Vec<drover_api::core::Event> {
    client
        .namespaced::<drover_api::core::Event>(ns)
        .list(&ListParams::default().fields(format!("involvedObject.name={name}")))
        .await
        .expect("events")
        .items
}
