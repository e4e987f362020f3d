//! Several API servers on one etcd cluster serve one state: three `drover apiserver --store
//! etcd://...` processes on a real 3-member etcd on loopback. A write acknowledged by one server
//! is seen by watches on the others, in order, with the same resourceVersion; a resourceVersion
//! from one server is a valid precondition on another; and when one server is killed with
//! SIGKILL, the others go on serving and watching.
//!
//! The same on the TiKV store, whose servers share the loopback PD + TiKV double.
//!
//! The etcd tests skip, saying so, when `etcd` is not installed (`apt-get install etcd-server`).

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

mod common;

use common::pod;
use drover_api::core::Pod;
use drover_apiserver::storage::etcd_cluster::EtcdCluster;
use drover_apiserver::storage::tikv_double::TikvDouble;
use drover_client::{Client, ClientConfig, ListParams, WatchEvent};
use futures::StreamExt;

/// Starts `drover apiserver` on the etcd cluster; returns the child and its client config.
fn start_server(store: &str, data: &Path, config: &Path) -> (Child, ClientConfig) {
    common::start_apiserver(data, config, &["--listen", "127.0.0.1:0", "--store", store])
}

/// Reads `n` Added events from a watch; returns (name, resourceVersion) in arrival order.
async fn added(
    watch: &mut (
             impl futures::Stream<Item = Result<WatchEvent<Pod>, drover_client::ClientError>> + Unpin
         ),
    n: usize,
) -> Vec<(String, String)> {
    let mut seen = Vec::with_capacity(n);
    while seen.len() < n {
        let event = tokio::time::timeout(Duration::from_secs(60), watch.next())
            .await
            .expect("the watch went quiet")
            .expect("the watch ended")
            .expect("watch error");
        match event {
            WatchEvent::Added(p) => seen.push((p.metadata.name, p.metadata.resource_version)),
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected event {other:?}"),
        }
    }
    seen
}

fn rv(p: &Pod) -> u64 {
    p.metadata
        .resource_version
        .parse()
        .expect("numeric resourceVersion")
}

#[test]
fn three_api_servers_on_one_etcd_serve_one_state() {
    if EtcdCluster::binary().is_none() {
        eprintln!("skipping: etcd is not installed (apt-get install etcd-server)");
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _enter = rt.enter();
    let etcd = rt
        .block_on(EtcdCluster::start(3))
        .expect("start a 3-member etcd cluster");
    three_api_servers_serve_one_state(&rt, &etcd.url());
}

/// The same on TiKV: the three servers' `--store tikv://` is the loopback PD + TiKV double
/// (no TiKV server can be installed here), served from this test's process.
#[test]
fn three_api_servers_on_one_tikv_serve_one_state() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _enter = rt.enter();
    let double = rt
        .block_on(TikvDouble::start())
        .expect("start the TiKV double");
    three_api_servers_serve_one_state(&rt, &format!("tikv://{}/ha", double.pd_endpoint()));
}

