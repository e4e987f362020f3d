//! The TiKV store against the loopback PD + TiKV double (`storage::tikv_double`): the whole
//! store conformance suite, then what only a shared, networked store can be asked: two stores
//! (two API servers) writing at once on one cluster keep one gap-free history, a store that
//! goes away turns calls into `Unavailable` and works again when it returns, prefixes keep two
//! clusters apart, compaction lets TiKV collect old versions, and an unreachable PD is an error
//! naming its endpoints.
//!
//! The double speaks TiKV's and PD's gRPC protocol (generated from the kvproto protos
//! `tikv-client` ships); it is not TiKV: one region, one replica, in memory. The README says
//! what this does and does not validate.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use drover_apiserver::storage::tikv::{TikvConfig, TikvStore};
use drover_apiserver::storage::tikv_double::TikvDouble;
use drover_apiserver::storage::{Compare, Op, Store, StoreError, Txn, TxnResult, conformance};
use futures::StreamExt;
use tokio::sync::Mutex;

async fn store_on(double: &TikvDouble, prefix: &str) -> Arc<TikvStore> {
    Arc::new(
        TikvStore::connect(TikvConfig::new(vec![double.pd_endpoint()], prefix))
            .await
            .expect("connect to the TiKV double"),
    )
}

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

fn create(key: &str, value: &str) -> Txn {
    Txn {
        compares: vec![Compare::ModRevision {
            key: b(key),
            revision: 0,
        }],
        ops: vec![Op::Put {
            key: b(key),
            value: b(value),
        }],
    }
}

async fn put(store: &dyn Store, key: &str, value: &str) -> TxnResult {
    store
        .txn(Txn {
            compares: vec![],
            ops: vec![Op::Put {
                key: b(key),
                value: b(value),
            }],
        })
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_on_the_tikv_double() {
    // Each test gets a fresh double (a fresh cluster), as the etcd suite gets a fresh etcd.
    let current: Mutex<Option<TikvDouble>> = Mutex::new(None);
    conformance::run_all(|| async {
        let mut slot = current.lock().await;
        *slot = None;
        let double = TikvDouble::start().await.expect("start the TiKV double");
        let store: Arc<dyn Store> = store_on(&double, "").await;
        *slot = Some(double);
        store
    })
    .await;
}

/// Two stores on one cluster (two API servers) create keys at once: every write succeeds,
/// revisions are unique, and a watch through either store sees one history without gaps in
/// which each acknowledged write appears once, at its revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_cluster_keep_one_history() {
    let double = TikvDouble::start().await.expect("start");
    let a = store_on(&double, "/c").await;
    let b_store = store_on(&double, "/c").await;
    let mut feed = b_store.watch(0).await.expect("watch");
    let mut writers = Vec::new();
    for w in 0..8 {
        let store: Arc<dyn Store> = if w % 2 == 0 {
            a.clone()
        } else {
            b_store.clone()
        };
        writers.push(tokio::spawn(async move {
            let mut acked = BTreeMap::new();
            for i in 0..40 {
                let key = format!("w{w}/{i:03}");
                let r = store
                    .txn(create(&key, &format!("{w}-{i}")))
                    .await
                    .unwrap_or_else(|e| panic!("write {key}: {e}"));
                assert!(r.succeeded, "create of fresh key {key} failed its compare");
                acked.insert(key, r.revision);
            }
            acked
        }));
    }
    let mut acked = BTreeMap::new();
    for writer in writers {
        acked.extend(writer.await.expect("writer"));
    }
    assert_eq!(acked.len(), 320);
    let mut revisions: Vec<u64> = acked.values().copied().collect();
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(revisions.len(), 320, "two writes were given one revision");

    let mut seen = BTreeMap::new();
    let mut expected = 1;
    while seen.len() < acked.len() {
        let batch = tokio::time::timeout(Duration::from_secs(20), feed.next())
            .await
            .expect("the watch stalled")
            .expect("the watch ended")
            .expect("the watch failed");
        assert_eq!(
            batch.revision, expected,
            "the history has a gap or a repeat"
        );
        expected += 1;
        for change in batch.changes {
            let key = String::from_utf8_lossy(&change.kv.key).into_owned();
            assert!(seen.insert(key, batch.revision).is_none());
        }
    }
    assert_eq!(
        seen, acked,
        "the watch saw other revisions than the writers were told"
    );
    let on_a = a.current_revision().await.expect("revision on a");
    assert_eq!(on_a, *revisions.last().expect("revisions"));
}

