//! kubectl-style tables: the columns of each kind, computed from the object's JSON, ages as
//! kubectl prints them, and column alignment.
//!
//! Working on JSON rather than the typed structs keeps one code path for every kind the CLI
//! meets (and keeps printing working when a field is missing or new).

use chrono::{DateTime, Utc};
use drover_api::resource::KindInfo;
use serde_json::Value;

/// What to print for an absent value, as kubectl does.
pub const NONE: &str = "<none>";

/// How a table is printed.
#[derive(Debug, Clone, Copy)]
pub struct TableOptions {
    /// `-o wide`: the extra columns.
    pub wide: bool,
    /// `-A`: a leading NAMESPACE column.
    pub all_namespaces: bool,
}

/// The column headers of a kind.
pub fn headers(info: &KindInfo, opts: TableOptions) -> Vec<&'static str> {
    let mut h: Vec<&'static str> = match info.plural {
        "pods" => vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "nodes" => vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        "jobs" => vec!["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
        "namespaces" => vec!["NAME", "STATUS", "AGE"],
        "podgroups" => vec!["NAME", "PHASE", "MINMEMBER", "RUNNING", "AGE"],
        "events" => vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "leases" => vec!["NAME", "HOLDER", "AGE"],
        "priorityclasses" => vec!["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE"],
        _ => vec!["NAME", "AGE"],
    };
    if opts.wide {
        match info.plural {
            "pods" => h.extend(["IP", "NODE", "GPUS"]),
            "nodes" => h.extend(["INTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "GPU"]),
            _ => {}
        }
    }
    if opts.all_namespaces && info.namespaced {
        h.insert(0, "NAMESPACE");
    }
    h
}

/// One object's row, in the order of [`headers`].
pub fn row(info: &KindInfo, obj: &Value, opts: TableOptions, now: DateTime<Utc>) -> Vec<String> {
    let name = s(obj, "/metadata/name").to_string();
    let age = age_of(obj.pointer("/metadata/creationTimestamp"), now);
    let mut r = match info.plural {
        "pods" => pod_row(obj, name, age, opts.wide),
        "nodes" => node_row(obj, name, age, opts.wide),
        "jobs" => vec![
            name,
            job_status(obj),
            job_completions(obj),
            job_duration(obj, now),
            age,
        ],
        "namespaces" => vec![name, or(s(obj, "/status/phase"), "Active"), age],
        "podgroups" => vec![
            name,
            or(s(obj, "/status/phase"), "Pending"),
            num(obj, "/spec/minMember"),
            num(obj, "/status/running"),
            age,
        ],
        "events" => vec![
            event_last_seen(obj, now),
            s(obj, "/type").to_string(),
            s(obj, "/reason").to_string(),
            format!(
                "{}/{}",
                s(obj, "/involvedObject/kind").to_ascii_lowercase(),
                s(obj, "/involvedObject/name")
            ),
            s(obj, "/message").to_string(),
        ],
        "leases" => vec![name, or(s(obj, "/spec/holderIdentity"), NONE), age],
        "priorityclasses" => vec![
            name,
            num(obj, "/value"),
            obj.pointer("/globalDefault")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .to_string(),
            age,
        ],
        _ => vec![name, age],
    };
    if opts.all_namespaces && info.namespaced {
        r.insert(0, s(obj, "/metadata/namespace").to_string());
    }
    r
}

/// A string field, or `""`.
pub fn s<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// `value`, or `default` when it is empty.
pub fn or(value: &str, default: &str) -> String {
    if value.is_empty() { default } else { value }.to_string()
}

/// A number field as text, `0` when absent.
fn num(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_i64)
        .unwrap_or(0)
        .to_string()
}

fn items<'a>(obj: &'a Value, pointer: &str) -> &'a [Value] {
    obj.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn pod_row(obj: &Value, name: String, age: String, wide: bool) -> Vec<String> {
    let statuses = items(obj, "/status/containerStatuses");
    let total = items(obj, "/spec/containers").len();
    let ready = statuses
        .iter()
        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
        .count();
    let restarts: i64 = statuses
        .iter()
        .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
        .sum();
    let mut r = vec![
        name,
        format!("{ready}/{total}"),
        pod_status(obj),
        restarts.to_string(),
        age,
    ];
    if wide {
        r.push(or(s(obj, "/status/podIP"), NONE));
        r.push(or(s(obj, "/spec/nodeName"), NONE));
        r.push(or(&pod_gpus(obj), NONE));
    }
    r
}

/// kubectl's STATUS of a pod: Terminating, the pod's reason, a container's waiting or
/// terminated reason, else the phase.
pub fn pod_status(obj: &Value) -> String {
    if obj
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        return "Terminating".into();
    }
    let reason = s(obj, "/status/reason");
    if !reason.is_empty() {
        return reason.into();
    }
    for c in items(obj, "/status/containerStatuses") {
        for state in ["waiting", "terminated"] {
            if let Some(r) = c
                .pointer(&format!("/state/{state}/reason"))
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty())
            {
                return r.into();
            }
        }
    }
    or(s(obj, "/status/phase"), "Pending")
}

/// The devices assigned to a pod: `gpu-0,gpu-1`.
pub fn pod_gpus(obj: &Value) -> String {
    items(obj, "/spec/deviceAssignments")
        .iter()
        .flat_map(|a| items(a, "/ids").iter().filter_map(Value::as_str))
        .collect::<Vec<_>>()
        .join(",")
}

