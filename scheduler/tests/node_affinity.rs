//! NodeAffinity's pre-filter compiles `nodeSelector` and required node affinity against the
//! snapshot's label index; its filter then decides every node exactly as the plain per-node
//! evaluation (`node_matches`) does, on random clusters whose labels change node by node, and
//! on nodes the index does not describe.

use std::collections::BTreeMap;
use std::sync::Arc;

use drover_api::core::node_operator;
use drover_api::core::{
    Affinity, NodeAffinity as NodeAffinitySpec, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm,
};
use drover_scheduler::cache::{NodeInfo, PlanState, PodInfo, Snapshot};
use drover_scheduler::framework::{Code, CycleState, Plugin};
use drover_scheduler::plugins::node_affinity::NodeAffinity;
use drover_scheduler::shared::node_selection::node_matches;
use drover_scheduler::testing::{node, pod};
use proptest::prelude::*;

const KEYS: [&str; 3] = ["zone", "rack", "size"];

/// A node: for each key a value (3: none).
type NodeSpec = [u8; 3];
/// A requirement: (key, operator, values, on the name field instead).
type ReqSpec = (u8, u8, Vec<u8>, bool);

fn value(k: usize, v: u8) -> String {
    // `size` is numeric, for Gt and Lt; the others are not.
    if k == 2 {
        format!("{v}")
    } else {
        format!("{}{v}", &KEYS[k][..1])
    }
}

fn make_node(name: &str, spec: NodeSpec) -> NodeInfo {
    let mut b = node(name);
    for (k, v) in spec.iter().enumerate() {
        if *v < 3 {
            b = b.label(KEYS[k], &value(k, *v));
        }
    }
    b.info()
}

fn req((k, op, values, field): &ReqSpec, names: usize) -> NodeSelectorRequirement {
    let k = *k as usize % KEYS.len();
    NodeSelectorRequirement {
        key: if *field {
            "metadata.name".into()
        } else {
            KEYS[k].into()
        },
        operator: node_operator::ALL[*op as usize % node_operator::ALL.len()].into(),
        values: values
            .iter()
            .map(|v| {
                if *field {
                    format!("n{}", *v as usize % names.max(1))
                } else {
                    value(k, *v)
                }
            })
            .collect(),
    }
}

fn make_pod(
    selector: &[(u8, u8)],
    terms: &Option<Vec<Vec<ReqSpec>>>,
    names: usize,
) -> Arc<PodInfo> {
    let mut p = pod("ns", "p").build();
    for (k, v) in selector {
        let k = *k as usize % KEYS.len();
        p.spec.node_selector.insert(KEYS[k].into(), value(k, *v));
    }
    if let Some(terms) = terms {
        let node_selector_terms = terms
            .iter()
            .map(|t| {
                let (fields, exprs): (Vec<&ReqSpec>, Vec<&ReqSpec>) = t.iter().partition(|r| r.3);
                NodeSelectorTerm {
                    match_expressions: exprs.into_iter().map(|r| req(r, names)).collect(),
                    match_fields: fields.into_iter().map(|r| req(r, names)).collect(),
                }
            })
            .collect();
        p.spec.affinity = Some(Affinity {
            node_affinity: Some(NodeAffinitySpec {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms,
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    Arc::new(PodInfo::new(Arc::new(p)))
}

fn req_spec() -> impl Strategy<Value = ReqSpec> {
    (
        0u8..3,
        0u8..6,
        prop::collection::vec(0u8..4, 0..3),
        prop::bool::weighted(0.15),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn compiled_node_affinity_decides_as_per_node(
        nodes in prop::collection::vec([0u8..4, 0u8..4, 0u8..4], 1..10),
        relabeled in prop::collection::vec((0usize..10, [0u8..4, 0u8..4, 0u8..4]), 0..4),
        removed in prop::option::of(0usize..10),
        stranger in [0u8..4, 0u8..4, 0u8..4],
        selector in prop::collection::vec((0u8..3, 0u8..4), 0..3),
        terms in prop::option::of(prop::collection::vec(
            prop::collection::vec(req_spec(), 0..3), 0..3)),
    ) {
        let mut snap = Snapshot::default();
        for (i, spec) in nodes.iter().enumerate() {
            snap.put(make_node(&format!("n{i}"), *spec));
        }
        // Labels change node by node, as the cache applies node updates.
        for (i, spec) in &relabeled {
            let i = i % nodes.len();
            snap.put(make_node(&format!("n{i}"), *spec));
        }
        if let Some(i) = removed {
            snap.remove(&format!("n{}", i % nodes.len()));
        }
        let plan = PlanState::new(&snap);
        let p = make_pod(&selector, &terms, nodes.len());
        let mut st = CycleState::new();
        let plugin = NodeAffinity;
        let pre = plugin.as_pre_filter().expect("pre-filter").pre_filter(&mut st, &p, &plan);
        prop_assert_eq!(pre.code, Code::Success);
        let filter = plugin.as_filter().expect("filter");
        // A node the index does not describe (and one named like an indexed node).
        let strangers = [make_node("n0", stranger), make_node("elsewhere", stranger)];
        let listed: Vec<&NodeInfo> = plan.nodes().map(|(_, n)| -> &NodeInfo { n }).collect();
        for n in listed.into_iter().chain(strangers.iter()) {
            let labels: &BTreeMap<String, String> = n.labels();
            let want = node_matches(&p.pod, &n.name, labels);
            let got = filter.filter(&st, &p, n).code == Code::Success;
            prop_assert_eq!(got, want, "node {} {:?}", &n.name, labels);
        }
    }
}
