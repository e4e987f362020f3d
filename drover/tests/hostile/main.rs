//! The hostile suite: probes an attacker or a careless user would send, kept running in CI so
//! the defects of issue 12 stay fixed. Each module is one family of probes against the real
//! `drover` binary (or the real components in process) on loopback; each test fails on the
//! defect it names.
//!
//! - [`input`]: bodies, queries and manifests (trailing data, deep nesting, no Content-Type,
//!   bad query values, watch timeouts, manifests too large for the CLI)
//! - [`agent`]: the node agent and the log path (double device assignment, path traversal,
//!   credential forwarding)
//! - [`connections`]: idle connections past the server's open-file limit, unknown paths
//! - [`pod_user`]: pods run as an unprivileged user and cannot read the admin token, the
//!   data directory or the agent's state
//! - [`state`]: what the API keeps (status on create, user-set device assignments, history
//!   bounded by bytes, validation of names, selectors and sizes) and the controllers (orphaned
//!   pods, leases after an outage)

#[path = "../common/mod.rs"]
mod common;

mod agent;
mod connections;
mod input;
mod pod_user;
mod state;
