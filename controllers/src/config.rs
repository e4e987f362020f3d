//! The controller manager's settings, with Kubernetes-like defaults as named constants.

use std::time::Duration;

/// The Lease the controller managers elect a leader through.
pub const DEFAULT_LEASE_NAME: &str = "drover-controller-manager";
pub const DEFAULT_LEASE_NAMESPACE: &str = "kube-system";
/// How long a leader's lease lasts without renewal.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// A leader that has not renewed for this long steps down (shorter than the lease, so it stops
/// before anyone else may start).
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often leaders renew and candidates retry.
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);
/// Where node agents renew their node's Lease.
pub const DEFAULT_NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// A node whose lease has not been renewed for this long is unreachable.
pub const DEFAULT_NODE_MONITOR_GRACE_PERIOD: Duration = Duration::from_secs(15);
/// How often node health is checked.
pub const DEFAULT_NODE_MONITOR_PERIOD: Duration = Duration::from_secs(1);
/// How long pods stay on an unreachable node before they are failed (`NodeLost`), unless they
/// tolerate the taint for a different time.
pub const DEFAULT_POD_EVICTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Nodes evicted per second in a healthy zone.
pub const DEFAULT_NODE_EVICTION_RATE: f64 = 0.1;
/// Nodes evicted per second in a zone where many nodes are unhealthy.
pub const DEFAULT_SECONDARY_NODE_EVICTION_RATE: f64 = 0.01;
/// Share of a zone's nodes that must be unhealthy (with at least three) for the secondary rate.
pub const DEFAULT_UNHEALTHY_ZONE_THRESHOLD: f64 = 0.55;
/// Finished pods kept before the oldest are deleted (Kubernetes: 12500).
pub const DEFAULT_TERMINATED_POD_GC_THRESHOLD: usize = 12500;
/// How often the pod garbage collector sweeps (the owner-reference collector reacts to changes).
pub const DEFAULT_GC_PERIOD: Duration = Duration::from_secs(20);
/// How long a pod's node must stay missing before the pod is collected as orphaned (Kubernetes'
/// PodGC `quarantineTime`): a node deleted and registered again within it keeps its pods.
pub const DEFAULT_ORPHANED_POD_QUARANTINE: Duration = Duration::from_secs(40);

/// Settings of [`crate::run`].
#[derive(Clone, Debug)]
pub struct ControllersConfig {
    /// This manager's identity in the leader lease (host name and a random part by default).
    pub identity: String,
    pub leader_elect: bool,
    pub lease_name: String,
    pub lease_namespace: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    pub node_lease_namespace: String,
    pub node_monitor_grace_period: Duration,
    pub node_monitor_period: Duration,
    pub pod_eviction_timeout: Duration,
    pub node_eviction_rate: f64,
    pub secondary_node_eviction_rate: f64,
    pub unhealthy_zone_threshold: f64,
    pub terminated_pod_gc_threshold: usize,
    /// Finished pods older than this (since they finished) are deleted, if set.
    pub terminated_pod_ttl: Option<Duration>,
    pub gc_period: Duration,
    /// How long a pod's node must be missing before the pod is collected.
    pub orphaned_pod_quarantine: Duration,
    /// Reconciles per controller at once.
    pub concurrency: usize,
}

impl Default for ControllersConfig {
    fn default() -> Self {
        ControllersConfig {
            identity: drover_client::leader::default_identity(),
            leader_elect: false,
            lease_name: DEFAULT_LEASE_NAME.into(),
            lease_namespace: DEFAULT_LEASE_NAMESPACE.into(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
            node_lease_namespace: DEFAULT_NODE_LEASE_NAMESPACE.into(),
            node_monitor_grace_period: DEFAULT_NODE_MONITOR_GRACE_PERIOD,
            node_monitor_period: DEFAULT_NODE_MONITOR_PERIOD,
            pod_eviction_timeout: DEFAULT_POD_EVICTION_TIMEOUT,
            node_eviction_rate: DEFAULT_NODE_EVICTION_RATE,
            secondary_node_eviction_rate: DEFAULT_SECONDARY_NODE_EVICTION_RATE,
            unhealthy_zone_threshold: DEFAULT_UNHEALTHY_ZONE_THRESHOLD,
            terminated_pod_gc_threshold: DEFAULT_TERMINATED_POD_GC_THRESHOLD,
            terminated_pod_ttl: None,
            gc_period: DEFAULT_GC_PERIOD,
            orphaned_pod_quarantine: DEFAULT_ORPHANED_POD_QUARANTINE,
            concurrency: crate::runtime::DEFAULT_CONCURRENCY,
        }
    }
}

impl ControllersConfig {
    pub fn leader_elect(mut self, on: bool) -> Self {
        self.leader_elect = on;
        self
    }

    pub fn identity(mut self, id: impl Into<String>) -> Self {
        self.identity = id.into();
        self
    }

    pub fn node_monitor_grace_period(mut self, d: Duration) -> Self {
        self.node_monitor_grace_period = d;
        self
    }

    pub fn pod_eviction_timeout(mut self, d: Duration) -> Self {
        self.pod_eviction_timeout = d;
        self
    }
}
