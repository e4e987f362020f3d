//! The embedded store's change feed: history from the log table, then live batches, and the log
//! again whenever the live feed is not enough.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use redb::{Database, ReadableDatabase};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tracing::debug;

use super::{HISTORY_PAGE, LOG, META, META_COMPACTED, Shared, backend, codec};
use crate::storage::{ChangeBatch, ChangeStream, Revision, StoreError};

/// Reads the log entries `from..=to`, at most [`HISTORY_PAGE`] of them, checking that they
/// follow each other without a gap.
fn read_log(db: &Database, from: Revision, to: Revision) -> Result<Vec<ChangeBatch>, StoreError> {
    let rtx = db
        .begin_read()
        .map_err(|e| backend("cannot begin a read transaction", e))?;
    let compacted = rtx
        .open_table(META)
        .map_err(|e| backend("cannot open table meta", e))?
        .get(META_COMPACTED)
        .map_err(|e| backend("cannot read meta compacted", e))?
        .map(|v| v.value())
        .unwrap_or(0);
    if from <= compacted {
        return Err(StoreError::Compacted {
            requested: from - 1,
            compacted,
        });
    }
    let log = rtx
        .open_table(LOG)
        .map_err(|e| backend("cannot open table log", e))?;
    let entries = log
        .range(from..=to)
        .map_err(|e| backend("cannot start a log read", e))?
        .take(HISTORY_PAGE);
    let mut batches = Vec::new();
    for (expected, entry) in (from..).zip(entries) {
        let (revision, raw) = entry.map_err(|e| backend("cannot read a log entry", e))?;
        let revision = revision.value();
        if revision != expected {
            return Err(missing_log(expected));
        }
        let batch =
            codec::decode_batch(revision, raw.value()).map_err(|message| StoreError::Corrupt {
                key: format!("log/{revision}"),
                message,
            })?;
        batches.push(batch);
    }
    if batches.is_empty() && from <= to {
        return Err(missing_log(from));
    }
    Ok(batches)
}

/// [`read_log`] on the blocking pool.
async fn read_log_page(
    shared: Arc<Shared>,
    from: Revision,
    to: Revision,
) -> Result<Vec<ChangeBatch>, StoreError> {
    tokio::task::spawn_blocking(move || read_log(&shared.db, from, to))
        .await
        .map_err(|e| backend("log read task failed", e))?
}

fn missing_log(revision: Revision) -> StoreError {
    StoreError::Corrupt {
        key: format!("log/{revision}"),
        message: "committed revision missing from the log".into(),
    }
}

/// The change feed after `after`: the log up to `current`, then live batches. When the live
/// subscription lags (or would skip a revision), the stream reads the log again up to the
/// newest revision it has heard of, so it never loses or repeats a batch.
///
/// The stream spawns no task of its own, so dropping it releases everything but a log read
/// that is already running.
pub(super) fn watch_stream(
    shared: Arc<Shared>,
    mut live: broadcast::Receiver<Arc<ChangeBatch>>,
    after: Revision,
    current: Revision,
) -> ChangeStream {
    Box::pin(async_stream::stream! {
        let mut next = after + 1;
        let mut target = current;
        loop {
            while next <= target {
                match read_log_page(shared.clone(), next, target).await {
                    Ok(batches) => {
                        for batch in batches {
                            next = batch.revision + 1;
                            yield Ok(batch);
                        }
                    }
                    Err(err) => {
                        yield Err(err);
                        return;
                    }
                }
            }
            match live.recv().await {
                Ok(batch) if batch.revision < next => {}
                Ok(batch) if batch.revision == next => {
                    next += 1;
                    target = batch.revision;
                    yield Ok(ChangeBatch::clone(&batch));
                }
                // A revision was skipped: it is committed, so the log has it.
                Ok(batch) => target = batch.revision,
                Err(RecvError::Lagged(skipped)) => {
                    debug!(skipped, next, "watcher fell behind the live feed; reading the log");
                    target = shared.revision.load(Ordering::Acquire);
                }
                Err(RecvError::Closed) => {
                    yield Err(StoreError::Closed);
                    return;
                }
            }
        }
    })
}
