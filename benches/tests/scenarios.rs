//! Every scenario in a small configuration, its report checked for consistency: counts add
//! up, no pod is bound twice, percentiles are ordered, constraints hold, and the Philly replay
//! matches a hand-worked example. (The openb replay has its own tests in `openb.rs`.)

use std::time::Duration;

use drover_benches::cluster::ClusterOptions;
use drover_benches::podrun::{PodRunSummary, RunOptions};
use drover_benches::scenario::{self, ClusterSpec};
use drover_benches::workload::{Layout, ShapeMix};
use drover_benches::{Progress, Report};
use drover_scheduler::SchedulerConfig;
use drover_scheduler::queue::QueueConfig;

fn spec(nodes: usize, rack_size: usize) -> ClusterSpec {
    ClusterSpec {
        nodes,
        profile: "h100-8".into(),
        layout: Layout {
            zones: 10,
            rack_size,
        },
        hollow: false,
        cluster: ClusterOptions {
            // A pod turned away while its constraint's peers are still being bound waits for
            // the unschedulable flush (60 s by default); these tests check the harness, not
            // that wait, so it is short here.
            scheduler: Some(SchedulerConfig::default().with_queue(QueueConfig {
                unschedulable_flush: Duration::from_secs(2),
                ..Default::default()
            })),
            ..Default::default()
        },
    }
}

fn run_opts() -> RunOptions {
    RunOptions {
        concurrency: 16,
        idle_timeout: Duration::from_secs(10),
        label: "pods".into(),
        rate: 0.0,
    }
}

fn consistent(r: &PodRunSummary, expected: usize) {
    assert_eq!(r.created + r.create_errors, expected, "{r:?}");
    assert_eq!(r.create_errors, 0, "{:?}", r.first_error);
    assert_eq!(r.bound + r.pending, r.created);
    assert_eq!(r.bound_twice, 0);
    assert_eq!(r.latency.count, r.bound);
    assert!(r.latency.is_ordered(), "{:?}", r.latency);
    let over_time: f64 = r
        .bound_per_s_over_time
        .windows(2)
        .map(|w| w[1].1 * (w[1].0 - w[0].0))
        .sum::<f64>()
        + r.bound_per_s_over_time.first().map_or(0.0, |p| p.0 * p.1);
    if !r.bound_per_s_over_time.is_empty() {
        assert!(
            (over_time - r.bound as f64).abs() < 0.5,
            "{over_time} vs {}",
            r.bound
        );
    }
}

