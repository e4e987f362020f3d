//! Node lifecycle: notices nodes whose agent stopped renewing its Lease, marks them
//! `Ready=Unknown` with the `node.kubernetes.io/unreachable:NoExecute` taint, and after the
//! toleration period fails their pods with reason `NodeLost` (status `Failed`, then a delete
//! with grace 0) so their controllers replace them elsewhere — at a rate limited per zone
//! ([`crate::eviction`]). When the lease is renewed again, the taint goes. Pods on devices a
//! node reports unhealthy are failed with a reason naming the device; the node stays usable for
//! its other devices.
//!
//! A lease counts as renewed when this controller sees it change, timed on this controller's
//! own clock (as Kubernetes does), so clock skew between machines does not matter. It judges
//! only what it could see: while its lease watch is broken, and when the view becomes current
//! again (the informer relisted or resumed after a failure: [`View::generation`]), every node
//! gets a fresh grace period counted from then. An API outage longer than the grace period
//! therefore taints no healthy node: agents could not renew either, and they get the grace
//! period to do so once the API is back. This is a
//! periodic monitor (every `node_monitor_period`), not a per-key reconcile: evictions share one
//! rate limit across nodes.

use std::collections::HashMap;
use std::sync::Arc;

use drover_api::coordination::Lease;
use drover_api::core::{NODE_READY, Node, Pod, Taint, taint_effect};
use drover_api::meta::{Condition, set_condition};
use drover_client::informer::View;
use drover_client::{Client, ClientError};
use tokio::time::Instant;
use tracing::Instrument;

use crate::clock::Clock;
use crate::config::ControllersConfig;
use crate::events::{Recorder, reason};
use crate::eviction::{ZONE_LABEL, ZoneLimiter};
use crate::runtime::{Caches, Stop};

/// The taint of a node whose agent cannot be reached.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// Reason of pods failed because their node was lost.
pub const NODE_LOST: &str = "NodeLost";
/// Reason of pods failed because a device they use failed.
pub const DEVICE_FAILED: &str = "DeviceFailed";

#[derive(Debug, thiserror::Error)]
pub enum NodeLifecycleError {
    #[error("node {node}: {source}")]
    Api {
        node: String,
        #[source]
        source: ClientError,
    },
}

#[derive(Debug)]
struct Health {
    /// The lease renewal last seen, and when it was seen.
    renew: Option<String>,
    seen_at: Instant,
    /// Admitted to eviction by the rate limiter.
    admitted: bool,
}

/// The node lifecycle monitor; owns its state.
pub struct NodeLifecycle {
    client: Client,
    caches: Arc<Caches>,
    clock: Clock,
    events: Recorder,
    cfg: ControllersConfig,
    health: HashMap<String, Health>,
    limiter: ZoneLimiter,
    /// The lease cache's view at the last pass.
    lease_view: Option<View>,
}

/// How long `pod` stays on a node tainted `taint`: its own `tolerationSeconds`, forever when it
/// tolerates the taint without a limit, else the default.
pub fn toleration(
    pod: &Pod,
    taint: &Taint,
    default: std::time::Duration,
) -> Option<std::time::Duration> {
    let matching: Vec<_> = pod
        .spec
        .tolerations
        .iter()
        .filter(|t| t.tolerates(taint))
        .collect();
    if matching.is_empty() {
        return Some(default);
    }
    // The shortest limit wins; no limit at all means forever.
    matching
        .iter()
        .filter_map(|t| t.toleration_seconds)
        .min()
        .map(|s| std::time::Duration::from_secs(u64::try_from(s.max(0)).unwrap_or(0)))
}

impl NodeLifecycle {
    pub fn new(
        client: Client,
        caches: Arc<Caches>,
        clock: Clock,
        events: Recorder,
        cfg: ControllersConfig,
    ) -> Self {
        let limiter = ZoneLimiter::new(
            cfg.node_eviction_rate,
            cfg.secondary_node_eviction_rate,
            cfg.unhealthy_zone_threshold,
        );
        NodeLifecycle {
            client,
            caches,
            clock,
            events,
            cfg,
            health: HashMap::new(),
            limiter,
            lease_view: None,
        }
    }

