//! Invalid objects are refused with the field paths at fault; unknown fields and garbled values
//! are refused when decoding; updates may change only what Kubernetes lets change.

use drover_api::FieldErrors;
use drover_api::Resource;
use drover_api::batch::Job;
use drover_api::coordination::Lease;
use drover_api::core::{Binding, DeviceAssignment, Namespace, Node, Pod};
use drover_api::scheduling::{PodGroup, PriorityClass};

/// A valid pod; each case appends to or replaces part of it.
const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default}\n";
const CONTAINER: &str = "spec:\n  containers:\n  - name: main\n    image: busybox\n";

/// A field of the first required node selector term.
macro_rules! term {
    ($field:literal) => {
        concat!(
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]",
            $field
        )
    };
}

fn errors<T: Resource>(yaml: &str) -> Vec<String> {
    let obj: T = yaml_serde::from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    fields(obj.validate())
}

fn fields(r: Result<(), FieldErrors>) -> Vec<String> {
    match r {
        Ok(()) => Vec::new(),
        Err(e) => {
            for f in &e.0 {
                assert!(!f.message.is_empty(), "{f:?} has no message");
            }
            e.0.into_iter().map(|f| f.field).collect()
        }
    }
}

#[test]
fn invalid_pods_name_the_field() {
    let with = |extra: &str| format!("{POD}{CONTAINER}{extra}");
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        ("valid", with(""), vec![]),
        (
            "no containers",
            format!("{POD}spec: {{containers: []}}\n"),
            vec!["spec.containers"],
        ),
        (
            "bad name",
            "kind: Pod\nmetadata: {name: Bad_Name}\nspec: {containers: [{name: a, image: x}]}"
                .into(),
            vec!["metadata.name"],
        ),
        (
            "bad label",
            "kind: Pod\nmetadata: {name: p, labels: {'bad key!': x, ok: 'bad value!'}}\nspec: {containers: [{name: a, image: x}]}".into(),
            vec!["metadata.labels[bad key!]", "metadata.labels[ok]"],
        ),
        (
            "bad container names",
            format!("{POD}spec:\n  containers:\n  - {{name: Main, image: x}}\n  - {{name: a, image: x}}\n  - {{name: a, image: x}}\n"),
            vec!["spec.containers[0].name", "spec.containers[2].name"],
        ),
        (
            "no image and no command",
            format!("{POD}spec: {{containers: [{{name: a}}]}}\n"),
            vec!["spec.containers[0].image"],
        ),
        (
            "empty env name",
            format!("{POD}spec: {{containers: [{{name: a, image: x, env: [{{name: '', value: v}}]}}]}}\n"),
            vec!["spec.containers[0].env[0].name"],
        ),
        (
            "fractional gpu",
            format!("{POD}spec: {{containers: [{{name: a, image: x, resources: {{limits: {{nvidia.com/gpu: 0.5}}}}}}]}}\n"),
            vec!["spec.containers[0].resources.limits[nvidia.com/gpu]"],
        ),
        (
            "negative cpu",
            format!("{POD}spec: {{containers: [{{name: a, image: x, resources: {{requests: {{cpu: '-1'}}}}}}]}}\n"),
            vec!["spec.containers[0].resources.requests[cpu]"],
        ),
        (
            "gpu request without limit",
            format!("{POD}spec: {{containers: [{{name: a, image: x, resources: {{requests: {{nvidia.com/gpu: 1}}}}}}]}}\n"),
            vec!["spec.containers[0].resources.limits[nvidia.com/gpu]"],
        ),
        (
            "gpu request below limit",
            format!("{POD}spec: {{containers: [{{name: a, image: x, resources: {{requests: {{nvidia.com/gpu: 1}}, limits: {{nvidia.com/gpu: 2}}}}}}]}}\n"),
            vec!["spec.containers[0].resources.requests[nvidia.com/gpu]"],
        ),
        (
            "cpu request above limit",
            format!("{POD}spec: {{containers: [{{name: a, image: x, resources: {{requests: {{cpu: 2}}, limits: {{cpu: 1}}}}}}]}}\n"),
            vec!["spec.containers[0].resources.requests[cpu]"],
        ),
        (
            "unknown resource name",
            format!("{POD}spec: {{containers: [{{name: a, image: x, resources: {{limits: {{gpu: 1}}}}}}]}}\n"),
            vec!["spec.containers[0].resources.limits[gpu]"],
        ),
        (
            "enums",
            with("  restartPolicy: Sometimes\n  preemptionPolicy: Always\nstatus: {phase: Done}\n"),
            vec!["spec.preemptionPolicy", "spec.restartPolicy", "status.phase"],
        ),
        (
            "priority too high",
            with("  priority: 2100000000\n"),
            vec!["spec.priority"],
        ),
        (
            "tolerations",
            with("  tolerations:\n  - {key: a, operator: Exists, value: x}\n  - {operator: Equal, value: x}\n  - {key: b, operator: Maybe}\n  - {key: c, effect: NoSchedule, tolerationSeconds: 5}\n  - {key: d, value: e, effect: Sometimes}\n"),
            vec![
                "spec.tolerations[0].value",
                "spec.tolerations[1].operator",
                "spec.tolerations[2].operator",
                "spec.tolerations[3].effect",
                "spec.tolerations[4].effect",
            ],
        ),
        (
            "node affinity operators",
            with("  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchExpressions:\n          - {key: a, operator: In}\n          - {key: b, operator: Exists, values: [x]}\n          - {key: c, operator: Gt, values: [abc]}\n          - {key: d, operator: Lt, values: ['1', '2']}\n          - {key: e, operator: Near, values: [x]}\n          matchFields:\n          - {key: metadata.labels, operator: In, values: [x]}\n      preferredDuringSchedulingIgnoredDuringExecution:\n      - weight: 0\n        preference: {matchExpressions: [{key: f, operator: Exists}]}\n"),
            vec![
                term!(".matchExpressions[0].values"),
                term!(".matchExpressions[1].values"),
                term!(".matchExpressions[2].values"),
                term!(".matchExpressions[3].values"),
                term!(".matchExpressions[4].operator"),
                term!(".matchFields[0].key"),
                "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight",
            ],
        ),
        (
            "empty required node affinity",
            with("  affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: []}}}\n"),
            vec!["spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms"],
        ),
        (
            "pod anti-affinity without topology key",
            with("  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - labelSelector: {matchExpressions: [{key: app, operator: NotIn}]}\n"),
            vec![
                "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey",
                "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].labelSelector.matchExpressions[0].values",
            ],
        ),
        (
            "node selector",
            with("  nodeSelector: {disk: 'fast ssd'}\n"),
            vec!["spec.nodeSelector[disk]"],
        ),
        (
            "topology spread",
            with("  topologySpreadConstraints:\n  - {maxSkew: 0, topologyKey: '', whenUnsatisfiable: ScheduleAnyway, minDomains: 2}\n"),
            vec![
                "spec.topologySpreadConstraints[0].maxSkew",
                "spec.topologySpreadConstraints[0].topologyKey",
                "spec.topologySpreadConstraints[0].minDomains",
            ],
        ),
        (
            "volume mount of a missing volume",
            format!("{POD}spec: {{containers: [{{name: a, image: x, volumeMounts: [{{name: data, mountPath: /d}}]}}]}}\n"),
            vec!["spec.containers[0].volumeMounts[0].name"],
        ),
        (
            "device assignment for a missing container",
            with("  deviceAssignments: [{container: other, resource: nvidia.com/gpu, ids: [GPU-0]}]\n"),
            vec![
                "spec.deviceAssignments",
                "spec.deviceAssignments[0].container",
            ],
        ),
        (
            "devices chosen by the creator (only pods/binding sets them)",
            with("  deviceAssignments: [{container: main, resource: nvidia.com/gpu, ids: [GPU-0]}]\n"),
            vec!["spec.deviceAssignments"],
        ),
        (
            "annotations over 256 KiB in all",
            format!(
                "kind: Pod\nmetadata: {{name: p, annotations: {{a: {a}, b: {a}}}}}\n{CONTAINER}",
                a = "x".repeat(130 * 1024)
            ),
            vec!["metadata.annotations"],
        ),
        (
            "label value over 63 characters",
            format!(
                "kind: Pod\nmetadata: {{name: p, labels: {{a: {}}}}}\n{CONTAINER}",
                "x".repeat(64)
            ),
            vec!["metadata.labels[a]"],
        ),
        (
            "ports",
            format!("{POD}spec: {{containers: [{{name: a, image: x, ports: [{{containerPort: 0, protocol: HTTP}}]}}]}}\n"),
            vec!["spec.containers[0].ports[0].containerPort", "spec.containers[0].ports[0].protocol"],
        ),
    ];
    for (name, yaml, want) in cases {
        let mut got = errors::<Pod>(&yaml);
        got.sort();
        let mut want: Vec<String> = want.into_iter().map(String::from).collect();
        want.sort();
        assert_eq!(got, want, "case {name:?}");
    }
}

