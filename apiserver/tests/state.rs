//! What the API keeps (issue 12): status in a create body, devices chosen by users, NUL
//! characters, annotation sizes, namespace names, selectors, Indexed Job bounds, priority
//! classes (the `Priority` admission plugin), and the bytes history may hold.

mod common;

use common::{Rest, node_json, pod_json, start, start_with};
use serde_json::{Value, json};

const PODS: &str = "/api/v1/namespaces/default/pods";
const JOBS: &str = "/apis/batch/v1/namespaces/default/jobs";
const CLASSES: &str = "/apis/scheduling.k8s.io/v1/priorityclasses";

/// Asserts a refusal: the code, the reason and (for field errors) a field the error names.
fn refused(r: &common::Reply, code: u16, reason: &str, field: Option<&str>) -> Value {
    let v = r.json();
    assert_eq!(r.code, code, "{v}");
    assert_eq!(v["reason"], reason, "{v}");
    if let Some(f) = field {
        let causes = v["details"]["causes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            causes.iter().any(|c| c["field"] == f),
            "no cause names {f}: {v}"
        );
    }
    v
}

async fn patch(rest: &Rest, path: &str, body: Value) -> common::Reply {
    rest.call(
        "PATCH",
        path,
        "application/merge-patch+json",
        serde_json::to_vec(&body).expect("json"),
    )
    .await
}

fn job(name: &str, spec: Value) -> Value {
    let mut j = json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox", "command": ["true"]}]}}}
    });
    if let (Some(s), Some(extra)) = (j["spec"].as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    j
}

#[tokio::test]
async fn status_in_a_create_body_is_dropped_for_kinds_the_system_reports() {
    let s = start().await;
    let rest = s.rest();
    let mut p = pod_json("default", "done");
    p["status"] = json!({"phase": "Succeeded", "reason": "Forged"});
    let r = rest.post_json(PODS, &p).await;
    assert_eq!(r.code, 201, "{}", r.json());
    // The forged status is gone; what the server sets on creation is there (phase, qosClass).
    let status = &r.json()["status"];
    assert_eq!(status["phase"], "Pending");
    assert!(status.get("reason").is_none(), "{status}");
    assert!(status["qosClass"].is_string(), "{status}");
    assert_eq!(status.as_object().map(|o| o.len()), Some(2), "{status}");

    let mut j = job("complete", json!({}));
    j["status"] = json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]});
    let r = rest.post_json(JOBS, &j).await;
    assert_eq!(r.code, 201, "{}", r.json());
    let stored = rest.get(&format!("{JOBS}/complete")).await.json();
    assert!(stored["status"].get("conditions").is_none(), "{stored}");
    assert!(stored["status"].get("succeeded").is_none(), "{stored}");

    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "fresh"},
        "status": {"phase": "Terminating"}});
    let r = rest.post_json("/api/v1/namespaces", &ns).await;
    assert_eq!(r.json()["status"]["phase"], "Active");

    // An agent registers its node with what it observed, as the kubelet does.
    let r = rest.post_json("/api/v1/nodes", &node_json("n1")).await;
    assert_eq!(r.json()["status"]["allocatable"]["cpu"], "8");
}

#[tokio::test]
async fn devices_are_set_only_through_the_binding_subresource() {
    let s = start().await;
    let rest = s.rest();
    let assignments =
        json!([{"container": "main", "resource": "nvidia.com/gpu", "ids": ["GPU-0"]}]);
    let mut p = pod_json("default", "preset");
    p["spec"]["nodeName"] = json!("n1");
    p["spec"]["deviceAssignments"] = assignments.clone();
    let r = rest.post_json(PODS, &p).await;
    let v = refused(&r, 422, "Invalid", Some("spec.deviceAssignments"));
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("binding"),
        "{v}"
    );
    assert_eq!(rest.get(&format!("{PODS}/preset")).await.code, 404);

    assert_eq!(
        rest.post_json(PODS, &pod_json("default", "plain"))
            .await
            .code,
        201
    );
    let r = patch(
        &rest,
        &format!("{PODS}/plain"),
        json!({"spec": {"deviceAssignments": assignments}}),
    )
    .await;
    refused(&r, 422, "Invalid", Some("spec.deviceAssignments"));

    let mut j = job("gpus", json!({}));
    j["spec"]["template"]["spec"]["deviceAssignments"] = assignments;
    let r = rest.post_json(JOBS, &j).await;
    refused(
        &r,
        422,
        "Invalid",
        Some("spec.template.spec.deviceAssignments"),
    );
}

