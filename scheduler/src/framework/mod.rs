//! The scheduling framework: small traits per extension point, a registry of plugins by name,
//! and profiles (chosen by a pod's `schedulerName`) that say which plugins run.
//!
//! A cycle for one pod runs: PreFilter (once, may compute state for later points) → Filter (per
//! candidate node) → Score (per feasible node, then normalised and weighted) → Reserve (the
//! chosen node; picks devices) → Permit (may say wait: a gang member waits for its gang) → Bind
//! (asynchronously, after the decision). Start reading at [`Plugin`].

pub mod cycle_state;
pub mod profile;
pub mod registry;
pub mod status;

use drover_client::Client;
use futures::future::BoxFuture;

pub use cycle_state::{CycleState, GangProgress};
pub use profile::{PluginConfig, Profile, ProfileConfig, Profiles};
pub use registry::{Registry, RegistryError};
pub use status::{Code, Status};

use crate::cache::{NodeInfo, Placement, PlanState, PodInfo};

/// Highest normalised score a plugin gives a node.
pub const MAX_NODE_SCORE: i64 = 100;

/// Faults inside a plugin (not "does not fit").
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin {plugin}: {message}")]
    Internal {
        plugin: &'static str,
        message: String,
    },
}

/// Errors of a binding through the API.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("binding pod {pod} to node {node}: {source}")]
    Api {
        pod: String,
        node: String,
        #[source]
        source: drover_client::ClientError,
    },
}

/// What a plugin's filter verdict and score on a node depend on, for one pod in one cycle
/// (asked after the pre-filters ran). The decision evaluates [`NodeView::Shape`] plugins once per
/// node equivalence class (see [`crate::cache::classes`]) instead of once per node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeView {
    /// Nothing about the node: the filter passes everywhere and the score is the same on every
    /// node (e.g. node affinity for a pod without any), so the plugin is skipped.
    Neutral,
    /// Only what a node class shares: allocatable and requested resources (of the pod count,
    /// only whether one more pod fits), devices (resource, topology, health, free thousandths
    /// per device, not their ids), taints and `spec.unschedulable`.
    Shape,
    /// Anything else (labels, name, the pods on the node): evaluated node by node.
    PerNode,
}

/// A plugin: a named struct that implements the extension points it needs and exposes them
/// through these accessors (the default says "not at this point").
pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;
    /// What its filter and score read of a node for this pod; the safe default is
    /// [`NodeView::PerNode`].
    fn node_view(&self, _state: &CycleState, _pod: &PodInfo) -> NodeView {
        NodeView::PerNode
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilter> {
        None
    }
    fn as_filter(&self) -> Option<&dyn Filter> {
        None
    }
    fn as_score(&self) -> Option<&dyn Score> {
        None
    }
    fn as_reserve(&self) -> Option<&dyn Reserve> {
        None
    }
    fn as_permit(&self) -> Option<&dyn Permit> {
        None
    }
}

/// Once per pod per cycle, before any node is filtered; sees the whole cluster.
pub trait PreFilter {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, cluster: &PlanState<'_>) -> Status;
}

/// Whether the pod fits on one node.
pub trait Filter {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status;
}

/// How good one feasible node is for the pod; `normalize` maps the raw scores of all feasible
/// nodes to 0..=[`MAX_NODE_SCORE`]. A normalised score must depend only on the raw score and the
/// *set* of raw scores (not how many nodes share each value): node classes pass one value per
/// class.
pub trait Score {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64;
    fn normalize(&self, _scores: &mut [i64]) {}
}

/// Claims what the pod gets on the chosen node (device ids); `unreserve` undoes it.
pub trait Reserve {
    fn reserve(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        placement: &mut Placement,
    ) -> Result<Status, PluginError>;
    fn unreserve(&self, _state: &mut CycleState, _pod: &PodInfo, _placement: &Placement) {}
}

/// Last word before binding: success, or wait (for the rest of a gang), or reject.
pub trait Permit {
    fn permit(&self, state: &CycleState, pod: &PodInfo) -> Status;
}

/// Writes a placement to the API.
pub trait Bind: Send + Sync {
    fn bind<'a>(
        &'a self,
        client: &'a Client,
        pod: &'a PodInfo,
        placement: &'a Placement,
    ) -> BoxFuture<'a, Result<(), BindError>>;
}

/// Maps raw scores linearly onto 0..=MAX_NODE_SCORE (all equal: all MAX).
pub fn normalize_min_max(scores: &mut [i64], reverse: bool) {
    let (Some(&min), Some(&max)) = (scores.iter().min(), scores.iter().max()) else {
        return;
    };
    for s in scores.iter_mut() {
        let v = if max == min {
            MAX_NODE_SCORE
        } else {
            (*s - min) * MAX_NODE_SCORE / (max - min)
        };
        *s = if reverse { MAX_NODE_SCORE - v } else { v };
    }
}
