//! The process runtime: each container is a host process in its own process group (so a signal
//! reaches every process it forks), with a clean environment, its working directory, stdout and
//! stderr appended to its log file, and cgroup limits when the host allows.
//!
//! The process group comes from `CommandExt::process_group(0)` rather than `setsid`, which
//! would need an unsafe `pre_exec` hook (the workspace forbids unsafe code). The group is what
//! the agent signals; the cgroup, when there is one, catches processes that left the group.
//!
//! Each container runs as the user [`PodUsers`] resolves from the pod's security context (the
//! `drover` system user by default when the agent is root; see [`super::user`]). A container
//! without a `workingDir` runs in its pod's own directory `<work root>/<pod uid>`, mode 0770,
//! owned by the pod-level user and group; the log file is opened by the agent (mode 0600) and handed over as
//! stdout/stderr, so the pod never needs access to the agent's state directory.
//!
//! Each container runs under a small supervisor, `/bin/sh` running [`SUPERVISOR`]: it runs the
//! program (resolved to a path first, so no shell builtin stands in for it), waits for it, and
//! writes its exit code to `<container>.exit` in the pod's private folder, through a descriptor
//! the agent opened and handed over (the pod's user cannot open that folder). Signals to the
//! process group reach the program as before; the supervisor outlives them to record the code.
//!
//! Children are waited for by tokio (no zombies). After an agent restart a container is no
//! longer the agent's child: it is watched through `/proc`, and when it ends (or if it ended
//! while the agent was down) its exit code is read from that record. Only a container whose
//! supervisor was killed too (SIGKILL to the group while the agent was away) is reported as
//! unknowable ([`ExitStatus::unknown`]).

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::cgroup::{Cgroups, ContainerCgroup};
use super::procfs;
use super::user::{self, Identity, PodUsers};
use super::{
    Container, ContainerSpec, ExitStatus, PROCESS_RUNTIME, ProcessId, Runtime, RuntimeError,
    StopSignal,
};

/// How often a container the agent did not start (found after a restart) is checked.
pub const ADOPTED_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Mode of a container's log file (written through the agent's descriptor only).
pub const LOG_FILE_MODE: u32 = 0o600;

/// The supervisor's script, run as `sh -c SUPERVISOR drover-exit PROGRAM ARGS...` with the exit
/// record as its stdin: it moves the record to descriptor 3 and gives itself /dev/null, catches
/// the stop signals (a caught signal is reset to its default in the program, and `sh` runs the
/// trap only after the program ended), runs the program without descriptor 3, and writes the
/// program's exit status (`128 + signal` when a signal ended it) to the record.
pub const SUPERVISOR: &str = r#"exec 3>&0 </dev/null; trap : TERM INT HUP QUIT USR1 USR2; "$@" 3>&-; c=$?; echo "$c" >&3; exit "$c""#;

/// The shell that runs [`SUPERVISOR`].
const SHELL: &str = "/bin/sh";

/// Where a container's exit code is recorded: beside its log.
pub fn exit_record_path(spec: &ContainerSpec) -> Option<PathBuf> {
    (!spec.log_path.as_os_str().is_empty()).then(|| spec.log_path.with_extension("exit"))
}

/// The exit status a record holds (`None` when the supervisor never wrote it).
pub fn read_exit_record(path: &Path) -> Option<ExitStatus> {
    let text = std::fs::read_to_string(path).ok()?;
    let code: i32 = text.trim().parse().ok()?;
    Some(exit_status_of_code(code))
}

/// A shell's exit status as ours: `128 + n` for n in 1..=64 is the signal n that ended it.
fn exit_status_of_code(code: i32) -> ExitStatus {
    match code - 128 {
        signal @ 1..=64 => ExitStatus::signalled(signal),
        _ => ExitStatus::exited(code),
    }
}

/// The program's path: as given when it has a `/`, else the first executable file of that
/// name on the container's `PATH` (as `execvp` would find it).
fn resolve_program(program: &str, env: &[(String, String)]) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return Some(program.to_string());
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(crate::pods::env::DEFAULT_PATH);
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .map(|p| p.to_string_lossy().into_owned())
}

/// Opens (truncating) a container's exit record, for the supervisor to write through.
fn open_exit_record(path: &Path) -> std::io::Result<std::fs::File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(LOG_FILE_MODE)
        .open(path)
}

/// Runs containers as host processes.
#[derive(Debug)]
pub struct ProcessRuntime {
    cgroups: Cgroups,
    users: PodUsers,
    /// Where pods' own working directories are made (see [`user::prepare_work_root`]).
    work_root: PathBuf,
}

impl ProcessRuntime {
    pub fn new(cgroups: Cgroups, users: PodUsers, work_root: PathBuf) -> Self {
        ProcessRuntime {
            cgroups,
            users,
            work_root,
        }
    }

    pub fn cgroups(&self) -> &Cgroups {
        &self.cgroups
    }

