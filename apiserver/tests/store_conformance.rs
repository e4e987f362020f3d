//! Runs the store conformance suite on [`EmbeddedStore`], plus what only an embedded store can
//! be asked: that reopening the file keeps data, revision and history; that it matches a simple
//! in-memory model on random transactions (one at a time and group-committed); that writes it
//! acknowledged survive `kill -9`; and how many transactions per second it commits.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use drover_apiserver::storage::embedded::EmbeddedStore;
use drover_apiserver::storage::{
    Change, ChangeBatch, ChangeKind, Compare, KeyValue, Op, Revision, Store, StoreError, Txn,
    TxnResult, conformance,
};
use futures::StreamExt;
use proptest::prelude::*;
use tempfile::TempDir;

/// Makes fresh stores, each in its own file under one temporary directory.
struct Stores {
    dir: TempDir,
    next: AtomicUsize,
}

impl Stores {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temporary directory"),
            next: AtomicUsize::new(0),
        }
    }

    fn path(&self) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // A nested path: open must create the parent directories.
        self.dir
            .path()
            .join(format!("store-{n}"))
            .join("store.redb")
    }

    fn open(&self) -> Arc<dyn Store> {
        Arc::new(EmbeddedStore::open(self.path()).expect("open a fresh store"))
    }
}

macro_rules! conformance_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let stores = Stores::new();
                conformance::$name(stores.open()).await;
            }
        )*
    };
}

conformance_tests!(
    put_and_get,
    create_if_absent,
    stale_compare_changes_nothing,
    multi_op_txn_is_atomic,
    revisions_increase_and_create_revision_is_kept,
    txn_without_changes_takes_no_revision,
    delete,
    range_with_prefix_and_limit,
    range_with_empty_end,
    watch_from_zero_sees_every_change,
    watch_from_middle_revision,
    watch_rejects_compacted_and_future_revisions,
    compaction_is_monotonic,
    concurrent_writers_with_watchers,
    slow_watcher_catches_up,
    concurrent_compare_and_swap_loses_no_update,
);

/// `run_all` drives every test above through a factory, as other backends will call it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_on_a_factory() {
    let stores = Stores::new();
    conformance::run_all(|| async { stores.open() }).await;
    assert_eq!(
        stores.next.load(Ordering::Relaxed),
        16,
        "one fresh store per test"
    );
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn put(key: &str, value: &str) -> Txn {
    Txn {
        compares: Vec::new(),
        ops: vec![Op::Put {
            key: b(key),
            value: b(value),
        }],
    }
}

async fn history(store: &dyn Store, after: Revision, n: usize) -> Vec<ChangeBatch> {
    let mut stream = store.watch(after).await.expect("watch");
    let mut batches = Vec::new();
    while batches.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(60), stream.next()).await;
        batches.push(next.expect("batch in time").expect("open").expect("batch"));
    }
    batches
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_data_revision_and_history() {
    let stores = Stores::new();
    let path = stores.path();
    let (revision, before) = {
        let store = EmbeddedStore::open(&path).expect("open");
        for i in 0..10 {
            store.txn(put(&format!("k{i}"), "v1")).await.expect("put");
        }
        store.txn(put("k3", "v2")).await.expect("update");
        let deleted = Txn {
            compares: Vec::new(),
            ops: vec![Op::Delete { key: b("k7") }],
        };
        store.txn(deleted).await.expect("delete");
        store.compact(4).await.expect("compact");
        let revision = store.current_revision().await.expect("revision");
        (revision, history(&store, 4, (revision - 4) as usize).await)
    };
    assert_eq!(revision, 12);

    let store = EmbeddedStore::open(&path).expect("reopen");
    assert_eq!(store.current_revision().await.expect("revision"), revision);
    assert_eq!(store.compacted_revision().await.expect("compacted"), 4);
    let k3 = store.get(b"k3").await.expect("get").expect("k3 survives");
    assert_eq!(
        (k3.value, k3.create_revision, k3.mod_revision),
        (b("v2"), 4, 11)
    );
    assert_eq!(store.get(b"k7").await.expect("get"), None);
    let all = store.range(b"", b"", 0).await.expect("range");
    assert_eq!((all.kvs.len(), all.revision), (9, revision));
    assert_eq!(history(&store, 4, before.len()).await, before);
    assert!(matches!(
        store.watch(3).await,
        Err(StoreError::Compacted { compacted: 4, .. })
    ));
    let next = store.txn(put("new", "v")).await.expect("put");
    assert_eq!(next.revision, revision + 1, "numbering resumes");
}

