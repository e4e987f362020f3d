//! The pod index: the inter-pod affinity and topology spread pre-filters that visit only the
//! pods the snapshot's index gives decide and score every node as a reference that scans every
//! pod does (`every_pod_affinity`, `every_pod_spread`, below: the plugins have one path, the
//! indexed one), on random clusters kept incrementally (pods added and removed node by node)
//! and plans that reserve and evict on top.

use std::sync::Arc;

use drover_api::core::WeightedPodAffinityTerm;
use drover_api::core::{
    Affinity, PodAffinity, PodAffinityTerm, TopologySpreadConstraint, unsatisfiable_action,
};
use drover_api::selector::{LabelSelector, LabelSelectorRequirement};
use drover_scheduler::cache::{NodeInfo, Placement, PlanState, PodInfo, Snapshot};
use drover_scheduler::framework::{CycleState, Plugin};
use drover_scheduler::plugins::inter_pod_affinity::{
    AFFINITY_REASON, ANTI_AFFINITY_REASON, EXISTING_ANTI_AFFINITY_REASON, InterPodAffinity,
    term_matches,
};
use drover_scheduler::plugins::pod_topology_spread::{
    MISSING_LABEL_REASON, PodTopologySpread, REASON as SPREAD_REASON,
};
use drover_scheduler::shared::node_selection::node_matches;
use drover_scheduler::testing::{node, pod};
use proptest::prelude::*;

const HOSTNAME: &str = "kubernetes.io/hostname";
const APPS: [&str; 3] = ["x", "y", "z"];
const NAMESPACES: [&str; 2] = ["a", "b"];

/// A selector: 0 app=v, 1 app In (v, next), 2 app Exists, 3 app NotIn v (selects pods
/// without the key too), 4 empty (everything), 5 tier=v, 6 none (nothing).
fn sel(kind: u8, v: u8) -> Option<LabelSelector> {
    let app = APPS[v as usize % 3].to_string();
    let expr = |op: &str, values: Vec<String>| LabelSelector {
        match_labels: Default::default(),
        match_expressions: vec![LabelSelectorRequirement {
            key: "app".into(),
            operator: op.into(),
            values,
        }],
    };
    Some(match kind % 7 {
        0 => LabelSelector::from_labels([("app".to_string(), app)].into()),
        1 => expr("In", vec![app, APPS[(v as usize + 1) % 3].to_string()]),
        2 => expr("Exists", vec![]),
        3 => expr("NotIn", vec![app]),
        4 => LabelSelector::default(),
        5 => LabelSelector::from_labels([("tier".to_string(), app)].into()),
        _ => return None,
    })
}

fn key(k: u8) -> &'static str {
    ["zone", HOSTNAME, "rack"][k as usize % 3]
}

/// (selector kind, value, topology key, namespaces listed)
type TermSpec = (u8, u8, u8, bool);

fn term((kind, v, k, listed): TermSpec) -> PodAffinityTerm {
    PodAffinityTerm {
        label_selector: sel(kind, v),
        topology_key: key(k).into(),
        namespaces: if listed {
            vec!["a".into(), "b".into()]
        } else {
            vec![]
        },
        ..Default::default()
    }
}

fn term_spec() -> impl Strategy<Value = TermSpec> {
    (0u8..7, 0u8..3, 0u8..3, any::<bool>())
}

/// (namespace, app label (3: none), tier label, anti-affinity term)
type PodSpec = (u8, u8, bool, Option<TermSpec>);

fn pod_spec() -> impl Strategy<Value = PodSpec> {
    (
        0u8..2,
        0u8..4,
        any::<bool>(),
        prop::option::weighted(0.3, term_spec()),
    )
}

