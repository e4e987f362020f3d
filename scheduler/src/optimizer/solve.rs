//! Turns a [`Model`] into good_lp variables and constraints, solves it with microlp (warm-started
//! from the greedy plan), and decodes the values back into a [`Plan`].

use std::collections::BTreeMap;
use std::time::Duration;

use good_lp::{
    Expression, ProblemVariables, Solution, SolutionStatus, SolverModel, Variable,
    WithInitialSolution, WithMipGap, WithTimeLimit, microlp, variable,
};

use super::Error;
use super::ilp::Model;
use super::model::{Assignment, GangPlacement, Plan, Problem, Topology};
use super::patterns::fill;

/// What the solver thread hands back.
#[derive(Debug)]
pub(crate) struct Solved {
    pub plan: Plan,
    /// Best proven bound on the model's objective, when microlp reports one.
    pub bound: Option<f64>,
    pub optimal: bool,
}

/// The good_lp variables of a model.
struct Vars {
    n: Vec<Vec<Variable>>,
    pools: Vec<Vec<(usize, Variable)>>,
    y: Vec<Variable>,
    x: Vec<Vec<Vec<(usize, Variable)>>>,
    z: Vec<Vec<(usize, Variable)>>,
    compact: Vec<Option<Variable>>,
}

fn int(max: u64) -> good_lp::VariableDefinition {
    // microlp keeps integer bounds in i32.
    let max = max.min(i32::MAX as u64) as f64;
    variable().integer().min(0).max(max)
}

