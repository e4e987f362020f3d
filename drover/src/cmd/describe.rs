//! `drover describe KIND NAME`: an object in readable form, kubectl-like, then its events.
//!
//! Pods, nodes and jobs get their own layouts (containers and their state, devices and their
//! links, pod counts); every other kind is printed field by field, with camelCase keys spelled
//! out as kubectl's generic describer does.

use chrono::Utc;
use drover_api::resource::KindInfo;
use drover_client::{Client, ClientError, ListParams, target};
use serde_json::Value;

use super::apply::LAST_APPLIED;
use super::printers::{self, NONE, or, s};
use super::text::{Out, arr, num};
use super::{GlobalArgs, kind_arg, namespace_or_default};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Kind (pods, po, nodes, no, jobs, pg, ...), or `KIND/NAME`.
    pub kind: String,
    /// Names of the objects to describe.
    pub names: Vec<String>,
    /// Namespace (default: `default`).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<()> {
    let (kind, mut names) = match args.kind.split_once('/') {
        Some((k, n)) => (k.to_string(), vec![n.to_string()]),
        None => (args.kind.clone(), Vec::new()),
    };
    names.extend(args.names.iter().cloned());
    let info = kind_arg(&kind)?;
    if names.is_empty() {
        anyhow::bail!("must give the name of the {} to describe", info.singular);
    }
    let ns = namespace_or_default(args.namespace.as_deref());
    let client = global.client()?;
    for (i, name) in names.iter().enumerate() {
        let obj: Value =
            serde_json::from_slice(&client.get_raw(target(&info, Some(&ns), name, "")).await?)
                .map_err(ClientError::Decode)?;
        let events = events_of(&client, &info, &obj).await?;
        if i > 0 {
            println!();
        }
        print!("{}", describe(&info, &obj, &events));
    }
    Ok(())
}

/// The events about an object, oldest first.
async fn events_of(client: &Client, info: &KindInfo, obj: &Value) -> anyhow::Result<Vec<Value>> {
    let Some(events_kind) = drover_api::resource::find_kind("events") else {
        return Ok(Vec::new());
    };
    let name = s(obj, "/metadata/name");
    let ns = s(obj, "/metadata/namespace");
    let params = ListParams::default().fields(format!(
        "involvedObject.name={name},involvedObject.kind={}",
        info.kind
    ));
    let t = target(&events_kind, (!ns.is_empty()).then_some(ns), "", "");
    let list: Value =
        serde_json::from_slice(&client.list_raw(t, &params).await?).map_err(ClientError::Decode)?;
    let mut events: Vec<Value> = list
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    events.sort_by_key(|e| last_seen(e).unwrap_or_default());
    Ok(events)
}

fn last_seen(e: &Value) -> Option<chrono::DateTime<Utc>> {
    [
        "/lastTimestamp",
        "/eventTime",
        "/firstTimestamp",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .find_map(|p| printers::time(e.pointer(p)))
}

/// The text `describe` prints for one object.
pub fn describe(info: &KindInfo, obj: &Value, events: &[Value]) -> String {
    let mut w = Out::default();
    w.field(0, "Name", s(obj, "/metadata/name"));
    if info.namespaced {
        w.field(0, "Namespace", s(obj, "/metadata/namespace"));
    }
    w.map(0, "Labels", obj.pointer("/metadata/labels"), &[]);
    w.map(
        0,
        "Annotations",
        obj.pointer("/metadata/annotations"),
        &[LAST_APPLIED],
    );
    w.field(
        0,
        "CreationTimestamp",
        s(obj, "/metadata/creationTimestamp"),
    );
    if let Some(o) = obj.pointer("/metadata/ownerReferences/0") {
        w.field(
            0,
            "Controlled By",
            &format!("{}/{}", s(o, "/kind"), s(o, "/name")),
        );
    }
    match info.plural {
        "pods" => pod(&mut w, obj),
        "nodes" => node(&mut w, obj),
        "jobs" => job(&mut w, obj),
        _ => {
            for (k, v) in obj.as_object().into_iter().flatten() {
                if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    w.value(0, k, v);
                }
            }
        }
    }
    w.events(events);
    w.0
}

