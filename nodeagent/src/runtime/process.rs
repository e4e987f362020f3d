//! The process runtime: each container is a host process in its own process group (so a signal
//! reaches every process it forks), with a clean environment, its working directory, stdout and
//! stderr appended to its log file, and cgroup limits when the host allows.
//!
//! The process group comes from `CommandExt::process_group(0)` rather than `setsid`, which
//! would need an unsafe `pre_exec` hook (the workspace forbids unsafe code). The group is what
//! the agent signals; the cgroup, when there is one, catches processes that left the group.
//!
//! Children are waited for by tokio (no zombies). After an agent restart a container is no
//! longer the agent's child: it is watched through `/proc` and, when it ends, its exit code is
//! unknowable and reported as such ([`ExitStatus::unknown`]).

use std::fs::OpenOptions;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::cgroup::{Cgroups, ContainerCgroup};
use super::procfs;
use super::{
    Container, ContainerSpec, ExitStatus, PROCESS_RUNTIME, ProcessId, Runtime, RuntimeError,
    StopSignal,
};

/// How often a container the agent did not start (found after a restart) is checked.
pub const ADOPTED_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Runs containers as host processes.
#[derive(Debug)]
pub struct ProcessRuntime {
    cgroups: Cgroups,
}

impl ProcessRuntime {
    pub fn new(cgroups: Cgroups) -> Self {
        ProcessRuntime { cgroups }
    }

    pub fn cgroups(&self) -> &Cgroups {
        &self.cgroups
    }
}

fn prepare_err(
    container: &str,
    what: &'static str,
) -> impl FnOnce(std::io::Error) -> RuntimeError + use<> {
    let container = container.to_string();
    move |source| RuntimeError::Prepare {
        container,
        what,
        source,
    }
}

#[async_trait::async_trait]
impl Runtime for ProcessRuntime {
    fn name(&self) -> &'static str {
        PROCESS_RUNTIME
    }

    async fn start(&self, spec: &ContainerSpec) -> Result<Box<dyn Container>, RuntimeError> {
        let name = spec.container.as_str();
        let Some((program, args)) = spec.argv.split_first() else {
            return Err(RuntimeError::NoCommand {
                container: name.to_string(),
            });
        };
        std::fs::create_dir_all(&spec.working_dir)
            .map_err(prepare_err(name, "the working directory"))?;
        if let Some(dir) = spec.log_path.parent() {
            std::fs::create_dir_all(dir).map_err(prepare_err(name, "the log directory"))?;
        }
        let stdout = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_path)
            .map_err(prepare_err(name, "the log file"))?;
        let stderr = stdout
            .try_clone()
            .map_err(prepare_err(name, "the log file"))?;
        let cgroup = self.cgroups.container(&spec.pod_uid, name);
        let cgroup = match cgroup {
            Some(cg) => match cg.create(&spec.limits) {
                Ok(()) => Some(cg),
                Err(e) => {
                    tracing::warn!(pod = %spec.pod_key, container = name, error = %e, "cannot create the container's cgroup; running without limits");
                    None
                }
            },
            None => None,
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.working_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .process_group(0)
            .kill_on_drop(false);
        let child = cmd.spawn().map_err(|source| RuntimeError::Spawn {
            container: name.to_string(),
            program: program.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or(0);
        if let Some(cg) = &cgroup
            && let Err(e) = cg.add(pid)
        {
            tracing::warn!(pod = %spec.pod_key, container = name, error = %e, "cannot move the process into its cgroup");
        }
        let id = procfs::identify(pid);
        tracing::debug!(pod = %spec.pod_key, container = name, pid, "container started");
        Ok(Box::new(ProcessContainer {
            id,
            child: tokio::sync::Mutex::new(Some(child)),
            cgroup,
            exit: std::sync::Mutex::new(None),
        }))
    }

    fn attach(&self, spec: &ContainerSpec, id: ProcessId) -> Option<Box<dyn Container>> {
        if id.pid == 0 || !procfs::is_alive(id) {
            return None;
        }
        Some(Box::new(ProcessContainer {
            id,
            child: tokio::sync::Mutex::new(None),
            cgroup: self.cgroups.container(&spec.pod_uid, &spec.container),
            exit: std::sync::Mutex::new(None),
        }))
    }

    /// Blocks (briefly) until the cgroup's processes are gone; call it off the async threads.
    fn cleanup(&self, pod_uid: &str, container: &str) {
        if let Some(cg) = self.cgroups.container(pod_uid, container) {
            cg.kill_all();
            // A cgroup can only be removed once its killed processes are gone.
            for _ in 0..100 {
                if cg.pids().is_empty() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            cg.remove();
        }
        self.cgroups.remove_pod(pod_uid);
    }

    fn limits_unavailable(&self) -> Option<String> {
        self.cgroups.unavailable().map(str::to_string)
    }
}

/// A container of the process runtime: either the agent's child, or a process adopted after a
/// restart.
struct ProcessContainer {
    id: ProcessId,
    /// `None` for an adopted process. Lock order: `child`, then `exit`.
    child: tokio::sync::Mutex<Option<tokio::process::Child>>,
    cgroup: Option<ContainerCgroup>,
    exit: std::sync::Mutex<Option<ExitStatus>>,
}

impl ProcessContainer {
    fn exit(&self) -> Option<ExitStatus> {
        self.exit.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn pgid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.id.pid).unwrap_or(i32::MAX))
    }

    /// Kills what the container left behind once its main process ended (as a container's
    /// processes die with its init).
    fn reap_leftovers(&self) {
        let _ = killpg(self.pgid(), Signal::SIGKILL);
        if let Some(cg) = &self.cgroup {
            cg.kill_all();
        }
    }
}

#[async_trait::async_trait]
impl Container for ProcessContainer {
    fn id(&self) -> ProcessId {
        self.id
    }

    async fn wait(&self) -> ExitStatus {
        let mut child = self.child.lock().await;
        if let Some(exit) = self.exit() {
            return exit;
        }
        let mut exit = match &mut *child {
            Some(child) => match child.wait().await {
                Ok(status) => match (status.code(), status.signal()) {
                    (Some(code), _) => ExitStatus::exited(code),
                    (None, Some(sig)) => ExitStatus::signalled(sig),
                    (None, None) => ExitStatus::unknown(),
                },
                Err(e) => {
                    tracing::warn!(pid = self.id.pid, error = %e, "cannot wait for the container's process");
                    ExitStatus::unknown()
                }
            },
            None => {
                while procfs::is_alive(self.id) {
                    tokio::time::sleep(ADOPTED_POLL_INTERVAL).await;
                }
                ExitStatus::unknown()
            }
        };
        if self
            .cgroup
            .as_ref()
            .is_some_and(ContainerCgroup::oom_killed)
        {
            exit.oom_killed = true;
        }
        self.reap_leftovers();
        *self.exit.lock().unwrap_or_else(|e| e.into_inner()) = Some(exit.clone());
        exit
    }

    fn signal(&self, signal: StopSignal) -> Result<(), RuntimeError> {
        if self.exit().is_some() {
            return Ok(());
        }
        let sig = match signal {
            StopSignal::Terminate => Signal::SIGTERM,
            StopSignal::Kill => Signal::SIGKILL,
        };
        let result = killpg(self.pgid(), sig);
        if signal == StopSignal::Kill
            && let Some(cg) = &self.cgroup
        {
            cg.kill_all();
        }
        match result {
            Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
            Err(source) => Err(RuntimeError::Signal {
                pgid: self.id.pid,
                source,
            }),
        }
    }
}
