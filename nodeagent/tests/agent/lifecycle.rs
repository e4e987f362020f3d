//! Pods as real processes: exit codes, signals, environment and devices, init containers,
//! restart policies, deletion with a grace period, logs through the API server.

use std::time::{Duration, Instant};

use drover_api::core::{Container, ResourceRequirements};
use drover_api::quantity::Quantity;
use drover_client::DeleteParams;
use futures::StreamExt;

use crate::common::{Cluster, group_members, main_pid, sh_pod, terminated};

#[tokio::test]
async fn exit_codes_signals_env_and_init_containers() {
    let c = Cluster::start().await;
    let agent = c.start_agent(c.agent_config("n1"));

    c.create_pod(sh_pod("fails", "n1", "echo hi; exit 3", "Never"))
        .await;
    c.create_pod(sh_pod("killed", "n1", "kill -9 $$", "Never"))
        .await;
    let mut env = sh_pod(
        "env",
        "n1",
        r#"test "$POD_NAME" = env && test "$POD_NAMESPACE" = default && test "$NODE_NAME" = n1 && test "$HOSTNAME" = env && test -n "$CUDA_VISIBLE_DEVICES" && test -z "$HOME_FROM_AGENT" && test "$(cat ready)" = yes"#,
        "Never",
    );
    env.spec.containers[0].resources = ResourceRequirements {
        limits: [("nvidia.com/gpu".to_string(), Quantity::from_value(2))].into(),
        ..Default::default()
    };
    env.spec.init_containers = vec![
        Container {
            name: "init1".into(),
            command: vec!["sh".into(), "-c".into(), "echo no > ready".into()],
            ..Default::default()
        },
        Container {
            name: "init2".into(),
            command: vec!["sh".into(), "-c".into(), "echo yes > ready".into()],
            ..Default::default()
        },
    ];
    c.create_pod(env).await;
    let mut no_cmd = sh_pod("nocmd", "n1", "", "Always");
    no_cmd.spec.containers[0].command.clear();
    no_cmd.spec.containers[0].image = "busybox".into();
    c.create_pod(no_cmd).await;

    let p = c
        .wait_pod("fails", "Failed", |p| p.status.phase == "Failed")
        .await;
    let t = terminated(&p, "main").expect("terminated");
    assert_eq!(
        (t.exit_code, t.reason.as_str(), t.signal),
        (3, "Error", None)
    );
    assert!(t.started_at.is_some() && t.finished_at.is_some());
    assert!(p.status.start_time.is_some());
    assert_eq!(p.status.pod_ip, "127.0.0.1");
    assert_eq!(p.status.host_ip, "127.0.0.1");

    let p = c
        .wait_pod("killed", "Failed", |p| p.status.phase == "Failed")
        .await;
    let t = terminated(&p, "main").expect("terminated");
    assert_eq!((t.exit_code, t.signal), (137, Some(9)));

    let p = c
        .wait_pod("env", "Succeeded", |p| p.status.phase == "Succeeded")
        .await;
    assert_eq!(
        terminated(&p, "main").map(|t| t.reason),
        Some("Completed".into())
    );
    assert_eq!(p.status.init_container_statuses.len(), 2);
    assert!(
        p.status
            .conditions
            .iter()
            .any(|c| c.type_ == "Initialized" && c.status == "True")
    );

    let p = c
        .wait_pod("nocmd", "Failed", |p| p.status.phase == "Failed")
        .await;
    let t = terminated(&p, "main").expect("terminated");
    assert_eq!(t.reason, "StartError");
    assert!(t.message.contains("no command"), "{}", t.message);
    c.cleanup("n1").await;
    agent.stop().await;
}

#[tokio::test]
async fn restart_policies_and_backoff() {
    let c = Cluster::start().await;
    let agent = c.start_agent(c.agent_config("n1"));
    // Succeeds on its third run.
    let third =
        r#"n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ $n -ge 3 ]"#;
    c.create_pod(sh_pod("onfailure", "n1", third, "OnFailure"))
        .await;
    c.create_pod(sh_pod("never", "n1", "exit 1", "Never")).await;
    c.create_pod(sh_pod("always", "n1", "exit 0", "Always"))
        .await;

    let p = c
        .wait_pod("onfailure", "Succeeded", |p| p.status.phase == "Succeeded")
        .await;
    assert_eq!(p.status.container_statuses[0].restart_count, 2);
    let last = p.status.container_statuses[0]
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref());
    assert_eq!(last.map(|t| t.exit_code), Some(1));

    let p = c
        .wait_pod("never", "Failed", |p| p.status.phase == "Failed")
        .await;
    assert_eq!(p.status.container_statuses[0].restart_count, 0);

    let p = c
        .wait_pod("always", "three restarts", |p| {
            p.status
                .container_statuses
                .first()
                .is_some_and(|s| s.restart_count >= 3)
        })
        .await;
    assert_eq!(p.status.phase, "Running");
    c.cleanup("n1").await;
    agent.stop().await;
}

