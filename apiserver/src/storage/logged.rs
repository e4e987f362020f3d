//! A [`Store`] on a distributed transactional key-value engine (etcd, TiKV) that keeps Drover's
//! revision counter and change log itself, so that many Drover transactions commit in one
//! engine transaction and each still has its own revision.
//!
//! Keys, under an optional prefix (`etcd://…/P`, `tikv://…/P` put every key under `P/`):
//! - `m/rev`: the revision of the last committed Drover transaction (u64, big-endian);
//! - `m/compacted`: the compacted revision;
//! - `d/KEY`: an object, as the embedded store records it (create and mod revision, value);
//! - `l/REV`: the change batches of one group commit, keyed by the group's last revision
//!   (big-endian, so keys sort by revision), with the nonce of the commit that wrote them.
//!
//! Group commit: one committer task takes the queued [`Txn`]s, reads every key they compare or
//! write and the counter in one optimistic engine transaction, evaluates them in order
//! ([`apply::evaluate`], as the embedded store does: each gets the next revision), and commits
//! the new values, one log entry and the counter. The engine commits only if nothing it read
//! and writes has changed since (TiKV: a write conflict at prewrite; etcd: a compare on each
//! key's mod revision), and every commit writes the counter, so two API servers committing at
//! once serialise: the loser reads again and retries, and the log has no gaps. When a commit's
//! outcome is not known (the connection broke after it was sent), the retry first looks for the
//! log entry the group would have written: if it holds the group's nonce, the group was
//! committed and is not applied twice.
//!
//! The change feed reads the log from a snapshot: at once after every local commit, when the
//! engine signals a commit by another client (etcd watches the counter), and at the engine's
//! poll interval. Compaction marks the compacted revision, deletes the log entries before it,
//! and lets the engine drop old versions.
//!
//! Unavailability: an engine call that cannot be served is retried with backoff for up to
//! [`RETRY_FOR`], then the store call fails with [`StoreError::Unavailable`] (the API answers
//! 503).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::debug;

use super::apply::{self, Step};
use super::{
    ChangeBatch, ChangeStream, Compare, KeyValue, Op, RangeResult, Revision, Store, StoreError,
    Txn, TxnResult, codec, prefix_end,
};

/// How long a store call keeps retrying an engine that cannot be reached.
pub const RETRY_FOR: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Keys per page of a range read.
const PAGE: u32 = 1000;
/// Log entries read at once by a watch.
const LOG_PAGE: u32 = 64;

/// An error of one engine call.
#[derive(Debug)]
pub enum Attempt {
    /// Worth another try (a conflict, a transport error, a timeout); the message says what.
    Retry(String),
    /// Not worth another try.
    Final(StoreError),
}

