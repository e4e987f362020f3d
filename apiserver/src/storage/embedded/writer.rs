//! The embedded store's single writer: group commit of queued transactions.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use redb::{Durability, ReadableTable, Table};
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, error};

use super::{
    KV, LOG, MAX_BATCH, META, META_COMPACTED, META_LOG_BYTES, META_REVISION, Request, Shared,
    backend, codec, corrupt_key, error_chain,
};
use crate::storage::apply::{self, Step};
use crate::storage::{ChangeBatch, Revision, StoreError, Txn, TxnResult};

/// The thread that owns every write. See the module documentation.
pub(super) struct Writer {
    shared: Arc<Shared>,
    live: broadcast::Sender<Arc<ChangeBatch>>,
    /// Committed state; a batch works on copies and stores them back only once committed.
    revision: Revision,
    compacted: Revision,
    /// Bytes of the log entries after `compacted`.
    log_bytes: u64,
}

/// What one request did inside a batch that has not been committed yet.
enum Outcome {
    Txn(Result<TxnResult, StoreError>),
    Compact(Result<(), StoreError>),
}

/// A batch applied to a write transaction, ready to commit.
struct Applied {
    outcomes: Vec<Outcome>,
    published: Vec<Arc<ChangeBatch>>,
    revision: Revision,
    compacted: Revision,
    log_bytes: u64,
}

impl Writer {
    /// Starts the writer thread, which stops once every sender of `queue` is gone and the queue
    /// is drained.
    pub(super) fn spawn(
        shared: Arc<Shared>,
        live: broadcast::Sender<Arc<ChangeBatch>>,
        queue: mpsc::Receiver<Request>,
    ) -> std::io::Result<JoinHandle<()>> {
        let writer = Self {
            revision: shared.revision.load(Ordering::Acquire),
            compacted: shared.compacted.load(Ordering::Acquire),
            log_bytes: shared.log_bytes.load(Ordering::Acquire),
            shared,
            live,
        };
        std::thread::Builder::new()
            .name("drover-store-writer".into())
            .spawn(move || writer.run(queue))
    }

    fn run(mut self, mut queue: mpsc::Receiver<Request>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = queue.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            self.commit(&mut batch);
        }
        debug!("store writer stopped");
    }

    /// Applies and commits `batch`, then answers every request in it and publishes the changes.
    fn commit(&mut self, batch: &mut Vec<Request>) {
        let span = tracing::debug_span!("store_commit", requests = batch.len());
        let _enter = span.enter();
        match self.apply(batch) {
            Ok(applied) => {
                self.revision = applied.revision;
                self.compacted = applied.compacted;
                self.log_bytes = applied.log_bytes;
                self.shared
                    .log_bytes
                    .store(applied.log_bytes, Ordering::Release);
                self.shared
                    .compacted
                    .store(applied.compacted, Ordering::Release);
                self.shared
                    .revision
                    .store(applied.revision, Ordering::Release);
                // Publish first: the API server's cache (a watcher) is then applying the changes
                // while the callers wake, and they find their revision applied instead of
                // waiting for it (one wake-up per write instead of two).
                for changes in applied.published {
                    // No receivers is fine: nobody is watching.
                    let _ = self.live.send(changes);
                }
                for (request, outcome) in batch.drain(..).zip(applied.outcomes) {
                    // A caller that stopped waiting has nothing to be told.
                    match (request, outcome) {
                        (Request::Txn { reply, .. }, Outcome::Txn(result)) => {
                            let _ = reply.send(result);
                        }
                        (Request::Compact { reply, .. }, Outcome::Compact(result)) => {
                            let _ = reply.send(result);
                        }
                        // `apply` pushes one outcome of the request's own kind per request;
                        // should that break, the caller sees `Closed` rather than a wrong answer.
                        _ => error!("store writer paired a request with a wrong outcome"),
                    }
                }
                debug!(revision = self.revision, "committed");
            }
            Err(err) => {
                error!(error = %err, requests = batch.len(), "store commit failed; batch dropped");
                let message = format!(
                    "the commit of a batch of {} failed: {}",
                    batch.len(),
                    error_chain(&err)
                );
                for request in batch.drain(..) {
                    let failed = || StoreError::Backend {
                        message: message.clone(),
                        source: None,
                    };
                    match request {
                        Request::Txn { reply, .. } => {
                            let _ = reply.send(Err(failed()));
                        }
                        Request::Compact { reply, .. } => {
                            let _ = reply.send(Err(failed()));
                        }
                    }
                }
            }
        }
    }

    fn apply(&self, batch: &[Request]) -> Result<Applied, StoreError> {
        let mut wtx = self
            .shared
            .db
            .begin_write()
            .map_err(|e| backend("cannot begin a write transaction", e))?;
        wtx.set_durability(Durability::Immediate)
            .map_err(|e| backend("cannot set durability", e))?;
        let mut revision = self.revision;
        let mut compacted = self.compacted;
        let mut log_bytes = self.log_bytes;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut published = Vec::new();
        {
            let mut kv = wtx
                .open_table(KV)
                .map_err(|e| backend("cannot open table kv", e))?;
            let mut log = wtx
                .open_table(LOG)
                .map_err(|e| backend("cannot open table log", e))?;
            for request in batch {
                match request {
                    Request::Txn { txn, .. } => {
                        let result = match apply_txn(&mut kv, &mut log, txn, revision)? {
                            TxnStep::Applied(changes, logged) => {
                                log_bytes += logged;
                                revision = changes.revision;
                                published.push(Arc::new(changes));
                                Ok(TxnResult {
                                    succeeded: true,
                                    revision,
                                    failed_compare: None,
                                })
                            }
                            TxnStep::Unchanged => Ok(TxnResult {
                                succeeded: true,
                                revision,
                                failed_compare: None,
                            }),
                            TxnStep::CompareFailed(index) => Ok(TxnResult {
                                succeeded: false,
                                revision,
                                failed_compare: Some(index),
                            }),
                            TxnStep::Corrupt(err) => Err(err),
                        };
                        outcomes.push(Outcome::Txn(result));
                    }
                    Request::Compact { revision: to, .. } => {
                        let result = if *to > revision {
                            Err(StoreError::FutureRevision {
                                requested: *to,
                                current: revision,
                            })
                        } else {
                            if *to > compacted {
                                let mut dropped = 0u64;
                                log.retain_in(compacted..=*to, |_, entry| {
                                    dropped += entry.len() as u64;
                                    false
                                })
                                .map_err(|e| backend("cannot drop history", e))?;
                                log_bytes = log_bytes.saturating_sub(dropped);
                                compacted = *to;
                            }
                            Ok(())
                        };
                        outcomes.push(Outcome::Compact(result));
                    }
                }
            }
            // The byte bound holds after every commit, not only at the periodic compaction:
            // large values written quickly (patches of a big annotation) would otherwise fill
            // the disk between two compactions. Freed pages are reused by later writes, so the
            // file stops growing once the log is at its bound.
            while log_bytes > self.shared.retain_bytes {
                let Some((rev, len)) = log
                    .pop_first()
                    .map_err(|e| backend("cannot drop history", e))?
                    .map(|(k, v)| (k.value(), v.value().len() as u64))
                else {
                    break;
                };
                log_bytes = log_bytes.saturating_sub(len);
                compacted = compacted.max(rev);
            }
            let mut meta = wtx
                .open_table(META)
                .map_err(|e| backend("cannot open table meta", e))?;
            meta.insert(META_LOG_BYTES, log_bytes)
                .map_err(|e| backend("cannot write meta log_bytes", e))?;
            meta.insert(META_REVISION, revision)
                .map_err(|e| backend("cannot write meta revision", e))?;
            meta.insert(META_COMPACTED, compacted)
                .map_err(|e| backend("cannot write meta compacted", e))?;
        }
        wtx.commit()
            .map_err(|e| backend("cannot commit a write transaction", e))?;
        Ok(Applied {
            outcomes,
            published,
            revision,
            compacted,
            log_bytes,
        })
    }
}

