//! The decision: one pod ([`schedule_one`]), a gang ([`gang`]), a batch of gangs behind the
//! [`planner::BatchPlanner`] trait, preemption, and the why-pending diagnosis. Everything here
//! is pure: it reads a snapshot and returns a plan; it never calls the API.

pub mod diagnosis;
pub mod gang;
pub mod ilp_planner;
pub mod planner;
pub mod preemption;
pub mod schedule_one;
pub mod search;

pub use diagnosis::Diagnosis;
pub use gang::{GangRequest, TopologyRule, place_gang};
pub use ilp_planner::IlpPlanner;
pub use planner::{BatchPlanner, GreedyPlanner, PlanOutcome, PlannerError};
pub use preemption::{PreemptionPlan, Preemptor, find_victims};
pub use schedule_one::{schedule_pod, schedule_pod_with};
pub use search::Search;
