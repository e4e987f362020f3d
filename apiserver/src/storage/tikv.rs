//! The TiKV store: every object in a TiKV cluster, through `tikv-client`'s transactional API
//! (Percolator optimistic transactions, timestamps from PD).
//!
//! TiKV has no global revision nor a change feed that a client library can follow, so both
//! are built on keys, under an optional prefix (`tikv://PD1,PD2/P` puts every key under `P/`):
//! - `m/rev`: the revision of the last committed Drover transaction (u64, big-endian);
//! - `m/compacted`: the compacted revision;
//! - `d/KEY`: an object, as the embedded store records it (create and mod revision, value);
//! - `l/REV`: the change batch of revision `REV` (big-endian, so keys sort by revision),
//!   prefixed with the nonce of the TiKV transaction that wrote it.
//!
//! Group commit: one committer task takes the queued [`Txn`]s, evaluates them in order on one
//! TiKV transaction (each gets its own revision, as on the other stores) and commits them with
//! the new values, their log entries and the counter. Every commit writes `m/rev`, so two
//! API servers committing at once conflict at prewrite and the loser retries from a fresh
//! snapshot: commits are serialised and the log has no gaps. When a commit's outcome is not
//! known (the connection broke after it was sent), the retry first looks at the log entry the
//! batch would have written: if it holds the batch's nonce, the batch was committed and is not
//! applied twice.
//!
//! The change feed reads the log from a snapshot after every local commit, and every
//! [`POLL`] for commits of other API servers. Compaction deletes log entries and then asks
//! TiKV to garbage-collect MVCC versions older than [`TikvConfig::gc_lifetime`].
//!
//! Unavailability: every call retries (TiKV's own region and lock retries inside each
//! attempt, then ours with backoff) for up to [`RETRY_FOR`], then fails with
//! [`StoreError::Unavailable`] (the API answers 503).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tikv_client::{
    CheckLevel, Config, Key, KvPair, Snapshot, Timestamp, TransactionClient, TransactionOptions,
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};

use super::apply::{self, Step};
use super::{
    ChangeBatch, ChangeStream, KeyValue, RangeResult, Revision, Store, StoreError, Txn, TxnResult,
    codec, prefix_end,
};

/// How long one attempt of a call may take (TiKV's client applies it to each RPC).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call keeps retrying before it fails with `Unavailable`.
pub const RETRY_FOR: Duration = Duration::from_secs(10);
/// How long connecting to PD may take at start-up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How often a watch looks for commits made through other API servers.
pub const POLL: Duration = Duration::from_millis(10);
/// Queued transactions committed together at most.
const MAX_BATCH: usize = 256;
/// Bytes of values committed together at most (TiKV refuses a Raft entry above 8 MiB).
const MAX_BATCH_BYTES: usize = 6 * 1024 * 1024;
/// Keys per page of a range read or a log read.
const PAGE: u32 = 1000;
/// Log entries read at once by a watch.
const LOG_PAGE: u32 = 256;
/// The largest message accepted from TiKV.
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Where the TiKV cluster is, as `--store tikv://PD1:PORT,PD2:PORT[/prefix]` gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TikvConfig {
    /// `host:port` of each PD member.
    pub pd_endpoints: Vec<String>,
    /// Prefix of every key Drover writes (empty: none).
    pub prefix: String,
    /// How long MVCC versions are kept after compaction, for reads that started before it (as
    /// TiDB's `tidb_gc_life_time`, 10 minutes by default).
    pub gc_lifetime: Duration,
}

impl TikvConfig {
    pub fn new(pd_endpoints: Vec<String>, prefix: impl Into<String>) -> TikvConfig {
        TikvConfig {
            pd_endpoints,
            prefix: prefix.into(),
            gc_lifetime: Duration::from_secs(600),
        }
    }
}

/// The keys Drover's data lives under.
#[derive(Clone)]
struct Layout {
    data: Vec<u8>,
    log: Vec<u8>,
    revision: Vec<u8>,
    compacted: Vec<u8>,
}

