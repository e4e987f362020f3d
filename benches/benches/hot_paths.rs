//! Criterion benchmarks of the API hot paths: decoding and validating a pod from JSON (what
//! every write pays), and applying a watch event to an informer cache (what every watcher
//! pays per event).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use drover_api::core::Pod;
use drover_api::resource::Resource;
use drover_benches::workload::Shape;
use drover_client::WatchEvent;
use drover_client::informer::Cache;

fn pod_json() -> Vec<u8> {
    let mut p = Shape::Gpu(2).pod("bench", "p-0");
    p.metadata.labels.insert("app".into(), "train".into());
    serde_json::to_vec(&p).unwrap_or_default()
}

fn decode_validate(c: &mut Criterion) {
    let json = pod_json();
    c.bench_function("pod json decode+validate", |b| {
        b.iter(|| {
            let p: Pod =
                serde_json::from_slice(black_box(&json)).unwrap_or_else(|_| Pod::default());
            black_box(p.validate().is_ok())
        })
    });
    c.bench_function("pod json encode", |b| {
        let p: Pod = serde_json::from_slice(&json).unwrap_or_default();
        b.iter(|| {
            black_box(
                serde_json::to_vec(black_box(&p))
                    .map(|v| v.len())
                    .unwrap_or(0),
            )
        })
    });
}

fn cache_apply(c: &mut Criterion) {
    let cache: Cache<Pod> = Cache::new();
    let pods: Vec<Pod> = (0..10_000)
        .map(|i| Shape::Cpu.pod("bench", &format!("p-{i}")))
        .collect();
    for p in &pods {
        cache.apply(WatchEvent::Added(p.clone()));
    }
    let mut i = 0usize;
    c.bench_function("watch cache apply (modify, 10k pods)", |b| {
        b.iter(|| {
            i = (i + 1) % pods.len();
            let mut p = pods[i].clone();
            p.spec.node_name = "node-1".into();
            black_box(cache.apply(WatchEvent::Modified(p)).is_some())
        })
    });
}

criterion_group!(benches, decode_validate, cache_apply);
criterion_main!(benches);
