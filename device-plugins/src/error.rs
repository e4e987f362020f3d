//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong discovering, watching or allocating devices.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The NVIDIA library did not load, or it found no GPU. Not an error for `--devices auto`.
    #[error("no NVIDIA GPUs: {reason}")]
    NoNvidiaGpus { reason: String },

    #[error("nvml {operation} failed: {source}")]
    Nvml {
        operation: String,
        #[source]
        source: nvml_wrapper::error::NvmlError,
    },

    #[error("unknown device {id:?}: plugin {plugin} offers no such device")]
    UnknownDevice { plugin: String, id: String },

    #[error("device {id:?} is unhealthy: {reason}")]
    UnhealthyDevice { id: String, reason: String },

    #[error("device {id:?} is requested more than once")]
    DuplicateDevice { id: String },

    #[error("device {id:?} could not be reset: {reason}")]
    ResetFailed { id: String, reason: String },

    #[error("device {id:?} cannot be allocated: {reason}")]
    NotAllocatable { id: String, reason: String },

    #[error("unknown node profile {name:?}; built-in profiles are: {available}")]
    UnknownProfile { name: String, available: String },

    #[error("reading profile {path}: {source}")]
    ReadProfile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("profile {profile}: {source}")]
    ParseProfile {
        profile: String,
        #[source]
        source: yaml_serde::Error,
    },

    #[error("profile {profile}: field {field}: {reason}")]
    InvalidProfile {
        profile: String,
        field: String,
        reason: String,
    },

    #[error("reading {path}: {source}")]
    ReadSysfs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("parsing {path}: {reason}")]
    ParseSysfs { path: PathBuf, reason: String },

    #[error("cpu discovery failed: {reason}")]
    Cpu { reason: String },

    #[error("invalid device spec {spec:?}: {reason}; accepted forms: {forms}", forms = crate::manager::DEVICE_SPEC_FORMS)]
    InvalidSpec { spec: String, reason: String },

    #[error("starting the {what} thread: {source}")]
    Thread {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl DeviceError {
    pub(crate) fn nvml(
        operation: impl Into<String>,
        source: nvml_wrapper::error::NvmlError,
    ) -> Self {
        DeviceError::Nvml {
            operation: operation.into(),
            source,
        }
    }
}
