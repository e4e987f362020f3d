//! One scheduling decision (filter + score + device choice, no commit) on 1,000 and 10,000
//! 8-GPU nodes, about half the GPUs in use. Run: `cargo bench -p drover-scheduler --bench decision`.

use criterion::{Criterion, criterion_group, criterion_main};
use drover_scheduler::Simulator;
use drover_scheduler::testing::{GpuProfile, node, pod};

fn cluster(n: usize) -> Simulator {
    let nodes = (0..n).map(|i| {
        let p = if i % 2 == 0 {
            GpuProfile::H100x8
        } else {
            GpuProfile::A100x8
        };
        node(&format!("n{i}"))
            .label("rack", &format!("r{}", i / 32))
            .gpus(p)
            .build()
    });
    let mut sim = Simulator::new(nodes);
    // Load: nodes hold 0..8 GPUs in use in a repeating pattern (about half in all).
    for i in 0..n {
        let used = (i * 5) % 9;
        if used > 0 {
            sim.add_bound(
                pod("load", &format!("l{i}"))
                    .cpu("4")
                    .gpus(used as u32)
                    .node_name(&format!("n{i}"))
                    .build(),
            );
        }
    }
    for g in [1, 2, 4, 8] {
        sim.observe(&pod("w", "w").cpu("4").gpus(g).build());
    }
    sim
}

fn bench(c: &mut Criterion) {
    for n in [1_000usize, 10_000] {
        let mut sim = cluster(n);
        let mut group = c.benchmark_group(format!("decision/{n}-nodes"));
        for (name, p) in [
            ("1-gpu", pod("ns", "p").cpu("4").gpus(1).build()),
            ("4-gpu", pod("ns", "p").cpu("8").gpus(4).build()),
            ("8-gpu", pod("ns", "p").cpu("16").gpus(8).build()),
            ("gpu-share", pod("ns", "p").cpu("1").gpu_share(250).build()),
            ("cpu-only", pod("ns", "p").cpu("2").memory("4Gi").build()),
        ] {
            group.bench_function(name, |b| b.iter(|| sim.decide(&p).is_ok()));
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
