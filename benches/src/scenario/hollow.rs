//! `--hollow`: the scenario's nodes served by simulated node agents
//! ([`drover_nodeagent::HollowCluster`]) instead of bare Node objects. The agents register the
//! nodes with the simulated devices of the profile, renew their leases and run every pod bound
//! to them through the simulated runtime, writing its status (Running, then Succeeded when it
//! exits), so the control plane carries a node agent's load as well as the scheduler's.

use std::time::{Duration, Instant};

use drover_api::Resource;
use drover_api::core::Node;
use drover_client::{Api, Client, ClientError, ListParams};
use drover_nodeagent::{HollowCluster, HollowOptions};
use futures::StreamExt;

use super::ClusterSpec;
use crate::workload::{self, DEFAULT_NODE_CONCURRENCY};
use crate::{BenchError, Progress};

/// How long a bench pod runs on a hollow node when it has no `drover.dev/sim-duration`
/// annotation: longer than any run, so pods hold their resources to the end, as they do on
/// bare nodes (the agent's own default, 30 s, would free capacity mid-run).
pub const DEFAULT_POD_DURATION: Duration = Duration::from_secs(24 * 3600);
/// How long to wait for every registered node to show as Ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts `spec.nodes` hollow nodes named `<prefix>-<i>` on a connection of their own and
/// returns once all of them are Ready. Their Node objects are created first with the zone and
/// rack labels of bare bench nodes (registration keeps labels it finds), so constraint and gang
/// scenarios see the same topology; capacity is the simulated profile's.
pub async fn start(
    client: &Client,
    spec: &ClusterSpec,
    prefix: &str,
    progress: &Progress,
) -> Result<HollowCluster, BenchError> {
    // Each bench profile is also a built-in simulated device profile of the same name (the
    // test below holds them together); `setup` has checked the name.
    let profile = spec.profile.as_str();
    label_nodes(client, spec, prefix, progress).await?;
    progress.println(format!("registering {} hollow nodes", spec.nodes));
    // One HTTP/2 connection is served by one task: the agents must not share the creators'.
    let agents = client.new_connection()?;
    let options = HollowOptions {
        default_pod_duration: DEFAULT_POD_DURATION,
        ..HollowOptions::default()
    };
    let hollow = HollowCluster::start(agents, spec.nodes, profile, prefix, options)
        .await
        .map_err(|e| BenchError::Start(e.to_string()))?;
    wait_ready(client, prefix, spec.nodes).await?;
    Ok(hollow)
}

/// Creates the labelled Node objects (no status: the agents write it).
async fn label_nodes(
    client: &Client,
    spec: &ClusterSpec,
    prefix: &str,
    progress: &Progress,
) -> Result<(), BenchError> {
    progress.phase("nodes", spec.nodes as u64);
    let api = client.all::<Node>();
    let mut created = futures::stream::iter(0..spec.nodes)
        .map(|i| {
            let bare = workload::bench_node(prefix, i, None, &spec.layout);
            let mut node = Node::new(&bare.metadata.name);
            node.metadata.labels = bare.metadata.labels;
            let api = api.clone();
            async move {
                match api.create(&node).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_already_exists() => Ok(()),
                    Err(e) => Err(BenchError::from(e)),
                }
            }
        })
        .buffer_unordered(DEFAULT_NODE_CONCURRENCY);
    while let Some(r) = created.next().await {
        r?;
        progress.inc(1);
    }
    progress.finish();
    Ok(())
}

async fn wait_ready(client: &Client, prefix: &str, n: usize) -> Result<(), BenchError> {
    let api = client.all::<Node>();
    let started = Instant::now();
    let name_prefix = format!("{prefix}-");
    loop {
        let ready = count_paged(&api, |node| {
            node.metadata.name.starts_with(&name_prefix) && node.is_ready()
        })
        .await?;
        if ready >= n {
            return Ok(());
        }
        if started.elapsed() > READY_TIMEOUT {
            return Err(BenchError::Start(format!(
                "{ready} of {n} hollow nodes Ready after {READY_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The objects `api` lists that satisfy `keep`, a page at a time.
pub async fn count_paged<K: Resource>(
    api: &Api<K>,
    keep: impl Fn(&K) -> bool,
) -> Result<usize, ClientError> {
    let mut count = 0;
    api.list_pages(&ListParams::default(), |page| {
        count += page.items.iter().filter(|o| keep(o)).count();
    })
    .await?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bench_profile_has_a_simulated_one() {
        for p in workload::PROFILES {
            assert!(workload::profile(p).is_ok());
            assert!(drover_device_plugins::load_profile(p).is_ok(), "{p}");
        }
    }
}
