//! `drover up --demo` as a user runs it: the real binary with its own data directory, the demo
//! Job running as a real process to Complete, its log, a clean stop on SIGINT (exit 0, no
//! process left behind) and a second `drover up` that finds every object again.

mod common;

use std::time::Duration;

use common::{World, alive, descendants, has_condition, name, wait_for};
use nix::sys::signal::Signal;

#[test]
fn up_demo_completes_stops_on_sigint_and_resumes() {
    let mut w = World::new();
    let data = w.path().join("data");
    let config = w.config();
    let (data, config) = (data.to_str().unwrap(), config.to_str().unwrap());
    let up = [
        "up",
        "--data-dir",
        data,
        "--listen",
        "127.0.0.1:0",
        "--write-config",
        config,
    ];
    let mut first = up.to_vec();
    first.push("--demo");
    let pid = w.spawn("up1", &first);
    w.track_state_dir(w.path().join("data").join("agent"));
    w.wait_config(Duration::from_secs(60));

    wait_for(Duration::from_secs(60), "the demo Job to complete", || {
        let job = w.get_json(&["get", "job", "hello", "-n", "demo"])?;
        has_condition(&job, "Complete").then_some(())
    });
    let pods = w.items(&["get", "pods", "-n", "demo"]);
    assert_eq!(pods.len(), 1, "one demo pod: {pods:?}");
    let pod = name(&pods[0]);
    assert_eq!(pods[0]["status"]["phase"], "Succeeded");
    let log = w.ok(&["logs", "-n", "demo", &pod]);
    assert!(log.contains("hello"), "the demo pod's log: {log:?}");
    assert!(log.contains("done"), "the demo pod's log: {log:?}");

    // What the README shows.
    let jobs = w.ok(&["get", "jobs", "-n", "demo"]);
    assert!(
        jobs.lines()
            .any(|l| l.starts_with("hello") && l.contains("Complete") && l.contains("1/1")),
        "{jobs}"
    );
    let wide = w.ok(&["get", "pods", "-A", "-o", "wide"]);
    assert!(wide.contains(&pod) && wide.contains("NODE"), "{wide}");
    let described = w.ok(&["describe", "job", "hello", "-n", "demo"]);
    assert!(
        described.contains("Complete") && described.contains("SuccessfulCreate"),
        "{described}"
    );

    // Ctrl-C: exit 0, nothing left running.
    let children = descendants(pid);
    w.signal("up1", Signal::SIGINT);
    let status = w
        .wait_exit("up1", Duration::from_secs(30))
        .expect("drover up stops within 30s of SIGINT");
    assert!(status.success(), "exit status {status:?}: {}", w.log("up1"));
    let left: Vec<u32> = children.into_iter().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");

    // A second `drover up` resumes with every object intact (and no second demo pod).
    std::fs::remove_file(w.config()).expect("remove config");
    w.spawn("up2", &up);
    w.wait_config(Duration::from_secs(60));
    let job = wait_for(Duration::from_secs(30), "the Job after restart", || {
        w.get_json(&["get", "job", "hello", "-n", "demo"])
    });
    assert!(has_condition(&job, "Complete"), "{job}");
    let again = w.items(&["get", "pods", "-n", "demo"]);
    assert_eq!(
        again.iter().map(name).collect::<Vec<_>>(),
        vec![pod.clone()],
        "the same pod, not a new one"
    );
    let log = w.ok(&["logs", "-n", "demo", &pod]);
    assert!(log.contains("hello"), "the log survives a restart: {log:?}");
    w.signal("up2", Signal::SIGINT);
    let status = w
        .wait_exit("up2", Duration::from_secs(30))
        .expect("second drover up stops");
    assert!(status.success(), "exit status {status:?}: {}", w.log("up2"));
}

/// The pods of a stopped `drover up` keep running; the next `drover up` adopts them and records
/// how they really end: a Job's pod that exits 0 completes the Job with no failure counted, a
/// pod that exits 3 is Failed with code 3 (issue 14: both were `ContainerStatusUnknown`, 137).
#[test]
fn pods_running_across_a_restart_of_drover_up_keep_their_exit_codes() {
    let mut w = World::new();
    let data = w.path().join("data");
    let config = w.config();
    let (data_s, config_s) = (data.to_str().unwrap(), config.to_str().unwrap());
    let up = [
        "up",
        "--data-dir",
        data_s,
        "--listen",
        "127.0.0.1:0",
        "--write-config",
        config_s,
    ];
    w.spawn("up1", &up);
    w.track_state_dir(data.join("agent"));
    w.wait_config(Duration::from_secs(60));
    let manifest = w.path().join("work.yaml");
    std::fs::write(
        &manifest,
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: steady, namespace: default}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, command: [sh, -c, "sleep 6; echo finished"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: three, namespace: default}
spec:
  restartPolicy: Never
  containers: [{name: main, command: [sh, -c, "sleep 6; exit 3"]}]
"#,
    )
    .unwrap();
    w.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    wait_for(Duration::from_secs(60), "both pods running", || {
        let pods = w.items(&["get", "pods"]);
        (pods.len() == 2 && pods.iter().all(|p| p["status"]["phase"] == "Running")).then_some(())
    });

    w.signal("up1", Signal::SIGINT);
    let status = w
        .wait_exit("up1", Duration::from_secs(30))
        .expect("drover up stops within 30s of SIGINT");
    assert!(status.success(), "exit status {status:?}: {}", w.log("up1"));
    std::fs::remove_file(w.config()).expect("remove config");
    w.spawn("up2", &up);
    w.wait_config(Duration::from_secs(60));

    let job = wait_for(Duration::from_secs(60), "the Job to finish", || {
        let job = w.get_json(&["get", "job", "steady"])?;
        (has_condition(&job, "Complete") || has_condition(&job, "Failed")).then_some(job)
    });
    assert!(has_condition(&job, "Complete"), "{job}");
    assert_eq!(job["status"]["failed"].as_i64().unwrap_or(0), 0, "{job}");
    let pods = w.items(&["get", "pods", "-l", "batch.kubernetes.io/job-name=steady"]);
    assert_eq!(pods.len(), 1, "no replacement pod: {pods:?}");
    assert!(w.ok(&["logs", &name(&pods[0])]).contains("finished"));

    let three = wait_for(Duration::from_secs(60), "the pod that exits 3", || {
        let p = w.get_json(&["get", "pod", "three"])?;
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    let terminated = &three["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 3, "{three}");
    assert_eq!(terminated["reason"], "Error", "{three}");
    w.signal("up2", Signal::SIGINT);
    w.wait_exit("up2", Duration::from_secs(30))
        .expect("second drover up stops");
}
