//! Defragmentation proposals: which preemptible pods to move where so that K whole nodes become
//! free, moving as few GPU-hours as possible. Nothing is executed; the caller decides.
//!
//! Model (over classes again): candidate nodes are grouped by free shape and the multiset of their
//! pods; `m[c]` of class `c` are freed — always its cheapest ones, which a convex piecewise cost
//! (one `[0, 1]` segment per node, cheapest first) expresses without a variable per node. The pods
//! of freed nodes must fit, by node patterns, on the nodes that are not freed. The greedy (cheapest
//! node first, best fit for its pods) is the fallback and the better plan of the two is returned.

use std::collections::BTreeMap;
use std::time::Duration;

use good_lp::{
    Expression, ProblemVariables, Solution, SolverModel, Variable, WithTimeLimit, microlp, variable,
};

use super::model::Shape;
use super::patterns::maximal_patterns;
use super::{Error, Source};

/// A pod the defragmenter may move.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningPod {
    /// The pod's key.
    pub name: String,
    /// What it uses.
    pub request: Shape,
    /// Cost of moving it, in GPU-hours of work lost or redone (≥ 0).
    pub gpu_hours: f64,
}

/// A node as the defragmenter sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct DefragNode {
    /// The node's name.
    pub name: String,
    /// Its free capacity now.
    pub free: Shape,
    /// Its preemptible pods (all of them must move for the node to become whole).
    pub movable: Vec<RunningPod>,
    /// True when it also runs pods that may not move: it can receive pods but never be freed.
    pub pinned: bool,
}

/// What to free.
#[derive(Debug, Clone, PartialEq)]
pub struct DefragRequest {
    /// The cluster.
    pub nodes: Vec<DefragNode>,
    /// How many whole nodes should be free afterwards (already-empty eligible nodes count).
    pub target: u32,
    /// Only nodes with this GPU model count towards the target (`None`: any node).
    pub gpu_model: Option<String>,
    /// Solver time limit.
    pub budget: Duration,
}

/// One pod to move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The pod.
    pub pod: String,
    /// From this node.
    pub from: String,
    /// To this node.
    pub to: String,
}

/// A proposal; the caller preempts and re-creates the pods if it agrees.
#[derive(Debug, Clone, PartialEq)]
pub struct DefragPlan {
    /// Nodes that will be whole afterwards.
    pub freed: Vec<String>,
    /// Moves, in order.
    pub moves: Vec<Move>,
    /// Total GPU-hours moved.
    pub cost: f64,
    /// Who found it.
    pub source: Source,
}

fn eligible(req: &DefragRequest, node: &DefragNode) -> bool {
    !node.pinned
        && match &req.gpu_model {
            None => true,
            Some(m) => node.free.gpu_model.as_deref() == Some(m.as_str()),
        }
}

fn node_cost(node: &DefragNode) -> f64 {
    node.movable.iter().map(|p| p.gpu_hours).sum()
}

fn left_after(free: &Shape, add: &Shape) -> Option<Shape> {
    (free.admits_model(add)
        && free.cpu_milli >= add.cpu_milli
        && free.memory_bytes >= add.memory_bytes
        && free.gpus >= add.gpus)
        .then(|| Shape {
            cpu_milli: free.cpu_milli - add.cpu_milli,
            memory_bytes: free.memory_bytes - add.memory_bytes,
            gpus: free.gpus - add.gpus,
            gpu_model: free.gpu_model.clone(),
        })
}

/// Proposes how to free `req.target` whole nodes, or `None` when it cannot be done.
pub fn propose_defrag(req: &DefragRequest) -> Result<Option<DefragPlan>, Error> {
    for n in &req.nodes {
        if let Some(p) = n
            .movable
            .iter()
            .find(|p| !p.gpu_hours.is_finite() || p.gpu_hours < 0.0)
        {
            return Err(Error::InvalidWeight {
                what: format!("gpu_hours of {}", p.name),
                value: p.gpu_hours,
            });
        }
        if n.movable.iter().any(|p| p.request.is_zero()) {
            return Err(Error::InvalidGang {
                gang: n.name.clone(),
                reason: "a pod requests no resources".into(),
            });
        }
    }
    let greedy = greedy_defrag(req);
    let solved = solve_on_thread(req).unwrap_or_else(|e| {
        tracing::debug!(error = %e, "defrag solver gave no plan");
        None
    });
    Ok(match (greedy, solved) {
        (Some(g), Some(s)) if s.cost + 1e-9 < g.cost => Some(s),
        (Some(g), _) => Some(g),
        (None, s) => s,
    })
}

