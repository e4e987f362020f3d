//! The node agent against an in-process API server: registration and leases, pod lifecycles
//! with real processes, restart policies, deletion with grace periods, logs through the API
//! server's proxy, the API server going away, agent restarts, device failures, hollow nodes.

mod common;
mod lifecycle;
mod node;
mod resilience;
