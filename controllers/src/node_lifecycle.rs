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
//! period to do so once the API is back.
//!
//! It runs on the controller runtime, one key per node: a node is reconciled when it or its
//! Lease changes, when its grace period would run out, and every `node_monitor_period` while it
//! is lost or the lease view is not current. Evictions share one rate limit per zone across
//! nodes ([`ZoneLimiter`]); the zone counts it needs are kept as nodes are judged, never by
//! scanning every node. A node's pods come from the pod cache's by-node index.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_api::coordination::Lease;
use drover_api::core::{NODE_READY, Node, Pod, Taint, taint_effect};
use drover_api::device::DeviceRecovery;
use drover_api::meta::{Condition, set_condition};
use drover_client::informer::{Change, View};
use drover_client::{Client, ClientError};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::ControllersConfig;
use crate::events::{Recorder, reason};
use crate::eviction::{ZONE_LABEL, ZoneLimiter};
use crate::runtime::{Action, Caches, QueueHandle, Reconciler};

/// The taint of a node whose agent cannot be reached.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// Reason of pods failed because their node was lost.
pub const NODE_LOST: &str = "NodeLost";
/// Reason of pods failed because a device they use failed.
pub const DEVICE_FAILED: &str = "DeviceFailed";
/// The taint of a node with a device whose fault needs the node serviced
/// ([`DeviceRecovery::Drain`]): no new pod lands there; the pods on its other devices run on.
pub const NEEDS_DRAIN_TAINT: &str = "drover.dev/device-needs-drain";

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
    /// The lease view's generation when `seen_at` was set.
    generation: u64,
    /// Admitted to eviction by the rate limiter.
    admitted: bool,
    /// The node's zone and whether it was lost, as last judged (for the zone counts).
    zone: String,
    lost: bool,
    /// Whether `zone`/`lost` are in the zone counts yet.
    counted: bool,
}

/// What the monitor remembers about every node, behind one lock.
#[derive(Debug)]
struct Monitor {
    health: HashMap<String, Health>,
    /// Per zone: nodes judged, and how many of them lost.
    zones: HashMap<String, (usize, usize)>,
    limiter: ZoneLimiter,
    /// The lease cache's view at the last judgement.
    lease_view: Option<View>,
}

impl Monitor {
    fn count(&mut self, zone: &str, lost: bool, add: bool) {
        let e = self.zones.entry(zone.to_string()).or_default();
        if add {
            e.0 += 1;
            e.1 += usize::from(lost);
        } else {
            e.0 = e.0.saturating_sub(1);
            e.1 = e.1.saturating_sub(usize::from(lost));
        }
        if e.0 == 0 {
            self.zones.remove(zone);
        }
    }

    /// Records a node's zone and lost state, keeping the zone counts.
    fn set(&mut self, name: &str, zone: &str, lost: bool) {
        let Some(h) = self.health.get_mut(name) else {
            return;
        };
        let old_zone = std::mem::replace(&mut h.zone, zone.to_string());
        let (old_lost, counted) = (h.lost, h.counted);
        h.lost = lost;
        h.counted = true;
        if counted {
            self.count(&old_zone, old_lost, false);
        }
        self.count(zone, lost, true);
    }

    fn forget(&mut self, name: &str) {
        if let Some(h) = self.health.remove(name)
            && h.counted
        {
            self.count(&h.zone, h.lost, false);
        }
    }
}

/// The judgement of one node's lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Seen renewed within the grace period; the period runs out after this long.
    Renewed(Duration),
    /// The lease view is not current (or just became current again): a fresh grace period.
    Blind,
    /// Not seen renewed for the grace period.
    Lost,
}

