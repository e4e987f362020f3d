//! What plugins (and the algorithm) share, none of it a plugin: plugins never call each other,
//! so logic two of them need lives here, one module per concern.

pub mod devices;
pub mod gradient;
pub mod node_selection;
pub mod utilisation;
