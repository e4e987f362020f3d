//! The etcd v3 store: every object in an etcd cluster, over our own tonic client generated
//! from etcd's protos (see `proto/etcd.proto`), as a [`LoggedStore`] (see `logged.rs`).
//!
//! Each Drover transaction needs its own revision, but an etcd transaction gives one revision
//! to everything it writes, and costs etcd one Raft entry and one fsync per member: one etcd
//! `Txn` per API write caps the API at etcd's own transaction rate. So Drover keeps its revision
//! counter and change log as etcd keys and group-commits: the queued Drover transactions are
//! read in one etcd `Txn` of ranges, evaluated, and written in one etcd `Txn` whose compares
//! check that every key it overwrites still has the mod revision it was read at. The counter
//! is among them and every commit writes it, so any commit since the reads fails the compare:
//! two API servers committing at once serialise, and reads need no compare of their own. etcd's own
//! `--max-txn-ops` (128 by default) bounds a group.
//!
//! The change feed follows the log; an etcd watch of the counter key wakes it when another
//! API server commits. After a Drover compaction, etcd's history is compacted to the revision
//! seen at the previous one (so reads pinned to a recent revision keep working).
//!
//! Failover: every call goes to the current endpoint; when it fails with a transport error, a
//! timeout or "no leader", the next endpoint is tried, with backoff once every endpoint has
//! failed, for up to [`RETRY_FOR`]; after that the call fails with
//! [`StoreError::Unavailable`] (the API answers 503). A group whose commit may have been
//! applied before a failure is recognised by its log entry and not applied twice.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::StoreError;
use super::logged::{Attempt, Engine, LoggedStore, Writes};

/// The generated etcd v3 gRPC types and stubs (the subset the store calls).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod pb {
    tonic::include_proto!("etcdserverpb");
}

use pb::kv_client::KvClient;
use pb::watch_client::WatchClient;

/// How long one attempt of a call may take before the next endpoint is tried.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call keeps trying endpoints before it fails with `Unavailable`. Longer than an
/// etcd leader election, so the loss of one member (even the leader) never fails a call.
pub const RETRY_FOR: Duration = Duration::from_secs(10);
/// The first pause after every endpoint has failed; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(25);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The largest message accepted from etcd.
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
/// Operations of one etcd transaction at most (etcd's `--max-txn-ops` default).
const MAX_TXN_OPS: usize = 128;
/// Bytes one group commit writes at most (etcd refuses a request above 1.5 MiB by default).
const MAX_WRITE_BYTES: usize = 1024 * 1024;
/// How often a watch reads the log when no etcd watch event woke it.
const POLL: Duration = Duration::from_millis(500);

/// Where the etcd cluster is, as `--store etcd://HOST:PORT,HOST:PORT[/prefix]` gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `host:port` of each member's client URL.
    pub endpoints: Vec<String>,
    /// Prefix of every key Drover writes (empty: none).
    pub prefix: String,
}

/// A [`Store`](super::Store) on an etcd v3 cluster.
pub type EtcdStore = LoggedStore<EtcdEngine>;

/// etcd under a [`LoggedStore`].
pub struct EtcdEngine {
    config: EtcdConfig,
    channels: Vec<Channel>,
    /// Index of the endpoint calls go to first.
    current: AtomicUsize,
    closed: AtomicBool,
    /// The etcd revision seen at the last garbage collection: the next one compacts to it.
    seen_at_last_gc: AtomicI64,
}

/// An optimistic transaction: the revision its reads are pinned to and the mod revision of
/// each key it read (0: absent).
pub struct EtcdTxn {
    pinned: i64,
    read: HashMap<Vec<u8>, i64>,
}

/// A snapshot: the revision its reads are pinned to (0: not yet read).
pub struct EtcdSnapshot {
    pinned: i64,
}

/// Whether a failed call may succeed on another endpoint or a little later.
fn retryable(status: &Status) -> bool {
    match status.code() {
        // Transport errors, timeouts, "no leader", "leader changed", "too many requests", and
        // connections reset mid-call (which tonic reports as Unknown or Internal).
        Code::Unavailable
        | Code::Unknown
        | Code::Internal
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::ResourceExhausted
        | Code::Aborted => true,
        _ => false,
    }
}

fn is_compacted(status: &Status) -> bool {
    status.code() == Code::OutOfRange && status.message().contains("compacted")
}