/// The node lifecycle monitor.
pub struct NodeLifecycle {
    client: Client,
    caches: Arc<Caches>,
    clock: Clock,
    events: Recorder,
    cfg: ControllersConfig,
    // Lock order: only this lock, never held across an await.
    monitor: Mutex<Monitor>,
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
            monitor: Mutex::new(Monitor {
                health: HashMap::new(),
                zones: HashMap::new(),
                limiter,
                lease_view: None,
            }),
        }
    }

    /// Queues a node when it or its lease changes.
    pub fn watch(&self, queue: &QueueHandle) {
        let q = queue.clone();
        self.caches
            .nodes
            .changes
            .subscribe(move |c: &Change<Node>| {
                if let Some(n) = c.object() {
                    q.add(&n.metadata.name);
                }
            });
        let q = queue.clone();
        self.caches
            .node_leases
            .changes
            .subscribe(move |c: &Change<Lease>| {
                if let Some(l) = c.object() {
                    q.add(&l.metadata.name);
                }
            });
    }

    fn monitor(&self) -> std::sync::MutexGuard<'_, Monitor> {
        self.monitor.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Judges `node`'s lease at `now`: updates when it was last seen renewed (from the lease
    /// cache) and says whether the grace period has run out.
    pub fn judge(&self, node: &str, now: Instant) -> Verdict {
        let renew = self.lease_renewal(node);
        let view = self.caches.node_leases.cache.view();
        let mut m = self.monitor();
        if m.lease_view != Some(view) {
            if m.lease_view.is_some() {
                tracing::info!(
                    ?view,
                    "lease view changed; every node gets a fresh grace period"
                );
            }
            m.lease_view = Some(view);
        }
        let h = m.health.entry(node.to_string()).or_insert(Health {
            renew: renew.clone(),
            seen_at: now,
            generation: view.generation,
            admitted: false,
            zone: String::new(),
            lost: false,
            counted: false,
        });
        // Renewals made while the watch was broken were not seen when they happened: start the
        // grace period again from now, while broken and once current again.
        if !view.current || h.generation != view.generation {
            h.renew = renew;
            h.seen_at = now;
            h.generation = view.generation;
            return Verdict::Blind;
        }
        if h.renew != renew {
            h.renew = renew;
            h.seen_at = now;
        }
        let since = now.saturating_duration_since(h.seen_at);
        match self.cfg.node_monitor_grace_period.checked_sub(since) {
            Some(left) if !left.is_zero() => Verdict::Renewed(left),
            _ => Verdict::Lost,
        }
    }

    /// Judges one node and acts on it: untaints it when renewed, taints and (rate limited)
    /// evicts its pods when lost, fails the pods on its failed devices either way. Returns when
    /// to look again.
    async fn reconcile_node(&self, node: &Node, now: Instant) -> Action {
        let name = &node.metadata.name;
        let verdict = self.judge(name, now);
        let lost = verdict == Verdict::Lost;
        let zone = node
            .metadata
            .labels
            .get(ZONE_LABEL)
            .cloned()
            .unwrap_or_default();
        {
            let mut m = self.monitor();
            m.set(name, &zone, lost);
            let zones = m.zones.clone();
            m.limiter.update(&zones, now);
            if !lost && let Some(h) = m.health.get_mut(name) {
                h.admitted = false;
            }
        }
        if lost {
            if let Err(e) = self.handle_unreachable(node, &zone, now).await {
                tracing::warn!(error = %e, "cannot handle unreachable node");
            }
        } else if let Err(e) = self.mark_reachable(node).await {
            tracing::warn!(error = %e, "cannot clear the unreachable taint");
        }
        self.fail_pods_on_failed_devices(node).await;
        if let Err(e) = self.sync_drain_taint(node).await {
            tracing::warn!(error = %e, "cannot update the device-needs-drain taint");
        }
        match verdict {
            // A little past the deadline, so the next look finds it run out.
            Verdict::Renewed(left) => Action::RequeueAfter(left + Duration::from_millis(10)),
            Verdict::Blind | Verdict::Lost => Action::RequeueAfter(self.cfg.node_monitor_period),
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
        &self,
        node: &Node,
        zone: &str,
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
            .pods_on(&name)
            .into_iter()
            .filter(|p| !p.is_terminal())
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
        {
            let mut m = self.monitor();
            let admitted = m.health.get(&name).is_some_and(|h| h.admitted);
            if !admitted {
                if !m.limiter.admit(zone, now) {
                    tracing::info!(node = %name, zone = %zone, state = ?m.limiter.state(zone), "eviction rate-limited");
                    return Ok(());
                }
                if let Some(h) = m.health.get_mut(&name) {
                    h.admitted = true;
                }
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

    /// Taints the node [`NEEDS_DRAIN_TAINT`]`:NoSchedule` while one of its devices needs the
    /// node serviced, and removes the taint once none does.
    async fn sync_drain_taint(&self, node: &Node) -> Result<(), NodeLifecycleError> {
        let needing: Vec<&drover_api::device::Device> = node
            .status
            .devices
            .iter()
            .flat_map(|inv| inv.devices.iter())
            .filter(|d| !d.is_healthy() && d.recovery == Some(DeviceRecovery::Drain))
            .collect();
        let tainted = node.spec.taints.iter().any(|t| t.key == NEEDS_DRAIN_TAINT);
        if needing.is_empty() != tainted {
            return Ok(());
        }
        let mut n = node.clone();
        n.spec.taints.retain(|t| t.key != NEEDS_DRAIN_TAINT);
        if !needing.is_empty() {
            n.spec.taints.push(Taint {
                key: NEEDS_DRAIN_TAINT.into(),
                value: String::new(),
                effect: taint_effect::NO_SCHEDULE.into(),
                time_added: Some(self.clock.now()),
            });
        }
        match self.client.all::<Node>().update(&n).await {
            Ok(_) => {}
            Err(e) if e.is_conflict() || e.is_not_found() => return Ok(()),
            Err(e) => return Err(Self::err(node)(e)),
        }
        let name = &node.metadata.name;
        if needing.is_empty() {
            tracing::info!(node = %name, "no device needs the node serviced; drain taint removed");
            self.events.normal(
                node,
                reason::DEVICES_SERVICED,
                format!(
                    "Node {name}: no device needs servicing any more; {NEEDS_DRAIN_TAINT} removed"
                ),
            );
        } else {
            let what: Vec<String> = needing
                .iter()
                .map(|d| {
                    format!(
                        "{} ({})",
                        d.id,
                        d.health_reason.as_deref().unwrap_or("unhealthy")
                    )
                })
                .collect();
            tracing::warn!(node = %name, devices = ?what, "device needs the node serviced; tainted");
            self.events.warning(
                node,
                reason::DEVICE_NEEDS_DRAIN,
                format!(
                    "Node {name} needs draining and servicing: {}; tainted {NEEDS_DRAIN_TAINT}:NoSchedule",
                    what.join(", ")
                ),
            );
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
            .pods_on(&node.metadata.name)
            .into_iter()
            .filter(|p| !p.is_terminal() && p.metadata.deletion_timestamp.is_none())
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

impl Reconciler for NodeLifecycle {
    const NAME: &'static str = "node-lifecycle";
    type Error = std::convert::Infallible;

    async fn reconcile(&self, key: &str) -> Result<Action, Self::Error> {
        let Some(node) = self.caches.nodes.cache.get(key) else {
            // Deleted: nothing to watch any more (its pods are PodGC's orphans).
            self.monitor().forget(key);
            return Ok(Action::AwaitChange);
        };
        Ok(self.reconcile_node(&node, Instant::now()).await)
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

    /// The nodes judged lost at `now`, as the runtime would judge each of them.
    fn lost(m: &NodeLifecycle, nodes: &[Arc<Node>], now: Instant) -> Vec<String> {
        nodes
            .iter()
            .filter(|n| m.judge(&n.metadata.name, now) == Verdict::Lost)
            .map(|n| n.metadata.name.clone())
            .collect()
    }

    /// Zone counts follow nodes as they are judged, move zones, are lost and are forgotten.
    #[tokio::test(start_paused = true)]
    async fn zone_counts_follow_nodes() {
        let (m, _caches, _nodes) = monitor();
        let now = Instant::now();
        for n in ["a", "b", "c"] {
            m.judge(n, now);
        }
        let mut mon = m.monitor();
        mon.set("a", "z1", false);
        mon.set("b", "z1", false);
        mon.set("c", "z2", false);
        assert_eq!(mon.zones.get("z1"), Some(&(2, 0)));
        mon.set("b", "z1", true);
        mon.set("b", "z1", true);
        assert_eq!(mon.zones.get("z1"), Some(&(2, 1)));
        mon.set("c", "z1", true);
        assert_eq!(mon.zones.get("z1"), Some(&(3, 2)));
        assert_eq!(mon.zones.get("z2"), None);
        mon.forget("b");
        mon.forget("b");
        assert_eq!(mon.zones.get("z1"), Some(&(2, 1)));
    }

    fn secs(s: u64) -> std::time::Duration {
        std::time::Duration::from_secs(s)
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_not_renewed_for_the_grace_period_is_lost() {
        let (m, caches, nodes) = monitor();
        assert!(lost(&m, &nodes, Instant::now()).is_empty());
        tokio::time::advance(GRACE - secs(1)).await;
        caches
            .node_leases
            .cache
            .apply(drover_client::WatchEvent::Modified(lease("n2", "2")));
        assert!(lost(&m, &nodes, Instant::now()).is_empty());
        tokio::time::advance(secs(2)).await;
        assert_eq!(lost(&m, &nodes, Instant::now()), ["n1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_longer_than_the_grace_period_loses_no_node() {
        let (m, caches, nodes) = monitor();
        assert!(lost(&m, &nodes, Instant::now()).is_empty());
        // The API goes away: the lease watch breaks, nobody renews, passes go on.
        caches.node_leases.cache.mark_broken();
        for _ in 0..4 {
            tokio::time::advance(GRACE / 2).await;
            assert!(
                lost(&m, &nodes, Instant::now()).is_empty(),
                "judged while blind"
            );
        }
        // The watch resumes; the agents need a moment to renew.
        caches.node_leases.cache.mark_current();
        assert!(lost(&m, &nodes, Instant::now()).is_empty());
        tokio::time::advance(GRACE - secs(1)).await;
        assert!(
            lost(&m, &nodes, Instant::now()).is_empty(),
            "the grace period restarts at the resync"
        );
        caches
            .node_leases
            .cache
            .apply(drover_client::WatchEvent::Modified(lease("n1", "2")));
        tokio::time::advance(secs(2)).await;
        // n2's agent never came back: it is lost a grace period after the view was current.
        assert_eq!(lost(&m, &nodes, Instant::now()), ["n2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_relist_gives_every_node_a_fresh_grace_period() {
        let (m, caches, nodes) = monitor();
        assert!(lost(&m, &nodes, Instant::now()).is_empty());
        // The watch's version expired behind the scenes; the informer listed again.
        tokio::time::advance(GRACE + secs(5)).await;
        caches
            .node_leases
            .cache
            .replace(vec![lease("n1", "1"), lease("n2", "1")]);
        assert!(lost(&m, &nodes, Instant::now()).is_empty());
    }
}
