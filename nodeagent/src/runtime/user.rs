//! Who a container runs as, and where it may write.
//!
//! Pods never run as the agent when the agent can help it: an agent running as root runs them
//! as the `drover` system user (created on first start when missing) or as `--pod-user`, and
//! honours `securityContext.runAsUser`, `runAsGroup` and `runAsNonRoot` (pod level, overridden
//! per container, as in Kubernetes). The child gets the uid and gid through std's
//! `CommandExt::uid`/`gid`, which also clears the supplementary groups (std calls
//! `setgroups(0)` before `setuid` when the parent is root), and only then changes into the
//! working directory: so the pod's user must be able to reach that directory, which is why pod
//! working directories live under a world-traversable work root (see [`prepare_work_dir`]) and
//! not in the agent's private state directory.
//!
//! An agent that is not root cannot switch users: pods run as the agent itself (the agent warns
//! once), and a pod asking for another user is refused with `CreateContainerConfigError`, as
//! the kubelet refuses a container it cannot configure.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use drover_api::core::PodSecurityContext;
use nix::unistd::{Gid, Group, Uid, User};

/// The system user pods run as when the agent is root and `--pod-user` is not given.
pub const DEFAULT_POD_USER: &str = "drover";
/// Where pod working directories live when the agent is root (one folder per node below it).
pub const DEFAULT_POD_WORK_ROOT: &str = "/var/lib/drover/work";
/// Mode of the work root: anyone may pass through, nobody but the agent may list it.
pub const WORK_ROOT_MODE: u32 = 0o711;
/// Mode of one pod's working directory, owned by the pod-level user and group: the group lets
/// in a container that overrides only `runAsUser`.
pub const POD_WORK_DIR_MODE: u32 = 0o770;
/// The largest uid/gid Kubernetes accepts in a security context.
const MAX_ID: i64 = i32::MAX as i64;

/// A uid and gid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "uid {} gid {}", self.uid, self.gid)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("--pod-user {value:?}: expected NAME, UID, NAME:GID or UID:GID")]
    Parse { value: String },
    #[error("--pod-user {value:?}: no user or group {name:?} on this host")]
    Unknown { value: String, name: String },
    #[error(
        "--pod-user {value:?}: the agent runs as uid {uid}, not root, so it cannot run pods as another user; run the agent as root or leave --pod-user out"
    )]
    CannotSwitch { value: String, uid: u32 },
    #[error(
        "cannot create the system user {name:?} that pods run as ({detail}); create it, or pass --pod-user NAME|UID[:GID] to choose the user pods run as"
    )]
    Create { name: String, detail: String },
    #[error("cannot prepare the pod work root {path}: {source}")]
    WorkRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "pods running as {identity} cannot enter the pod work root {root}: {blocked} (mode {mode:o}, owner uid {owner}) is in the way; pass --pod-work-root DIR with a path they can traverse"
    )]
    NotTraversable {
        identity: Identity,
        root: PathBuf,
        blocked: PathBuf,
        mode: u32,
        owner: u32,
    },
}

/// Who the pods of this node run as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodUsers {
    /// The identity of containers that name no user.
    pub default: Identity,
    /// Whether the agent may run containers as other users (it runs as root).
    pub can_switch: bool,
}

/// The user-related fields of a security context (pod or container level).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RunAs {
    user: Option<i64>,
    group: Option<i64>,
    non_root: Option<bool>,
}

impl RunAs {
    fn of_pod(sc: Option<&PodSecurityContext>) -> RunAs {
        sc.map(|sc| RunAs {
            user: sc.run_as_user,
            group: sc.run_as_group,
            non_root: sc.run_as_non_root,
        })
        .unwrap_or_default()
    }

    /// The container's `securityContext` is kept as JSON by the API; only these fields matter.
    fn of_container(sc: Option<&serde_json::Value>) -> Result<RunAs, String> {
        let Some(sc) = sc.filter(|v| !v.is_null()) else {
            return Ok(RunAs::default());
        };
        let int = |field: &str| match sc.get(field) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| format!("securityContext.{field}: expected an integer, got {v}")),
        };
        let non_root = match sc.get("runAsNonRoot") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(v.as_bool().ok_or_else(|| {
                format!("securityContext.runAsNonRoot: expected true or false, got {v}")
            })?),
        };
        Ok(RunAs {
            user: int("runAsUser")?,
            group: int("runAsGroup")?,
            non_root,
        })
    }

    /// Container fields win over the pod's.
    fn over(self, pod: RunAs) -> RunAs {
        RunAs {
            user: self.user.or(pod.user),
            group: self.group.or(pod.group),
            non_root: self.non_root.or(pod.non_root),
        }
    }
}

