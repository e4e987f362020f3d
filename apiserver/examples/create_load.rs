//! A quick load generator for profiling the write path: an in-process API server on the embedded
//! store, N concurrent gRPC clients creating pods, and one watcher measuring ack→event latency.
//! `cargo run --release -p drover-apiserver --example create_load -- [clients] [objects]`
//! (`drover bench api` is the user-facing benchmark; this is the profiling harness.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use drover_api::client::{Client, ClientConfig, ListParams, WatchEvent};
use drover_api::core::Pod;
use futures::StreamExt;

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "load"}},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}
    }))
    .expect("pod")
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let clients: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let objects: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let dir = tempfile::tempdir()?;
    let server = drover_apiserver::start(
        drover_apiserver::ServerConfig::new(dir.path()).listen("127.0.0.1:0".parse()?),
    )
    .await?;
    let cfg = ClientConfig {
        server: server.url(),
        token: server.admin_token.clone(),
    };
    // Clients share connections in groups, as processes would each have their own.
    let conns: Vec<Client> = (0..clients.div_ceil(8))
        .map(|_| Client::new(&cfg))
        .collect::<Result<_, _>>()?;

    let acks: Arc<std::sync::Mutex<std::collections::HashMap<String, Instant>>> = Arc::default();
    let watcher = {
        let c = Client::new(&cfg)?;
        let acks = acks.clone();
        tokio::spawn(async move {
            let mut seen = std::collections::HashMap::new();
            let mut w = Box::pin(
                c.namespaced::<Pod>("default")
                    .watch(&ListParams::default(), "0")
                    .await
                    .expect("watch"),
            );
            while let Some(e) = w.next().await {
                if let Ok(WatchEvent::Added(p)) = e {
                    let now = Instant::now();
                    if p.metadata.name == "done" {
                        break;
                    }
                    seen.insert(p.metadata.name, now);
                }
            }
            // Latency after the acknowledgement; an event that arrived first counts as zero.
            let acks = acks.lock().expect("lock");
            seen.iter()
                .filter_map(|(n, t)| acks.get(n).map(|a| t.saturating_duration_since(*a)))
                .collect::<Vec<_>>()
        })
    };
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..clients {
        let api = conns[i % conns.len()].namespaced::<Pod>("default");
        let next = next.clone();
        let acks = acks.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= objects {
                    break;
                }
                let name = format!("p{n}");
                let p = pod(&name);
                let t0 = Instant::now();
                api.create(&p).await.expect("create");
                let t1 = Instant::now();
                acks.lock().expect("lock").insert(name, t1);
                lat.push(t1 - t0);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let elapsed = start.elapsed();
    conns[0]
        .namespaced::<Pod>("default")
        .create(&pod("done"))
        .await?;
    let mut wlat = tokio::time::timeout(Duration::from_secs(30), watcher).await??;
    println!(
        "clients={clients} objects={objects} creates/s={:.0} create p50={:?} p99={:?} max={:?} | watch p50={:?} p99={:?} ({} samples)",
        objects as f64 / elapsed.as_secs_f64(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0),
        pct(&mut wlat, 0.5),
        pct(&mut wlat, 0.99),
        wlat.len()
    );
    server.shutdown().await?;
    Ok(())
}