fn is_future(status: &Status) -> bool {
    status.code() == Code::OutOfRange && status.message().contains("future")
}

fn backend(what: &str, status: Status) -> StoreError {
    StoreError::Backend {
        message: format!("etcd {what}: {}", status.message()),
        source: Some(Box::new(status)),
    }
}

impl LoggedStore<EtcdEngine> {
    /// Connects to the cluster and checks that it answers; the error names every endpoint tried.
    pub async fn connect(config: EtcdConfig) -> Result<EtcdStore, StoreError> {
        if config.endpoints.is_empty() {
            return Err(StoreError::Unavailable {
                message: "no etcd endpoints given".to_string(),
            });
        }
        let mut channels = Vec::with_capacity(config.endpoints.len());
        for endpoint in &config.endpoints {
            let uri = format!("http://{endpoint}");
            let channel = Endpoint::from_shared(uri)
                .map_err(|e| StoreError::Backend {
                    message: format!("etcd endpoint {endpoint:?}: {e}"),
                    source: Some(Box::new(e)),
                })?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true)
                .connect_lazy();
            channels.push(channel);
        }
        let prefix = config.prefix.clone();
        let engine = EtcdEngine {
            config,
            channels,
            current: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            seen_at_last_gc: AtomicI64::new(0),
        };
        LoggedStore::open(engine, &prefix).await
    }
}

fn range_op(key: &[u8], revision: i64) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
            key: Bytes::copy_from_slice(key),
            revision,
            ..Default::default()
        })),
    }
}

/// An error of a call that already failed over and backed off: a compaction under a pinned
/// read is worth a fresh read; anything else is final.
fn settled(err: StoreError) -> Attempt {
    match err {
        StoreError::Compacted { .. } => Attempt::Retry("etcd compacted under a pinned read".into()),
        other => Attempt::Final(other),
    }
}

impl EtcdEngine {
    fn kv(&self, channel: Channel) -> KvClient<Channel> {
        KvClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Runs `call` against the current endpoint, failing over and backing off as the module
    /// describes.
    async fn call<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, StoreError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let inner = self;
        let n = inner.channels.len();
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut failures_in_row = 0;
        loop {
            if inner.closed.load(Ordering::Acquire) {
                return Err(StoreError::Closed);
            }
            let i = inner.current.load(Ordering::Relaxed) % n;
            let attempt = tokio::time::timeout(ATTEMPT_TIMEOUT, call(inner.channels[i].clone()));
            let last = match attempt.await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(status)) if retryable(&status) => {
                    format!("{}: {}", inner.config.endpoints[i], status.message())
                }
                Ok(Err(status)) => {
                    return Err(if is_compacted(&status) {
                        StoreError::Compacted {
                            requested: 0,
                            compacted: 0,
                        }
                    } else {
                        backend(what, status)
                    });
                }
                Err(_) => format!(
                    "{}: no answer within {ATTEMPT_TIMEOUT:?}",
                    inner.config.endpoints[i]
                ),
            };
            self.rotate_from(i);
            if started.elapsed() >= RETRY_FOR {
                return Err(StoreError::Unavailable {
                    message: format!(
                        "etcd {what}: no endpoint of {} answered within {RETRY_FOR:?} (last: {last})",
                        inner.config.endpoints.join(",")
                    ),
                });
            }
            failures_in_row += 1;
            if failures_in_row >= n {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// Moves on from endpoint `i` after it failed, unless another call already did.
    fn rotate_from(&self, i: usize) {
        let n = self.channels.len();
        let _ = self
            .current
            .compare_exchange(i, (i + 1) % n, Ordering::Relaxed, Ordering::Relaxed);
    }

    async fn txn_call(
        &self,
        what: &str,
        request: pb::TxnRequest,
    ) -> Result<pb::TxnResponse, StoreError> {
        self.call(what, |channel| {
            let request = request.clone();
            let mut kv = self.kv(channel);
            async move { kv.txn(request).await.map(tonic::Response::into_inner) }
        })
        .await
    }

    /// Reads `keys` at `*pinned` (pinning it to the first read's revision): each key's value
    /// and mod revision.
    async fn read_keys(
        &self,
        pinned: &mut i64,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<(Vec<u8>, i64)>>, Attempt> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(MAX_TXN_OPS) {
            let request = pb::TxnRequest {
                compare: vec![],
                success: chunk.iter().map(|k| range_op(k, *pinned)).collect(),
                failure: vec![],
            };
            let response = self.txn_call("read", request).await.map_err(settled)?;
            if *pinned == 0 {
                *pinned = response.header.map_or(0, |h| h.revision);
            }
            for r in response.responses {
                out.push(match r.response {
                    Some(pb::response_op::Response::ResponseRange(range)) => range
                        .kvs
                        .into_iter()
                        .next()
                        .map(|kv| (kv.value.to_vec(), kv.mod_revision)),
                    _ => None,
                });
            }
        }
        Ok(out)
    }

    /// The current etcd revision.
    async fn etcd_revision(&self) -> Result<i64, StoreError> {
        let request = pb::RangeRequest {
            key: Bytes::from_static(&[0]),
            count_only: true,
            ..Default::default()
        };
        let called = self
            .call("revision", |channel| {
                let request = request.clone();
                let mut kv = self.kv(channel);
                async move { kv.range(request).await.map(tonic::Response::into_inner) }
            })
            .await?;
        Ok(called.header.map_or(0, |h| h.revision))
    }

    /// One etcd transaction that creates `key` if absent: the raw rate a benchmark compares
    /// the store's group commit with. Returns whether it created the key.
    pub async fn raw_create(&self, key: &[u8], value: Bytes) -> Result<bool, StoreError> {
        let key = Bytes::copy_from_slice(key);
        let request = pb::TxnRequest {
            compare: vec![pb::Compare {
                result: pb::compare::CompareResult::Equal as i32,
                target: pb::compare::CompareTarget::Mod as i32,
                key: key.clone(),
                target_union: Some(pb::compare::TargetUnion::ModRevision(0)),
                range_end: Bytes::new(),
            }],
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    key,
                    value,
                    lease: 0,
                    prev_kv: false,
                })),
            }],
            failure: vec![],
        };
        Ok(self.txn_call("raw create", request).await?.succeeded)
    }

    /// Deletes every key under `prefix` in one etcd call (a benchmark's clean-up).
    pub async fn raw_delete_prefix(&self, prefix: &[u8]) -> Result<(), StoreError> {
        let key = Bytes::copy_from_slice(prefix);
        let range_end = Bytes::from(super::prefix_end(prefix));
        let request = pb::TxnRequest {
            compare: vec![],
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestDeleteRange(
                    pb::DeleteRangeRequest {
                        key,
                        range_end,
                        prev_kv: false,
                    },
                )),
            }],
            failure: vec![],
        };
        self.txn_call("raw delete", request).await?;
        Ok(())
    }
}