/// What applying one transaction did.
enum TxnStep {
    /// The ops changed something, at the next revision; the log entry took this many bytes.
    Applied(ChangeBatch, u64),
    /// The compares held but the ops changed nothing (no ops, or deletes of absent keys).
    Unchanged,
    /// The compare at this index failed; nothing was written.
    CompareFailed(usize),
    /// A record this transaction reads is corrupt; nothing was written.
    Corrupt(StoreError),
}

/// Applies one transaction on top of `current` inside the batch's write transaction. An `Err` is
/// a storage failure that dooms the whole batch; a problem of this transaction alone is a
/// [`TxnStep`].
fn apply_txn(
    kv: &mut Table<&[u8], &[u8]>,
    log: &mut Table<u64, &[u8]>,
    txn: &Txn,
    current: Revision,
) -> Result<TxnStep, StoreError> {
    let step = apply::evaluate(txn, current, |key| {
        match kv
            .get(key.as_ref())
            .map_err(|e| backend("cannot read a key", e))?
        {
            Some(raw) => codec::decode_record(key.clone(), raw.value())
                .map(Some)
                .map_err(|message| corrupt_key(key, message)),
            None => Ok(None),
        }
    })?;
    let (batch, writes) = match step {
        Step::Applied { batch, writes } => (batch, writes),
        Step::Unchanged => return Ok(TxnStep::Unchanged),
        Step::CompareFailed(index) => return Ok(TxnStep::CompareFailed(index)),
        Step::Corrupt(err) => return Ok(TxnStep::Corrupt(err)),
    };
    let mut record = Vec::new();
    for (key, value) in &writes {
        match value {
            Some(value) => {
                record.clear();
                codec::encode_record(
                    &mut record,
                    value.create_revision,
                    value.mod_revision,
                    &value.value,
                );
                kv.insert(key.as_ref(), record.as_slice())
                    .map_err(|e| backend("cannot write a key", e))?;
            }
            None => {
                kv.remove(key.as_ref())
                    .map_err(|e| backend("cannot delete a key", e))?;
            }
        }
    }
    let entry = codec::encode_batch(&batch);
    log.insert(batch.revision, entry.as_slice())
        .map_err(|e| backend("cannot append to the log", e))?;
    Ok(TxnStep::Applied(batch, entry.len() as u64))
}
