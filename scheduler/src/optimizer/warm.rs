//! The greedy plan as the solver's starting incumbent.
//!
//! microlp ignores a hint it finds infeasible, so a mismatch here costs speed, never correctness.

use std::collections::{BTreeSet, HashMap};

use good_lp::Variable;

use super::ilp::Model;
use super::model::{Plan, Problem, Topology};
use super::solve::Vars;

/// Values for every model variable that reproduce `plan`, or `None` when some node content of the
/// plan is covered by no pattern (then the solver starts cold).
pub(crate) fn warm_start(
    problem: &Problem,
    model: &Model,
    vars: &Vars,
    plan: &Plan,
) -> Option<Vec<(Variable, f64)>> {
    // Order does not matter to the solver, so a hash map is fine here.
    let mut values: HashMap<Variable, f64> = HashMap::new();
    let mut set = |v: Variable, x: f64| {
        *values.entry(v).or_insert(0.0) += x;
    };
    for (c, uses) in plan.nodes.iter().enumerate() {
        let patterns = &model.groups[*model.class_group.get(c)?].patterns;
        for u in uses {
            let k = patterns
                .iter()
                .position(|pat| pat.iter().zip(&u.content).all(|(a, b)| a >= b))?;
            set(*vars.pattern_nodes.get(c)?.get(k)?, f64::from(u.nodes));
        }
    }
    let class_of = |g: usize| {
        plan.gangs
            .get(g)
            .and_then(|p| p.assignments.first())
            .map(|a| a.node_class)
    };
    for (pool, xs) in model.pools.iter().zip(&vars.pool_placed) {
        for &g in &pool.members {
            let Some(c) = class_of(g) else { continue };
            let s = model.class_group[c];
            let &(_, v) = xs.iter().find(|(loc, _)| *loc == s)?;
            set(v, 1.0);
        }
    }
    for (gi, gm) in model.gangs.iter().enumerate() {
        let placement = plan.gangs.get(gm.gang)?;
        if !placement.placed {
            continue;
        }
        set(vars.gang_placed[gi], 1.0);
        let mut domains = BTreeSet::new();
        for a in &placement.assignments {
            let loc = if gm.per_class {
                a.node_class
            } else {
                model.class_group[a.node_class]
            };
            let gx = gm.groups.iter().position(|grp| grp.group == a.group)?;
            let &(_, v) = vars.members_at[gi][gx].iter().find(|(l, _)| *l == loc)?;
            set(v, f64::from(a.count));
            domains.insert(model.class_domain[a.node_class]);
        }
        let gang = &problem.gangs[gm.gang];
        let single = match (domains.len(), domains.first()) {
            (1, Some(Some(d))) => Some(*d),
            _ => None,
        };
        if gang.topology != Topology::None
            && let Some(d) = single
            && let Some(&(_, zv)) = vars.in_domain[gi].iter().find(|(zd, _)| *zd == d)
        {
            set(zv, 1.0);
            if let Some(s) = vars.compact[gi] {
                set(s, 1.0);
            }
        }
    }
    Some(values.into_iter().collect())
}
