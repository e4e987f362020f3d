//! The store conformance suite: the behaviour every [`Store`] backend must show, written once
//! over `Arc<dyn Store>` so the embedded, TiKV and etcd backends run the same checks.
//!
//! Call [`run_all`] with a factory that makes a fresh, empty store, or call the tests one by one
//! (each takes a fresh store). The tests panic with a message on a violation, as tests do.
//!
//! Semantics checked here beyond the trait's signatures:
//! - a transaction that changes nothing (failed compares, no ops, deletes of absent keys) takes
//!   no revision, so revisions in the change feed are contiguous;
//! - a delete's change carries the deleted value and create revision, at the delete's revision.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::{
    ChangeBatch, ChangeKind, ChangeStream, Compare, KeyValue, Op, Revision, Store, StoreError, Txn,
    TxnResult, prefix_end,
};

/// How long a test waits for an event it expects before it calls the store stuck. Not a
/// performance bound: a guard so a broken backend fails instead of hanging the test run.
const STUCK: Duration = Duration::from_secs(120);

/// Runs every test of the suite, each on a fresh store from `factory`.
pub async fn run_all<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    put_and_get(factory().await).await;
    create_if_absent(factory().await).await;
    stale_compare_changes_nothing(factory().await).await;
    multi_op_txn_is_atomic(factory().await).await;
    revisions_increase_and_create_revision_is_kept(factory().await).await;
    txn_without_changes_takes_no_revision(factory().await).await;
    delete(factory().await).await;
    range_with_prefix_and_limit(factory().await).await;
    range_with_empty_end(factory().await).await;
    watch_from_zero_sees_every_change(factory().await).await;
    watch_from_middle_revision(factory().await).await;
    watch_rejects_compacted_and_future_revisions(factory().await).await;
    compaction_is_monotonic(factory().await).await;
    concurrent_writers_with_watchers(factory().await).await;
    slow_watcher_catches_up(factory().await).await;
    concurrent_compare_and_swap_loses_no_update(factory().await).await;
}

/// A put, then a get of the same key, an absent key, and a current revision that moved.
pub async fn put_and_get(store: Arc<dyn Store>) {
    assert_eq!(current(&store).await, 0, "an empty store is at revision 0");
    assert_eq!(get(&store, "a").await, None);
    let r = put(&store, "a", "1").await;
    assert!(r.succeeded);
    assert!(r.revision > 0);
    let kv = get(&store, "a").await.expect("a was just put");
    assert_eq!(kv.key, b("a"));
    assert_eq!(kv.value, b("1"));
    assert_eq!(kv.create_revision, r.revision);
    assert_eq!(kv.mod_revision, r.revision);
    assert_eq!(current(&store).await, r.revision);
    assert_eq!(get(&store, "b").await, None, "no other key appears");
}

/// Compare mod revision 0 is "create if absent": it succeeds once, then fails.
pub async fn create_if_absent(store: Arc<dyn Store>) {
    let create = |value: &'static str| Txn {
        compares: vec![Compare::ModRevision {
            key: b("k"),
            revision: 0,
        }],
        ops: vec![put_op("k", value)],
    };
    let first = txn(&store, create("first")).await;
    assert!(first.succeeded);
    assert_eq!(first.failed_compare, None);
    let second = txn(&store, create("second")).await;
    assert!(!second.succeeded, "the key exists: create must fail");
    assert_eq!(second.failed_compare, Some(0));
    assert_eq!(
        second.revision, first.revision,
        "a failed txn reports the current revision"
    );
    assert_eq!(value_of(&store, "k").await.as_deref(), Some("first"));
}

