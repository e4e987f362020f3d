//! Plugins by name: a registry maps each name to a constructor that validates its arguments.
//! A new plugin is one file in `plugins/` plus one line in [`Registry::with_defaults`] (defined
//! next to the plugins, in `plugins/defaults.rs`, so the framework knows none of them).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Plugin;

/// Builds a plugin from its arguments (JSON; `null` for none).
pub type Constructor = fn(&serde_json::Value) -> Result<Arc<dyn Plugin>, RegistryError>;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("unknown plugin {name:?}; known plugins: {known}")]
    UnknownPlugin { name: String, known: String },
    #[error("invalid arguments for plugin {plugin}: {message}")]
    InvalidArgs {
        plugin: &'static str,
        message: String,
    },
    #[error("profile {profile:?}: {message}")]
    InvalidProfile { profile: String, message: String },
}

impl RegistryError {
    /// An argument error for `plugin`.
    pub fn args(plugin: &'static str, message: impl std::fmt::Display) -> RegistryError {
        RegistryError::InvalidArgs {
            plugin,
            message: message.to_string(),
        }
    }
}

/// Parses a plugin's arguments (`null` gives the defaults).
pub fn parse_args<T: serde::de::DeserializeOwned + Default>(
    plugin: &'static str,
    args: &serde_json::Value,
) -> Result<T, RegistryError> {
    if args.is_null() {
        return Ok(T::default());
    }
    serde_json::from_value(args.clone()).map_err(|e| RegistryError::args(plugin, e))
}

/// Name → constructor.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    constructors: BTreeMap<&'static str, Constructor>,
}

impl Registry {
    pub fn empty() -> Registry {
        Registry::default()
    }

    pub fn register(&mut self, name: &'static str, constructor: Constructor) {
        self.constructors.insert(name, constructor);
    }

    /// Builds the plugin `name` with `args`.
    pub fn build(
        &self,
        name: &str,
        args: &serde_json::Value,
    ) -> Result<Arc<dyn Plugin>, RegistryError> {
        let Some(c) = self.constructors.get(name) else {
            return Err(RegistryError::UnknownPlugin {
                name: name.to_string(),
                known: self
                    .constructors
                    .keys()
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        c(args)
    }
}