#[tokio::test]
async fn a_second_open_of_the_same_file_is_refused() {
    let stores = Stores::new();
    let path = stores.path();
    let _first = EmbeddedStore::open(&path).expect("open");
    assert!(matches!(
        EmbeddedStore::open(&path),
        Err(StoreError::Backend { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_store_ends_its_watches() {
    let stores = Stores::new();
    let store = EmbeddedStore::open(stores.path()).expect("open");
    store.txn(put("k", "v")).await.expect("put");
    let mut stream = store.watch(0).await.expect("watch");
    drop(store);
    let first = stream.next().await.expect("history").expect("batch");
    assert_eq!(first.revision, 1);
    assert!(matches!(stream.next().await, Some(Err(StoreError::Closed))));
    assert!(stream.next().await.is_none());
}

/// The model: what a store must hold after a sequence of transactions, computed naively.
#[derive(Default)]
struct Model {
    kvs: BTreeMap<Bytes, KeyValue>,
    revision: Revision,
    batches: Vec<ChangeBatch>,
}

impl Model {
    fn apply(&mut self, txn: &Txn) -> TxnResult {
        for (i, Compare::ModRevision { key, revision }) in txn.compares.iter().enumerate() {
            let found = self.kvs.get(key).map_or(0, |kv| kv.mod_revision);
            if found != *revision {
                return TxnResult {
                    succeeded: false,
                    revision: self.revision,
                    failed_compare: Some(i),
                };
            }
        }
        let next = self.revision + 1;
        let mut changes = Vec::new();
        for op in &txn.ops {
            match op {
                Op::Put { key, value } => {
                    let prev = self.kvs.get(key).cloned();
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: prev.as_ref().map_or(next, |p| p.create_revision),
                        mod_revision: next,
                    };
                    self.kvs.insert(key.clone(), kv.clone());
                    changes.push(Change {
                        kind: ChangeKind::Put,
                        kv,
                        prev,
                    });
                }
                Op::Delete { key } => {
                    if let Some(prev) = self.kvs.remove(key) {
                        changes.push(Change {
                            kind: ChangeKind::Delete,
                            kv: KeyValue {
                                mod_revision: next,
                                ..prev.clone()
                            },
                            prev: Some(prev),
                        });
                    }
                }
            }
        }
        if !changes.is_empty() {
            self.revision = next;
            self.batches.push(ChangeBatch {
                revision: next,
                changes,
            });
        }
        TxnResult {
            succeeded: true,
            revision: self.revision,
            failed_compare: None,
        }
    }
}

fn arb_key() -> impl Strategy<Value = Bytes> {
    prop::sample::select(vec!["a", "b", "c", "d"]).prop_map(b)
}

fn arb_txn() -> impl Strategy<Value = Txn> {
    let compare =
        (arb_key(), 0u64..6).prop_map(|(key, revision)| Compare::ModRevision { key, revision });
    let op = prop_oneof![
        3 => (arb_key(), "[a-z]{0,8}").prop_map(|(key, value)| Op::Put { key, value: b(&value) }),
        1 => arb_key().prop_map(|key| Op::Delete { key }),
    ];
    (
        prop::collection::vec(compare, 0..3),
        prop::collection::vec(op, 0..4),
    )
        .prop_map(|(compares, ops)| Txn { compares, ops })
}

/// Applies `txns` to a fresh store and checks results, final state and change feed against the
/// model. `grouped` sends them all at once, so the writer commits them in a few batches and
/// evaluates compares against earlier transactions of the same batch.
async fn check_against_model(txns: Vec<Txn>, grouped: bool) {
    let stores = Stores::new();
    let store = EmbeddedStore::open(stores.path()).expect("open");
    let mut model = Model::default();
    let expected: Vec<TxnResult> = txns.iter().map(|t| model.apply(t)).collect();
    let results: Vec<TxnResult> = if grouped {
        // join_all polls in order, so the txns reach the writer's queue in order.
        futures::future::join_all(txns.into_iter().map(|t| store.txn(t)))
            .await
            .into_iter()
            .map(|r| r.expect("txn"))
            .collect()
    } else {
        let mut results = Vec::new();
        for t in txns {
            results.push(store.txn(t).await.expect("txn"));
        }
        results
    };
    assert_eq!(results, expected);
    let all = store.range(b"", b"", 0).await.expect("range");
    assert_eq!(all.kvs, model.kvs.values().cloned().collect::<Vec<_>>());
    assert_eq!(all.revision, model.revision);
    assert_eq!(history(&store, 0, model.batches.len()).await, model.batches);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_txns_match_the_model(txns in prop::collection::vec(arb_txn(), 1..40), grouped: bool) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(check_against_model(txns, grouped));
    }
}

const CHILD_ENV: &str = "DROVER_STORE_KILL_TEST_PATH";

/// Kills the child on drop, so a failing assertion leaves no writer running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child process writes unique keys as fast as it can and prints each acknowledgement; the
/// test kills it with SIGKILL mid-stream and checks every acknowledged write is in the file.
#[test]
fn acknowledged_writes_survive_kill_9() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        kill_test_child(Path::new(&path));
        return;
    }
    let stores = Stores::new();
    let path = stores.path();
    let exe = std::env::current_exe().expect("test binary path");
    let child = Command::new(exe)
        .args([
            "acknowledged_writes_survive_kill_9",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the writer child");
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().expect("child stdout");
    let mut acked = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("child output");
        if let Some(rest) = line.strip_prefix("acked ") {
            let (key, revision) = rest.split_once(' ').expect("acked KEY REVISION");
            acked.push((
                key.to_owned(),
                revision.parse::<Revision>().expect("revision"),
            ));
            if acked.len() >= 2000 {
                break;
            }
        }
    }
    assert!(
        acked.len() >= 2000,
        "the child stopped before 2000 acknowledgements"
    );
    drop(child); // SIGKILL, mid-write

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = EmbeddedStore::open(&path).expect("reopen after kill -9");
        let current = store.current_revision().await.expect("revision");
        for (key, revision) in &acked {
            let kv = store.get(key.as_bytes()).await.expect("get");
            let kv = kv.unwrap_or_else(|| panic!("acknowledged {key} lost"));
            assert_eq!(kv.mod_revision, *revision, "{key}");
            assert!(*revision <= current);
        }
        // The history is whole up to the recovered revision.
        let batches = history(&store, 0, current as usize).await;
        assert_eq!(batches.len() as u64, current);
        println!(
            "kill -9: {} acknowledged writes survived; store recovered at revision {current}",
            acked.len()
        );
    });
}

