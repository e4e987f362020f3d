//! `--hollow`: a small throughput run whose nodes are served by hollow node agents. The agents
//! must have started the pods (status written), which bare Node objects never do.

use std::time::Duration;

use drover_benches::cluster::ClusterOptions;
use drover_benches::podrun::RunOptions;
use drover_benches::scenario::{self, ClusterSpec};
use drover_benches::workload::{Layout, ShapeMix};
use drover_benches::{BenchError, Progress, Report};
use drover_client::ClientConfig;

fn spec(nodes: usize) -> ClusterSpec {
    ClusterSpec {
        nodes,
        profile: "h100-8".into(),
        layout: Layout::default(),
        hollow: true,
        cluster: ClusterOptions::default().with_scheduler(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_on_hollow_nodes() {
    let opts = scenario::throughput::Options {
        cluster: spec(5),
        pods: 50,
        shape_mix: ShapeMix::parse("cpu:80,gpu1:20").unwrap(),
        seed: 1,
        run: RunOptions {
            concurrency: 8,
            idle_timeout: Duration::from_secs(10),
            label: "pods".into(),
            rate: 0.0,
        },
    };
    assert!(opts.params().contains(&("hollow".into(), "true".into())));
    let r = scenario::throughput::run(&opts, &Progress::hidden())
        .await
        .unwrap();
    assert!(r.hollow);
    assert_eq!(r.run.create_errors, 0, "{:?}", r.run.first_error);
    assert_eq!(r.run.bound, 50, "{:?}", r.run);
    assert_eq!(r.run.pending, 0);
    assert_eq!(r.run.bound_twice, 0);
    let started = r.pods_started.expect("pods listed");
    assert!(
        started > 0 && started <= 50,
        "pods the agents reported Running/Succeeded: {started}"
    );
    let table = format!("{:?}", r.tables());
    assert!(table.contains("hollow"), "{table}");
}

#[tokio::test]
async fn hollow_is_refused_with_a_server() {
    let mut spec = spec(1);
    spec.cluster.server = Some(ClientConfig {
        server: "http://127.0.0.1:1".into(),
        token: String::new(),
    });
    let err = scenario::setup(&spec, &Progress::hidden())
        .await
        .expect_err("--hollow with --server");
    assert!(matches!(err, BenchError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("--hollow"), "{err}");
}
