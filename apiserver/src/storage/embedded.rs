//! The embedded store: a [`Store`] in one local [redb] file, for single-machine control planes
//! (`drover up`) and tests.
//!
//! ```text
//!  txn() ──► bounded queue ──► writer thread ──► one redb write txn per batch (fsync) ──► replies
//!                               (group commit)                                      └──► live feed
//!  get()/range() ──► redb read txn (MVCC snapshot, never waits for the writer)
//!  watch() ──► history from the `log` table, then the live feed; the log again when it lags
//! ```
//!
//! Tables:
//! - `kv`: key → `[version][create_revision][mod_revision][value]` (the current key space);
//! - `log`: revision → the encoded [`ChangeBatch`] of that revision (the change feed);
//! - `meta`: `revision` (last committed), `compacted` (history dropped at and before it) and
//!   `log_bytes` (the size of the retained log).
//!
//! The log is bounded twice: by revisions, when the API server compacts it periodically
//! ([`Store::compact`]), and by bytes, after every commit: the oldest entries go once the log
//! holds more than the store's retained-bytes bound ([`DEFAULT_RETAIN_BYTES`],
//! [`EmbeddedStore::open_with_retention`]), as if compacted.
//!
//! Group commit: one dedicated thread owns every write. It takes all the requests waiting in its
//! queue (up to [`MAX_BATCH`]) and applies them in arrival order inside one write transaction
//! with [`redb::Durability::Immediate`]. Each transaction still gets its own revision and its own
//! compare outcome, evaluated against the state that includes the earlier transactions of the
//! same batch. Only after the commit (one fsync for the whole batch) does the thread answer the
//! callers and publish the batches to live watchers. If the commit fails, every request of the
//! batch fails with [`StoreError::Backend`] and nothing changes. After a failed fsync the state
//! of the file is unknown, so redb refuses every later write: the store must be reopened (which
//! recovers the last committed state).
//!
//! Files: this one (opening, reads, the [`Store`] impl), `embedded/writer.rs` (group commit),
//! `embedded/watch.rs` (the change feed), `embedded/codec.rs` (the record formats).
//!
//! The store file holds every object, so it is created mode 0600 (an existing one more open is
//! made 0600 at open), and a missing directory for it is created 0700.
//!
//! Like etcd, a transaction that changes nothing (failed compares, no ops, or only deletes of
//! absent keys) does not take a revision, so the change feed has no empty batches and its
//! revisions have no gaps.

mod watch;
mod writer;

use std::fmt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{error, info};

use self::watch::watch_stream;
use self::writer::Writer;
use super::codec;
use super::{
    ChangeBatch, ChangeStream, KeyValue, Op, RangeResult, Revision, Store, StoreError, Txn,
    TxnResult,
};

/// The most requests the writer applies in one write transaction (one fsync).
pub const MAX_BATCH: usize = 1024;
/// Requests that may wait for the writer before `txn` callers wait to enqueue (backpressure).
const REQUEST_QUEUE: usize = 4 * MAX_BATCH;
/// Batches the live feed keeps for slow watchers; a watcher further behind reads the log. The
/// feed holds the last this-many batches in memory (shared by all watchers) while anyone
/// watches.
const LIVE_BUFFER: usize = 4096;
/// Ranges with a limit up to this are read on the calling task; larger ones on the blocking pool.
const INLINE_RANGE_LIMIT: usize = 256;
/// Batches a watcher reads from the log per read transaction while catching up.
const HISTORY_PAGE: usize = 256;
/// The largest sum of key and value sizes one transaction may write. redb refuses values over
/// 3 GiB, and a change batch holds each new value and the previous one.
const MAX_TXN_BYTES: usize = 512 << 20;

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";
const META_LOG_BYTES: &str = "log_bytes";

/// The most bytes of history (the `log` table: each change's new and previous value) the store
/// keeps unless told otherwise.
pub const DEFAULT_RETAIN_BYTES: u64 = 256 << 20;

