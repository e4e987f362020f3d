//! Turns a [`Model`] into good_lp variables and constraints, solves it with microlp (warm-started
//! from the greedy plan), and decodes the values back into a [`Plan`].

use std::collections::BTreeMap;
use std::time::Duration;

use good_lp::{
    Expression, ProblemVariables, Solution, SolutionStatus, SolverModel, Variable,
    WithInitialSolution, WithMipGap, WithTimeLimit, microlp, variable,
};

use super::Error;
use super::ilp::{GangGroup, GangModel, Model};
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

/// The good_lp variables of a model, named for what they count.
pub(crate) struct Vars {
    /// `[node class][pattern]`: how many nodes of the class are filled as the pattern says.
    pub pattern_nodes: Vec<Vec<Variable>>,
    /// Per pool: (shape group, how many of its single-pod gangs are placed in the group).
    pub pool_placed: Vec<Vec<(usize, Variable)>>,
    /// Per gang model: whether the gang is placed (binary).
    pub gang_placed: Vec<Variable>,
    /// `[gang model][pod group]`: (location, members of the group placed there); a location is
    /// a node class for per-class gangs, a shape group otherwise.
    pub members_at: Vec<Vec<Vec<(usize, Variable)>>>,
    /// Per gang model: (topology domain, whether the gang is placed inside it) (binary).
    pub in_domain: Vec<Vec<(usize, Variable)>>,
    /// Per gang model with a preferred topology: whether it is placed inside one domain
    /// (binary; earns the gang's bonus).
    pub compact: Vec<Option<Variable>>,
}

fn int(max: u64) -> good_lp::VariableDefinition {
    // microlp keeps integer bounds in i32.
    let max = max.min(i32::MAX as u64) as f64;
    variable().integer().min(0).max(max)
}

/// A written model: its variables, the problem's variables, the objective and the constraints.
type Written = (Vars, ProblemVariables, Expression, Vec<good_lp::Constraint>);

/// The problem as it is written: variables, objective and constraints, and the per-slot usage
/// the capacity constraints close over. One method per constraint family; the order in which
/// they run is the order of variables and constraints the solver sees (the ILP tests pin its
/// answers), so `solve` calls them in a fixed order.
struct Builder<'a> {
    problem: &'a Problem,
    model: &'a Model,
    /// Continuous variables in place of integer and binary ones (the LP relaxation's bound).
    relax: bool,
    pv: ProblemVariables,
    objective: Expression,
    constraints: Vec<good_lp::Constraint>,
    /// (node class, pod class) → pods placed in that class's slots (per-class gangs).
    class_use: BTreeMap<(usize, usize), Expression>,
    /// (shape group, pod class) → pods placed in that group's slots.
    group_use: BTreeMap<(usize, usize), Expression>,
}