fn node_row(obj: &Value, name: String, age: String, wide: bool) -> Vec<String> {
    let mut roles: Vec<&str> = obj
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|l| {
            l.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .collect()
        })
        .unwrap_or_default();
    roles.sort_unstable();
    let mut r = vec![
        name,
        node_status(obj),
        or(&roles.join(","), NONE),
        age,
        s(obj, "/status/nodeInfo/kubeletVersion").to_string(),
    ];
    if wide {
        let ip = items(obj, "/status/addresses")
            .iter()
            .find(|a| a.get("type").and_then(Value::as_str) == Some("InternalIP"))
            .and_then(|a| a.get("address").and_then(Value::as_str))
            .unwrap_or(NONE);
        r.push(ip.to_string());
        r.push(or(s(obj, "/status/nodeInfo/osImage"), NONE));
        r.push(or(s(obj, "/status/nodeInfo/kernelVersion"), NONE));
        r.push(node_gpus(obj));
    }
    r
}

/// `Ready`, `NotReady` or `Unknown`, with `,SchedulingDisabled` for a cordoned node.
pub fn node_status(obj: &Value) -> String {
    let ready = items(obj, "/status/conditions")
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        .and_then(|c| c.get("status").and_then(Value::as_str));
    let mut st = match ready {
        Some("True") => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }
    .to_string();
    if obj.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        st.push_str(",SchedulingDisabled");
    }
    st
}

/// `8×NVIDIA-H100-80GB-HBM3` from the GPU labels (or the capacity), `<none>` without GPUs.
pub fn node_gpus(obj: &Value) -> String {
    let label = |k: &str| {
        obj.pointer("/metadata/labels")
            .and_then(|l| l.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let count = match label("nvidia.com/gpu.count") {
        "" => s(obj, "/status/capacity/nvidia.com~1gpu"),
        c => c,
    };
    match (count, label("nvidia.com/gpu.product")) {
        ("" | "0", _) => NONE.to_string(),
        (c, "") => format!("{c}×gpu"),
        (c, p) => format!("{c}×{p}"),
    }
}

fn job_status(obj: &Value) -> String {
    let conds = items(obj, "/status/conditions");
    let is = |t: &str| {
        conds.iter().any(|c| {
            c.get("type").and_then(Value::as_str) == Some(t)
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
    };
    if is("Complete") {
        "Complete"
    } else if is("Failed") {
        "Failed"
    } else if is("FailureTarget") {
        "FailureTarget"
    } else if is("Suspended") {
        "Suspended"
    } else {
        "Running"
    }
    .to_string()
}

fn job_completions(obj: &Value) -> String {
    let succeeded = obj
        .pointer("/status/succeeded")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    match obj.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => {
            let p = obj
                .pointer("/spec/parallelism")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            format!("{succeeded}/1 of {p}")
        }
    }
}

fn job_duration(obj: &Value, now: DateTime<Utc>) -> String {
    let Some(start) = time(obj.pointer("/status/startTime")) else {
        return String::new();
    };
    let end = time(obj.pointer("/status/completionTime")).unwrap_or(now);
    human_duration(end - start)
}

fn event_last_seen(obj: &Value, now: DateTime<Utc>) -> String {
    let t = [
        "/lastTimestamp",
        "/eventTime",
        "/firstTimestamp",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .find_map(|p| time(obj.pointer(p)));
    match t {
        Some(t) => human_duration(now - t),
        None => "<unknown>".into(),
    }
}

/// A timestamp field, parsed.
pub fn time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let s = v?.as_str()?;
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The age of an object from a timestamp field, `<unknown>` without one.
pub fn age_of(v: Option<&Value>, now: DateTime<Utc>) -> String {
    match time(v) {
        Some(t) => human_duration(now - t),
        None => "<unknown>".into(),
    }
}

/// kubectl's `duration.HumanDuration`: `5s`, `3m20s`, `3m`, `2h10m`, `4d`, `1y2d`.
pub fn human_duration(d: chrono::TimeDelta) -> String {
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".into();
    } else if seconds < 0 {
        return "0s".into();
    } else if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    } else if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Column widths that fit the headers and rows.
pub fn widths(headers: &[&str], rows: &[Vec<String>]) -> Vec<usize> {
    let mut w: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(x) = w.get_mut(i) {
                *x = (*x).max(c.chars().count());
            }
        }
    }
    w
}

/// One line of a table: cells padded to `widths`, three spaces apart, the last one unpadded.
pub fn line<S: AsRef<str>>(cells: &[S], widths: &[usize]) -> String {
    let mut out = String::new();
    for (i, c) in cells.iter().enumerate() {
        let c = c.as_ref();
        if i + 1 == cells.len() {
            out.push_str(c);
        } else {
            let w = widths.get(i).copied().unwrap_or(0);
            out.push_str(c);
            out.push_str(&" ".repeat(w.saturating_sub(c.chars().count()) + 3));
        }
    }
    out.trim_end().to_string()
}

/// A whole table, header first.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let w = widths(headers, rows);
    let mut out = line(headers, &w);
    for r in rows {
        out.push('\n');
        out.push_str(&line(r, &w));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn ages_read_like_kubectl() {
        for (secs, want) in [
            (5, "5s"),
            (119, "119s"),
            (200, "3m20s"),
            (600, "10m"),
            (3 * 3600 + 600, "3h10m"),
            (10 * 3600, "10h"),
            (4 * 86400, "4d"),
            (30 * 86400, "30d"),
        ] {
            assert_eq!(human_duration(TimeDelta::seconds(secs)), want, "{secs}s");
        }
    }

    #[test]
    fn tables_align() {
        let t = table(&["NAME", "AGE"], &[vec!["a-long-name".into(), "5s".into()]]);
        assert_eq!(t, "NAME          AGE\na-long-name   5s");
    }
}
