//! The greedy planner: the ILP's warm start and its fallback.
//!
//! Gangs go in order of weight, then size (GPUs, then pods), largest first; each pod goes to the
//! node that it leaves with the fewest free GPUs (best fit), preferring nodes already in use over
//! whole ones. A `Required` gang tries every domain and keeps the tightest that holds it whole.
//! Nodes are simulated per class as groups of identical contents, so the cost does not grow with
//! the number of nodes.

use std::collections::BTreeSet;

use super::check::PodClasses;
use super::model::{Assignment, GangPlacement, NodeUse, Plan, Problem, Shape, Topology};

/// Per node class: groups of nodes with the same content (the all-zero group = untouched nodes).
#[derive(Debug, Clone)]
struct State {
    classes: Vec<Vec<NodeUse>>,
}

/// Where one pod went, for building assignments.
type Placed = Vec<(usize, usize)>; // (group, node class)

impl State {
    fn new(problem: &Problem, np: usize) -> Self {
        let classes = problem
            .node_classes
            .iter()
            .map(|c| {
                vec![NodeUse {
                    content: vec![0; np],
                    nodes: c.count,
                }]
            })
            .collect();
        Self { classes }
    }

    /// Free shape left on a node of `free` holding `content`.
    fn left(free: &Shape, shapes: &[Shape], content: &[u32]) -> (u64, u64, u64) {
        let (mut cpu, mut mem, mut gpu) = (free.cpu_milli, free.memory_bytes, u64::from(free.gpus));
        for (s, &n) in shapes.iter().zip(content) {
            let n = u64::from(n);
            cpu = cpu.saturating_sub(s.cpu_milli.saturating_mul(n));
            mem = mem.saturating_sub(s.memory_bytes.saturating_mul(n));
            gpu = gpu.saturating_sub(u64::from(s.gpus).saturating_mul(n));
        }
        (cpu, mem, gpu)
    }

    /// Best-fit node for one pod of class `p` among `allowed` classes; places it and returns the
    /// class, or `None` when it fits nowhere.
    fn place(
        &mut self,
        problem: &Problem,
        shapes: &[Shape],
        p: usize,
        allowed: &[usize],
    ) -> Option<usize> {
        let req = &shapes[p];
        // Key: fewest GPUs left, then a node already in use, then least CPU left, then order.
        let mut best: Option<((u64, bool, u64), usize, usize)> = None;
        for &c in allowed {
            let free = &problem.node_classes[c].free;
            if !free.admits_model(req) {
                continue;
            }
            for (i, node_use) in self.classes[c].iter().enumerate() {
                if node_use.nodes == 0 {
                    continue;
                }
                let (cpu, mem, gpu) = Self::left(free, shapes, &node_use.content);
                if cpu < req.cpu_milli || mem < req.memory_bytes || gpu < u64::from(req.gpus) {
                    continue;
                }
                let untouched = node_use.content.iter().all(|&n| n == 0);
                let key = (gpu - u64::from(req.gpus), untouched, cpu - req.cpu_milli);
                if best.as_ref().is_none_or(|(k, _, _)| key < *k) {
                    best = Some((key, c, i));
                }
            }
        }
        let (_, c, i) = best?;
        let groups = &mut self.classes[c];
        let mut content = groups[i].content.clone();
        content[p] += 1;
        groups[i].nodes -= 1;
        match groups.iter_mut().find(|u| u.content == content) {
            Some(existing) => existing.nodes += 1,
            None => groups.push(NodeUse { content, nodes: 1 }),
        }
        Some(c)
    }

    /// Free GPUs left in `allowed` classes (to pick the tightest domain).
    fn free_gpus(&self, problem: &Problem, shapes: &[Shape], allowed: &[usize]) -> u64 {
        allowed
            .iter()
            .map(|&c| {
                let free = &problem.node_classes[c].free;
                self.classes[c]
                    .iter()
                    .map(|u| Self::left(free, shapes, &u.content).2 * u64::from(u.nodes))
                    .sum::<u64>()
            })
            .sum()
    }
}