impl Layout {
    fn new(prefix: &str) -> Layout {
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

    fn log_key(&self, revision: Revision) -> Vec<u8> {
        let mut out = self.log.clone();
        out.extend_from_slice(&revision.to_be_bytes());
        out
    }
}

/// A [`Store`] on a TiKV cluster.
#[derive(Clone)]
pub struct TikvStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TikvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TikvStore")
            .field("pd", &self.inner.config.pd_endpoints)
            .field("prefix", &self.inner.config.prefix)
            .finish()
    }
}

struct Inner {
    config: TikvConfig,
    client: TransactionClient,
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

/// An error of one attempt: retried until [`RETRY_FOR`] runs out, unless final.
enum Attempt {
    Retry(tikv_client::Error),
    Final(StoreError),
}

impl From<tikv_client::Error> for Attempt {
    fn from(err: tikv_client::Error) -> Attempt {
        Attempt::Retry(err)
    }
}

impl TikvStore {
    /// Connects to PD (every endpoint given is tried) and checks that TiKV answers.
    pub async fn connect(config: TikvConfig) -> Result<TikvStore, StoreError> {
        let endpoints = config.pd_endpoints.join(", ");
        let client_config = Config::default()
            .with_timeout(ATTEMPT_TIMEOUT)
            .with_grpc_max_decoding_message_size(MAX_MESSAGE_BYTES);
        let client = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            TransactionClient::new_with_config(config.pd_endpoints.clone(), client_config),
        )
        .await
        {
            Ok(Ok(client)) => client,
            Ok(Err(err)) => {
                return Err(StoreError::Unavailable {
                    message: format!("cannot reach PD at {endpoints}: {err}"),
                });
            }
            Err(_) => {
                return Err(StoreError::Unavailable {
                    message: format!("PD at {endpoints} did not answer within {CONNECT_TIMEOUT:?}"),
                });
            }
        };
        let (commits, queue) = mpsc::channel(4 * MAX_BATCH);
        let inner = Arc::new(Inner {
            layout: Layout::new(&config.prefix),
            config,
            client,
            commits: std::sync::Mutex::new(Some(commits)),
            committed: watch::channel(0).0,
            closed: AtomicBool::new(false),
            shutdown: watch::channel(false).0,
        });
        // TiKV itself must answer too, not only PD.
        let revision = inner.read_u64(inner.layout.revision.clone()).await?;
        inner.committed.send_replace(revision);
        tokio::spawn(committer(inner.clone(), queue));
        Ok(TikvStore { inner })
    }
}

fn read_only() -> TransactionOptions {
    TransactionOptions::new_optimistic()
        .read_only()
        .drop_check(CheckLevel::None)
}

fn decode_u64(key: &[u8], raw: Option<Vec<u8>>) -> Result<u64, StoreError> {
    match raw {
        None => Ok(0),
        Some(raw) => match <[u8; 8]>::try_from(raw.as_slice()) {
            Ok(bytes) => Ok(u64::from_be_bytes(bytes)),
            Err(_) => Err(StoreError::Corrupt {
                key: String::from_utf8_lossy(key).into_owned(),
                message: format!("holds {} bytes, not a u64", raw.len()),
            }),
        },
    }
}

/// A log entry: `[nonce u64 LE]` then the change batch as the embedded store encodes it.
fn encode_log(nonce: u64, batch: &ChangeBatch) -> Vec<u8> {
    let encoded = codec::encode_batch(batch);
    let mut out = Vec::with_capacity(8 + encoded.len());
    out.extend_from_slice(&nonce.to_le_bytes());
    out.extend_from_slice(&encoded);
    out
}

fn log_nonce(raw: &[u8]) -> Option<u64> {
    raw.get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
}

