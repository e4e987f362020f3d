//! Real Kubernetes manifests load unchanged, validate, and re-serialise (JSON and YAML) to the
//! same content.

use std::fmt::Debug;

use drover_api::Resource;
use drover_api::batch::Job;
use drover_api::coordination::Lease;
use drover_api::core::{Event, Node, Pod};
use drover_api::quantity::Quantity;
use drover_api::resource::find_kind_by_type;
use drover_api::scheduling::{PodGroup, PriorityClass};
use serde_json::Value;

fn read(name: &str) -> String {
    let path = format!("{}/tests/manifests/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Drops values that mean "unset" (false, "", {}, [], null), so that a manifest which spells
/// out a default compares equal to its re-serialised form, which leaves it out.
fn normalize(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, normalize(v)))
                .filter(|(_, v)| !is_unset(v))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        v => v,
    }
}

fn is_unset(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        Value::Number(_) => false,
    }
}

/// Loads a manifest, checks it is valid and registered, and that it survives JSON and YAML
/// round trips with nothing lost.
fn load<T: Resource + PartialEq + Debug>(name: &str) -> T {
    let text = read(name);
    let obj: T = yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    if let Err(e) = obj.validate() {
        panic!("{name} is invalid: {e}");
    }

    let raw: yaml_serde::Value = yaml_serde::from_str(&text).expect("yaml value");
    let expected = normalize(serde_json::to_value(&raw).expect("yaml to json"));
    let api_version = expected["apiVersion"].as_str().unwrap_or_default();
    let kind = expected["kind"].as_str().unwrap_or_default();
    assert_eq!(
        (api_version, kind),
        (T::api_version().as_str(), T::KIND),
        "{name}"
    );
    assert!(
        find_kind_by_type(api_version, kind).is_some(),
        "{name}: kind not registered"
    );
    let json = serde_json::to_value(&obj).expect("to json");
    assert_eq!(normalize(json.clone()), expected, "{name}: JSON differs");
    let back: T = serde_json::from_value(json).expect("from json");
    assert_eq!(back, obj, "{name}: JSON round trip");
    let yaml = yaml_serde::to_string(&obj).expect("to yaml");
    let back: T = yaml_serde::from_str(&yaml).expect("from yaml");
    assert_eq!(back, obj, "{name}: YAML round trip");

    let mut defaulted = obj.clone();
    defaulted.default_fields();
    if let Err(e) = defaulted.validate() {
        panic!("{name} is invalid after defaults: {e}");
    }
    obj
}

fn q(s: &str) -> Quantity {
    Quantity::parse(s).expect("quantity")
}

#[test]
fn kubernetes_job_from_the_docs() {
    let mut job: Job = load("job-pi.yaml");
    assert_eq!(job.spec.backoff_limit, Some(4));
    job.metadata.uid = "uid-1".into();
    job.default_fields();
    assert_eq!(job.spec.completions, Some(1));
    assert_eq!(job.spec.parallelism, Some(1));
    assert_eq!(job.spec.backoff_limit, Some(4));
    assert_eq!(job.spec.completion_mode.as_deref(), Some("NonIndexed"));
    assert_eq!(job.spec.suspend, Some(false));
    assert_eq!(job.spec.template.spec.restart_policy, "Never");
    assert_eq!(job.spec.template.spec.scheduler_name, "drover");
    let selector = job.spec.selector.clone().expect("generated selector");
    assert!(selector.matches(&job.spec.template.metadata.labels));
    assert!(job.validate().is_ok());
    assert!(!job.is_gang());
}

#[test]
fn indexed_gang_job_with_gpus() {
    let mut job: Job = load("job-indexed-gpu.yaml");
    assert!(job.is_gang() && job.is_indexed());
    assert_eq!(job.gang_min_member(), Some(4));
    let c = &job.spec.template.spec.containers[0];
    assert_eq!(c.resources.limits["nvidia.com/gpu"], q("8"));
    assert_eq!(c.resources.requests["memory"].to_string(), "256Gi");
    job.default_fields();
    assert_eq!(job.spec.backoff_limit, Some(2));
    assert_eq!(job.spec.template.spec.restart_policy, "OnFailure");
}