/// A compare on a stale mod revision fails and applies none of the ops.
pub async fn stale_compare_changes_nothing(store: Arc<dyn Store>) {
    let v1 = put(&store, "k", "v1").await.revision;
    let v2 = put(&store, "k", "v2").await.revision;
    let stale = Txn {
        compares: vec![Compare::ModRevision {
            key: b("k"),
            revision: v1,
        }],
        ops: vec![put_op("k", "v3"), put_op("other", "x")],
    };
    let r = txn(&store, stale).await;
    assert!(!r.succeeded);
    assert_eq!(r.failed_compare, Some(0));
    assert_eq!(current(&store).await, v2, "a failed txn takes no revision");
    let kv = get(&store, "k").await.expect("k exists");
    assert_eq!((kv.value, kv.mod_revision), (b("v2"), v2));
    assert_eq!(get(&store, "other").await, None);

    let fresh = Txn {
        compares: vec![Compare::ModRevision {
            key: b("k"),
            revision: v2,
        }],
        ops: vec![put_op("k", "v3")],
    };
    assert!(
        txn(&store, fresh).await.succeeded,
        "the current revision compares equal"
    );
    assert_eq!(value_of(&store, "k").await.as_deref(), Some("v3"));
}

/// Every op of a transaction lands at one revision, or none does.
pub async fn multi_op_txn_is_atomic(store: Arc<dyn Store>) {
    let base = put(&store, "gone", "x").await.revision;
    let watch = watch(&store, base).await;
    let all = Txn {
        compares: vec![
            Compare::ModRevision {
                key: b("gone"),
                revision: base,
            },
            Compare::ModRevision {
                key: b("a"),
                revision: 0,
            },
        ],
        ops: vec![put_op("a", "1"), put_op("b", "2"), delete_op("gone")],
    };
    let r = txn(&store, all).await;
    assert!(r.succeeded);
    for key in ["a", "b"] {
        let kv = get(&store, key).await.expect("put in the txn");
        assert_eq!(
            kv.mod_revision, r.revision,
            "{key} written at the txn's revision"
        );
    }
    assert_eq!(get(&store, "gone").await, None);

    // The second compare fails: the first's success must not let any op through.
    let none = Txn {
        compares: vec![
            Compare::ModRevision {
                key: b("a"),
                revision: r.revision,
            },
            Compare::ModRevision {
                key: b("b"),
                revision: 0,
            },
        ],
        ops: vec![put_op("a", "changed"), put_op("c", "3"), delete_op("b")],
    };
    let failed = txn(&store, none).await;
    assert!(!failed.succeeded);
    assert_eq!(failed.failed_compare, Some(1));
    assert_eq!(value_of(&store, "a").await.as_deref(), Some("1"));
    assert_eq!(value_of(&store, "b").await.as_deref(), Some("2"));
    assert_eq!(get(&store, "c").await, None);

    let batches = collect(watch, 1).await;
    let batch = &batches[0];
    assert_eq!(batch.revision, r.revision);
    let summary: Vec<_> = batch
        .changes
        .iter()
        .map(|c| (c.kind.clone(), c.kv.key.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (ChangeKind::Put, b("a")),
            (ChangeKind::Put, b("b")),
            (ChangeKind::Delete, b("gone")),
        ],
        "one batch with every change, in op order"
    );
}

/// Each write takes a higher revision; updates keep the key's create revision.
pub async fn revisions_increase_and_create_revision_is_kept(store: Arc<dyn Store>) {
    let created = put(&store, "k", "0").await.revision;
    let mut last = created;
    for i in 1..10 {
        let r = put(&store, "k", &i.to_string()).await.revision;
        assert!(r > last, "revision {r} after {last}");
        last = r;
        put(&store, &format!("other{i}"), "x").await;
        let kv = get(&store, "k").await.expect("k exists");
        assert_eq!(kv.create_revision, created);
        assert_eq!(kv.mod_revision, r);
    }
    // Re-creating after a delete starts a new life.
    let deleted = txn(&store, ops(vec![delete_op("k")])).await.revision;
    let recreated = put(&store, "k", "again").await.revision;
    assert!(recreated > deleted);
    let kv = get(&store, "k").await.expect("k exists again");
    assert_eq!(kv.create_revision, recreated);
}