fn decode_log(key: &[u8], revision: Revision, raw: &[u8]) -> Result<ChangeBatch, StoreError> {
    let corrupt = |message: String| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        message,
    };
    let body = raw
        .get(8..)
        .ok_or_else(|| corrupt("log entry shorter than its nonce".into()))?;
    codec::decode_batch(revision, body).map_err(corrupt)
}

fn decode_data(layout: &Layout, pair: KvPair) -> Result<KeyValue, StoreError> {
    let (key, value): (Vec<u8>, Vec<u8>) = (pair.0.into(), pair.1);
    let user_key = Bytes::copy_from_slice(key.get(layout.data.len()..).unwrap_or_default());
    codec::decode_record(user_key.clone(), &value).map_err(|message| StoreError::Corrupt {
        key: String::from_utf8_lossy(&user_key).into_owned(),
        message,
    })
}

fn same_error(err: &StoreError) -> StoreError {
    match err {
        StoreError::Corrupt { key, message } => StoreError::Corrupt {
            key: key.clone(),
            message: message.clone(),
        },
        other => StoreError::Backend {
            message: other.to_string(),
            source: None,
        },
    }
}

impl Inner {
    fn check_open(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }

    fn unavailable(&self, err: &tikv_client::Error) -> StoreError {
        StoreError::Unavailable {
            message: format!(
                "TiKV (PD at {}) did not answer within {RETRY_FOR:?}: {err}",
                self.config.pd_endpoints.join(", ")
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
                Err(Attempt::Retry(err)) => {
                    if started.elapsed() >= RETRY_FOR {
                        return Err(self.unavailable(&err));
                    }
                    debug!(error = %err, "TiKV call failed; retrying");
                    // A jitter of up to the backoff keeps competing committers apart.
                    let pause = backoff.mul_f64(0.5 + rand::random::<f64>() / 2.0);
                    tokio::time::sleep(pause).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn snapshot(&self) -> Result<Snapshot, tikv_client::Error> {
        let ts = self.client.current_timestamp().await?;
        Ok(self.client.snapshot(ts, read_only()))
    }

    async fn read_u64(&self, key: Vec<u8>) -> Result<u64, StoreError> {
        self.with_retry(|| {
            let key = key.clone();
            async move {
                let mut snapshot = self.snapshot().await?;
                let raw = snapshot.get(key.clone()).await?;
                decode_u64(&key, raw).map_err(Attempt::Final)
            }
        })
        .await
    }

    /// Commits `batch` (see the module documentation), with retries.
    async fn commit_batch(&self, batch: &[Txn]) -> Vec<Result<TxnResult, StoreError>> {
        let nonce: u64 = rand::random();
        // What the last attempt that reached its commit would have written: its first
        // revision and the results to give back if it did commit.
        let mut sent: Option<(Revision, Vec<Result<TxnResult, StoreError>>)> = None;
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        loop {
            if let Err(err) = self.check_open() {
                return batch.iter().map(|_| Err(same_error_or(&err))).collect();
            }
            let err = match self.try_commit(batch, nonce, &mut sent).await {
                Ok(results) => return results,
                Err(Attempt::Final(err)) => err,
                Err(Attempt::Retry(err)) if started.elapsed() < RETRY_FOR => {
                    debug!(error = %err, "TiKV commit failed; retrying");
                    let pause = backoff.mul_f64(0.5 + rand::random::<f64>() / 2.0);
                    tokio::time::sleep(pause).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
                Err(Attempt::Retry(err)) => self.unavailable(&err),
            };
            return batch.iter().map(|_| Err(same_error_or(&err))).collect();
        }
    }

    async fn try_commit(
        &self,
        batch: &[Txn],
        nonce: u64,
        sent: &mut Option<(Revision, Vec<Result<TxnResult, StoreError>>)>,
    ) -> Result<Vec<Result<TxnResult, StoreError>>, Attempt> {
        let layout = &self.layout;
        let mut txn = self
            .client
            .begin_with_options(TransactionOptions::new_optimistic().drop_check(CheckLevel::None))
            .await?;
        let current = decode_u64(&layout.revision, txn.get(layout.revision.clone()).await?)
            .map_err(Attempt::Final)?;
        if let Some((first, results)) = sent.as_ref()
            && current >= *first
        {
            let entry = txn.get(layout.log_key(*first)).await?;
            if entry.as_deref().and_then(log_nonce) == Some(nonce) {
                debug!(
                    revision = first,
                    "an earlier attempt of this batch committed"
                );
                let _ = txn.rollback().await;
                return Ok(results.iter().map(clone_result).collect());
            }
        }

        // Every key the batch compares or writes, read at once.
        let mut wanted: HashSet<&Bytes> = HashSet::new();
        for t in batch {
            wanted.extend(t.compares.iter().map(|c| match c {
                super::Compare::ModRevision { key, .. } => key,
            }));
            wanted.extend(t.ops.iter().map(|op| match op {
                super::Op::Put { key, .. } | super::Op::Delete { key } => key,
            }));
        }
        let mut known: HashMap<Bytes, Result<Option<KeyValue>, String>> =
            wanted.iter().map(|k| ((*k).clone(), Ok(None))).collect();
        let lookups: Vec<Key> = wanted
            .iter()
            .map(|k| Key::from(layout.data_key(k)))
            .collect();
        let found = txn.batch_get(lookups).await?;
        for pair in found {
            let raw_key: Vec<u8> = pair.0.clone().into();
            let user_key =
                Bytes::copy_from_slice(raw_key.get(layout.data.len()..).unwrap_or_default());
            let decoded = decode_data(layout, pair)
                .map(Some)
                .map_err(|e| e.to_string());
            known.insert(user_key, decoded);
        }

        let mut revision = current;
        let mut results = Vec::with_capacity(batch.len());
        let mut logs = Vec::new();
        let mut dirty: HashSet<Bytes> = HashSet::new();
        for t in batch {
            let step = apply::evaluate(t, revision, |key| match known.get(key) {
                Some(Ok(kv)) => Ok(kv.clone()),
                Some(Err(message)) => Err(StoreError::Corrupt {
                    key: String::from_utf8_lossy(key).into_owned(),
                    message: message.clone(),
                }),
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
            let _ = txn.rollback().await;
            return Ok(results);
        }

        let mut record = Vec::new();
        for key in &dirty {
            match known.get(key) {
                Some(Ok(Some(kv))) => {
                    record.clear();
                    codec::encode_record(
                        &mut record,
                        kv.create_revision,
                        kv.mod_revision,
                        &kv.value,
                    );
                    txn.put(layout.data_key(key), record.clone()).await?;
                }
                _ => txn.delete(layout.data_key(key)).await?,
            }
        }
        for log in &logs {
            txn.put(layout.log_key(log.revision), encode_log(nonce, log))
                .await?;
        }
        txn.put(layout.revision.clone(), revision.to_be_bytes().to_vec())
            .await?;
        *sent = Some((current + 1, results.iter().map(clone_result).collect()));
        if let Err(err) = txn.commit().await {
            let _ = txn.rollback().await;
            return Err(Attempt::Retry(err));
        }
        self.committed.send_replace(revision);
        Ok(results)
    }

    /// Log entries after `after` (at most [`LOG_PAGE`]) and the compacted revision, from one
    /// snapshot.
    async fn read_log(&self, after: Revision) -> Result<(Vec<ChangeBatch>, Revision), StoreError> {
        let layout = &self.layout;
        self.with_retry(|| async move {
            let mut snapshot = self.snapshot().await?;
            let compacted = decode_u64(
                &layout.compacted,
                snapshot.get(layout.compacted.clone()).await?,
            )
            .map_err(Attempt::Final)?;
            let start = layout.log_key(after + 1);
            let end = prefix_end(&layout.log);
            let pairs = snapshot.scan(start..end, LOG_PAGE).await?;
            let mut batches = Vec::new();
            for pair in pairs {
                let key: Vec<u8> = pair.0.into();
                let revision = key
                    .get(layout.log.len()..)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| {
                        Attempt::Final(StoreError::Corrupt {
                            key: String::from_utf8_lossy(&key).into_owned(),
                            message: "a log key without a revision".into(),
                        })
                    })?;
                batches.push(decode_log(&key, revision, &pair.1).map_err(Attempt::Final)?);
            }
            Ok((batches, compacted))
        })
        .await
    }
}

fn clone_result(result: &Result<TxnResult, StoreError>) -> Result<TxnResult, StoreError> {
    match result {
        Ok(r) => Ok(r.clone()),
        Err(e) => Err(same_error(e)),
    }
}

fn same_error_or(err: &StoreError) -> StoreError {
    match err {
        StoreError::Unavailable { message } => StoreError::Unavailable {
            message: message.clone(),
        },
        StoreError::Closed => StoreError::Closed,
        other => same_error(other),
    }
}

/// The bytes a transaction's values take, to bound a batch.
fn txn_bytes(txn: &Txn) -> usize {
    txn.ops
        .iter()
        .map(|op| match op {
            super::Op::Put { key, value } => key.len() + value.len(),
            super::Op::Delete { key } => key.len(),
        })
        .sum()
}

/// Takes queued transactions in batches and commits each batch as one TiKV transaction.
async fn committer(inner: Arc<Inner>, mut queue: mpsc::Receiver<Pending>) {
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match queue.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut bytes = txn_bytes(&first.txn);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match queue.try_recv() {
                Ok(next) => {
                    let size = txn_bytes(&next.txn);
                    if bytes + size > MAX_BATCH_BYTES {
                        carried = Some(next);
                        break;
                    }
                    bytes += size;
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
impl Store for TikvStore {
    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        self.inner.check_open()?;
        let size = txn_bytes(&txn);
        if size > MAX_BATCH_BYTES {
            return Err(StoreError::Backend {
                message: format!(
                    "transaction writes {size} bytes, more than the TiKV store's {MAX_BATCH_BYTES}"
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
        let data_key = inner.layout.data_key(key);
        inner
            .with_retry(|| {
                let data_key = data_key.clone();
                async move {
                    let mut snapshot = inner.snapshot().await?;
                    match snapshot.get(data_key.clone()).await? {
                        Some(raw) => decode_data(&inner.layout, KvPair::new(data_key, raw))
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
                    let mut snapshot = inner.snapshot().await?;
                    let revision = decode_u64(
                        &layout.revision,
                        snapshot.get(layout.revision.clone()).await?,
                    )
                    .map_err(Attempt::Final)?;
                    let mut kvs = Vec::new();
                    loop {
                        let want = if limit == 0 {
                            PAGE
                        } else {
                            PAGE.min((limit - kvs.len()) as u32)
                        };
                        let range = if to.is_empty() {
                            tikv_client::BoundRange::from(from.clone()..)
                        } else {
                            tikv_client::BoundRange::from(from.clone()..to.clone())
                        };
                        let page: Vec<KvPair> = snapshot.scan(range, want).await?.collect();
                        let full = page.len() as u32 == want;
                        if let Some(last) = page.last() {
                            let mut next: Vec<u8> = last.0.clone().into();
                            next.push(0);
                            from = next;
                        }
                        for pair in page {
                            kvs.push(decode_data(layout, pair).map_err(Attempt::Final)?);
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
                let full = batches.len() as u32 == LOG_PAGE;
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
                    yield Err(StoreError::Corrupt {
                        key: String::from_utf8_lossy(&inner.layout.log_key(next)).into_owned(),
                        message: format!("the log has no entry for revision {next} (next is {found})"),
                    });
                    break;
                }
                if full {
                    continue;
                }
                tokio::select! {
                    _ = local.changed() => {}
                    _ = tokio::time::sleep(POLL) => {}
                    _ = shutdown.changed() => {}
                }
            }
        };
        Ok(Box::pin(stream))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let inner = &self.inner;
        let layout = &inner.layout;
        let previous = inner
            .with_retry(|| async move {
                let mut txn = inner
                    .client
                    .begin_with_options(
                        TransactionOptions::new_optimistic().drop_check(CheckLevel::None),
                    )
                    .await?;
                let current = decode_u64(&layout.revision, txn.get(layout.revision.clone()).await?)
                    .map_err(Attempt::Final)?;
                let compacted =
                    decode_u64(&layout.compacted, txn.get(layout.compacted.clone()).await?)
                        .map_err(Attempt::Final)?;
                if revision > current {
                    let _ = txn.rollback().await;
                    return Err(Attempt::Final(StoreError::FutureRevision {
                        requested: revision,
                        current,
                    }));
                }
                if revision <= compacted {
                    let _ = txn.rollback().await;
                    return Ok(None);
                }
                txn.put(layout.compacted.clone(), revision.to_be_bytes().to_vec())
                    .await?;
                if let Err(err) = txn.commit().await {
                    let _ = txn.rollback().await;
                    return Err(Attempt::Retry(err));
                }
                Ok(Some(compacted))
            })
            .await?;
        let Some(previous) = previous else {
            return Ok(());
        };
        // The compacted mark is set: watches from older revisions fail from now on. The
        // entries themselves go in pages, each its own transaction (none touches the counter,
        // so writers are not held up).
        let mut from = previous + 1;
        while from <= revision {
            let to = revision.min(from + u64::from(PAGE) - 1);
            inner
                .with_retry(|| async move {
                    let mut txn = inner
                        .client
                        .begin_with_options(
                            TransactionOptions::new_optimistic().drop_check(CheckLevel::None),
                        )
                        .await?;
                    for rev in from..=to {
                        txn.delete(layout.log_key(rev)).await?;
                    }
                    if let Err(err) = txn.commit().await {
                        let _ = txn.rollback().await;
                        return Err(Attempt::Retry(err));
                    }
                    Ok(())
                })
                .await?;
            from = to + 1;
        }
        self.collect_garbage().await;
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
    }
}

impl TikvStore {
    /// Asks TiKV to drop MVCC versions older than the GC lifetime (PD's GC safe point). A
    /// failure is logged, not returned: compaction itself has succeeded.
    async fn collect_garbage(&self) {
        let inner = &self.inner;
        let now = match inner.client.current_timestamp().await {
            Ok(now) => now,
            Err(err) => {
                warn!(error = %err, "cannot read a timestamp for TiKV's GC");
                return;
            }
        };
        let lifetime_ms = i64::try_from(inner.config.gc_lifetime.as_millis()).unwrap_or(i64::MAX);
        let safe_point = Timestamp {
            physical: now.physical.saturating_sub(lifetime_ms),
            logical: 0,
            suffix_bits: 0,
        };
        if safe_point.physical <= 0 {
            return;
        }
        if let Err(err) = inner.client.gc(safe_point).await {
            warn!(error = %err, "TiKV's GC failed; it is tried again at the next compaction");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_keeps_kinds_apart_and_sorts_the_log_by_revision() {
        let layout = Layout::new("/x");
        assert_eq!(layout.data_key(b"pods/a"), b"/x/d/pods/a".to_vec());
        assert!(layout.log_key(255) < layout.log_key(256));
        assert!(layout.log_key(u64::MAX) < prefix_end(&layout.log));
        assert_eq!(layout.revision, b"/x/m/rev".to_vec());
    }

    #[test]
    fn log_entries_carry_their_nonce() {
        let batch = ChangeBatch {
            revision: 3,
            changes: vec![],
        };
        let raw = encode_log(42, &batch);
        assert_eq!(log_nonce(&raw), Some(42));
        assert_eq!(decode_log(b"k", 3, &raw).ok(), Some(batch));
        assert!(decode_log(b"k", 3, &raw[..4]).is_err());
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