    /// The working directory of a pod that names none; `None` when the uid is not one plain
    /// file name (the API assigns uids, but a path is only ever built from a safe one).
    pub fn pod_work_dir(&self, pod_uid: &str) -> Option<PathBuf> {
        let mut parts = Path::new(pod_uid).components();
        match (parts.next(), parts.next()) {
            (Some(std::path::Component::Normal(_)), None) => Some(self.work_root.join(pod_uid)),
            _ => None,
        }
    }

    /// The container's identity and working directory, both ready for it.
    fn prepare_user(&self, spec: &ContainerSpec) -> Result<(Identity, PathBuf), RuntimeError> {
        let name = spec.container.as_str();
        let config_err = |message: String| RuntimeError::Config {
            container: name.to_string(),
            message,
        };
        let identity = self
            .users
            .container_identity(spec.pod_security.as_ref(), spec.container_security.as_ref())
            .map_err(config_err)?;
        let dir = if spec.working_dir.as_os_str().is_empty() {
            // Shared by the pod's containers, so it belongs to the pod-level user.
            let owner = self
                .users
                .pod_identity(spec.pod_security.as_ref())
                .map_err(config_err)?;
            let dir = self.pod_work_dir(&spec.pod_uid).ok_or_else(|| {
                config_err(format!(
                    "pod uid {:?} cannot name a working directory",
                    spec.pod_uid
                ))
            })?;
            user::prepare_work_dir(&dir, owner, self.users.can_switch)
                .map_err(prepare_err(name, "the working directory"))?;
            dir
        } else {
            std::fs::create_dir_all(&spec.working_dir)
                .map_err(prepare_err(name, "the working directory"))?;
            spec.working_dir.clone()
        };
        // The child changes into its directory after it has become the pod's user.
        if self.users.can_switch
            && let Err((blocked, mode, owner)) = user::check_reachable(&dir, identity)
        {
            return Err(config_err(format!(
                "the working directory {} cannot be entered as {identity}: {} (mode {mode:o}, owner uid {owner}) is in the way",
                dir.display(),
                blocked.display()
            )));
        }
        Ok((identity, dir))
    }
}

/// Opens (appending) a container's log file, creating it and its private folder.
fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        crate::state::create_private_dir(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(LOG_FILE_MODE)
        .open(path)
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
        let (identity, working_dir) = self.prepare_user(spec)?;
        let stdout = open_log(&spec.log_path).map_err(prepare_err(name, "the log file"))?;
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
        let spawn_err = |source| RuntimeError::Spawn {
            container: name.to_string(),
            program: program.clone(),
            source,
        };
        let resolved = resolve_program(program, &spec.env).ok_or_else(|| {
            spawn_err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such executable on the container's PATH",
            ))
        })?;
        let mut cmd = match exit_record_path(spec) {
            Some(record) => {
                let record =
                    open_exit_record(&record).map_err(prepare_err(name, "the exit record"))?;
                let mut cmd = tokio::process::Command::new(SHELL);
                cmd.args(["-c", SUPERVISOR, "drover-exit", &resolved])
                    .args(args)
                    .stdin(Stdio::from(record));
                cmd
            }
            None => {
                let mut cmd = tokio::process::Command::new(&resolved);
                cmd.args(args).stdin(Stdio::null());
                cmd
            }
        };
        cmd.env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&working_dir)
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .process_group(0)
            .kill_on_drop(false);
        if self.users.can_switch {
            // std clears the supplementary groups too (setgroups(0) before setuid, as root).
            cmd.uid(identity.uid).gid(identity.gid);
        }
        let child = cmd.spawn().map_err(spawn_err)?;
        let pid = child.id().unwrap_or(0);
        if let Some(cg) = &cgroup
            && let Err(e) = cg.add(pid)
        {
            tracing::warn!(pod = %spec.pod_key, container = name, error = %e, "cannot move the process into its cgroup");
        }
        let id = procfs::identify(pid);
        tracing::debug!(pod = %spec.pod_key, container = name, pid, uid = identity.uid, gid = identity.gid, "container started");
        Ok(Box::new(ProcessContainer {
            id,
            child: tokio::sync::Mutex::new(Some(child)),
            cgroup,
            record: exit_record_path(spec),
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
            record: exit_record_path(spec),
            exit: std::sync::Mutex::new(None),
        }))
    }

    fn ended_while_away(&self, spec: &ContainerSpec) -> ExitStatus {
        exit_record_path(spec)
            .and_then(|p| read_exit_record(&p))
            .unwrap_or_else(ExitStatus::unknown)
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
        let Some(dir) = self.pod_work_dir(pod_uid) else {
            return;
        };
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the pod's working directory");
        }
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
    /// The supervisor's exit record, read when the process was not the agent's child.
    record: Option<PathBuf>,
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
                    (Some(code), _) => exit_status_of_code(code),
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
                self.record
                    .as_deref()
                    .and_then(read_exit_record)
                    .unwrap_or_else(ExitStatus::unknown)
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