fn kill_test_child(path: &Path) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(path).expect("open"));
        let writers: Vec<_> = (0..16)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0.. {
                        let key = format!("w{w}/{i}");
                        let r = store.txn(put(&key, "v")).await.expect("put");
                        println!("acked {key} {}", r.revision);
                    }
                })
            })
            .collect();
        // A safety net should the parent die without killing us.
        let _ = tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(writers))
            .await;
    });
}

/// Prints committed transactions per second with 64 concurrent writers (not an assertion: a
/// figure to read). Run with `--nocapture` to see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measure_group_commit_throughput() {
    const WRITERS: usize = 64;
    const TXNS: usize = 100;
    let stores = Stores::new();
    let store = stores.open();
    let value = "x".repeat(512);
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            let value = value.clone();
            tokio::spawn(async move {
                for i in 0..TXNS {
                    store
                        .txn(put(&format!("bench/{w}/{i}"), &value))
                        .await
                        .expect("put");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    let elapsed = started.elapsed();
    let total = WRITERS * TXNS;
    assert_eq!(
        store.current_revision().await.expect("revision"),
        total as u64
    );
    println!(
        "group commit: {total} txns from {WRITERS} writers in {elapsed:?}: {:.0} txns/s",
        total as f64 / elapsed.as_secs_f64()
    );

    let started = Instant::now();
    for i in 0..200 {
        store
            .txn(put(&format!("serial/{i}"), &value))
            .await
            .expect("put");
    }
    let serial = started.elapsed();
    println!(
        "one writer: 200 txns in {serial:?}: {:.0} txns/s (one fsync each)",
        200.0 / serial.as_secs_f64()
    );

    let started = Instant::now();
    for i in 0..10_000 {
        store
            .get(format!("bench/{}/{}", i % WRITERS, i % TXNS).as_bytes())
            .await
            .expect("get");
    }
    println!(
        "get (read inline): {:?} per read",
        started.elapsed() / 10_000
    );

    // The same point read through `range`, which hops to the blocking pool: the difference is
    // what a spawn_blocking per read would cost.
    let started = Instant::now();
    for i in 0..10_000 {
        let key = format!("bench/{}/{}", i % WRITERS, i % TXNS);
        let mut end = key.clone().into_bytes();
        end.push(0);
        let found = store.range(key.as_bytes(), &end, 0).await.expect("range");
        assert_eq!(found.kvs.len(), 1);
    }
    println!(
        "range of one key (spawn_blocking): {:?} per read",
        started.elapsed() / 10_000
    );
}
