//! Pods reading the admin's and the agent's secrets (issue 12 item 4), probed through a real
//! `drover up` (see [`super`]): a pod runs `cat` on the client config (the admin token), the
//! token file and the store, and lists the data and state directories. Every directory above
//! them is opened up first (0755), so only Drover's own modes stand in the way. Switching users
//! needs root: as any other user the probe prints why and passes.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use drover_api::core::{Container, Pod, PodSpec};
use drover_client::{Client, ClientConfig};

use super::common::{World, wait_for};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn a_pod_cannot_read_the_admin_token_or_the_data_directory() {
    if !nix::unistd::Uid::effective().is_root() {
        println!("skipping: pods run as another user only when the agent is root");
        return;
    }
    let mut w = World::new();
    std::fs::set_permissions(w.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let data = w.path().join("data");
    let config = w.config();
    let (data_s, config_s) = (
        data.to_str().expect("utf-8 path").to_string(),
        config.to_str().expect("utf-8 path").to_string(),
    );
    w.spawn(
        "up",
        &[
            "up",
            "--data-dir",
            &data_s,
            "--listen",
            "127.0.0.1:0",
            "--write-config",
            &config_s,
        ],
    );
    w.track_state_dir(data.join("agent"));
    w.wait_config(Duration::from_secs(60));
    let cfg = ClientConfig::load(&config).expect("client config");
    assert!(!cfg.token.is_empty());

    let script = format!(
        "id -u
cat {config_s} || echo config-denied
cat {data_s}/tokens || echo tokens-denied
head -c 64 {data_s}/store.redb || echo store-denied
ls {data_s} || echo data-denied
ls {data_s}/agent/pods || echo state-denied"
    );
    let pod = Pod::new(
        "default",
        "reader",
        PodSpec {
            restart_policy: "Never".into(),
            containers: vec![Container {
                name: "main".into(),
                command: vec!["sh".into(), "-c".into(), script],
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt.block_on(async { Client::new(&cfg) }).expect("client");
    let created = rt
        .block_on(client.namespaced::<Pod>("default").create(&pod))
        .expect("create pod");
    let done = wait_for(Duration::from_secs(60), "the reader pod to end", || {
        let p = rt
            .block_on(client.namespaced::<Pod>("default").get("reader"))
            .ok()?;
        matches!(p.status.phase.as_str(), "Succeeded" | "Failed").then_some(p)
    });
    let node = &done.spec.node_name;
    let log_path = data
        .join("agent")
        .join("pods")
        .join(format!("default_reader_{}", created.metadata.uid))
        .join("main.log");
    let out = std::fs::read_to_string(&log_path)
        .unwrap_or_else(|e| panic!("log of the pod on {node}: {}: {e}", log_path.display()));

    assert_ne!(out.lines().next(), Some("0"), "the pod ran as root: {out}");
    assert!(
        !out.contains(&cfg.token),
        "the pod read the admin token: {out}"
    );
    for denied in [
        "config-denied",
        "tokens-denied",
        "store-denied",
        "data-denied",
        "state-denied",
    ] {
        assert!(out.contains(denied), "{denied} missing: {out}");
    }
    for (what, path, want) in [
        ("client config", config.clone(), 0o600),
        ("data directory", data.clone(), 0o700),
        ("token file", data.join("tokens"), 0o600),
        ("store file", data.join("store.redb"), 0o600),
        ("agent state directory", data.join("agent"), 0o700),
    ] {
        assert_eq!(mode(&path), want, "{what} {}", path.display());
    }
}