/// Solves `model` for `problem` within `time_limit`, stopping at relative gap `mip_gap`,
/// optionally warm-started from `start`.
pub(crate) fn solve(
    problem: &Problem,
    model: &Model,
    start: Option<&Plan>,
    time_limit: Duration,
    mip_gap: f32,
    relax: bool,
) -> Result<Solved, Error> {
    let mut pv = ProblemVariables::new();
    let mut obj = Expression::default();
    let mut cons = Vec::new();
    let int = |max: u64| {
        let d = int(max);
        if relax {
            variable().min(0).max(d.get_max())
        } else {
            d
        }
    };
    let bin = || {
        if relax {
            variable().min(0).max(1)
        } else {
            variable().binary()
        }
    };

    let nc = problem.node_classes.len();
    let mut class_use: BTreeMap<(usize, usize), Expression> = BTreeMap::new();
    let mut group_use: BTreeMap<(usize, usize), Expression> = BTreeMap::new();

    let mut n = Vec::with_capacity(nc);
    for (c, class) in problem.node_classes.iter().enumerate() {
        let patterns = &model.groups[model.class_group[c]].patterns;
        let vars: Vec<Variable> = patterns
            .iter()
            .map(|_| pv.add(int(u64::from(class.count))))
            .collect();
        let cost = problem.weights.node_cost(class);
        let mut used = Expression::default();
        for &v in &vars {
            obj.add_mul(-cost, v);
            used.add_mul(1.0, v);
        }
        if !vars.is_empty() {
            cons.push(used.leq(f64::from(class.count)));
        }
        n.push(vars);
    }

    let mut pools = Vec::with_capacity(model.pools.len());
    for pool in &model.pools {
        let mut vars = Vec::new();
        for s in 0..model.groups.len() {
            let ub = model
                .group_capacity(problem, s, pool.pod_class)
                .min(pool.members.len() as u64);
            if ub == 0 {
                continue;
            }
            let v = pv.add(int(ub));
            obj.add_mul(pool.value, v);
            group_use
                .entry((s, pool.pod_class))
                .or_default()
                .add_mul(1.0, v);
            vars.push((s, v));
        }
        let mut total = Expression::default();
        for &(_, v) in &vars {
            total.add_mul(1.0, v);
        }
        cons.push(total.leq(pool.members.len() as f64));
        pools.push(vars);
    }

    let mut vars = Vars {
        n,
        pools,
        y: Vec::new(),
        x: Vec::new(),
        z: Vec::new(),
        compact: Vec::new(),
    };
    for gm in &model.gangs {
        let gang = &problem.gangs[gm.gang];
        let y = pv.add(bin());
        let z: Vec<(usize, Variable)> = gm.domains.iter().map(|&d| (d, pv.add(bin()))).collect();
        let compact = (gang.topology == Topology::Preferred).then(|| pv.add(bin()));
        if let Some(s) = compact {
            obj.add_mul(gm.bonus, s);
            cons.push(Expression::from(s).leq(y));
        }
        let mut zsum = Expression::default();
        for &(_, v) in &z {
            zsum.add_mul(1.0, v);
        }
        match (gang.topology, compact) {
            (Topology::Required, _) => cons.push(zsum.eq(y)),
            (Topology::Preferred, Some(s)) => cons.push(zsum.eq(s)),
            _ => {}
        }
        let mut all = Expression::default();
        let mut xs = Vec::new();
        for grp in &gm.groups {
            let mut sum = Expression::default();
            let mut gx = Vec::new();
            for &loc in &grp.locations {
                let cap = if gm.per_class {
                    model.class_capacity(problem, loc, grp.pod_class)
                } else {
                    model.group_capacity(problem, loc, grp.pod_class)
                };
                let ub = cap.min(u64::from(grp.count));
                let v = pv.add(int(ub));
                obj.add_mul(grp.value, v);
                sum.add_mul(1.0, v);
                all.add_mul(1.0, v);
                if gm.per_class {
                    class_use
                        .entry((loc, grp.pod_class))
                        .or_default()
                        .add_mul(1.0, v);
                    let s = model.class_group[loc];
                    group_use
                        .entry((s, grp.pod_class))
                        .or_default()
                        .add_mul(1.0, v);
                    let ubf = ub as f64;
                    let zd =
                        model.class_domain[loc].and_then(|d| z.iter().find(|(zd, _)| *zd == d));
                    match (gang.topology, compact, zd) {
                        (Topology::Required, _, Some(&(_, zv))) => {
                            cons.push((Expression::from(v) - ubf * zv).leq(0.0));
                        }
                        (Topology::Required, _, None) => cons.push(Expression::from(v).leq(0.0)),
                        (Topology::Preferred, Some(s), zd) => {
                            let mut e = Expression::from(v) + ubf * s;
                            if let Some(&(_, zv)) = zd {
                                e.add_mul(-ubf, zv);
                            }
                            cons.push(e.leq(ubf));
                        }
                        _ => {}
                    }
                } else {
                    group_use
                        .entry((loc, grp.pod_class))
                        .or_default()
                        .add_mul(1.0, v);
                }
                gx.push((loc, v));
            }
            if gang.min_member == gang.total() {
                cons.push(sum.eq(f64::from(grp.count) * y));
            } else {
                cons.push(sum.leq(f64::from(grp.count) * y));
            }
            xs.push(gx);
        }
        if gang.min_member < gang.total() {
            cons.push(all.geq(f64::from(gang.min_member) * y));
        }
        vars.y.push(y);
        vars.x.push(xs);
        vars.z.push(z);
        vars.compact.push(compact);
    }

    // Capacity: slots offered by the patterns.
    let slots = |c: usize, p: usize, e: &mut Expression| {
        let patterns = &model.groups[model.class_group[c]].patterns;
        for (k, &v) in vars.n[c].iter().enumerate() {
            let a = patterns[k][p];
            if a > 0 {
                e.add_mul(-f64::from(a), v);
            }
        }
    };
    for ((c, p), mut e) in class_use {
        slots(c, p, &mut e);
        cons.push(e.leq(0.0));
    }
    for ((s, p), mut e) in group_use {
        for &c in &model.groups[s].classes {
            slots(c, p, &mut e);
        }
        cons.push(e.leq(0.0));
    }

    let warm =
        start.and_then(|plan| super::warm::warm_start(problem, model, &vars_view(&vars), plan));
    let mut lp = pv.maximise(obj).using(microlp);
    for c in cons {
        lp.add_constraint(c);
    }
    let mut lp = lp.with_time_limit(time_limit.as_secs_f64());
    if let Some(values) = warm {
        lp = lp.with_initial_solution(values);
    }
    let lp = lp.with_mip_gap(mip_gap).map_err(|e| Error::Solver {
        reason: e.to_string(),
    })?;
    let solution = lp.solve().map_err(|e| Error::Solver {
        reason: e.to_string(),
    })?;
    let optimal = matches!(solution.status(), SolutionStatus::Optimal);
    let value = |v: Variable| solution.value(v).round().max(0.0) as u64;
    let plan = if relax {
        Plan::default()
    } else {
        decode(problem, model, &vars, value)?
    };
    let bound = if relax {
        Some(solution.into_inner().objective())
    } else {
        solution.into_inner().stats().best_bound
    };
    Ok(Solved {
        plan,
        bound,
        optimal,
    })
}

/// The variables as plain indices, for the warm start.
pub(crate) struct VarsView<'a> {
    pub n: &'a [Vec<Variable>],
    pub pools: &'a [Vec<(usize, Variable)>],
    pub y: &'a [Variable],
    pub x: &'a [Vec<Vec<(usize, Variable)>>],
    pub z: &'a [Vec<(usize, Variable)>],
    pub compact: &'a [Option<Variable>],
}

