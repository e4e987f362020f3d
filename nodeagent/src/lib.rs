//! Drover's node agent (the kubelet): it registers its node and devices, renews the node's
//! lease, runs the pods bound to the node as processes, reports their status, and serves their
//! logs.
//!
//! Start with [`agent::run`] (one real node, configured by [`AgentConfig`]); a pod's life is in
//! [`pods`] (the supervisor and each pod's worker), process handling in [`runtime`] (the
//! [`runtime::Runtime`] trait, the process runtime with cgroups, the simulated runtime), the
//! Node object in [`node`], leases in [`lease`], the state directory that survives restarts in
//! [`state`], the log server in [`logserver`], and the reset of failed devices in [`recovery`]. [`hollow`] runs thousands of simulated nodes
//! in one process for scale tests.

pub mod agent;
#[cfg(feature = "hollow")]
pub mod hollow;
pub mod lease;
pub mod logserver;
pub mod node;
pub mod pods;
pub mod recovery;
pub mod runtime;
pub mod state;

pub use agent::{AgentConfig, AgentError, run};
#[cfg(feature = "hollow")]
pub use hollow::{HollowCluster, HollowError, HollowOptions};