/// A transaction that changes nothing succeeds (when its compares hold) without a revision.
pub async fn txn_without_changes_takes_no_revision(store: Arc<dyn Store>) {
    let r = put(&store, "k", "v").await.revision;
    let empty = txn(&store, Txn::default()).await;
    assert!(empty.succeeded);
    assert_eq!(empty.revision, r);
    let absent = txn(&store, ops(vec![delete_op("absent")])).await;
    assert!(absent.succeeded);
    assert_eq!(absent.revision, r);
    assert_eq!(current(&store).await, r);
    // And the feed has no empty batch: the next write is the next revision.
    let w = watch(&store, r).await;
    let next = put(&store, "k", "w").await.revision;
    assert_eq!(next, r + 1);
    assert_eq!(collect(w, 1).await[0].revision, next);
}

/// Deleting a key removes it and reports the deleted value in the feed.
pub async fn delete(store: Arc<dyn Store>) {
    let created = put(&store, "k", "v").await.revision;
    let w = watch(&store, created).await;
    let r = txn(&store, ops(vec![delete_op("k")])).await;
    assert!(r.succeeded);
    assert!(r.revision > created);
    assert_eq!(get(&store, "k").await, None);
    let range = store.range(b"k", b"", 0).await.expect("range");
    assert!(range.kvs.is_empty());

    let batch = collect(w, 1).await.remove(0);
    assert_eq!(batch.revision, r.revision);
    let [change] = batch.changes.as_slice() else {
        panic!("one change expected, got {:?}", batch.changes);
    };
    assert_eq!(change.kind, ChangeKind::Delete);
    assert_eq!(change.kv.key, b("k"));
    assert_eq!(change.kv.value, b("v"));
    assert_eq!(change.kv.create_revision, created);
    assert_eq!(change.kv.mod_revision, r.revision);
    let prev = change
        .prev
        .as_ref()
        .expect("a delete carries the previous value");
    assert_eq!((prev.value.clone(), prev.mod_revision), (b("v"), created));
}

/// A prefix range returns exactly the prefix's keys, in order, honouring the limit.
pub async fn range_with_prefix_and_limit(store: Arc<dyn Store>) {
    for key in [
        "/pods/b", "/pods/a", "/pods/c", "/pod", "/podsx", "/nodes/a", "/pods0",
    ] {
        put(&store, key, key).await;
    }
    let end = prefix_end(b"/pods/");
    let all = store.range(b"/pods/", &end, 0).await.expect("range");
    assert_eq!(keys(&all.kvs), ["/pods/a", "/pods/b", "/pods/c"]);
    assert_eq!(all.revision, current(&store).await);
    for kv in &all.kvs {
        assert_eq!(kv.value, kv.key, "each key carries its own value");
    }
    let two = store.range(b"/pods/", &end, 2).await.expect("range");
    assert_eq!(keys(&two.kvs), ["/pods/a", "/pods/b"]);
    // Continue after the last key, as a paginated list does.
    let mut after = two.kvs[1].key.to_vec();
    after.push(0);
    let rest = store.range(&after, &end, 2).await.expect("range");
    assert_eq!(keys(&rest.kvs), ["/pods/c"]);
    let none = store
        .range(b"/services/", &prefix_end(b"/services/"), 0)
        .await
        .expect("range");
    assert!(none.kvs.is_empty());
    let single = store.range(b"/pod", b"/pod\0", 0).await.expect("range");
    assert_eq!(keys(&single.kvs), ["/pod"], "[key, key\\0) is one key");
}

