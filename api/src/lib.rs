//! Drover's API: the resource model, validation, structured errors, the gRPC service definitions
//! and the typed client with list+watch caches (informers).
//!
//! Start with [`resource::Resource`] (what every kind implements) and [`kinds`] (the list of
//! kinds); the types themselves are in [`core`], [`batch`], [`scheduling`] and [`coordination`].
//! [`client`] is how every component talks to the API server. This crate does no I/O of its own
//! beyond the client.

pub mod authentication;
pub mod batch;
pub mod client;
pub mod coordination;
pub mod core;
pub mod device;
pub mod error;
pub mod kinds;
pub mod meta;
pub mod quantity;
pub mod ranges;
pub mod resource;
pub mod scheduling;
pub mod selector;
pub mod validation;

pub use error::{FieldError, FieldErrors, Reason, Status};
pub use meta::{ObjectMeta, Time};
pub use resource::{KindInfo, Resource};