/// A durable, revisioned key-value store in one redb file. See the module documentation.
///
/// Dropping the store finishes the requests already queued, stops the writer thread and ends
/// every watch stream with [`StoreError::Closed`].
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    /// `None` only while dropping.
    requests: Option<mpsc::Sender<Request>>,
    live: broadcast::Sender<Arc<ChangeBatch>>,
    writer: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .field("revision", &self.shared.revision.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

/// State shared by the store, its writer and its watchers.
struct Shared {
    db: Database,
    /// The last committed revision. The writer stores it after the commit and before it answers
    /// or publishes, so a reader who sees a revision can read its log entry.
    revision: AtomicU64,
    compacted: AtomicU64,
    /// Bytes of the retained log, as of the last commit.
    log_bytes: AtomicU64,
    /// The log is trimmed to at most this many bytes after every commit.
    retain_bytes: u64,
}

enum Request {
    Txn {
        txn: Txn,
        reply: oneshot::Sender<Result<TxnResult, StoreError>>,
    },
    Compact {
        revision: Revision,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

impl EmbeddedStore {
    /// Opens the store in the file at `path`, creating it (and its parent directories) when
    /// missing, and resumes its revision numbering and history.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with_retention(path, DEFAULT_RETAIN_BYTES)
    }

    /// [`open`](Self::open), keeping at most `retain_bytes` of history.
    pub fn open_with_retention(
        path: impl AsRef<Path>,
        retain_bytes: u64,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(PRIVATE_DIR_MODE)
                .create(parent)
                .map_err(|e| backend(format!("cannot create directory {}", parent.display()), e))?;
        }
        create_private_file(&path).map_err(|e| {
            backend(
                format!(
                    "cannot create the store file {} (mode 0600)",
                    path.display()
                ),
                e,
            )
        })?;
        let db = Database::create(&path)
            .map_err(|e| backend(format!("cannot open store file {}", path.display()), e))?;
        Self::start(db, path, retain_bytes)
    }

    /// Starts the writer over an opened database.
    fn start(db: Database, path: PathBuf, retain_bytes: u64) -> Result<Self, StoreError> {
        let (revision, compacted, log_bytes) = init_tables(&db)?;
        info!(path = %path.display(), revision, compacted, log_bytes, "opened embedded store");

        let shared = Arc::new(Shared {
            db,
            revision: AtomicU64::new(revision),
            compacted: AtomicU64::new(compacted),
            log_bytes: AtomicU64::new(log_bytes),
            retain_bytes,
        });
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        let (requests, queue) = mpsc::channel(REQUEST_QUEUE);
        let writer = Writer::spawn(shared.clone(), live.clone(), queue)
            .map_err(|e| backend("cannot start the store writer thread", e))?;
        Ok(Self {
            shared,
            requests: Some(requests),
            live,
            writer: Some(writer),
            path,
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of history the store retains (its log), as of the last commit.
    pub fn log_bytes(&self) -> u64 {
        self.shared.log_bytes.load(Ordering::Acquire)
    }

    async fn send(&self, request: Request) -> Result<(), StoreError> {
        let requests = self.requests.as_ref().ok_or(StoreError::Closed)?;
        requests.send(request).await.map_err(|_| StoreError::Closed)
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued and stop; joining it means the
        // file is released (unless a watch stream still holds it) when `drop` returns.
        drop(self.requests.take());
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            error!(path = %self.path.display(), "the store writer thread panicked");
        }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    /// Once queued, the transaction is applied even if the caller stops waiting for it.
    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        let size: usize = txn
            .ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value } => key.len() + value.len(),
                Op::Delete { key } => key.len(),
            })
            .sum();
        if size > MAX_TXN_BYTES {
            return Err(StoreError::Backend {
                message: format!("transaction writes {size} bytes, more than {MAX_TXN_BYTES}"),
                source: None,
            });
        }
        let (reply, outcome) = oneshot::channel();
        self.send(Request::Txn { txn, reply }).await?;
        outcome.await.map_err(|_| StoreError::Closed)?
    }

    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        // A point read takes microseconds: cheaper inline than a hop to the blocking pool.
        read_key(&self.shared.db, key)
    }

    async fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<RangeResult, StoreError> {
        // Measured (see `measure_group_commit_throughput`): a hop to the blocking pool costs
        // tens of microseconds, ten times a point read. Small pages are read inline; a range
        // that may copy the whole key space is kept off the async workers.
        if (1..=INLINE_RANGE_LIMIT).contains(&limit) {
            return read_range(&self.shared.db, start, end, limit);
        }
        let shared = self.shared.clone();
        let (start, end) = (start.to_vec(), end.to_vec());
        tokio::task::spawn_blocking(move || read_range(&shared.db, &start, &end, limit))
            .await
            .map_err(|e| backend("range read task failed", e))?
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.shared.revision.load(Ordering::Acquire))
    }

    async fn watch(&self, after: Revision) -> Result<ChangeStream, StoreError> {
        // Subscribe before reading the revision: every batch after `current` is then published
        // to this subscription, and every batch up to it is in the log.
        let live = self.live.subscribe();
        let current = self.shared.revision.load(Ordering::Acquire);
        let compacted = self.shared.compacted.load(Ordering::Acquire);
        if after > current {
            return Err(StoreError::FutureRevision {
                requested: after,
                current,
            });
        }
        if after < compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted,
            });
        }
        Ok(watch_stream(self.shared.clone(), live, after, current))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let (reply, outcome) = oneshot::channel();
        self.send(Request::Compact { revision, reply }).await?;
        outcome.await.map_err(|_| StoreError::Closed)?
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.shared.compacted.load(Ordering::Acquire))
    }
}