/// An empty end means "unbounded above".
pub async fn range_with_empty_end(store: Arc<dyn Store>) {
    for key in ["a", "b", "c", "\u{7f}"] {
        put(&store, key, "v").await;
    }
    put(&store, "\u{0}", "v").await;
    let from_b = store.range(b"b", b"", 0).await.expect("range");
    assert_eq!(keys(&from_b.kvs), ["b", "c", "\u{7f}"]);
    let everything = store.range(b"", b"", 0).await.expect("range");
    assert_eq!(everything.kvs.len(), 5);
    let first_two = store.range(b"", b"", 2).await.expect("range");
    assert_eq!(keys(&first_two.kvs), ["\u{0}", "a"]);
    // prefix_end of an all-0xff prefix is empty: unbounded.
    store
        .txn(ops(vec![Op::Put {
            key: Bytes::from_static(&[0xff, 0xff]),
            value: b("max"),
        }]))
        .await
        .expect("txn");
    let top = store
        .range(&[0xff], &prefix_end(&[0xff]), 0)
        .await
        .expect("range");
    assert_eq!(top.kvs.len(), 1);
    assert_eq!(top.kvs[0].value, b("max"));
}

/// A watch from 0 replays every change, in order, with the right previous values.
pub async fn watch_from_zero_sees_every_change(store: Arc<dyn Store>) {
    let r1 = put(&store, "a", "1").await.revision;
    let r2 = put(&store, "a", "2").await.revision;
    let w = watch(&store, 0).await;
    let r3 = txn(&store, ops(vec![delete_op("a"), put_op("b", "1")]))
        .await
        .revision;
    let batches = collect(w, 3).await;
    assert_eq!(revisions(&batches), [r1, r2, r3]);
    let first = &batches[0].changes[0];
    assert_eq!(
        (first.kind.clone(), first.prev.clone()),
        (ChangeKind::Put, None)
    );
    let second = &batches[1].changes[0];
    assert_eq!(second.kv.value, b("2"));
    assert_eq!(second.kv.create_revision, r1);
    assert_eq!(
        second
            .prev
            .as_ref()
            .map(|p| (p.value.clone(), p.mod_revision)),
        Some((b("1"), r1))
    );
    let kinds: Vec<_> = batches[2].changes.iter().map(|c| c.kind.clone()).collect();
    assert_eq!(kinds, [ChangeKind::Delete, ChangeKind::Put]);
}

/// A watch from a middle revision starts right after it.
pub async fn watch_from_middle_revision(store: Arc<dyn Store>) {
    let mut revs = Vec::new();
    for i in 0..10 {
        revs.push(put(&store, &format!("k{i}"), "v").await.revision);
    }
    let w = watch(&store, revs[4]).await;
    let batches = collect(w, 5).await;
    assert_eq!(revisions(&batches), revs[5..]);
    // At the current revision: nothing until the next write, then exactly it.
    let mut w = watch(&store, revs[9]).await;
    let next = put(&store, "late", "v").await.revision;
    let batch = next_batch(&mut w).await;
    assert_eq!(batch.revision, next);
    assert_eq!(batch.changes[0].kv.key, b("late"));
}

/// Watching before the retained history fails with `Compacted`; after the current revision with
/// `FutureRevision`; at the compacted revision itself it works.
pub async fn watch_rejects_compacted_and_future_revisions(store: Arc<dyn Store>) {
    let mut revs = Vec::new();
    for i in 0..6 {
        revs.push(put(&store, &format!("k{i}"), "v").await.revision);
    }
    let current = revs[5];
    match store.watch(current + 1).await {
        Err(StoreError::FutureRevision { requested, .. }) => assert_eq!(requested, current + 1),
        other => panic!("watch past the current revision: {:?}", other.map(|_| ())),
    }
    store.compact(revs[2]).await.expect("compact");
    assert_eq!(
        store.compacted_revision().await.expect("compacted"),
        revs[2]
    );
    match store.watch(revs[1]).await {
        Err(StoreError::Compacted { compacted, .. }) => assert_eq!(compacted, revs[2]),
        other => panic!(
            "watch before the compacted revision: {:?}",
            other.map(|_| ())
        ),
    }
    let batches = collect(watch(&store, revs[2]).await, 3).await;
    assert_eq!(revisions(&batches), revs[3..]);
    // The data itself survives compaction.
    for i in 0..6 {
        assert!(get(&store, &format!("k{i}")).await.is_some());
    }
}