/// Runs [`solve_defrag`] on a thread, abandoned (like the placement solver's) if it overruns
/// the budget; a panic inside microlp becomes an error instead of taking the caller down.
fn solve_on_thread(req: &DefragRequest) -> Result<Option<DefragPlan>, Error> {
    let owned = req.clone();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("drover-defrag".into())
        .spawn(move || {
            let _ = tx.send(solve_defrag(&owned));
        })
        .map_err(|e| Error::Solver {
            reason: format!("cannot start solver thread: {e}"),
        })?;
    rx.recv_timeout(req.budget + super::DEFAULT_GRACE)
        .map_err(|e| Error::Solver {
            reason: format!("no defrag answer: {e}"),
        })?
}

/// Cheapest node first; a node is freed when all its pods fit elsewhere (best fit by GPU).
fn greedy_defrag(req: &DefragRequest) -> Option<DefragPlan> {
    let mut free: Vec<Shape> = req.nodes.iter().map(|n| n.free.clone()).collect();
    let mut frozen = vec![false; req.nodes.len()]; // freed, or received pods
    let mut order: Vec<usize> = (0..req.nodes.len())
        .filter(|&i| eligible(req, &req.nodes[i]))
        .collect();
    order.sort_by(|&a, &b| {
        node_cost(&req.nodes[a])
            .total_cmp(&node_cost(&req.nodes[b]))
            .then(a.cmp(&b))
    });
    let (mut freed, mut moves, mut cost) = (Vec::new(), Vec::new(), 0.0);
    for i in order {
        if freed.len() as u32 >= req.target {
            break;
        }
        if frozen[i] {
            continue;
        }
        let node = &req.nodes[i];
        let mut pods: Vec<&RunningPod> = node.movable.iter().collect();
        pods.sort_by_key(|p| {
            (
                std::cmp::Reverse(p.request.gpus),
                std::cmp::Reverse(p.request.cpu_milli),
            )
        });
        let mut trial = free.clone();
        let mut trial_moves = Vec::new();
        let ok = pods.iter().all(|pod| {
            let best = (0..trial.len())
                .filter(|&j| j != i && !(frozen[j] && freed.contains(&j)))
                .filter_map(|j| left_after(&trial[j], &pod.request).map(|l| (j, l)))
                .min_by_key(|(j, l)| (l.gpus, l.cpu_milli, *j));
            match best {
                Some((j, l)) => {
                    trial[j] = l;
                    trial_moves.push((pod.name.clone(), j));
                    true
                }
                None => false,
            }
        });
        if !ok {
            continue;
        }
        free = trial;
        frozen[i] = true;
        for (pod, j) in trial_moves {
            frozen[j] = true;
            moves.push(Move {
                pod,
                from: node.name.clone(),
                to: req.nodes[j].name.clone(),
            });
        }
        cost += node_cost(node);
        freed.push(i);
    }
    (freed.len() as u32 >= req.target).then(|| DefragPlan {
        freed: freed.iter().map(|&i| req.nodes[i].name.clone()).collect(),
        moves,
        cost,
        source: Source::Greedy,
    })
}

/// A node class: free shape, and the sorted pod classes it runs when it is a candidate.
type ClassKey = (Shape, Option<Vec<usize>>);

/// The classes the model is written over.
struct Classes {
    /// Pod classes (shapes) of movable pods on eligible nodes, by index.
    shapes: Vec<Shape>,
    /// Shape → its index in `shapes`.
    index: BTreeMap<Shape, usize>,
    /// Node classes, each with its nodes sorted by cost (cheapest first); a class whose key has
    /// no content holds nodes that can only receive.
    nodes: Vec<(ClassKey, Vec<usize>)>,
}