/// Writes of one engine transaction: a key and its new value (`None`: delete).
pub type Writes = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// What a [`LoggedStore`] needs of the engine under it.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// An optimistic transaction: reads, then writes that commit only if no key it both read
    /// and writes has changed since it read it.
    type Txn: Send;
    /// A consistent read-only view.
    type Snapshot: Send;

    /// The engine and where it is, for errors ("etcd at …", "TiKV (PD at …)").
    fn describe(&self) -> String;
    /// The most keys one engine transaction may write (etcd: `--max-txn-ops`).
    fn max_writes(&self) -> usize;
    /// The most bytes of keys and values one engine transaction may write.
    fn max_write_bytes(&self) -> usize;
    /// How often a watch reads the log when nothing woke it.
    fn poll_interval(&self) -> Duration;

    async fn begin(&self) -> Result<Self::Txn, Attempt>;
    /// Reads `keys` in `txn` (absent: `None`), each at the transaction's snapshot.
    async fn txn_get(
        &self,
        txn: &mut Self::Txn,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Vec<u8>>>, Attempt>;
    /// Commits `writes`; a conflict is an [`Attempt::Retry`].
    async fn txn_commit(&self, txn: Self::Txn, writes: Writes) -> Result<(), Attempt>;
    /// Drops a transaction that writes nothing.
    async fn txn_abandon(&self, txn: Self::Txn);

    async fn snapshot(&self) -> Result<Self::Snapshot, Attempt>;
    async fn snap_get(
        &self,
        snap: &mut Self::Snapshot,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Vec<u8>>>, Attempt>;
    /// At most `limit` keys of `[start, end)` with their values, in key order.
    async fn snap_scan(
        &self,
        snap: &mut Self::Snapshot,
        start: &[u8],
        end: &[u8],
        limit: u32,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Attempt>;

    /// After a compaction: lets the engine drop versions no read needs any more. A failure is
    /// the engine's to log; compaction itself has succeeded.
    async fn collect_garbage(&self);
    /// Yields when another client may have committed (watched by the engine), or `None`: the
    /// watch polls.
    fn wake_ups(&self, _counter: Vec<u8>) -> Option<BoxStream<'static, ()>> {
        None
    }
    /// Ends the engine's connections.
    async fn close(&self) {}
}

/// The keys Drover's data lives under.
#[derive(Clone, Debug)]
pub struct Layout {
    data: Vec<u8>,
    log: Vec<u8>,
    revision: Vec<u8>,
    compacted: Vec<u8>,
}

impl Layout {
    pub fn new(prefix: &str) -> Layout {
        let with = |suffix: &str| {
            let mut key = prefix.as_bytes().to_vec();
            if !key.is_empty() {
                key.push(b'/');
            }
            key.extend_from_slice(suffix.as_bytes());
            key
        };
        Layout {
            data: with("d/"),
            log: with("l/"),
            revision: with("m/rev"),
            compacted: with("m/compacted"),
        }
    }

    fn data_key(&self, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + key.len());
        out.extend_from_slice(&self.data);
        out.extend_from_slice(key);
        out
    }

    fn user_key(&self, data_key: &[u8]) -> Bytes {
        Bytes::copy_from_slice(data_key.get(self.data.len()..).unwrap_or_default())
    }

    fn log_key(&self, revision: Revision) -> Vec<u8> {
        let mut out = self.log.clone();
        out.extend_from_slice(&revision.to_be_bytes());
        out
    }
}

/// A [`Store`] on an [`Engine`]; see the module documentation.
pub struct LoggedStore<E: Engine> {
    inner: Arc<Inner<E>>,
}

impl<E: Engine> Clone for LoggedStore<E> {
    fn clone(&self) -> Self {
        LoggedStore {
            inner: self.inner.clone(),
        }
    }
}

impl<E: Engine> std::fmt::Debug for LoggedStore<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggedStore")
            .field("engine", &self.inner.engine.describe())
            .field("layout", &self.inner.layout)
            .finish()
    }
}

struct Inner<E: Engine> {
    engine: E,
    layout: Layout,
    commits: std::sync::Mutex<Option<mpsc::Sender<Pending>>>,
    /// The last revision this process committed: wakes local watches at once.
    committed: watch::Sender<Revision>,
    closed: AtomicBool,
    shutdown: watch::Sender<bool>,
}

struct Pending {
    txn: Txn,
    reply: oneshot::Sender<Result<TxnResult, StoreError>>,
}

type Results = Vec<Result<TxnResult, StoreError>>;

fn decode_u64(key: &[u8], raw: Option<Vec<u8>>) -> Result<u64, StoreError> {
    match raw {
        None => Ok(0),
        Some(raw) => match <[u8; 8]>::try_from(raw.as_slice()) {
            Ok(bytes) => Ok(u64::from_be_bytes(bytes)),
            Err(_) => Err(corrupt(
                key,
                format!("holds {} bytes, not a u64", raw.len()),
            )),
        },
    }
}

fn corrupt(key: &[u8], message: String) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        message,
    }
}

/// A log entry: `[nonce u64][count u32]`, then per batch `[revision u64][len u32]` and the batch
/// as the embedded store encodes it; integers little-endian.
fn encode_log(nonce: u64, batches: &[ChangeBatch]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&nonce.to_le_bytes());
    out.extend_from_slice(&(batches.len() as u32).to_le_bytes());
    for batch in batches {
        let encoded = codec::encode_batch(batch);
        out.extend_from_slice(&batch.revision.to_le_bytes());
        out.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
        out.extend_from_slice(&encoded);
    }
    out
}

fn log_nonce(raw: &[u8]) -> Option<u64> {
    raw.get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
}