#[async_trait]
impl Engine for EtcdEngine {
    type Txn = EtcdTxn;
    type Snapshot = EtcdSnapshot;

    fn describe(&self) -> String {
        format!("etcd at {}", self.config.endpoints.join(","))
    }

    fn max_writes(&self) -> usize {
        MAX_TXN_OPS
    }

    fn max_write_bytes(&self) -> usize {
        MAX_WRITE_BYTES
    }

    fn poll_interval(&self) -> Duration {
        POLL
    }

    async fn begin(&self) -> Result<EtcdTxn, Attempt> {
        Ok(EtcdTxn {
            pinned: 0,
            read: HashMap::new(),
        })
    }

    async fn txn_get(
        &self,
        txn: &mut EtcdTxn,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Vec<u8>>>, Attempt> {
        let found = self.read_keys(&mut txn.pinned, keys).await?;
        Ok(keys
            .iter()
            .zip(found)
            .map(|(key, found)| {
                txn.read
                    .insert(key.clone(), found.as_ref().map_or(0, |(_, rev)| *rev));
                found.map(|(value, _)| value)
            })
            .collect())
    }

    async fn txn_commit(&self, txn: EtcdTxn, writes: Writes) -> Result<(), Attempt> {
        let compare = writes
            .iter()
            .filter_map(|(key, _)| {
                txn.read.get(key).map(|revision| pb::Compare {
                    result: pb::compare::CompareResult::Equal as i32,
                    target: pb::compare::CompareTarget::Mod as i32,
                    key: Bytes::copy_from_slice(key),
                    target_union: Some(pb::compare::TargetUnion::ModRevision(*revision)),
                    range_end: Bytes::new(),
                })
            })
            .collect();
        let success = writes
            .into_iter()
            .map(|(key, value)| pb::RequestOp {
                request: Some(match value {
                    Some(value) => pb::request_op::Request::RequestPut(pb::PutRequest {
                        key: Bytes::from(key),
                        value: Bytes::from(value),
                        lease: 0,
                        prev_kv: false,
                    }),
                    None => pb::request_op::Request::RequestDeleteRange(pb::DeleteRangeRequest {
                        key: Bytes::from(key),
                        range_end: Bytes::new(),
                        prev_kv: false,
                    }),
                }),
            })
            .collect();
        let request = pb::TxnRequest {
            compare,
            success,
            failure: vec![],
        };
        let response = self.txn_call("txn", request).await.map_err(settled)?;
        if response.succeeded {
            Ok(())
        } else {
            Err(Attempt::Retry(
                "a key read by the transaction changed before it committed".into(),
            ))
        }
    }

    async fn txn_abandon(&self, _txn: EtcdTxn) {}

    async fn snapshot(&self) -> Result<EtcdSnapshot, Attempt> {
        Ok(EtcdSnapshot { pinned: 0 })
    }

    async fn snap_get(
        &self,
        snap: &mut EtcdSnapshot,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Vec<u8>>>, Attempt> {
        let found = self.read_keys(&mut snap.pinned, keys).await?;
        Ok(found
            .into_iter()
            .map(|f| f.map(|(value, _)| value))
            .collect())
    }

    async fn snap_scan(
        &self,
        snap: &mut EtcdSnapshot,
        start: &[u8],
        end: &[u8],
        limit: u32,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Attempt> {
        let request = pb::RangeRequest {
            key: Bytes::copy_from_slice(start),
            // "\0" as a range end means "every key from the start".
            range_end: if end.is_empty() {
                Bytes::from_static(&[0])
            } else {
                Bytes::copy_from_slice(end)
            },
            limit: i64::from(limit),
            revision: snap.pinned,
            ..Default::default()
        };
        let called = self
            .call("range", |channel| {
                let request = request.clone();
                let mut kv = self.kv(channel);
                async move { kv.range(request).await.map(tonic::Response::into_inner) }
            })
            .await
            .map_err(settled)?;
        let page = called;
        if snap.pinned == 0 {
            snap.pinned = page.header.map_or(0, |h| h.revision);
        }
        Ok(page
            .kvs
            .into_iter()
            .map(|kv| (kv.key.to_vec(), kv.value.to_vec()))
            .collect())
    }

    async fn collect_garbage(&self) {
        let now = match self.etcd_revision().await {
            Ok(now) => now,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read etcd's revision to compact it");
                return;
            }
        };
        let to = self.seen_at_last_gc.swap(now, Ordering::Relaxed);
        if to <= 0 {
            return;
        }
        let request = pb::CompactionRequest {
            revision: to,
            physical: false,
        };
        let compacted = self
            .call("compact", |channel| {
                let mut kv = self.kv(channel);
                async move {
                    match kv.compact(request).await {
                        Ok(_) => Ok(()),
                        // Compacted further already (by another API server): nothing to do.
                        Err(status) if is_compacted(&status) || is_future(&status) => Ok(()),
                        Err(status) => Err(status),
                    }
                }
            })
            .await;
        if let Err(err) = compacted {
            tracing::warn!(error = %err, "etcd compaction failed; tried again at the next");
        }
    }

    fn wake_ups(&self, counter: Vec<u8>) -> Option<BoxStream<'static, ()>> {
        let channels = self.channels.clone();
        let start = self.current.load(Ordering::Relaxed);
        let create = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: Bytes::from(counter),
                    range_end: Bytes::new(),
                    start_revision: 0,
                    progress_notify: false,
                    prev_kv: false,
                    watch_id: 0,
                    fragment: false,
                },
            )),
        };
        Some(Box::pin(async_stream::stream! {
            let mut i = start;
            loop {
                let channel = channels[i % channels.len()].clone();
                let mut client = WatchClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
                // The request stream stays open: etcd ends a watch whose client half-closes.
                let requests = futures::stream::iter([create.clone()]).chain(futures::stream::pending());
                if let Ok(responses) = client.watch(requests).await {
                    let mut responses = responses.into_inner();
                    while let Some(Ok(response)) = responses.next().await {
                        if !response.events.is_empty() {
                            yield ();
                        }
                        if response.canceled {
                            break;
                        }
                    }
                }
                // The watch broke: the log poll covers the gap; try the next member.
                i += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }))
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}
