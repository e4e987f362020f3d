//! Tests of the optimiser: hand-worked optima, greedy vs ILP, topology, infeasible gangs, the
//! capacity invariant (property test), expansion and defragmentation.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

const BUDGET: Duration = Duration::from_secs(5);

fn gpus(n: u32) -> Shape {
    Shape::new(u64::from(n) * 4_000, u64::from(n) << 34, n)
}

fn class(count: u32, free_gpus: u32, domain: Option<&str>) -> NodeClass {
    NodeClass {
        count,
        free: gpus(free_gpus),
        domain: domain.map(str::to_string),
        empty: true,
    }
}

fn gang(id: &str, pods: u32, gpus_each: u32, topology: Topology) -> Gang {
    Gang {
        id: id.into(),
        pods: vec![PodGroup {
            request: gpus(gpus_each),
            count: pods,
        }],
        min_member: pods,
        topology,
        weight: 1.0,
    }
}

fn names(problem: &Problem) -> Vec<Vec<String>> {
    problem
        .node_classes
        .iter()
        .enumerate()
        .map(|(c, class)| (0..class.count).map(|i| format!("c{c}-n{i}")).collect())
        .collect()
}

/// Independent check on concrete nodes: no node holds more than its class's free shape.
fn assert_fits_concretely(problem: &Problem, plan: &Plan) {
    let bindings = expand(problem, plan, &names(problem)).expect("plan expands");
    let mut used: BTreeMap<String, (u64, u64, u64, usize)> = BTreeMap::new();
    for b in &bindings {
        let req = &problem.gangs[b.gang].pods[b.group].request;
        let class: usize = b.node[1..b.node.find('-').unwrap_or(1)]
            .parse()
            .unwrap_or(0);
        let e = used.entry(b.node.clone()).or_insert((0, 0, 0, class));
        e.0 += req.cpu_milli;
        e.1 += req.memory_bytes;
        e.2 += u64::from(req.gpus);
    }
    for (node, (cpu, mem, gpu, c)) in used {
        let free = &problem.node_classes[c].free;
        assert!(
            cpu <= free.cpu_milli && mem <= free.memory_bytes && gpu <= u64::from(free.gpus),
            "{node} over-committed"
        );
    }
    let placed: u64 = plan
        .gangs
        .iter()
        .flat_map(|g| &g.assignments)
        .map(|a| u64::from(a.count))
        .sum();
    assert_eq!(bindings.len() as u64, placed);
}

#[test]
fn hand_worked_optimum_prefers_the_larger_gang() {
    // Two 8-GPU nodes: a 4×4-GPU gang (value 4×5 = 20) beats two 8-GPU singles (2×9 = 18).
    let problem = Problem {
        node_classes: vec![class(2, 8, None)],
        gangs: vec![
            gang("big", 4, 4, Topology::None),
            Gang::single("s1", gpus(8), 1.0),
            Gang::single("s2", gpus(8), 1.0),
            Gang::single("s3", gpus(8), 1.0),
        ],
        weights: Weights::default(),
    };
    let out = optimize(&problem, BUDGET).expect("optimises");
    assert!(out.plan.gangs[0].placed);
    assert_eq!(out.plan.placed_gangs(), 1);
    let expected = 20.0 - 2.0 * (DEFAULT_PER_USED_NODE + DEFAULT_PER_BROKEN_NODE);
    assert!(
        (out.objective - expected).abs() < 1e-6,
        "objective {}",
        out.objective
    );
    assert_fits_concretely(&problem, &out.plan);
}

#[test]
fn ilp_beats_greedy_where_best_fit_fails() {
    // Two 10-GPU nodes, pods of 5,4,3,3,3,2 GPUs: best fit decreasing places 5+4 together and
    // strands the 2; the optimum is 5+3+2 and 4+3+3.
    let problem = Problem {
        node_classes: vec![class(2, 10, None)],
        gangs: [5, 4, 3, 3, 3, 2]
            .iter()
            .enumerate()
            .map(|(i, &g)| Gang::single(format!("p{i}"), gpus(g), 1.0))
            .collect(),
        weights: Weights::default(),
    };
    let greedy_plan = greedy(&problem);
    assert_eq!(greedy_plan.placed_gangs(), 5);
    let out = optimize(&problem, BUDGET).expect("optimises");
    assert_eq!(out.source, Source::Solver);
    assert_eq!(out.plan.placed_gangs(), 6);
    assert!(out.objective > evaluate(&problem, &greedy_plan));
    assert_fits_concretely(&problem, &out.plan);
}

