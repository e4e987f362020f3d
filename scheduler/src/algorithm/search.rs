//! Finding the best node for one pod, class by class.
//!
//! After the pre-filters, each plugin says what it reads of a node for this pod
//! ([`NodeView`]). Shape plugins run once per node class (on one member standing for all);
//! per-node plugins run on the members of the classes that passed; neutral ones do not run.
//! Nodes the plan has changed (gang members reserved, victims evicted) are no longer described
//! by their class in the snapshot and stand alone. Scores are normalised over the distinct
//! feasible classes, which gives each node the same score as normalising over every feasible
//! node (see [`Score`]), and ties go to the lowest node index as before — so the choice is the
//! one [`Search::PerNode`] makes, at a cost that follows the number of classes.

use crate::cache::{NodeInfo, PlanState, PodInfo};
use crate::framework::{CycleState, Filter, NodeView, Profile, Score};

use super::schedule_one::NodeSubset;

/// How a cycle looks at nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Search {
    /// Shape-only plugins once per node class (the default).
    #[default]
    Classes,
    /// Every plugin on every candidate node: the reference the classes are tested against.
    PerNode,
}

const UNKNOWN: u32 = u32::MAX;
const INFEASIBLE: u32 = u32::MAX - 1;

/// The profile's filters and scores split by what they read, for one pod.
struct Split<'p> {
    shape_filters: Vec<&'p dyn Filter>,
    node_filters: Vec<&'p dyn Filter>,
    shape_scores: Vec<(&'p dyn Score, i64)>,
    node_scores: Vec<(&'p dyn Score, i64)>,
}

fn split<'p>(profile: &'p Profile, state: &CycleState, pod: &PodInfo) -> Split<'p> {
    let mut s = Split {
        shape_filters: Vec::new(),
        node_filters: Vec::new(),
        shape_scores: Vec::new(),
        node_scores: Vec::new(),
    };
    for p in &profile.filters {
        let Some(f) = p.as_filter() else { continue };
        match p.node_view(state, pod) {
            NodeView::Neutral => {}
            NodeView::Shape => s.shape_filters.push(f),
            NodeView::PerNode => s.node_filters.push(f),
        }
    }
    for (p, w) in &profile.scores {
        let Some(f) = p.as_score() else { continue };
        match p.node_view(state, pod) {
            NodeView::Neutral => {}
            NodeView::Shape => s.shape_scores.push((f, *w)),
            NodeView::PerNode => s.node_scores.push((f, *w)),
        }
    }
    s
}

fn passes(filters: &[&dyn Filter], state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> bool {
    filters
        .iter()
        .all(|f| f.filter(state, pod, node).is_success())
}

/// Feasible nodes by slot: the slots (one node standing for each class, or a changed node) and
/// the feasible nodes with their slot. With `every_member` false and no per-node plugin, only
/// the lowest member of each class is listed (all members would score the same).
fn collect<'a>(
    sp: &Split<'_>,
    state: &CycleState,
    pod: &PodInfo,
    plan: &'a PlanState<'_>,
    every_member: bool,
) -> (Vec<&'a NodeInfo>, Vec<(usize, u32)>) {
    let classes = plan.snapshot().classes();
    let subset = state.get::<NodeSubset>();
    let per_node = every_member || !sp.node_filters.is_empty() || !sp.node_scores.is_empty();
    // A slot is one class (or one changed node) that passed the shape filters.
    let mut slots: Vec<&NodeInfo> = Vec::new();
    // Feasible nodes with their slot; without per-node plugins, one node (the lowest) a slot.
    let mut entries: Vec<(usize, u32)> = Vec::new();
    let in_subset = |i: usize| subset.is_none_or(|s| s.nodes.binary_search(&i).is_ok());
    for i in plan.changed_nodes() {
        let Some(n) = plan.node(i) else { continue };
        if in_subset(i)
            && passes(&sp.shape_filters, state, pod, n)
            && passes(&sp.node_filters, state, pod, n)
        {
            entries.push((i, slots.len() as u32));
            slots.push(n);
        }
    }
    match subset {
        Some(s) => {
            let mut memo = vec![UNKNOWN; classes.id_bound()];
            for &i in s.nodes.iter() {
                if plan.is_changed(i) {
                    continue;
                }
                let (Some(c), Some(n)) = (classes.class_of(i), plan.node(i)) else {
                    continue;
                };
                let slot = &mut memo[c as usize];
                if *slot == UNKNOWN {
                    *slot = if passes(&sp.shape_filters, state, pod, n) {
                        slots.push(n);
                        (slots.len() - 1) as u32
                    } else {
                        INFEASIBLE
                    };
                }
                if *slot != INFEASIBLE && passes(&sp.node_filters, state, pod, n) {
                    entries.push((i, *slot));
                }
            }
        }
        None => {
            let (gpus, cpu) = (
                i64::from(pod.request.whole_gpus()),
                pod.request.res.cpu_milli,
            );
            for (_, c) in classes.live() {
                // What the shape index pruned: the filters would refuse these anyway.
                if (gpus > 0 && gpus > c.whole_gpus) || (cpu > 0 && cpu > c.free_cpu_milli) {
                    continue;
                }
                let mut members = c
                    .members
                    .iter()
                    .map(|&m| m as usize)
                    .filter(|&m| !plan.is_changed(m));
                let Some(first) = members.next() else {
                    continue;
                };
                let Some(rep) = plan.node(first) else {
                    continue;
                };
                if !passes(&sp.shape_filters, state, pod, rep) {
                    continue;
                }
                let slot = slots.len() as u32;
                slots.push(rep);
                if per_node {
                    for m in std::iter::once(first).chain(members) {
                        if plan
                            .node(m)
                            .is_some_and(|n| passes(&sp.node_filters, state, pod, n))
                        {
                            entries.push((m, slot));
                        }
                    }
                } else {
                    entries.push((first, slot));
                }
            }
        }
    }
    (slots, entries)
}

