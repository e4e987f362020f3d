//! Measures what hollow nodes cost: starts an in-process API server, registers N hollow nodes
//! (default 10,000) with one shared client, informer and lease task, lets them idle, and
//! prints the resident memory added per node and the CPU used while idle.
//!
//! ```text
//! cargo run --release -p drover-nodeagent --example hollow_scale -- [N] [PROFILE] [IDLE_SECONDS]
//! ```
//!
//! The figures include the API server's side (its watch cache holds every Node and Lease, and
//! it serves the lease renewals), so they are an upper bound on the hollow nodes' own cost.

use std::time::{Duration, Instant};

use drover_apiserver::ServerConfig;
use drover_client::{Client, ClientConfig};
use drover_nodeagent::{HollowCluster, HollowOptions};

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// User + system CPU time of this process, in seconds.
fn cpu_seconds() -> f64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = text.rfind(')').map_or("", |i| &text[i + 1..]);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the state field.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i)?.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let profile = args.next().unwrap_or_else(|| "h100-8".into());
    let idle: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(30);

    let dir = tempfile::tempdir()?;
    let server =
        drover_apiserver::start(ServerConfig::new(dir.path()).listen("127.0.0.1:0".parse()?))
            .await?;
    let client = Client::new(&ClientConfig {
        server: server.url(),
        token: server.admin_token.clone(),
    })?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss_bytes();

    let started = Instant::now();
    let hollow = HollowCluster::start(
        client.clone(),
        n,
        &profile,
        "hollow",
        HollowOptions::default(),
    )
    .await?;
    let registered = started.elapsed();
    // Let the first lease round and the informer's list settle.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let rss_after = rss_bytes();

    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle)).await;
    let cpu = (cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64();

    let delta = rss_after.saturating_sub(rss_before);
    println!("hollow nodes:            {n} ({profile})");
    println!(
        "registration:            {:.1} s ({:.0} nodes/s)",
        registered.as_secs_f64(),
        n as f64 / registered.as_secs_f64()
    );
    println!(
        "RSS before / after:      {:.1} MiB / {:.1} MiB",
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0
    );
    println!(
        "RSS per node:            {:.1} KiB (API server cache included)",
        delta as f64 / n as f64 / 1024.0
    );
    println!(
        "idle CPU over {idle} s:      {:.3} cores (lease renewals every 10 s served in process)",
        cpu
    );
    hollow.shutdown().await;
    server.shutdown().await?;
    Ok(())
}
