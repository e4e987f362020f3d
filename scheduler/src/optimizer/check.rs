//! Pod classes, plan checking and plan scoring, shared by the greedy, the ILP and the tests.
//!
//! Every plan either path produces goes through [`check_plan`] before the optimiser returns it, so
//! a solver bug (or a rounding surprise) can cost optimality but never over-commit a node.

use std::collections::{BTreeMap, BTreeSet};

use super::Error;
use super::model::{Plan, Problem, Shape, Topology};

/// The distinct requests of a problem, and for each gang group the index of its request.
#[derive(Debug, Clone)]
pub(crate) struct PodClasses {
    pub shapes: Vec<Shape>,
    /// `of[gang][group]` = pod class index.
    pub of: Vec<Vec<usize>>,
}

impl PodClasses {
    pub fn new(problem: &Problem) -> Self {
        let mut index: BTreeMap<&Shape, usize> = BTreeMap::new();
        let mut shapes = Vec::new();
        let of = problem
            .gangs
            .iter()
            .map(|gang| {
                gang.pods
                    .iter()
                    .map(|group| {
                        *index.entry(&group.request).or_insert_with(|| {
                            shapes.push(group.request.clone());
                            shapes.len() - 1
                        })
                    })
                    .collect()
            })
            .collect();
        Self { shapes, of }
    }
}

fn invalid(reason: String) -> Error {
    Error::InvalidPlan { reason }
}

/// Checks that `plan` is a correct placement for `problem`: every node content fits one node of
/// its class, no class hands out more nodes or pod slots than it has, gangs are all-or-nothing
/// (at least `min_member`, at most their size) and `Required` gangs stay within one domain.
pub fn check_plan(problem: &Problem, plan: &Plan) -> Result<(), Error> {
    let classes = PodClasses::new(problem);
    if plan.pod_classes != classes.shapes {
        return Err(invalid("pod classes differ from the problem's".into()));
    }
    if plan.gangs.len() != problem.gangs.len() || plan.nodes.len() != problem.node_classes.len() {
        return Err(invalid("plan does not match the problem's size".into()));
    }
    let np = classes.shapes.len();
    let mut slots = vec![vec![0u64; np]; problem.node_classes.len()];
    for (c, (uses, class)) in plan.nodes.iter().zip(&problem.node_classes).enumerate() {
        let mut nodes = 0u64;
        for node_use in uses {
            if node_use.content.len() != np || !class.free.holds(&classes.shapes, &node_use.content)
            {
                return Err(invalid(format!("node content does not fit class {c}")));
            }
            nodes += u64::from(node_use.nodes);
            for (p, &n) in node_use.content.iter().enumerate() {
                slots[c][p] += u64::from(n) * u64::from(node_use.nodes);
            }
        }
        if nodes > u64::from(class.count) {
            return Err(invalid(format!(
                "class {c} uses {nodes} of {} nodes",
                class.count
            )));
        }
    }
    let mut used = vec![vec![0u64; np]; problem.node_classes.len()];
    for (g, (gang, placement)) in problem.gangs.iter().zip(&plan.gangs).enumerate() {
        if !placement.placed {
            if !placement.assignments.is_empty() {
                return Err(invalid(format!("unplaced gang {} has pods", gang.id)));
            }
            continue;
        }
        let mut per_group = vec![0u64; gang.pods.len()];
        let mut domains = BTreeSet::new();
        for a in &placement.assignments {
            let (Some(count), Some(&p), Some(class)) = (
                per_group.get_mut(a.group),
                classes.of[g].get(a.group),
                problem.node_classes.get(a.node_class),
            ) else {
                return Err(invalid(format!(
                    "gang {} refers to a missing index",
                    gang.id
                )));
            };
            *count += u64::from(a.count);
            used[a.node_class][p] += u64::from(a.count);
            if a.count > 0 {
                domains.insert(class.domain.clone());
            }
        }
        let total: u64 = per_group.iter().sum();
        if total < u64::from(gang.min_member)
            || per_group
                .iter()
                .zip(&gang.pods)
                .any(|(&n, grp)| n > u64::from(grp.count))
        {
            return Err(invalid(format!("gang {} is not all-or-nothing", gang.id)));
        }
        if gang.topology == Topology::Required && (domains.len() != 1 || domains.contains(&None)) {
            return Err(invalid(format!("gang {} spans domains", gang.id)));
        }
    }
    for (c, (u, s)) in used.iter().zip(&slots).enumerate() {
        if u.iter().zip(s).any(|(u, s)| u > s) {
            return Err(invalid(format!("class {c} is over-committed")));
        }
    }
    Ok(())
}

/// The objective value of a plan: placed work, minus node costs, plus topology bonuses.
/// Both the ILP and the greedy are judged by this one function.
pub fn evaluate(problem: &Problem, plan: &Plan) -> f64 {
    let w = &problem.weights;
    let mut value = 0.0;
    for (gang, placement) in problem.gangs.iter().zip(&plan.gangs) {
        if !placement.placed {
            continue;
        }
        let mut domains = BTreeSet::new();
        for a in &placement.assignments {
            if let (Some(group), Some(class)) = (
                gang.pods.get(a.group),
                problem.node_classes.get(a.node_class),
            ) {
                value += f64::from(a.count) * w.pod_value(gang.weight, &group.request);
                domains.insert(class.domain.clone());
            }
        }
        // A single pod is trivially "together"; the model pools such pods and gives no bonus.
        if gang.topology == Topology::Preferred
            && gang.total() > 1
            && domains.len() == 1
            && !domains.contains(&None)
        {
            value += w.preferred_topology * gang_value(problem, gang);
        }
    }
    for (uses, class) in plan.nodes.iter().zip(&problem.node_classes) {
        let nodes: u32 = uses
            .iter()
            .filter(|u| u.content.iter().any(|&n| n > 0))
            .map(|u| u.nodes)
            .sum();
        value -= f64::from(nodes) * w.node_cost(class);
    }
    value
}

/// The value of a whole gang, all pods placed.
pub(crate) fn gang_value(problem: &Problem, gang: &super::model::Gang) -> f64 {
    gang.pods
        .iter()
        .map(|g| f64::from(g.count) * problem.weights.pod_value(gang.weight, &g.request))
        .sum()
}
