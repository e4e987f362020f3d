//! The user's commands, end to end: the real `drover` binary against a real API server started
//! in this process (one for the whole file; every test works in its own namespace).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

struct Server {
    url: String,
    token: String,
    dir: tempfile::TempDir,
}

/// The API server shared by every test, on its own runtime thread.
fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let cfg = drover_apiserver::ServerConfig::new(data)
                    .listen("127.0.0.1:0".parse().expect("addr"));
                let server = drover_apiserver::start(cfg).await.expect("start server");
                tx.send((server.url(), server.admin_token.clone()))
                    .expect("send");
                std::future::pending::<()>().await;
                drop(server);
            });
        });
        let (url, token) = rx.recv().expect("server started");
        Server { url, token, dir }
    })
}

/// A `drover` command with no config of the user's in sight.
fn bare() -> Command {
    let s = server();
    let mut c = Command::new(env!("CARGO_BIN_EXE_drover"));
    c.env_remove("DROVER_SERVER")
        .env_remove("DROVER_TOKEN")
        .env("DROVER_CONFIG", s.dir.path().join("no-such-config"))
        .env("HOME", s.dir.path())
        .env("RUST_LOG", "error");
    c
}

/// Runs `drover --server URL --token T ARGS`.
fn drover(args: &[&str]) -> Output {
    let s = server();
    bare()
        .args(["--server", &s.url, "--token", &s.token])
        .args(args)
        .output()
        .expect("run drover")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs a command that must succeed; returns its stdout.
fn ok(args: &[&str]) -> String {
    let o = drover(args);
    assert!(
        o.status.success(),
        "drover {args:?} failed: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Runs a command that must fail with one `error:` line; returns that line.
fn fails(args: &[&str]) -> String {
    let o = drover(args);
    assert!(
        !o.status.success(),
        "drover {args:?} succeeded: {}",
        stdout(&o)
    );
    one_error_line(&o)
}

fn one_error_line(o: &Output) -> String {
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    lines[0].to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write manifest");
    p.display().to_string()
}

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).expect("JSON output")
}

fn namespace(ns: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n")
}

fn pod(ns: &str, name: &str, app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    app: {app}\n\
         spec:\n  containers:\n  - name: main\n    image: busybox\n    command: [sleep, \"100\"]\n"
    )
}

fn job(ns: &str, labels: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: train\n  namespace: {ns}\n  labels:\n{labels}\
         spec:\n  completions: 2\n  parallelism: 2\n  template:\n    spec:\n      restartPolicy: Never\n\
         \x20     containers:\n      - name: main\n        image: busybox\n        command: [sh, -c, \"true\"]\n"
    )
}

fn podgroup(ns: &str, min: u32) -> String {
    format!(
        "apiVersion: scheduling.x-k8s.io/v1alpha1\nkind: PodGroup\nmetadata:\n  name: gang\n  namespace: {ns}\n\
         spec:\n  minMember: {min}\n"
    )
}

#[test]
fn apply_creates_then_leaves_unchanged_then_configures_three_way() {
    let dir = tempfile::tempdir().expect("dir");
    let ns = "t-apply";
    let labels = "    team: ml\n    tier: gold\n";
    let text = [namespace(ns), job(ns, labels), podgroup(ns, 2)].join("---\n");
    let f = write(dir.path(), "all.yaml", &text);
    assert_eq!(
        ok(&["apply", "-f", &f]),
        "namespace/t-apply created\njob.batch/train created\npodgroup.scheduling.x-k8s.io/gang created\n"
    );
    assert_eq!(
        ok(&["apply", "-f", &f]),
        "namespace/t-apply unchanged\njob.batch/train unchanged\npodgroup.scheduling.x-k8s.io/gang unchanged\n"
    );

    // Change a field: configured.
    let text = [namespace(ns), job(ns, labels), podgroup(ns, 3)].join("---\n");
    let f = write(dir.path(), "all.yaml", &text);
    let out = ok(&["apply", "-f", &f]);
    assert!(
        out.contains("podgroup.scheduling.x-k8s.io/gang configured"),
        "{out}"
    );
    assert!(out.contains("job.batch/train unchanged"), "{out}");
    let pg = json(&["get", "pg", "gang", "-n", ns, "-o", "json"]);
    assert_eq!(pg.pointer("/spec/minMember"), Some(&Value::from(3)));

    // Remove a label from the manifest: the three-way patch deletes it.
    let text = [namespace(ns), job(ns, "    team: ml\n"), podgroup(ns, 3)].join("---\n");
    let f = write(dir.path(), "all.yaml", &text);
    assert!(ok(&["apply", "-f", &f]).contains("job.batch/train configured"));
    let j = json(&["get", "jobs.batch", "train", "-n", ns, "-o", "json"]);
    let labels = j.pointer("/metadata/labels").expect("labels");
    assert_eq!(labels.get("team"), Some(&Value::from("ml")));
    assert_eq!(labels.get("tier"), None, "{labels}");
    let last = j
        .pointer("/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration")
        .and_then(Value::as_str)
        .expect("last-applied annotation");
    assert!(
        last.contains("\"team\":\"ml\"") && !last.contains("tier"),
        "{last}"
    );
}

#[test]
fn get_prints_tables_json_yaml_and_filters() {
    let dir = tempfile::tempdir().expect("dir");
    let ns = "t-get";
    let text = [
        namespace(ns),
        pod(ns, "web-1", "web"),
        pod(ns, "db-1", "db"),
    ]
    .join("---\n");
    ok(&["apply", "-f", &write(dir.path(), "pods.yaml", &text)]);

    let table = ok(&["get", "po", "-n", ns]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert_eq!(rows[0][..4], ["db-1", "0/1", "Pending", "0"]);

    let wide = ok(&["get", "pods", "-n", ns, "-o", "wide"]);
    let header: Vec<&str> = wide
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(header[5..], ["IP", "NODE", "GPUS"], "{wide}");

    let filtered = ok(&["get", "pod", "-n", ns, "-l", "app=web"]);
    assert!(
        filtered.contains("web-1") && !filtered.contains("db-1"),
        "{filtered}"
    );

    let all = ok(&["get", "pods", "-A"]);
    assert!(all.starts_with("NAMESPACE"), "{all}");
    assert!(
        all.lines()
            .any(|l| l.starts_with("t-get") && l.contains("web-1")),
        "{all}"
    );

    let list = json(&["get", "pods", "-n", ns, "-o", "json"]);
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2));
    let one = json(&["get", "pod", "web-1", "-n", ns, "-o", "json"]);
    assert_eq!(one["kind"], "Pod");
    assert_eq!(one["metadata"]["name"], "web-1");
    let yaml = ok(&["get", "po/web-1", "-n", ns, "-o", "yaml"]);
    assert!(
        yaml.contains("kind: Pod") && yaml.contains("name: web-1"),
        "{yaml}"
    );

    let nss = ok(&["get", "ns"]);
    assert!(nss.starts_with("NAME") && nss.contains("t-get"), "{nss}");
    assert!(ok(&["get", "namespaces", ns]).contains("Active"));

    let empty = drover(&["get", "jobs", "-n", ns]);
    assert!(empty.status.success());
    assert_eq!(
        stderr(&empty).trim(),
        "No resources found in t-get namespace."
    );

    let missing = fails(&["get", "pod", "nope", "-n", ns]);
    assert_eq!(missing, "error: NotFound (404): pods \"nope\" not found");
    let unknown = fails(&["get", "widgets"]);
    assert!(
        unknown.contains("doesn't have a resource type \"widgets\""),
        "{unknown}"
    );
}

