//! Leader election across processes: two `drover scheduler --leader-elect` and two
//! `drover controllers --leader-elect` against one API server. One of each holds its Lease and
//! acts; when the active scheduler is killed with SIGKILL, the standby takes the Lease and binds
//! the next pod. Prints how long the takeover took (a figure, not asserted: the bound is the
//! lease duration given on the command line).

mod common;

use std::time::{Duration, Instant};

use common::{World, wait_for};
use nix::sys::signal::Signal;
use serde_json::Value;

const NODE: &str = r#"apiVersion: v1
kind: Node
metadata:
  name: n1
  labels: {kubernetes.io/hostname: n1}
status:
  capacity: {cpu: "64", memory: 256Gi, pods: "1000"}
  allocatable: {cpu: "64", memory: 256Gi, pods: "1000"}
  conditions:
  - {type: Ready, status: "True"}
"#;

fn pod(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  containers:
  - name: c
    command: ["true"]
    resources: {{requests: {{cpu: 100m}}}}
"#
    )
}

fn holder(w: &World, lease: &str) -> Option<String> {
    let lease: Value = w.get_json(&["get", "lease", lease, "-n", "kube-system"])?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_string)
}

fn node_of(w: &World, pod: &str) -> Option<String> {
    let pod = w.get_json(&["get", "pod", pod])?;
    pod["spec"]["nodeName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

fn apply(w: &World, name: &str, yaml: &str) {
    let path = w.path().join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).expect("write manifest");
    w.ok(&["apply", "-f", path.to_str().expect("utf-8 path")]);
}

#[test]
fn standby_scheduler_and_controllers_take_over_from_a_killed_leader() {
    let mut w = World::new();
    w.spawn_server("api", "apiserver", &[]);
    apply(&w, "node", NODE);
    let election = [
        "--leader-elect",
        "--leader-elect-lease-duration",
        "3s",
        "--leader-elect-renew-deadline",
        "2s",
        "--leader-elect-retry-period",
        "250ms",
    ];
    let with = |component: &str, identity: &str| {
        let mut args = vec![component, "--identity", identity];
        args.extend(election);
        args.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let spawn = |w: &mut World, name: &str, args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        w.spawn(name, &args);
    };
    spawn(&mut w, "s1", with("scheduler", "s1"));
    wait_for(Duration::from_secs(30), "s1 to lead", || {
        (holder(&w, "drover-scheduler").as_deref() == Some("s1")).then_some(())
    });
    spawn(&mut w, "s2", with("scheduler", "s2"));
    spawn(&mut w, "c1", with("controllers", "c1"));
    wait_for(Duration::from_secs(30), "c1 to lead", || {
        (holder(&w, "drover-controller-manager").as_deref() == Some("c1")).then_some(())
    });
    spawn(&mut w, "c2", with("controllers", "c2"));

    apply(&w, "p1", &pod("p1"));
    wait_for(Duration::from_secs(30), "p1 to be bound", || {
        node_of(&w, "p1")
    });
    // Well past a lease duration: the standbys keep waiting while the leaders renew.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(holder(&w, "drover-scheduler").as_deref(), Some("s1"));
    assert_eq!(
        holder(&w, "drover-controller-manager").as_deref(),
        Some("c1")
    );
    assert!(
        !w.log("s2").contains("scheduler started"),
        "the standby scheduler must not schedule while s1 leads:\n{}",
        w.log("s2")
    );

    w.signal("s1", Signal::SIGKILL);
    let killed = Instant::now();
    apply(&w, "p2", &pod("p2"));
    wait_for(Duration::from_secs(30), "the standby to bind p2", || {
        node_of(&w, "p2")
    });
    let takeover = killed.elapsed();
    assert_eq!(holder(&w, "drover-scheduler").as_deref(), Some("s2"));
    assert!(w.log("s2").contains("became leader"), "{}", w.log("s2"));

    w.signal("c1", Signal::SIGKILL);
    wait_for(Duration::from_secs(30), "c2 to take over", || {
        (holder(&w, "drover-controller-manager").as_deref() == Some("c2")).then_some(())
    });
    println!(
        "scheduler takeover: p2 bound {:.2} s after kill -9 of the leader (lease 3 s)",
        takeover.as_secs_f64()
    );
}