#[test]
fn required_topology_gang_lands_in_one_domain() {
    // 3×8 GPUs must fit in one rack: rack a has 2 free nodes, rack b has 3.
    let problem = Problem {
        node_classes: vec![
            class(2, 8, Some("a")),
            class(3, 8, Some("b")),
            class(4, 8, None),
        ],
        gangs: vec![gang("ring", 3, 8, Topology::Required)],
        weights: Weights::default(),
    };
    let out = optimize(&problem, BUDGET).expect("optimises");
    let placement = &out.plan.gangs[0];
    assert!(placement.placed);
    assert!(placement.assignments.iter().all(|a| a.node_class == 1));
    let bindings = expand(&problem, &out.plan, &names(&problem)).expect("expands");
    assert_eq!(bindings.len(), 3);
    assert!(bindings.iter().all(|b| b.node.starts_with("c1-")));
}

#[test]
fn infeasible_gang_is_left_out_without_harming_others() {
    let problem = Problem {
        node_classes: vec![class(2, 8, Some("a")), class(2, 8, Some("b"))],
        gangs: vec![
            gang("too-big", 3, 8, Topology::Required),
            gang("fits", 2, 4, Topology::None),
            Gang::single("one", gpus(8), 1.0),
        ],
        weights: Weights::default(),
    };
    let out = optimize(&problem, BUDGET).expect("optimises");
    assert!(!out.plan.gangs[0].placed);
    assert!(out.plan.gangs[1].placed && out.plan.gangs[2].placed);
    assert_fits_concretely(&problem, &out.plan);
}

#[test]
fn partial_gang_places_at_least_min_member() {
    let mut elastic = gang("elastic", 6, 4, Topology::None);
    elastic.min_member = 2;
    let problem = Problem {
        node_classes: vec![class(1, 8, None), class(1, 4, None)],
        gangs: vec![elastic],
        weights: Weights::default(),
    };
    let out = optimize(&problem, BUDGET).expect("optimises");
    let placed: u32 = out.plan.gangs[0].assignments.iter().map(|a| a.count).sum();
    assert_eq!(placed, 3);
}

#[test]
fn preferred_topology_is_kept_when_possible_and_relaxed_otherwise() {
    let problem = Problem {
        node_classes: vec![class(1, 8, Some("a")), class(2, 8, Some("b"))],
        gangs: vec![
            gang("pref", 2, 8, Topology::Preferred),
            gang("spread", 1, 8, Topology::Preferred),
        ],
        weights: Weights::default(),
    };
    let out = optimize(&problem, BUDGET).expect("optimises");
    assert!(
        out.plan.gangs[0]
            .assignments
            .iter()
            .all(|a| a.node_class == 1)
    );
    assert!(out.plan.gangs[1].placed);
}

#[test]
fn invalid_input_is_an_error() {
    let mut bad = gang("bad", 2, 1, Topology::None);
    bad.min_member = 3;
    let problem = Problem {
        node_classes: vec![class(1, 8, None)],
        gangs: vec![bad],
        weights: Weights::default(),
    };
    assert!(matches!(
        optimize(&problem, BUDGET),
        Err(Error::InvalidGang { .. })
    ));
}

#[test]
fn zero_budget_falls_back_to_greedy() {
    let problem = Problem {
        node_classes: vec![class(2, 8, None)],
        gangs: vec![Gang::single("a", gpus(4), 1.0)],
        weights: Weights::default(),
    };
    let out = optimize(&problem, Duration::ZERO).expect("optimises");
    assert_eq!(out.source, Source::Greedy);
    assert!(out.solver_note.is_some());
    assert!(out.plan.gangs[0].placed);
}

#[test]
fn expand_is_deterministic_and_needs_enough_names() {
    let problem = Problem {
        node_classes: vec![class(3, 8, None)],
        gangs: vec![gang("g", 3, 8, Topology::None)],
        weights: Weights::default(),
    };
    let out = optimize(&problem, BUDGET).expect("optimises");
    let a = expand(&problem, &out.plan, &names(&problem)).expect("expands");
    let b = expand(&problem, &out.plan, &names(&problem)).expect("expands");
    assert_eq!(a, b);
    assert!(matches!(
        expand(&problem, &out.plan, &[vec!["only-one".into()]]),
        Err(Error::MissingNodes { .. })
    ));
}

