//! The control plane away for 60 s, the work goes on: real `drover` processes (API servers,
//! scheduler, controller manager, two node agents running real pods), every API server killed
//! with SIGKILL for 60 s, then started again on the same addresses. Running pods keep their
//! processes throughout; a pod that finished during the outage is reported with its real exit;
//! afterwards there is no duplicated pod, no lost pod, no restart, and the nodes stay Ready.
//!
//! With etcd installed the control plane is two API servers on a 3-member etcd cluster, and every
//! client is given both; without it, one API server on the embedded store.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{World, alive, has_condition, name, recorded_pod_pids, wait_for};
use drover_apiserver::storage::etcd_cluster::EtcdCluster;
use nix::sys::signal::Signal;
use serde_json::Value;

const OUTAGE: Duration = Duration::from_secs(60);
const JOB_LABEL: &str = "batch.kubernetes.io/job-name";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn job(name: &str, pods: usize, script: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
  parallelism: {pods}
  completions: {pods}
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: busybox
        command: ["sh", "-c", "{script}"]
        resources:
          limits:
            nvidia.com/gpu: 1
"#
    )
}

/// Pods of a Job: name → (uid, node, phase, restart count).
fn pods_of(w: &World, job: &str) -> BTreeMap<String, (String, String, String, i64)> {
    w.items(&["get", "pods", "-l", &format!("{JOB_LABEL}={job}")])
        .iter()
        .map(|p| {
            let restarts = p["status"]["containerStatuses"].as_array().map_or(0, |cs| {
                cs.iter().filter_map(|c| c["restartCount"].as_i64()).sum()
            });
            (
                name(p),
                (
                    p["metadata"]["uid"].as_str().unwrap_or("").to_string(),
                    p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                    p["status"]["phase"].as_str().unwrap_or("").to_string(),
                    restarts,
                ),
            )
        })
        .collect()
}

fn ready_nodes(w: &World) -> usize {
    w.items(&["get", "nodes"])
        .iter()
        .filter(|n: &&Value| {
            n["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .count()
}

#[test]
fn work_goes_on_while_every_api_server_is_down_for_60_s() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let etcd = if EtcdCluster::binary().is_some() {
        Some(
            rt.block_on(EtcdCluster::start(3))
                .expect("start a 3-member etcd cluster"),
        )
    } else {
        eprintln!(
            "etcd is not installed: one API server on the embedded store instead of two on etcd"
        );
        None
    };
    let mut w = World::new();
    let data = w.path().join("data");
    let store = etcd
        .as_ref()
        .map_or("embedded".to_string(), EtcdCluster::url);
    let servers: Vec<(String, u16)> = (0..if etcd.is_some() { 2 } else { 1 })
        .map(|i| (format!("api{i}"), free_port()))
        .collect();
    let server_list = servers
        .iter()
        .map(|(_, port)| format!("http://127.0.0.1:{port}"))
        .collect::<Vec<_>>()
        .join(",");
    let start_servers = |w: &mut World, round: usize| {
        for (i, (name, port)) in servers.iter().enumerate() {
            let listen = format!("127.0.0.1:{port}");
            // The first writes the config the test's own commands use; the rest their own.
            let config = if i == 0 {
                w.config()
            } else {
                w.path().join(format!("{name}.config"))
            };
            w.spawn(
                &format!("{name}-{round}"),
                &[
                    "apiserver",
                    "--store",
                    &store,
                    "--data-dir",
                    data.to_str().unwrap(),
                    "--listen",
                    &listen,
                    "--write-config",
                    config.to_str().unwrap(),
                ],
            );
            if i == 0 && round == 0 {
                w.wait_config(Duration::from_secs(30));
            }
        }
    };
    start_servers(&mut w, 0);
    w.spawn("scheduler", &["scheduler", "--server", &server_list]);
    w.spawn(
        "controllers",
        &["controllers", "--leader-elect", "--server", &server_list],
    );
    for node in ["n1", "n2"] {
        w.spawn_agent(node, &["--server", &server_list]);
    }
    wait_for(Duration::from_secs(60), "both nodes Ready", || {
        (ready_nodes(&w) == 2).then_some(())
    });
    for (name, pods, script) in [
        ("steady", 3, "sleep 1000"),
        // Ends while the control plane is away, with a code the agent must report then.
        ("ends", 1, "sleep 15; exit 0"),
    ] {
        let path = w.path().join(format!("{name}.yaml"));
        std::fs::write(&path, job(name, pods, script)).expect("write manifest");
        w.ok(&["apply", "-f", path.to_str().unwrap()]);
    }
    let before = wait_for(Duration::from_secs(60), "every pod Running", || {
        let steady = pods_of(&w, "steady");
        let ends = pods_of(&w, "ends");
        let running = |m: &BTreeMap<String, (String, String, String, i64)>, n: usize| {
            m.len() == n && m.values().all(|p| p.2 == "Running")
        };
        (running(&steady, 3) && running(&ends, 1)).then_some((steady, ends))
    });
    let pids: Vec<u32> = ["n1", "n2"]
        .iter()
        .flat_map(|n| recorded_pod_pids(&w.path().join(n)))
        .collect();
    assert_eq!(pids.len(), 4, "one recorded process per running pod");

    for (name, _) in &servers {
        w.signal(&format!("{name}-0"), Signal::SIGKILL);
        let _ = w.wait_exit(&format!("{name}-0"), Duration::from_secs(10));
    }
    std::thread::sleep(OUTAGE);
    let steady_alive = ["n1", "n2"]
        .iter()
        .flat_map(|n| recorded_pod_pids(&w.path().join(n)))
        .filter(|pid| alive(*pid))
        .count();
    assert_eq!(
        steady_alive, 3,
        "the three steady pods still run after {OUTAGE:?} without an API server (the short one ended)"
    );

    start_servers(&mut w, 1);
    wait_for(
        Duration::from_secs(60),
        "the Job that ended meanwhile to complete",
        || {
            let job = w.get_json(&["get", "job", "ends"])?;
            has_condition(&job, "Complete").then_some(())
        },
    );
    let (steady_before, ends_before) = before;
    let steady_after = pods_of(&w, "steady");
    assert_eq!(
        steady_after, steady_before,
        "the steady pods are the same pods (uid, node), still Running, never restarted"
    );
    let ends_after = pods_of(&w, "ends");
    assert_eq!(
        ends_after.keys().collect::<Vec<_>>(),
        ends_before.keys().collect::<Vec<_>>(),
        "no pod of the finished Job was duplicated or lost"
    );
    assert!(ends_after.values().all(|p| p.2 == "Succeeded" && p.3 == 0));
    assert_eq!(ready_nodes(&w), 2, "no node was judged lost for the outage");
    let still: Vec<u32> = ["n1", "n2"]
        .iter()
        .flat_map(|n| recorded_pod_pids(&w.path().join(n)))
        .collect();
    assert_eq!(still.len(), 3);
    assert!(
        still.iter().all(|p| pids.contains(p) && alive(*p)),
        "the steady pods kept their processes"
    );
    drop(w);
    drop(etcd);
}
