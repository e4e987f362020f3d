//! The core group (`v1`): Namespace, Node, Pod, Event, and the Binding body of `pods/binding`.
//!
//! A pod's shape is split by concern: [`pod`] (the kind, its spec and status), [`container`]
//! (containers, resources, volumes), [`affinity`] (placement constraints) and
//! [`pod_validation`].

pub mod affinity;
pub mod binding;
pub mod container;
pub mod event;
pub mod namespace;
pub mod node;
pub mod pod;
pub mod pod_validation;

pub use affinity::*;
pub use binding::*;
pub use container::*;
pub use event::*;
pub use namespace::*;
pub use node::*;
pub use pod::*;