impl Classes {
    fn of(req: &DefragRequest) -> Classes {
        let mut shapes: Vec<Shape> = Vec::new();
        let mut index: BTreeMap<Shape, usize> = BTreeMap::new();
        let mut pod_class = |s: &Shape| {
            *index.entry(s.clone()).or_insert_with(|| {
                shapes.push(s.clone());
                shapes.len() - 1
            })
        };
        // Receiver classes: (free shape, content or None for non-candidates) → nodes.
        let mut classes: BTreeMap<ClassKey, Vec<usize>> = BTreeMap::new();
        for (i, node) in req.nodes.iter().enumerate() {
            let content = eligible(req, node).then(|| {
                let mut c: Vec<usize> =
                    node.movable.iter().map(|p| pod_class(&p.request)).collect();
                c.sort_unstable();
                c
            });
            classes
                .entry((node.free.clone(), content))
                .or_default()
                .push(i);
        }
        let nodes = classes
            .into_iter()
            .map(|(k, mut v)| {
                v.sort_by(|&a, &b| {
                    node_cost(&req.nodes[a])
                        .total_cmp(&node_cost(&req.nodes[b]))
                        .then(a.cmp(&b))
                });
                (k, v)
            })
            .collect();
        Classes {
            shapes,
            index,
            nodes,
        }
    }
}

/// The model's variables, per node class.
struct Vars {
    /// How many of the class's nodes are freed (`None`: the class cannot be freed).
    freed: Vec<Option<Variable>>,
    /// (pattern, how many of the class's nodes that stay receive pods as it says).
    receivers: Vec<Vec<(Vec<u32>, Variable)>>,
}

/// The model as it is written; the order of variables and constraints is the solver's.
struct Builder<'a> {
    req: &'a DefragRequest,
    pv: ProblemVariables,
    /// GPU-hours moved (plus a tiny cost per receiving node).
    cost: Expression,
    constraints: Vec<good_lp::Constraint>,
    /// Nodes freed, over every class.
    freed_total: Expression,
    /// Per pod class: pods that must move (on freed nodes) and slots that receive them.
    demand: Vec<Expression>,
    supply: Vec<Expression>,
    /// Every pod class, for the patterns.
    all_shapes: Vec<usize>,
}

/// A written model: its variables, the problem's variables, the objective and the constraints.
type Written = (Vars, ProblemVariables, Expression, Vec<good_lp::Constraint>);

impl<'a> Builder<'a> {
    /// How many nodes of a candidate class (`nodes`, cheapest first, running `content`) are
    /// freed: always its cheapest, by a convex piecewise cost of one `[0, 1]` segment per node.
    fn freed(&mut self, nodes: &[usize], content: &[usize]) -> Variable {
        let (req, count) = (self.req, nodes.len() as f64);
        let m = self.pv.add(
            variable()
                .integer()
                .min(0)
                .max(count.min(f64::from(req.target))),
        );
        let mut segs = Expression::default();
        for &i in nodes.iter().take(req.target as usize) {
            let s = self.pv.add(variable().min(0).max(1));
            self.cost.add_mul(node_cost(&req.nodes[i]), s);
            segs.add_mul(1.0, s);
        }
        self.constraints.push(segs.eq(m));
        self.freed_total.add_mul(1.0, m);
        for &p in content {
            self.demand[p].add_mul(1.0, m);
        }
        m
    }

    /// How many of a class's nodes that stay receive by each pattern that fits its free shape:
    /// no more than the nodes not freed.
    fn receivers(
        &mut self,
        free: &Shape,
        count: f64,
        freed: Option<Variable>,
        classes: &Classes,
        class: usize,
    ) -> Result<Vec<(Vec<u32>, Variable)>, Error> {
        let patterns = maximal_patterns(
            free,
            &classes.shapes,
            &self.all_shapes,
            super::patterns::DEFAULT_MAX_PATTERNS,
        )
        .ok_or(Error::ModelTooLarge {
            shape_group: class,
            limit: super::patterns::DEFAULT_MAX_PATTERNS,
        })?;
        let mut used = Expression::default();
        let mut vars = Vec::new();
        for pat in patterns {
            let v = self.pv.add(variable().integer().min(0).max(count));
            // A tiny cost per receiving node keeps moves on few nodes.
            self.cost.add_mul(1e-6, v);
            used.add_mul(1.0, v);
            for (p, &a) in pat.iter().enumerate() {
                if a > 0 {
                    self.supply[p].add_mul(f64::from(a), v);
                }
            }
            vars.push((pat, v));
        }
        let mut limit = Expression::from(count);
        if let Some(m) = freed {
            limit.add_mul(-1.0, m);
        }
        self.constraints.push(used.leq(limit));
        Ok(vars)
    }

