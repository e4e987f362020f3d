//! The openb replay on hand-made CSVs whose outcome is worked out by hand, its consistency
//! (counts add up, no pod bound twice), CSV errors, and one quick seed of the real trace.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use drover_benches::openb::{
    self, GpuAsk, OpenbError, OpenbOptions, OpenbReport, Policy, csv::parse_pods,
};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn replay(pods: &str, seeds: u64, demand: f64) -> OpenbReport {
    let opts = OpenbOptions {
        nodes_csv: data("openb_nodes.csv"),
        pods_csv: data(pods),
        seeds: (0..seeds).collect(),
        demand,
        policies: Policy::ALL.to_vec(),
        threads: 1,
    };
    openb::run(&opts, &|_, _| {}).expect("replay")
}

/// Every report's counts add up and no pod is bound twice.
fn check_consistent(r: &OpenbReport) {
    for p in &r.policies {
        assert_eq!(p.seeds.len(), r.seeds.len(), "{}", p.name);
        for s in &p.seeds {
            assert_eq!(s.placed + s.failed, s.arrived, "{} seed {}", p.name, s.seed);
            assert_eq!(s.placements.len(), s.arrived);
            let names: HashSet<&str> = s.placements.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names.len(), s.arrived, "a pod arrived twice");
            let bound = s.placements.iter().filter(|(_, n)| n.is_some()).count();
            assert_eq!(bound, s.placed);
            assert_eq!(s.allocated_gpu_milli, s.placed_gpu_milli);
            assert!(s.arrived_gpu_milli as f64 >= r.demand * s.total_gpu_milli as f64);
            assert_eq!(
                s.allocation_at_demand,
                s.placed_gpu_milli as f64 / s.total_gpu_milli as f64
            );
            assert_eq!(
                s.curve.len(),
                (r.demand / openb::DEMAND_STEP + 1e-9) as usize
            );
            assert!(
                s.curve.windows(2).all(|w| w[0] <= w[1]),
                "allocation never drops"
            );
        }
    }
}

#[test]
fn half_gpu_pods_on_a_cpu_bound_cluster() {
    // 3 GPUs (3,000 thousandths) on two nodes: n0 8 cores / 2 GPUs, n1 4 cores / 1 GPU.
    // Every pod asks for 3 cores and half a GPU. 130% of 3,000 is 3,900: 8 pods arrive
    // (8 × 500 = 4,000). CPU binds: n0 holds 2 pods, n1 one, whatever the policy — 3 placed,
    // 5 fail, 1,500 of 3,000 allocated: 50%. 100% demand (3,000) is reached at the 6th
    // arrival, when the first 3 have long been placed: 50% too. At 5% (150) the first pod has
    // arrived: 500 / 3,000.
    let r = replay("openb_pods_half.csv", 3, 1.3);
    check_consistent(&r);
    assert_eq!((r.nodes, r.gpus), (2, 3));
    for p in &r.policies {
        for s in &p.seeds {
            assert_eq!((s.arrived, s.placed, s.failed), (8, 3, 5), "{}", p.name);
            assert_eq!(s.allocation_at_demand, 0.5);
            assert_eq!(s.allocation_at_full, 0.5);
            assert_eq!(s.curve[0], 500.0 / 3000.0);
        }
        assert_eq!(p.allocation_at_demand.mean, 0.5, "{}", p.name);
        assert_eq!(p.curve.last().map(|c| c.allocation), Some(0.5));
    }
}

#[test]
fn gpu_spec_limits_pods_to_their_models() {
    // One whole GPU, V100 only: only n1's GPU will do. 4 arrive (4,000 ≥ 3,900), 1 placed.
    let r = replay("openb_pods_spec.csv", 2, 1.3);
    check_consistent(&r);
    for p in &r.policies {
        for s in &p.seeds {
            assert_eq!((s.arrived, s.placed), (4, 1), "{}", p.name);
            assert_eq!(s.allocation_at_demand, 1000.0 / 3000.0);
            assert!(
                s.placements
                    .iter()
                    .all(|(_, n)| n.is_none() || n.as_deref() == Some("n1"))
            );
        }
    }
}

/// FGD's multi-GPU traces (`openb_pod_list_multigpu*.csv`) have no `gpu_spec` column: their pods
/// run on any model.
#[test]
fn gpu_spec_column_is_optional() {
    let f = Path::new("openb_pod_list_multigpu50.csv");
    let text = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,creation_time,deletion_time,scheduled_time,pod_phase\n\
                openb-pod-0017,88000,327680,8,1000,9437497,10769854,9437497,Running\n\
                openb-pod-0018,12000,65536,1,460,9437500,10769900,9437500,Running\n";
    let pods = parse_pods(f, text).unwrap();
    assert_eq!(pods.len(), 2);
    assert_eq!(pods[0].gpu, GpuAsk::Whole(8));
    assert_eq!(pods[1].gpu, GpuAsk::Share(460));
    assert!(pods.iter().all(|p| p.gpu_spec.is_empty()));
}

#[test]
fn csv_errors_name_file_line_and_column() {
    let f = Path::new("pods.csv");
    let header = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n";
    let err = parse_pods(f, &format!("{header}a,1000,10,1,500,\nb,x,10,1,500,\n")).unwrap_err();
    assert!(
        matches!(&err, OpenbError::Parse { line: 3, column, .. } if column == "cpu_milli"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "pods.csv:3: column cpu_milli: not a number: \"x\""
    );
    let err = parse_pods(f, "name,cpu_milli\na,1\n").unwrap_err();
    assert!(matches!(err, OpenbError::MissingColumn { .. }), "{err}");
    let err = parse_pods(f, &format!("{header}a,1,1,1,2000,\n")).unwrap_err();
    assert!(err.to_string().contains("gpu_milli"), "{err}");
    let ok = parse_pods(
        f,
        &format!("{header}a,1,1,1,500,A|B\nb,1,1,2,1000,\nc,1,1,0,0,\n"),
    )
    .unwrap();
    assert_eq!(ok[0].gpu, GpuAsk::Share(500));
    assert_eq!(ok[0].gpu_spec, vec!["A", "B"]);
    assert_eq!(ok[1].gpu, GpuAsk::Whole(2));
    assert_eq!(ok[2].gpu, GpuAsk::None);
    let missing = OpenbOptions {
        nodes_csv: data("no-such-file.csv"),
        ..OpenbOptions::default()
    };
    let err = openb::run(&missing, &|_, _| {}).unwrap_err();
    assert!(err.to_string().contains("no-such-file.csv"), "{err}");
}

#[test]
fn one_seed_of_the_real_trace_at_low_demand() {
    let opts = OpenbOptions {
        seeds: vec![7],
        demand: 0.1,
        policies: vec![Policy::Drover, Policy::BestFit],
        ..OpenbOptions::default()
    };
    if !opts.nodes_csv.exists() {
        eprintln!(
            "skipped: {} not found (set DROVER_DATA_DIR)",
            opts.nodes_csv.display()
        );
        return;
    }
    let r = openb::run(&opts, &|_, _| {}).expect("replay");
    assert_eq!((r.nodes, r.gpus, r.pod_types), (1213, 6212, 8152));
    check_consistent(&r);
    for p in &r.policies {
        // At 10% demand everything fits.
        let s = &p.seeds[0];
        assert_eq!(s.failed, 0, "{}", p.name);
        assert!(s.allocation_at_demand >= 0.1, "{}", p.name);
    }
}
