//! The core group (`v1`): Namespace, Node, Pod, Event, Binding.

pub mod namespace;

pub use namespace::*;