fn id(value: i64, field: &str) -> Result<u32, String> {
    if (0..=MAX_ID).contains(&value) {
        Ok(value as u32)
    } else {
        Err(format!(
            "securityContext.{field}: {value} is not a valid id (expected 0 to {MAX_ID})"
        ))
    }
}

/// The primary group of `uid` in the host's user database.
fn primary_group(uid: u32) -> Option<u32> {
    User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.gid.as_raw())
}

impl PodUsers {
    /// The agent's own identity, without switching (what a non-root agent does).
    pub fn agent() -> PodUsers {
        PodUsers {
            default: Identity {
                uid: Uid::current().as_raw(),
                gid: Gid::current().as_raw(),
            },
            can_switch: false,
        }
    }

    /// Resolves `--pod-user`. Without it, a root agent uses the [`DEFAULT_POD_USER`] system
    /// user (creating it with `useradd` when missing) and any other agent runs pods as itself.
    /// Blocks while `useradd` runs: call it off the async threads.
    pub fn resolve(flag: Option<&str>) -> Result<PodUsers, UserError> {
        let me = Self::agent();
        let root = Uid::current().is_root();
        let Some(value) = flag else {
            if !root {
                return Ok(me);
            }
            return Ok(PodUsers {
                default: default_user()?,
                can_switch: true,
            });
        };
        let identity = parse_user(value)?;
        if !root && identity != me.default {
            return Err(UserError::CannotSwitch {
                value: value.to_string(),
                uid: me.default.uid,
            });
        }
        Ok(PodUsers {
            default: identity,
            can_switch: root,
        })
    }

    /// The identity the pod-level security context asks for (the owner of the pod's working
    /// directory).
    pub fn pod_identity(&self, pod: Option<&PodSecurityContext>) -> Result<Identity, String> {
        self.identity_of(RunAs::of_pod(pod))
    }

    /// The identity one container runs as: its own security context over the pod's, over this
    /// node's default. `Err` says, naming the field, why the container cannot be started.
    pub fn container_identity(
        &self,
        pod: Option<&PodSecurityContext>,
        container: Option<&serde_json::Value>,
    ) -> Result<Identity, String> {
        let run_as = RunAs::of_container(container)?.over(RunAs::of_pod(pod));
        self.identity_of(run_as)
    }

    fn identity_of(&self, run_as: RunAs) -> Result<Identity, String> {
        let uid = match run_as.user {
            Some(u) => id(u, "runAsUser")?,
            None => self.default.uid,
        };
        let gid = match (run_as.group, run_as.user) {
            (Some(g), _) => id(g, "runAsGroup")?,
            // A user named by uid runs with its own primary group when the host knows it (as
            // a container runs with the group its image's /etc/passwd gives), else with the
            // group of the same number: never a group other pods run with.
            (None, Some(_)) => primary_group(uid).unwrap_or(uid),
            (None, None) => self.default.gid,
        };
        if run_as.non_root == Some(true) && uid == 0 {
            return Err(match run_as.user {
                Some(_) => "securityContext.runAsNonRoot is true but securityContext.runAsUser is 0 (root)".to_string(),
                None => "securityContext.runAsNonRoot is true but this node runs pods as root (--pod-user); set securityContext.runAsUser to a non-zero uid".to_string(),
            });
        }
        let identity = Identity { uid, gid };
        if !self.can_switch && identity != self.default {
            return Err(format!(
                "securityContext.runAsUser/runAsGroup ask for {identity}, but the node agent runs as {} without root and cannot switch users",
                self.default
            ));
        }
        Ok(identity)
    }
}

/// Parses `NAME`, `UID`, `NAME:GID` or `UID:GID` (the group may be a name too).
fn parse_user(value: &str) -> Result<Identity, UserError> {
    let parse_err = || UserError::Parse {
        value: value.to_string(),
    };
    let unknown = |name: &str| UserError::Unknown {
        value: value.to_string(),
        name: name.to_string(),
    };
    let (user, group) = match value.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (value, None),
    };
    if user.is_empty() || group.is_some_and(str::is_empty) {
        return Err(parse_err());
    }
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => (uid, primary_group(uid)),
        Err(_) => {
            let u = User::from_name(user)
                .ok()
                .flatten()
                .ok_or_else(|| unknown(user))?;
            (u.uid.as_raw(), Some(u.gid.as_raw()))
        }
    };
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => Group::from_name(g)
                .ok()
                .flatten()
                .ok_or_else(|| unknown(g))?
                .gid
                .as_raw(),
        },
        // A bare uid the host does not know runs with the group of the same number.
        None => primary.unwrap_or(uid),
    };
    Ok(Identity { uid, gid })
}