fn make_pod(name: &str, (ns, app, tier, anti): PodSpec) -> Arc<PodInfo> {
    let mut b = pod(NAMESPACES[ns as usize % 2], name);
    if app < 3 {
        b = b.label("app", APPS[app as usize]);
    }
    if tier {
        b = b.label("tier", APPS[(app as usize + 1) % 3]);
    }
    if let Some(t) = anti {
        // A group's pods spread over the key they avoid each other on, too.
        b = b.spread(TopologySpreadConstraint {
            max_skew: 1,
            topology_key: key(t.2).into(),
            when_unsatisfiable: "DoNotSchedule".into(),
            label_selector: sel(t.0, t.1),
            ..Default::default()
        });
        b = b.affinity(Affinity {
            pod_anti_affinity: Some(PodAffinity {
                required_during_scheduling_ignored_during_execution: vec![term(t)],
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    b.info()
}

/// The incoming pod: its labels and namespace, required affinity and anti-affinity, preferred
/// terms, spread constraints (selector, key, hard) and a node selector on zone.
#[derive(Debug, Clone)]
struct Incoming {
    base: PodSpec,
    affinity: Vec<TermSpec>,
    anti: Vec<TermSpec>,
    preferred: Vec<(i32, TermSpec)>,
    spread: Vec<(u8, u8, u8, bool)>,
    zone_selector: Option<u8>,
}

fn incoming() -> impl Strategy<Value = Incoming> {
    (
        (0u8..2, 0u8..4, any::<bool>(), Just(None)),
        prop::collection::vec(term_spec(), 0..2),
        prop::collection::vec(term_spec(), 0..2),
        prop::collection::vec((-50i32..50, term_spec()), 0..2),
        prop::collection::vec((0u8..7, 0u8..3, 0u8..3, any::<bool>()), 0..2),
        prop::option::of(0u8..3),
    )
        .prop_map(
            |(base, affinity, anti, preferred, spread, zone_selector)| Incoming {
                base,
                affinity,
                anti,
                preferred,
                spread,
                zone_selector,
            },
        )
}

fn make_incoming(i: &Incoming) -> Arc<PodInfo> {
    let p = make_pod("incoming", i.base);
    let mut pod = (*p.pod).clone();
    let req = |ts: &[TermSpec]| {
        (!ts.is_empty()).then(|| PodAffinity {
            required_during_scheduling_ignored_during_execution: ts
                .iter()
                .map(|t| term(*t))
                .collect(),
            ..Default::default()
        })
    };
    let mut a = Affinity {
        pod_affinity: req(&i.affinity),
        pod_anti_affinity: req(&i.anti),
        ..Default::default()
    };
    for (w, t) in &i.preferred {
        let slot = if *w >= 0 {
            a.pod_affinity.get_or_insert_with(Default::default)
        } else {
            a.pod_anti_affinity.get_or_insert_with(Default::default)
        };
        slot.preferred_during_scheduling_ignored_during_execution
            .push(WeightedPodAffinityTerm {
                weight: w.abs().max(1),
                pod_affinity_term: term(*t),
            });
    }
    pod.spec.affinity = Some(a);
    for (kind, v, k, hard) in &i.spread {
        pod.spec
            .topology_spread_constraints
            .push(TopologySpreadConstraint {
                max_skew: 1,
                topology_key: key(*k).into(),
                when_unsatisfiable: if *hard {
                    "DoNotSchedule"
                } else {
                    "ScheduleAnyway"
                }
                .into(),
                label_selector: sel(*kind, *v),
                ..Default::default()
            });
    }
    if let Some(z) = i.zone_selector {
        pod.spec
            .node_selector
            .insert("zone".into(), format!("z{z}"));
    }
    Arc::new(PodInfo::new(Arc::new(pod)))
}

/// The pre-filter's code, then per node: (filter code and reasons, score) of a plugin.
fn decide(plugin: &dyn Plugin, plan: &PlanState<'_>, p: &PodInfo) -> Vec<(String, i64)> {
    let mut st = CycleState::new();
    let pre = plugin
        .as_pre_filter()
        .expect("pre-filter")
        .pre_filter(&mut st, p, plan);
    let mut out = vec![(format!("{:?}", pre.code), 0)];
    for (_, n) in plan.nodes() {
        let n: &NodeInfo = n;
        let status = plugin.as_filter().expect("filter").filter(&st, p, n);
        out.push((
            format!("{:?} {:?}", status.code, status.reasons),
            plugin.as_score().expect("score").score(&st, p, n),
        ));
    }
    out
}

/// Per node: the InterPodAffinity filter verdict (code and reasons) by the rules, node by node
/// against every pod (no domain sets, no index): the reference for both directions of
/// required anti-affinity.
fn reference_affinity_filter(plan: &PlanState<'_>, p: &PodInfo) -> Vec<String> {
    let a = p.pod.spec.affinity.as_ref();
    let aff: Vec<&PodAffinityTerm> = a
        .iter()
        .flat_map(|a| &a.pod_affinity)
        .flat_map(|a| &a.required_during_scheduling_ignored_during_execution)
        .collect();
    let anti: Vec<&PodAffinityTerm> = a
        .iter()
        .flat_map(|a| &a.pod_anti_affinity)
        .flat_map(|a| &a.required_during_scheduling_ignored_during_execution)
        .collect();
    let ns = p.namespace();
    let pods: Vec<(&NodeInfo, &Arc<PodInfo>)> = plan
        .nodes()
        .flat_map(|(_, n)| n.pods.iter().map(move |s| (n, &s.info)))
        .filter(|(_, q)| q.key != p.key)
        .collect();
    let same = |key: &str, n: &NodeInfo, m: &NodeInfo| matches!((n.labels().get(key), m.labels().get(key)), (Some(a), Some(b)) if a == b);
    let first_of_group = !aff
        .iter()
        .any(|t| pods.iter().any(|(_, q)| term_matches(t, ns, &q.pod)))
        && aff.iter().all(|t| term_matches(t, ns, &p.pod));
    let mut out = Vec::new();
    for (_, n) in plan.nodes() {
        let n: &NodeInfo = n;
        let affinity_ok = aff.iter().all(|t| {
            n.labels().contains_key(&t.topology_key)
                && (first_of_group
                    || pods
                        .iter()
                        .any(|(m, q)| same(&t.topology_key, n, m) && term_matches(t, ns, &q.pod)))
        });
        let own_anti = anti.iter().any(|t| {
            pods.iter()
                .any(|(m, q)| same(&t.topology_key, n, m) && term_matches(t, ns, &q.pod))
        });
        let existing_anti = pods.iter().any(|(m, q)| {
            q.pod
                .spec
                .affinity
                .iter()
                .flat_map(|a| &a.pod_anti_affinity)
                .flat_map(|a| &a.required_during_scheduling_ignored_during_execution)
                .any(|t| same(&t.topology_key, n, m) && term_matches(t, q.namespace(), &p.pod))
        });
        out.push(if !affinity_ok {
            format!("UnschedulableAndUnresolvable [{AFFINITY_REASON:?}]")
        } else if own_anti {
            format!("Unschedulable [{ANTI_AFFINITY_REASON:?}]")
        } else if existing_anti {
            format!("Unschedulable [{EXISTING_ANTI_AFFINITY_REASON:?}]")
        } else {
            "Success []".to_string()
        });
    }
    out
}

/// Every pod on every node, as the plan sees them, but `p` itself.
fn other_pods<'a>(plan: &'a PlanState<'_>, p: &PodInfo) -> Vec<(&'a NodeInfo, &'a Arc<PodInfo>)> {
    plan.nodes()
        .flat_map(|(_, n)| n.pods.iter().map(move |s| (n, &s.info)))
        .filter(|(_, q)| q.key != p.key)
        .collect()
}

/// InterPodAffinity by visiting every pod: the pre-filter's code, then per node the filter's
/// verdict and the raw score (preferred terms: their weight, signed, per pod they select in the
/// node's domain).
fn every_pod_affinity(plan: &PlanState<'_>, p: &PodInfo) -> Vec<(String, i64)> {
    let a = p.pod.spec.affinity.as_ref();
    let mut preferred: Vec<(i64, &PodAffinityTerm)> = Vec::new();
    for a in a.iter() {
        for (sign, side) in [(1, &a.pod_affinity), (-1, &a.pod_anti_affinity)] {
            for w in side
                .iter()
                .flat_map(|s| &s.preferred_during_scheduling_ignored_during_execution)
            {
                preferred.push((sign * i64::from(w.weight), &w.pod_affinity_term));
            }
        }
    }
    let ns = p.namespace();
    let pods = other_pods(plan, p);
    let scores = plan.nodes().map(|(_, n)| {
        let mut score = 0;
        for (w, t) in &preferred {
            let Some(v) = n.labels().get(&t.topology_key) else {
                continue;
            };
            let selected = pods
                .iter()
                .filter(|(m, q)| {
                    m.labels().get(&t.topology_key) == Some(v) && term_matches(t, ns, &q.pod)
                })
                .count() as i64;
            score += w * selected;
        }
        score
    });
    let mut out = vec![("Success".to_string(), 0)];
    out.extend(reference_affinity_filter(plan, p).into_iter().zip(scores));
    out
}

/// PodTopologySpread by visiting every pod and node: per constraint, the domains are the values
/// of the key on nodes the pod's node constraints admit, each counting the pods the selector
/// matches on them; the pre-filter's code, then per node the filter's verdict (hard
/// constraints: the node's count plus the pod itself, less the least count, within `maxSkew`)
/// and the raw score (the node's count over every constraint).
fn every_pod_spread(plan: &PlanState<'_>, p: &PodInfo) -> Vec<(String, i64)> {
    struct Counted {
        key: String,
        hard: bool,
        max_skew: i64,
        self_match: i64,
        min: i64,
        counts: std::collections::HashMap<String, i64>,
    }
    let pods = other_pods(plan, p);
    let constraints: Vec<Counted> = p
        .pod
        .spec
        .topology_spread_constraints
        .iter()
        .map(|c| {
            let matches = |q: &PodInfo| {
                c.label_selector
                    .as_ref()
                    .is_some_and(|s| s.matches(q.labels()))
                    && q.namespace() == p.namespace()
                    && !q.is_terminating()
            };
            let domain = |n: &NodeInfo| {
                n.labels()
                    .get(&c.topology_key)
                    .filter(|_| node_matches(&p.pod, &n.name, n.labels()))
                    .cloned()
            };
            let mut counts: std::collections::HashMap<String, i64> = plan
                .nodes()
                .filter_map(|(_, n)| domain(n))
                .map(|v| (v, 0))
                .collect();
            for (n, q) in &pods {
                if matches(q)
                    && let Some(v) = domain(n)
                {
                    *counts.entry(v).or_default() += 1;
                }
            }
            let mut min = counts.values().copied().min().unwrap_or(0);
            if c.min_domains
                .is_some_and(|m| (counts.len() as i64) < i64::from(m))
            {
                min = 0;
            }
            Counted {
                key: c.topology_key.clone(),
                hard: c.when_unsatisfiable != unsatisfiable_action::SCHEDULE_ANYWAY,
                max_skew: i64::from(c.max_skew.max(1)),
                self_match: i64::from(matches(p)),
                min,
                counts,
            }
        })
        .collect();
    let mut out = vec![("Success".to_string(), 0)];
    for (_, n) in plan.nodes() {
        let n: &NodeInfo = n;
        let at = |c: &Counted| {
            n.labels()
                .get(&c.key)
                .map(|v| c.counts.get(v).copied().unwrap_or(0))
        };
        let mut verdict = "Success []".to_string();
        for c in constraints.iter().filter(|c| c.hard) {
            match at(c) {
                None => {
                    verdict = format!("UnschedulableAndUnresolvable [{MISSING_LABEL_REASON:?}]");
                    break;
                }
                Some(here) if here + c.self_match - c.min > c.max_skew => {
                    verdict = format!("Unschedulable [{SPREAD_REASON:?}]");
                    break;
                }
                Some(_) => {}
            }
        }
        let score = constraints.iter().map(|c| at(c).unwrap_or(0)).sum();
        out.push((verdict, score));
    }
    out
}

/// A reference that visits every pod, deciding as [`decide`] reports.
type ScanEveryPod = fn(&PlanState<'_>, &PodInfo) -> Vec<(String, i64)>;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn indexed_pre_filters_decide_as_scanning_ones(
        // Per node: zone (3: none), rack (2: none).
        nodes in prop::collection::vec((0u8..4, 0u8..3), 1..8),
        pods in prop::collection::vec((0usize..8, pod_spec()), 0..30),
        removed in prop::collection::vec(0usize..30, 0..6),
        reserved in prop::collection::vec((0usize..8, pod_spec()), 0..4),
        evicted in prop::collection::vec(0usize..30, 0..3),
        gone in prop::option::of(0usize..8),
        back in any::<bool>(),
        p in incoming(),
        // The incoming pod takes a placed pod's namespace and terms (a group's next member).
        copy in prop::option::of(0usize..30),
        // The incoming pod is already on a node (it never counts against itself).
        itself_on in prop::option::weighted(0.2, 0usize..8),
        relabel in prop::option::weighted(0.3, (0usize..8, 0u8..4)),
    ) {
        let mut p = p;
        if let Some((_, (ns, _, _, Some(t)))) = copy.and_then(|c| pods.get(c)) {
            p.base.0 = *ns;
            p.anti = vec![*t];
            p.spread = vec![(t.0, t.1, t.2, true)];
        }
        let mut snap = Snapshot::default();
        for (i, (zone, rack)) in nodes.iter().enumerate() {
            let name = format!("n{i}");
            let mut b = node(&name).label(HOSTNAME, &name);
            if *zone < 3 {
                b = b.label("zone", &format!("z{zone}"));
            }
            if *rack < 2 {
                b = b.label("rack", &format!("r{rack}"));
            }
            snap.put(b.info());
        }
        // Pods come and go node by node, as the cache applies them.
        let mut placed: Vec<(usize, Arc<PodInfo>)> = Vec::new();
        for (k, (n, spec)) in pods.iter().enumerate() {
            let n = n % nodes.len();
            let info = make_pod(&format!("p{k}"), *spec);
            snap.update(n, |node| node.add_pod(info.clone(), Arc::new(vec![])));
            placed.push((n, info));
        }
        for r in &removed {
            if let Some((n, info)) = placed.get(*r).cloned() {
                snap.update(n, |node| {
                    node.remove_pod(&info.key);
                });
            }
        }
        // A node replaced (heartbeat) and one removed.
        if let Some(g) = gone {
            let g = g % nodes.len();
            if let Some(n) = snap.node(g).cloned() {
                snap.put((*n).clone());
            }
            if g + 1 < nodes.len() {
                let name = format!("n{}", g + 1);
                snap.remove(&name);
                if back {
                    // Back in the same slot, without its pods.
                    snap.put(node(&name).label(HOSTNAME, &name).label("zone", "z0").info());
                }
            }
        }
        if let Some(n) = itself_on.map(|n| n % nodes.len())
            && snap.node(n).is_some()
        {
            let info = make_incoming(&p);
            snap.update(n, |node| node.add_pod(info, Arc::new(vec![])));
        }
        // A node moved to another zone (or out of every zone), keeping its pods.
        if let Some((n, zone)) = relabel
            && let Some(old) = snap.node(n % nodes.len()).cloned()
        {
            let mut info = (*old).clone();
            let mut obj = (*info.node).clone();
            obj.metadata.labels.remove("zone");
            if zone < 3 {
                obj.metadata.labels.insert("zone".into(), format!("z{zone}"));
            }
            info.node = Arc::new(obj);
            snap.put(info);
        }
        snap.anti_affinity_pods = snap
            .nodes()
            .flat_map(|(_, n)| n.pods.iter())
            .filter(|s| s.info.has_required_anti_affinity())
            .count();
        let mut plan = PlanState::new(&snap);
        for (k, (n, spec)) in reserved.iter().enumerate() {
            let n = n % nodes.len();
            let Some(node) = snap.node(n) else { continue };
            let info = make_pod(&format!("r{k}"), *spec);
            plan.reserve(&info, Placement {
                pod: info.key.clone(),
                node: n,
                node_name: node.name.clone(),
                devices: vec![],
            });
        }
        for e in &evicted {
            if let Some((n, info)) = placed.get(*e) {
                plan.evict(*n, &info.key);
            }
        }
        let incoming = make_incoming(&p);
        let verdicts: Vec<String> = decide(&InterPodAffinity, &plan, &incoming)
            .into_iter()
            .skip(1)
            .map(|(v, _)| v)
            .collect();
        prop_assert_eq!(verdicts, reference_affinity_filter(&plan, &incoming));
        let pairs: [(&dyn Plugin, ScanEveryPod); 2] = [
            (&InterPodAffinity, every_pod_affinity),
            (&PodTopologySpread, every_pod_spread),
        ];
        for (indexed, scanning) in pairs {
            prop_assert_eq!(
                decide(indexed, &plan, &incoming),
                scanning(&plan, &incoming),
                "{}", indexed.name()
            );
        }
    }
}
