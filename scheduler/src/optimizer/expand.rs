//! From class counts to concrete nodes, deterministically.
//!
//! Node names of each class are taken in the order given; the plan's node contents are laid on
//! them in the plan's order; then gangs, in problem order, take the pod slots of each node in turn.
//! The same inputs always give the same bindings.

use std::collections::VecDeque;

use super::Error;
use super::check::{PodClasses, check_plan};
use super::model::{Plan, Problem};

/// One pod bound to one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Index of the gang in the problem.
    pub gang: usize,
    /// Index of the group within the gang's `pods`.
    pub group: usize,
    /// Which pod of that group (0-based, in the framework's own order of the group's pods).
    pub ordinal: u32,
    /// The node's name.
    pub node: String,
}

/// Maps `plan` onto concrete nodes: `nodes[c]` names the nodes of class `c`, in a stable order.
/// The plan is checked first; a class with fewer names than the plan uses is an error.
pub fn expand(
    problem: &Problem,
    plan: &Plan,
    nodes: &[Vec<String>],
) -> Result<Vec<Binding>, Error> {
    check_plan(problem, plan)?;
    let classes = PodClasses::new(problem);
    let np = classes.shapes.len();
    // slots[c][p]: (node name index, free slots) in order.
    let mut slots: Vec<Vec<VecDeque<(usize, u32)>>> = Vec::with_capacity(plan.nodes.len());
    for (c, uses) in plan.nodes.iter().enumerate() {
        let names = nodes.get(c).map_or(0, Vec::len);
        let needed: u64 = uses.iter().map(|u| u64::from(u.nodes)).sum();
        if (names as u64) < needed {
            return Err(Error::MissingNodes {
                class: c,
                given: names,
                needed,
            });
        }
        let mut per_pod = vec![VecDeque::new(); np];
        let mut next = 0usize;
        for u in uses {
            for _ in 0..u.nodes {
                for (p, &n) in u.content.iter().enumerate() {
                    if n > 0 {
                        per_pod[p].push_back((next, n));
                    }
                }
                next += 1;
            }
        }
        slots.push(per_pod);
    }
    let mut out = Vec::new();
    for (g, placement) in plan.gangs.iter().enumerate() {
        let mut ordinals = vec![0u32; problem.gangs[g].pods.len()];
        for a in &placement.assignments {
            let p = classes.of[g][a.group];
            let queue = &mut slots[a.node_class][p];
            for _ in 0..a.count {
                let Some(front) = queue.front_mut() else {
                    return Err(Error::InvalidPlan {
                        reason: format!("class {} ran out of slots", a.node_class),
                    });
                };
                let node = nodes[a.node_class][front.0].clone();
                front.1 -= 1;
                if front.1 == 0 {
                    queue.pop_front();
                }
                out.push(Binding {
                    gang: g,
                    group: a.group,
                    ordinal: ordinals[a.group],
                    node,
                });
                ordinals[a.group] += 1;
            }
        }
    }
    Ok(out)
}