fn pod(w: &mut Out, obj: &Value) {
    let node = match (s(obj, "/spec/nodeName"), s(obj, "/status/hostIP")) {
        ("", _) => NONE.to_string(),
        (n, "") => n.to_string(),
        (n, ip) => format!("{n}/{ip}"),
    };
    w.field(0, "Priority", &num(obj, "/spec/priority"));
    w.field(
        0,
        "Priority Class Name",
        &or(s(obj, "/spec/priorityClassName"), NONE),
    );
    w.field(0, "Node", &node);
    w.field(0, "Start Time", &or(s(obj, "/status/startTime"), NONE));
    w.field(0, "Status", &printers::pod_status(obj));
    for (key, p) in [("Reason", "/status/reason"), ("Message", "/status/message")] {
        if !s(obj, p).is_empty() {
            w.field(0, key, s(obj, p));
        }
    }
    w.field(0, "IP", &or(s(obj, "/status/podIP"), NONE));
    let statuses = arr(obj, "/status/containerStatuses");
    w.line(0, "Containers:");
    for c in arr(obj, "/spec/containers") {
        let status = statuses.iter().find(|st| s(st, "/name") == s(c, "/name"));
        container(w, 2, c, Some(status));
    }
    let gpus = arr(obj, "/spec/deviceAssignments");
    if !gpus.is_empty() {
        w.line(0, "Devices:");
        for a in gpus {
            let ids: Vec<&str> = arr(a, "/ids").iter().filter_map(Value::as_str).collect();
            w.field(
                2,
                &format!("{} ({})", s(a, "/resource"), s(a, "/container")),
                &ids.join(","),
            );
        }
    }
    w.conditions(obj, false);
    w.map(0, "Node-Selectors", obj.pointer("/spec/nodeSelector"), &[]);
    let tolerations: Vec<String> = arr(obj, "/spec/tolerations")
        .iter()
        .map(|t| {
            let kv = match s(t, "/value") {
                "" => s(t, "/key").to_string(),
                v => format!("{}={v}", s(t, "/key")),
            };
            format!("{}:{}", or(&kv, "<all>"), or(s(t, "/effect"), "<all>"))
        })
        .collect();
    w.list(0, "Tolerations", &tolerations);
}

/// A container; `status` is `None` in a pod template (no state to show), `Some(None)` for a
/// container that has not reported yet.
fn container(w: &mut Out, base: usize, c: &Value, status: Option<Option<&Value>>) {
    let inner = base + 2;
    w.line(base, &format!("{}:", s(c, "/name")));
    w.field(inner, "Image", s(c, "/image"));
    for (key, p) in [("Command", "/command"), ("Args", "/args")] {
        let parts: Vec<String> = arr(c, p)
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect();
        if !parts.is_empty() {
            w.line(inner, &format!("{key}:"));
            for part in parts {
                w.line(inner + 2, &part);
            }
        }
    }
    if let Some(Some(st)) = status {
        let state = st.get("state").unwrap_or(&Value::Null);
        if let Some(r) = state.get("running") {
            w.field(inner, "State", "Running");
            w.field(inner + 2, "Started", s(r, "/startedAt"));
        } else if let Some(t) = state.get("terminated") {
            w.field(inner, "State", "Terminated");
            w.field(inner + 2, "Reason", s(t, "/reason"));
            w.field(inner + 2, "Exit Code", &num(t, "/exitCode"));
            w.field(inner + 2, "Started", s(t, "/startedAt"));
            w.field(inner + 2, "Finished", s(t, "/finishedAt"));
        } else if let Some(wt) = state.get("waiting") {
            w.field(inner, "State", "Waiting");
            w.field(inner + 2, "Reason", s(wt, "/reason"));
        }
        w.field(
            4,
            "Ready",
            &st.get("ready")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .to_string(),
        );
        w.field(inner, "Restart Count", &num(st, "/restartCount"));
    } else if status.is_some() {
        w.field(inner, "State", "Waiting");
    }
    w.resources(inner, "Limits", c.pointer("/resources/limits"));
    w.resources(inner, "Requests", c.pointer("/resources/requests"));
    let env: Vec<String> = arr(c, "/env")
        .iter()
        .map(|e| format!("{}: {}", s(e, "/name"), s(e, "/value")))
        .collect();
    w.list(inner, "Environment", &env);
}

