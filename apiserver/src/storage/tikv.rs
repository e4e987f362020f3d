//! The TiKV store: every object in a TiKV cluster, through `tikv-client`'s transactional API
//! (Percolator optimistic transactions, timestamps from PD), as a [`LoggedStore`]: TiKV has no
//! global revision nor a change feed that a client library can follow, so Drover's revision
//! counter and change log are TiKV keys (see `logged.rs`).
//!
//! The engine: an optimistic transaction per group commit (a write conflict at prewrite is a
//! retry), snapshots at a PD timestamp for reads, watches that poll the log every [`POLL`] (and
//! at once after a local commit), and after a compaction TiKV's GC with a safe point
//! [`TikvConfig::gc_lifetime`] back. TiKV's own region and lock retries run inside each call.

use std::time::Duration;

use async_trait::async_trait;
use tikv_client::{
    BoundRange, CheckLevel, Config, Key, KvPair, Snapshot, Timestamp, Transaction,
    TransactionClient, TransactionOptions,
};
use tracing::warn;

use super::StoreError;
use super::logged::{Attempt, Engine, LoggedStore, Writes};

/// How long one attempt of a call may take (TiKV's client applies it to each RPC).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to PD may take at start-up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a watch looks for commits made through other API servers.
pub const POLL: Duration = Duration::from_millis(10);
/// The largest message accepted from TiKV.
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
/// Bytes one group commit writes at most (TiKV refuses a Raft entry above 8 MiB).
const MAX_WRITE_BYTES: usize = 6 * 1024 * 1024;
/// Keys one group commit writes at most.
const MAX_WRITES: usize = 4096;

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

/// A [`Store`](super::Store) on a TiKV cluster.
pub type TikvStore = LoggedStore<TikvEngine>;

/// TiKV under a [`LoggedStore`].
pub struct TikvEngine {
    config: TikvConfig,
    client: TransactionClient,
}

impl LoggedStore<TikvEngine> {
    /// Connects to PD (every endpoint given is tried) and checks that TiKV answers.
    pub async fn connect(config: TikvConfig) -> Result<TikvStore, StoreError> {
        let endpoints = config.pd_endpoints.join(", ");
        let client_config = Config::default()
            .with_timeout(ATTEMPT_TIMEOUT)
            .with_grpc_max_decoding_message_size(MAX_MESSAGE_BYTES);
        let connecting =
            TransactionClient::new_with_config(config.pd_endpoints.clone(), client_config);
        let client = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
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
        let prefix = config.prefix.clone();
        LoggedStore::open(TikvEngine { config, client }, &prefix).await
    }
}

fn options() -> TransactionOptions {
    TransactionOptions::new_optimistic().drop_check(CheckLevel::None)
}

fn retry(err: tikv_client::Error) -> Attempt {
    Attempt::Retry(err.to_string())
}

/// The values of `keys` among the pairs a batch get returned (which holds only present keys).
fn in_order(keys: &[Vec<u8>], pairs: impl Iterator<Item = KvPair>) -> Vec<Option<Vec<u8>>> {
    let mut found: std::collections::HashMap<Vec<u8>, Vec<u8>> =
        pairs.map(|p| (Vec::from(p.0), p.1)).collect();
    keys.iter().map(|k| found.remove(k)).collect()
}

fn bound(start: &[u8], end: &[u8]) -> BoundRange {
    if end.is_empty() {
        BoundRange::from(start.to_vec()..)
    } else {
        BoundRange::from(start.to_vec()..end.to_vec())
    }
}

#[async_trait]
impl Engine for TikvEngine {
    type Txn = Transaction;
    type Snapshot = Snapshot;

    fn describe(&self) -> String {
        format!("TiKV (PD at {})", self.config.pd_endpoints.join(", "))
    }

    fn max_writes(&self) -> usize {
        MAX_WRITES
    }

    fn max_write_bytes(&self) -> usize {
        MAX_WRITE_BYTES
    }

    fn poll_interval(&self) -> Duration {
        POLL
    }

    async fn begin(&self) -> Result<Transaction, Attempt> {
        self.client
            .begin_with_options(options())
            .await
            .map_err(retry)
    }

    async fn txn_get(
        &self,
        txn: &mut Transaction,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Vec<u8>>>, Attempt> {
        let lookups: Vec<Key> = keys.iter().cloned().map(Key::from).collect();
        let pairs = txn.batch_get(lookups).await.map_err(retry)?;
        Ok(in_order(keys, pairs))
    }

    async fn txn_commit(&self, mut txn: Transaction, writes: Writes) -> Result<(), Attempt> {
        for (key, value) in writes {
            let written = match value {
                Some(value) => txn.put(key, value).await,
                None => txn.delete(key).await,
            };
            if let Err(err) = written {
                let _ = txn.rollback().await;
                return Err(retry(err));
            }
        }
        if let Err(err) = txn.commit().await {
            let _ = txn.rollback().await;
            return Err(retry(err));
        }
        Ok(())
    }

    async fn txn_abandon(&self, mut txn: Transaction) {
        let _ = txn.rollback().await;
    }

    async fn snapshot(&self) -> Result<Snapshot, Attempt> {
        let ts = self.client.current_timestamp().await.map_err(retry)?;
        Ok(self.client.snapshot(ts, options().read_only()))
    }

    async fn snap_get(
        &self,
        snap: &mut Snapshot,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Vec<u8>>>, Attempt> {
        let lookups: Vec<Key> = keys.iter().cloned().map(Key::from).collect();
        let pairs = snap.batch_get(lookups).await.map_err(retry)?;
        Ok(in_order(keys, pairs))
    }

    async fn snap_scan(
        &self,
        snap: &mut Snapshot,
        start: &[u8],
        end: &[u8],
        limit: u32,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Attempt> {
        let pairs = snap.scan(bound(start, end), limit).await.map_err(retry)?;
        Ok(pairs.map(|p| (Vec::from(p.0), p.1)).collect())
    }

    /// Asks TiKV to drop MVCC versions older than the GC lifetime (PD's GC safe point).
    async fn collect_garbage(&self) {
        let now = match self.client.current_timestamp().await {
            Ok(now) => now,
            Err(err) => {
                warn!(error = %err, "cannot read a timestamp for TiKV's GC");
                return;
            }
        };
        let lifetime_ms = i64::try_from(self.config.gc_lifetime.as_millis()).unwrap_or(i64::MAX);
        let safe_point = Timestamp {
            physical: now.physical.saturating_sub(lifetime_ms),
            logical: 0,
            suffix_bits: 0,
        };
        if safe_point.physical <= 0 {
            return;
        }
        if let Err(err) = self.client.gc(safe_point).await {
            warn!(error = %err, "TiKV's GC failed; it is tried again at the next compaction");
        }
    }
}