/// While PD and TiKV are away, a write fails with `Unavailable` (after the store's retries) and
/// leaves nothing behind; a write that starts during the outage and outlives it succeeds once;
/// afterwards everything works, and the watch opened before the outage has every change.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outage_is_unavailable_then_recovers() {
    let double = TikvDouble::start().await.expect("start");
    let store = store_on(&double, "").await;
    let mut feed = store.watch(0).await.expect("watch");
    assert!(put(store.as_ref(), "before", "1").await.succeeded);

    double.pause().await;
    let started = std::time::Instant::now();
    match store.txn(create("during", "x")).await {
        Err(StoreError::Unavailable { message }) => {
            assert!(message.contains(&double.pd_endpoint()), "{message}");
        }
        other => panic!("a write during the outage gave {other:?}"),
    }
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "gave up too early"
    );

    // A write that starts while the store is away and finishes after it returns.
    let late = {
        let store = store.clone();
        tokio::spawn(async move { store.txn(create("late", "y")).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    double.resume().await.expect("resume");
    let late = late
        .await
        .expect("task")
        .expect("the write that outlived the outage");
    assert!(late.succeeded);

    assert!(put(store.as_ref(), "after", "2").await.succeeded);
    assert!(
        store.get(b"during").await.expect("get").is_none(),
        "a failed write was applied"
    );
    let mut keys = Vec::new();
    while keys.len() < 3 {
        let batch = tokio::time::timeout(Duration::from_secs(20), feed.next())
            .await
            .expect("the watch stalled")
            .expect("the watch ended")
            .expect("the watch failed after the outage");
        keys.extend(
            batch
                .changes
                .iter()
                .map(|c| String::from_utf8_lossy(&c.kv.key).into_owned()),
        );
    }
    assert_eq!(keys, ["before", "late", "after"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_keep_clusters_apart() {
    let double = TikvDouble::start().await.expect("start");
    let one = store_on(&double, "/one").await;
    let two = store_on(&double, "/two").await;
    put(one.as_ref(), "k", "1").await;
    put(one.as_ref(), "k", "2").await;
    put(two.as_ref(), "k", "x").await;
    assert_eq!(one.current_revision().await.expect("rev"), 2);
    assert_eq!(two.current_revision().await.expect("rev"), 1);
    let range = two.range(b"", b"", 0).await.expect("range");
    assert_eq!(range.kvs.len(), 1);
    assert_eq!(range.kvs[0].value, b("x"));
}

/// Compaction drops the log before the revision and, past the GC lifetime, lets TiKV drop the
/// old MVCC versions; reads of the current state are unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_lets_tikv_collect_old_versions() {
    let double = TikvDouble::start().await.expect("start");
    let mut config = TikvConfig::new(vec![double.pd_endpoint()], "");
    config.gc_lifetime = Duration::ZERO;
    let store = TikvStore::connect(config).await.expect("connect");
    for i in 0..50 {
        put(&store, "counter", &i.to_string()).await;
    }
    let before = double.versions();
    let revision = store.current_revision().await.expect("rev");
    store.compact(revision).await.expect("compact");
    let after = double.versions();
    assert!(double.safe_point() > 0, "no GC safe point was set");
    assert!(
        after * 10 < before,
        "{before} versions before compaction, {after} after"
    );
    let kv = store.get(b"counter").await.expect("get").expect("present");
    assert_eq!(kv.value, b("49"));
    assert!(matches!(
        store.watch(revision - 1).await,
        Err(StoreError::Compacted { .. })
    ));
}

#[tokio::test]
async fn unreachable_pd_names_its_endpoints() {
    // Two ports nothing listens on: bound, then closed.
    let mut endpoints = Vec::new();
    for _ in 0..2 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        endpoints.push(l.local_addr().expect("addr").to_string());
    }
    match TikvStore::connect(TikvConfig::new(endpoints.clone(), "")).await {
        Err(StoreError::Unavailable { message }) => {
            for endpoint in &endpoints {
                assert!(message.contains(endpoint), "{message} lacks {endpoint}");
            }
        }
        other => panic!("connecting to nothing gave {other:?}"),
    }
}