/// A change to a valid pod.
type Edit = Box<dyn Fn(&mut Value)>;

#[tokio::test]
async fn nul_characters_are_refused_naming_the_field() {
    let s = start().await;
    let rest = s.rest();
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "command",
            Box::new(|p| p["spec"]["containers"][0]["command"][2] = json!("true\u{0}rm -rf /")),
            "spec.containers[0].command[2]",
        ),
        (
            "env value",
            Box::new(|p| {
                p["spec"]["containers"][0]["env"] = json!([{"name": "A", "value": "x\u{0}"}])
            }),
            "spec.containers[0].env[0].value",
        ),
        (
            "annotation",
            Box::new(|p| p["metadata"]["annotations"] = json!({"note": "\u{0}"})),
            "metadata.annotations[note]",
        ),
        (
            "finalizer",
            Box::new(|p| p["metadata"]["finalizers"] = json!(["example.com/f\u{0}"])),
            "metadata.finalizers[0]",
        ),
    ];
    for (name, edit, field) in cases {
        let mut p = pod_json("default", "nul");
        edit(&mut p);
        let r = rest.post_json(PODS, &p).await;
        assert_eq!(r.code, 422, "{name}: {}", r.json());
        refused(&r, 422, "Invalid", Some(field));
    }
    // A backslash-u text is not a NUL.
    let mut p = pod_json("default", "text");
    p["spec"]["containers"][0]["command"][2] = json!("echo \\u0000");
    assert_eq!(rest.post_json(PODS, &p).await.code, 201);
    // Updates pass the same check.
    let r = patch(
        &rest,
        &format!("{PODS}/text"),
        json!({"metadata": {"labels": {"a": "b"}, "annotations": {"x": "\u{0}"}}}),
    )
    .await;
    refused(&r, 422, "Invalid", Some("metadata.annotations[x]"));
}

#[tokio::test]
async fn small_input_rules_namespaces_selectors_annotations_and_indexed_jobs() {
    let s = start().await;
    let rest = s.rest();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}});
    refused(
        &rest.post_json("/api/v1/namespaces", &ns).await,
        422,
        "Invalid",
        Some("metadata.name"),
    );

    for sel in ["a%20notin%20()", "a%20in%20()"] {
        let r = rest.get(&format!("/api/v1/pods?labelSelector={sel}")).await;
        refused(&r, 400, "BadRequest", None);
    }

    let mut p = pod_json("default", "big");
    p["metadata"]["annotations"] = json!({"a": "x".repeat(200 << 10), "b": "y".repeat(100 << 10)});
    let v = refused(
        &rest.post_json(PODS, &p).await,
        422,
        "Invalid",
        Some("metadata.annotations"),
    );
    assert!(
        v["message"].as_str().unwrap_or_default().contains("262144"),
        "{v}"
    );
    assert_eq!(
        rest.post_json(PODS, &pod_json("default", "small"))
            .await
            .code,
        201
    );
    let r = patch(
        &rest,
        &format!("{PODS}/small"),
        json!({"metadata": {"annotations": {"a": "x".repeat(300 << 10)}}}),
    )
    .await;
    refused(&r, 422, "Invalid", Some("metadata.annotations"));

    let j = job(
        "huge",
        json!({"completionMode": "Indexed", "completions": 1_000_000, "parallelism": 10}),
    );
    refused(
        &rest.post_json(JOBS, &j).await,
        422,
        "Invalid",
        Some("spec.completions"),
    );
    let j = job(
        "wide",
        json!({"completionMode": "Indexed", "completions": 10, "parallelism": 1_000_000}),
    );
    refused(
        &rest.post_json(JOBS, &j).await,
        422,
        "Invalid",
        Some("spec.parallelism"),
    );
}

