//! The Node object: what the agent registers (capacity, labels, addresses, devices, runtimes)
//! and keeps current (the `Ready` condition, device health) through `nodes/status`.

use std::collections::BTreeMap;

use drover_api::core::{
    DaemonEndpoint, NODE_READY, Node, NodeAddress, NodeDaemonEndpoints, NodeSystemInfo,
};
use drover_api::meta::{Condition, set_condition};
use drover_api::quantity::{Quantity, ResourceList};
use drover_client::{Api, Client, ClientError};
use drover_device_plugins::Discovery;

/// Pods a node accepts when not configured otherwise (Kubernetes' default).
pub const DEFAULT_MAX_PODS: u32 = 110;
/// The condition saying that containers run without resource limits.
pub const CONDITION_CGROUPS_UNAVAILABLE: &str = "CgroupsUnavailable";
/// Label keys every node gets.
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
pub const LABEL_ARCH: &str = "kubernetes.io/arch";
pub const LABEL_OS: &str = "kubernetes.io/os";
/// How many times a status write is retried on conflict.
const CONFLICT_RETRIES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot register node {node}: {source}")]
    Register {
        node: String,
        #[source]
        source: ClientError,
    },
    #[error("cannot update the status of node {node}: {source}")]
    Status {
        node: String,
        #[source]
        source: ClientError,
    },
    #[error("device plugin reported an invalid quantity {value:?} for {resource}")]
    Quantity { resource: String, value: String },
}

/// Everything the agent says about its node.
#[derive(Clone, Debug, Default)]
pub struct NodeFacts {
    pub name: String,
    pub ip: String,
    pub hostname: String,
    pub log_port: u16,
    pub max_pods: u32,
    pub runtimes: Vec<String>,
    /// Why containers run without limits, if they do.
    pub limits_unavailable: Option<String>,
    /// `hollow` for simulated nodes, else the agent's version.
    pub agent_version: String,
}

/// The architecture as Kubernetes names it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn capacity(
    discovery: &Discovery,
    max_pods: u32,
    healthy_only: bool,
) -> Result<ResourceList, NodeError> {
    let mut list = ResourceList::new();
    for (resource, value) in discovery.capacity() {
        let q = Quantity::parse(&value).map_err(|_| NodeError::Quantity {
            resource: resource.clone(),
            value: value.clone(),
        })?;
        list.insert(resource, q);
    }
    if healthy_only {
        for resource in discovery.resources.keys() {
            let devices: Vec<_> = discovery.inventory.devices_of(resource).collect();
            if !devices.is_empty() && list.contains_key(resource) {
                let healthy = devices.iter().filter(|d| d.is_healthy()).count();
                list.insert(resource.clone(), Quantity::from_value(healthy as i64));
            }
        }
    }
    list.insert("pods".into(), Quantity::from_value(i64::from(max_pods)));
    Ok(list)
}

/// The node's labels: discovery's plus hostname, arch and os.
pub fn labels(facts: &NodeFacts, discovery: &Discovery) -> BTreeMap<String, String> {
    let mut labels = discovery.labels.clone();
    labels.insert(LABEL_HOSTNAME.into(), facts.name.clone());
    labels.insert(LABEL_ARCH.into(), go_arch().into());
    labels.insert(LABEL_OS.into(), std::env::consts::OS.into());
    labels
}