    /// Every variable and constraint: per class, nodes freed and receivers; then at least the
    /// target freed, and every pod that must move has a slot.
    fn build(req: &'a DefragRequest, classes: &Classes) -> Result<Written, Error> {
        let np = classes.shapes.len();
        let mut b = Builder {
            req,
            pv: ProblemVariables::new(),
            cost: Expression::default(),
            constraints: Vec::new(),
            freed_total: Expression::default(),
            demand: vec![Expression::default(); np],
            supply: vec![Expression::default(); np],
            all_shapes: (0..np).collect(),
        };
        let mut vars = Vars {
            freed: Vec::new(),
            receivers: Vec::new(),
        };
        for ((free, content), nodes) in &classes.nodes {
            let m = content.as_ref().map(|content| b.freed(nodes, content));
            let class = vars.receivers.len();
            let receivers = b.receivers(free, nodes.len() as f64, m, classes, class)?;
            vars.freed.push(m);
            vars.receivers.push(receivers);
        }
        let mut constraints = b.constraints;
        constraints.push(b.freed_total.geq(f64::from(req.target)));
        for (d, s) in b.demand.into_iter().zip(b.supply) {
            constraints.push(d.leq(s));
        }
        Ok((vars, b.pv, b.cost, constraints))
    }
}

/// The class model, solved by microlp within `req.budget`.
fn solve_defrag(req: &DefragRequest) -> Result<Option<DefragPlan>, Error> {
    let classes = Classes::of(req);
    let (vars, pv, cost, constraints) = Builder::build(req, &classes)?;
    let mut lp = pv.minimise(cost).using(microlp);
    for c in constraints {
        lp.add_constraint(c);
    }
    let solution = match lp.with_time_limit(req.budget.as_secs_f64()).solve() {
        Ok(s) => s,
        Err(good_lp::ResolutionError::Infeasible) => return Ok(None),
        Err(e) => {
            return Err(Error::Solver {
                reason: e.to_string(),
            });
        }
    };
    let value = |v: Variable| solution.value(v).round().max(0.0) as usize;
    decode(req, &classes, &vars, value).map(Some)
}

/// The plan the solver's values say: the cheapest `freed` nodes of each class are freed, the
/// rest receive by pattern, and each pod of a freed node moves to the next slot of its class.
fn decode(
    req: &DefragRequest,
    classes: &Classes,
    vars: &Vars,
    value: impl Fn(Variable) -> usize,
) -> Result<DefragPlan, Error> {
    let np = classes.shapes.len();
    let mut freed = Vec::new();
    let mut slots: Vec<std::collections::VecDeque<(usize, u32)>> = vec![Default::default(); np];
    for ((_, nodes), (m, receivers)) in classes
        .nodes
        .iter()
        .zip(vars.freed.iter().zip(&vars.receivers))
    {
        let m = m.map_or(0, &value).min(nodes.len());
        freed.extend_from_slice(&nodes[..m]);
        let mut stay = nodes[m..].iter();
        for (pat, v) in receivers {
            for _ in 0..value(*v) {
                let Some(&j) = stay.next() else {
                    return Err(Error::InvalidPlan {
                        reason: "defrag receivers over-used".into(),
                    });
                };
                for (p, &a) in pat.iter().enumerate() {
                    if a > 0 {
                        slots[p].push_back((j, a));
                    }
                }
            }
        }
    }
    let mut moves = Vec::new();
    let mut cost = 0.0;
    for &i in &freed {
        let node = &req.nodes[i];
        cost += node_cost(node);
        for pod in &node.movable {
            let p = classes.index.get(&pod.request).copied().unwrap_or(0);
            let Some(front) = slots[p].front_mut() else {
                return Err(Error::InvalidPlan {
                    reason: "defrag slots exhausted".into(),
                });
            };
            moves.push(Move {
                pod: pod.name.clone(),
                from: node.name.clone(),
                to: req.nodes[front.0].name.clone(),
            });
            front.1 -= 1;
            if front.1 == 0 {
                slots[p].pop_front();
            }
        }
    }
    Ok(DefragPlan {
        freed: freed.iter().map(|&i| req.nodes[i].name.clone()).collect(),
        moves,
        cost,
        source: Source::Solver,
    })
}
