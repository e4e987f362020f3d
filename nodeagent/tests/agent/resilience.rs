//! The API server going away and coming back; the agent restarting.

use std::time::Duration;

use crate::common::{Cluster, Proxy, group_members, main_pid, sh_pod, terminated};

#[tokio::test]
async fn pods_keep_running_while_the_api_server_is_away() {
    let c = Cluster::start().await;
    // The agent reaches the API server through a proxy the test can cut: the API server's own
    // graceful shutdown waits for open watches to end, so it cannot play "gone" by itself.
    let mut proxy = Proxy::start(c.addr).await;
    let agent = c.start_agent_with(c.agent_config("n1"), c.client_via(proxy.url()));
    c.create_pod(sh_pod("steady", "n1", "sleep 1000", "Never"))
        .await;
    c.create_pod(sh_pod("short", "n1", "sleep 1; exit 4", "Never"))
        .await;
    let steady = c
        .wait_pod("steady", "Running", |p| p.status.phase == "Running")
        .await;
    c.wait_pod("short", "Running", |p| p.status.phase == "Running")
        .await;
    let pid = main_pid(&steady).expect("pid");

    proxy.cut();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(
        !group_members(pid).is_empty(),
        "the pod died with the API server"
    );
    let short = c.get_pod("short").await.expect("pod");
    assert_eq!(
        short.status.phase, "Running",
        "the agent could not have reported the exit yet"
    );
    proxy.resume().await;

    // The exit that happened meanwhile is reported; the other pod still runs, unchanged.
    let short = c
        .wait_pod("short", "Failed", |p| p.status.phase == "Failed")
        .await;
    assert_eq!(terminated(&short, "main").map(|t| t.exit_code), Some(4));
    let steady = c
        .wait_pod("steady", "Running", |p| p.status.phase == "Running")
        .await;
    assert_eq!(main_pid(&steady), Some(pid));
    c.cleanup("n1").await;
    agent.stop().await;
}

#[tokio::test]
async fn agent_restart_neither_loses_nor_duplicates_pods() {
    let c = Cluster::start().await;
    let agent = c.start_agent(c.agent_config("n1"));
    c.create_pod(sh_pod("keep", "n1", "sleep 1000", "Always"))
        .await;
    c.create_pod(sh_pod("ends", "n1", "sleep 0.5", "Never"))
        .await;
    let keep = c
        .wait_pod("keep", "Running", |p| p.status.phase == "Running")
        .await;
    c.wait_pod("ends", "Running", |p| p.status.phase == "Running")
        .await;
    let pid = main_pid(&keep).expect("pid");
    let members = group_members(pid).len();
    assert!(members >= 1);

    agent.stop().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        group_members(pid).len(),
        members,
        "the pod should outlive its agent"
    );

    let agent = c.start_agent(c.agent_config("n1"));
    // The pod that ended while nobody watched is reported honestly.
    let ends = c
        .wait_pod("ends", "Failed", |p| p.status.phase == "Failed")
        .await;
    assert_eq!(
        terminated(&ends, "main").map(|t| t.reason),
        Some("ContainerStatusUnknown".into())
    );
    // The running one was adopted, not restarted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let keep = c
        .wait_pod("keep", "Running", |p| p.status.phase == "Running")
        .await;
    assert_eq!(main_pid(&keep), Some(pid));
    assert_eq!(keep.status.container_statuses[0].restart_count, 0);
    assert_eq!(group_members(pid).len(), members, "no duplicate processes");

    // And it can still be stopped.
    c.client
        .namespaced::<drover_api::core::Pod>("default")
        .delete("keep", &Default::default())
        .await
        .expect("delete");
    c.wait_gone("keep").await;
    assert!(group_members(pid).is_empty());
    c.cleanup("n1").await;
    agent.stop().await;
}
