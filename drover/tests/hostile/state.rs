//! What the API keeps, probed against the real `drover up` (see [`super`]): status in a create
//! body, user-chosen devices, sizes and names, selectors, priority classes, Indexed bounds. The
//! probes go through the typed client straight to the server (`drover apply` would refuse some
//! of them itself, and the server must not rely on that).

use std::time::Duration;

use drover_api::batch::Job;
use drover_api::core::{Container, DeviceAssignment, Namespace, Pod, PodSpec};
use drover_api::meta::Condition;
use drover_client::{Client, ClientConfig, ClientError, ListParams};

use super::common::{World, wait_for};

/// `drover up` in a fresh world, and a client of its API server.
fn up() -> (World, Client, tokio::runtime::Runtime) {
    up_with(&[])
}

/// `drover up EXTRA...` in a fresh world, and a client of its API server.
pub(super) fn up_with(extra: &[&str]) -> (World, Client, tokio::runtime::Runtime) {
    let mut w = World::new();
    let data = w.path().join("data");
    let config = w.config();
    let (data_s, config_s) = (
        data.to_str().expect("utf-8 path").to_string(),
        config.to_str().expect("utf-8 path").to_string(),
    );
    let mut args = vec![
        "up",
        "--data-dir",
        &data_s,
        "--listen",
        "127.0.0.1:0",
        "--write-config",
        &config_s,
    ];
    args.extend_from_slice(extra);
    w.spawn("up", &args);
    w.track_state_dir(data.join("agent"));
    w.wait_config(Duration::from_secs(60));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cfg = ClientConfig::load(&config).expect("client config");
    let client = rt.block_on(async { Client::new(&cfg) }).expect("client");
    (w, client, rt)
}

pub(super) fn pod(name: &str) -> Pod {
    Pod::new(
        "default",
        name,
        PodSpec {
            restart_policy: "Never".into(),
            containers: vec![Container {
                name: "main".into(),
                command: vec!["sleep".into(), "600".into()],
                ..Default::default()
            }],
            ..Default::default()
        },
    )
}

fn job(name: &str) -> Job {
    let mut j: Job = serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "default"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "command": ["true"]}]}}}
    }))
    .expect("job");
    j.metadata.namespace = "default".into();
    j
}

/// The refusal's text (reason, code, message naming the fields), or a panic when it was accepted.
fn refusal<T: std::fmt::Debug>(what: &str, r: Result<T, ClientError>) -> String {
    match r {
        Ok(v) => panic!("{what}: accepted: {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn status_in_a_create_body_is_not_kept() {
    let (_w, client, rt) = up();
    rt.block_on(async {
        let jobs = client.namespaced::<Job>("default");
        let mut j = job("forged");
        j.status.succeeded = 1;
        j.status.conditions = vec![Condition {
            type_: "Complete".into(),
            status: "True".into(),
            ..Default::default()
        }];
        let created = jobs.create(&j).await.expect("create job");
        assert!(created.status.conditions.is_empty(), "{:?}", created.status);

        // Forged Succeeded: the pod is Pending (it sleeps, so it can never succeed here).
        let mut p = pod("forged");
        p.status.phase = "Succeeded".into();
        let created = client
            .namespaced::<Pod>("default")
            .create(&p)
            .await
            .expect("create pod");
        assert_eq!(created.status.phase, "Pending");
    });
    // And the Job really runs: its pod runs `true` and the Job completes.
    wait_for(
        Duration::from_secs(60),
        "the Job created Complete to run",
        || {
            let j = rt
                .block_on(client.namespaced::<Job>("default").get("forged"))
                .ok()?;
            (j.status.succeeded == 1 && j.is_finished()).then_some(())
        },
    );
}

#[test]
fn hostile_objects_are_refused_naming_the_field() {
    let (_w, client, rt) = up();
    rt.block_on(async {
        let pods = client.namespaced::<Pod>("default");

        let mut p = pod("preset");
        p.spec.device_assignments = vec![DeviceAssignment {
            container: "main".into(),
            resource: "nvidia.com/gpu".into(),
            ids: vec!["GPU-0".into()],
            share_milli: None,
        }];
        let e = refusal("preset deviceAssignments", pods.create(&p).await);
        assert!(
            e.contains("spec.deviceAssignments") && e.contains("binding"),
            "{e}"
        );

        let mut p = pod("annotated");
        p.metadata
            .annotations
            .insert("note".into(), "x".repeat(300 << 10));
        let e = refusal("a 300 KiB annotation", pods.create(&p).await);
        assert!(
            e.contains("metadata.annotations") && e.contains("262144"),
            "{e}"
        );

        let mut p = pod("nul");
        p.spec.containers[0].command = vec!["sh".into(), "-c".into(), "true\0rm".into()];
        let e = refusal("NUL in a command", pods.create(&p).await);
        assert!(e.contains("spec.containers[0].command[2]"), "{e}");

        let e = refusal(
            "namespace a.b",
            client
                .all::<Namespace>()
                .create(&Namespace::new("a.b"))
                .await,
        );
        assert!(e.contains("metadata.name"), "{e}");

        let e = refusal(
            "a notin ()",
            pods.list(&ListParams::default().labels("a notin ()")).await,
        );
        assert!(e.contains("empty"), "{e}");

        let mut p = pod("classless");
        p.spec.priority_class_name = "missing".into();
        let e = refusal("a missing priority class", pods.create(&p).await);
        assert!(
            e.contains("Forbidden") && e.contains("no PriorityClass with name missing was found"),
            "{e}"
        );

        let mut j = job("huge");
        j.spec.completion_mode = Some("Indexed".into());
        j.spec.completions = Some(1_000_000);
        let e = refusal(
            "Indexed completions 1000000",
            client.namespaced::<Job>("default").create(&j).await,
        );
        assert!(
            e.contains("spec.completions") && e.contains("100000"),
            "{e}"
        );

        // Nothing was stored by any of them.
        let names: Vec<String> = pods
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .into_iter()
            .map(|p| p.metadata.name)
            .collect();
        assert!(names.is_empty(), "{names:?}");
    });
}
