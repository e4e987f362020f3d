//! The device health loop end to end, in one process with the real components: an API server,
//! the scheduler, the controllers and two full node agents (real processes, simulated H100s the
//! test raises XIDs on). Each class of XID does what it calls for:
//!
//! - an application's XID (13) leaves the GPU in service and its pod running;
//! - a reset-class XID (48) marks the GPU unhealthy, fails only the pod on it (naming the device
//!   and the XID), restarts that pod's gang, and the agent resets the GPU once the pod is gone;
//! - a drain-class XID (79) does the same but the GPU stays out and its node is tainted
//!   `drover.dev/device-needs-drain:NoSchedule`, so the gang restarts on the other node; when
//!   the node is serviced (the device recovers), the taint goes.
//!
//! A pod outside the gang, on another GPU, runs through all of it untouched.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use drover_api::batch::Job;
use drover_api::core::{Node, Pod, pod_phase};
use drover_api::device::{Device, DeviceRecovery};
use drover_apiserver::ServerConfig;
use drover_client::{Client, ClientConfig, ListParams};
use drover_controllers::ControllersConfig;
use drover_device_plugins::DeviceManager;
use drover_device_plugins::simulated::SimulatedPlugin;
use drover_device_plugins::xid::XidClass;
use drover_nodeagent::AgentConfig;
use tokio::sync::watch;

const NS: &str = "default";
const WAIT: Duration = Duration::from_secs(30);

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const GANG: &str = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: ddp}
spec:
  parallelism: 2
  completions: 2
  backoffLimit: 6
  gang: {}
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox
        command: ["sleep", "1000"]
        resources:
          limits: {nvidia.com/gpu: 2}
"#;

const BYSTANDER: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: bystander, namespace: default}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    command: ["sleep", "1000"]
    resources:
      limits: {nvidia.com/gpu: 1}
"#;