#[test]
fn describe_shows_the_object_and_its_events() {
    let dir = tempfile::tempdir().expect("dir");
    let ns = "t-describe";
    let event = format!(
        "apiVersion: v1\nkind: Event\nmetadata:\n  name: web-1.1\n  namespace: {ns}\n\
         involvedObject:\n  kind: Pod\n  name: web-1\n  namespace: {ns}\n\
         reason: Scheduled\nmessage: assigned {ns}/web-1 to node-1\ntype: Normal\n\
         source:\n  component: drover-scheduler\n"
    );
    let text = [namespace(ns), pod(ns, "web-1", "web"), event].join("---\n");
    ok(&["apply", "-f", &write(dir.path(), "pod.yaml", &text)]);

    let out = ok(&["describe", "pod", "web-1", "-n", ns]);
    for want in [
        "Name:",
        "web-1",
        "Namespace:",
        "app=web",
        "Status:",
        "Pending",
        "Containers:",
        "busybox",
        "Events:",
        "Scheduled",
        "drover-scheduler",
    ] {
        assert!(out.contains(want), "no {want:?} in:\n{out}");
    }
    assert!(!out.contains("last-applied"), "{out}");

    let no_events = ok(&["describe", "ns", ns]);
    assert!(
        no_events
            .lines()
            .any(|l| l.starts_with("Events:") && l.ends_with("<none>")),
        "{no_events}"
    );
    assert!(fails(&["describe", "pod", "nope", "-n", ns]).contains("NotFound (404)"));
}