/// Writes the status fields the agent owns into `node`.
pub fn fill_status(
    node: &mut Node,
    facts: &NodeFacts,
    discovery: &Discovery,
) -> Result<(), NodeError> {
    let now = chrono::Utc::now();
    let st = &mut node.status;
    st.capacity = capacity(discovery, facts.max_pods, false)?;
    st.allocatable = capacity(discovery, facts.max_pods, true)?;
    st.addresses = vec![
        NodeAddress {
            type_: "InternalIP".into(),
            address: facts.ip.clone(),
        },
        NodeAddress {
            type_: "Hostname".into(),
            address: facts.hostname.clone(),
        },
    ];
    st.node_info = Some(NodeSystemInfo {
        kernel_version: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        machine_id: std::fs::read_to_string("/etc/machine-id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        operating_system: std::env::consts::OS.into(),
        architecture: go_arch().into(),
        container_runtime_version: facts.runtimes.first().cloned().unwrap_or_default(),
        kubelet_version: facts.agent_version.clone(),
        ..Default::default()
    });
    st.daemon_endpoints = Some(NodeDaemonEndpoints {
        kubelet_endpoint: Some(DaemonEndpoint {
            port: i32::from(facts.log_port),
        }),
    });
    st.devices = Some(discovery.inventory.clone());
    st.runtimes = facts.runtimes.clone();
    let unhealthy: Vec<&str> = discovery
        .inventory
        .devices
        .iter()
        .filter(|d| !d.is_healthy())
        .map(|d| d.id.as_str())
        .collect();
    let ready_message = if unhealthy.is_empty() {
        "drover agent is posting ready status".to_string()
    } else {
        format!(
            "drover agent is posting ready status; unhealthy devices: {}",
            unhealthy.join(", ")
        )
    };
    set_condition(
        &mut st.conditions,
        Condition {
            type_: NODE_READY.into(),
            status: "True".into(),
            reason: "AgentReady".into(),
            message: ready_message,
            last_heartbeat_time: Some(now),
            ..Default::default()
        },
        now,
    );
    let (status, reason, message) = match &facts.limits_unavailable {
        Some(why) => (
            "True",
            "NoWritableCgroup",
            format!("containers run without resource limits: {why}"),
        ),
        None => (
            "False",
            "CgroupsWritable",
            "containers run with cgroup limits".to_string(),
        ),
    };
    set_condition(
        &mut st.conditions,
        Condition {
            type_: CONDITION_CGROUPS_UNAVAILABLE.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            last_heartbeat_time: Some(now),
            ..Default::default()
        },
        now,
    );
    Ok(())
}

/// Creates the Node, or brings an existing one up to date (labels merged, status replaced).
pub async fn register(
    client: &Client,
    facts: &NodeFacts,
    discovery: &Discovery,
) -> Result<Node, NodeError> {
    let api: Api<Node> = client.all();
    let err = |source| NodeError::Register {
        node: facts.name.clone(),
        source,
    };
    let mut node = match api.get_opt(&facts.name).await.map_err(err)? {
        Some(existing) => existing,
        None => {
            let mut node = Node::new(&facts.name);
            node.metadata.labels = labels(facts, discovery);
            match client.all().create(&node).await {
                Ok(n) => n,
                Err(e) if e.is_already_exists() => api.get(&facts.name).await.map_err(err)?,
                Err(e) => return Err(err(e)),
            }
        }
    };
    let wanted = labels(facts, discovery);
    if wanted
        .iter()
        .any(|(k, v)| node.metadata.labels.get(k) != Some(v))
    {
        node.metadata.labels.extend(wanted);
        node = api.update(&node).await.map_err(err)?;
    }
    fill_status(&mut node, facts, discovery)?;
    match api.update_status(&node).await {
        Ok(n) => Ok(n),
        Err(e) if e.is_conflict() => update_status(client, facts, discovery).await,
        Err(e) => Err(err(e)),
    }
}

/// Rewrites the node's status from fresh facts (re-reading the node on conflict).
pub async fn update_status(
    client: &Client,
    facts: &NodeFacts,
    discovery: &Discovery,
) -> Result<Node, NodeError> {
    let api: Api<Node> = client.all();
    let err = |source| NodeError::Status {
        node: facts.name.clone(),
        source,
    };
    let mut last = None;
    for _ in 0..CONFLICT_RETRIES {
        let mut node = api.get(&facts.name).await.map_err(err)?;
        fill_status(&mut node, facts, discovery)?;
        match api.update_status(&node).await {
            Ok(n) => return Ok(n),
            Err(e) if e.is_conflict() => last = Some(e),
            Err(e) => return Err(err(e)),
        }
    }
    Err(err(
        last.unwrap_or_else(|| ClientError::Config("conflict".into()))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_device_plugins::{DevicePlugin, SimulatedPlugin};

    #[test]
    fn status_counts_only_healthy_devices_as_allocatable() {
        let plugin = SimulatedPlugin::from_profile_name("h100-8", "n1").expect("profile");
        plugin
            .fail_device(&plugin.device_id(3), "xid 79")
            .expect("fail");
        let discovery = plugin.discover().expect("discover");
        let facts = NodeFacts {
            name: "n1".into(),
            ip: "10.0.0.1".into(),
            max_pods: 110,
            ..Default::default()
        };
        let mut node = Node::new("n1");
        fill_status(&mut node, &facts, &discovery).expect("status");
        assert_eq!(node.status.capacity["nvidia.com/gpu"].value(), 8);
        assert_eq!(node.status.allocatable["nvidia.com/gpu"].value(), 7);
        assert_eq!(node.status.capacity["pods"].value(), 110);
        assert!(node.is_ready());
        let l = labels(&facts, &discovery);
        assert_eq!(l[LABEL_HOSTNAME], "n1");
        assert_eq!(l["nvidia.com/gpu.count"], "8");
    }
}
