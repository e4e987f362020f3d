//! Invariants of the decision, on random clusters and workloads: no device or resource is ever
//! given twice, shares never pass one device, an unhealthy device is never assigned, a bound pod
//! always fits, and a gang is placed whole or not at all.

use std::collections::{BTreeMap, BTreeSet};

use drover_api::core::Node;
use drover_api::core::{Affinity, PodAffinity, PodAffinityTerm, TopologySpreadConstraint};
use drover_api::scheduling::PodGroup;
use drover_scheduler::Simulator;
use drover_scheduler::algorithm::Search;
use drover_scheduler::cache::Placement;
use drover_scheduler::testing::{GpuProfile, node, pod, selector};
use proptest::prelude::*;

fn profile(i: u8) -> GpuProfile {
    match i % 3 {
        0 => GpuProfile::H100x8,
        1 => GpuProfile::A100x8,
        _ => GpuProfile::L4x4,
    }
}

fn cluster(shapes: &[(u8, u8)]) -> Vec<Node> {
    shapes
        .iter()
        .enumerate()
        .map(|(i, (p, unhealthy))| {
            let mut b = node(&format!("n{i}")).cpu("32").gpus(profile(*p));
            for bit in 0..8 {
                if unhealthy & (1 << bit) != 0 {
                    b = b.unhealthy(bit);
                }
            }
            b.build()
        })
        .collect()
}

/// (cpu cores, whole gpus, share milli)
fn pod_shape() -> impl Strategy<Value = (u8, u8, u16)> {
    prop_oneof![
        (0u8..8, 1u8..=8, Just(0u16)),
        (0u8..8, Just(0u8), 50u16..1000),
        (1u8..16, Just(0u8), Just(0u16)),
    ]
}

