//! The ILP optimiser as a [`BatchPlanner`]: from a snapshot and a batch of gangs to an
//! [`optimizer::Problem`] over node classes, and from its plan back to placements via
//! [`optimizer::expand`]. Device ids are left to [`super::planner::validate_plan`], which runs
//! every filter and reserve plugin on each placement, so the optimiser never needs to know about
//! affinity, taints or GPU topology: a plan that breaks them is rejected and the greedy plan used.
//!
//! Nodes enter the problem only if they pass the filters for some gang's first member (found
//! through the node classes, not node by node). Free cpu and memory are rounded *down* to whole
//! cores and GiB so nodes that differ by crumbs share a class; a plan stays feasible.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::cache::{Placement, PlanState, Snapshot};
use crate::framework::{CycleState, Profile};
use crate::optimizer::{self, Gang, NodeClass, PodGroup, Problem, Shape, Topology};
use crate::resources::GPU_RESOURCE;

use super::gang::GangRequest;
use super::planner::{BatchPlanner, PlanOutcome, PlannerError};
use super::schedule_one::pre_filter;
use super::search::feasible_by_class as feasible_nodes;

pub const NAME: &str = "Ilp";
const CPU_GRAIN_MILLI: i64 = 1000;
const MEMORY_GRAIN: i64 = 1 << 30;

/// The ILP optimiser behind the [`BatchPlanner`] trait.
#[derive(Debug)]
pub struct IlpPlanner {
    profile: Arc<Profile>,
}

impl IlpPlanner {
    pub fn new(profile: Arc<Profile>) -> IlpPlanner {
        IlpPlanner { profile }
    }
}

/// A problem with, per node class, its nodes (snapshot indices, sorted) and, per gang and pod
/// group, the members in the order `expand` numbers them.
struct Built {
    problem: Problem,
    class_nodes: Vec<Vec<usize>>,
    members: Vec<Vec<Vec<usize>>>,
}

fn request_shape(r: &crate::resources::PodRequest) -> Shape {
    Shape::new(
        r.res.cpu_milli.max(0) as u64,
        r.res.memory.max(0) as u64,
        r.whole_gpus(),
    )
}

/// Why the batch is left to the greedy planner, if it is.
fn unsupported(batch: &[GangRequest]) -> Option<&'static str> {
    let keys: Vec<&str> = batch
        .iter()
        .filter_map(|g| g.topology.as_ref().map(|t| t.key.as_str()))
        .collect();
    if keys.windows(2).any(|w| w[0] != w[1]) {
        return Some("gangs with different topology keys");
    }
    for g in batch {
        if g.topology.is_some() && !g.bound.is_empty() {
            return Some("a topology gang with members already bound");
        }
        for m in &g.members {
            if m.request.gpu_share_milli > 0 {
                return Some("GPU shares");
            }
            if request_shape(&m.request).is_zero() {
                return Some("a member that requests nothing");
            }
        }
    }
    None
}

impl IlpPlanner {
    fn build(&self, snapshot: &Snapshot, batch: &[GangRequest]) -> Built {
        let key = batch
            .iter()
            .find_map(|g| g.topology.as_ref().map(|t| t.key.clone()));
        // Nodes some gang could use at all.
        let plan = PlanState::new(snapshot);
        let mut usable: Vec<usize> = Vec::new();
        for g in batch {
            let Some(first) = g.members.first() else {
                continue;
            };
            let mut state = CycleState::new();
            if pre_filter(&self.profile, &mut state, first, &plan).is_ok() {
                usable.extend(feasible_nodes(&self.profile, &state, first, &plan));
            }
        }
        usable.sort_unstable();
        usable.dedup();
        type ClassKey = (u64, u64, u32, Option<String>, bool);
        let mut by_key: BTreeMap<ClassKey, Vec<usize>> = BTreeMap::new();
        for i in usable {
            let Some(n) = snapshot.node(i) else { continue };
            let free = (
                (n.free_cpu_milli().max(0) / CPU_GRAIN_MILLI * CPU_GRAIN_MILLI) as u64,
                (n.free_memory().max(0) / MEMORY_GRAIN * MEMORY_GRAIN) as u64,
                n.free_scalar(GPU_RESOURCE).max(0) as u32,
                key.as_ref().and_then(|k| n.labels().get(k).cloned()),
                n.pods.is_empty(),
            );
            by_key.entry(free).or_default().push(i);
        }
        let mut classes = Vec::new();
        let mut class_nodes = Vec::new();
        for ((cpu, mem, gpus, domain, empty), nodes) in by_key {
            classes.push(NodeClass {
                count: nodes.len() as u32,
                free: Shape::new(cpu, mem, gpus),
                domain,
                empty,
            });
            class_nodes.push(nodes);
        }
        let mut gangs = Vec::new();
        let mut members = Vec::new();
        for g in batch {
            let mut groups: Vec<(Shape, Vec<usize>)> = Vec::new();
            for (k, m) in g.members.iter().enumerate() {
                let s = request_shape(&m.request);
                match groups.iter_mut().find(|(gs, _)| *gs == s) {
                    Some((_, v)) => v.push(k),
                    None => groups.push((s, vec![k])),
                }
            }
            let needed = (g.min_member as usize).saturating_sub(g.bound.len());
            gangs.push(Gang {
                id: g.key.to_string(),
                pods: groups
                    .iter()
                    .map(|(s, v)| PodGroup {
                        request: s.clone(),
                        count: v.len() as u32,
                    })
                    .collect(),
                min_member: needed.clamp(1, g.members.len()) as u32,
                topology: match &g.topology {
                    None => Topology::None,
                    Some(t) if t.required => Topology::Required,
                    Some(_) => Topology::Preferred,
                },
                // Higher priority counts for more; never negative.
                weight: 1.0 + f64::from(g.priority().max(0)).ln_1p(),
            });
            members.push(groups.into_iter().map(|(_, v)| v).collect());
        }
        Built {
            problem: Problem {
                node_classes: classes,
                gangs,
                weights: Default::default(),
            },
            class_nodes,
            members,
        }
    }
}

