//! Benchmarks of Drover: the scale harness behind `drover bench` and criterion micro-benchmarks
//! of the hot paths (`benches/hot_paths.rs`).
//!
//! A scenario (one file in [`scenario`]) takes its options, runs against a [`cluster::Cluster`]
//! (the real control plane started in process on a temporary embedded store, or an existing
//! server) or against the in-memory [`drover_scheduler::Simulator`], and returns a serde report
//! that renders as a table ([`report::Table`]) and as charts ([`plot::Chart`]). Start reading at
//! [`scenario::throughput`]: it shows the measuring loop ([`podrun`]) every pod scenario shares.

pub mod cluster;
pub mod openb;
pub mod plot;
pub mod podrun;
pub mod procstat;
pub mod progress;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod workload;

pub use progress::Progress;
pub use report::{Report, Table};

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("api: {0}")]
    Client(#[from] drover_client::ClientError),
    #[error("cannot start the in-process control plane: {0}")]
    Start(String),
    #[error("{path}: {message}")]
    Data { path: String, message: String },
    #[error("invalid option: {0}")]
    Invalid(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
