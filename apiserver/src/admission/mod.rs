//! Admission: rules a write must pass after it is decoded, defaulted and validated
//! ([`crate::write`]) and before it is stored — Kubernetes' admission plugins. A plugin may
//! refuse the write (a `Status` the client sees) or change the object (defaults that depend on
//! other objects, such as a pod's priority from its PriorityClass).
//!
//! ```text
//! prepare_create / prepare_update ─► Chain::admit ─► plugin 1 ─► plugin 2 … ─► store
//! ```
//!
//! One file per plugin; [`Chain::standard`] lists the plugins every server runs, in order.
//! Plugins read other objects from the watch cache, never from the store, so admission adds no
//! round trip.

mod priority;

use std::sync::LazyLock;

use drover_api::{KindInfo, Status};

use crate::cache::WatchCache;
use crate::kinds::ErasedObject;
use crate::write::Prepared;

pub use priority::Priority;

/// The verb being admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
}

/// What a plugin sees of a write.
pub struct Attributes<'a> {
    pub operation: Operation,
    pub info: &'a KindInfo,
    /// The object as it would be stored.
    pub object: &'a dyn ErasedObject,
    /// Everything stored, to look up the objects a rule depends on.
    pub cache: &'a WatchCache,
}

/// One admission rule.
pub trait Plugin: Send + Sync {
    /// The plugin's name, as Kubernetes names its counterpart (`Priority`).
    fn name(&self) -> &'static str;

    /// Whether the plugin looks at writes of this kind by this verb (cheap: decided per write).
    fn handles(&self, info: &KindInfo, operation: Operation) -> bool;

    /// Refuses the write (`Err`), changes it (`Ok(Some)`: the object to store instead, encoded
    /// with [`crate::write::encode`]), or lets it through unchanged (`Ok(None)`).
    fn admit(&self, attrs: &Attributes<'_>) -> Result<Option<Prepared>, Status>;
}

/// The plugins a write passes, in order.
pub struct Chain {
    plugins: Vec<Box<dyn Plugin>>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.plugins.iter().map(|p| p.name()))
            .finish()
    }
}

static STANDARD: LazyLock<Chain> = LazyLock::new(|| Chain::new(vec![Box::new(Priority)]));

impl Chain {
    pub fn new(plugins: Vec<Box<dyn Plugin>>) -> Self {
        Chain { plugins }
    }

    /// The chain every API server runs. (It has no settings yet; once a plugin has some, the
    /// chain moves into the server's configuration.)
    pub fn standard() -> &'static Chain {
        &STANDARD
    }

    /// Passes `prepared` through every plugin that handles it; returns what to store.
    pub fn admit(
        &self,
        operation: Operation,
        info: &KindInfo,
        cache: &WatchCache,
        mut prepared: Prepared,
    ) -> Result<Prepared, Status> {
        for plugin in &self.plugins {
            if !plugin.handles(info, operation) {
                continue;
            }
            let attrs = Attributes {
                operation,
                info,
                object: &*prepared.object,
                cache,
            };
            if let Some(changed) = plugin.admit(&attrs)? {
                prepared = changed;
            }
        }
        Ok(prepared)
    }
}