fn vars_view(v: &Vars) -> VarsView<'_> {
    VarsView {
        n: &v.n,
        pools: &v.pools,
        y: &v.y,
        x: &v.x,
        z: &v.z,
        compact: &v.compact,
    }
}

/// Spreads `count` pods of class `p` over the classes of shape group `s`, in order, from `left`.
fn spread(
    model: &Model,
    s: usize,
    p: usize,
    mut count: u64,
    left: &mut [Vec<u64>],
) -> Result<Vec<(usize, u64)>, Error> {
    let mut out = Vec::new();
    for &c in &model.groups[s].classes {
        if count == 0 {
            break;
        }
        let take = left[c][p].min(count);
        if take > 0 {
            left[c][p] -= take;
            count -= take;
            out.push((c, take));
        }
    }
    if count > 0 {
        return Err(Error::InvalidPlan {
            reason: format!("solver values over-fill shape group {s}"),
        });
    }
    Ok(out)
}

fn decode(
    problem: &Problem,
    model: &Model,
    vars: &Vars,
    value: impl Fn(Variable) -> u64,
) -> Result<Plan, Error> {
    let np = model.pods.shapes.len();
    let nc = problem.node_classes.len();
    let mut left = vec![vec![0u64; np]; nc];
    let mut chosen: Vec<Vec<(Vec<u32>, u32)>> = Vec::with_capacity(nc);
    for (c, slots) in left.iter_mut().enumerate() {
        let patterns = &model.groups[model.class_group[c]].patterns;
        let mut uses = Vec::new();
        for (k, &v) in vars.n[c].iter().enumerate() {
            let count = u32::try_from(value(v)).unwrap_or(u32::MAX);
            if count > 0 {
                for (slot, &a) in slots.iter_mut().zip(&patterns[k]) {
                    *slot += u64::from(a) * u64::from(count);
                }
                uses.push((patterns[k].clone(), count));
            }
        }
        chosen.push(uses);
    }
    let mut gangs = vec![GangPlacement::default(); problem.gangs.len()];
    let mut add = |g: usize, group: usize, node_class: usize, count: u64| {
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        gangs[g].placed = true;
        gangs[g].assignments.push(Assignment {
            group,
            node_class,
            count,
        });
    };
    // Per-class gangs first: they may only use their own class's slots.
    for (gi, gm) in model
        .gangs
        .iter()
        .enumerate()
        .filter(|(_, gm)| gm.per_class)
    {
        if value(vars.y[gi]) == 0 {
            continue;
        }
        for (grp, xs) in gm.groups.iter().zip(&vars.x[gi]) {
            for &(c, v) in xs {
                let k = value(v);
                if k > 0 {
                    if left[c][grp.pod_class] < k {
                        return Err(Error::InvalidPlan {
                            reason: format!("solver values over-fill class {c}"),
                        });
                    }
                    left[c][grp.pod_class] -= k;
                    add(gm.gang, grp.group, c, k);
                }
            }
        }
    }
    for (gi, gm) in model
        .gangs
        .iter()
        .enumerate()
        .filter(|(_, gm)| !gm.per_class)
    {
        if value(vars.y[gi]) == 0 {
            continue;
        }
        for (grp, xs) in gm.groups.iter().zip(&vars.x[gi]) {
            for &(s, v) in xs {
                for (c, k) in spread(model, s, grp.pod_class, value(v), &mut left)? {
                    add(gm.gang, grp.group, c, k);
                }
            }
        }
    }
    for (pool, xs) in model.pools.iter().zip(&vars.pools) {
        let mut members = pool.members.iter();
        for &(s, v) in xs {
            for (c, k) in spread(model, s, pool.pod_class, value(v), &mut left)? {
                for _ in 0..k {
                    let Some(&g) = members.next() else {
                        return Err(Error::InvalidPlan {
                            reason: "pool over-placed".into(),
                        });
                    };
                    let group = problem.gangs[g]
                        .pods
                        .iter()
                        .position(|grp| grp.count == 1)
                        .unwrap_or(0);
                    add(g, group, c, 1);
                }
            }
        }
    }
    for placement in &mut gangs {
        placement
            .assignments
            .sort_by_key(|a| (a.group, a.node_class));
    }
    let mut used = vec![vec![0u64; np]; nc];
    for (g, placement) in gangs.iter().enumerate() {
        for a in &placement.assignments {
            used[a.node_class][model.pods.of[g][a.group]] += u64::from(a.count);
        }
    }
    let nodes = chosen
        .iter()
        .zip(&used)
        .map(|(uses, used)| fill(uses, used, np))
        .collect();
    Ok(Plan {
        pod_classes: model.pods.shapes.clone(),
        gangs,
        nodes,
    })
}
