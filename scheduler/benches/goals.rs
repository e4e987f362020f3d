//! The speed goals of issue 4, as decisions in memory (`Simulator`, no API server):
//!
//! - `goal/single-pods-10000-nodes`: one pod decided *and committed* per iteration on 10,000
//!   8-GPU nodes (a stream of 1-GPU, GPU-share and CPU-only pods; the cluster is rebuilt, off
//!   the clock, after 100,000 pods). Criterion's throughput line is pods per second.
//! - `goal/affinity-5000-nodes`: required pod affinity (zone), required anti-affinity
//!   (hostname), a hard topology spread (zone) and required node affinity (zone In 3 of 10
//!   zones), each decided and committed per iteration.
//! - `goal/gang-64x8-same-rack`: one decision (no commit) for a 64-pod × 8-GPU gang that must
//!   share a rack, on 10,000 nodes with 100,000 pods already running; p50/p99 of 100 decisions
//!   are printed before criterion's own measurement.
//!
//! Run: `cargo bench -p drover-scheduler --bench goals`.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use drover_api::core::{Affinity, Pod, PodAffinity, PodAffinityTerm, TopologySpreadConstraint};
use drover_api::scheduling::{GangTopology, PodGroup, topology_mode};
use drover_scheduler::Simulator;
use drover_scheduler::testing::{GpuProfile, node, pod, selector};

const HOSTNAME: &str = "kubernetes.io/hostname";

fn gpu_nodes(n: usize, rack_size: usize) -> Simulator {
    Simulator::new((0..n).map(|i| {
        let name = format!("n{i}");
        node(&name)
            .cpu("128")
            .label("rack", &format!("r{}", i / rack_size))
            .label("zone", &format!("z{}", i % 10))
            .label(HOSTNAME, &name)
            .gpus(if i % 2 == 0 {
                GpuProfile::H100x8
            } else {
                GpuProfile::A100x8
            })
            .build()
    }))
}

fn single(i: usize) -> Pod {
    let b = pod("ns", &format!("p{i}"));
    match i % 3 {
        0 => b.cpu("2").gpus(1),
        1 => b.cpu("1").gpu_share(250),
        _ => b.cpu("1").memory("2Gi"),
    }
    .build()
}

/// Decides and commits pods from `make`, timing only the scheduling call.
fn stream(
    c: &mut Criterion,
    group: &str,
    name: &str,
    fresh: &dyn Fn() -> Simulator,
    make: &dyn Fn(usize) -> Pod,
    limit: usize,
) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    g.sample_size(20)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    let mut sim = fresh();
    let mut n = 0usize;
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                if n >= limit {
                    sim = fresh();
                    n = 0;
                }
                let p = make(n);
                let t = Instant::now();
                let ok = sim.schedule(p).is_ok();
                total += t.elapsed();
                assert!(ok, "{name}: pod {n} did not fit");
                n += 1;
            }
            total
        })
    });
    g.finish();
}

fn single_pods(c: &mut Criterion) {
    stream(
        c,
        "goal/single-pods-10000-nodes",
        "schedule",
        &|| gpu_nodes(10_000, 100),
        &single,
        100_000,
    );
}

fn affinity(c: &mut Criterion) {
    let fresh = || gpu_nodes(5_000, 50);
    let term = |app: &str, key: &str| PodAffinityTerm {
        label_selector: Some(selector("app", app)),
        topology_key: key.into(),
        ..Default::default()
    };
    let required = |t| PodAffinity {
        required_during_scheduling_ignored_during_execution: vec![t],
        ..Default::default()
    };
    // Groups of 50 pods: together in one zone.
    stream(
        c,
        "goal/affinity-5000-nodes",
        "required-affinity",
        &fresh,
        &|i| {
            let app = format!("a{}", i / 50);
            pod("ns", &format!("p{i}"))
                .cpu("1")
                .label("app", &app)
                .affinity(Affinity {
                    pod_affinity: Some(required(term(&app, "zone"))),
                    ..Default::default()
                })
                .build()
        },
        20_000,
    );
    // Groups of 1,000 pods: one per host.
    stream(
        c,
        "goal/affinity-5000-nodes",
        "required-anti-affinity",
        &fresh,
        &|i| {
            let app = format!("a{}", i / 1000);
            pod("ns", &format!("p{i}"))
                .cpu("1")
                .label("app", &app)
                .affinity(Affinity {
                    pod_anti_affinity: Some(required(term(&app, HOSTNAME))),
                    ..Default::default()
                })
                .build()
        },
        20_000,
    );
    // Required node affinity: zone In [z0, z1, z2] (3 of 10 zones).
    stream(
        c,
        "goal/affinity-5000-nodes",
        "required-node-affinity",
        &fresh,
        &|i| {
            pod("ns", &format!("p{i}"))
                .cpu("1")
                .node_affinity_in("zone", &["z0", "z1", "z2"])
                .build()
        },
        20_000,
    );
    stream(
        c,
        "goal/affinity-5000-nodes",
        "spread",
        &fresh,
        &|i| {
            let app = format!("a{}", i / 1000);
            pod("ns", &format!("p{i}"))
                .cpu("1")
                .label("app", &app)
                .spread(TopologySpreadConstraint {
                    max_skew: 1,
                    topology_key: "zone".into(),
                    when_unsatisfiable: "DoNotSchedule".into(),
                    label_selector: Some(selector("app", &app)),
                    ..Default::default()
                })
                .build()
        },
        20_000,
    );
}

/// 10,000 nodes in racks of 100; 100,000 pods running (10 a node). Every rack has GPU work on
/// most nodes, but in every tenth rack 70 nodes run only CPU pods, leaving 8 GPUs free.
fn loaded_cluster() -> Simulator {
    let mut sim = gpu_nodes(10_000, 100);
    for i in 0..10_000usize {
        let free_rack = (i / 100) % 10 == 7 && i % 100 < 70;
        for k in 0..10 {
            let b = pod("load", &format!("l{i}-{k}")).node_name(&format!("n{i}"));
            let b = if !free_rack && k < 6 {
                b.cpu("1").gpus(1)
            } else {
                b.cpu("1").memory("1Gi")
            };
            sim.add_bound(b.build());
        }
    }
    sim
}

fn gang(c: &mut Criterion) {
    let mut sim = loaded_cluster();
    let mut group = PodGroup::new("ns", "train", 64);
    group.spec.topology = Some(GangTopology {
        key: "rack".into(),
        mode: topology_mode::REQUIRED.into(),
    });
    let members: Vec<Pod> = (0..64)
        .map(|i| {
            pod("ns", &format!("train-{i}"))
                .cpu("16")
                .gpus(8)
                .gang("train")
                .build()
        })
        .collect();
    let mut times: Vec<Duration> = (0..100)
        .map(|_| {
            let t = Instant::now();
            let placed = sim.decide_gang(&group, members.clone());
            let e = t.elapsed();
            assert_eq!(placed.map(|p| p.len()).unwrap_or(0), 64, "gang not placed");
            e
        })
        .collect();
    times.sort();
    eprintln!(
        "goal/gang-64x8-same-rack: p50 {:?} p99 {:?} max {:?} (100 decisions)",
        times[49], times[98], times[99]
    );
    let mut g = c.benchmark_group("goal/gang-64x8-same-rack");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.bench_function("decide", |b| {
        b.iter(|| sim.decide_gang(&group, members.clone()).is_ok())
    });
    g.finish();
}

criterion_group!(benches, single_pods, affinity, gang);
criterion_main!(benches);
