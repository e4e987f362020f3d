//! The README's gang example with the real binary: `drover up --simulate-nodes 4 --node-profile
//! h100-8` (four full agents with simulated GPUs that run real processes) and `drover apply -f
//! deploy/examples/gang-training-job.yaml`: four 8-GPU pods, one per node, print the
//! distributed-training environment and finish; the Job becomes Complete.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{World, has_condition, name, wait_for};
use nix::sys::signal::Signal;

fn var<'a>(log: &'a str, key: &str) -> Option<&'a str> {
    log.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn gang_example_runs_real_processes_on_simulated_nodes() {
    let mut w = World::new();
    let data = w.path().join("data");
    for i in 0..4 {
        w.track_state_dir(data.join("sim").join(format!("sim-{i}")));
    }
    w.spawn_server(
        "up",
        "up",
        &["--simulate-nodes", "4", "--node-profile", "h100-8"],
    );
    wait_for(Duration::from_secs(30), "4 simulated nodes", || {
        let nodes = w.items(&["get", "nodes"]);
        (nodes.iter().filter(|n| name(n).starts_with("sim-")).count() == 4).then_some(())
    });
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/examples/gang-training-job.yaml"
    );
    w.ok(&["apply", "-f", manifest]);
    wait_for(Duration::from_secs(60), "the gang Job to complete", || {
        let job = w.get_json(&["get", "job", "train-gang"])?;
        has_condition(&job, "Complete").then_some(())
    });

    let pods = w.items(&[
        "get",
        "pods",
        "-l",
        "batch.kubernetes.io/job-name=train-gang",
    ]);
    assert_eq!(pods.len(), 4, "{pods:?}");
    let nodes: BTreeSet<String> = pods
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(nodes.len(), 4, "one pod per 8-GPU node: {nodes:?}");
    let mut ranks = BTreeSet::new();
    for p in &pods {
        let pod = name(p);
        let log = w.ok(&["logs", &pod]);
        let index = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .unwrap_or_default();
        let rank = var(&log, "RANK").unwrap_or_else(|| panic!("{pod}: no RANK in {log:?}"));
        assert_eq!(rank, index, "{pod}: rank follows the completion index");
        assert_eq!(var(&log, "WORLD_SIZE"), Some("4"), "{pod}: {log:?}");
        let master = var(&log, "MASTER_ADDR").unwrap_or_default();
        assert!(!master.is_empty(), "{pod}: empty MASTER_ADDR in {log:?}");
        assert_eq!(var(&log, "MASTER_PORT"), Some("29500"), "{pod}: {log:?}");
        ranks.insert(rank.to_string());
    }
    assert_eq!(
        ranks,
        BTreeSet::from(["0", "1", "2", "3"].map(String::from))
    );

    w.signal("up", Signal::SIGINT);
    let status = w
        .wait_exit("up", Duration::from_secs(30))
        .expect("drover up stops");
    assert!(status.success(), "{status:?}");
}