#[test]
fn invalid_jobs_and_other_kinds_name_the_field() {
    let job = |spec: &str| {
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: j, namespace: default}}\nspec:\n{spec}  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: a, image: x}}]\n"
        )
    };
    let cases: Vec<(&str, Vec<String>, Vec<&str>)> = vec![
        ("valid job", errors::<Job>(&job("")), vec![]),
        (
            "restartPolicy Always",
            errors::<Job>(&job("").replace("restartPolicy: Never", "restartPolicy: Always")),
            vec!["spec.template.spec.restartPolicy"],
        ),
        (
            "restartPolicy unset",
            errors::<Job>(&job("").replace("restartPolicy: Never", "")),
            vec!["spec.template.spec.restartPolicy"],
        ),
        (
            "negative counts",
            errors::<Job>(&job(
                "  parallelism: -1\n  completions: -2\n  backoffLimit: -3\n  activeDeadlineSeconds: 0\n",
            )),
            vec![
                "spec.activeDeadlineSeconds",
                "spec.backoffLimit",
                "spec.completions",
                "spec.parallelism",
            ],
        ),
        (
            "indexed without completions",
            errors::<Job>(&job("  completionMode: Indexed\n")),
            vec!["spec.completions"],
        ),
        (
            "indexed with more completions and parallelism than Kubernetes allows",
            errors::<Job>(&job(
                "  completionMode: Indexed\n  completions: 1000000\n  parallelism: 100001\n",
            )),
            vec!["spec.completions", "spec.parallelism"],
        ),
        (
            "indexed at the bound",
            errors::<Job>(&job(
                "  completionMode: Indexed\n  completions: 100000\n  parallelism: 100000\n",
            )),
            vec![],
        ),
        (
            "template with devices",
            errors::<Job>(&job("").replace(
                "restartPolicy: Never\n",
                "restartPolicy: Never\n      deviceAssignments: [{container: a, resource: nvidia.com/gpu, ids: [GPU-0]}]\n",
            )),
            vec!["spec.template.spec.deviceAssignments"],
        ),
        (
            "namespace with a dot",
            errors::<Namespace>("apiVersion: v1\nkind: Namespace\nmetadata: {name: a.b}\n"),
            vec!["metadata.name"],
        ),
        (
            "namespace of 64 characters",
            errors::<Namespace>(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {}}}\n",
                "a".repeat(64)
            )),
            vec!["metadata.name"],
        ),
        (
            "unknown completion mode",
            errors::<Job>(&job("  completionMode: Sorted\n")),
            vec!["spec.completionMode"],
        ),
        (
            "selector that does not match the template",
            errors::<Job>(&job("  selector: {matchLabels: {app: x}}\n")),
            vec!["spec.template.metadata.labels"],
        ),
        (
            "gang",
            errors::<Job>(&job(
                "  parallelism: 2\n  gang: {minMember: 3, scheduleTimeoutSeconds: 0, topologyMode: Sometimes, masterPort: 70000}\n",
            )),
            vec![
                "spec.gang.masterPort",
                "spec.gang.minMember",
                "spec.gang.scheduleTimeoutSeconds",
                "spec.gang.topologyKey",
                "spec.gang.topologyMode",
            ],
        ),
        (
            "template container",
            errors::<Job>(&job("").replace("{name: a, image: x}", "{name: a}")),
            vec!["spec.template.spec.containers[0].image"],
        ),
        (
            "pod group",
            errors::<PodGroup>(
                "apiVersion: scheduling.x-k8s.io/v1alpha1\nkind: PodGroup\nmetadata: {name: g}\nspec: {minMember: 0, scheduleTimeoutSeconds: -1, minResources: {nvidia.com/gpu: 1.5}, topology: {key: rack, mode: Loose}}\n",
            ),
            vec![
                "spec.minMember",
                "spec.minResources[nvidia.com/gpu]",
                "spec.scheduleTimeoutSeconds",
                "spec.topology.mode",
            ],
        ),
        (
            "lease",
            errors::<Lease>(
                "kind: Lease\nmetadata: {name: l}\nspec: {leaseDurationSeconds: 0, leaseTransitions: -1}\n",
            ),
            vec!["spec.leaseDurationSeconds", "spec.leaseTransitions"],
        ),
        (
            "priority class",
            errors::<PriorityClass>(
                "kind: PriorityClass\nmetadata: {name: huge}\nvalue: 2000000000\npreemptionPolicy: Sometimes\n",
            ),
            vec!["preemptionPolicy", "value"],
        ),
        (
            "system priority class",
            errors::<PriorityClass>(
                "kind: PriorityClass\nmetadata: {name: system-critical}\nvalue: 2000000000\n",
            ),
            vec![],
        ),
        (
            "node taints",
            errors::<Node>(
                "kind: Node\nmetadata: {name: n}\nspec: {taints: [{key: a, effect: NoSchedule}, {key: a, effect: NoSchedule}, {key: b, effect: Never}]}\nstatus: {capacity: {cpu: '-4'}}\n",
            ),
            vec![
                "spec.taints[1]",
                "spec.taints[2].effect",
                "status.capacity[cpu]",
            ],
        ),
    ];
    for (name, got, want) in cases {
        let mut got = got;
        got.sort();
        let mut want: Vec<String> = want.into_iter().map(String::from).collect();
        want.sort();
        assert_eq!(got, want, "case {name:?}");
    }
}