    /// Monitors until `stop`.
    pub async fn run(mut self, stop: Stop) {
        let period = self.cfg.node_monitor_period;
        loop {
            self.pass()
                .instrument(tracing::debug_span!("node_lifecycle"))
                .await;
            tokio::select! {
                _ = stop.wait() => return,
                _ = tokio::time::sleep(period) => {}
            }
        }
    }

    fn lease_renewal(&self, node: &str) -> Option<String> {
        let lease: Arc<Lease> = self
            .caches
            .node_leases
            .cache
            .get_named(&self.cfg.node_lease_namespace, node)?;
        Some(format!(
            "{:?}/{}",
            lease.spec.renew_time, lease.metadata.resource_version
        ))
    }

    /// Updates every node's last-seen renewal from the lease cache; returns the names of the
    /// nodes whose lease has not been seen renewed for the grace period.
    pub fn judge(&mut self, nodes: &[Arc<Node>], now: Instant) -> Vec<String> {
        self.health
            .retain(|n, _| nodes.iter().any(|x| &x.metadata.name == n));
        let view = self.caches.node_leases.cache.view();
        // Renewals made while the watch was broken were not seen when they happened: start
        // every node's grace period again from now, while broken and once current again.
        let blind = !view.current || self.lease_view != Some(view);
        if blind && self.lease_view.is_some() {
            tracing::info!(
                ?view,
                "lease view was not current; every node gets a fresh grace period"
            );
        }
        self.lease_view = Some(view);
        let mut lost = Vec::new();
        for node in nodes {
            let name = &node.metadata.name;
            let renew = self.lease_renewal(name);
            let h = self.health.entry(name.clone()).or_insert(Health {
                renew: renew.clone(),
                seen_at: now,
                admitted: false,
            });
            if h.renew != renew || blind {
                h.renew = renew;
                h.seen_at = now;
            }
            if now.saturating_duration_since(h.seen_at) >= self.cfg.node_monitor_grace_period {
                lost.push(name.clone());
            }
        }
        lost
    }

    /// One monitoring pass over every node.
    pub async fn pass(&mut self) {
        let now = Instant::now();
        let nodes = self.caches.nodes.cache.list();
        let lost_nodes = self.judge(&nodes, now);
        let mut zones: HashMap<String, (usize, usize)> = HashMap::new();
        let mut unhealthy = Vec::new();
        for node in &nodes {
            let lost = lost_nodes.contains(&node.metadata.name);
            let zone = node
                .metadata
                .labels
                .get(ZONE_LABEL)
                .cloned()
                .unwrap_or_default();
            let e = zones.entry(zone).or_default();
            e.0 += 1;
            if lost {
                e.1 += 1;
                unhealthy.push(node.clone());
            } else {
                if let Some(h) = self.health.get_mut(&node.metadata.name) {
                    h.admitted = false;
                }
                if let Err(e) = self.mark_reachable(node).await {
                    tracing::warn!(error = %e, "cannot clear the unreachable taint");
                }
            }
            self.fail_pods_on_failed_devices(node).await;
        }
        self.limiter.update(&zones, now);
        for node in unhealthy {
            if let Err(e) = self.handle_unreachable(&node, now).await {
                tracing::warn!(error = %e, "cannot handle unreachable node");
            }
        }
    }