impl BatchPlanner for IlpPlanner {
    fn name(&self) -> &'static str {
        NAME
    }

    fn plan(
        &self,
        snapshot: &Snapshot,
        batch: &[GangRequest],
        budget: Duration,
    ) -> Result<PlanOutcome, PlannerError> {
        if let Some(why) = unsupported(batch) {
            tracing::debug!(reason = why, "ilp planner: batch left to the greedy plan");
            return Ok(PlanOutcome::NoBetterPlan);
        }
        let built = self.build(snapshot, batch);
        if built.problem.node_classes.is_empty() {
            return Ok(PlanOutcome::NoBetterPlan);
        }
        let failed = |e: optimizer::Error| PlannerError::Failed {
            planner: NAME,
            message: e.to_string(),
        };
        let outcome = optimizer::optimize(&built.problem, budget).map_err(failed)?;
        let names: Vec<Vec<String>> = built
            .class_nodes
            .iter()
            .map(|ns| {
                ns.iter()
                    .filter_map(|&i| snapshot.node(i).map(|n| n.name.to_string()))
                    .collect()
            })
            .collect();
        let bindings = optimizer::expand(&built.problem, &outcome.plan, &names).map_err(failed)?;
        let mut placements = Vec::with_capacity(bindings.len());
        let mut name_to_idx: HashMap<&str, usize> = HashMap::new();
        for (c, ns) in built.class_nodes.iter().enumerate() {
            for (k, &i) in ns.iter().enumerate() {
                name_to_idx.insert(&names[c][k], i);
            }
        }
        for b in bindings {
            let (Some(&node), Some(&member)) = (
                name_to_idx.get(b.node.as_str()),
                built.members[b.gang][b.group].get(b.ordinal as usize),
            ) else {
                return Err(PlannerError::Failed {
                    planner: NAME,
                    message: format!("binding to unknown node {} or member", b.node),
                });
            };
            let pod = &batch[b.gang].members[member];
            placements.push(Placement {
                pod: pod.key.clone(),
                node,
                node_name: snapshot
                    .node(node)
                    .map_or_else(|| b.node.as_str().into(), |n| n.name.clone()),
                devices: Vec::new(),
            });
        }
        if placements.is_empty() {
            return Ok(PlanOutcome::NoBetterPlan);
        }
        Ok(PlanOutcome::Plan(placements))
    }
}

#[cfg(test)]
mod tests {
    use drover_api::scheduling::{GangTopology, PodGroup, topology_mode};

    use crate::Simulator;
    use crate::testing::{GpuProfile, node, pod};

    /// Node a has 8 free GPUs but 4 cores; node b has 60 cores but only 4 GPUs free. The gang
    /// asks for (4 GPUs, 1 core) then (4 GPUs, 40 cores): member by member, the first takes b
    /// (fuller, less fragmenting) and the second fits nowhere; the optimiser puts the first on
    /// a, so the gang is placed — through the same planner/validate/fallback path the service
    /// takes.
    #[test]
    fn the_ilp_plan_places_a_gang_the_greedy_plan_cannot() {
        let nodes = || {
            vec![
                node("a")
                    .cpu("4")
                    .label("rack", "r1")
                    .gpus(GpuProfile::H100x8)
                    .build(),
                node("b")
                    .cpu("64")
                    .label("rack", "r1")
                    .gpus(GpuProfile::H100x8)
                    .build(),
            ]
        };
        let load = pod("load", "x").cpu("1").gpus(4).node_name("b").build();
        let mut group = PodGroup::new("ns", "g", 2);
        group.spec.topology = Some(GangTopology {
            key: "rack".into(),
            mode: topology_mode::PREFERRED.into(),
        });
        let members = vec![
            pod("ns", "g-0").cpu("1").gpus(4).gang("g").build(),
            pod("ns", "g-1").cpu("40").gpus(4).gang("g").build(),
        ];

        let mut greedy = Simulator::new(nodes()).with_planner(None);
        greedy.add_bound(load.clone());
        assert!(greedy.decide_gang(&group, members.clone()).is_err());

        let mut ilp = Simulator::new(nodes());
        ilp.add_bound(load);
        let placed = ilp
            .schedule_gang(&group, members)
            .expect("the ILP plan fits");
        let on: Vec<(&str, &str, usize)> = placed
            .iter()
            .map(|p| {
                let ids = p.devices.iter().map(|d| d.ids.len()).sum();
                (&*p.pod, &*p.node_name, ids)
            })
            .collect();
        assert_eq!(on, vec![("ns/g-0", "a", 4), ("ns/g-1", "b", 4)]);
        assert_eq!(ilp.gpu_allocation(), (12_000, 16_000));
    }
}