/// Creates the tables when missing and returns the stored `(revision, compacted, log_bytes)`.
fn init_tables(db: &Database) -> Result<(Revision, Revision, u64), StoreError> {
    let wtx = db
        .begin_write()
        .map_err(|e| backend("cannot begin the initial write transaction", e))?;
    let (revision, compacted, last_logged, log_bytes) = {
        wtx.open_table(KV)
            .map_err(|e| backend("cannot open table kv", e))?;
        let log = wtx
            .open_table(LOG)
            .map_err(|e| backend("cannot open table log", e))?;
        let meta = wtx
            .open_table(META)
            .map_err(|e| backend("cannot open table meta", e))?;
        let read = |name: &str| -> Result<u64, StoreError> {
            Ok(meta
                .get(name)
                .map_err(|e| backend(format!("cannot read meta {name}"), e))?
                .map(|v| v.value())
                .unwrap_or(0))
        };
        let last = log
            .last()
            .map_err(|e| backend("cannot read the last log entry", e))?
            .map(|(k, _)| k.value());
        // Stores written before the log's size was recorded: measure it once.
        let log_bytes = match meta
            .get(META_LOG_BYTES)
            .map_err(|e| backend("cannot read meta log_bytes", e))?
        {
            Some(v) => v.value(),
            None => {
                let mut total = 0u64;
                for entry in log.iter().map_err(|e| backend("cannot read the log", e))? {
                    let (_, v) = entry.map_err(|e| backend("cannot read the log", e))?;
                    total += v.value().len() as u64;
                }
                total
            }
        };
        (read(META_REVISION)?, read(META_COMPACTED)?, last, log_bytes)
    };
    if let Some(last) = last_logged
        && last > revision
    {
        return Err(StoreError::Corrupt {
            key: format!("log/{last}"),
            message: format!("log entry is newer than the store revision {revision}"),
        });
    }
    if compacted > revision {
        return Err(StoreError::Corrupt {
            key: META_COMPACTED.into(),
            message: format!("compacted revision {compacted} is newer than revision {revision}"),
        });
    }
    wtx.commit()
        .map_err(|e| backend("cannot commit the initial write transaction", e))?;
    Ok((revision, compacted, log_bytes))
}

fn read_key(db: &Database, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
    let rtx = db
        .begin_read()
        .map_err(|e| backend("cannot begin a read transaction", e))?;
    let kv = rtx
        .open_table(KV)
        .map_err(|e| backend("cannot open table kv", e))?;
    let Some(raw) = kv.get(key).map_err(|e| backend("cannot read a key", e))? else {
        return Ok(None);
    };
    codec::decode_record(Bytes::copy_from_slice(key), raw.value())
        .map(Some)
        .map_err(|message| corrupt_key(key, message))
}

