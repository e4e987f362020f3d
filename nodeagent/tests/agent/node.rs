//! Registration, leases, device health, hollow nodes.

use std::time::Duration;

use drover_api::coordination::Lease;
use drover_api::core::{Container, Node, Pod, PodSpec};
use drover_api::device::DeviceHealth;
use drover_nodeagent::{HollowCluster, HollowOptions};

use crate::common::{Cluster, WAIT, terminated};

async fn wait_node(c: &Cluster, name: &str, what: &str, pred: impl Fn(&Node) -> bool) -> Node {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(Some(n)) = c.client.all::<Node>().get_opt(name).await
            && pred(&n)
        {
            return n;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {name}: timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn registers_node_renews_lease_and_reports_device_failure() {
    let c = Cluster::start().await;
    let devices = Cluster::simulated_devices("n1");
    let agent = c.start_agent(c.agent_config("n1").with_device_manager(devices.clone()));
    let node = wait_node(&c, "n1", "registration", |n| n.is_ready()).await;

    let l = &node.metadata.labels;
    assert_eq!(l["kubernetes.io/hostname"], "n1");
    assert_eq!(l["kubernetes.io/os"], "linux");
    assert!(l.contains_key("kubernetes.io/arch"));
    assert_eq!(l["nvidia.com/gpu.count"], "8");
    assert_eq!(l["nvidia.com/gpu.product"], "NVIDIA-H100-80GB-HBM3");
    let st = &node.status;
    assert_eq!(st.capacity["nvidia.com/gpu"].value(), 8);
    assert_eq!(st.capacity["cpu"].value(), 192);
    assert_eq!(st.capacity["pods"].value(), 110);
    assert!(st.capacity.contains_key("memory"));
    assert_eq!(st.devices.as_ref().map(|d| d.devices.len()), Some(8));
    assert!(st.runtimes.iter().any(|r| r == "process"));
    assert!(
        st.addresses
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == "127.0.0.1")
    );
    let port = st
        .daemon_endpoints
        .as_ref()
        .and_then(|d| d.kubelet_endpoint.as_ref())
        .map(|e| e.port);
    assert!(port.is_some_and(|p| p > 0), "kubelet port {port:?}");
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "CgroupsUnavailable")
    );

    // The lease exists and its renewTime moves.
    let leases = c.client.namespaced::<Lease>("kube-node-lease");
    let deadline = tokio::time::Instant::now() + WAIT;
    let first = loop {
        if let Ok(Some(l)) = leases.get_opt("n1").await {
            break l;
        }
        assert!(tokio::time::Instant::now() < deadline, "no lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(first.spec.holder_identity.as_deref(), Some("n1"));
    assert_eq!(
        first.spec.lease_duration_seconds,
        Some(drover_nodeagent::lease::DEFAULT_LEASE_DURATION_SECONDS)
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let later = leases.get("n1").await.expect("lease");
    assert!(
        later.spec.renew_time > first.spec.renew_time,
        "lease not renewed"
    );

    // A device fails: the node shows it unhealthy and offers one GPU fewer.
    let sim = devices.simulated_plugin().expect("simulated");
    let bad = sim.device_id(2);
    sim.fail_device(&bad, "XID 79: GPU has fallen off the bus")
        .expect("fail");
    let node = wait_node(&c, "n1", "unhealthy device", |n| {
        n.status
            .devices
            .as_ref()
            .and_then(|d| d.device(&bad))
            .is_some_and(|d| d.health == DeviceHealth::Unhealthy)
    })
    .await;
    assert_eq!(node.status.allocatable["nvidia.com/gpu"].value(), 7);
    sim.recover_device(&bad).expect("recover");
    wait_node(&c, "n1", "recovered device", |n| {
        n.status.allocatable["nvidia.com/gpu"].value() == 8
    })
    .await;
    agent.stop().await;
}

#[tokio::test]
async fn hollow_nodes_share_one_informer_and_run_simulated_pods() {
    let c = Cluster::start().await;
    let options = HollowOptions {
        lease_interval: Duration::from_millis(300),
        ..Default::default()
    };
    let hollow = HollowCluster::start(c.client.clone(), 5, "a100-8", "hollow", options)
        .await
        .expect("hollow nodes");
    assert_eq!(hollow.node_names().len(), 5);
    let nodes = c
        .client
        .all::<Node>()
        .list(&Default::default())
        .await
        .expect("nodes");
    assert_eq!(nodes.items.len(), 5);
    assert!(
        nodes
            .items
            .iter()
            .all(|n| n.status.runtimes == vec!["simulated".to_string()])
    );

    let mk = |name: &str, node: &str, duration: &str, code: &str| {
        let mut p = Pod::new(
            "default",
            name,
            PodSpec {
                containers: vec![Container {
                    name: "main".into(),
                    image: "trainer:latest".into(),
                    ..Default::default()
                }],
                restart_policy: "Never".into(),
                node_name: node.into(),
                ..Default::default()
            },
        );
        p.metadata
            .annotations
            .insert("drover.dev/sim-duration".into(), duration.into());
        p.metadata
            .annotations
            .insert("drover.dev/sim-exit-code".into(), code.into());
        p
    };
    c.create_pod(mk("ok", "hollow-1", "0.2", "0")).await;
    c.create_pod(mk("bad", "hollow-3", "0.1", "2")).await;
    let ok = c
        .wait_pod("ok", "Succeeded", |p| p.status.phase == "Succeeded")
        .await;
    assert_eq!(
        terminated(&ok, "main").map(|t| t.reason),
        Some("Completed".into())
    );
    let bad = c
        .wait_pod("bad", "Failed", |p| p.status.phase == "Failed")
        .await;
    assert_eq!(terminated(&bad, "main").map(|t| t.exit_code), Some(2));

    // The agents watch bound pods only; deleting a running one reaches its agent, which stops
    // it and lets the API server remove it.
    c.create_pod(mk("long", "hollow-2", "600", "0")).await;
    c.wait_pod("long", "Running", |p| p.status.phase == "Running")
        .await;
    let pods = c.client.namespaced::<Pod>("default");
    pods.delete("long", &Default::default())
        .await
        .expect("delete");
    let deadline = tokio::time::Instant::now() + WAIT;
    while pods.get_opt("long").await.expect("get").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hollow agent did not stop the deleted pod"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Leases of every node are renewed by the one lease task.
    let leases = c.client.namespaced::<Lease>("kube-node-lease");
    let deadline = tokio::time::Instant::now() + WAIT;
    while leases
        .list(&Default::default())
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
        < 5
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "hollow leases missing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let dev = "GPU-sim-hollow-0-1";
    hollow
        .fail_device("hollow-0", dev, "test")
        .await
        .expect("fail device");
    let n = c.client.all::<Node>().get("hollow-0").await.expect("node");
    assert_eq!(
        n.status
            .devices
            .as_ref()
            .and_then(|d| d.device(dev))
            .map(|d| d.health),
        Some(DeviceHealth::Unhealthy)
    );
    hollow.shutdown().await;
}