#[test]
fn decoding_refuses_unknown_fields_and_garbled_values() {
    let cases = [
        (
            "unknown container field",
            format!("{POD}spec: {{containers: [{{name: a, image: x, imagee: y}}]}}\n"),
            "unknown field `imagee`",
        ),
        (
            "unknown top-level field",
            format!("{POD}{CONTAINER}spex: {{}}\n"),
            "unknown field `spex`",
        ),
        (
            "unknown metadata field",
            "kind: Pod\nmetadata: {name: p, lables: {a: b}}\n".to_string(),
            "unknown field `lables`",
        ),
        (
            "garbled quantity",
            format!(
                "{POD}spec: {{containers: [{{name: a, image: x, resources: {{limits: {{memory: 4GB}}}}}}]}}\n"
            ),
            "expected a number with an optional suffix",
        ),
        (
            "wrong type",
            format!("{POD}spec: {{containers: [{{name: a, image: x}}], priority: high}}\n"),
            "invalid type",
        ),
        ("malformed yaml", "kind: Pod\nmetadata: [\n".to_string(), ""),
    ];
    for (name, yaml, want) in cases {
        let err = yaml_serde::from_str::<Pod>(&yaml).expect_err(name);
        assert!(err.to_string().contains(want), "{name}: {err}");
    }
    let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"a","image":"x","resources":{"requests":{"cpu":"1.2.3"}}}]}}"#;
    let err = serde_json::from_str::<Pod>(json).expect_err("garbled");
    assert!(
        err.to_string().contains("invalid quantity \"1.2.3\""),
        "{err}"
    );
    assert!(serde_json::from_str::<Pod>("{\"kind\": \"Pod\",").is_err());
}