fn read_range(
    db: &Database,
    start: &[u8],
    end: &[u8],
    limit: usize,
) -> Result<RangeResult, StoreError> {
    let rtx = db
        .begin_read()
        .map_err(|e| backend("cannot begin a read transaction", e))?;
    let revision = rtx
        .open_table(META)
        .map_err(|e| backend("cannot open table meta", e))?
        .get(META_REVISION)
        .map_err(|e| backend("cannot read meta revision", e))?
        .map(|v| v.value())
        .unwrap_or(0);
    let mut kvs = Vec::new();
    if !end.is_empty() && end <= start {
        return Ok(RangeResult { kvs, revision });
    }
    let table = rtx
        .open_table(KV)
        .map_err(|e| backend("cannot open table kv", e))?;
    let iter = if end.is_empty() {
        table.range(start..)
    } else {
        table.range(start..end)
    }
    .map_err(|e| backend("cannot start a range read", e))?;
    let limit = if limit == 0 { usize::MAX } else { limit };
    for entry in iter.take(limit) {
        let (key, raw) = entry.map_err(|e| backend("cannot read a range entry", e))?;
        let key = key.value();
        let kv = codec::decode_record(Bytes::copy_from_slice(key), raw.value())
            .map_err(|message| corrupt_key(key, message))?;
        kvs.push(kv);
    }
    Ok(RangeResult { kvs, revision })
}

/// Mode of a directory the store creates for its file.
const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of the store file.
pub const STORE_FILE_MODE: u32 = 0o600;

/// Creates the (empty) store file 0600 before redb opens it, so it is never readable by
/// others, not even for a moment; an existing file is made 0600.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(STORE_FILE_MODE)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(STORE_FILE_MODE))
}

fn backend(
    message: impl Into<String>,
    source: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    StoreError::Backend {
        message: message.into(),
        source: Some(Box::new(source)),
    }
}