/// Compacting to an older revision is a no-op; compacting to the future is refused.
pub async fn compaction_is_monotonic(store: Arc<dyn Store>) {
    let mut last = 0;
    for i in 0..5 {
        last = put(&store, &format!("k{i}"), "v").await.revision;
    }
    store.compact(last - 1).await.expect("compact");
    store
        .compact(1)
        .await
        .expect("compacting to an older revision");
    assert_eq!(
        store.compacted_revision().await.expect("compacted"),
        last - 1
    );
    assert!(matches!(
        store.compact(last + 10).await,
        Err(StoreError::FutureRevision { .. })
    ));
    assert_eq!(
        store.compacted_revision().await.expect("compacted"),
        last - 1
    );
    store.compact(last).await.expect("compact everything");
    let mut w = watch(&store, last).await;
    let next = put(&store, "after", "v").await.revision;
    assert_eq!(next_batch(&mut w).await.revision, next);
}

/// Many concurrent writers; a watcher from before them and one that joins midway each see every
/// revision exactly once, in order, without gaps.
pub async fn concurrent_writers_with_watchers(store: Arc<dyn Store>) {
    const WRITERS: usize = 32;
    const TXNS: usize = 200;
    let total = WRITERS * TXNS;
    let early = watch(&store, 0).await;
    let early = tokio::spawn(collect(early, total));

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut revs = Vec::with_capacity(TXNS);
            for i in 0..TXNS {
                revs.push(put(&store, &format!("w{w:02}/{i:04}"), "v").await.revision);
            }
            revs
        }));
    }
    // Join while the writers run, from wherever they have got to: the history/live handover.
    let third = (total / 3) as Revision;
    let midway = tokio::time::timeout(STUCK, async {
        loop {
            let revision = current(&store).await;
            if revision >= third {
                return revision;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the writers did not reach revision {third} within {STUCK:?}"));
    let late = watch(&store, midway).await;
    let late = tokio::spawn(collect(late, total - midway as usize));

    let mut acked = BTreeSet::new();
    for writer in writers {
        for rev in writer.await.expect("writer task") {
            assert!(acked.insert(rev), "revision {rev} acknowledged twice");
        }
    }
    let expected: Vec<Revision> = (1..=total as Revision).collect();
    assert_eq!(acked.into_iter().collect::<Vec<_>>(), expected);

    let early = early.await.expect("early watcher");
    assert_eq!(revisions(&early), expected, "the early watcher");
    let mut keys_seen = BTreeSet::new();
    for batch in &early {
        assert_eq!(batch.changes.len(), 1);
        assert!(keys_seen.insert(batch.changes[0].kv.key.clone()));
    }
    assert_eq!(keys_seen.len(), total);
    let late = late.await.expect("late watcher");
    assert_eq!(
        revisions(&late),
        expected[midway as usize..],
        "the late watcher"
    );
}

/// A watcher that stops reading while thousands of transactions commit still gets all of them.
pub async fn slow_watcher_catches_up(store: Arc<dyn Store>) {
    const WRITERS: usize = 64;
    const TXNS: usize = 100;
    let total = WRITERS * TXNS;
    let mut w = watch(&store, 0).await;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..TXNS {
                    put(&store, &format!("slow/{w}/{i}"), "v").await;
                }
            })
        })
        .collect();
    // Read a few, then stall until every write is done.
    let head = next_batch(&mut w).await;
    assert_eq!(head.revision, 1);
    for writer in writers {
        writer.await.expect("writer task");
    }
    let rest = collect(w, total - 1).await;
    let expected: Vec<Revision> = (2..=total as Revision).collect();
    assert_eq!(revisions(&rest), expected);
}