impl<'a> Builder<'a> {
    fn new(problem: &'a Problem, model: &'a Model, relax: bool) -> Builder<'a> {
        Builder {
            problem,
            model,
            relax,
            pv: ProblemVariables::new(),
            objective: Expression::default(),
            constraints: Vec::new(),
            class_use: BTreeMap::new(),
            group_use: BTreeMap::new(),
        }
    }

    /// An integer variable in `0..=max` (continuous when relaxed).
    fn int(&mut self, max: u64) -> Variable {
        let d = int(max);
        let d = if self.relax {
            variable().min(0).max(d.get_max())
        } else {
            d
        };
        self.pv.add(d)
    }

    /// A binary variable (continuous in `0..=1` when relaxed).
    fn bin(&mut self) -> Variable {
        let d = if self.relax {
            variable().min(0).max(1)
        } else {
            variable().binary()
        };
        self.pv.add(d)
    }

    /// Per node class, how many nodes take each of its shape group's patterns: each node costs
    /// the class's node cost, and no more nodes than the class has.
    fn node_patterns(&mut self) -> Vec<Vec<Variable>> {
        let (problem, model) = (self.problem, self.model);
        let mut out = Vec::with_capacity(problem.node_classes.len());
        for (c, class) in problem.node_classes.iter().enumerate() {
            let patterns = &model.groups[model.class_group[c]].patterns;
            let vars: Vec<Variable> = patterns
                .iter()
                .map(|_| self.int(u64::from(class.count)))
                .collect();
            let cost = problem.weights.node_cost(class);
            let mut used = Expression::default();
            for &v in &vars {
                self.objective.add_mul(-cost, v);
                used.add_mul(1.0, v);
            }
            if !vars.is_empty() {
                self.constraints.push(used.leq(f64::from(class.count)));
            }
            out.push(vars);
        }
        out
    }

    /// Per pool of interchangeable single-pod gangs, how many go to each shape group that can
    /// hold them: each earns the pool's value, and no more than the pool has.
    fn pools(&mut self) -> Vec<Vec<(usize, Variable)>> {
        let (problem, model) = (self.problem, self.model);
        let mut out = Vec::with_capacity(model.pools.len());
        for pool in &model.pools {
            let mut vars = Vec::new();
            for s in 0..model.groups.len() {
                let ub = model
                    .group_capacity(problem, s, pool.pod_class)
                    .min(pool.members.len() as u64);
                if ub == 0 {
                    continue;
                }
                let v = self.int(ub);
                self.objective.add_mul(pool.value, v);
                self.group_use
                    .entry((s, pool.pod_class))
                    .or_default()
                    .add_mul(1.0, v);
                vars.push((s, v));
            }
            let mut total = Expression::default();
            for &(_, v) in &vars {
                total.add_mul(1.0, v);
            }
            self.constraints.push(total.leq(pool.members.len() as f64));
            out.push(vars);
        }
        out
    }

    /// One gang model: whether it is placed, its domain choice, and its members per pod group
    /// and location (see [`Builder::gang_group`]); all of a group or none when the gang needs
    /// every member, else at least `minMember` of all groups once placed.
    fn gang(&mut self, gm: &GangModel, vars: &mut Vars) {
        let gang = &self.problem.gangs[gm.gang];
        let placed = self.bin();
        let in_domain: Vec<(usize, Variable)> =
            gm.domains.iter().map(|&d| (d, self.bin())).collect();
        let compact = (gang.topology == Topology::Preferred).then(|| self.bin());
        if let Some(s) = compact {
            self.objective.add_mul(gm.bonus, s);
            self.constraints.push(Expression::from(s).leq(placed));
        }
        let mut domains_chosen = Expression::default();
        for &(_, v) in &in_domain {
            domains_chosen.add_mul(1.0, v);
        }
        // Required: placed in exactly one domain; preferred: in one when compact.
        match (gang.topology, compact) {
            (Topology::Required, _) => self.constraints.push(domains_chosen.eq(placed)),
            (Topology::Preferred, Some(s)) => self.constraints.push(domains_chosen.eq(s)),
            _ => {}
        }
        let mut all_members = Expression::default();
        let mut members_at = Vec::new();
        for grp in &gm.groups {
            let (members, at) = self.gang_group(gm, grp, &in_domain, compact, &mut all_members);
            if gang.min_member == gang.total() {
                self.constraints
                    .push(members.eq(f64::from(grp.count) * placed));
            } else {
                self.constraints
                    .push(members.leq(f64::from(grp.count) * placed));
            }
            members_at.push(at);
        }
        if gang.min_member < gang.total() {
            self.constraints
                .push(all_members.geq(f64::from(gang.min_member) * placed));
        }
        vars.gang_placed.push(placed);
        vars.members_at.push(members_at);
        vars.in_domain.push(in_domain);
        vars.compact.push(compact);
    }

    /// The members of one pod group of a gang at each location they may use (each earns the
    /// group's value), counted against the location's slots; a per-class gang's members stay
    /// inside the chosen domain. Returns the group's member count and its variables.
    fn gang_group(
        &mut self,
        gm: &GangModel,
        grp: &GangGroup,
        in_domain: &[(usize, Variable)],
        compact: Option<Variable>,
        all_members: &mut Expression,
    ) -> (Expression, Vec<(usize, Variable)>) {
        let (problem, model) = (self.problem, self.model);
        let topology = problem.gangs[gm.gang].topology;
        let mut members = Expression::default();
        let mut at = Vec::new();
        for &loc in &grp.locations {
            let cap = if gm.per_class {
                model.class_capacity(problem, loc, grp.pod_class)
            } else {
                model.group_capacity(problem, loc, grp.pod_class)
            };
            let ub = cap.min(u64::from(grp.count));
            let v = self.int(ub);
            self.objective.add_mul(grp.value, v);
            members.add_mul(1.0, v);
            all_members.add_mul(1.0, v);
            if gm.per_class {
                self.class_use
                    .entry((loc, grp.pod_class))
                    .or_default()
                    .add_mul(1.0, v);
                let s = model.class_group[loc];
                self.group_use
                    .entry((s, grp.pod_class))
                    .or_default()
                    .add_mul(1.0, v);
                let domain =
                    model.class_domain[loc].and_then(|d| in_domain.iter().find(|(zd, _)| *zd == d));
                self.domain_link(topology, compact, domain, v, ub as f64);
            } else {
                self.group_use
                    .entry((loc, grp.pod_class))
                    .or_default()
                    .add_mul(1.0, v);
            }
            at.push((loc, v));
        }
        (members, at)
    }

    /// Keeps `members` (at most `ub`) of a per-class gang inside its domain: required, only in
    /// the chosen domain (none in a class outside every domain); preferred, only there when
    /// the gang is compact.
    fn domain_link(
        &mut self,
        topology: Topology,
        compact: Option<Variable>,
        domain: Option<&(usize, Variable)>,
        members: Variable,
        ub: f64,
    ) {
        match (topology, compact, domain) {
            (Topology::Required, _, Some(&(_, chosen))) => {
                self.constraints
                    .push((Expression::from(members) - ub * chosen).leq(0.0));
            }
            (Topology::Required, _, None) => {
                self.constraints.push(Expression::from(members).leq(0.0))
            }
            (Topology::Preferred, Some(s), domain) => {
                let mut e = Expression::from(members) + ub * s;
                if let Some(&(_, chosen)) = domain {
                    e.add_mul(-ub, chosen);
                }
                self.constraints.push(e.leq(ub));
            }
            _ => {}
        }
    }

    /// Capacity: pods placed in a node class's (or shape group's) slots never exceed the slots
    /// its nodes' patterns offer.
    fn capacity(&mut self, pattern_nodes: &[Vec<Variable>]) {
        let model = self.model;
        let slots = |c: usize, p: usize, e: &mut Expression| {
            let patterns = &model.groups[model.class_group[c]].patterns;
            for (k, &v) in pattern_nodes[c].iter().enumerate() {
                let a = patterns[k][p];
                if a > 0 {
                    e.add_mul(-f64::from(a), v);
                }
            }
        };
        for ((c, p), mut e) in std::mem::take(&mut self.class_use) {
            slots(c, p, &mut e);
            self.constraints.push(e.leq(0.0));
        }
        for ((s, p), mut e) in std::mem::take(&mut self.group_use) {
            for &c in &model.groups[s].classes {
                slots(c, p, &mut e);
            }
            self.constraints.push(e.leq(0.0));
        }
    }

    /// Every variable and constraint of the model, in the order the solver sees them.
    fn build(mut self) -> Written {
        let pattern_nodes = self.node_patterns();
        let pool_placed = self.pools();
        let mut vars = Vars {
            pattern_nodes,
            pool_placed,
            gang_placed: Vec::new(),
            members_at: Vec::new(),
            in_domain: Vec::new(),
            compact: Vec::new(),
        };
        for gm in &self.model.gangs {
            self.gang(gm, &mut vars);
        }
        self.capacity(&vars.pattern_nodes);
        (vars, self.pv, self.objective, self.constraints)
    }
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
    let (vars, pv, objective, constraints) = Builder::new(problem, model, relax).build();
    let warm = start.and_then(|plan| super::warm::warm_start(problem, model, &vars, plan));
    let mut lp = pv.maximise(objective).using(microlp);
    for c in constraints {
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
        for (k, &v) in vars.pattern_nodes[c].iter().enumerate() {
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
        if value(vars.gang_placed[gi]) == 0 {
            continue;
        }
        for (grp, xs) in gm.groups.iter().zip(&vars.members_at[gi]) {
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
        if value(vars.gang_placed[gi]) == 0 {
            continue;
        }
        for (grp, xs) in gm.groups.iter().zip(&vars.members_at[gi]) {
            for &(s, v) in xs {
                for (c, k) in spread(model, s, grp.pod_class, value(v), &mut left)? {
                    add(gm.gang, grp.group, c, k);
                }
            }
        }
    }
    for (pool, xs) in model.pools.iter().zip(&vars.pool_placed) {
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