fn renders<R: Report>(r: &R) {
    assert!(!r.tables().is_empty());
    assert!(serde_json::to_value(r).is_ok());
    let dir = tempfile::tempdir().unwrap();
    drover_benches::plot::write_svg(&dir.path().join("p.svg"), &r.charts()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_small() {
    let opts = scenario::throughput::Options {
        cluster: spec(8, 64),
        pods: 300,
        shape_mix: ShapeMix::parse("cpu:80,gpu1:15,share500:5").unwrap(),
        seed: 1,
        run: run_opts(),
    };
    let r = scenario::throughput::run(&opts, &Progress::hidden())
        .await
        .unwrap();
    consistent(&r.run, 300);
    assert_eq!(r.run.bound, 300, "everything fits");
    assert!(r.run.pods_per_s > 0.0 && r.run.usage.cpu_seconds > 0.0);
    renders(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constraints_small() {
    let opts = scenario::constraints::Options {
        cluster: spec(8, 64),
        pods: 100,
        kinds: vec![],
        run: run_opts(),
    };
    let r = scenario::constraints::run(&opts, &Progress::hidden())
        .await
        .unwrap();
    assert_eq!(r.runs.len(), scenario::constraints::KINDS.len());
    for s in &r.runs {
        consistent(&s.run, 100);
        assert_eq!(s.run.bound, 100, "{}", s.kind);
        assert_eq!(s.violations, 0, "{}", s.kind);
    }
    renders(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gang_small() {
    let opts = scenario::gang::Options {
        cluster: spec(16, 4),
        running: 60,
        running_mix: ShapeMix::parse("cpu:90,gpu1:10").unwrap(),
        gangs: 3,
        gang_size: 3,
        gpus_per_pod: 8,
        topology_key: "rack".into(),
        burst_allowance: Duration::from_secs(1),
        run: run_opts(),
    };
    let r = scenario::gang::run(&opts, &Progress::hidden())
        .await
        .unwrap();
    consistent(&r.load, 60);
    assert_eq!(r.gangs_placed, 3, "{:?}", r.gangs);
    assert_eq!(r.gangs_held_partial, 0);
    assert_eq!(r.topology_violations, 0);
    assert_eq!(r.pods_bound_twice, 0);
    for g in &r.gangs {
        assert_eq!(g.bound, 3);
        assert!(g.decision_ms <= g.all_bound_ms);
    }
    assert!(r.decision.is_ordered() && r.all_bound.is_ordered());
    renders(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_small_both_transports() {
    for transport in ["grpc", "rest"] {
        let opts = scenario::api::Options {
            cluster: ClusterOptions::default(),
            clients: 4,
            objects: 200,
            transport: transport.parse().unwrap(),
            idle_timeout: Duration::from_secs(10),
        };
        let r = scenario::api::run(&opts, &Progress::hidden())
            .await
            .unwrap();
        assert_eq!(
            (r.created, r.errors),
            (200, 0),
            "{transport}: {:?}",
            r.first_error
        );
        assert_eq!(r.watch_events, 200, "{transport}");
        assert!(r.create_latency.is_ordered() && r.watch_latency.is_ordered());
        renders(&r);
    }
}

/// One 8-GPU node. A (6 GPUs, t=0, 10 s), B (4 GPUs, t=1, 10 s), C (1 GPU, t=2, 10 s),
/// D (16 GPUs: never fits).
/// drover: A 0–10; C backfills 2–12; B 10–20. JCT 10, 19, 10 (mean 13); queueing 0, 9, 0.
/// fifo: A 0–10; B blocks C; B and C 10–20. JCT 10, 19, 18 (mean 15.67); queueing 0, 9, 8.
/// GPU-seconds 6·10 + 4·10 + 1·10 = 110 over 8 GPUs × 20 s: 68.75% either way.
#[test]
fn philly_hand_worked() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs.csv");
    std::fs::write(&jobs, "job_idx,submit_s,duration_s,num_gpus,vc\n0,0,10,6,a\n1,1,10,4,a\n2,2,10,1,a\n3,3,10,16,a\n").unwrap();
    let opts = scenario::philly::Options {
        jobs_csv: jobs,
        nodes_csv: dir.path().join("unused.csv"),
        nodes: Some(1),
        time_compression: 1.0,
        max_jobs: None,
        policies: vec!["drover".into(), "fifo".into()],
    };
    let r = scenario::philly::run(&opts, &Progress::hidden()).unwrap();
    let (d, f) = (&r.results[0], &r.results[1]);
    for p in [d, f] {
        assert_eq!(p.jobs_done + p.jobs_unplaceable, 4);
        assert_eq!(p.jobs_unplaceable, 1);
        assert!(
            (p.gpu_utilisation - 0.6875).abs() < 1e-9,
            "{}",
            p.gpu_utilisation
        );
        assert!((p.makespan_s - 20.0).abs() < 1e-9);
    }
    assert!((d.jct_s.mean - 13.0).abs() < 1e-9, "{:?}", d.jct_s);
    assert!((d.queueing_s.max - 9.0).abs() < 1e-9);
    assert!((f.jct_s.mean - 47.0 / 3.0).abs() < 1e-9, "{:?}", f.jct_s);
    assert!((f.queueing_s.mean - 17.0 / 3.0).abs() < 1e-9);
    renders(&r);
}

#[test]
fn philly_gangs_on_the_real_trace_prefix() {
    let data = drover_benches::openb::data_dir().join("philly");
    if !data.exists() {
        eprintln!("skipped: no {}", data.display());
        return;
    }
    let opts = scenario::philly::Options {
        jobs_csv: data.join("philly_jobs_normalized.csv"),
        nodes_csv: data.join("philly_vc_nodes_from_HeliosArtifact.csv"),
        nodes: Some(8),
        time_compression: 1000.0,
        max_jobs: Some(300),
        policies: vec!["drover".into(), "fifo".into()],
    };
    let r = scenario::philly::run(&opts, &Progress::hidden()).unwrap();
    for p in &r.results {
        assert_eq!(p.jobs_done + p.jobs_unplaceable, 300);
        assert!(p.gpu_utilisation > 0.0 && p.gpu_utilisation <= 1.0);
        assert!(p.jct_s.p50 <= p.jct_s.p99 && p.queueing_s.p99 <= p.jct_s.max);
    }
}
