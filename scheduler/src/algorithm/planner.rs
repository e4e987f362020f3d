//! Batch planners: whole batches of gangs (large gangs, topology-constrained gangs, several gangs
//! competing) planned at once. The greedy planner is the default; the ILP optimiser plugs in
//! behind the same trait, and whatever it returns is checked against every plugin before use.

use std::time::Duration;

use crate::cache::{Placement, PlanState, Snapshot};
use crate::framework::Profile;

use super::gang::{GangRequest, place_gang};
use super::schedule_one::run_filters;
use crate::framework::CycleState;

/// Gangs with at least this many pending members are a hard batch.
pub const DEFAULT_HARD_GANG_SIZE: usize = 16;
/// Time a planner may take for one batch.
pub const DEFAULT_PLAN_BUDGET: Duration = Duration::from_millis(500);

/// What a planner found.
#[derive(Clone, Debug, PartialEq)]
pub enum PlanOutcome {
    /// Placements (pod and node; devices are chosen by the framework when the plan is
    /// validated) for the members of the gangs it could complete.
    Plan(Vec<Placement>),
    /// Nothing better than the greedy plan.
    NoBetterPlan,
}

#[derive(Debug, thiserror::Error)]
pub enum PlannerError {
    #[error("planner {planner}: {message}")]
    Failed {
        planner: &'static str,
        message: String,
    },
    #[error("plan rejected: pod {pod} does not fit on node {node}: {reason}")]
    Rejected {
        pod: String,
        node: String,
        reason: String,
    },
}

/// Plans a batch of gangs on an immutable snapshot. Never calls the API.
pub trait BatchPlanner: Send + Sync {
    fn name(&self) -> &'static str;
    fn plan(
        &self,
        snapshot: &Snapshot,
        batch: &[GangRequest],
        budget: Duration,
    ) -> Result<PlanOutcome, PlannerError>;
}

/// The planner hard batches go to by default: the ILP optimiser. Its node eligibility uses
/// `profile`; every plan is still validated against the gang's own profile.
pub fn default_planner(profile: std::sync::Arc<Profile>) -> std::sync::Arc<dyn BatchPlanner> {
    std::sync::Arc::new(super::ilp_planner::IlpPlanner::new(profile))
}

/// Whether a gang is a hard batch: a topology rule, or at least `hard_size` pending members.
pub fn is_hard(gang: &GangRequest, hard_size: usize) -> bool {
    gang.topology.is_some() || gang.members.len() >= hard_size
}

/// Asks `planner` for the gang and checks its plan against every filter: the placements when
/// they complete the gang, `None` when the greedy plan should be used (nothing better, an
/// incomplete or rejected plan, a failed planner).
pub fn plan_with(
    planner: &dyn BatchPlanner,
    profile: &Profile,
    snapshot: &Snapshot,
    gang: &GangRequest,
    budget: Duration,
) -> Option<Vec<Placement>> {
    let batch = std::slice::from_ref(gang);
    match planner.plan(snapshot, batch, budget) {
        Ok(PlanOutcome::Plan(pls)) if !pls.is_empty() => {
            match validate_plan(profile, snapshot, batch, &pls) {
                Ok(p) if p.placements.len() + gang.bound.len() >= gang.min_member as usize => {
                    Some(p.placements)
                }
                Ok(_) => {
                    tracing::debug!(planner = planner.name(), "plan incomplete; greedy");
                    None
                }
                Err(e) => {
                    tracing::warn!(planner = planner.name(), error = %e, "plan rejected; greedy");
                    None
                }
            }
        }
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(planner = planner.name(), error = %e, "planner failed; greedy");
            None
        }
    }
}

/// The default planner: gangs in order, each all or nothing, greedy inside.
#[derive(Debug)]
pub struct GreedyPlanner {
    profile: std::sync::Arc<Profile>,
}

impl GreedyPlanner {
    pub fn new(profile: std::sync::Arc<Profile>) -> GreedyPlanner {
        GreedyPlanner { profile }
    }
}

impl BatchPlanner for GreedyPlanner {
    fn name(&self) -> &'static str {
        "Greedy"
    }

    fn plan(
        &self,
        snapshot: &Snapshot,
        batch: &[GangRequest],
        _budget: Duration,
    ) -> Result<PlanOutcome, PlannerError> {
        let mut plan = PlanState::new(snapshot);
        for g in batch {
            if let Ok(p) = place_gang(&self.profile, &plan, g) {
                plan = p;
            }
        }
        Ok(PlanOutcome::Plan(plan.placements))
    }
}

/// Applies a planner's placements through the framework: each must pass every filter on its
/// node; devices are chosen where the plan left them out. The result is a plan state ready to
/// commit, or the first placement that does not hold.
pub fn validate_plan<'a>(
    profile: &Profile,
    snapshot: &'a Snapshot,
    batch: &[GangRequest],
    placements: &[Placement],
) -> Result<PlanState<'a>, PlannerError> {
    let mut plan = PlanState::new(snapshot);
    for pl in placements {
        let Some(pod) = batch
            .iter()
            .flat_map(|g| &g.members)
            .find(|m| m.key == pl.pod)
        else {
            return Err(PlannerError::Rejected {
                pod: pl.pod.to_string(),
                node: pl.node_name.to_string(),
                reason: "not a member of the batch".into(),
            });
        };
        let Some(node) = plan.node(pl.node) else {
            return Err(PlannerError::Rejected {
                pod: pl.pod.to_string(),
                node: pl.node_name.to_string(),
                reason: "no such node".into(),
            });
        };
        let mut state = CycleState::new();
        let mut s = run_filters(profile, &state, pod, node);
        // Devices are always chosen here, so a plan can never hand out a device twice.
        let mut placement = Placement {
            devices: Vec::new(),
            ..pl.clone()
        };
        if s.is_success() {
            for p in &profile.reserves {
                if let Some(r) = p.as_reserve() {
                    s = r
                        .reserve(&mut state, pod, node, &mut placement)
                        .unwrap_or_else(|e| crate::framework::Status::error(e.to_string()));
                }
            }
        }
        if !s.is_success() {
            return Err(PlannerError::Rejected {
                pod: pl.pod.to_string(),
                node: pl.node_name.to_string(),
                reason: s.to_string(),
            });
        }
        plan.reserve(pod, placement);
    }
    Ok(plan)
}
