//! Runtimes: how a container's processes are started, signalled, waited for and found again
//! after an agent restart.
//!
//! [`Runtime`] is the trait the pod workers use; [`process::ProcessRuntime`] runs each container
//! as a host process in its own process group (with cgroup limits when the host allows, see
//! [`cgroup`]) and as the user [`user`] chooses, and [`simulated::SimulatedRuntime`] only
//! pretends to (hollow nodes). An OCI
//! runtime (crun/runc) is not implemented: the agent lists it in `status.runtimes` only as
//! "present on this host", never as usable (see [`oci_runtimes_on_path`]).

pub mod cgroup;
pub mod process;
pub mod procfs;
pub mod simulated;
pub mod user;

use std::collections::BTreeMap;
use std::path::PathBuf;

use drover_api::core::PodSecurityContext;
use serde::{Deserialize, Serialize};

/// Name of the process runtime in `status.runtimes`.
pub const PROCESS_RUNTIME: &str = "process";
/// Name of the simulated runtime in `status.runtimes`.
pub const SIMULATED_RUNTIME: &str = "simulated";

/// What the runtime needs to start one container.
#[derive(Clone, Debug, Default)]
pub struct ContainerSpec {
    pub pod_uid: String,
    /// `namespace/name`, for logs.
    pub pod_key: String,
    pub container: String,
    /// The executable followed by its arguments (`command` then `args`).
    pub argv: Vec<String>,
    /// The complete environment; nothing is inherited from the agent.
    pub env: Vec<(String, String)>,
    /// The container's `workingDir`; empty for the pod's own working directory, which the
    /// runtime creates and gives to the pod's user.
    pub working_dir: PathBuf,
    /// stdout and stderr are appended here (the agent opens the file: the pod's user never
    /// needs access to it).
    pub log_path: PathBuf,
    /// The pod's `securityContext` (who the pod runs as).
    pub pod_security: Option<PodSecurityContext>,
    /// The container's `securityContext`, as the API keeps it (its `runAs*` fields override
    /// the pod's).
    pub container_security: Option<serde_json::Value>,
    pub limits: Limits,
    /// The pod's annotations (the simulated runtime reads its instructions there).
    pub annotations: BTreeMap<String, String>,
}

/// Resource limits for one container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub cpu_milli: Option<u64>,
    pub pids: Option<u64>,
}

/// What identifies a started container's process across agent restarts: its pid, and the
/// kernel's start time of that pid (so a reused pid is never mistaken for it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessId {
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat` (clock ticks since boot).
    pub start_ticks: u64,
}

/// How a container ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitStatus {
    /// The exit code; `128 + signal` when a signal killed it (as shells and Kubernetes report).
    pub code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The kernel's OOM killer ended it (seen through the container's cgroup).
    #[serde(default)]
    pub oom_killed: bool,
    /// The process ended while nobody could wait for it (the agent was down): the code is a
    /// guess, recorded as a failure.
    #[serde(default)]
    pub unknown: bool,
}

/// Exit code recorded when a container's real exit status could not be observed (Kubernetes
/// reports 137 with reason `ContainerStatusUnknown` in the same case).
pub const UNKNOWN_EXIT_CODE: i32 = 137;

impl ExitStatus {
    pub fn exited(code: i32) -> Self {
        ExitStatus {
            code,
            ..Default::default()
        }
    }

    pub fn signalled(signal: i32) -> Self {
        ExitStatus {
            code: 128 + signal,
            signal: Some(signal),
            ..Default::default()
        }
    }

    pub fn unknown() -> Self {
        ExitStatus {
            code: UNKNOWN_EXIT_CODE,
            unknown: true,
            ..Default::default()
        }
    }

    pub fn success(&self) -> bool {
        self.code == 0 && self.signal.is_none() && !self.unknown
    }

    /// The Kubernetes reason: `Completed`, `OOMKilled`, `ContainerStatusUnknown` or `Error`.
    pub fn reason(&self) -> &'static str {
        if self.unknown {
            "ContainerStatusUnknown"
        } else if self.oom_killed {
            "OOMKilled"
        } else if self.success() {
            "Completed"
        } else {
            "Error"
        }
    }
}

/// What can go wrong starting or controlling a container.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "container {container} has no command: the process runtime pulls no images, so a command is required"
    )]
    NoCommand { container: String },
    /// The container cannot run as its spec says (Kubernetes' `CreateContainerConfigError`):
    /// retrying does not help until the pod changes.
    #[error("container {container}: {message}")]
    Config { container: String, message: String },
    #[error("cannot prepare {what} for container {container}: {source}")]
    Prepare {
        container: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start container {container} ({program}): {source}")]
    Spawn {
        container: String,
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot signal process group {pgid}: {source}")]
    Signal {
        pgid: u32,
        #[source]
        source: nix::Error,
    },
}

/// Signals the agent sends to containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// Asks politely (SIGTERM).
    Terminate,
    /// Ends everything at once (SIGKILL), including the container's whole process tree.
    Kill,
}

/// A runtime: starts containers and finds them again.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync {
    /// The name shown in `status.runtimes`.
    fn name(&self) -> &'static str;

    /// Starts a container.
    async fn start(&self, spec: &ContainerSpec) -> Result<Box<dyn Container>, RuntimeError>;

    /// Finds a container started earlier (maybe by a previous agent process) by its recorded
    /// identity; `None` when it is no longer running.
    fn attach(&self, spec: &ContainerSpec, id: ProcessId) -> Option<Box<dyn Container>>;

    /// How a container that [`attach`](Self::attach) no longer found ended, when the runtime
    /// recorded it; [`ExitStatus::unknown`] otherwise.
    fn ended_while_away(&self, _spec: &ContainerSpec) -> ExitStatus {
        ExitStatus::unknown()
    }

    /// Removes what the runtime kept for a pod's container (its cgroup, and the pod's own
    /// working directory: call it once every container of the pod has ended). May block briefly:
    /// call it from a blocking thread.
    fn cleanup(&self, pod_uid: &str, container: &str);

    /// Why resource limits cannot be enforced on this host, if they cannot.
    fn limits_unavailable(&self) -> Option<String> {
        None
    }
}

/// One running container.
#[async_trait::async_trait]
pub trait Container: Send + Sync {
    fn id(&self) -> ProcessId;

    /// Waits until the container ends; every call after that returns the same status.
    /// Cancel-safe: dropping the future and calling again keeps waiting.
    async fn wait(&self) -> ExitStatus;

    /// Sends a signal to the container's whole process group (and, for SIGKILL, to every
    /// process of its cgroup).
    fn signal(&self, signal: StopSignal) -> Result<(), RuntimeError>;
}

/// OCI runtimes found on `PATH`. Drover does not run pods through them yet; the node lists them
/// as `crun (not used)` so `drover describe node` says plainly what is there and what is used.
pub fn oci_runtimes_on_path() -> Vec<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut found = Vec::new();
    for name in ["crun", "runc"] {
        if std::env::split_paths(&path).any(|dir| dir.join(name).is_file()) {
            found.push(format!(
                "{name} (found, not used: the OCI path is not implemented)"
            ));
        }
    }
    found
}
