//! The mixed-integer model over classes, built with good_lp and solved by microlp.
//!
//! Variables (all integer; symmetry is broken by construction, since nodes of a class are never
//! told apart), named as `solve::Vars` names them:
//! - `pattern_nodes[c][k]`: nodes of class `c` running pattern `k` ([`super::patterns`]);
//!   `Σ_k ≤ count`.
//! - `pool_placed[pool][s]`: pooled single pods (same request, same weight) on shape group `s`
//!   (classes with the same free shape, any domain).
//! - `gang_placed[g]` binary: gang `g` placed; `members_at[g][i][s]` its pods of group `i` on
//!   shape group `s`, or per class `members_at[g][i][c]` when the gang has a topology, with
//!   `in_domain[g][d]` binary for its domain (and `compact[g]` for a preferred topology kept).
//!
//! `solve` writes each constraint family with one builder method (node patterns, pools, gangs
//! and their domains, capacity).
//!
//! Capacity: per class and pod class for the per-class variables, and per shape group and pod class
//! for everything (pods without topology may use any domain's leftover slots, which is exact because
//! slots of different pod classes are independent once the patterns are fixed).
//! Objective: placed pod value, minus node costs, plus the preferred-topology bonus — the same as
//! [`super::check::evaluate`] up to nodes that carry a pattern but no pod.

use std::collections::{BTreeMap, BTreeSet};

use super::Error;
use super::check::PodClasses;
use super::model::{Problem, Shape, Topology};
use super::patterns::maximal_patterns;

/// Classes with the same free shape and emptiness.
#[derive(Debug, Clone)]
pub(crate) struct ShapeGroup {
    pub classes: Vec<usize>,
    pub patterns: Vec<Vec<u32>>,
}

/// Single pods with the same request and weight, placed as a count.
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    pub pod_class: usize,
    pub value: f64,
    /// Gang indices, in problem order: the first `x` of them are the ones placed.
    pub members: Vec<usize>,
}

/// One gang group's variables' locations: shape groups (no topology) or node classes.
#[derive(Debug, Clone)]
pub(crate) struct GangGroup {
    pub group: usize,
    pub pod_class: usize,
    pub count: u32,
    pub value: f64,
    /// Shape group indices when `per_class` is false, class indices otherwise.
    pub locations: Vec<usize>,
}

/// A gang that is not pooled.
#[derive(Debug, Clone)]
pub(crate) struct GangModel {
    pub gang: usize,
    pub per_class: bool,
    pub groups: Vec<GangGroup>,
    /// Domains (indices into `Model::domains`) a topology gang may pick.
    pub domains: Vec<usize>,
    pub bonus: f64,
}

/// The index structure of the model; good_lp variables are made from it in the solver thread.
#[derive(Debug, Clone)]
pub(crate) struct Model {
    pub pods: PodClasses,
    pub groups: Vec<ShapeGroup>,
    pub class_group: Vec<usize>,
    pub class_domain: Vec<Option<usize>>,
    pub pools: Vec<Pool>,
    pub gangs: Vec<GangModel>,
}