/// Concurrent read-compare-and-swap increments of one counter never lose an update.
pub async fn concurrent_compare_and_swap_loses_no_update(store: Arc<dyn Store>) {
    const TASKS: usize = 16;
    const INCREMENTS: usize = 25;
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut conflicts = 0usize;
                for _ in 0..INCREMENTS {
                    loop {
                        let (count, revision) = match get(&store, "counter").await {
                            Some(kv) => (parse_count(&kv.value), kv.mod_revision),
                            None => (0, 0),
                        };
                        let swap = Txn {
                            compares: vec![Compare::ModRevision {
                                key: b("counter"),
                                revision,
                            }],
                            ops: vec![put_op("counter", &(count + 1).to_string())],
                        };
                        if txn(&store, swap).await.succeeded {
                            break;
                        }
                        conflicts += 1;
                    }
                }
                conflicts
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("increment task");
    }
    let kv = get(&store, "counter").await.expect("counter exists");
    assert_eq!(parse_count(&kv.value), (TASKS * INCREMENTS) as u64);
    assert_eq!(
        current(&store).await,
        (TASKS * INCREMENTS) as Revision,
        "only the successful swaps took revisions"
    );
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn put_op(key: &str, value: &str) -> Op {
    Op::Put {
        key: b(key),
        value: b(value),
    }
}

fn delete_op(key: &str) -> Op {
    Op::Delete { key: b(key) }
}

fn ops(ops: Vec<Op>) -> Txn {
    Txn {
        compares: Vec::new(),
        ops,
    }
}

async fn txn(store: &Arc<dyn Store>, txn: Txn) -> TxnResult {
    match store.txn(txn.clone()).await {
        Ok(result) => result,
        Err(err) => panic!("txn {txn:?} failed: {err}"),
    }
}

async fn put(store: &Arc<dyn Store>, key: &str, value: &str) -> TxnResult {
    let result = txn(store, ops(vec![put_op(key, value)])).await;
    assert!(result.succeeded, "unconditional put of {key}");
    result
}

async fn get(store: &Arc<dyn Store>, key: &str) -> Option<KeyValue> {
    match store.get(key.as_bytes()).await {
        Ok(kv) => kv,
        Err(err) => panic!("get {key} failed: {err}"),
    }
}

async fn value_of(store: &Arc<dyn Store>, key: &str) -> Option<String> {
    get(store, key)
        .await
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
}

async fn current(store: &Arc<dyn Store>) -> Revision {
    match store.current_revision().await {
        Ok(revision) => revision,
        Err(err) => panic!("current_revision failed: {err}"),
    }
}

async fn watch(store: &Arc<dyn Store>, after: Revision) -> ChangeStream {
    match store.watch(after).await {
        Ok(stream) => stream,
        Err(err) => panic!("watch after {after} failed: {err}"),
    }
}

async fn next_batch(stream: &mut ChangeStream) -> ChangeBatch {
    match tokio::time::timeout(STUCK, stream.next()).await {
        Ok(Some(Ok(batch))) => batch,
        Ok(Some(Err(err))) => panic!("watch failed: {err}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no change batch within {STUCK:?}"),
    }
}

/// The next `n` batches of `stream`.
async fn collect(mut stream: ChangeStream, n: usize) -> Vec<ChangeBatch> {
    let mut batches = Vec::with_capacity(n);
    while batches.len() < n {
        batches.push(next_batch(&mut stream).await);
    }
    batches
}

fn revisions(batches: &[ChangeBatch]) -> Vec<Revision> {
    batches.iter().map(|b| b.revision).collect()
}

fn keys(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

fn parse_count(value: &[u8]) -> u64 {
    match std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()) {
        Some(count) => count,
        None => panic!("counter holds {value:?}, not a number"),
    }
}