fn pod() -> Pod {
    let mut p: Pod = yaml_serde::from_str(&format!("{POD}{CONTAINER}")).expect("pod");
    p.default_fields();
    p
}

#[test]
fn pod_updates_change_only_mutable_fields() {
    let old = pod();
    let mut new = old.clone();
    new.spec.containers[0].image = "busybox:2".into();
    new.spec.active_deadline_seconds = Some(60);
    new.spec.tolerations.push(Default::default());
    new.spec.tolerations[0].operator = "Exists".into();
    new.metadata.labels.insert("a".into(), "b".into());
    assert_eq!(fields(new.validate_update(&old)), Vec::<String>::new());

    let mut bound = old.clone();
    bound.spec.node_name = "node-1".into();
    assert_eq!(fields(bound.validate_update(&old)), ["spec.nodeName"]);

    let mut changed = old.clone();
    changed.spec.containers[0].command = vec!["sh".into()];
    assert_eq!(fields(changed.validate_update(&old)), ["spec"]);

    let mut with_deadline = old.clone();
    with_deadline.spec.active_deadline_seconds = Some(60);
    let mut longer = with_deadline.clone();
    longer.spec.active_deadline_seconds = Some(120);
    assert_eq!(
        fields(longer.validate_update(&with_deadline)),
        ["spec.activeDeadlineSeconds"]
    );
}

