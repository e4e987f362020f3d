//! The plugins Drover ships, registered by name, and the default profile that runs them: kept
//! next to the plugins so the framework (`framework/`) names none of them.

use super::{
    fragmentation, gang_permit, gpu_topology, inter_pod_affinity, least_allocated, most_allocated,
    node_affinity, node_name, node_resources_fit, node_unschedulable, pod_topology_spread,
    taint_toleration,
};
use crate::framework::profile::DEFAULT_SCHEDULER_NAMES;
use crate::framework::{PluginConfig, Profile, ProfileConfig, Registry};

impl Registry {
    /// Every plugin Drover ships.
    pub fn with_defaults() -> Registry {
        let mut r = Registry::empty();
        r.register(node_resources_fit::NAME, node_resources_fit::new);
        r.register(node_name::NAME, node_name::new);
        r.register(node_unschedulable::NAME, node_unschedulable::new);
        r.register(node_affinity::NAME, node_affinity::new);
        r.register(taint_toleration::NAME, taint_toleration::new);
        r.register(inter_pod_affinity::NAME, inter_pod_affinity::new);
        r.register(pod_topology_spread::NAME, pod_topology_spread::new);
        r.register(gpu_topology::NAME, gpu_topology::new);
        r.register(most_allocated::NAME, most_allocated::new);
        r.register(least_allocated::NAME, least_allocated::new);
        r.register(fragmentation::NAME, fragmentation::new);
        r.register(gang_permit::NAME, gang_permit::new);
        r
    }
}

impl Default for ProfileConfig {
    /// Every filter; GPU-aware scoring (bin-packing and fragmentation for GPU pods, spreading
    /// for CPU pods); gangs.
    fn default() -> Self {
        ProfileConfig {
            scheduler_names: DEFAULT_SCHEDULER_NAMES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            plugins: vec![
                PluginConfig::new(node_name::NAME, 1),
                PluginConfig::new(node_unschedulable::NAME, 1),
                PluginConfig::new(node_resources_fit::NAME, 1),
                PluginConfig::new(node_affinity::NAME, 2),
                PluginConfig::new(taint_toleration::NAME, 3),
                PluginConfig::new(gpu_topology::NAME, 2),
                PluginConfig::new(inter_pod_affinity::NAME, 2),
                PluginConfig::new(pod_topology_spread::NAME, 2),
                PluginConfig::new(fragmentation::NAME, 3),
                PluginConfig::new(most_allocated::NAME, 1)
                    .with_args(serde_json::json!({"gpuPodsOnly": true})),
                PluginConfig::new(least_allocated::NAME, 1)
                    .with_args(serde_json::json!({"cpuPodsOnly": true})),
                PluginConfig::new(gang_permit::NAME, 1),
            ],
        }
    }
}

impl Profile {
    /// The default profile, built with the default registry.
    pub fn default_profile() -> Profile {
        match Profile::build(&ProfileConfig::default(), &Registry::with_defaults()) {
            Ok(p) => p,
            // The default configuration is part of this crate; a test keeps it valid.
            Err(e) => unreachable!("the default profile is invalid: {e}"),
        }
    }
}