fn defrag_node(name: &str, free_gpus: u32, pods: &[(u32, f64)]) -> DefragNode {
    DefragNode {
        name: name.into(),
        free: gpus(free_gpus),
        movable: pods
            .iter()
            .enumerate()
            .map(|(i, &(g, h))| RunningPod {
                name: format!("{name}-p{i}"),
                request: gpus(g),
                gpu_hours: h,
            })
            .collect(),
        pinned: false,
    }
}

#[test]
fn defrag_frees_the_cheapest_nodes_it_can() {
    // Four 8-GPU nodes each running one 2-GPU pod; freeing 2 means moving 2 pods, the cheap ones.
    let req = DefragRequest {
        nodes: vec![
            defrag_node("n0", 6, &[(2, 10.0)]),
            defrag_node("n1", 6, &[(2, 1.0)]),
            defrag_node("n2", 6, &[(2, 5.0)]),
            defrag_node("n3", 6, &[(2, 2.0)]),
        ],
        target: 2,
        gpu_model: None,
        budget: BUDGET,
    };
    let plan = propose_defrag(&req).expect("valid").expect("possible");
    assert_eq!(plan.freed.len(), 2);
    assert!((plan.cost - 3.0).abs() < 1e-9, "cost {}", plan.cost);
    let mut free: BTreeMap<&str, u32> = req
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.free.gpus))
        .collect();
    for m in &plan.moves {
        assert!(!plan.freed.contains(&m.to));
        let f = free.get_mut(m.to.as_str()).expect("known node");
        *f = f.checked_sub(2).expect("receiver has room");
    }
}

#[test]
fn defrag_reports_impossible_targets() {
    let mut pinned = defrag_node("p", 0, &[]);
    pinned.pinned = true;
    let req = DefragRequest {
        nodes: vec![
            defrag_node("a", 0, &[(8, 1.0)]),
            defrag_node("b", 0, &[(8, 1.0)]),
            pinned,
        ],
        target: 1,
        gpu_model: None,
        budget: BUDGET,
    };
    assert_eq!(propose_defrag(&req).expect("valid"), None);
}

fn arb_problem() -> impl Strategy<Value = Problem> {
    let shape =
        (1u64..=8, 1u64..=4, 0u32..=8).prop_map(|(c, m, g)| Shape::new(c * 1000, m << 30, g));
    let node = (
        1u32..=4,
        shape.clone(),
        prop::option::of(0u8..3),
        any::<bool>(),
    )
        .prop_map(|(count, free, d, empty)| NodeClass {
            count,
            free,
            domain: d.map(|d| format!("d{d}")),
            empty,
        });
    let request =
        (1u64..=4, 0u64..=2, 0u32..=4).prop_map(|(c, m, g)| Shape::new(c * 500, m << 30, g));
    let topo = prop_oneof![
        Just(Topology::None),
        Just(Topology::Required),
        Just(Topology::Preferred)
    ];
    let gang = (
        prop::collection::vec((request, 1u32..=3), 1..=2),
        topo,
        1u32..=3,
        1u32..=3,
    )
        .prop_map(|(groups, topology, min, w)| {
            let pods: Vec<PodGroup> = groups
                .into_iter()
                .map(|(request, count)| PodGroup { request, count })
                .collect();
            let total: u32 = pods.iter().map(|p| p.count).sum();
            Gang {
                id: "g".into(),
                pods,
                min_member: min.min(total),
                topology,
                weight: f64::from(w),
            }
        });
    (
        prop::collection::vec(node, 1..=4),
        prop::collection::vec(gang, 1..=5),
    )
        .prop_map(|(node_classes, gangs)| Problem {
            node_classes,
            gangs,
            weights: Weights::default(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn plans_never_exceed_capacity(problem in arb_problem()) {
        let out = optimize(&problem, Duration::from_millis(500)).expect("valid problem");
        prop_assert!(check_plan(&problem, &out.plan).is_ok());
        prop_assert!(out.objective + 1e-9 >= evaluate(&problem, &greedy(&problem)));
        assert_fits_concretely(&problem, &out.plan);
    }
}