    fn err(node: &Node) -> impl Fn(ClientError) -> NodeLifecycleError + '_ {
        move |source| NodeLifecycleError::Api {
            node: node.metadata.name.clone(),
            source,
        }
    }

    async fn mark_reachable(&self, node: &Node) -> Result<(), NodeLifecycleError> {
        if !node.spec.taints.iter().any(|t| t.key == UNREACHABLE_TAINT) {
            return Ok(());
        }
        let mut n = node.clone();
        n.spec.taints.retain(|t| t.key != UNREACHABLE_TAINT);
        match self.client.all::<Node>().update(&n).await {
            Ok(_) => {
                tracing::info!(node = %node.metadata.name, "node reachable again; taint removed");
                self.events.normal(
                    node,
                    reason::NODE_READY,
                    format!("Node {} is reachable again", node.metadata.name),
                );
                Ok(())
            }
            Err(e) if e.is_conflict() || e.is_not_found() => Ok(()),
            Err(e) => Err(Self::err(node)(e)),
        }
    }

    async fn handle_unreachable(
        &mut self,
        node: &Node,
        now: Instant,
    ) -> Result<(), NodeLifecycleError> {
        let name = node.metadata.name.clone();
        let taint = match node
            .spec
            .taints
            .iter()
            .find(|t| t.key == UNREACHABLE_TAINT && t.effect == taint_effect::NO_EXECUTE)
        {
            Some(t) => t.clone(),
            None => return self.taint(node).await,
        };
        let added = taint.time_added.unwrap_or_else(|| self.clock.now());
        let pods: Vec<Arc<Pod>> = self
            .caches
            .pods
            .cache
            .list()
            .into_iter()
            .filter(|p| p.spec.node_name == name && !p.is_terminal())
            .collect();
        let due: Vec<&Arc<Pod>> = pods
            .iter()
            .filter(|p| {
                toleration(p, &taint, self.cfg.pod_eviction_timeout).is_some_and(|d| {
                    self.clock.now()
                        >= added + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
                })
            })
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let zone = node
            .metadata
            .labels
            .get(ZONE_LABEL)
            .cloned()
            .unwrap_or_default();
        let admitted = self.health.get(&name).is_some_and(|h| h.admitted);
        if !admitted {
            if !self.limiter.admit(&zone, now) {
                tracing::info!(node = %name, zone = %zone, state = ?self.limiter.state(&zone), "eviction rate-limited");
                return Ok(());
            }
            if let Some(h) = self.health.get_mut(&name) {
                h.admitted = true;
            }
        }
        for p in due {
            let msg = format!(
                "Node {name} which was running pod {} is unresponsive",
                p.metadata.name
            );
            self.fail_pod(p, NODE_LOST, &msg).await;
        }
        Ok(())
    }

    async fn taint(&self, node: &Node) -> Result<(), NodeLifecycleError> {
        let now = self.clock.now();
        let mut n = node.clone();
        n.spec.taints.retain(|t| t.key != UNREACHABLE_TAINT);
        n.spec.taints.push(Taint {
            key: UNREACHABLE_TAINT.into(),
            value: String::new(),
            effect: taint_effect::NO_EXECUTE.into(),
            time_added: Some(now),
        });
        let api = self.client.all::<Node>();
        let updated = match api.update(&n).await {
            Ok(u) => u,
            Err(e) if e.is_conflict() || e.is_not_found() => return Ok(()),
            Err(e) => return Err(Self::err(node)(e)),
        };
        let mut s = updated.clone();
        set_condition(
            &mut s.status.conditions,
            Condition {
                type_: NODE_READY.into(),
                status: "Unknown".into(),
                reason: "NodeStatusUnknown".into(),
                message: "Node agent stopped renewing its lease.".into(),
                ..Default::default()
            },
            now,
        );
        match api.update_status(&s).await {
            Ok(_) => {}
            Err(e) if e.is_conflict() || e.is_not_found() => {}
            Err(e) => return Err(Self::err(node)(e)),
        }
        tracing::warn!(node = %node.metadata.name, "node unreachable; tainted");
        let message = format!(
            "Node {} stopped renewing its lease for {:?}; marked Ready=Unknown and tainted {UNREACHABLE_TAINT}:NoExecute",
            node.metadata.name, self.cfg.node_monitor_grace_period
        );
        self.events.warning(node, reason::NODE_UNREACHABLE, message);
        Ok(())
    }

    /// Fails a pod (status `Failed` with a reason), then deletes it with grace 0.
    async fn fail_pod(&self, pod: &Pod, why: &str, message: &str) {
        crate::pod_failure::fail_and_delete(&self.client, &self.events, pod, why, message).await;
    }

    async fn fail_pods_on_failed_devices(&self, node: &Node) {
        let Some(inv) = &node.status.devices else {
            return;
        };
        let bad: Vec<&drover_api::device::Device> =
            inv.devices.iter().filter(|d| !d.is_healthy()).collect();
        if bad.is_empty() {
            return;
        }
        let pods: Vec<Arc<Pod>> = self
            .caches
            .pods
            .cache
            .list()
            .into_iter()
            .filter(|p| {
                p.spec.node_name == node.metadata.name
                    && !p.is_terminal()
                    && p.metadata.deletion_timestamp.is_none()
            })
            .collect();
        for p in pods {
            let hit = p
                .spec
                .device_assignments
                .iter()
                .flat_map(|a| a.ids.iter())
                .find_map(|id| bad.iter().find(|d| &d.id == id));
            if let Some(d) = hit {
                let why = d
                    .health_reason
                    .clone()
                    .unwrap_or_else(|| "unhealthy".into());
                let msg = format!(
                    "device {} ({}) on node {} failed: {why}",
                    d.id, d.resource, node.metadata.name
                );
                self.fail_pod(&p, DEVICE_FAILED, &msg).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use drover_api::meta::ObjectMeta;
    use drover_client::ClientConfig;

    use super::*;

    const GRACE: std::time::Duration = std::time::Duration::from_secs(40);

    fn lease(node: &str, version: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: node.into(),
                namespace: crate::config::DEFAULT_NODE_LEASE_NAMESPACE.into(),
                resource_version: version.into(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// A monitor over caches the test fills by hand; nothing here reaches a server.
    fn monitor() -> (NodeLifecycle, Arc<Caches>, Vec<Arc<Node>>) {
        let client = Client::new(&ClientConfig {
            server: "http://127.0.0.1:1".into(),
            token: "unused".into(),
        })
        .expect("client");
        let caches = Arc::new(Caches::new(
            &client,
            crate::config::DEFAULT_NODE_LEASE_NAMESPACE,
        ));
        let nodes = vec![Arc::new(Node::new("n1")), Arc::new(Node::new("n2"))];
        caches
            .nodes
            .cache
            .replace(nodes.iter().map(|n| (**n).clone()).collect());
        caches
            .node_leases
            .cache
            .replace(vec![lease("n1", "1"), lease("n2", "1")]);
        let clock = Clock::new();
        let events = Recorder::new(client.clone(), clock, "test");
        let cfg = ControllersConfig::default().node_monitor_grace_period(GRACE);
        let m = NodeLifecycle::new(client, caches.clone(), clock, events, cfg);
        (m, caches, nodes)
    }

    fn secs(s: u64) -> std::time::Duration {
        std::time::Duration::from_secs(s)
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_not_renewed_for_the_grace_period_is_lost() {
        let (mut m, caches, nodes) = monitor();
        assert!(m.judge(&nodes, Instant::now()).is_empty());
        tokio::time::advance(GRACE - secs(1)).await;
        caches
            .node_leases
            .cache
            .apply(drover_client::WatchEvent::Modified(lease("n2", "2")));
        assert!(m.judge(&nodes, Instant::now()).is_empty());
        tokio::time::advance(secs(2)).await;
        assert_eq!(m.judge(&nodes, Instant::now()), ["n1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_longer_than_the_grace_period_loses_no_node() {
        let (mut m, caches, nodes) = monitor();
        assert!(m.judge(&nodes, Instant::now()).is_empty());
        // The API goes away: the lease watch breaks, nobody renews, passes go on.
        caches.node_leases.cache.mark_broken();
        for _ in 0..4 {
            tokio::time::advance(GRACE / 2).await;
            assert!(
                m.judge(&nodes, Instant::now()).is_empty(),
                "judged while blind"
            );
        }
        // The watch resumes; the agents need a moment to renew.
        caches.node_leases.cache.mark_current();
        assert!(m.judge(&nodes, Instant::now()).is_empty());
        tokio::time::advance(GRACE - secs(1)).await;
        assert!(
            m.judge(&nodes, Instant::now()).is_empty(),
            "the grace period restarts at the resync"
        );
        caches
            .node_leases
            .cache
            .apply(drover_client::WatchEvent::Modified(lease("n1", "2")));
        tokio::time::advance(secs(2)).await;
        // n2's agent never came back: it is lost a grace period after the view was current.
        assert_eq!(m.judge(&nodes, Instant::now()), ["n2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_relist_gives_every_node_a_fresh_grace_period() {
        let (mut m, caches, nodes) = monitor();
        assert!(m.judge(&nodes, Instant::now()).is_empty());
        // The watch's version expired behind the scenes; the informer listed again.
        tokio::time::advance(GRACE + secs(5)).await;
        caches
            .node_leases
            .cache
            .replace(vec![lease("n1", "1"), lease("n2", "1")]);
        assert!(m.judge(&nodes, Instant::now()).is_empty());
    }
}