/// `err` and its sources, joined: the batch's callers get the message, not the source.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn corrupt_key(key: &[u8], message: String) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::atomic::AtomicBool;

    use futures::{FutureExt, StreamExt};
    use redb::StorageBackend;
    use redb::backends::InMemoryBackend;

    use super::*;

    /// An in-memory file whose fsync fails on demand.
    #[derive(Debug, Default)]
    struct FlakyDisk {
        inner: InMemoryBackend,
        fail_sync: Arc<AtomicBool>,
    }

    impl StorageBackend for FlakyDisk {
        fn len(&self) -> Result<u64, io::Error> {
            self.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
            self.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> Result<(), io::Error> {
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> Result<(), io::Error> {
            if self.fail_sync.load(Ordering::SeqCst) {
                return Err(io::Error::other("injected fsync failure"));
            }
            self.inner.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
            self.inner.write(offset, data)
        }
    }

    fn put(key: &str, value: &str) -> Txn {
        Txn {
            compares: Vec::new(),
            ops: vec![Op::Put {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::copy_from_slice(value.as_bytes()),
            }],
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_fails_its_whole_batch_and_changes_nothing() {
        let disk = FlakyDisk::default();
        let fail_sync = disk.fail_sync.clone();
        let db = Database::builder()
            .create_with_backend(disk)
            .expect("in-memory database");
        let store = EmbeddedStore::start(db, "flaky".into(), DEFAULT_RETAIN_BYTES).expect("start");
        let first = store.txn(put("k", "v1")).await.expect("put");
        let mut watch = store.watch(first.revision).await.expect("watch");

        fail_sync.store(true, Ordering::SeqCst);
        let results = futures::future::join_all(
            (0..20).map(|i| store.txn(put(&format!("k{}", i % 3), "lost"))),
        )
        .await;
        for result in results {
            assert!(
                matches!(result, Err(StoreError::Backend { .. })),
                "{result:?}"
            );
        }
        assert_eq!(
            store.current_revision().await.expect("revision"),
            first.revision
        );
        assert!(
            watch.next().now_or_never().is_none(),
            "nothing published from a failed commit"
        );
        fail_sync.store(false, Ordering::SeqCst);
        let value = store.get(b"k").await.expect("get").map(|kv| kv.value);
        assert_eq!(value.as_deref(), Some(&b"v1"[..]));
        // After a failed fsync the file's state is unknown: writes stay refused until reopened.
        let after = store.txn(put("k", "v2")).await;
        match after {
            Err(StoreError::Backend { message, .. }) => {
                assert!(message.contains("I/O"), "the cause is kept: {message}");
            }
            other => panic!("a write after a failed fsync: {other:?}"),
        }
        assert_eq!(
            store.current_revision().await.expect("revision"),
            first.revision
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn history_is_bounded_by_bytes_and_the_file_stops_growing() {
        const VALUE: usize = 200 << 10;
        const RETAIN: u64 = 2 << 20;
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("store.redb");
        let store = EmbeddedStore::open_with_retention(&path, RETAIN).expect("open");
        let file_size = || std::fs::metadata(&path).expect("store file").len();
        let write = |i: usize| {
            let value = format!("{i:08}{}", "v".repeat(VALUE));
            store.txn(put("big", &value))
        };
        // Each revision logs the new and the previous value: ~400 KiB.
        for i in 0..40 {
            write(i).await.expect("put");
            assert!(store.log_bytes() <= RETAIN, "{} bytes", store.log_bytes());
        }
        let settled = file_size();
        for i in 40..240 {
            write(i).await.expect("put");
        }
        assert!(store.log_bytes() <= RETAIN, "{} bytes", store.log_bytes());
        let after = file_size();
        // 200 more writes of 400 KiB of log each would add 80 MiB: freed pages are reused.
        assert!(
            after <= settled + (4 << 20),
            "the file grew from {settled} to {after} bytes"
        );
        let compacted = store.compacted_revision().await.expect("compacted");
        assert!(
            compacted > 200,
            "old history was dropped: compacted {compacted}"
        );
        assert!(matches!(
            store.watch(1).await.err(),
            Some(StoreError::Compacted { .. })
        ));
        // The last revisions are still there to watch from.
        let current = store.current_revision().await.expect("revision");
        let mut feed = store.watch(current - 1).await.expect("watch");
        let batch = feed.next().await.expect("batch").expect("ok");
        assert_eq!(batch.revision, current);
        drop(feed);
        drop(store);
        // The size is recorded, so a reopened store keeps its bound without measuring.
        let store = EmbeddedStore::open_with_retention(&path, RETAIN).expect("reopen");
        assert!(store.log_bytes() > 0 && store.log_bytes() <= RETAIN);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_file_and_its_new_directory_are_private() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        let path = dir.path().join("data").join("store.redb");
        let store = EmbeddedStore::open(&path).expect("open");
        store.txn(put("k", "v")).await.expect("put");
        assert_eq!(mode(&path), 0o600, "store file");
        assert_eq!(mode(path.parent().expect("parent")), 0o700, "its directory");
        drop(store);
        // A file left more open (by an older version) is closed at the next open.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let store = EmbeddedStore::open(&path).expect("reopen");
        assert_eq!(mode(&path), 0o600, "reopened store file");
        let value = store.get(b"k").await.expect("get");
        assert!(value.is_some(), "the data survived");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_watch_releases_its_subscription() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = EmbeddedStore::open(dir.path().join("store.redb")).expect("open");
        for i in 0..3 {
            store.txn(put(&format!("k{i}"), "v")).await.expect("put");
        }
        let mut watch = store.watch(0).await.expect("watch");
        assert_eq!(watch.next().await.expect("batch").expect("ok").revision, 1);
        assert_eq!(store.live.receiver_count(), 1);
        drop(watch);
        assert_eq!(store.live.receiver_count(), 0, "nothing keeps watching");
        let watch = store.watch(3).await.expect("watch");
        drop(watch);
        assert_eq!(store.live.receiver_count(), 0);
    }
}
