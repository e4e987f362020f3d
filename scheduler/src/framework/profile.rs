//! Profiles: which plugins run, with which weights and arguments, for pods that name a given
//! `schedulerName`. The default profile answers `drover` and `default-scheduler` (so plain
//! Kubernetes manifests work); its plugins are named in `plugins/defaults.rs`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Plugin;
use super::registry::{Registry, RegistryError};

/// Scheduler names the default profile answers to.
pub const DEFAULT_SCHEDULER_NAMES: &[&str] = &["drover", "default-scheduler"];

/// One plugin in a profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginConfig {
    pub name: String,
    /// Weight of its score (ignored for plugins that do not score). Default 1.
    #[serde(default = "default_weight")]
    pub weight: i64,
    #[serde(default)]
    pub args: serde_json::Value,
}

fn default_weight() -> i64 {
    1
}

impl PluginConfig {
    pub fn new(name: &str, weight: i64) -> PluginConfig {
        PluginConfig {
            name: name.to_string(),
            weight,
            args: serde_json::Value::Null,
        }
    }

    pub fn with_args(mut self, args: serde_json::Value) -> PluginConfig {
        self.args = args;
        self
    }
}

/// A profile as configured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileConfig {
    pub scheduler_names: Vec<String>,
    pub plugins: Vec<PluginConfig>,
}

/// A built profile: plugins grouped by extension point, in configured order.
pub struct Profile {
    pub scheduler_names: Vec<String>,
    pub pre_filters: Vec<Arc<dyn Plugin>>,
    pub filters: Vec<Arc<dyn Plugin>>,
    pub scores: Vec<(Arc<dyn Plugin>, i64)>,
    pub reserves: Vec<Arc<dyn Plugin>>,
    pub permits: Vec<Arc<dyn Plugin>>,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |v: &[Arc<dyn Plugin>]| v.iter().map(|p| p.name()).collect::<Vec<_>>();
        f.debug_struct("Profile")
            .field("scheduler_names", &self.scheduler_names)
            .field("filters", &names(&self.filters))
            .field(
                "scores",
                &self
                    .scores
                    .iter()
                    .map(|(p, w)| (p.name(), *w))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Profile {
    pub fn build(config: &ProfileConfig, registry: &Registry) -> Result<Profile, RegistryError> {
        let profile_name = config.scheduler_names.first().cloned().unwrap_or_default();
        if config.scheduler_names.is_empty() {
            return Err(RegistryError::InvalidProfile {
                profile: profile_name,
                message: "expected at least one scheduler name".into(),
            });
        }
        let mut p = Profile {
            scheduler_names: config.scheduler_names.clone(),
            pre_filters: vec![],
            filters: vec![],
            scores: vec![],
            reserves: vec![],
            permits: vec![],
        };
        for pc in &config.plugins {
            if pc.weight < 0 {
                return Err(RegistryError::InvalidProfile {
                    profile: profile_name,
                    message: format!("plugin {}: weight {} is negative", pc.name, pc.weight),
                });
            }
            let plugin = registry.build(&pc.name, &pc.args)?;
            if plugin.as_pre_filter().is_some() {
                p.pre_filters.push(plugin.clone());
            }
            if plugin.as_filter().is_some() {
                p.filters.push(plugin.clone());
            }
            if plugin.as_score().is_some() && pc.weight > 0 {
                p.scores.push((plugin.clone(), pc.weight));
            }
            if plugin.as_reserve().is_some() {
                p.reserves.push(plugin.clone());
            }
            if plugin.as_permit().is_some() {
                p.permits.push(plugin.clone());
            }
        }
        Ok(p)
    }
}

/// Every profile, by scheduler name.
#[derive(Clone, Debug)]
pub struct Profiles {
    list: Vec<Arc<Profile>>,
}

impl Profiles {
    pub fn build(
        configs: &[ProfileConfig],
        registry: &Registry,
    ) -> Result<Profiles, RegistryError> {
        let mut list = Vec::new();
        for c in configs {
            list.push(Arc::new(Profile::build(c, registry)?));
        }
        Ok(Profiles { list })
    }

    pub fn single(profile: Profile) -> Profiles {
        Profiles {
            list: vec![Arc::new(profile)],
        }
    }

    /// The profile for a pod's `schedulerName`, or `None` when the pod is another scheduler's.
    pub fn for_name(&self, name: &str) -> Option<&Arc<Profile>> {
        self.list
            .iter()
            .find(|p| p.scheduler_names.iter().any(|n| n == name))
    }
}