fn decode_log(key: &[u8], raw: &[u8]) -> Result<Vec<ChangeBatch>, StoreError> {
    let short = || corrupt(key, "log entry ends early".into());
    let mut at = 12;
    let count = raw
        .get(8..12)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes)
        .ok_or_else(short)?;
    let mut batches = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let head = raw.get(at..at + 12).ok_or_else(short)?;
        let revision = u64::from_le_bytes(head[..8].try_into().map_err(|_| short())?);
        let len = u32::from_le_bytes(head[8..].try_into().map_err(|_| short())?) as usize;
        at += 12;
        let body = raw.get(at..at + len).ok_or_else(short)?;
        at += len;
        batches.push(codec::decode_batch(revision, body).map_err(|m| corrupt(key, m))?);
    }
    if at != raw.len() {
        return Err(corrupt(key, "trailing bytes after the log entry".into()));
    }
    Ok(batches)
}

fn decode_data(layout: &Layout, key: &[u8], value: &[u8]) -> Result<KeyValue, StoreError> {
    let user_key = layout.user_key(key);
    codec::decode_record(user_key.clone(), value).map_err(|message| corrupt(&user_key, message))
}

fn clone_error(err: &StoreError) -> StoreError {
    match err {
        StoreError::Corrupt { key, message } => StoreError::Corrupt {
            key: key.clone(),
            message: message.clone(),
        },
        StoreError::Unavailable { message } => StoreError::Unavailable {
            message: message.clone(),
        },
        StoreError::Closed => StoreError::Closed,
        other => StoreError::Backend {
            message: other.to_string(),
            source: None,
        },
    }
}

fn clone_result(result: &Result<TxnResult, StoreError>) -> Result<TxnResult, StoreError> {
    match result {
        Ok(r) => Ok(r.clone()),
        Err(e) => Err(clone_error(e)),
    }
}

/// The keys a transaction writes and their bytes, to bound a group.
fn txn_size(txn: &Txn) -> (usize, usize) {
    let bytes = txn
        .ops
        .iter()
        .map(|op| match op {
            Op::Put { key, value } => key.len() + value.len(),
            Op::Delete { key } => key.len(),
        })
        .sum();
    (txn.ops.len(), bytes)
}

impl<E: Engine> LoggedStore<E> {
    /// A store on `engine`, its keys laid out under `prefix`. Reads the counter once, so an
    /// engine that does not answer is an error here.
    pub async fn open(engine: E, prefix: &str) -> Result<LoggedStore<E>, StoreError> {
        let (commits, queue) = mpsc::channel(1024);
        let inner = Arc::new(Inner {
            engine,
            layout: Layout::new(prefix),
            commits: std::sync::Mutex::new(Some(commits)),
            committed: watch::channel(0).0,
            closed: AtomicBool::new(false),
            shutdown: watch::channel(false).0,
        });
        let revision = inner.read_u64(inner.layout.revision.clone()).await?;
        inner.committed.send_replace(revision);
        tokio::spawn(committer(inner.clone(), queue));
        Ok(LoggedStore { inner })
    }

    /// The engine under the store.
    pub fn engine(&self) -> &E {
        &self.inner.engine
    }
}

impl<E: Engine> Inner<E> {
    fn check_open(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }

