//! A container's environment: a default `PATH`, the identity variables (`HOSTNAME`,
//! `POD_NAME`, `POD_NAMESPACE`, `NODE_NAME`), the devices' variables (`CUDA_VISIBLE_DEVICES`,
//! ...) and then the container's own `env` (which wins), with `valueFrom.fieldRef` resolved and
//! `$(VAR)` references expanded as Kubernetes does.

use std::collections::BTreeMap;

use drover_api::core::{Container, Pod};

/// `PATH` when the pod sets none (what container images usually have).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The value of a `fieldRef` path, `None` for paths Drover does not know.
pub fn field_ref(pod: &Pod, node_ip: &str, path: &str) -> Option<String> {
    let m = &pod.metadata;
    let quoted = |prefix: &str| {
        path.strip_prefix(prefix)?
            .strip_suffix("']")
            .map(str::to_string)
    };
    Some(match path {
        "metadata.name" => m.name.clone(),
        "metadata.namespace" => m.namespace.clone(),
        "metadata.uid" => m.uid.clone(),
        "spec.nodeName" => pod.spec.node_name.clone(),
        "spec.serviceAccountName" => pod.spec.service_account_name.clone(),
        "status.podIP" | "status.hostIP" => node_ip.to_string(),
        _ => {
            if let Some(k) = quoted("metadata.labels['") {
                m.labels.get(&k).cloned().unwrap_or_default()
            } else if let Some(k) = quoted("metadata.annotations['") {
                m.annotations.get(&k).cloned().unwrap_or_default()
            } else {
                return None;
            }
        }
    })
}

/// Annotations under this prefix are written by Drover's own controllers (e.g. the job
/// controller's `drover.dev/master-addr` once a gang's rank 0 is bound): a container whose
/// environment reads one through `valueFrom.fieldRef` waits for it instead of starting with an
/// empty value.
pub const AWAITED_ANNOTATION_PREFIX: &str = "drover.dev/";

/// The annotations `container`'s environment reads (through `fieldRef`) that Drover has yet to
/// write on `pod` (see [`AWAITED_ANNOTATION_PREFIX`]). Empty when it can start.
pub fn awaited_annotations(pod: &Pod, container: &Container) -> Vec<String> {
    container
        .env
        .iter()
        .filter_map(|e| e.value_from.as_ref()?.field_ref.as_ref())
        .filter_map(|f| {
            f.field_path
                .strip_prefix("metadata.annotations['")?
                .strip_suffix("']")
        })
        .filter(|k| k.starts_with(AWAITED_ANNOTATION_PREFIX))
        .filter(|k| {
            pod.metadata
                .annotations
                .get(*k)
                .is_none_or(|v| v.is_empty())
        })
        .map(str::to_string)
        .collect()
}

/// Expands `$(NAME)` with earlier variables; `$$(` stays literal `$(`; unknown names are left
/// as written (Kubernetes' rules).
pub fn expand(value: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix("$(") {
            out.push_str("$(");
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The complete environment of `container`.
pub fn container_env(
    pod: &Pod,
    container: &Container,
    node_ip: &str,
    device_env: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut order: Vec<String> = Vec::new();
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let set = |order: &mut Vec<String>, vars: &mut BTreeMap<String, String>, k: &str, v: String| {
        if vars.insert(k.to_string(), v).is_none() {
            order.push(k.to_string());
        }
    };
    let hostname = if pod.spec.hostname.is_empty() {
        pod.metadata.name.clone()
    } else {
        pod.spec.hostname.clone()
    };
    set(&mut order, &mut vars, "PATH", DEFAULT_PATH.to_string());
    set(&mut order, &mut vars, "HOSTNAME", hostname);
    set(&mut order, &mut vars, "POD_NAME", pod.metadata.name.clone());
    set(
        &mut order,
        &mut vars,
        "POD_NAMESPACE",
        pod.metadata.namespace.clone(),
    );
    set(
        &mut order,
        &mut vars,
        "NODE_NAME",
        pod.spec.node_name.clone(),
    );
    for (k, v) in device_env {
        set(&mut order, &mut vars, k, v.clone());
    }
    for e in &container.env {
        let value = match e.value_from.as_ref().and_then(|f| f.field_ref.as_ref()) {
            Some(f) => field_ref(pod, node_ip, &f.field_path).unwrap_or_default(),
            None => expand(&e.value, &vars),
        };
        set(&mut order, &mut vars, &e.name, value);
    }
    order
        .into_iter()
        .filter_map(|k| vars.get(&k).map(|v| (k.clone(), v.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_api::core::{EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec};

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let vars = BTreeMap::from([("A".to_string(), "1".to_string())]);
        let cases = [
            ("$(A)-x", "1-x"),
            ("$$(A)", "$(A)"),
            ("$(B)", "$(B)"),
            ("cost $5", "cost $5"),
            ("$(A", "$(A"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &vars), want, "input {input:?}");
        }
    }

    #[test]
    fn env_has_identity_devices_and_resolved_field_refs() {
        let mut pod = Pod::new("ns1", "p1", PodSpec::default());
        pod.spec.node_name = "n1".into();
        let c = Container {
            name: "main".into(),
            env: vec![
                EnvVar {
                    name: "ME".into(),
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.name".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                EnvVar {
                    name: "WHERE".into(),
                    value: "$(NODE_NAME)/$(ME)".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let devices = BTreeMap::from([("CUDA_VISIBLE_DEVICES".to_string(), "0,1".to_string())]);
        let env: BTreeMap<_, _> = container_env(&pod, &c, "10.0.0.1", &devices)
            .into_iter()
            .collect();
        assert_eq!(env["POD_NAMESPACE"], "ns1");
        assert_eq!(env["HOSTNAME"], "p1");
        assert_eq!(env["CUDA_VISIBLE_DEVICES"], "0,1");
        assert_eq!(env["ME"], "p1");
        assert_eq!(env["WHERE"], "n1/p1");
    }

    #[test]
    fn drover_annotations_are_awaited_others_are_not() {
        let from = |path: &str| EnvVar {
            name: "X".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: path.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let c = Container {
            name: "main".into(),
            env: vec![
                from("metadata.annotations['drover.dev/master-addr']"),
                from("metadata.annotations['example.com/optional']"),
            ],
            ..Default::default()
        };
        let mut pod = Pod::new("ns1", "p1", PodSpec::default());
        assert_eq!(
            awaited_annotations(&pod, &c),
            vec!["drover.dev/master-addr"]
        );
        pod.metadata
            .annotations
            .insert("drover.dev/master-addr".into(), "10.0.0.7".into());
        assert!(awaited_annotations(&pod, &c).is_empty());
    }
}
