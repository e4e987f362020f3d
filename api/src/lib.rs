//! Drover's API: the resource model, validation, structured errors, quantities and selectors.
//! Types only: no I/O and no async runtime. The wire (the gRPC service definitions) and the
//! typed client with its informers and event recorder are in `drover-client`.
//!
//! Start with [`resource::Resource`] (what every kind implements) and [`kinds`] (the list of
//! kinds); the types themselves are in [`core`], [`batch`], [`scheduling`] and [`coordination`].

pub mod authentication;
pub mod batch;
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