#[tokio::test]
async fn pods_get_their_priority_from_an_existing_class() {
    let s = start().await;
    let rest = s.rest();
    let with_class = |name: &str, class: &str| {
        let mut p = pod_json("default", name);
        p["spec"]["priorityClassName"] = json!(class);
        p
    };
    // No class of that name: refused, nothing stored.
    let v = refused(
        &rest.post_json(PODS, &with_class("ghost", "missing")).await,
        403,
        "Forbidden",
        None,
    );
    assert_eq!(v["message"], "no PriorityClass with name missing was found");
    assert_eq!(rest.get(&format!("{PODS}/ghost")).await.code, 404);

    // Built in.
    let r = rest
        .post_json(PODS, &with_class("critical", "system-node-critical"))
        .await;
    assert_eq!(r.code, 201, "{}", r.json());
    assert_eq!(r.json()["spec"]["priority"], 2_000_001_000);

    let class = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": "high"}, "value": 1000, "preemptionPolicy": "Never"});
    assert_eq!(rest.post_json(CLASSES, &class).await.code, 201);
    let r = rest.post_json(PODS, &with_class("hi", "high")).await;
    assert_eq!(r.code, 201, "{}", r.json());
    assert_eq!(r.json()["spec"]["priority"], 1000);
    assert_eq!(r.json()["spec"]["preemptionPolicy"], "Never");

    // A priority that disagrees with the class is refused; one that agrees is kept.
    let mut p = with_class("liar", "high");
    p["spec"]["priority"] = json!(5);
    refused(&rest.post_json(PODS, &p).await, 403, "Forbidden", None);
    let mut p = with_class("honest", "high");
    p["spec"]["priority"] = json!(1000);
    assert_eq!(rest.post_json(PODS, &p).await.code, 201);

    // Without a default class, a pod naming none keeps no priority (0); with one, it gets it.
    let r = rest.post_json(PODS, &pod_json("default", "plain")).await;
    assert!(r.json()["spec"].get("priority").is_none(), "{}", r.json());
    let default = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": "normal"}, "value": 10, "globalDefault": true});
    assert_eq!(rest.post_json(CLASSES, &default).await.code, 201);
    let r = rest
        .post_json(PODS, &pod_json("default", "defaulted"))
        .await;
    assert_eq!(r.json()["spec"]["priority"], 10);
    assert_eq!(r.json()["spec"]["priorityClassName"], "normal");

    // PodGroups name classes too.
    let pg = json!({"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
        "metadata": {"name": "g"}, "spec": {"minMember": 1, "priorityClassName": "missing"}});
    let r = rest
        .post_json(
            "/apis/scheduling.x-k8s.io/v1alpha1/namespaces/default/podgroups",
            &pg,
        )
        .await;
    refused(&r, 403, "Forbidden", None);
}

#[tokio::test]
async fn history_stays_bounded_in_memory_and_on_disk() {
    const RETAIN: u64 = 8 << 20;
    const WINDOW: usize = 4 << 20;
    let s = start_with(|mut c| {
        c.watch_history_bytes = WINDOW;
        c.compaction_retain_bytes = RETAIN;
        c
    })
    .await;
    let rest = s.rest();
    let store = s.dir.path().join("store.redb");
    assert_eq!(
        rest.post_json(PODS, &pod_json("default", "noisy"))
            .await
            .code,
        201
    );
    let write = async |i: usize| {
        let note = format!("{i:06}{}", "n".repeat(200 << 10));
        let r = patch(
            &rest,
            &format!("{PODS}/noisy"),
            json!({"metadata": {"annotations": {"note": note}}}),
        )
        .await;
        assert_eq!(r.code, 200, "{}", String::from_utf8_lossy(&r.body));
    };
    for i in 0..40 {
        write(i).await;
    }
    let settled = std::fs::metadata(&store).expect("store file").len();
    for i in 40..200 {
        write(i).await;
        assert!(s.server.service.cache().history_bytes() <= WINDOW);
    }
    let after = std::fs::metadata(&store).expect("store file").len();
    // 160 more patches put ~64 MiB through the log; the file reuses what compaction freed.
    assert!(
        after <= settled + (8 << 20),
        "the store file grew from {settled} to {after} bytes"
    );
    assert!(after < 48 << 20, "the store file holds {after} bytes");
    // A watch from the first versions is told to relist, as after any compaction.
    let r = rest
        .get(&format!("{PODS}?watch=true&resourceVersion=2"))
        .await;
    let body = String::from_utf8_lossy(&r.body);
    assert!(
        r.code == 410 || body.contains("Expired"),
        "{} {body}",
        r.code
    );
}