fn three_api_servers_serve_one_state(rt: &tokio::runtime::Runtime, store: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    // One data directory for the three servers: it holds the tokens and the agent key, which
    // every server of one cluster must share (on separate machines: copies of the files).
    let data = dir.path().join("data");
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    let mut configs = Vec::new();
    for name in ["a", "b", "c"] {
        let (child, cfg) = start_server(store, &data, &dir.path().join(name));
        servers.push(child);
        clients.push(Client::new(&cfg).expect("client"));
        configs.push(cfg);
    }
    // A client given all three servers, as components are in a highly available cluster.
    let listed = Client::new(&ClientConfig {
        server: configs
            .iter()
            .map(|c| c.server.clone())
            .collect::<Vec<_>>()
            .join(","),
        token: configs[0].token.clone(),
    })
    .expect("client of the three servers");
    rt.block_on(async {
        let pods: Vec<_> = clients
            .iter()
            .map(|c| c.namespaced::<Pod>("default"))
            .collect();
        let start = pods[1]
            .list(&ListParams::default())
            .await
            .expect("list on b")
            .metadata
            .resource_version;
        let mut on_b = Box::pin(pods[1].watch(&ListParams::default(), &start).await.expect("watch b"));
        let mut on_c = Box::pin(pods[2].watch(&ListParams::default(), &start).await.expect("watch c"));

        // Writes through all three servers, from concurrent clients.
        const PER_SERVER: usize = 60;
        let mut tasks = Vec::new();
        for (s, api) in pods.iter().enumerate() {
            for w in 0..3 {
                let api = api.clone();
                tasks.push(tokio::spawn(async move {
                    let mut acked = Vec::new();
                    for i in 0..PER_SERVER / 3 {
                        let name = format!("s{s}-w{w}-{i}");
                        let created = api.create(&pod(&name)).await.expect("create");
                        acked.push((name, created.metadata.resource_version));
                    }
                    acked
                }));
            }
        }
        let mut acked = Vec::new();
        for t in tasks {
            acked.extend(t.await.expect("writer"));
        }
        acked.sort_by_key(|(_, v)| v.parse::<u64>().expect("numeric resourceVersion"));
        let total = acked.len();
        for (server, watch) in [("b", &mut on_b), ("c", &mut on_c)] {
            let seen = added(watch, total).await;
            assert_eq!(
                seen, acked,
                "server {server}'s watch saw every acknowledged create, in resourceVersion order, at its acknowledged version"
            );
        }

        // A resourceVersion from one server means the same on another.
        let from_a = pods[0].get("s0-w0-0").await.expect("get on a");
        let from_c = pods[2].get("s0-w0-0").await.expect("get on c");
        assert_eq!(from_a.metadata.resource_version, from_c.metadata.resource_version);
        let mut update = from_a.clone();
        update.metadata.labels.insert("seen".into(), "yes".into());
        let updated = pods[1].update(&update).await.expect("update on b at a's version");
        assert!(rv(&updated) > rv(&from_a));
        let stale = pods[2].update(&update).await;
        assert!(
            matches!(&stale, Err(e) if e.is_conflict()),
            "an update at a stale version through c is a conflict: {stale:?}"
        );
        // The listed client talks to a, the first server.
        listed
            .namespaced::<Pod>("default")
            .get("s0-w0-0")
            .await
            .expect("get through the listed client");
    });

    // Kill server a: b and c keep serving, c's watch sees b's writes, and the listed client
    // fails over.
    let mut a = servers.remove(0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 server a");
    let _ = a.wait();
    rt.block_on(async {
        let b = clients[1].namespaced::<Pod>("default");
        let c = clients[2].namespaced::<Pod>("default");
        let start = c
            .list(&ListParams::default())
            .await
            .expect("list on c")
            .metadata
            .resource_version;
        let mut on_c = Box::pin(
            c.watch(&ListParams::default(), &start)
                .await
                .expect("watch c"),
        );
        let created = b.create(&pod("after-a-died")).await.expect("create on b");
        let seen = added(&mut on_c, 1).await;
        assert_eq!(
            seen,
            vec![(
                "after-a-died".to_string(),
                created.metadata.resource_version
            )]
        );
        // A call on a's closed connection may fail once; the next goes to a live server.
        let listed_pods = listed.namespaced::<Pod>("default");
        let first = listed_pods.create(&pod("through-the-list")).await;
        let created = match first {
            Ok(p) => p,
            Err(e) => {
                eprintln!("first call after the kill failed ({e}); retrying once");
                listed_pods
                    .create(&pod("through-the-list"))
                    .await
                    .expect("the listed client fails over within one retry")
            }
        };
        let seen = added(&mut on_c, 1).await;
        assert_eq!(
            seen,
            vec![(
                "through-the-list".to_string(),
                created.metadata.resource_version
            )]
        );
    });
    for mut s in servers {
        let _ = s.kill();
        let _ = s.wait();
    }
}

/// `drover apiserver` on an etcd that is not there exits with an error naming the endpoints;
/// a malformed `--store` is refused naming the wrong part, before anything starts.
#[test]
fn bad_store_flags_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |store: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["apiserver", "--listen", "127.0.0.1:0", "--store", store])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--write-config")
            .arg(dir.path().join("config"))
            .output()
            .expect("run drover apiserver");
        (out.status, String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (status, stderr) = run("etcd://127.0.0.1:1,127.0.0.1:9");
    assert!(!status.success(), "started without a store: {stderr}");
    assert!(
        stderr.contains("127.0.0.1:1") && stderr.contains("127.0.0.1:9"),
        "the error names the endpoints tried: {stderr}"
    );
    let (status, stderr) = run("tikv://127.0.0.1:1,127.0.0.1:9");
    assert!(!status.success(), "started without a store: {stderr}");
    assert!(
        stderr.contains("PD at 127.0.0.1:1, 127.0.0.1:9"),
        "the error names the PD endpoints tried: {stderr}"
    );
    let (status, stderr) = run("etcd://127.0.0.1:99999");
    assert_eq!(status.code(), Some(2), "a usage error: {stderr}");
    assert!(stderr.contains("port \"99999\""), "{stderr}");
    assert!(!dir.path().join("config").exists(), "nothing was written");
}

