//! `drover bench philly --live` on a small synthetic trace: the real control plane, 4 hollow
//! 8-GPU nodes, 20 jobs (1-GPU pods, 8-GPU pods and a 16-GPU gang) compressed so that the run
//! takes a few seconds. Every job must complete, no faster than its compressed duration, with
//! the gang's pods all bound, and the GPUs in use never above the cluster's.

use std::time::Duration;

use drover_benches::cluster::ClusterOptions;
use drover_benches::scenario::philly::{self, POLICIES};
use drover_benches::scenario::philly_live::{self, Options, compressed_queue};
use drover_benches::{Progress, Report};
use drover_scheduler::SchedulerConfig;

/// Trace seconds ÷ this = wall seconds.
const COMPRESSION: f64 = 1000.0;

/// 20 jobs, one every 100 trace seconds (0.1 s of wall time): 14 of 1 GPU, 4 of 8, one
/// 16-GPU gang, one 2-GPU job, running 100–600 trace seconds each. From 500 to 700 the gang and
/// two 8-GPU jobs hold all 32 GPUs, so the jobs behind them queue.
fn trace() -> String {
    let mut csv = String::from("job_idx,submit_s,duration_s,num_gpus,vc\n");
    for i in 0..20u32 {
        let gpus = match i {
            3 => 16,
            4 | 5 | 9 | 15 => 8,
            7 => 2,
            _ => 1,
        };
        let submit = f64::from(i) * 100.0;
        let duration = 100.0 + f64::from(i % 6) * 100.0;
        csv.push_str(&format!("{i},{submit},{duration},{gpus},vc\n"));
    }
    csv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_replay_completes_every_job_on_hollow_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let jobs_csv = dir.path().join("jobs.csv");
    std::fs::write(&jobs_csv, trace()).unwrap();
    let opts = Options {
        trace: philly::Options {
            jobs_csv: jobs_csv.clone(),
            nodes_csv: dir.path().join("unused.csv"),
            nodes: Some(4),
            time_compression: COMPRESSION,
            max_jobs: None,
            policies: POLICIES.iter().map(|p| p.to_string()).collect(),
        },
        cluster: ClusterOptions {
            scheduler: Some(SchedulerConfig::default().with_queue(compressed_queue(COMPRESSION))),
            ..Default::default()
        },
        idle_timeout: Duration::from_secs(10),
    };
    let r = philly_live::run(&opts, &Progress::hidden()).await.unwrap();
    let jobs = philly::parse_jobs(&trace(), "trace").unwrap();
    assert_eq!(r.philly.jobs, 20);
    assert_eq!(r.philly.gpus, 32);
    assert_eq!(r.philly.results.len(), 2);
    for (res, live) in r.philly.results.iter().zip(&r.live) {
        let p = &res.policy;
        assert_eq!(live.create_errors, 0, "{p}: {:?}", live.first_error);
        assert_eq!(live.pods_failed, 0, "{p}");
        assert!(!live.idle_timeout, "{p}");
        // 18 one-pod jobs, the 2-pod gang.
        assert_eq!(live.pods_created, 21, "{p}");
        assert_eq!(
            live.jobs_started, 20,
            "{p}: the gang's pods were not all bound"
        );
        assert_eq!(
            (res.jobs_done, res.jobs_not_done, res.jobs_unplaceable),
            (20, 0, 0),
            "{p}"
        );
        // In trace seconds: no job completes faster than it runs, nor starts before it is
        // submitted.
        assert_eq!(live.jobs.len(), 20, "{p}");
        for (j, l) in jobs.iter().zip(&live.jobs) {
            assert_eq!(j.idx, l.idx);
            let (Some(q), Some(jct)) = (l.queueing_s, l.jct_s) else {
                panic!("{p}: job {} did not complete: {l:?}", j.idx);
            };
            // (Not jct ≥ q + duration: the agent may start a pod a moment before the harness's
            // watch shows it bound.)
            assert!(
                q >= 0.0 && q <= jct,
                "{p}: job {} queued {q} of {jct}",
                j.idx
            );
            assert!(
                jct >= j.duration_s,
                "{p}: job {} completed in {jct} with a duration of {}",
                j.idx,
                j.duration_s
            );
        }
        assert_eq!(res.jct_s.count, 20, "{p}");
        assert!(!res.utilisation_over_time.is_empty(), "{p}");
        for (t, u) in &res.utilisation_over_time {
            assert!((0.0..=1.0).contains(u), "{p}: utilisation {u} at {t}");
        }
        assert!(
            res.gpu_utilisation > 0.0 && res.gpu_utilisation <= 1.0,
            "{p}: {}",
            res.gpu_utilisation
        );
    }
    assert!(!r.tables().is_empty());
    assert!(serde_json::to_value(&r).is_ok());
}

#[tokio::test]
async fn live_replay_refuses_a_remote_server() {
    let opts = Options {
        trace: philly::Options {
            jobs_csv: "jobs.csv".into(),
            nodes_csv: "nodes.csv".into(),
            nodes: Some(4),
            time_compression: COMPRESSION,
            max_jobs: None,
            policies: vec!["drover".into()],
        },
        cluster: ClusterOptions {
            server: Some(drover_client::ClientConfig {
                server: "http://127.0.0.1:1".into(),
                token: String::new(),
            }),
            ..Default::default()
        },
        idle_timeout: Duration::from_secs(1),
    };
    let e = philly_live::run(&opts, &Progress::hidden())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("--server"), "{e}");
}
