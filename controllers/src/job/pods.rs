//! The pods a Job creates: the template, plus ownership, the Job's labels, the completion index
//! and, for gangs, the distributed-training environment.
//!
//! ## `MASTER_ADDR` for gangs
//!
//! A process's environment cannot change once it starts, and rank 0's node is known only after
//! the scheduler binds it. Every gang pod therefore carries the annotation
//! [`MASTER_POD_ANNOTATION`] naming the rank-0 pod, and `MASTER_ADDR` is a downward-API
//! reference to the annotation [`MASTER_ADDR_ANNOTATION`]
//! (`valueFrom.fieldRef.fieldPath: metadata.annotations['drover.dev/master-addr']`). The job
//! controller fills that annotation on every member as soon as rank 0 is bound (the address of
//! rank 0's node: its `InternalIP`, else its `Hostname`, else the node name). A node agent
//! resolves `MASTER_ADDR` when it starts the process: from the annotation if set, else from the
//! node of the pod named by [`MASTER_POD_ANNOTATION`] (see [`node_address`]), waiting until
//! that pod is bound. A one-pod gang gets `127.0.0.1`.
//!
//! Ranks follow the completion index (rank = index); the scheduler places a gang's pods in
//! index order along its topology, so that neighbours in rank are neighbours in topology.

use drover_api::Resource;
use drover_api::batch::{CONTROLLER_UID_LABEL, DEFAULT_MASTER_PORT, JOB_NAME_LABEL, Job};
use drover_api::core::{EnvVar, EnvVarSource, Node, ObjectFieldSelector, Pod};
use drover_api::meta::{ObjectMeta, OwnerReference};
use drover_api::scheduling::POD_GROUP_LABEL;

/// The completion index of an Indexed Job's pod (annotation and label, as Kubernetes).
pub const COMPLETION_INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";
/// The environment variable carrying the completion index.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// Names the rank-0 pod of a gang on every member.
pub const MASTER_POD_ANNOTATION: &str = "drover.dev/master-pod";
/// The address of the rank-0 pod's node, once it is bound.
pub const MASTER_ADDR_ANNOTATION: &str = "drover.dev/master-addr";
/// Which attempt of a gang a pod belongs to (the Job's `status.failed` when it was created).
pub const GANG_ATTEMPT_LABEL: &str = "drover.dev/gang-attempt";
/// Annotation set on a pod once its end has been counted in its Job's status.
pub const COUNTED_ANNOTATION: &str = "drover.dev/job-counted";

/// The address other pods reach `node` at: `InternalIP`, else `Hostname`, else its name.
pub fn node_address(node: &Node) -> &str {
    let find = |t: &str| {
        node.status
            .addresses
            .iter()
            .find(|a| a.type_ == t)
            .map(|a| a.address.as_str())
    };
    find("InternalIP")
        .or_else(|| find("Hostname"))
        .unwrap_or(&node.metadata.name)
}

/// The controller owner reference to `job`.
pub fn owner_ref(job: &Job) -> OwnerReference {
    OwnerReference {
        api_version: Job::api_version(),
        kind: Job::KIND.into(),
        name: job.metadata.name.clone(),
        uid: job.metadata.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Where a gang pod sits in the gang.
#[derive(Clone, Debug)]
pub struct GangSlot {
    pub group: String,
    pub world_size: i32,
    pub attempt: i32,
    pub master_port: i32,
}

/// The pod for `index` (`None` for a NonIndexed Job's pod).
pub fn build_pod(job: &Job, index: Option<i32>, gang: Option<&GangSlot>) -> Pod {
    let t = &job.spec.template;
    let name = &job.metadata.name;
    let mut meta = ObjectMeta {
        generate_name: match index {
            Some(i) => format!("{name}-{i}-"),
            None => format!("{name}-"),
        },
        namespace: job.metadata.namespace.clone(),
        labels: t.metadata.labels.clone(),
        annotations: t.metadata.annotations.clone(),
        owner_references: vec![owner_ref(job)],
        ..Default::default()
    };
    meta.labels
        .insert(CONTROLLER_UID_LABEL.into(), job.metadata.uid.clone());
    meta.labels.insert(JOB_NAME_LABEL.into(), name.clone());
    let mut env = Vec::new();
    if let Some(i) = index {
        meta.labels
            .insert(COMPLETION_INDEX_KEY.into(), i.to_string());
        meta.annotations
            .insert(COMPLETION_INDEX_KEY.into(), i.to_string());
        env.push(plain(COMPLETION_INDEX_ENV, i.to_string()));
    }
    if let Some(g) = gang {
        let rank = index.unwrap_or(0);
        meta.labels.insert(POD_GROUP_LABEL.into(), g.group.clone());
        meta.labels
            .insert(GANG_ATTEMPT_LABEL.into(), g.attempt.to_string());
        env.push(plain("RANK", rank.to_string()));
        env.push(plain("WORLD_SIZE", g.world_size.to_string()));
        env.push(plain("LOCAL_RANK", "0".into()));
        env.push(plain("LOCAL_WORLD_SIZE", "1".into()));
        env.push(plain("NODE_RANK", rank.to_string()));
        env.push(plain("MASTER_PORT", g.master_port.to_string()));
        if g.world_size <= 1 {
            env.push(plain("MASTER_ADDR", "127.0.0.1".into()));
        } else {
            env.push(EnvVar {
                name: "MASTER_ADDR".into(),
                value: String::new(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: "v1".into(),
                        field_path: format!("metadata.annotations['{MASTER_ADDR_ANNOTATION}']"),
                    }),
                    ..Default::default()
                }),
            });
        }
    }
    let mut spec = t.spec.clone();
    for c in &mut spec.containers {
        c.env.retain(|e| !env.iter().any(|n| n.name == e.name));
        c.env.extend(env.iter().cloned());
    }
    let mut pod = Pod {
        metadata: meta,
        spec,
        ..Default::default()
    };
    pod.set_type_meta();
    pod
}

/// Sets [`MASTER_POD_ANNOTATION`] once the rank-0 pod's name is known (it is generated).
pub fn set_master_pod(pod: &mut Pod, master: &str) {
    pod.metadata
        .annotations
        .insert(MASTER_POD_ANNOTATION.into(), master.to_string());
}

fn plain(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value,
        value_from: None,
    }
}

/// The pod's completion index, from its annotation or label.
pub fn pod_index(pod: &Pod) -> Option<i32> {
    pod.metadata
        .annotations
        .get(COMPLETION_INDEX_KEY)
        .or_else(|| pod.metadata.labels.get(COMPLETION_INDEX_KEY))
        .and_then(|v| v.parse().ok())
}

/// The gang attempt a pod belongs to.
pub fn pod_attempt(pod: &Pod) -> Option<i32> {
    pod.metadata
        .labels
        .get(GANG_ATTEMPT_LABEL)
        .and_then(|v| v.parse().ok())
}

/// The master port of a gang job.
pub fn master_port(job: &Job) -> i32 {
    job.spec
        .gang
        .as_ref()
        .and_then(|g| g.master_port)
        .unwrap_or(DEFAULT_MASTER_PORT)
}