/// The fault figure of issue 15 (a measurement, run by hand; not timed in CI): 64 clients
/// stream creates through a client given two API servers on a 3-member etcd, while each of 20
/// rounds kills -9 one etcd member, restarts it, then kills -9 the API server the clients
/// use and restarts it. Every call may be retried once (a create retried after a lost answer
/// may find its object: that is its success). Asserts that no acknowledged write is lost and
/// no call failed beyond its one retry; prints the longest stall (no acknowledgement at all).
///
/// `cargo test --release -p drover --test ha -- --ignored --nocapture faults`
#[test]
#[ignore = "a measurement of about two minutes; run by hand"]
fn faults_lose_no_acknowledged_write() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    if EtcdCluster::binary().is_none() {
        eprintln!("skipping: etcd is not installed (apt-get install etcd-server)");
        return;
    }
    const ROUNDS: usize = 20;
    const CLIENTS: usize = 64;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _enter = rt.enter();
    let mut etcd = rt.block_on(EtcdCluster::start(3)).expect("etcd");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("port")
                .port()
        })
        .collect();
    let url = etcd.url();
    let start = |i: usize| {
        let listen = format!("127.0.0.1:{}", ports[i]);
        let config = dir.path().join(format!("config{i}"));
        common::start_apiserver(&data, &config, &["--listen", &listen, "--store", &url]).0
    };
    let mut servers = vec![start(0), start(1)];
    let token = ClientConfig::load(&dir.path().join("config0"))
        .expect("config")
        .token;
    let client = Client::new(&ClientConfig {
        server: ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(","),
        token,
    })
    .expect("client");
    let acked: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let failed: Arc<Mutex<Vec<String>>> = Arc::default();
    let retried = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (api, acked, failed, retried, stop) = (
                client.namespaced::<Pod>("default"),
                acked.clone(),
                failed.clone(),
                retried.clone(),
                stop.clone(),
            );
            rt.spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("c{c}-{i}");
                    let ok = match api.create(&pod(&name)).await {
                        Ok(_) => true,
                        Err(_) => {
                            retried.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            match api.create(&pod(&name)).await {
                                Ok(_) => true,
                                Err(e) if e.is_already_exists() => true,
                                Err(e) => {
                                    failed.lock().expect("lock").push(format!("{name}: {e}"));
                                    false
                                }
                            }
                        }
                    };
                    if ok {
                        acked.lock().expect("lock").push((name, Instant::now()));
                    }
                    i += 1;
                }
            })
        })
        .collect();
    let began = Instant::now();
    let mut active = 0;
    for round in 0..ROUNDS {
        std::thread::sleep(Duration::from_millis(1000));
        etcd.kill(round % 3);
        std::thread::sleep(Duration::from_millis(1000));
        etcd.restart(round % 3).expect("restart etcd member");
        std::thread::sleep(Duration::from_millis(1000));
        // The server the clients are on: the first listed until it dies, then the other.
        let _ = servers[active].kill();
        let _ = servers[active].wait();
        std::thread::sleep(Duration::from_millis(500));
        servers[active] = start(active);
        active = 1 - active;
    }
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for w in writers {
            let _ = w.await;
        }
    });
    let wall = began.elapsed();
    let acked = acked.lock().expect("lock").clone();
    let mut times: Vec<Instant> = acked.iter().map(|a| a.1).collect();
    times.sort();
    let stall = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    let have: std::collections::HashSet<String> = rt
        .block_on(
            client
                .namespaced::<Pod>("default")
                .list_all(&drover_client::ListParams::default()),
        )
        .expect("list")
        .items
        .into_iter()
        .map(|p| p.metadata.name)
        .collect();
    let lost: Vec<_> = acked.iter().filter(|(n, _)| !have.contains(n)).collect();
    let failed = failed.lock().expect("lock").clone();
    println!(
        "{ROUNDS} rounds in {:.1} s: {} acknowledged creates ({:.0}/s), {} lost, {} calls retried once, {} failed beyond the retry, longest stall {:.2} s",
        wall.as_secs_f64(),
        acked.len(),
        acked.len() as f64 / wall.as_secs_f64(),
        lost.len(),
        retried.load(std::sync::atomic::Ordering::Relaxed),
        failed.len(),
        stall.as_secs_f64()
    );
    assert!(lost.is_empty(), "lost acknowledged writes: {lost:?}");
    assert!(
        failed.is_empty(),
        "calls failed beyond one retry: {failed:?}"
    );
    for mut s in servers {
        let _ = s.kill();
        let _ = s.wait();
    }
}
