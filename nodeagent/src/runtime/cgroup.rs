//! Resource limits through cgroups: v2 (the unified hierarchy) when the host has it, else v1
//! (separate `memory`, `cpu` and `pids` hierarchies), whichever the agent can write. When
//! neither is writable containers run without limits and the node says so in a condition.
//!
//! Layout: `<root>/drover/<pod-uid>/<container>` (v2), or the same under each v1 controller.
//! A process is moved into its cgroup right after it is spawned; a child it forks in that
//! instant stays outside (the price of not using an unsafe `pre_exec` hook), but the process
//! group kill still reaches it.

use std::path::{Path, PathBuf};

use super::Limits;

/// Default mount point of the cgroup file system.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The directory under each hierarchy that holds Drover's cgroups.
pub const DROVER_SLICE: &str = "drover";
/// CFS period used to express CPU limits, in microseconds (Kubernetes' default).
pub const CPU_PERIOD_US: u64 = 100_000;

const V1_CONTROLLERS: &[&str] = &["memory", "cpu", "pids"];

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Which cgroup hierarchy the agent uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cgroups {
    /// cgroup v2 rooted here (`<root>/drover` exists, controllers enabled).
    V2 { base: PathBuf },
    /// cgroup v1: `<root>/<controller>/drover` for memory, cpu and pids.
    V1 { root: PathBuf },
    /// No writable hierarchy: why.
    Unavailable(String),
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn mkdir(path: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir_all(path).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        source,
    })
}

impl Cgroups {
    /// Finds a hierarchy the agent can write under `root` (normally `/sys/fs/cgroup`).
    pub fn detect(root: &Path) -> Cgroups {
        if root.join("cgroup.controllers").is_file() {
            let base = root.join(DROVER_SLICE);
            let enable =
                |dir: &Path| write(&dir.join("cgroup.subtree_control"), "+memory +cpu +pids");
            return match mkdir(&base)
                .and_then(|()| enable(root))
                .and_then(|()| enable(&base))
            {
                Ok(()) => Cgroups::V2 { base },
                Err(e) => Cgroups::Unavailable(format!(
                    "cgroup v2 at {} is not writable: {e}",
                    root.display()
                )),
            };
        }
        let mut missing = Vec::new();
        for c in V1_CONTROLLERS {
            if let Err(e) = mkdir(&root.join(c).join(DROVER_SLICE)) {
                missing.push(e.to_string());
            }
        }
        if missing.is_empty() {
            Cgroups::V1 {
                root: root.to_path_buf(),
            }
        } else {
            Cgroups::Unavailable(format!(
                "no writable cgroup hierarchy under {}: {}",
                root.display(),
                missing.join("; ")
            ))
        }
    }

    /// The reason limits cannot be applied, if they cannot.
    pub fn unavailable(&self) -> Option<&str> {
        match self {
            Cgroups::Unavailable(why) => Some(why),
            _ => None,
        }
    }

    /// The cgroup of one container (its directories, which may not exist yet).
    pub fn container(&self, pod_uid: &str, container: &str) -> Option<ContainerCgroup> {
        match self {
            Cgroups::V2 { base } => Some(ContainerCgroup {
                v2: true,
                dirs: vec![base.join(pod_uid).join(container)],
            }),
            Cgroups::V1 { root } => Some(ContainerCgroup {
                v2: false,
                dirs: V1_CONTROLLERS
                    .iter()
                    .map(|c| {
                        root.join(c)
                            .join(DROVER_SLICE)
                            .join(pod_uid)
                            .join(container)
                    })
                    .collect(),
            }),
            Cgroups::Unavailable(_) => None,
        }
    }

