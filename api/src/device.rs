//! Device inventory as it appears in a Node's status: the devices a node's device plugins
//! discovered, their health, and the links between them (the topology the scheduler uses to pick
//! well-connected sets).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Every device a node offers, grouped by nothing: each device names its resource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceInventory {
    /// The devices, in index order within each resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    /// Links between pairs of devices (by device id), as `nvidia-smi topo -m` shows them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<DeviceLink>,
    /// NUMA nodes of the machine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub numa_nodes: Vec<NumaNode>,
}

/// One device (a GPU, a MIG slice, ...).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Device {
    /// Stable identifier used in bindings (a GPU's UUID, or a simulated id).
    pub id: String,
    /// The extended resource this device counts towards, e.g. `nvidia.com/gpu`.
    pub resource: String,
    /// Index on the node (as CUDA enumerates it).
    pub index: u32,
    /// Product name, e.g. `NVIDIA H100 80GB HBM3`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model: String,
    /// Device memory in MiB.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub memory_mib: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_bus_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<u32>,
    /// CPUs close to the device, as a list like `0-15,32-47`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_affinity: Option<String>,
    pub health: DeviceHealth,
    /// Why the device is unhealthy, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_reason: Option<String>,
    /// What brings an unhealthy device back, when its fault says (an XID's class); `None`
    /// when the plugin only knows it is unhealthy (it returns once it answers again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<DeviceRecovery>,
    /// Free-form attributes (MIG mode, compute capability, parent GPU of a MIG slice, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// What it takes to bring an unhealthy device back into service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeviceRecovery {
    /// A device reset, once no pod uses the device: the node agent tries it itself.
    Reset,
    /// The node must be drained and serviced (a reboot, a reseat): nothing is automatic; the
    /// node is tainted so no new pod lands on it.
    Drain,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeviceHealth {
    #[default]
    Healthy,
    Unhealthy,
}

/// How two devices are connected, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LinkKind {
    /// NVSwitch fabric: every pair at full NVLink bandwidth.
    NVSwitch,
    /// Direct NVLink, with `lanes` links bonded.
    NVLink,
    /// Same PCIe switch (PIX/PXB).
    PCIeSwitch,
    /// Through the host bridge of one CPU socket (PHB/NODE).
    PCIeHostBridge,
    /// Across sockets (SYS).
    CrossSocket,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceLink {
    pub a: String,
    pub b: String,
    pub kind: LinkKind,
    /// Bonded NVLink lanes (0 for PCIe links).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub lanes: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NumaNode {
    pub id: u32,
    /// CPUs of the node, as a list like `0-15,32-47`.
    pub cpus: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub memory_mib: u64,
}

/// CPU topology of a node: sockets, physical cores and hardware threads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CpuTopology {
    pub sockets: u32,
    /// Physical cores over all sockets.
    pub cores: u32,
    /// Logical CPUs (hardware threads) over all sockets.
    pub threads: u32,
    /// Groups of logical CPUs that share one physical core (hyperthread siblings), each as a
    /// list like `0,96`. Empty when only counts are known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub core_siblings: Vec<String>,
}

impl CpuTopology {
    /// Hardware threads per physical core (1 when unknown).
    pub fn threads_per_core(&self) -> u32 {
        self.threads.checked_div(self.cores).unwrap_or(1).max(1)
    }
}

impl std::fmt::Display for DeviceHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeviceHealth::Healthy => "Healthy",
            DeviceHealth::Unhealthy => "Unhealthy",
        })
    }
}

impl LinkKind {
    /// The abbreviation `nvidia-smi topo -m` prints for this kind (`NV#` for NVLink).
    pub fn abbreviation(self) -> &'static str {
        match self {
            LinkKind::NVSwitch | LinkKind::NVLink => "NV",
            LinkKind::PCIeSwitch => "PIX",
            LinkKind::PCIeHostBridge => "PHB",
            LinkKind::CrossSocket => "SYS",
        }
    }
}

impl DeviceLink {
    /// How good the link is, higher is better: NVSwitch, then NVLink by lane count, then the
    /// PCIe levels. Used to order devices so neighbours are the best connected.
    pub fn rank(&self) -> u32 {
        link_rank(Some(self))
    }
}

/// Rank of a link (see [`DeviceLink::rank`]); no known link ranks below every real one.
fn link_rank(link: Option<&DeviceLink>) -> u32 {
    match link {
        None => 0,
        Some(l) => match l.kind {
            LinkKind::NVSwitch => 10_000 + l.lanes,
            LinkKind::NVLink => 1_000 + l.lanes,
            LinkKind::PCIeSwitch => 300,
            LinkKind::PCIeHostBridge => 200,
            LinkKind::CrossSocket => 100,
        },
    }
}

impl Device {
    pub fn is_healthy(&self) -> bool {
        self.health == DeviceHealth::Healthy
    }
}

