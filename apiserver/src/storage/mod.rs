//! The store behind the API server.
//!
//! The API server is the only component that talks to the store. A store is a sorted key-value
//! map with a global, monotonically increasing revision (as etcd has): every committed
//! transaction gets the next revision, every key remembers the revision that created it and the
//! one that last modified it, and a change feed replays every change after a given revision until
//! that history is compacted away.
//!
//! Backends implement [`Store`]; the conformance suite in [`conformance`] runs the same tests over
//! each of them.

mod apply;
mod codec;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod embedded;
pub mod etcd;
#[cfg(feature = "conformance")]
pub mod etcd_cluster;
pub mod logged;
pub mod tikv;
#[cfg(feature = "conformance")]
pub mod tikv_double;

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

/// A store revision. `0` means "no revision": a key that does not exist has mod revision 0.
pub type Revision = u64;

/// One key with its value and revisions.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Bytes,
    pub value: Bytes,
    /// Revision of the transaction that created the key.
    pub create_revision: Revision,
    /// Revision of the transaction that last wrote the key.
    pub mod_revision: Revision,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("value_len", &self.value.len())
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .finish()
    }
}

/// A condition a transaction checks before it applies its operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key's mod revision equals `revision` (0: the key must not exist).
    ModRevision { key: Bytes, revision: Revision },
}

/// A write inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put { key: Bytes, value: Bytes },
    Delete { key: Bytes },
}

/// A transaction: if every compare holds, every op is applied atomically at one new revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

/// The outcome of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether every compare held and the ops were applied.
    pub succeeded: bool,
    /// The revision the ops were written at when `succeeded`; otherwise the store's current
    /// revision when the compares were evaluated.
    pub revision: Revision,
    /// Index into `compares` of the first compare that failed.
    pub failed_compare: Option<usize>,
}

/// The result of a range read: the keys, and the revision the read saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    pub revision: Revision,
}

/// One change in the change feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Put,
    Delete,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    /// For a put: the new key-value. For a delete: the key, the deleted value, its create
    /// revision, and `mod_revision` set to the revision of the delete.
    pub kv: KeyValue,
    /// The previous key-value, when there was one.
    pub prev: Option<KeyValue>,
}

/// Everything one transaction changed, in op order, all at `revision`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeBatch {
    pub revision: Revision,
    pub changes: Vec<Change>,
}

/// A stream of committed transactions in revision order, without gaps.
pub type ChangeStream = BoxStream<'static, Result<ChangeBatch, StoreError>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("revision {requested} has been compacted (oldest available is {compacted} + 1)")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    #[error("revision {requested} is in the future (current is {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    #[error("the store is closed")]
    Closed,
    /// The store could not be reached (every endpoint failed, or none answered in time).
    #[error("the store is unavailable: {message}")]
    Unavailable { message: String },
    #[error("store backend error: {message}")]
    Backend {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error("corrupt data in the store at key {key}: {message}")]
    Corrupt { key: String, message: String },
}

/// A consistent, durable, revisioned key-value store with a change feed.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies `txn` atomically if its compares hold. When this returns `Ok`, the result is
    /// durable (it survives a crash of the process). Concurrent calls may be grouped into one
    /// underlying commit, but each keeps its own revision and its own compare outcome.
    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError>;

    /// Reads the key.
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError>;

    /// Reads every key in `[start, end)` in key order, at most `limit` keys (0: no limit).
    async fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<RangeResult, StoreError>;

    /// The revision of the last committed transaction (0 for an empty store).
    async fn current_revision(&self) -> Result<Revision, StoreError>;

    /// A stream of every transaction committed after `after`, in order and without gaps: first
    /// the retained history, then live commits. Fails with [`StoreError::Compacted`] when
    /// `after` is older than the retained history.
    async fn watch(&self, after: Revision) -> Result<ChangeStream, StoreError>;

    /// Drops the history at and before `revision`; watches from older revisions fail afterwards.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// The revision at and before which history has been compacted (0: nothing compacted).
    async fn compacted_revision(&self) -> Result<Revision, StoreError>;

    /// Finishes pending writes and releases the backend (files, connections), so the same data
    /// can be opened again at once. Calls after this fail with [`StoreError::Closed`].
    async fn close(&self) {}
}

/// The smallest key greater than every key with `prefix`: the end of a prefix range.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: the range is unbounded above; an empty end means "to the end".
    Vec::new()
}