    fn unavailable(&self, last: &str) -> StoreError {
        StoreError::Unavailable {
            message: format!(
                "{} did not answer within {RETRY_FOR:?}: {last}",
                self.engine.describe()
            ),
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or [`RETRY_FOR`] has passed.
    async fn with_retry<T, F, Fut>(&self, mut attempt: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Attempt>>,
    {
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        loop {
            self.check_open()?;
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(Attempt::Final(err)) => return Err(err),
                Err(Attempt::Retry(last)) => {
                    if started.elapsed() >= RETRY_FOR {
                        return Err(self.unavailable(&last));
                    }
                    debug!(error = %last, "store call failed; retrying");
                    backoff = pause(backoff).await;
                }
            }
        }
    }

    async fn read_u64(&self, key: Vec<u8>) -> Result<u64, StoreError> {
        self.with_retry(|| {
            let key = key.clone();
            async move {
                let mut snap = self.engine.snapshot().await?;
                let raw = self
                    .engine
                    .snap_get(&mut snap, std::slice::from_ref(&key))
                    .await?;
                decode_u64(&key, raw.into_iter().next().flatten()).map_err(Attempt::Final)
            }
        })
        .await
    }

    /// Commits `batch` (see the module documentation), with retries.
    async fn commit_batch(&self, batch: &[Txn]) -> Results {
        let nonce: u64 = rand::random();
        // What the last attempt that reached its commit would have written: its log entry's
        // revision and the results to give if it did commit.
        let mut sent: Option<(Revision, Results)> = None;
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        loop {
            if let Err(err) = self.check_open() {
                return batch.iter().map(|_| Err(clone_error(&err))).collect();
            }
            let err = match self.try_commit(batch, nonce, &mut sent).await {
                Ok(results) => return results,
                Err(Attempt::Final(err)) => err,
                Err(Attempt::Retry(last)) if started.elapsed() < RETRY_FOR => {
                    debug!(error = %last, "group commit failed; retrying");
                    backoff = pause(backoff).await;
                    continue;
                }
                Err(Attempt::Retry(last)) => self.unavailable(&last),
            };
            return batch.iter().map(|_| Err(clone_error(&err))).collect();
        }
    }

    async fn try_commit(
        &self,
        batch: &[Txn],
        nonce: u64,
        sent: &mut Option<(Revision, Results)>,
    ) -> Result<Results, Attempt> {
        let (engine, layout) = (&self.engine, &self.layout);
        let mut txn = engine.begin().await?;
        let counter = engine
            .txn_get(&mut txn, std::slice::from_ref(&layout.revision))
            .await?;
        let current = decode_u64(&layout.revision, counter.into_iter().next().flatten())
            .map_err(Attempt::Final)?;
        if let Some((last, results)) = sent.as_ref()
            && current >= *last
        {
            let entry = engine.txn_get(&mut txn, &[layout.log_key(*last)]).await?;
            if entry
                .into_iter()
                .next()
                .flatten()
                .as_deref()
                .and_then(log_nonce)
                == Some(nonce)
            {
                debug!(
                    revision = last,
                    "an earlier attempt of this group committed"
                );
                engine.txn_abandon(txn).await;
                return Ok(results.iter().map(clone_result).collect());
            }
        }

        // Every key the group compares or writes, read at once.
        let mut wanted: Vec<Bytes> = Vec::new();
        let mut seen: HashSet<&Bytes> = HashSet::new();
        for t in batch {
            let compared = t
                .compares
                .iter()
                .map(|Compare::ModRevision { key, .. }| key);
            let written = t.ops.iter().map(|op| match op {
                Op::Put { key, .. } | Op::Delete { key } => key,
            });
            for key in compared.chain(written) {
                if seen.insert(key) {
                    wanted.push(key.clone());
                }
            }
        }
        let data_keys: Vec<Vec<u8>> = wanted.iter().map(|k| layout.data_key(k)).collect();
        let values = engine.txn_get(&mut txn, &data_keys).await?;
        let mut known: HashMap<Bytes, Result<Option<KeyValue>, String>> = HashMap::new();
        for ((key, data_key), value) in wanted.iter().zip(&data_keys).zip(values) {
            let decoded = match value {
                Some(raw) => decode_data(layout, data_key, &raw)
                    .map(Some)
                    .map_err(|e| e.to_string()),
                None => Ok(None),
            };
            known.insert(key.clone(), decoded);
        }

        let mut revision = current;
        let mut results = Vec::with_capacity(batch.len());
        let mut logs = Vec::new();
        let mut dirty: HashSet<Bytes> = HashSet::new();
        for t in batch {
            let step = apply::evaluate(t, revision, |key| match known.get(key) {
                Some(Ok(kv)) => Ok(kv.clone()),
                Some(Err(message)) => Err(corrupt(key, message.clone())),
                None => Ok(None),
            })
            .map_err(Attempt::Final)?;
            results.push(match step {
                Step::Applied { batch, writes } => {
                    revision = batch.revision;
                    for (key, value) in writes {
                        dirty.insert(key.clone());
                        known.insert(key, Ok(value));
                    }
                    logs.push(batch);
                    Ok(TxnResult {
                        succeeded: true,
                        revision,
                        failed_compare: None,
                    })
                }
                Step::Unchanged => Ok(TxnResult {
                    succeeded: true,
                    revision,
                    failed_compare: None,
                }),
                Step::CompareFailed(index) => Ok(TxnResult {
                    succeeded: false,
                    revision,
                    failed_compare: Some(index),
                }),
                Step::Corrupt(err) => Err(err),
            });
        }
        if logs.is_empty() {
            engine.txn_abandon(txn).await;
            return Ok(results);
        }

        let mut writes: Writes = Vec::with_capacity(dirty.len() + 2);
        for key in &dirty {
            let value = match known.get(key) {
                Some(Ok(Some(kv))) => {
                    let mut record = Vec::with_capacity(17 + kv.value.len());
                    codec::encode_record(
                        &mut record,
                        kv.create_revision,
                        kv.mod_revision,
                        &kv.value,
                    );
                    Some(record)
                }
                _ => None,
            };
            writes.push((layout.data_key(key), value));
        }
        writes.push((layout.log_key(revision), Some(encode_log(nonce, &logs))));
        writes.push((
            layout.revision.clone(),
            Some(revision.to_be_bytes().to_vec()),
        ));
        *sent = Some((revision, results.iter().map(clone_result).collect()));
        engine.txn_commit(txn, writes).await?;
        self.committed.send_replace(revision);
        Ok(results)
    }

    /// The change batches after `after` from the next few log entries, and the compacted
    /// revision, from one snapshot.
    async fn read_log(&self, after: Revision) -> Result<(Vec<ChangeBatch>, Revision), StoreError> {
        let layout = &self.layout;
        self.with_retry(|| async move {
            let mut snap = self.engine.snapshot().await?;
            let compacted = self
                .engine
                .snap_get(&mut snap, std::slice::from_ref(&layout.compacted))
                .await?;
            let compacted = decode_u64(&layout.compacted, compacted.into_iter().next().flatten())
                .map_err(Attempt::Final)?;
            // An entry is keyed by its last revision: the first entry at or after `after + 1`
            // holds it.
            let start = layout.log_key(after + 1);
            let end = prefix_end(&layout.log);
            let entries = self
                .engine
                .snap_scan(&mut snap, &start, &end, LOG_PAGE)
                .await?;
            let mut batches = Vec::new();
            for (key, raw) in entries {
                for batch in decode_log(&key, &raw).map_err(Attempt::Final)? {
                    if batch.revision > after {
                        batches.push(batch);
                    }
                }
            }
            Ok((batches, compacted))
        })
        .await
    }
}

/// Sleeps for about `backoff` (with jitter, which keeps competing committers apart) and
/// returns the next backoff.
async fn pause(backoff: Duration) -> Duration {
    tokio::time::sleep(backoff.mul_f64(0.5 + rand::random::<f64>() / 2.0)).await;
    (backoff * 2).min(MAX_BACKOFF)
}

/// Takes queued transactions in groups and commits each group as one engine transaction.
async fn committer<E: Engine>(inner: Arc<Inner<E>>, mut queue: mpsc::Receiver<Pending>) {
    let max_writes = inner.engine.max_writes().saturating_sub(2).max(1);
    let max_bytes = inner.engine.max_write_bytes();
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match queue.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let (mut writes, mut bytes) = txn_size(&first.txn);
        let mut batch = vec![first];
        // A log entry holds each value once more: count it twice.
        while writes < max_writes && 2 * bytes < max_bytes {
            match queue.try_recv() {
                Ok(next) => {
                    let (w, b) = txn_size(&next.txn);
                    if writes + w > max_writes || 2 * (bytes + b) > max_bytes {
                        carried = Some(next);
                        break;
                    }
                    writes += w;
                    bytes += b;
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let txns: Vec<Txn> = batch.iter().map(|p| p.txn.clone()).collect();
        let results = inner.commit_batch(&txns).await;
        for (pending, result) in batch.into_iter().zip(results) {
            let _ = pending.reply.send(result);
        }
    }
}

#[async_trait]
impl<E: Engine> Store for LoggedStore<E> {
    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        self.inner.check_open()?;
        let (writes, bytes) = txn_size(&txn);
        let (max_writes, max_bytes) = (
            self.inner.engine.max_writes().saturating_sub(2),
            self.inner.engine.max_write_bytes() / 2,
        );
        if writes > max_writes || bytes > max_bytes {
            return Err(StoreError::Backend {
                message: format!(
                    "transaction writes {writes} keys and {bytes} bytes; {} takes at most \
                     {max_writes} keys and {max_bytes} bytes in one",
                    self.inner.engine.describe()
                ),
                source: None,
            });
        }
        let sender = self
            .inner
            .commits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(StoreError::Closed)?;
        let (reply, outcome) = oneshot::channel();
        sender
            .send(Pending { txn, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        outcome.await.map_err(|_| StoreError::Closed)?
    }

    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        let inner = &self.inner;
        inner.check_open()?;
        let data_key = inner.layout.data_key(key);
        inner
            .with_retry(|| {
                let data_key = data_key.clone();
                async move {
                    let mut snap = inner.engine.snapshot().await?;
                    let found = inner
                        .engine
                        .snap_get(&mut snap, std::slice::from_ref(&data_key))
                        .await?;
                    match found.into_iter().next().flatten() {
                        Some(raw) => decode_data(&inner.layout, &data_key, &raw)
                            .map(Some)
                            .map_err(Attempt::Final),
                        None => Ok(None),
                    }
                }
            })
            .await
    }

    async fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<RangeResult, StoreError> {
        let inner = &self.inner;
        inner.check_open()?;
        let layout = &inner.layout;
        let from = layout.data_key(start);
        let to = if end.is_empty() {
            prefix_end(&layout.data)
        } else {
            layout.data_key(end)
        };
        inner
            .with_retry(|| {
                let (mut from, to) = (from.clone(), to.clone());
                async move {
                    let mut snap = inner.engine.snapshot().await?;
                    let counter = inner
                        .engine
                        .snap_get(&mut snap, std::slice::from_ref(&layout.revision))
                        .await?;
                    let revision =
                        decode_u64(&layout.revision, counter.into_iter().next().flatten())
                            .map_err(Attempt::Final)?;
                    let mut kvs = Vec::new();
                    loop {
                        let want = if limit == 0 {
                            PAGE
                        } else {
                            PAGE.min(u32::try_from(limit - kvs.len()).unwrap_or(PAGE))
                        };
                        let page = inner.engine.snap_scan(&mut snap, &from, &to, want).await?;
                        let full = page.len() as u32 == want;
                        if let Some((last, _)) = page.last() {
                            let mut next = last.clone();
                            next.push(0);
                            from = next;
                        }
                        for (key, value) in page {
                            kvs.push(decode_data(layout, &key, &value).map_err(Attempt::Final)?);
                        }
                        if !full || (limit > 0 && kvs.len() >= limit) {
                            break;
                        }
                    }
                    Ok(RangeResult { kvs, revision })
                }
            })
            .await
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.inner.check_open()?;
        self.inner
            .read_u64(self.inner.layout.revision.clone())
            .await
    }

    async fn watch(&self, after: Revision) -> Result<ChangeStream, StoreError> {
        let inner = self.inner.clone();
        inner.check_open()?;
        let current = inner.read_u64(inner.layout.revision.clone()).await?;
        let compacted = inner.read_u64(inner.layout.compacted.clone()).await?;
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
        let mut local = inner.committed.subscribe();
        let mut shutdown = inner.shutdown.subscribe();
        let mut remote = inner
            .engine
            .wake_ups(inner.layout.revision.clone())
            .unwrap_or_else(|| futures::stream::pending().boxed());
        let poll = inner.engine.poll_interval();
        let stream = async_stream::stream! {
            let mut next = after + 1;
            loop {
                if *shutdown.borrow() {
                    break;
                }
                let (batches, compacted) = match inner.read_log(next - 1).await {
                    Ok(read) => read,
                    Err(err) => {
                        yield Err(err);
                        break;
                    }
                };
                if next <= compacted {
                    yield Err(StoreError::Compacted { requested: next - 1, compacted });
                    break;
                }
                let progressed = !batches.is_empty();
                let mut gap = None;
                for batch in batches {
                    if batch.revision != next {
                        gap = Some(batch.revision);
                        break;
                    }
                    next += 1;
                    yield Ok(batch);
                }
                if let Some(found) = gap {
                    yield Err(corrupt(
                        &inner.layout.log_key(next),
                        format!("the log has no entry for revision {next} (next is {found})"),
                    ));
                    break;
                }
                if progressed {
                    // There may be more: read again before waiting.
                    continue;
                }
                tokio::select! {
                    _ = local.changed() => {}
                    _ = remote.next() => {}
                    _ = tokio::time::sleep(poll) => {}
                    _ = shutdown.changed() => {}
                }
            }
        };
        Ok(Box::pin(stream))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner.check_open()?;
        let layout = &inner.layout;
        let engine = &inner.engine;
        let previous = inner
            .with_retry(|| async move {
                let mut txn = engine.begin().await?;
                let read = engine
                    .txn_get(
                        &mut txn,
                        &[layout.revision.clone(), layout.compacted.clone()],
                    )
                    .await?;
                let mut read = read.into_iter();
                let current =
                    decode_u64(&layout.revision, read.next().flatten()).map_err(Attempt::Final)?;
                let compacted =
                    decode_u64(&layout.compacted, read.next().flatten()).map_err(Attempt::Final)?;
                if revision > current {
                    engine.txn_abandon(txn).await;
                    return Err(Attempt::Final(StoreError::FutureRevision {
                        requested: revision,
                        current,
                    }));
                }
                if revision <= compacted {
                    engine.txn_abandon(txn).await;
                    return Ok(None);
                }
                let mark = vec![(
                    layout.compacted.clone(),
                    Some(revision.to_be_bytes().to_vec()),
                )];
                engine.txn_commit(txn, mark).await?;
                Ok(Some(compacted))
            })
            .await?;
        if previous.is_none() {
            return Ok(());
        }
        // The mark is set: watches from older revisions fail from now on. The entries that
        // hold only revisions at or before it go in pages, each its own transaction (none
        // writes the counter, so writers are not held up).
        let start = layout.log_key(0);
        let end = layout.log_key(revision + 1);
        loop {
            let keys: Vec<Vec<u8>> = inner
                .with_retry(|| async {
                    let mut snap = engine.snapshot().await?;
                    let page = engine.snap_scan(&mut snap, &start, &end, PAGE).await?;
                    Ok(page.into_iter().map(|(k, _)| k).collect())
                })
                .await?;
            if keys.is_empty() {
                break;
            }
            let done = keys.len() < PAGE as usize;
            for chunk in keys.chunks(engine.max_writes().max(1)) {
                inner
                    .with_retry(|| async {
                        let txn = engine.begin().await?;
                        engine
                            .txn_commit(txn, chunk.iter().map(|k| (k.clone(), None)).collect())
                            .await
                    })
                    .await?;
            }
            if done {
                break;
            }
        }
        engine.collect_garbage().await;
        Ok(())
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        self.inner.check_open()?;
        self.inner
            .read_u64(self.inner.layout.compacted.clone())
            .await
    }

    async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner
            .commits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.inner.shutdown.send_replace(true);
        self.inner.engine.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_keeps_kinds_apart_and_sorts_the_log_by_revision() {
        let layout = Layout::new("/x");
        assert_eq!(layout.data_key(b"pods/a"), b"/x/d/pods/a".to_vec());
        assert_eq!(
            layout.user_key(b"/x/d/pods/a"),
            Bytes::from_static(b"pods/a")
        );
        assert!(layout.log_key(255) < layout.log_key(256));
        assert!(layout.log_key(u64::MAX) < prefix_end(&layout.log));
        assert_eq!(layout.revision, b"/x/m/rev".to_vec());
        assert_eq!(Layout::new("").revision, b"m/rev".to_vec());
    }

    #[test]
    fn log_entries_carry_their_nonce_and_every_batch() {
        let batches = vec![
            ChangeBatch {
                revision: 3,
                changes: vec![],
            },
            ChangeBatch {
                revision: 4,
                changes: vec![],
            },
        ];
        let raw = encode_log(42, &batches);
        assert_eq!(log_nonce(&raw), Some(42));
        assert_eq!(decode_log(b"k", &raw).ok(), Some(batches));
        assert!(decode_log(b"k", &raw[..raw.len() - 1]).is_err());
        let mut long = raw.clone();
        long.push(0);
        assert!(decode_log(b"k", &long).is_err());
    }

    #[test]
    fn counters_are_eight_bytes() {
        assert_eq!(decode_u64(b"k", None).ok(), Some(0));
        assert_eq!(
            decode_u64(b"k", Some(7u64.to_be_bytes().to_vec())).ok(),
            Some(7)
        );
        assert!(decode_u64(b"k", Some(vec![1, 2])).is_err());
    }
}
