//! Drover's API server: the only door to the state.
//!
//! Every request is authenticated and authorised ([`auth`], [`auth::authz`]), parsed by its
//! transport into one [`service::Request`] per verb and served by [`service::ApiService::serve`]:
//! resolved to a kind ([`kinds`]), decoded, defaulted and validated ([`write`]), admitted
//! ([`admission`]), persisted through the [`storage::Store`] and answered once the [`cache`] (the
//! watch cache) has seen it. [`service`] holds the verbs, one file per group; [`rest`] and
//! [`grpc`] are the two transports on one port and one router ([`routes`]), behind the accept
//! loop of [`connections`] (idle timeouts, connection limits); [`server`] starts it all. Start
//! reading at [`server::start`].

pub mod admission;
pub mod agent_credential;
pub mod auth;
pub mod cache;
pub mod config;
pub mod connections;
pub mod grpc;
pub mod keys;
pub mod kinds;
pub mod logs;
pub mod merge_patch;
pub mod rest;
pub mod routes;
pub mod server;
pub mod service;
pub mod storage;
pub mod watch;
pub mod write;

pub use config::ServerConfig;
pub use server::{RunningServer, ServerError, run, start, start_with_store};
