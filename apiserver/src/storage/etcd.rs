//! The etcd v3 store: every object in an etcd cluster, over our own tonic client generated
//! from etcd's protos (see `proto/etcd.proto`).
//!
//! The [`Store`] trait is etcd's model, so the mapping is direct:
//! - a [`Txn`] is one etcd `Txn`: each compare is `mod_revision == r` (0: the key is absent),
//!   the ops are the success branch, and the failure branch reads every compared key so the
//!   first failed compare can be named without another round trip;
//! - the change feed is an etcd watch from a revision (with previous values), whose events are
//!   grouped by revision into [`ChangeBatch`]es, and compaction is etcd's compaction.
//!
//! Revisions: a fresh etcd is at revision 1, an empty Drover store at 0, so a Drover revision is
//! the etcd revision minus one. All keys live under an optional prefix (`etcd://…/prefix`), so
//! several Drover clusters can share one etcd.
//!
//! Failover: every call goes to the current endpoint; when it fails with a transport error, a
//! timeout or "no leader", the next endpoint is tried, with backoff once every endpoint has
//! failed, for up to [`RETRY_FOR`]; after that the call fails with
//! [`StoreError::Unavailable`] (the API answers 503). A write whose first attempt may have been
//! applied before the failure is not applied twice: when its retry finds its compares failed,
//! the store checks whether the keys hold exactly what the first attempt wrote, at one
//! revision, and reports that attempt's success.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::{
    Change, ChangeBatch, ChangeKind, ChangeStream, Compare, KeyValue, Op, RangeResult, Revision,
    Store, StoreError, Txn, TxnResult, prefix_end,
};

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
/// Keys per page of a range read (etcd answers a range in one message; pages keep each small).
const RANGE_PAGE: i64 = 5000;
/// The largest message accepted from etcd.
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Where the etcd cluster is, as `--store etcd://HOST:PORT,HOST:PORT[/prefix]` gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `host:port` of each member's client URL.
    pub endpoints: Vec<String>,
    /// Prefix of every key Drover writes (empty: none).
    pub prefix: String,
}

/// A [`Store`] on an etcd v3 cluster.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.inner.config.endpoints)
            .field("prefix", &self.inner.config.prefix)
            .finish()
    }
}

struct Inner {
    config: EtcdConfig,
    prefix: Bytes,
    channels: Vec<Channel>,
    /// Index of the endpoint calls go to first.
    current: AtomicUsize,
    /// A lower bound of the compacted revision (Drover numbering), to shorten its search.
    compacted: AtomicU64,
    closed: AtomicBool,
    /// Ends every watch stream on close.
    shutdown: tokio::sync::watch::Sender<bool>,
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

/// Drover's revision for an etcd revision.
fn from_etcd(revision: i64) -> Revision {
    u64::try_from(revision - 1).unwrap_or(0)
}

/// etcd's revision for a Drover revision.
fn to_etcd(revision: Revision) -> i64 {
    i64::try_from(revision).map_or(i64::MAX, |r| r.saturating_add(1))
}

/// etcd's revision for a Drover mod revision in a compare: 0 ("absent") stays 0.
fn compare_to_etcd(revision: Revision) -> i64 {
    if revision == 0 { 0 } else { to_etcd(revision) }
}

/// The result of a call, and whether an earlier attempt of it may have reached etcd.
struct Called<T> {
    value: T,
    retried: bool,
}

impl EtcdStore {
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
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let store = EtcdStore {
            inner: Arc::new(Inner {
                prefix: Bytes::from(config.prefix.clone().into_bytes()),
                config,
                channels,
                current: AtomicUsize::new(0),
                compacted: AtomicU64::new(0),
                closed: AtomicBool::new(false),
                shutdown,
            }),
        };
        store.current_revision().await?;
        Ok(store)
    }