fn check(nodes: &[Node], placed: &[(Placement, (u8, u8, u16))]) -> Result<(), TestCaseError> {
    let mut whole: BTreeSet<String> = BTreeSet::new();
    let mut shares: BTreeMap<String, u32> = BTreeMap::new();
    let mut cpu: BTreeMap<String, u32> = BTreeMap::new();
    for (p, (c, gpus, share)) in placed {
        let node = nodes
            .iter()
            .find(|n| *n.metadata.name == *p.node_name)
            .expect("node");
        let inv = node.status.devices.as_ref().expect("inventory");
        *cpu.entry(p.node_name.to_string()).or_default() += u32::from(*c);
        let ids: Vec<&String> = p.devices.iter().flat_map(|d| &d.ids).collect();
        if *gpus > 0 {
            prop_assert_eq!(ids.len(), usize::from(*gpus));
        }
        for d in &p.devices {
            for id in &d.ids {
                let dev = inv.device(id).expect("known device");
                prop_assert!(dev.is_healthy(), "unhealthy device {} assigned", id);
                match d.share_milli {
                    Some(m) => *shares.entry(id.clone()).or_default() += m,
                    None => prop_assert!(whole.insert(id.clone()), "device {} given twice", id),
                }
            }
        }
        if *share > 0 {
            prop_assert_eq!(ids.len(), 1);
        }
    }
    for (id, total) in &shares {
        prop_assert!(
            *total <= 1000,
            "device {} shared past one GPU: {}",
            id,
            total
        );
        prop_assert!(!whole.contains(id), "device {} both whole and shared", id);
    }
    for (n, used) in cpu {
        prop_assert!(used <= 32, "node {} over its cpu: {}", n, used);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn nothing_is_given_twice(
        shapes in proptest::collection::vec((0u8..3, 0u8..=255), 1..6),
        pods in proptest::collection::vec(pod_shape(), 1..40),
    ) {
        let nodes = cluster(&shapes);
        let mut sim = Simulator::new(nodes.clone());
        let mut placed = Vec::new();
        for (i, (c, gpus, share)) in pods.iter().enumerate() {
            let mut b = pod("ns", &format!("p{i}")).cpu(&c.to_string());
            if *gpus > 0 {
                b = b.gpus(u32::from(*gpus));
            }
            if *share > 0 {
                b = b.gpu_share(u32::from(*share));
            }
            if let Ok(p) = sim.schedule(b.build()) {
                placed.push((p, (*c, *gpus, *share)));
            }
        }
        check(&nodes, &placed)?;
        let (used, total) = sim.gpu_allocation();
        prop_assert!(used <= total);
    }

    #[test]
    fn gangs_are_all_or_nothing(
        shapes in proptest::collection::vec((0u8..3, 0u8..=3), 1..4),
        gangs in proptest::collection::vec((1usize..6, 1u8..=8), 1..6),
    ) {
        let nodes = cluster(&shapes);
        let mut sim = Simulator::new(nodes.clone());
        let mut placed = Vec::new();
        for (g, (size, gpus)) in gangs.iter().enumerate() {
            let name = format!("g{g}");
            let group = PodGroup::new("ns", &name, *size as i32);
            let members: Vec<_> = (0..*size)
                .map(|i| pod("ns", &format!("{name}-{i}")).gpus(u32::from(*gpus)).gang(&name).build())
                .collect();
            let before = sim.gpu_allocation();
            match sim.schedule_gang(&group, members) {
                Ok(pls) => {
                    prop_assert_eq!(pls.len(), *size, "gang placed partly");
                    placed.extend(pls.into_iter().map(|p| (p, (0, *gpus, 0))));
                }
                Err(_) => prop_assert_eq!(sim.gpu_allocation(), before, "failed gang held resources"),
            }
        }
        check(&nodes, &placed)?;
    }
}

/// A pod for the class test: (cpu, gpus, share, rule) where rule picks a node selector, a
/// required pod affinity or anti-affinity by rack, a spread constraint, a required node
/// affinity (rack In r0, r2), or nothing.
fn class_pod(i: usize, (c, gpus, share): (u8, u8, u16), rule: u8) -> drover_api::core::Pod {
    let mut b = pod("ns", &format!("q{i}"))
        .cpu(&c.to_string())
        .label("app", if i.is_multiple_of(2) { "a" } else { "b" });
    if gpus > 0 {
        b = b.gpus(u32::from(gpus));
    }
    if share > 0 {
        b = b.gpu_share(u32::from(share));
    }
    let term = PodAffinityTerm {
        label_selector: Some(selector("app", "a")),
        topology_key: "rack".into(),
        ..Default::default()
    };
    let required = PodAffinity {
        required_during_scheduling_ignored_during_execution: vec![term],
        ..Default::default()
    };
    match rule % 6 {
        1 => b.node_selector("rack", "r1"),
        2 => b.affinity(Affinity {
            pod_affinity: Some(required),
            ..Default::default()
        }),
        3 => b.affinity(Affinity {
            pod_anti_affinity: Some(required),
            ..Default::default()
        }),
        4 => b.spread(TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "rack".into(),
            when_unsatisfiable: "DoNotSchedule".into(),
            label_selector: Some(selector("app", "a")),
            ..Default::default()
        }),
        5 => b.node_affinity_in("rack", &["r0", "r2"]),
        _ => b,
    }
    .build()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Node classes change the cost of a decision, never the decision: on random clusters
    /// (with racks, taints and load) every pod goes where visiting every node would put it.
    #[test]
    fn classes_decide_as_every_node_does(
        shapes in proptest::collection::vec((0u8..3, 0u8..=3, 0u8..4), 1..12),
        pods in proptest::collection::vec((pod_shape(), 0u8..6), 1..30),
    ) {
        let nodes: Vec<Node> = shapes
            .iter()
            .enumerate()
            .map(|(i, (p, unhealthy, rack))| {
                let mut b = node(&format!("n{i}"))
                    .cpu("32")
                    .gpus(profile(*p))
                    .label("rack", &format!("r{rack}"));
                if *unhealthy & 1 != 0 {
                    b = b.unhealthy(1);
                }
                if *rack == 3 {
                    b = b.taint("maintenance", "PreferNoSchedule");
                }
                b.build()
            })
            .collect();
        let mut sim = Simulator::new(nodes);
        for (i, (shape, rule)) in pods.iter().enumerate() {
            let p = class_pod(i, *shape, *rule);
            let by_class = sim.decide_with(&p, Search::Classes).ok();
            let by_node = sim.decide_with(&p, Search::PerNode).ok();
            prop_assert_eq!(&by_class, &by_node, "pod {}", i);
            // Commit it, so later pods see load, affinity and spread counts.
            let _ = sim.schedule(p);
        }
    }
}