/// The `drover` system user, created when missing.
fn default_user() -> Result<Identity, UserError> {
    let lookup = || {
        User::from_name(DEFAULT_POD_USER)
            .ok()
            .flatten()
            .map(|u| Identity {
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            })
    };
    if let Some(found) = lookup() {
        return Ok(found);
    }
    // Agents of one process (`drover up --simulate-nodes`) start together: one creates the
    // user, the others find it. Agents of other processes make useradd fail on its lock file,
    // so a failed attempt is retried after a look.
    static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = CREATING.lock().unwrap_or_else(|e| e.into_inner());
    let mut detail = String::new();
    for attempt in 0..CREATE_ATTEMPTS {
        if let Some(found) = lookup() {
            return Ok(found);
        }
        if attempt > 0 {
            std::thread::sleep(CREATE_RETRY);
        }
        match create_default_user() {
            Ok(()) => {
                tracing::info!(
                    user = DEFAULT_POD_USER,
                    "created the system user pods run as"
                );
                detail = "useradd succeeded but the user is not found".into();
            }
            Err(e) => detail = e,
        }
    }
    lookup().ok_or_else(|| UserError::Create {
        name: DEFAULT_POD_USER.to_string(),
        detail,
    })
}

/// Tries to create the user again this often when useradd fails.
const CREATE_ATTEMPTS: usize = 5;
const CREATE_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

fn create_default_user() -> Result<(), String> {
    let created = std::process::Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--user-group",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            DEFAULT_POD_USER,
        ])
        .output();
    match created {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "useradd: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run useradd: {e}")),
    }
}