    fn kv(&self, channel: Channel) -> KvClient<Channel> {
        KvClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Runs `call` against the current endpoint, failing over and backing off as the module
    /// describes.
    async fn call<T, F, Fut>(&self, what: &str, mut call: F) -> Result<Called<T>, StoreError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let inner = &self.inner;
        let n = inner.channels.len();
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut failures_in_row = 0;
        let mut retried = false;
        loop {
            if inner.closed.load(Ordering::Acquire) {
                return Err(StoreError::Closed);
            }
            let i = inner.current.load(Ordering::Relaxed) % n;
            let attempt = tokio::time::timeout(ATTEMPT_TIMEOUT, call(inner.channels[i].clone()));
            let last = match attempt.await {
                Ok(Ok(value)) => return Ok(Called { value, retried }),
                Ok(Err(status)) if retryable(&status) => {
                    format!("{}: {}", inner.config.endpoints[i], status.message())
                }
                Ok(Err(status)) => {
                    return Err(if is_compacted(&status) {
                        StoreError::Compacted {
                            requested: 0,
                            compacted: inner.compacted.load(Ordering::Relaxed),
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
            retried = true;
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

    /// One Range call, failing over as [`EtcdStore::call`] does.
    async fn range_call(
        &self,
        what: &str,
        request: pb::RangeRequest,
    ) -> Result<Called<pb::RangeResponse>, StoreError> {
        self.call(what, |channel| {
            let request = request.clone();
            let mut kv = self.kv(channel);
            async move { kv.range(request).await.map(tonic::Response::into_inner) }
        })
        .await
    }

    fn full_key(&self, key: &[u8]) -> Bytes {
        let mut full = Vec::with_capacity(self.inner.prefix.len() + key.len());
        full.extend_from_slice(&self.inner.prefix);
        full.extend_from_slice(key);
        Bytes::from(full)
    }

    /// The end of the whole keyspace under the prefix, as etcd spells it.
    fn keyspace_end(&self) -> Bytes {
        let end = prefix_end(&self.inner.prefix);
        if end.is_empty() {
            // "\0" as a range end means "every key from the start".
            Bytes::from_static(&[0])
        } else {
            Bytes::from(end)
        }
    }

    /// The first key of the keyspace (etcd refuses an empty key).
    fn keyspace_start(&self) -> Bytes {
        if self.inner.prefix.is_empty() {
            Bytes::from_static(&[0])
        } else {
            self.inner.prefix.clone()
        }
    }

    fn strip(&self, key: Bytes) -> Bytes {
        let n = self.inner.prefix.len();
        if key.len() >= n { key.slice(n..) } else { key }
    }

    fn key_value(&self, kv: pb::KeyValue) -> KeyValue {
        KeyValue {
            key: self.strip(kv.key),
            value: kv.value,
            create_revision: from_etcd(kv.create_revision),
            mod_revision: from_etcd(kv.mod_revision),
        }
    }

    fn txn_request(&self, txn: &Txn) -> pb::TxnRequest {
        let compare = txn
            .compares
            .iter()
            .map(|c| match c {
                Compare::ModRevision { key, revision } => pb::Compare {
                    result: pb::compare::CompareResult::Equal as i32,
                    target: pb::compare::CompareTarget::Mod as i32,
                    key: self.full_key(key),
                    target_union: Some(pb::compare::TargetUnion::ModRevision(compare_to_etcd(
                        *revision,
                    ))),
                    range_end: Bytes::new(),
                },
            })
            .collect();
        let success = txn
            .ops
            .iter()
            .map(|op| pb::RequestOp {
                request: Some(match op {
                    Op::Put { key, value } => pb::request_op::Request::RequestPut(pb::PutRequest {
                        key: self.full_key(key),
                        value: value.clone(),
                        lease: 0,
                        prev_kv: false,
                    }),
                    Op::Delete { key } => {
                        pb::request_op::Request::RequestDeleteRange(pb::DeleteRangeRequest {
                            key: self.full_key(key),
                            range_end: Bytes::new(),
                            prev_kv: false,
                        })
                    }
                }),
            })
            .collect();
        // On failure, read every compared key, then every written key: the first tells which
        // compare failed, both tell whether an earlier attempt of this txn was applied.
        let read_keys = txn
            .compares
            .iter()
            .map(|Compare::ModRevision { key, .. }| key)
            .chain(txn.ops.iter().map(|op| match op {
                Op::Put { key, .. } | Op::Delete { key } => key,
            }));
        let failure = read_keys
            .map(|key| pb::RequestOp {
                request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
                    key: self.full_key(key),
                    ..Default::default()
                })),
            })
            .collect();
        pb::TxnRequest {
            compare,
            success,
            failure,
        }
    }

    /// The first compare of `txn` that fails against the failure branch's reads.
    fn first_failed(txn: &Txn, reads: &[Option<pb::KeyValue>]) -> Option<usize> {
        txn.compares.iter().enumerate().find_map(|(i, c)| {
            let Compare::ModRevision { revision, .. } = c;
            let actual = reads
                .get(i)
                .and_then(|kv| kv.as_ref())
                .map_or(0, |kv| kv.mod_revision);
            (actual != compare_to_etcd(*revision)).then_some(i)
        })
    }

    /// Whether the failure branch's reads show `txn` already applied (by an earlier attempt
    /// whose answer was lost): every put key holds its value and every delete key is absent,
    /// and the puts all carry one mod revision, which is returned.
    fn applied_before(txn: &Txn, reads: &[Option<pb::KeyValue>]) -> Option<i64> {
        let op_reads = reads.get(txn.compares.len()..)?;
        let mut revision = None;
        for (op, read) in txn.ops.iter().zip(op_reads) {
            match (op, read) {
                (Op::Put { value, .. }, Some(kv)) if kv.value == *value => match revision {
                    None => revision = Some(kv.mod_revision),
                    Some(r) if r == kv.mod_revision => {}
                    Some(_) => return None,
                },
                (Op::Delete { .. }, None) => {}
                _ => return None,
            }
        }
        // A txn of deletes only leaves no revision to check; the keys being gone is the state
        // the caller asked for.
        revision.or(Some(0))
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        let request = self.txn_request(&txn);
        let called = self
            .call("txn", |channel| {
                let request = request.clone();
                let mut kv = self.kv(channel);
                async move { kv.txn(request).await.map(tonic::Response::into_inner) }
            })
            .await?;
        let response = called.value;
        let revision = from_etcd(response.header.map_or(0, |h| h.revision));
        if response.succeeded {
            return Ok(TxnResult {
                succeeded: true,
                revision,
                failed_compare: None,
            });
        }
        let reads: Vec<Option<pb::KeyValue>> = response
            .responses
            .into_iter()
            .map(|r| match r.response {
                Some(pb::response_op::Response::ResponseRange(range)) => {
                    range.kvs.into_iter().next()
                }
                _ => None,
            })
            .collect();
        let failed_compare = Self::first_failed(&txn, &reads);
        if called.retried
            && let Some(applied) = Self::applied_before(&txn, &reads)
        {
            let at = if applied == 0 {
                revision
            } else {
                from_etcd(applied)
            };
            tracing::info!(
                revision = at,
                "an etcd txn retried after a lost answer had been applied"
            );
            return Ok(TxnResult {
                succeeded: true,
                revision: at,
                failed_compare: None,
            });
        }
        Ok(TxnResult {
            succeeded: false,
            revision,
            failed_compare,
        })
    }

    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        let request = pb::RangeRequest {
            key: self.full_key(key),
            ..Default::default()
        };
        let called = self.range_call("get", request).await?;
        Ok(called
            .value
            .kvs
            .into_iter()
            .next()
            .map(|kv| self.key_value(kv)))
    }

    async fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<RangeResult, StoreError> {
        let mut key = if start.is_empty() {
            self.keyspace_start()
        } else {
            self.full_key(start)
        };
        let range_end = if end.is_empty() {
            self.keyspace_end()
        } else {
            self.full_key(end)
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut kvs = Vec::new();
        let mut pinned = 0;
        loop {
            let want = if limit == 0 {
                RANGE_PAGE
            } else {
                (limit - kvs.len() as i64).min(RANGE_PAGE)
            };
            let request = pb::RangeRequest {
                key: key.clone(),
                range_end: range_end.clone(),
                limit: want,
                revision: pinned,
                ..Default::default()
            };
            let page = self.range_call("range", request).await?.value;
            if pinned == 0 {
                // Every further page reads at the first page's revision: one snapshot.
                pinned = page.header.map_or(1, |h| h.revision);
            }
            let more = page.more;
            let mut next = None;
            for kv in page.kvs {
                next = Some(kv.key.clone());
                kvs.push(self.key_value(kv));
            }
            let done = !more || (limit != 0 && kvs.len() as i64 >= limit);
            match next {
                Some(last) if !done => {
                    let mut after = last.to_vec();
                    after.push(0);
                    key = Bytes::from(after);
                }
                _ => break,
            }
        }
        Ok(RangeResult {
            kvs,
            revision: from_etcd(pinned),
        })
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let request = pb::RangeRequest {
            key: self.keyspace_start(),
            count_only: true,
            ..Default::default()
        };
        let called = self.range_call("current revision", request).await?;
        Ok(from_etcd(called.value.header.map_or(1, |h| h.revision)))
    }

    async fn watch(&self, after: Revision) -> Result<ChangeStream, StoreError> {
        let current = self.current_revision().await?;
        if after > current {
            return Err(StoreError::FutureRevision {
                requested: after,
                current,
            });
        }
        let compacted = self.compacted_revision().await?;
        if after < compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted,
            });
        }
        let mut feed = Feed {
            store: self.clone(),
            next: to_etcd(after) + 1,
            shutdown: self.inner.shutdown.subscribe(),
        };
        // Open the first stream before returning, so a watch that cannot start fails here.
        let first = feed.open().await?;
        Ok(Box::pin(async_stream::stream! {
            let mut stream = Some(first);
            loop {
                let responses = match stream.take() {
                    Some(s) => s,
                    None => match feed.open().await {
                        Ok(s) => s,
                        Err(StoreError::Closed) => return,
                        Err(e) => {
                            yield Err(e);
                            return;
                        }
                    },
                };
                let mut responses = responses;
                loop {
                    let message = tokio::select! {
                        m = responses.next() => m,
                        _ = feed.shutdown.wait_for(|closed| *closed) => return,
                    };
                    match message {
                        Some(Ok(response)) => {
                            if response.canceled {
                                if response.compact_revision > 0 {
                                    yield Err(StoreError::Compacted {
                                        requested: from_etcd(feed.next - 1),
                                        compacted: from_etcd(response.compact_revision),
                                    });
                                    return;
                                }
                                tracing::warn!(reason = %response.cancel_reason, "etcd cancelled the watch; resuming");
                                break;
                            }
                            for batch in feed.batches(response.events) {
                                yield Ok(batch);
                            }
                        }
                        Some(Err(status)) => {
                            tracing::warn!(error = %status, "etcd watch stream failed; resuming on the next endpoint");
                            feed.store.rotate();
                            break;
                        }
                        None => {
                            tracing::warn!("etcd watch stream ended; resuming");
                            feed.store.rotate();
                            break;
                        }
                    }
                }
            }
        }))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        // etcd itself refuses a future revision; the current one is read only to say so.
        let request = pb::CompactionRequest {
            revision: to_etcd(revision),
            physical: false,
        };
        /// What etcd made of a compaction request.
        enum Outcome {
            Compacted,
            /// Already compacted further: compaction only moves forward.
            AlreadyFurther,
            Future,
        }
        let outcome = self
            .call("compact", |channel| {
                let mut kv = self.kv(channel);
                async move {
                    match kv.compact(request).await {
                        Ok(_) => Ok(Outcome::Compacted),
                        Err(status) if is_compacted(&status) => Ok(Outcome::AlreadyFurther),
                        Err(status) if is_future(&status) => Ok(Outcome::Future),
                        Err(status) => Err(status),
                    }
                }
            })
            .await?
            .value;
        match outcome {
            Outcome::Compacted => {
                self.inner.compacted.fetch_max(revision, Ordering::Relaxed);
                Ok(())
            }
            Outcome::AlreadyFurther => Ok(()),
            Outcome::Future => Err(StoreError::FutureRevision {
                requested: revision,
                current: self.current_revision().await?,
            }),
        }
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        // etcd does not report its compacted revision, but a read at a revision before it fails:
        // search for the oldest readable revision.
        let mut lo = to_etcd(self.inner.compacted.load(Ordering::Relaxed));
        let mut hi = to_etcd(self.current_revision().await?);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let request = pb::RangeRequest {
                key: self.keyspace_start(),
                count_only: true,
                revision: mid,
                ..Default::default()
            };
            let readable = self
                .call("compacted revision", |channel| {
                    let request = request.clone();
                    let mut kv = self.kv(channel);
                    async move {
                        match kv.range(request).await {
                            Ok(_) => Ok(true),
                            Err(status) if is_compacted(&status) => Ok(false),
                            Err(status) => Err(status),
                        }
                    }
                })
                .await?
                .value;
            if readable {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let compacted = from_etcd(lo);
        self.inner.compacted.fetch_max(compacted, Ordering::Relaxed);
        Ok(compacted)
    }

    async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.shutdown.send_replace(true);
    }
}

impl EtcdStore {
    /// Sends further calls to the next endpoint.
    fn rotate(&self) {
        self.rotate_from(self.inner.current.load(Ordering::Relaxed));
    }

