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
    // Two end while the agent is down, two after it came back; each code must be the real one.
    for (name, script) in [
        ("ends", "sleep 0.5"),
        ("ends-3", "sleep 0.5; exit 3"),
        ("later", "sleep 3"),
        ("later-3", "sleep 3; exit 3"),
    ] {
        c.create_pod(sh_pod(name, "n1", script, "Never")).await;
    }
    let keep = c
        .wait_pod("keep", "Running", |p| p.status.phase == "Running")
        .await;
    for name in ["ends", "ends-3", "later", "later-3"] {
        c.wait_pod(name, "Running", |p| p.status.phase == "Running")
            .await;
    }
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
    // Pods that ended while nobody watched, and adopted ones that end later, report the exit
    // code their supervisor recorded: not "unknown".
    for (name, phase, code, reason) in [
        ("ends", "Succeeded", 0, "Completed"),
        ("ends-3", "Failed", 3, "Error"),
        ("later", "Succeeded", 0, "Completed"),
        ("later-3", "Failed", 3, "Error"),
    ] {
        let p = c.wait_pod(name, phase, |p| p.status.phase == phase).await;
        let t = terminated(&p, "main").expect("terminated state");
        assert_eq!((t.exit_code, t.reason.as_str()), (code, reason), "{name}");
    }
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