const GPU_NODE: &str = "apiVersion: v1
kind: Node
metadata:
  name: t-gpu-node
  labels: {nvidia.com/gpu.count: \"2\", nvidia.com/gpu.product: NVIDIA-H100, node-role.kubernetes.io/worker: \"\"}
spec:
  taints: [{key: nvidia.com/gpu, effect: NoSchedule}]
status:
  capacity: {cpu: \"64\", nvidia.com/gpu: \"2\"}
  allocatable: {cpu: \"63\", nvidia.com/gpu: \"2\"}
  conditions: [{type: Ready, status: \"True\", reason: KubeletReady}]
  addresses: [{type: InternalIP, address: 10.0.0.5}]
  nodeInfo: {kernelVersion: 6.1.0, osImage: Ubuntu 22.04, kubeletVersion: v0.1}
  devices:
    devices:
    - {id: gpu-0, resource: nvidia.com/gpu, index: 0, model: H100, memoryMib: 81559, numaNode: 0, health: Healthy}
    - {id: gpu-1, resource: nvidia.com/gpu, index: 1, model: H100, memoryMib: 81559, health: Unhealthy, healthReason: XID 79}
    links:
    - {a: gpu-0, b: gpu-1, kind: NVLink, lanes: 18}
";

#[test]
fn nodes_show_gpus_devices_and_topology() {
    let dir = tempfile::tempdir().expect("dir");
    ok(&["apply", "-f", &write(dir.path(), "node.yaml", GPU_NODE)]);
    let wide = ok(&["get", "no", "t-gpu-node", "-o", "wide"]);
    let row: Vec<&str> = wide
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(row[..3], ["t-gpu-node", "Ready", "worker"], "{wide}");
    assert_eq!(row.last(), Some(&"2×NVIDIA-H100"), "{wide}");
    let out = ok(&["describe", "node", "t-gpu-node"]);
    for want in [
        "Taints:",
        "nvidia.com/gpu:NoSchedule",
        "Capacity:",
        "Allocatable:",
        "gpu-1   H100",
        "Unhealthy (XID 79)",
        "gpu-0 <-> gpu-1  NVLink x18",
        "Events:",
    ] {
        assert!(out.contains(want), "no {want:?} in:\n{out}");
    }
}

#[test]
fn delete_by_name_selector_and_file() {
    let dir = tempfile::tempdir().expect("dir");
    let ns = "t-delete";
    let pods = [pod(ns, "a", "x"), pod(ns, "b", "y"), pod(ns, "c", "y")].join("---\n");
    ok(&["apply", "-f", &write(dir.path(), "ns.yaml", &namespace(ns))]);
    let f = write(dir.path(), "pods.yaml", &pods);
    ok(&["apply", "-f", &f]);

    assert_eq!(
        ok(&["delete", "pod", "a", "-n", ns, "--grace-period", "0"]),
        "pod \"a\" deleted\n"
    );
    fails(&["get", "pod", "a", "-n", ns]);
    assert_eq!(
        fails(&["delete", "po", "a", "-n", ns]),
        "error: NotFound (404): pods \"a\" not found"
    );
    assert_eq!(
        ok(&["delete", "po", "a", "-n", ns, "--ignore-not-found"]),
        ""
    );

    assert_eq!(
        ok(&["delete", "pods", "-l", "app=y", "-n", ns]),
        "pod \"b\" deleted\npod \"c\" deleted\n"
    );

    ok(&["apply", "-f", &f]);
    assert_eq!(
        ok(&["delete", "-f", &f]),
        "pod \"c\" deleted\npod \"b\" deleted\npod \"a\" deleted\n"
    );
    let gone = drover(&["get", "pods", "-n", ns]);
    assert_eq!(stdout(&gone), "");
}

#[test]
fn bad_manifests_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let cases = [
        (
            "malformed",
            "metadata: {name: x\n  oops: [\n",
            "malformed YAML",
        ),
        (
            "nokind",
            "apiVersion: v1\nmetadata:\n  name: x\n",
            "apiVersion and kind are required",
        ),
        (
            "unknown",
            "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: x\n",
            "unknown kind \"Widget\"",
        ),
        (
            "field",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\nspec:\n  containers:\n  - name: main\n    image: b\n    bogus: 1\n",
            "spec.containers[0].bogus",
        ),
        (
            "name",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: Bad_Name\nspec:\n  containers:\n  - name: main\n    image: b\n",
            "metadata.name",
        ),
        (
            "quantity",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\nspec:\n  containers:\n  - name: main\n    image: b\n    resources:\n      requests:\n        cpu: \"-1\"\n",
            "requests[cpu]",
        ),
    ];
    for (case, bad, want) in cases {
        let ns = format!("t-bad-{case}");
        // A good namespace first, the bad document after it: nothing may be created.
        let text = format!("{}---\n{bad}", namespace(&ns));
        let f = write(dir.path(), &format!("{case}.yaml"), &text);
        let line = fails(&["apply", "-f", &f]);
        assert!(line.contains(want), "{case}: {line}");
        assert!(
            line.contains(&f),
            "{case}: the error names the file: {line}"
        );
        fails(&["get", "ns", &ns]);
    }
    let json_bad = write(
        dir.path(),
        "bad.json",
        "{\"apiVersion\": \"v1\", \"kind\": ",
    );
    assert!(fails(&["apply", "-f", &json_bad]).contains("malformed JSON"));
}

#[test]
fn stdin_directories_and_json_lists() {
    let dir = tempfile::tempdir().expect("dir");
    let ns = "t-stdin";
    let s = server();
    let mut child = bare()
        .args(["--server", &s.url, "--token", &s.token, "apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let text = [namespace(ns), pod(ns, "from-stdin", "s")].join("---\n");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write stdin");
    let o = child.wait_with_output().expect("wait");
    assert_eq!(
        stdout(&o),
        "namespace/t-stdin created\npod/from-stdin created\n",
        "{}",
        stderr(&o)
    );

    let d = dir.path().join("manifests");
    std::fs::create_dir(&d).expect("mkdir");
    write(&d, "2-pod.yml", &pod(ns, "from-dir", "d"));
    let list = serde_json::json!({
        "apiVersion": "v1", "kind": "List",
        "items": [{"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "from-json", "namespace": ns},
                   "spec": {"containers": [{"name": "main", "image": "busybox"}]}}]
    });
    write(&d, "1-list.json", &list.to_string());
    write(&d, "README.md", "not a manifest");
    let out = ok(&["apply", "-f", &d.display().to_string()]);
    assert_eq!(out, "pod/from-json created\npod/from-dir created\n");
}

#[test]
fn credentials_config_file_and_errors() {
    let s = server();
    // No token at all: the server refuses, in one line.
    let o = bare()
        .args(["--server", &s.url, "get", "pods"])
        .output()
        .expect("run");
    assert!(!o.status.success());
    assert!(
        one_error_line(&o).starts_with("error: Unauthorized (401)"),
        "{}",
        stderr(&o)
    );

    // The environment and a config file work as well as the flags.
    let o = bare()
        .args(["get", "ns", "default"])
        .env("DROVER_SERVER", &s.url)
        .env("DROVER_TOKEN", &s.token)
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg = s.dir.path().join("config");
    std::fs::write(&cfg, format!("server: {}\ntoken: {}\n", s.url, s.token)).expect("config");
    let o = bare()
        .args(["get", "ns"])
        .env("DROVER_CONFIG", &cfg)
        .output()
        .expect("run");
    assert!(
        o.status.success() && stdout(&o).contains("default"),
        "{}",
        stderr(&o)
    );

    // An address nobody listens on is named in the error.
    let o = bare()
        .args(["--server", "127.0.0.1:1", "--token", "t", "get", "pods"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(3));
    assert!(one_error_line(&o).contains("127.0.0.1:1"));

    // Logs: whatever the server answers is printed as one line.
    assert!(fails(&["logs", "nope", "-n", "default"]).starts_with("error: "));
}

#[test]
fn get_watch_streams_changes() {
    let dir = tempfile::tempdir().expect("dir");
    let ns = "t-watch";
    ok(&["apply", "-f", &write(dir.path(), "ns.yaml", &namespace(ns))]);
    ok(&[
        "apply",
        "-f",
        &write(dir.path(), "a.yaml", &pod(ns, "first", "w")),
    ]);
    let s = server();
    let mut child = bare()
        .args([
            "--server", &s.url, "--token", &s.token, "get", "pods", "-n", ns, "-w",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("a line from get -w")
    };
    assert!(next().starts_with("NAME"));
    assert!(next().starts_with("first"));
    ok(&[
        "apply",
        "-f",
        &write(dir.path(), "b.yaml", &pod(ns, "second", "w")),
    ]);
    assert!(next().starts_with("second"));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn philly_flags_that_need_or_exclude_live_are_refused() {
    let o = bare()
        .args(["bench", "philly", "--idle-timeout-s", "5"])
        .output()
        .expect("run drover");
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert!(e.contains("--live"), "{e}");
    let o = bare()
        .args(["bench", "philly", "--live", "--nodes-csv", "x.csv"])
        .output()
        .expect("run drover");
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert!(e.contains("--live") && e.contains("--nodes-csv"), "{e}");
}
