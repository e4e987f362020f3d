//! Who pods run as (issue 12 item 4): a real agent and the process runtime, against an
//! in-process API server. Pods must not read the agent's or the admin's secrets: they run as
//! an unprivileged user, honour `securityContext.runAsUser/runAsGroup/runAsNonRoot`, can write
//! their own working directory, and meet 0700 folders and 0600 files everywhere else.
//!
//! Switching users needs root: as any other user these tests print why and pass.

#[path = "agent/common.rs"]
#[allow(dead_code)]
mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use drover_api::core::{Container, Pod, PodSecurityContext};
use drover_nodeagent::runtime::user::{DEFAULT_POD_USER, DEFAULT_POD_WORK_ROOT};
use nix::unistd::{Uid, User};

use common::{Cluster, sh_pod};

fn skip_unless_root(test: &str) -> bool {
    if Uid::effective().is_root() {
        return false;
    }
    println!(
        "skipping {test}: switching users needs root (this test runs as uid {})",
        Uid::effective()
    );
    true
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The folder the agent of `node` keeps pod `pod` in.
fn pod_folder(c: &Cluster, node: &str, pod: &Pod) -> PathBuf {
    let m = &pod.metadata;
    c.state_dir(node)
        .join("pods")
        .join(format!("{}_{}_{}", m.namespace, m.name, m.uid))
}

fn log(c: &Cluster, node: &str, pod: &Pod, container: &str) -> String {
    let path = pod_folder(c, node, pod).join(format!("{container}.log"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn work_dir(node: &str, pod: &Pod) -> PathBuf {
    Path::new(DEFAULT_POD_WORK_ROOT)
        .join(node)
        .join(&pod.metadata.uid)
}

async fn wait_succeeded(c: &Cluster, name: &str) -> Pod {
    let p = c
        .wait_pod(name, "the end", |p| {
            p.status.phase == "Succeeded" || p.status.phase == "Failed"
        })
        .await;
    assert_eq!(p.status.phase, "Succeeded", "pod {name}: {:#?}", p.status);
    p
}

#[tokio::test]
async fn pods_run_as_the_drover_user_and_cannot_read_the_agents_or_the_admins_files() {
    if skip_unless_root("pods_run_as_the_drover_user_...") {
        return;
    }
    let node = "pod-user-1";
    let c = Cluster::start().await;
    // Everything above the secrets is open: only their own modes protect them.
    std::fs::set_permissions(c.dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let open = c.dir.path().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // The stand-in for ~/.drover/config: root's, mode 0600.
    let secret = open.join("config");
    std::fs::write(&secret, "token: admin-secret\n").expect("write");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let data = c.dir.path().join("data");
    let state = c.state_dir(node);
    let agent = c.start_agent(c.agent_config(node));

    let script = format!(
        "id -u; id -g; id -G; pwd
cat {secret} && echo SECRET-READ || echo secret-denied
cat {data}/tokens && echo TOKENS-READ || echo tokens-denied
cat {data}/store.redb > /dev/null && echo STORE-READ || echo store-denied
ls {state} && echo STATE-LISTED || echo state-denied
echo written > here && cat here",
        secret = secret.display(),
        data = data.display(),
        state = state.display(),
    );
    let created = c.create_pod(sh_pod("reader", node, &script, "Never")).await;
    let p = wait_succeeded(&c, "reader").await;
    let out = log(&c, node, &p, "main");
    let lines: Vec<&str> = out.lines().collect();

    let drover = User::from_name(DEFAULT_POD_USER)
        .expect("user database")
        .expect("the agent created the drover user");
    assert_ne!(drover.uid.as_raw(), 0);
    let (uid, gid) = (drover.uid.to_string(), drover.gid.to_string());
    assert_eq!(lines.first(), Some(&uid.as_str()), "uid: {out}");
    assert_eq!(lines.get(1), Some(&gid.as_str()), "gid: {out}");
    // No supplementary group of the agent (root's) is left.
    assert_eq!(lines.get(2), Some(&gid.as_str()), "groups: {out}");
    let work = work_dir(node, &created);
    assert_eq!(
        lines.get(3).copied(),
        work.to_str(),
        "working directory: {out}"
    );
    for denied in [
        "secret-denied",
        "tokens-denied",
        "store-denied",
        "state-denied",
    ] {
        assert!(lines.contains(&denied), "{denied}: {out}");
    }
    assert!(
        !out.contains("admin-secret") && !out.contains("-READ") && !out.contains("LISTED"),
        "{out}"
    );
    assert_eq!(
        lines.last(),
        Some(&"written"),
        "the working directory is writable: {out}"
    );

    // The pod's directory is its user's; the work root lets it pass, nothing more.
    let meta = std::fs::metadata(&work).expect("work dir");
    assert_eq!(
        (meta.uid(), meta.gid()),
        (drover.uid.as_raw(), drover.gid.as_raw())
    );
    assert_eq!(mode(&work), 0o770, "pod working directory");
    assert_eq!(mode(work.parent().expect("root")), 0o711, "work root");
    // What the agent and the API server keep is theirs alone.
    let folder = pod_folder(&c, node, &p);
    for (what, path, want) in [
        ("state dir", state.clone(), 0o700),
        ("pods dir", state.join("pods"), 0o700),
        ("pod folder", folder.clone(), 0o700),
        ("pod record", folder.join("state.json"), 0o600),
        ("pod log", folder.join("main.log"), 0o600),
        ("token file", data.join("tokens"), 0o600),
        ("store file", data.join("store.redb"), 0o600),
    ] {
        assert_eq!(mode(&path), want, "{what} {}", path.display());
    }

    c.cleanup(node).await;
    assert!(!work.exists(), "the working directory goes with the pod");
    agent.stop().await;
}

fn with_security(mut pod: Pod, sc: PodSecurityContext) -> Pod {
    pod.spec.security_context = Some(sc);
    pod
}

#[tokio::test]
async fn security_context_users_are_honoured_and_root_is_refused_to_run_as_non_root() {
    if skip_unless_root("security_context_users_...") {
        return;
    }
    let node = "pod-user-2";
    let c = Cluster::start().await;
    let agent = c.start_agent(c.agent_config(node));

    // Pod level 12345:23456; a second container overrides the user only.
    let mut chosen = with_security(
        sh_pod(
            "chosen",
            node,
            "id -u; id -g; echo mine > f && cat f",
            "Never",
        ),
        PodSecurityContext {
            run_as_user: Some(12345),
            run_as_group: Some(23456),
            run_as_non_root: Some(true),
            ..Default::default()
        },
    );
    chosen.spec.containers.push(Container {
        name: "other".into(),
        command: vec![
            "sh".into(),
            "-c".into(),
            "id -u; id -g; echo ok > g && cat g".into(),
        ],
        security_context: Some(serde_json::json!({"runAsUser": 4242})),
        ..Default::default()
    });
    let root = with_security(
        sh_pod("root", node, "id -u", "Never"),
        PodSecurityContext {
            run_as_user: Some(0),
            run_as_non_root: Some(true),
            ..Default::default()
        },
    );
    let mut bad_type = sh_pod("badtype", node, "id -u", "Never");
    bad_type.spec.containers[0].security_context = Some(serde_json::json!({"runAsUser": "root"}));
    c.create_pod(chosen).await;
    c.create_pod(root).await;
    c.create_pod(bad_type).await;

    let p = wait_succeeded(&c, "chosen").await;
    assert_eq!(log(&c, node, &p, "main"), "12345\n23456\nmine\n");
    assert_eq!(log(&c, node, &p, "other"), "4242\n23456\nok\n");

    for (name, field) in [
        (
            "root",
            "securityContext.runAsNonRoot is true but securityContext.runAsUser is 0",
        ),
        ("badtype", "securityContext.runAsUser: expected an integer"),
    ] {
        let p = c
            .wait_pod(name, "CreateContainerConfigError", |p| {
                p.status.container_statuses.first().is_some_and(|s| {
                    s.state
                        .as_ref()
                        .and_then(|s| s.waiting.as_ref())
                        .is_some_and(|w| w.reason == "CreateContainerConfigError")
                })
            })
            .await;
        assert_eq!(p.status.phase, "Pending", "{name}");
        let status = &p.status.container_statuses[0];
        let waiting = status
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .expect("waiting");
        assert!(
            waiting.message.contains(field),
            "{name}: {}",
            waiting.message
        );
        assert_eq!(status.restart_count, 0, "{name} is not retried");
    }

    c.cleanup(node).await;
    agent.stop().await;
}

#[tokio::test]
async fn the_pod_user_flag_is_honoured_and_an_unreachable_work_root_is_refused_naming_the_flag() {
    if skip_unless_root("the_pod_user_flag_...") {
        return;
    }
    let node = "pod-user-3";
    let c = Cluster::start().await;
    // Inside a 0700 directory: nobody but root can pass.
    std::fs::set_permissions(c.dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let closed = c.dir.path().join("work");
    let config = c
        .agent_config(node)
        .with_pod_user(Some("65534:65534".into()))
        .with_pod_work_root(Some(closed.clone()));
    let err = drover_nodeagent::run(config, c.client.clone(), std::future::pending())
        .await
        .expect_err("the pod user cannot reach the work root");
    let message = err.to_string();
    assert!(
        message.contains("--pod-work-root")
            && message.contains(&c.dir.path().display().to_string()),
        "{message}"
    );

    let open = tempfile::tempdir_in("/tmp").expect("tempdir");
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let config = c
        .agent_config(node)
        .with_pod_user(Some("65534:65534".into()))
        .with_pod_work_root(Some(open.path().to_path_buf()));
    let agent = c.start_agent(config);
    let created = c
        .create_pod(sh_pod(
            "nobody",
            node,
            "id -u; id -g; pwd; echo ok > f && cat f",
            "Never",
        ))
        .await;
    let p = wait_succeeded(&c, "nobody").await;
    let work = open.path().join(node).join(&created.metadata.uid);
    assert_eq!(
        log(&c, node, &p, "main"),
        format!("65534\n65534\n{}\nok\n", work.display())
    );
    c.cleanup(node).await;
    agent.stop().await;
}