    /// Moves on from endpoint `i` after it failed, unless another call already did.
    fn rotate_from(&self, i: usize) {
        let n = self.inner.channels.len();
        let _ = self.inner.current.compare_exchange(
            i,
            (i + 1) % n,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

/// One change feed: the revision it resumes from when its etcd stream breaks.
struct Feed {
    store: EtcdStore,
    /// The etcd revision of the next change to deliver.
    next: i64,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Feed {
    /// Opens an etcd watch of the whole keyspace from `next` and waits until etcd confirms it.
    async fn open(&mut self) -> Result<tonic::Streaming<pb::WatchResponse>, StoreError> {
        let create = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: self.store.keyspace_start(),
                    range_end: self.store.keyspace_end(),
                    start_revision: self.next,
                    progress_notify: true,
                    prev_kv: true,
                    watch_id: 0,
                    fragment: false,
                },
            )),
        };
        let next = self.next;
        let called = self
            .store
            .call("watch", |channel| {
                let create = create.clone();
                async move {
                    let mut client =
                        WatchClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
                    // The request stream stays open: etcd ends a watch whose client half-closes.
                    let requests =
                        futures::stream::iter([create]).chain(futures::stream::pending());
                    let mut responses = client.watch(requests).await?.into_inner();
                    match responses.message().await? {
                        Some(first) if first.canceled && first.compact_revision > 0 => {
                            Ok(Err(first.compact_revision))
                        }
                        Some(first) if first.created => Ok(Ok(responses)),
                        Some(first) => Err(Status::unavailable(format!(
                            "etcd answered a watch request with neither created nor cancelled ({})",
                            first.cancel_reason
                        ))),
                        None => Err(Status::unavailable("etcd closed the watch stream at once")),
                    }
                }
            })
            .await?;
        match called.value {
            Ok(responses) => Ok(responses),
            Err(compact_revision) => Err(StoreError::Compacted {
                requested: from_etcd(next - 1),
                compacted: from_etcd(compact_revision),
            }),
        }
    }