fn node(w: &mut Out, obj: &Value) {
    let taints: Vec<String> = arr(obj, "/spec/taints")
        .iter()
        .map(|t| match s(t, "/value") {
            "" => format!("{}:{}", s(t, "/key"), s(t, "/effect")),
            v => format!("{}={v}:{}", s(t, "/key"), s(t, "/effect")),
        })
        .collect();
    w.list(0, "Taints", &taints);
    w.field(
        0,
        "Unschedulable",
        &(obj.pointer("/spec/unschedulable") == Some(&Value::Bool(true))).to_string(),
    );
    w.conditions(obj, true);
    w.line(0, "Addresses:");
    for a in arr(obj, "/status/addresses") {
        w.field(2, s(a, "/type"), s(a, "/address"));
    }
    w.resources(0, "Capacity", obj.pointer("/status/capacity"));
    w.resources(0, "Allocatable", obj.pointer("/status/allocatable"));
    if let Some(info) = obj.pointer("/status/nodeInfo") {
        w.value(0, "System Info", info);
    }
    let devices = arr(obj, "/status/devices/devices");
    if !devices.is_empty() {
        w.line(0, "Devices:");
        let rows: Vec<Vec<String>> = devices
            .iter()
            .map(|d| {
                let health = match s(d, "/healthReason") {
                    "" => or(s(d, "/health"), "Healthy"),
                    r => format!("{} ({r})", or(s(d, "/health"), "Healthy")),
                };
                vec![
                    s(d, "/id").to_string(),
                    s(d, "/model").to_string(),
                    format!("{}Mi", num(d, "/memoryMib")),
                    d.get("numaNode")
                        .and_then(Value::as_u64)
                        .map_or(NONE.into(), |n| n.to_string()),
                    health,
                ]
            })
            .collect();
        w.table(2, &["ID", "MODEL", "MEMORY", "NUMA", "HEALTH"], &rows);
    }
    let links = arr(obj, "/status/devices/links");
    if !links.is_empty() {
        w.line(0, "Topology:");
        for l in links {
            let lanes = match num(l, "/lanes").as_str() {
                "0" => String::new(),
                n => format!(" x{n}"),
            };
            w.line(
                2,
                &format!(
                    "{} <-> {}  {}{lanes}",
                    s(l, "/a"),
                    s(l, "/b"),
                    s(l, "/kind")
                ),
            );
        }
    }
}

fn job(w: &mut Out, obj: &Value) {
    for (key, p) in [
        ("Parallelism", "/spec/parallelism"),
        ("Completions", "/spec/completions"),
        ("Backoff Limit", "/spec/backoffLimit"),
    ] {
        w.field(
            0,
            key,
            &obj.pointer(p)
                .and_then(Value::as_i64)
                .map_or(NONE.into(), |n| n.to_string()),
        );
    }
    w.field(
        0,
        "Completion Mode",
        &or(s(obj, "/spec/completionMode"), "NonIndexed"),
    );
    w.field(
        0,
        "Suspend",
        &(obj.pointer("/spec/suspend") == Some(&Value::Bool(true))).to_string(),
    );
    w.field(0, "Start Time", &or(s(obj, "/status/startTime"), NONE));
    if !s(obj, "/status/completionTime").is_empty() {
        w.field(0, "Completed At", s(obj, "/status/completionTime"));
    }
    w.field(
        0,
        "Pods Statuses",
        &format!(
            "{} Active / {} Succeeded / {} Failed",
            num(obj, "/status/active"),
            num(obj, "/status/succeeded"),
            num(obj, "/status/failed")
        ),
    );
    if let Some(g) = obj.pointer("/spec/gang") {
        w.value(0, "Gang", g);
    }
    w.line(0, "Pod Template:");
    w.map(
        2,
        "Labels",
        obj.pointer("/spec/template/metadata/labels"),
        &[],
    );
    w.line(2, "Containers:");
    for c in arr(obj, "/spec/template/spec/containers") {
        container(w, 4, c, None);
    }
    w.conditions(obj, false);
}
