//! Every write the API server acknowledged survives `kill -9`: run `drover apiserver` as a child,
//! stream creates from many clients, kill it at a random moment, restart it on the same data
//! directory, and check that every acknowledged object is there. Several rounds.

use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use common::pod;
use drover_api::core::Pod;
use drover_client::{Client, ClientConfig, ListParams};

const ROUNDS: usize = 4;
const WRITERS: usize = 16;

/// Starts the server; returns the child and the client config it wrote.
fn start_server(data: &Path, config: &Path) -> (Child, ClientConfig) {
    common::start_apiserver(data, config, &["--listen", "127.0.0.1:0"])
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("config");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // The client's channel needs the runtime's reactor even when it is only being set up.
    let _enter = rt.enter();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    for round in 0..ROUNDS {
        let (mut child, cfg) = start_server(&data, &config);
        let client = Client::new(&cfg).expect("client");
        rt.block_on(async {
            // Everything acknowledged in earlier rounds is there.
            let list = client
                .namespaced::<Pod>("default")
                .list(&ListParams::default())
                .await
                .expect("list");
            let have: std::collections::HashSet<String> =
                list.items.into_iter().map(|p| p.metadata.name).collect();
            let want = acked.lock().expect("lock").clone();
            let missing: Vec<_> = want.iter().filter(|n| !have.contains(*n)).collect();
            assert!(
                missing.is_empty(),
                "round {round}: lost acknowledged writes: {missing:?}"
            );

            // Stream writes, and kill the server at a pseudo-random moment.
            let mut tasks = Vec::new();
            for w in 0..WRITERS {
                let pods = client.namespaced::<Pod>("default");
                let acked = acked.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0.. {
                        let name = format!("r{round}-w{w}-{i}");
                        match pods.create(&pod(&name)).await {
                            Ok(_) => acked.lock().expect("lock").push(name),
                            Err(_) => break,
                        }
                    }
                }));
            }
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(150 + u64::from(nanos % 600))).await;
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .expect("kill -9");
            for t in tasks {
                let _ = t.await;
            }
        });
        let _ = child.wait();
        assert!(
            acked.lock().expect("lock").len() > round,
            "round {round}: no write was acknowledged before the kill"
        );
    }
    // A final start checks the last round.
    let (mut child, cfg) = start_server(&data, &config);
    let client = Client::new(&cfg).expect("client");
    let have = rt.block_on(async {
        client
            .namespaced::<Pod>("default")
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .into_iter()
            .map(|p| p.metadata.name)
            .collect::<std::collections::HashSet<_>>()
    });
    let _ = child.kill();
    let _ = child.wait();
    let want = acked.lock().expect("lock").clone();
    let missing: Vec<_> = want.iter().filter(|n| !have.contains(*n)).collect();
    assert!(missing.is_empty(), "lost acknowledged writes: {missing:?}");
    println!(
        "{} acknowledged writes over {ROUNDS} kill -9 rounds, none lost",
        want.len()
    );
}