/// Whether `identity` may search (enter) a directory with this metadata.
fn may_enter(meta: &std::fs::Metadata, identity: Identity) -> bool {
    if identity.uid == 0 {
        return true;
    }
    let mode = meta.permissions().mode();
    if meta.uid() == identity.uid {
        mode & 0o100 != 0
    } else if meta.gid() == identity.gid {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

/// Checks that `identity` can reach `dir` (search permission on it and every ancestor);
/// `Err` names the first directory in the way, with its mode and owner.
pub fn check_reachable(dir: &Path, identity: Identity) -> Result<(), (PathBuf, u32, u32)> {
    let mut path = PathBuf::new();
    for part in dir.components() {
        path.push(part);
        let Ok(meta) = std::fs::metadata(&path) else {
            // What does not exist yet is created by the agent with the modes it chooses.
            return Ok(());
        };
        if !may_enter(&meta, identity) {
            return Err((path, meta.permissions().mode() & 0o7777, meta.uid()));
        }
    }
    Ok(())
}

/// Creates the node's work root (mode [`WORK_ROOT_MODE`]) and checks that the default pod user
/// can pass through it and every directory above it.
pub fn prepare_work_root(root: &Path, users: &PodUsers) -> Result<(), UserError> {
    let io_err = |source| UserError::WorkRoot {
        path: root.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(WORK_ROOT_MODE)
        .create(root)
        .map_err(io_err)?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(WORK_ROOT_MODE))
        .map_err(io_err)?;
    check_reachable(root, users.default).map_err(|(blocked, mode, owner)| {
        UserError::NotTraversable {
            identity: users.default,
            root: root.to_path_buf(),
            blocked,
            mode,
            owner,
        }
    })
}

/// Creates (or takes over) one pod's working directory: mode [`POD_WORK_DIR_MODE`], owned by
/// `owner` when the agent may give files away.
pub fn prepare_work_dir(dir: &Path, owner: Identity, chown: bool) -> std::io::Result<()> {
    match std::fs::DirBuilder::new()
        .mode(POD_WORK_DIR_MODE)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    if chown {
        std::os::unix::fs::chown(dir, Some(owner.uid), Some(owner.gid))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(POD_WORK_DIR_MODE))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT_NODE: PodUsers = PodUsers {
        default: Identity { uid: 998, gid: 997 },
        can_switch: true,
    };
    const USER_NODE: PodUsers = PodUsers {
        default: Identity {
            uid: 1000,
            gid: 1000,
        },
        can_switch: false,
    };

    fn pod(user: Option<i64>, group: Option<i64>, non_root: Option<bool>) -> PodSecurityContext {
        PodSecurityContext {
            run_as_user: user,
            run_as_group: group,
            run_as_non_root: non_root,
            ..Default::default()
        }
    }

    #[test]
    fn identities_follow_the_security_context() {
        type Case = (
            &'static str,
            PodUsers,
            Option<PodSecurityContext>,
            Option<serde_json::Value>,
            Result<Identity, &'static str>,
        );
        let ok = |uid, gid| Ok(Identity { uid, gid });
        let cases: Vec<Case> = vec![
            (
                "nothing set: the node's default",
                ROOT_NODE,
                None,
                None,
                ok(998, 997),
            ),
            (
                "pod user and group",
                ROOT_NODE,
                Some(pod(Some(12345), Some(23456), None)),
                None,
                ok(12345, 23456),
            ),
            (
                "pod user alone, unknown to the host: the group of its number",
                ROOT_NODE,
                Some(pod(Some(54321), None, None)),
                None,
                ok(54321, 54321),
            ),
            (
                "root allowed without runAsNonRoot",
                ROOT_NODE,
                Some(pod(Some(0), Some(0), None)),
                None,
                ok(0, 0),
            ),
            (
                "container overrides the pod",
                ROOT_NODE,
                Some(pod(Some(12345), Some(23456), None)),
                Some(serde_json::json!({"runAsUser": 4242})),
                ok(4242, 23456),
            ),
            (
                "container runAsNonRoot over pod root",
                ROOT_NODE,
                Some(pod(Some(0), None, None)),
                Some(serde_json::json!({"runAsNonRoot": true})),
                Err("runAsNonRoot is true but securityContext.runAsUser is 0"),
            ),
            (
                "runAsNonRoot with uid 0",
                ROOT_NODE,
                Some(pod(Some(0), None, Some(true))),
                None,
                Err("runAsNonRoot is true but securityContext.runAsUser is 0"),
            ),
            (
                "runAsNonRoot with a non-root default",
                ROOT_NODE,
                Some(pod(None, None, Some(true))),
                None,
                ok(998, 997),
            ),
            (
                "negative uid",
                ROOT_NODE,
                Some(pod(Some(-1), None, None)),
                None,
                Err("securityContext.runAsUser: -1 is not a valid id"),
            ),
            (
                "uid too large",
                ROOT_NODE,
                Some(pod(Some(1 << 40), None, None)),
                None,
                Err("securityContext.runAsUser"),
            ),
            (
                "container uid of the wrong type",
                ROOT_NODE,
                None,
                Some(serde_json::json!({"runAsUser": "root"})),
                Err("securityContext.runAsUser: expected an integer"),
            ),
            (
                "container runAsNonRoot of the wrong type",
                ROOT_NODE,
                None,
                Some(serde_json::json!({"runAsNonRoot": "yes"})),
                Err("securityContext.runAsNonRoot: expected true or false"),
            ),
            (
                "non-root agent: itself",
                USER_NODE,
                None,
                None,
                ok(1000, 1000),
            ),
            (
                "non-root agent: its own uid and gid",
                USER_NODE,
                Some(pod(Some(1000), Some(1000), None)),
                None,
                ok(1000, 1000),
            ),
            (
                "non-root agent: another user refused",
                USER_NODE,
                Some(pod(Some(12345), None, None)),
                None,
                Err("runAsUser/runAsGroup ask for uid 12345"),
            ),
        ];
        for (name, users, pod_sc, container_sc, want) in cases {
            let got = users.container_identity(pod_sc.as_ref(), container_sc.as_ref());
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{name}"),
                (Err(g), Err(w)) => assert!(g.contains(w), "{name}: {g:?} should contain {w:?}"),
                (g, w) => panic!("{name}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn pod_user_flag_parses() {
        let cases: Vec<(&str, Result<Identity, &str>)> = vec![
            (
                "12345:23456",
                Ok(Identity {
                    uid: 12345,
                    gid: 23456,
                }),
            ),
            ("0:0", Ok(Identity { uid: 0, gid: 0 })),
            ("", Err("expected NAME, UID")),
            ("12:", Err("expected NAME, UID")),
            (":12", Err("expected NAME, UID")),
            (
                "no-such-user-here",
                Err("no user or group \"no-such-user-here\""),
            ),
            (
                "12:no-such-group-here",
                Err("no user or group \"no-such-group-here\""),
            ),
        ];
        for (value, want) in cases {
            match (parse_user(value), want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{value}"),
                (Err(g), Err(w)) => assert!(g.to_string().contains(w), "{value}: {g}"),
                (g, w) => panic!("{value}: got {g:?}, want {w:?}"),
            }
        }
        // Names resolve through the host's user database (root exists everywhere).
        assert_eq!(parse_user("root").ok(), Some(Identity { uid: 0, gid: 0 }));
    }

    #[test]
    fn reachability_names_the_directory_in_the_way() {
        let top = tempfile::tempdir().expect("tempdir");
        let closed = top.path().join("closed");
        let open = closed.join("open");
        std::fs::create_dir_all(&open).expect("mkdir");
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let me = Uid::current().as_raw();
        let stranger = Identity {
            uid: me.wrapping_add(4242),
            gid: Gid::current().as_raw().wrapping_add(4242),
        };
        let (blocked, mode, _) = check_reachable(&open, stranger).expect_err("0700 blocks");
        assert_eq!((blocked, mode), (closed.clone(), 0o700));
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o711)).expect("chmod");
        assert_eq!(check_reachable(&open, stranger), Ok(()));
    }
}
