//! The plugins, one per file, each with a `NAME` and a `new(args)` constructor the registry
//! calls; [`defaults`] registers them all and holds the default profile. Plugins never call
//! each other: what two of them share is in [`crate::shared`] or the cache.

pub mod default_binder;
pub mod defaults;
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
pub mod taint_toleration;