impl DeviceInventory {
    /// The device with this id.
    pub fn device(&self, id: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.id == id)
    }

    /// The link between two devices, in either direction.
    pub fn link(&self, a: &str, b: &str) -> Option<&DeviceLink> {
        self.links
            .iter()
            .find(|l| (l.a == a && l.b == b) || (l.a == b && l.b == a))
    }

    /// The kind of link between two devices, if the inventory records one.
    pub fn link_kind(&self, a: &str, b: &str) -> Option<LinkKind> {
        self.link(a, b).map(|l| l.kind)
    }

    /// Devices counting towards `resource`, in inventory order.
    pub fn devices_of<'a>(&'a self, resource: &'a str) -> impl Iterator<Item = &'a Device> + 'a {
        self.devices.iter().filter(move |d| d.resource == resource)
    }

    /// The worst link between any two of `ids` (`None` for fewer than two devices, or when a
    /// pair has no recorded link). A set is as fast as its slowest pair for all-reduce.
    pub fn bottleneck(&self, ids: &[&str]) -> Option<LinkKind> {
        let mut worst: Option<LinkKind> = None;
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                let kind = self.link_kind(a, b)?;
                worst = Some(worst.map_or(kind, |w| w.max(kind)));
            }
        }
        worst
    }

    /// Orders `ids` so that neighbours are the best connected: starting from the device with
    /// the lowest index, each next device is the one best linked to the previous (ties go to the
    /// lower index). This is the order `CUDA_VISIBLE_DEVICES` should list them in, so ring
    /// all-reduce runs over the fastest links. Ids not in the inventory keep their relative
    /// order at the end.
    pub fn order_by_topology(&self, ids: &[&str]) -> Vec<String> {
        let index_of = |id: &str| self.device(id).map_or(u32::MAX, |d| d.index);
        let (mut known, unknown): (Vec<&str>, Vec<&str>) = ids
            .iter()
            .copied()
            .partition(|id| self.device(id).is_some());
        known.sort_by_key(|id| (index_of(id), *id));
        known.dedup();
        let mut ordered: Vec<String> = Vec::with_capacity(ids.len());
        let mut rest = known;
        if !rest.is_empty() {
            let mut current = rest.remove(0);
            ordered.push(current.to_string());
            while !rest.is_empty() {
                // `rest` stays sorted by index, so `max_by_key` keeping the first maximum
                // would favour the highest index; compare on (rank, reversed position).
                let mut best = 0;
                let mut best_rank = link_rank(self.link(current, rest[0]));
                for (pos, cand) in rest.iter().enumerate().skip(1) {
                    let rank = link_rank(self.link(current, cand));
                    if rank > best_rank {
                        best = pos;
                        best_rank = rank;
                    }
                }
                current = rest.remove(best);
                ordered.push(current.to_string());
            }
        }
        ordered.extend(unknown.into_iter().map(str::to_string));
        ordered
    }

    /// Appends another plugin's inventory to this one.
    pub fn merge(&mut self, other: DeviceInventory) {
        self.devices.extend(other.devices);
        self.links.extend(other.links);
        for node in other.numa_nodes {
            if !self.numa_nodes.iter().any(|n| n.id == node.id) {
                self.numa_nodes.push(node);
            }
        }
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(i: u32) -> Device {
        Device {
            id: format!("g{i}"),
            resource: "example.com/gpu".into(),
            index: i,
            ..Default::default()
        }
    }

    fn link(a: u32, b: u32, kind: LinkKind, lanes: u32) -> DeviceLink {
        DeviceLink {
            a: format!("g{a}"),
            b: format!("g{b}"),
            kind,
            lanes,
        }
    }

    /// Four devices: NVLink pairs 0-1 and 2-3, host bridge between the pairs.
    fn pairs() -> DeviceInventory {
        let mut links = vec![
            link(0, 1, LinkKind::NVLink, 12),
            link(2, 3, LinkKind::NVLink, 12),
        ];
        for (a, b) in [(0, 2), (0, 3), (1, 2), (1, 3)] {
            links.push(link(a, b, LinkKind::PCIeHostBridge, 0));
        }
        DeviceInventory {
            devices: (0..4).map(gpu).collect(),
            links,
            numa_nodes: vec![],
        }
    }

    #[test]
    fn link_lookup_is_symmetric() {
        let inv = pairs();
        assert_eq!(inv.link_kind("g1", "g0"), Some(LinkKind::NVLink));
        assert_eq!(inv.link_kind("g0", "g1"), Some(LinkKind::NVLink));
        assert_eq!(inv.link_kind("g0", "g9"), None);
    }

    #[test]
    fn order_keeps_nvlink_pairs_adjacent() {
        let inv = pairs();
        let cases: &[(&[&str], &[&str])] = &[
            (&["g2", "g0", "g3", "g1"], &["g0", "g1", "g2", "g3"]),
            (&["g3", "g1", "g2"], &["g1", "g2", "g3"]),
            (&["g1", "g3", "x"], &["g1", "g3", "x"]),
            (&[], &[]),
        ];
        for (input, want) in cases {
            assert_eq!(inv.order_by_topology(input), *want, "input {input:?}");
        }
    }

    #[test]
    fn bottleneck_is_the_worst_pair() {
        let inv = pairs();
        assert_eq!(inv.bottleneck(&["g0", "g1"]), Some(LinkKind::NVLink));
        assert_eq!(
            inv.bottleneck(&["g0", "g1", "g2"]),
            Some(LinkKind::PCIeHostBridge)
        );
        assert_eq!(inv.bottleneck(&["g0"]), None);
    }

    proptest::proptest! {
        /// Ordering never drops, repeats or invents a device.
        #[test]
        fn order_is_a_permutation(picks in proptest::collection::vec(0u32..6, 0..8)) {
            let inv = pairs();
            let ids: Vec<String> = picks.iter().map(|i| format!("g{i}")).collect();
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let mut ordered = inv.order_by_topology(&refs);
            let mut want: Vec<String> = ids.clone();
            // Known ids are deduplicated; unknown ones (g4, g5) pass through as given.
            let known: std::collections::BTreeSet<&String> =
                want.iter().filter(|id| inv.device(id).is_some()).collect();
            let mut unknown: Vec<String> =
                want.iter().filter(|id| inv.device(id).is_none()).cloned().collect();
            want = known.into_iter().cloned().collect();
            want.append(&mut unknown);
            ordered.sort();
            want.sort();
            proptest::prop_assert_eq!(ordered, want);
        }
    }
}