#[tokio::test]
async fn delete_kills_the_whole_tree_after_the_grace_period() {
    let c = Cluster::start().await;
    let agent = c.start_agent(c.agent_config("n1"));
    c.create_pod(sh_pod("tree", "n1", "sleep 1000 & sleep 1000", "Always"))
        .await;
    let mut stubborn = sh_pod(
        "stubborn",
        "n1",
        "trap '' TERM; sleep 1000 & sleep 1000",
        "Always",
    );
    stubborn.spec.termination_grace_period_seconds = Some(1);
    c.create_pod(stubborn).await;

    let tree = c
        .wait_pod("tree", "Running", |p| p.status.phase == "Running")
        .await;
    let stub = c
        .wait_pod("stubborn", "Running", |p| p.status.phase == "Running")
        .await;
    let tree_pgid = main_pid(&tree).expect("pid");
    let stub_pgid = main_pid(&stub).expect("pid");
    let deadline = Instant::now() + Duration::from_secs(5);
    while group_members(tree_pgid).len() < 2 || group_members(stub_pgid).len() < 2 {
        assert!(Instant::now() < deadline, "children did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let pods = c.client.namespaced::<drover_api::core::Pod>("default");
    let started = Instant::now();
    pods.delete("tree", &DeleteParams::default())
        .await
        .expect("delete");
    pods.delete("stubborn", &DeleteParams::default())
        .await
        .expect("delete");
    c.wait_gone("tree").await;
    assert!(
        group_members(tree_pgid).is_empty(),
        "survivors: {:?}",
        group_members(tree_pgid)
    );
    c.wait_gone("stubborn").await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "SIGKILL came before the grace period"
    );
    assert!(
        group_members(stub_pgid).is_empty(),
        "survivors: {:?}",
        group_members(stub_pgid)
    );
    c.cleanup("n1").await;
    agent.stop().await;
}

#[tokio::test]
async fn logs_through_the_api_server_with_tail_and_follow() {
    let c = Cluster::start().await;
    let agent = c.start_agent(c.agent_config("n1"));
    c.create_pod(sh_pod(
        "printer",
        "n1",
        "for i in 1 2 3 4 5; do echo line$i; done; sleep 1000",
        "Never",
    ))
    .await;
    c.create_pod(sh_pod(
        "slow",
        "n1",
        "echo a; sleep 0.3; echo b; sleep 0.3; echo c",
        "Never",
    ))
    .await;
    c.wait_pod("printer", "Running", |p| p.status.phase == "Running")
        .await;

    let collect = |follow: bool, tail: Option<i64>, pod: &'static str| {
        let client = c.client.clone();
        async move {
            let mut out = Vec::new();
            let mut s = client
                .logs("default", pod, "", follow, tail)
                .await
                .expect("log stream");
            while let Some(chunk) = s.next().await {
                out.extend_from_slice(&chunk.expect("chunk"));
            }
            String::from_utf8(out).expect("utf-8")
        }
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !collect(false, None, "printer").await.contains("line5") {
        assert!(Instant::now() < deadline, "log never filled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(collect(false, Some(2), "printer").await, "line4\nline5\n");
    assert_eq!(
        collect(false, None, "printer").await,
        "line1\nline2\nline3\nline4\nline5\n"
    );

    c.wait_pod("slow", "Running", |p| p.status.phase == "Running")
        .await;
    let followed = tokio::time::timeout(Duration::from_secs(10), collect(true, None, "slow"))
        .await
        .expect("follow ends");
    assert_eq!(followed, "a\nb\nc\n");

    // Structured errors: unknown pod, unknown container, bad token.
    let err = c
        .client
        .logs("default", "nope", "", false, None)
        .await
        .err()
        .expect("error");
    assert!(err.is_not_found(), "{err}");
    let err = c
        .client
        .logs("default", "printer", "other", false, None)
        .await
        .err()
        .expect("error");
    assert!(err.is_not_found(), "{err}");
    c.cleanup("n1").await;
    agent.stop().await;
}