/// Tries to place gang `g` within `allowed` classes; returns the pods placed, or `None` (and
/// leaves `state` untouched) when fewer than `min_member` fit.
fn try_gang(
    problem: &Problem,
    classes: &PodClasses,
    state: &mut State,
    g: usize,
    allowed: &[usize],
) -> Option<Placed> {
    let gang = &problem.gangs[g];
    if gang.total() == 1 {
        // A single pod needs no trial copy: it either lands or changes nothing.
        let i = gang.pods.iter().position(|grp| grp.count == 1)?;
        let c = state.place(problem, &classes.shapes, classes.of[g][i], allowed)?;
        return Some(vec![(i, c)]);
    }
    let mut order: Vec<usize> = (0..gang.pods.len()).collect();
    order.sort_by_key(|&i| {
        let r = &gang.pods[i].request;
        (std::cmp::Reverse(r.gpus), std::cmp::Reverse(r.cpu_milli), i)
    });
    let mut trial = state.clone();
    let mut placed = Vec::new();
    for i in order {
        let p = classes.of[g][i];
        for _ in 0..gang.pods[i].count {
            match trial.place(problem, &classes.shapes, p, allowed) {
                Some(c) => placed.push((i, c)),
                // All-or-nothing gangs stop at the first pod that does not fit.
                None if gang.min_member == gang.total() => return None,
                None => break,
            }
        }
    }
    if placed.len() < gang.min_member as usize {
        return None;
    }
    *state = trial;
    Some(placed)
}

/// The greedy plan for `problem` (assumed valid).
pub fn greedy(problem: &Problem) -> Plan {
    let classes = PodClasses::new(problem);
    let mut state = State::new(problem, classes.shapes.len());
    let all: Vec<usize> = (0..problem.node_classes.len()).collect();
    let domains: BTreeSet<&str> = problem
        .node_classes
        .iter()
        .filter_map(|c| c.domain.as_deref())
        .collect();
    let in_domain = |d: &str| -> Vec<usize> {
        all.iter()
            .copied()
            .filter(|&c| problem.node_classes[c].domain.as_deref() == Some(d))
            .collect()
    };

    let mut order: Vec<usize> = (0..problem.gangs.len()).collect();
    order.sort_by(|&a, &b| {
        let (ga, gb) = (&problem.gangs[a], &problem.gangs[b]);
        let size = |g: &super::model::Gang| {
            let gpus: u64 = g
                .pods
                .iter()
                .map(|p| u64::from(p.request.gpus) * u64::from(p.count))
                .sum();
            (gpus, g.total())
        };
        gb.weight
            .total_cmp(&ga.weight)
            .then(size(gb).cmp(&size(ga)))
            .then(a.cmp(&b))
    });

    let mut gangs = vec![GangPlacement::default(); problem.gangs.len()];
    for g in order {
        let gang = &problem.gangs[g];
        let mut placed = None;
        if gang.topology != Topology::None && gang.total() > 1 {
            // Tightest domain that holds the gang whole.
            let mut best: Option<(u64, State, Placed)> = None;
            for d in &domains {
                let allowed = in_domain(d);
                let mut trial = state.clone();
                if let Some(p) = try_gang(problem, &classes, &mut trial, g, &allowed) {
                    let left = trial.free_gpus(problem, &classes.shapes, &allowed);
                    if best.as_ref().is_none_or(|(l, _, _)| left < *l) {
                        best = Some((left, trial, p));
                    }
                }
            }
            if let Some((_, trial, p)) = best {
                state = trial;
                placed = Some(p);
            }
        }
        if placed.is_none() && gang.topology != Topology::Required {
            placed = try_gang(problem, &classes, &mut state, g, &all);
        }
        if placed.is_none() && gang.topology == Topology::Required && gang.total() == 1 {
            let labelled: Vec<usize> = all
                .iter()
                .copied()
                .filter(|&c| problem.node_classes[c].domain.is_some())
                .collect();
            placed = try_gang(problem, &classes, &mut state, g, &labelled);
        }
        if let Some(pods) = placed {
            gangs[g] = placement(&pods);
        }
    }
    let nodes = state
        .classes
        .into_iter()
        .map(|uses| {
            uses.into_iter()
                .filter(|u| u.nodes > 0 && u.content.iter().any(|&n| n > 0))
                .collect()
        })
        .collect();
    Plan {
        pod_classes: classes.shapes,
        gangs,
        nodes,
    }
}

/// Aggregates placed pods into assignments (sorted, so plans compare deterministically).
fn placement(pods: &Placed) -> GangPlacement {
    let mut counts: std::collections::BTreeMap<(usize, usize), u32> = Default::default();
    for &(group, class) in pods {
        *counts.entry((group, class)).or_default() += 1;
    }
    GangPlacement {
        placed: true,
        assignments: counts
            .into_iter()
            .map(|((group, node_class), count)| Assignment {
                group,
                node_class,
                count,
            })
            .collect(),
    }
}
