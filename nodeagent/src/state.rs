//! The agent's state directory: one folder per pod (`pods/<ns>_<name>_<uid>/`) holding the
//! containers' log files and `state.json`, a small record of what the agent started (pids with
//! their kernel start times, restart counts, exit codes). After a restart the agent reads the
//! records back, re-adopts the live processes and neither loses nor duplicates a pod. Records
//! are written atomically (write, then rename).
//!
//! The state directory is the agent's alone: its folders are mode 0700 and its files 0600, so
//! pods (which run as another user, see [`crate::runtime::user`]) can read none of it. Pods'
//! working directories live elsewhere, under the work root.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use drover_api::meta::Time;
use serde::{Deserialize, Serialize};

use crate::runtime::{ExitStatus, ProcessId};

/// File name of a pod's record inside its folder.
pub const RECORD_FILE: &str = "state.json";
/// Mode of the state directory and its folders.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of the records.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates `dir` and any missing parent with mode 0700 (an existing one keeps its mode).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
}

/// Creates `dir` as [`create_private_dir`] does and makes it 0700 if it was more open (a
/// state directory made by an older agent, or by hand).
pub fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    create_private_dir(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(PRIVATE_DIR_MODE))
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)?;
    // An earlier file of this name (left by a crash) keeps its mode through `open`.
    f.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))?;
    f.write_all(data)
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode the record of pod {uid}: {source}")]
    Encode {
        uid: String,
        #[source]
        source: serde_json::Error,
    },
}

/// What the agent remembers of one pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRecord {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// Device ids given to the pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// By container name (init containers included).
    #[serde(default)]
    pub containers: BTreeMap<String, ContainerRecord>,
    /// `Succeeded` or `Failed` once the pod is done.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub final_phase: String,
}

/// What the agent remembers of one container.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecord {
    #[serde(default)]
    pub restart_count: i32,
    /// The backoff step of the next restart (0: the base delay).
    #[serde(default)]
    pub backoff_step: u32,
    /// The current run, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<RunRecord>,
    /// The current state when the container has ended (and is not being restarted yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminated: Option<TerminatedRecord>,
    /// The end of the previous run (Kubernetes' `lastState`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_terminated: Option<TerminatedRecord>,
    /// Why the container is waiting (`ContainerCreating`, `CrashLoopBackOff`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<(String, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub process: ProcessId,
    pub started_at: Time,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminatedRecord {
    pub exit: ExitStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    pub finished_at: Time,
    /// Overrides the reason derived from the exit (`StartError` when the process never ran).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// The `pods/` folder of the state directory.
#[derive(Clone, Debug)]
pub struct StateStore {
    pods_dir: PathBuf,
}

impl StateStore {
    pub fn new(state_dir: &Path) -> Self {
        StateStore {
            pods_dir: state_dir.join("pods"),
        }
    }

    pub fn pods_dir(&self) -> &Path {
        &self.pods_dir
    }

    /// The folder of a pod: `<ns>_<name>_<uid>` (names cannot hold `_`, so it is unambiguous).
    pub fn pod_dir(&self, namespace: &str, name: &str, uid: &str) -> PathBuf {
        self.pods_dir.join(format!("{namespace}_{name}_{uid}"))
    }

    /// Writes a record atomically.
    pub fn save(&self, record: &PodRecord) -> Result<(), StateError> {
        let dir = self.pod_dir(&record.namespace, &record.name, &record.uid);
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Write { path, source }
        };
        create_private_dir(&dir).map_err(write_err(&dir))?;
        let json = serde_json::to_vec_pretty(record).map_err(|source| StateError::Encode {
            uid: record.uid.clone(),
            source,
        })?;
        let tmp = dir.join(format!("{RECORD_FILE}.tmp"));
        write_private(&tmp, &json).map_err(write_err(&tmp))?;
        let path = dir.join(RECORD_FILE);
        std::fs::rename(&tmp, &path).map_err(write_err(&path))
    }

    /// Every readable record; unreadable ones are logged and skipped.
    pub fn load_all(&self) -> Vec<PodRecord> {
        let Ok(entries) = std::fs::read_dir(&self.pods_dir) else {
            return Vec::new();
        };
        let mut records = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path().join(RECORD_FILE);
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            match serde_json::from_slice::<PodRecord>(&bytes) {
                Ok(r) => records.push(r),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable pod record")
                }
            }
        }
        records
    }

    /// Removes a pod's folder (record, logs).
    pub fn remove(&self, namespace: &str, name: &str, uid: &str) {
        let dir = self.pod_dir(namespace, name, uid);
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the pod's folder");
        }
    }

    /// The newest folder of pod `namespace/name` (by modification time), for serving logs.
    pub fn find_pod_dir(&self, namespace: &str, name: &str) -> Option<PathBuf> {
        let prefix = format!("{namespace}_{name}_");
        std::fs::read_dir(&self.pods_dir)
            .ok()?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
            .map(|e| e.path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::new(dir.path());
        let mut r = PodRecord {
            uid: "u1".into(),
            namespace: "default".into(),
            name: "p".into(),
            ..Default::default()
        };
        r.containers.insert(
            "main".into(),
            ContainerRecord {
                restart_count: 2,
                ..Default::default()
            },
        );
        store.save(&r).expect("save");
        assert_eq!(store.load_all(), vec![r]);
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        let pod_dir = store.pod_dir("default", "p", "u1");
        assert_eq!(mode(&pod_dir), 0o700, "pod folder");
        assert_eq!(mode(&pod_dir.join(RECORD_FILE)), 0o600, "record");
        assert!(store.find_pod_dir("default", "p").is_some());
        assert!(store.find_pod_dir("default", "q").is_none());
        store.remove("default", "p", "u1");
        assert!(store.load_all().is_empty());
    }
}
