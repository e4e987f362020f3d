//! Drover's scheduler: places pods and gangs on nodes and on specific devices.
//!
//! Start with [`run`] (the service: informers → queue → decision → asynchronous binding) or
//! [`simulate::Simulator`] (the same decision without any API, for benchmarks and trace
//! replay). The decision itself is in [`algorithm`] and runs plugins from [`framework`] (one
//! file each in [`plugins`]) against an immutable [`cache::Snapshot`]. See `README.md` for the
//! pipeline and a glossary.

pub mod algorithm;
pub mod cache;
pub mod framework;
pub mod optimizer;
pub mod plugins;
pub mod queue;
pub mod resources;
pub mod shared;
pub mod simulate;
#[cfg(feature = "testing")]
pub mod testing;

mod report;
mod service;

pub use service::{
    DEFAULT_BIND_CONCURRENCY, DEFAULT_LEASE_NAME, DEFAULT_LEASE_NAMESPACE, SchedulerConfig,
    SchedulerError, run,
};
pub use simulate::Simulator;
