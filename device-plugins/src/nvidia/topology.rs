//! Turning what NVML says about pairs of GPUs into [`DeviceLink`]s: the PCIe level of each pair,
//! and where each GPU's active NVLinks lead. Pure, so it is tested without a GPU.

use drover_api::device::{DeviceLink, LinkKind};
use nvml_wrapper::enum_wrappers::device::TopologyLevel;

/// Where one active NVLink of a GPU leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NvlinkEnd {
    /// PCI bus id of the device at the other end.
    pub remote_bus_id: String,
    /// NVML says the other end is an NVSwitch.
    pub remote_is_switch: bool,
}

/// The link kind `nvidia-smi topo -m` shows for a PCIe relationship: `PIX`/`PXB` (one or more
/// switches), `PHB`/`NODE` (a host bridge, one socket), `SYS` (across sockets).
pub(crate) fn pcie_link_kind(level: TopologyLevel) -> LinkKind {
    match level {
        TopologyLevel::Internal | TopologyLevel::Single | TopologyLevel::Multiple => {
            LinkKind::PCIeSwitch
        }
        TopologyLevel::HostBridge | TopologyLevel::Node => LinkKind::PCIeHostBridge,
        TopologyLevel::System => LinkKind::CrossSocket,
    }
}

/// A PCI bus id in one spelling: NVML writes the domain with 8 digits in some places and 4 in
/// others (`00000000:17:00.0`, `0000:17:00.0`).
pub(crate) fn normalize_bus_id(bus_id: &str) -> String {
    let bus_id = bus_id.trim().to_ascii_lowercase();
    match bus_id.split_once(':') {
        Some((domain, rest)) => match u32::from_str_radix(domain, 16) {
            Ok(domain) => format!("{domain:04x}:{rest}"),
            Err(_) => bus_id,
        },
        None => bus_id,
    }
}

/// One link per pair of GPUs. GPUs `i` and `j` are on an NVSwitch fabric when both have
/// NVLinks into switches (or into anything that is not one of the GPUs: NVML does not always
/// report the remote type), on direct NVLink when `i`'s links reach `j`, else on the PCIe
/// level `pcie(i, j)` reports; a pair with none of these gets no link.
pub(crate) fn build_links(
    ids: &[String],
    bus_ids: &[String],
    nvlinks: &[Vec<NvlinkEnd>],
    pcie: impl Fn(usize, usize) -> Option<LinkKind>,
) -> Vec<DeviceLink> {
    let buses: Vec<String> = bus_ids.iter().map(|b| normalize_bus_id(b)).collect();
    let gpu_at = |bus: &str| {
        let bus = normalize_bus_id(bus);
        buses.iter().position(|b| *b == bus)
    };
    let n = ids.len();
    let mut switch_lanes = vec![0u32; n];
    let mut direct = vec![vec![0u32; n]; n];
    for (i, ends) in nvlinks.iter().enumerate().take(n) {
        for end in ends {
            match gpu_at(&end.remote_bus_id) {
                Some(j) if !end.remote_is_switch && j != i => direct[i][j] += 1,
                Some(_) => {}
                None => switch_lanes[i] += 1,
            }
        }
    }
    let mut links = Vec::with_capacity(n * n.saturating_sub(1) / 2);
    for i in 0..n {
        for j in i + 1..n {
            let lanes = direct[i][j].max(direct[j][i]);
            let (kind, lanes) = if switch_lanes[i] > 0 && switch_lanes[j] > 0 {
                (LinkKind::NVSwitch, switch_lanes[i].min(switch_lanes[j]))
            } else if lanes > 0 {
                (LinkKind::NVLink, lanes)
            } else {
                match pcie(i, j) {
                    Some(kind) => (kind, 0),
                    None => continue,
                }
            };
            links.push(DeviceLink {
                a: ids[i].clone(),
                b: ids[j].clone(),
                kind,
                lanes,
            });
        }
    }
    links
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> (Vec<String>, Vec<String>) {
        (
            (0..n).map(|i| format!("GPU-{i}")).collect(),
            (0..n)
                .map(|i| format!("00000000:{:02X}:00.0", 0x10 + i))
                .collect(),
        )
    }

    fn to(bus: &str, lanes: usize, switch: bool) -> Vec<NvlinkEnd> {
        vec![
            NvlinkEnd {
                remote_bus_id: bus.to_string(),
                remote_is_switch: switch,
            };
            lanes
        ]
    }

    #[test]
    fn bus_ids_compare_across_spellings() {
        assert_eq!(normalize_bus_id("00000000:17:00.0"), "0000:17:00.0");
        assert_eq!(normalize_bus_id("0000:17:00.0"), "0000:17:00.0");
        assert_eq!(normalize_bus_id("00000001:AB:00.0"), "0001:ab:00.0");
    }

    #[test]
    fn pcie_levels() {
        let cases = [
            (TopologyLevel::Internal, LinkKind::PCIeSwitch),
            (TopologyLevel::Single, LinkKind::PCIeSwitch),
            (TopologyLevel::Multiple, LinkKind::PCIeSwitch),
            (TopologyLevel::HostBridge, LinkKind::PCIeHostBridge),
            (TopologyLevel::Node, LinkKind::PCIeHostBridge),
            (TopologyLevel::System, LinkKind::CrossSocket),
        ];
        for (level, kind) in cases {
            assert_eq!(pcie_link_kind(level), kind, "{level:?}");
        }
    }

    #[test]
    fn nvswitch_fabric() {
        let (ids, buses) = ids(3);
        // Remote ends are switches: not GPUs, and (on some drivers) typed as such.
        let nvlinks = vec![
            to("0000:a0:00.0", 18, false),
            to("0000:a1:00.0", 18, true),
            to("0000:a2:00.0", 12, false),
        ];
        let links = build_links(&ids, &buses, &nvlinks, |_, _| Some(LinkKind::CrossSocket));
        assert_eq!(links.len(), 3);
        assert!(links.iter().all(|l| l.kind == LinkKind::NVSwitch));
        assert_eq!(links[1].lanes, 12, "a pair is as wide as its narrower side");
    }

    #[test]
    fn nvlink_pairs_and_pcie() {
        let (ids, buses) = ids(4);
        let nvlinks = vec![
            to(&buses[1], 12, false),
            to("0000:11:00.0", 12, false),
            vec![],
            vec![],
        ];
        let links = build_links(&ids, &buses, &nvlinks, |i, j| {
            (i / 2 == j / 2).then_some(LinkKind::PCIeHostBridge)
        });
        let kinds: Vec<(&str, &str, LinkKind, u32)> = links
            .iter()
            .map(|l| (l.a.as_str(), l.b.as_str(), l.kind, l.lanes))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("GPU-0", "GPU-1", LinkKind::NVLink, 12),
                ("GPU-2", "GPU-3", LinkKind::PCIeHostBridge, 0),
            ]
        );
    }
}
