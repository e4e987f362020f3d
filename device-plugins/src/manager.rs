//! Several plugins as one: what the node agent holds. [`DeviceManager::from_spec`] parses the
//! `--devices` flag.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use tokio_stream::StreamExt;
use tokio_stream::StreamMap;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::{
    Allocation, CpuPlugin, DeviceError, DevicePlugin, Discovery, HealthEvent, NvidiaPlugin,
    SimulatedPlugin,
};

/// The forms `--devices` accepts, for help and errors.
pub const DEVICE_SPEC_FORMS: &str = "auto (cpu, plus NVIDIA GPUs if the library loads), none (cpu only), nvidia (cpu and NVIDIA GPUs, which must be present), simulated:PROFILE (a built-in profile such as h100-8) or simulated:/path/profile.yaml";

/// The node's device plugins, combined.
///
/// Lock order: only `owners` is locked, never while calling a plugin.
pub struct DeviceManager {
    plugins: Vec<Arc<dyn DevicePlugin>>,
    simulated: Option<Arc<SimulatedPlugin>>,
    /// Which plugin (index into `plugins`) offers each device id, from the last discovery.
    owners: RwLock<Option<HashMap<String, usize>>>,
}

impl DeviceManager {
    /// Combines plugins; their discoveries merge in this order.
    pub fn new(plugins: Vec<Arc<dyn DevicePlugin>>) -> Self {
        DeviceManager {
            plugins,
            simulated: None,
            owners: RwLock::new(None),
        }
    }

    /// Parses `--devices` (see [`DEVICE_SPEC_FORMS`]); simulated devices are named after this
    /// machine's host name.
    pub fn from_spec(spec: &str) -> Result<Self, DeviceError> {
        let host = sysinfo::System::host_name().unwrap_or_else(|_| "localhost".to_string());
        Self::from_spec_for_node(spec, &host)
    }