    /// Groups a response's events by revision (etcd never splits a revision across responses
    /// of an unfragmented watch) and advances the resume point past them.
    fn batches(&mut self, events: Vec<pb::Event>) -> Vec<ChangeBatch> {
        let mut batches: Vec<ChangeBatch> = Vec::new();
        for event in events {
            let Some(kv) = event.kv else { continue };
            let etcd_revision = kv.mod_revision;
            if etcd_revision < self.next {
                // Already delivered before a resume.
                continue;
            }
            let revision = from_etcd(etcd_revision);
            let prev = event.prev_kv.map(|p| self.store.key_value(p));
            let change = if event.r#type == pb::event::EventType::Delete as i32 {
                let key = self.store.strip(kv.key);
                let (value, create_revision) = prev
                    .as_ref()
                    .map_or((Bytes::new(), 0), |p| (p.value.clone(), p.create_revision));
                Change {
                    kind: ChangeKind::Delete,
                    kv: KeyValue {
                        key,
                        value,
                        create_revision,
                        mod_revision: revision,
                    },
                    prev,
                }
            } else {
                Change {
                    kind: ChangeKind::Put,
                    kv: self.store.key_value(kv),
                    prev,
                }
            };
            match batches.last_mut() {
                Some(batch) if batch.revision == revision => batch.changes.push(change),
                _ => batches.push(ChangeBatch {
                    revision,
                    changes: vec![change],
                }),
            }
        }
        if let Some(last) = batches.last() {
            self.next = to_etcd(last.revision) + 1;
        }
        batches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, mod_revision: i64) -> Option<pb::KeyValue> {
        Some(pb::KeyValue {
            key: Bytes::from(key.to_string()),
            value: Bytes::from(value.to_string()),
            mod_revision,
            ..Default::default()
        })
    }

