//! Drover's controller manager.