    /// Removes a pod's (empty) cgroups.
    pub fn remove_pod(&self, pod_uid: &str) {
        let dirs: Vec<PathBuf> = match self {
            Cgroups::V2 { base } => vec![base.join(pod_uid)],
            Cgroups::V1 { root } => V1_CONTROLLERS
                .iter()
                .map(|c| root.join(c).join(DROVER_SLICE).join(pod_uid))
                .collect(),
            Cgroups::Unavailable(_) => vec![],
        };
        for dir in dirs {
            // Children first: cgroup directories are removed with rmdir, one level at a time.
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    if e.path().is_dir() {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

/// One container's cgroup (one directory on v2, one per controller on v1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerCgroup {
    v2: bool,
    dirs: Vec<PathBuf>,
}

impl ContainerCgroup {
    /// Creates the directories and writes the limits.
    pub fn create(&self, limits: &Limits) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            mkdir(dir)?;
        }
        if self.v2 {
            let dir = &self.dirs[0];
            if let Some(parent) = dir.parent() {
                // The pod level must delegate the controllers to its containers.
                let _ = write(&parent.join("cgroup.subtree_control"), "+memory +cpu +pids");
            }
            write(
                &dir.join("memory.max"),
                &limits.memory_bytes.map_or("max".into(), |b| b.to_string()),
            )?;
            let cpu = limits
                .cpu_milli
                .map_or(format!("max {CPU_PERIOD_US}"), |m| {
                    format!("{} {CPU_PERIOD_US}", (m * CPU_PERIOD_US / 1000).max(1000))
                });
            write(&dir.join("cpu.max"), &cpu)?;
            write(
                &dir.join("pids.max"),
                &limits.pids.map_or("max".into(), |p| p.to_string()),
            )?;
        } else {
            for dir in &self.dirs {
                let controller = dir
                    .components()
                    .rev()
                    .nth(3)
                    .map(|c| c.as_os_str().to_string_lossy().into_owned());
                match controller.as_deref() {
                    Some("memory") => {
                        let v = limits.memory_bytes.map_or("-1".into(), |b| b.to_string());
                        write(&dir.join("memory.limit_in_bytes"), &v)?;
                    }
                    Some("cpu") => {
                        write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                        let v = limits.cpu_milli.map_or("-1".into(), |m| {
                            (m * CPU_PERIOD_US / 1000).max(1000).to_string()
                        });
                        write(&dir.join("cpu.cfs_quota_us"), &v)?;
                    }
                    Some("pids") => {
                        let v = limits.pids.map_or("max".into(), |p| p.to_string());
                        write(&dir.join("pids.max"), &v)?;
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Moves a process into the cgroup.
    pub fn add(&self, pid: u32) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Every process in the cgroup.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .dirs
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Kills every process of the cgroup: `cgroup.kill` on v2, else one SIGKILL per process.
    pub fn kill_all(&self) {
        if self.v2 && write(&self.dirs[0].join("cgroup.kill"), "1").is_ok() {
            return;
        }
        for pid in self.pids() {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    /// Whether the kernel's OOM killer has killed a process of this cgroup.
    pub fn oom_killed(&self) -> bool {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        self.dirs
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join(file)).ok())
            .any(|text| {
                text.lines().any(|l| {
                    let mut parts = l.split_whitespace();
                    parts.next() == Some("oom_kill")
                        && parts
                            .next()
                            .and_then(|n| n.parse::<u64>().ok())
                            .unwrap_or(0)
                            > 0
                })
            })
    }

    /// Removes the directories (the cgroup must be empty).
    pub fn remove(&self) {
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwritable_root_is_unavailable() {
        let c = Cgroups::detect(Path::new("/proc/definitely-not-a-cgroup-root"));
        assert!(c.unavailable().is_some(), "{c:?}");
        assert!(c.container("uid", "main").is_none());
    }

    #[test]
    fn v1_layout_names_each_controller() {
        let c = Cgroups::V1 {
            root: PathBuf::from("/cg"),
        };
        let cg = c.container("u1", "main").expect("v1 has cgroups");
        assert_eq!(cg.dirs[0], PathBuf::from("/cg/memory/drover/u1/main"));
        assert_eq!(cg.dirs.len(), 3);
    }
}