#[test]
fn binding_sets_node_and_devices_once() {
    let mut p = pod();
    let devices = vec![DeviceAssignment {
        container: "main".into(),
        resource: "nvidia.com/gpu".into(),
        ids: vec!["GPU-0".into(), "GPU-1".into()],
        share_milli: None,
    }];
    let b = Binding::new("default", "p", "node-1", devices.clone());
    b.apply_to(&mut p).expect("bind");
    assert_eq!(p.spec.node_name, "node-1");
    assert_eq!(p.spec.device_assignments, devices);
    assert_eq!(fields(b.apply_to(&mut p)), ["spec.nodeName"]);

    let mut q = pod();
    let no_target = Binding::new("default", "p", "", vec![]);
    assert_eq!(fields(no_target.apply_to(&mut q)), ["target.name"]);
    let dup = Binding::new(
        "default",
        "p",
        "node-1",
        vec![DeviceAssignment {
            container: "ghost".into(),
            resource: "nvidia.com/gpu".into(),
            ids: vec!["GPU-0".into(), "GPU-0".into()],
            share_milli: None,
        }],
    );
    assert_eq!(
        fields(dup.apply_to(&mut q)),
        [
            "spec.deviceAssignments[0].container",
            "spec.deviceAssignments[0].ids[1]"
        ]
    );
    assert!(!q.is_bound(), "a refused binding leaves the pod unbound");
    let json = serde_json::to_string(&b).expect("json");
    let back: Binding = serde_json::from_str(&json).expect("binding");
    assert_eq!(back, b);
}

#[test]
fn job_template_is_fixed_unless_suspended() {
    let yaml = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j, namespace: default, uid: u1}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: a, image: x}]\n";
    let mut old: Job = yaml_serde::from_str(yaml).expect("job");
    old.default_fields();
    let mut new = old.clone();
    new.spec.parallelism = Some(3);
    assert_eq!(fields(new.validate_update(&old)), Vec::<String>::new());
    new.spec.template.spec.containers[0].image = "y".into();
    assert_eq!(fields(new.validate_update(&old)), ["spec.template"]);
    new.spec.completions = Some(5);
    assert_eq!(
        fields(new.validate_update(&old)),
        ["spec.completions", "spec.template"]
    );

    let mut suspended = old.clone();
    suspended.spec.suspend = Some(true);
    let mut edited = suspended.clone();
    edited.spec.template.spec.containers[0].image = "y".into();
    assert_eq!(
        fields(edited.validate_update(&suspended)),
        Vec::<String>::new()
    );
}

#[test]
fn nul_characters_are_found_in_every_string_with_their_path() {
    let pod = serde_json::json!({
        "metadata": {"name": "p", "annotations": {"note": "a\0b"}, "finalizers": ["x\0"]},
        "spec": {"containers": [{
            "name": "main",
            "command": ["sh", "-c\0"],
            "env": [{"name": "A", "value": "\0"}],
        }]},
    });
    let mut got = fields(drover_api::validation::nul_errors(&pod).into_result());
    got.sort();
    assert_eq!(
        got,
        [
            "metadata.annotations[note]",
            "metadata.finalizers[0]",
            "spec.containers[0].command[1]",
            "spec.containers[0].env[0].value",
        ]
    );
    let clean = serde_json::json!({"spec": {"containers": [{"command": ["\\u0000 is text"]}]}});
    assert!(drover_api::validation::nul_errors(&clean).0.is_empty());
}