#[test]
fn pod_with_affinity_and_tolerations() {
    let pod: Pod = load("pod-affinity.yaml");
    assert_eq!(pod.pod_group(), Some("web-gang"));
    // Containers: 500m + 250m (limit only) = 750m CPU, 128Mi + 64Mi = 192Mi; the init
    // container's 2 CPU and 1Gi are larger.
    let r = pod.requests();
    assert_eq!(r["cpu"], q("2"));
    assert_eq!(r["memory"], q("1Gi"));
    let terms = pod
        .spec
        .affinity
        .as_ref()
        .and_then(|a| a.required_node_selector())
        .expect("required node affinity");
    let labels = [
        ("topology.kubernetes.io/zone", "antarctica-east1"),
        ("nvidia.com/gpu.count", "8"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert!(terms.matches(&labels, "n1"));
    assert!(!terms.matches(&Default::default(), "bad-node"));
    assert!(terms.matches(&Default::default(), "good-node"));
    assert!(!pod.is_terminal());
    let mut defaulted = pod.clone();
    defaulted.default_fields();
    assert_eq!(defaulted.status.phase, "Pending");
    assert_eq!(defaulted.spec.restart_policy, "Always");
    assert_eq!(defaulted.spec.termination_grace_period_seconds, Some(10));
}

#[test]
fn scheduler_plugins_pod_group() {
    let pg: PodGroup = load("podgroup.yaml");
    assert_eq!(pg.spec.min_member, 3);
    assert_eq!(pg.spec.schedule_timeout_seconds, Some(10));
    assert_eq!(pg.spec.min_resources["memory"], q("3Gi"));
}

#[test]
fn node_lease_priority_class_event() {
    let lease: Lease = load("lease.yaml");
    let renew = lease.spec.renew_time.expect("renew time");
    assert_eq!(
        lease.expires_at(),
        Some(renew + chrono::Duration::seconds(40))
    );
    assert!(!lease.is_expired(renew + chrono::Duration::seconds(39)));
    assert!(lease.is_expired(renew + chrono::Duration::seconds(40)));
    let json = serde_json::to_string(&lease).expect("json");
    assert!(
        json.contains("\"renewTime\":\"2024-05-01T12:00:00.123456Z\""),
        "{json}"
    );

    let node: Node = load("node.yaml");
    assert!(node.is_ready());
    assert_eq!(node.allocatable()["nvidia.com/gpu"], q("8"));
    assert_eq!(node.taints()[0].effect, "NoSchedule");
    assert_eq!(node.field("spec.unschedulable").as_deref(), Some("false"));

    let pc: PriorityClass = load("priorityclass.yaml");
    assert_eq!(pc.value, 1_000_000);

    let ev: Event = load("event.yaml");
    assert_eq!(ev.field("involvedObject.name").as_deref(), Some("pi-xyz"));
    assert_eq!(ev.field("type").as_deref(), Some("Normal"));
}

#[test]
fn every_kind_is_registered() {
    let kinds = drover_api::resource::all_kinds();
    let names: Vec<&str> = kinds.iter().map(|k| k.kind).collect();
    for k in [
        "Namespace",
        "Node",
        "Pod",
        "Event",
        "Job",
        "PodGroup",
        "PriorityClass",
        "Lease",
    ] {
        assert!(names.contains(&k), "{k} missing from {names:?}");
    }
    for (typed, kind) in [
        ("po", "Pod"),
        ("no", "Node"),
        ("ev", "Event"),
        ("jobs.batch", "Job"),
        ("pg", "PodGroup"),
        ("podgroups.scheduling.x-k8s.io", "PodGroup"),
        ("pc", "PriorityClass"),
        ("leases", "Lease"),
    ] {
        let found = drover_api::resource::find_kind(typed).map(|k| k.kind);
        assert_eq!(found, Some(kind), "{typed}");
    }
    assert!(find_kind_by_type("scheduling.x-k8s.io/v1alpha1", "PodGroup").is_some());
    assert!(find_kind_by_type("coordination.k8s.io/v1", "Lease").is_some());
    assert!(find_kind_by_type("v1", "Bogus").is_none());
}