    /// Like [`DeviceManager::from_spec`], for a node called `node_name` (simulated device ids
    /// include it, so hollow nodes in one process have distinct devices).
    pub fn from_spec_for_node(spec: &str, node_name: &str) -> Result<Self, DeviceError> {
        let invalid = |reason: &str| DeviceError::InvalidSpec {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let cpu: Arc<dyn DevicePlugin> = Arc::new(CpuPlugin::new());
        match spec.trim() {
            "none" => Ok(Self::new(vec![cpu])),
            "auto" => match NvidiaPlugin::new() {
                Ok(nvidia) => Ok(Self::new(vec![cpu, Arc::new(nvidia)])),
                Err(err @ DeviceError::NoNvidiaGpus { .. }) => {
                    tracing::info!(%err, "using cpu devices only");
                    Ok(Self::new(vec![cpu]))
                }
                Err(err) => Err(err),
            },
            "nvidia" => Ok(Self::new(vec![cpu, Arc::new(NvidiaPlugin::new()?)])),
            other => match other.split_once(':') {
                Some(("simulated", profile)) if !profile.trim().is_empty() => {
                    let simulated = Arc::new(SimulatedPlugin::from_profile_name(
                        profile.trim(),
                        node_name,
                    )?);
                    Ok(Self::simulated(simulated))
                }
                Some(("simulated", _)) => Err(invalid("simulated needs a profile after the colon")),
                _ => Err(invalid("not a known form")),
            },
        }
    }

    /// A manager over one simulated node, whose devices tests can fail through
    /// [`DeviceManager::simulated_plugin`].
    pub fn simulated(plugin: Arc<SimulatedPlugin>) -> Self {
        let mut manager = Self::new(vec![plugin.clone() as Arc<dyn DevicePlugin>]);
        manager.simulated = Some(plugin);
        manager
    }

    pub fn plugins(&self) -> &[Arc<dyn DevicePlugin>] {
        &self.plugins
    }

    /// The simulated plugin, when this manager simulates its devices.
    pub fn simulated_plugin(&self) -> Option<&Arc<SimulatedPlugin>> {
        self.simulated.as_ref()
    }

    /// Every plugin's discovery, merged (see [`Discovery::merge`]).
    pub fn discover(&self) -> Result<Discovery, DeviceError> {
        let mut merged = Discovery::default();
        let mut owners = HashMap::new();
        for (index, plugin) in self.plugins.iter().enumerate() {
            let found = plugin.discover()?;
            for device in &found.inventory.devices {
                owners.insert(device.id.clone(), index);
            }
            merged.merge(found);
        }
        *self.owners.write().unwrap_or_else(|e| e.into_inner()) = Some(owners);
        Ok(merged)
    }

    /// What a pod given `device_ids` needs. Every plugin is asked, with the ids it offers (maybe
    /// none: a GPU plugin then hides all GPUs from the pod). Ids no plugin offers are refused.
    pub fn allocate(&self, device_ids: &[String]) -> Result<Allocation, DeviceError> {
        if self
            .owners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
        {
            self.discover()?;
        }
        let mut per_plugin: BTreeMap<usize, Vec<String>> =
            (0..self.plugins.len()).map(|i| (i, Vec::new())).collect();
        {
            let owners = self.owners.read().unwrap_or_else(|e| e.into_inner());
            for id in device_ids {
                let owner = owners.as_ref().and_then(|o| o.get(id));
                match owner {
                    Some(&index) => per_plugin.entry(index).or_default().push(id.clone()),
                    None => {
                        return Err(DeviceError::UnknownDevice {
                            plugin: self.plugin_names(),
                            id: id.clone(),
                        });
                    }
                }
            }
        }
        let mut allocation = Allocation::default();
        for (index, ids) in per_plugin {
            allocation.merge(self.plugins[index].allocate(&ids)?);
        }
        Ok(allocation)
    }

    /// Resets the device `id` through the plugin that offers it (see [`DevicePlugin::reset`]).
    pub fn reset(&self, id: &str) -> Result<(), DeviceError> {
        let owner = self
            .owners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|o| o.get(id).copied());
        match owner {
            Some(index) => self.plugins[index].reset(id),
            None => Err(DeviceError::UnknownDevice {
                plugin: self.plugin_names(),
                id: id.to_string(),
            }),
        }
    }

    fn plugin_names(&self) -> String {
        let names: Vec<&str> = self.plugins.iter().map(|p| p.name()).collect();
        names.join("+")
    }

    /// Health changes from every plugin, from now on.
    pub fn health_events(&self) -> HealthEvents {
        let mut streams = StreamMap::new();
        for (index, plugin) in self.plugins.iter().enumerate() {
            streams.insert(index, BroadcastStream::new(plugin.subscribe_health()));
        }
        HealthEvents {
            streams,
            names: self.plugins.iter().map(|p| p.name().to_string()).collect(),
        }
    }
}

impl std::fmt::Debug for DeviceManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceManager")
            .field("plugins", &self.plugin_names())
            .finish_non_exhaustive()
    }
}

/// Health events of all of a manager's plugins, fanned in.
pub struct HealthEvents {
    streams: StreamMap<usize, BroadcastStream<HealthEvent>>,
    names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthRecvError {
    /// Events were dropped because this receiver fell behind: rediscover for the current state.
    #[error("missed {missed} health events from plugin {plugin}; rediscover devices")]
    Lagged { plugin: String, missed: u64 },
    #[error("every device plugin has stopped")]
    Closed,
}

impl HealthEvents {
    /// The next health change of any plugin. Cancel-safe.
    pub async fn recv(&mut self) -> Result<HealthEvent, HealthRecvError> {
        match self.streams.next().await {
            Some((_, Ok(event))) => Ok(event),
            Some((index, Err(BroadcastStreamRecvError::Lagged(missed)))) => {
                Err(HealthRecvError::Lagged {
                    plugin: self.names.get(index).cloned().unwrap_or_default(),
                    missed,
                })
            }
            None => Err(HealthRecvError::Closed),
        }
    }
}

#[cfg(test)]
mod tests;