impl Model {
    /// Builds the index structure; fails with [`Error::ModelTooLarge`] when a class has more
    /// patterns than `max_patterns`.
    pub fn build(problem: &Problem, max_patterns: usize) -> Result<Self, Error> {
        let pods = PodClasses::new(problem);
        let w = &problem.weights;
        let domains: Vec<String> = problem
            .node_classes
            .iter()
            .filter_map(|c| c.domain.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let class_domain = problem
            .node_classes
            .iter()
            .map(|c| {
                c.domain
                    .as_ref()
                    .and_then(|d| domains.binary_search(d).ok())
            })
            .collect();

        let mut by_shape: BTreeMap<(&Shape, bool), usize> = BTreeMap::new();
        let mut groups: Vec<ShapeGroup> = Vec::new();
        let mut class_group = Vec::with_capacity(problem.node_classes.len());
        for (c, class) in problem.node_classes.iter().enumerate() {
            let s = *by_shape
                .entry((&class.free, class.empty))
                .or_insert_with(|| {
                    groups.push(ShapeGroup {
                        classes: Vec::new(),
                        patterns: Vec::new(),
                    });
                    groups.len() - 1
                });
            groups[s].classes.push(c);
            class_group.push(s);
        }
        let demanded: Vec<usize> = (0..pods.shapes.len()).collect();
        for (s, group) in groups.iter_mut().enumerate() {
            let free = &problem.node_classes[group.classes[0]].free;
            group.patterns = maximal_patterns(free, &pods.shapes, &demanded, max_patterns).ok_or(
                Error::ModelTooLarge {
                    shape_group: s,
                    limit: max_patterns,
                },
            )?;
        }

        let mut pools: Vec<Pool> = Vec::new();
        let mut pool_index: BTreeMap<(usize, u64), usize> = BTreeMap::new();
        let mut gangs = Vec::new();
        for (g, gang) in problem.gangs.iter().enumerate() {
            if gang.is_single() {
                let Some(i) = gang.pods.iter().position(|grp| grp.count == 1) else {
                    continue;
                };
                let p = pods.of[g][i];
                let value = w.pod_value(gang.weight, &gang.pods[i].request);
                let at = *pool_index.entry((p, value.to_bits())).or_insert_with(|| {
                    pools.push(Pool {
                        pod_class: p,
                        value,
                        members: Vec::new(),
                    });
                    pools.len() - 1
                });
                pools[at].members.push(g);
                continue;
            }
            let per_class = gang.topology != Topology::None;
            let fits = |c: usize, p: usize| {
                let class = &problem.node_classes[c];
                class.count > 0
                    && class.free.fit_count(&pods.shapes[p]) > 0
                    && (gang.topology != Topology::Required || class.domain.is_some())
            };
            let model_groups: Vec<GangGroup> = gang
                .pods
                .iter()
                .enumerate()
                .filter(|(_, grp)| grp.count > 0)
                .map(|(i, grp)| {
                    let p = pods.of[g][i];
                    let locations = if per_class {
                        (0..problem.node_classes.len())
                            .filter(|&c| fits(c, p))
                            .collect()
                    } else {
                        (0..groups.len())
                            .filter(|&s| groups[s].classes.iter().any(|&c| fits(c, p)))
                            .collect()
                    };
                    GangGroup {
                        group: i,
                        pod_class: p,
                        count: grp.count,
                        value: w.pod_value(gang.weight, &grp.request),
                        locations,
                    }
                })
                .collect();
            let gang_domains = if per_class {
                let mut set = BTreeSet::new();
                for grp in &model_groups {
                    for &c in &grp.locations {
                        set.extend(
                            problem.node_classes[c]
                                .domain
                                .as_ref()
                                .and_then(|d| domains.binary_search(d).ok()),
                        );
                    }
                }
                set.into_iter().collect()
            } else {
                Vec::new()
            };
            let bonus = if gang.topology == Topology::Preferred {
                w.preferred_topology * super::check::gang_value(problem, gang)
            } else {
                0.0
            };
            gangs.push(GangModel {
                gang: g,
                per_class,
                groups: model_groups,
                domains: gang_domains,
                bonus,
            });
        }
        Ok(Self {
            pods,
            groups,
            class_group,
            class_domain,
            pools,
            gangs,
        })
    }

    /// Pods of class `p` that nodes of shape group `s` can hold, all nodes together.
    pub fn group_capacity(&self, problem: &Problem, s: usize, p: usize) -> u64 {
        self.groups[s]
            .classes
            .iter()
            .map(|&c| {
                let class = &problem.node_classes[c];
                u64::from(class.count) * u64::from(class.free.fit_count(&self.pods.shapes[p]))
            })
            .sum()
    }

    /// Pods of class `p` that nodes of class `c` can hold.
    pub fn class_capacity(&self, problem: &Problem, c: usize, p: usize) -> u64 {
        let class = &problem.node_classes[c];
        u64::from(class.count) * u64::from(class.free.fit_count(&self.pods.shapes[p]))
    }
}