/// Every feasible node, in index order (for planners that need the whole set).
pub fn feasible_by_class(
    profile: &Profile,
    state: &CycleState,
    pod: &PodInfo,
    plan: &PlanState<'_>,
) -> Vec<usize> {
    let sp = split(profile, state, pod);
    let (_, entries) = collect(&sp, state, pod, plan, true);
    let mut v: Vec<usize> = entries.into_iter().map(|(i, _)| i).collect();
    v.sort_unstable();
    v
}

/// The best feasible node for the pod, or `None` when no node fits.
pub fn best_node(
    profile: &Profile,
    state: &CycleState,
    pod: &PodInfo,
    plan: &PlanState<'_>,
) -> Option<usize> {
    let sp = split(profile, state, pod);
    let (slots, entries) = collect(&sp, state, pod, plan, false);
    match entries.len() {
        0 => return None,
        1 => return Some(entries[0].0),
        _ => {}
    }
    let totals = score(&sp, state, pod, plan, &slots, &entries);
    entries
        .iter()
        .zip(&totals)
        .max_by_key(|((i, _), t)| (**t, std::cmp::Reverse(*i)))
        .map(|((i, _), _)| *i)
}

/// Weighted, normalised totals of the entries: shape scores once per present slot, per-node
/// scores per entry.
fn score(
    sp: &Split<'_>,
    state: &CycleState,
    pod: &PodInfo,
    plan: &PlanState<'_>,
    slots: &[&NodeInfo],
    entries: &[(usize, u32)],
) -> Vec<i64> {
    let mut present = vec![false; slots.len()];
    for (_, s) in entries {
        present[*s as usize] = true;
    }
    let present: Vec<usize> = (0..slots.len()).filter(|&k| present[k]).collect();
    let mut slot_total = vec![0i64; slots.len()];
    let mut vals = Vec::with_capacity(present.len().max(entries.len()));
    for (s, w) in &sp.shape_scores {
        vals.clear();
        vals.extend(present.iter().map(|&k| s.score(state, pod, slots[k])));
        s.normalize(&mut vals);
        for (&k, v) in present.iter().zip(&vals) {
            slot_total[k] += w * v;
        }
    }
    let mut totals: Vec<i64> = entries
        .iter()
        .map(|(_, s)| slot_total[*s as usize])
        .collect();
    for (s, w) in &sp.node_scores {
        vals.clear();
        vals.extend(
            entries
                .iter()
                .map(|(i, _)| plan.node(*i).map_or(0, |n| s.score(state, pod, n))),
        );
        s.normalize(&mut vals);
        for (t, v) in totals.iter_mut().zip(&vals) {
            *t += w * v;
        }
    }
    totals
}