    fn create(key: &str, value: &str) -> Txn {
        Txn {
            compares: vec![Compare::ModRevision {
                key: Bytes::from(key.to_string()),
                revision: 0,
            }],
            ops: vec![Op::Put {
                key: Bytes::from(key.to_string()),
                value: Bytes::from(value.to_string()),
            }],
        }
    }

    /// The failure branch's reads (compared keys, then written keys) name the failed compare.
    #[test]
    fn the_first_failed_compare_is_found_from_the_reads() {
        let txn = Txn {
            compares: vec![
                Compare::ModRevision {
                    key: Bytes::from_static(b"a"),
                    revision: 4,
                },
                Compare::ModRevision {
                    key: Bytes::from_static(b"b"),
                    revision: 0,
                },
            ],
            ops: vec![],
        };
        // a at Drover revision 4 is etcd's 5; b exists, so "absent" fails.
        assert_eq!(
            EtcdStore::first_failed(&txn, &[kv("a", "", 5), kv("b", "", 7)]),
            Some(1)
        );
        assert_eq!(
            EtcdStore::first_failed(&txn, &[kv("a", "", 6), None]),
            Some(0)
        );
        assert_eq!(EtcdStore::first_failed(&txn, &[kv("a", "", 5), None]), None);
    }

    /// A create retried after its answer was lost finds its own value: that is its success, at
    /// the revision it was written. Someone else's value, or a delete not done, is not.
    #[test]
    fn a_retried_write_recognises_its_own_earlier_attempt() {
        let txn = create("k", "mine");
        let reads = |value: &str| vec![kv("k", value, 9), kv("k", value, 9)];
        assert_eq!(EtcdStore::applied_before(&txn, &reads("mine")), Some(9));
        assert_eq!(EtcdStore::applied_before(&txn, &reads("theirs")), None);
        assert_eq!(
            EtcdStore::applied_before(&txn, &[kv("k", "", 9), None]),
            None
        );

        let delete = Txn {
            compares: vec![],
            ops: vec![Op::Delete {
                key: Bytes::from_static(b"k"),
            }],
        };
        assert_eq!(EtcdStore::applied_before(&delete, &[None]), Some(0));
        assert_eq!(EtcdStore::applied_before(&delete, &[kv("k", "v", 3)]), None);

        // Two puts at different revisions are two writes, not this one.
        let two = Txn {
            compares: vec![],
            ops: vec![
                Op::Put {
                    key: Bytes::from_static(b"x"),
                    value: Bytes::from_static(b"1"),
                },
                Op::Put {
                    key: Bytes::from_static(b"y"),
                    value: Bytes::from_static(b"2"),
                },
            ],
        };
        assert_eq!(
            EtcdStore::applied_before(&two, &[kv("x", "1", 4), kv("y", "2", 4)]),
            Some(4)
        );
        assert_eq!(
            EtcdStore::applied_before(&two, &[kv("x", "1", 4), kv("y", "2", 5)]),
            None
        );
    }

    #[test]
    fn revisions_map_with_etcd_one_ahead() {
        assert_eq!((from_etcd(1), to_etcd(0)), (0, 1));
        assert_eq!(from_etcd(to_etcd(41)), 41);
        assert_eq!(compare_to_etcd(0), 0, "absent stays absent");
        assert_eq!(compare_to_etcd(3), 4);
    }
}
