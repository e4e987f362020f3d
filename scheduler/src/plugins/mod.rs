//! The plugins, one per file, each with a `NAME` and a `new(args)` constructor the registry
//! calls.

pub mod default_binder;
pub mod fragmentation;
pub mod gang_permit;
pub mod gpu_topology;
pub mod inter_pod_affinity;
pub mod least_allocated;
pub mod most_allocated;
pub mod node_affinity;
pub mod node_name;
pub mod node_resources_fit;
pub mod node_unschedulable;
pub mod pod_topology_spread;
pub mod shape_only;
pub mod taint_toleration;