struct Stack {
    client: Client,
    devices: Vec<(String, Arc<DeviceManager>)>,
    _dir: tempfile::TempDir,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Stack {
    async fn start() -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = drover_apiserver::start(
            ServerConfig::new(dir.path().join("data")).listen("127.0.0.1:0".parse().expect("addr")),
        )
        .await
        .expect("apiserver");
        let client = Client::new(&ClientConfig {
            server: server.url(),
            token: server.admin_token.clone(),
        })
        .expect("client");
        let (stop, rx) = watch::channel(false);
        let stopped = move || {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let mut tasks = Vec::new();
        let (c, s) = (client.clone(), stopped());
        tasks.push(tokio::spawn(async move {
            // Keeps the server up as long as the stack.
            let _server = server;
            s.await;
        }));
        let controllers = ControllersConfig {
            node_monitor_period: Duration::from_millis(200),
            // No node is lost in this test: its agents keep renewing.
            node_monitor_grace_period: Duration::from_secs(600),
            ..Default::default()
        };
        let s = stopped();
        tasks.push(tokio::spawn(async move {
            let _ = drover_controllers::run(controllers, c, s).await;
        }));
        let (c, s) = (client.clone(), stopped());
        tasks.push(tokio::spawn(async move {
            let _ = drover_scheduler::run(Default::default(), c, s).await;
        }));
        let mut devices = Vec::new();
        for node in ["n1", "n2"] {
            let manager = Arc::new(
                DeviceManager::from_spec_for_node("simulated:h100-8", node).expect("profile"),
            );
            let cfg = AgentConfig::new(node, dir.path().join(format!("agent-{node}")))
                .with_device_manager(manager.clone())
                .with_log_port(0)
                .with_node_ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
                .with_lease_interval(Duration::from_millis(500));
            let (c, s) = (client.clone(), stopped());
            tasks.push(tokio::spawn(async move {
                drover_nodeagent::run(cfg, c, s).await.expect("agent runs");
            }));
            devices.push((node.to_string(), manager));
        }
        Stack {
            client,
            devices,
            _dir: dir,
            stop,
            tasks,
        }
    }

    fn sim(&self, node: &str) -> &Arc<SimulatedPlugin> {
        self.devices
            .iter()
            .find(|(n, _)| n == node)
            .and_then(|(_, m)| m.simulated_plugin())
            .expect("simulated plugin")
    }

    async fn pods(&self) -> Vec<Pod> {
        self.client
            .namespaced::<Pod>(NS)
            .list(&ListParams::default())
            .await
            .expect("pods")
            .items
    }

    async fn pod(&self, name: &str) -> Option<Pod> {
        self.client
            .namespaced::<Pod>(NS)
            .get_opt(name)
            .await
            .expect("pod")
    }

    async fn device(&self, node: &str, id: &str) -> Device {
        let n = self.client.all::<Node>().get(node).await.expect("node");
        n.status
            .devices
            .and_then(|inv| inv.device(id).cloned())
            .expect("device in the inventory")
    }

    /// The gang's pods once both run (phase Running, reported by their agents), none of them
    /// in `not`.
    async fn gang_running(&self, not: &BTreeSet<String>) -> Vec<Pod> {
        eventually("the gang running", || async {
            let gang: Vec<Pod> = self
                .pods()
                .await
                .into_iter()
                .filter(|p| p.metadata.name.starts_with("ddp-"))
                .filter(|p| p.metadata.deletion_timestamp.is_none() && !p.is_terminal())
                .collect();
            (gang.len() == 2
                && gang.iter().all(|p| {
                    p.status.phase == pod_phase::RUNNING && !not.contains(&p.metadata.uid)
                }))
            .then_some(gang)
        })
        .await
    }

    async fn shutdown(self) {
        self.stop.send_replace(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

fn first_device(p: &Pod) -> String {
    p.spec
        .device_assignments
        .iter()
        .flat_map(|a| a.ids.iter())
        .next()
        .cloned()
        .expect("the pod was given devices")
}

/// Waits for `pod` (by uid) to be failed for its device: reason DeviceFailed, naming the device
/// and the XID. The pod may be deleted right after; its event stays.
async fn failed_for_device(s: &Stack, pod: &Pod, device: &str, xid: &str) {
    let uid = pod.metadata.uid.clone();
    eventually(
        "a DeviceFailed event naming the device and the XID",
        || async {
            let events = s
                .client
                .namespaced::<drover_api::core::Event>(NS)
                .list(&ListParams::default())
                .await
                .expect("events");
            events
                .items
                .into_iter()
                .find(|e| e.involved_object.uid == uid && e.reason == "DeviceFailed")
                .inspect(|e| {
                    assert!(
                        e.message.contains(device) && e.message.contains(xid),
                        "{}",
                        e.message
                    )
                })
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_class_of_xid_does_what_it_calls_for() {
    let s = Stack::start().await;
    eventually("both nodes registered", || async {
        let nodes = s
            .client
            .all::<Node>()
            .list(&ListParams::default())
            .await
            .ok()?;
        (nodes.items.len() == 2).then_some(())
    })
    .await;
    let bystander: Pod = yaml_serde::from_str(BYSTANDER).expect("pod yaml");
    s.client.all().create(&bystander).await.expect("bystander");
    let bystander = eventually("the bystander running", || async {
        s.pod("bystander")
            .await
            .filter(|p| p.status.phase == pod_phase::RUNNING)
    })
    .await;
    let job: Job = yaml_serde::from_str(GANG).expect("job yaml");
    s.client
        .namespaced::<Job>(NS)
        .create(&job)
        .await
        .expect("job");
    let mut seen = BTreeSet::new();
    let gang = s.gang_running(&seen).await;
    seen.extend(gang.iter().map(|p| p.metadata.uid.clone()));

    // An application's XID on the bystander's GPU: nothing happens to the GPU or the pod.
    let by_node = bystander.spec.node_name.clone();
    let by_device = first_device(&bystander);
    assert_eq!(
        s.sim(&by_node).inject_xid(&by_device, 13).expect("xid"),
        XidClass::Application
    );

    // A reset-class XID on a gang member's GPU.
    let victim = &gang[0];
    let (node, device) = (victim.spec.node_name.clone(), first_device(victim));
    assert_eq!(
        s.sim(&node).inject_xid(&device, 48).expect("xid"),
        XidClass::Reset
    );
    let d = eventually("the GPU unhealthy in the inventory", || async {
        let d = s.device(&node, &device).await;
        (!d.is_healthy()).then_some(d)
    })
    .await;
    assert_eq!(d.recovery, Some(DeviceRecovery::Reset), "{d:?}");
    assert!(
        d.health_reason
            .as_deref()
            .is_some_and(|r| r.contains("XID 48")),
        "{d:?}"
    );
    failed_for_device(&s, victim, &device, "XID 48").await;
    let gang = s.gang_running(&seen).await;
    seen.extend(gang.iter().map(|p| p.metadata.uid.clone()));
    eventually("the agent resets the GPU once its pod is gone", || async {
        s.device(&node, &device).await.is_healthy().then_some(())
    })
    .await;

    // A drain-class XID on a gang member's GPU: the GPU stays out, its node is tainted, and the
    // gang restarts on the other node.
    let victim = &gang[0];
    let (node, device) = (victim.spec.node_name.clone(), first_device(victim));
    assert_eq!(
        s.sim(&node).inject_xid(&device, 79).expect("xid"),
        XidClass::Drain
    );
    failed_for_device(&s, victim, &device, "XID 79").await;
    eventually("the node tainted device-needs-drain:NoSchedule", || async {
        let n = s.client.all::<Node>().get(&node).await.ok()?;
        n.spec
            .taints
            .iter()
            .any(|t| t.key == "drover.dev/device-needs-drain" && t.effect == "NoSchedule")
            .then_some(())
    })
    .await;
    let gang = s.gang_running(&seen).await;
    assert!(
        gang.iter().all(|p| p.spec.node_name != node),
        "the gang came back on the node that needs draining: {:?}",
        gang.iter().map(|p| &p.spec.node_name).collect::<Vec<_>>()
    );
    let d = s.device(&node, &device).await;
    assert!(
        !d.is_healthy(),
        "no reset brings back a drain-class fault: {d:?}"
    );
    assert_eq!(d.recovery, Some(DeviceRecovery::Drain));

    // The node is serviced: the device is back and the taint goes.
    s.sim(&node).recover_device(&device).expect("recover");
    eventually("the drain taint removed", || async {
        let n = s.client.all::<Node>().get(&node).await.ok()?;
        (!n.spec
            .taints
            .iter()
            .any(|t| t.key == "drover.dev/device-needs-drain"))
        .then_some(())
    })
    .await;

    // The bystander ran through it all, on a GPU still in service.
    let now = s.pod("bystander").await.expect("bystander still there");
    assert_eq!(now.metadata.uid, bystander.metadata.uid);
    assert_eq!(now.status.phase, pod_phase::RUNNING, "{:?}", now.status);
    assert!(s.device(&by_node, &by_device).await.is_healthy());
    for p in s.pods().await {
        let _ = s
            .client
            .namespaced::<Pod>(NS)
            .delete(
                &p.metadata.name,
                &drover_client::DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
            )
            .await;
    }
    s.shutdown().await;
}
