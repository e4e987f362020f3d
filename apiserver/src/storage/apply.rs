//! What a [`Txn`] does, given a way to read keys: the compares, the next revision, the new
//! key-values and the change batch. The stores that keep their own revision counter (embedded,
//! TiKV) share it, so a transaction means the same on each; each store then writes the result
//! in its own way.

use std::collections::HashMap;

use bytes::Bytes;

use super::{Change, ChangeBatch, ChangeKind, Compare, KeyValue, Op, Revision, StoreError, Txn};

/// What applying one transaction on top of a revision does.
pub(crate) enum Step {
    /// The ops changed something, at the next revision: `writes` holds each changed key's new
    /// key-value (`None`: deleted), in no particular order.
    Applied {
        batch: ChangeBatch,
        writes: Vec<(Bytes, Option<KeyValue>)>,
    },
    /// The compares held but the ops changed nothing (no ops, or deletes of absent keys).
    Unchanged,
    /// The compare at this index failed; nothing is to be written.
    CompareFailed(usize),
    /// A record this transaction reads is corrupt; nothing is to be written.
    Corrupt(StoreError),
}

/// Evaluates `txn` on top of `current`. `read` returns a key's stored key-value; an
/// [`StoreError::Corrupt`] from it fails this transaction alone (a [`Step::Corrupt`]), any other
/// error is returned. Every read happens before anything is decided, so a corrupt record
/// leaves the batch untouched.
pub(crate) fn evaluate(
    txn: &Txn,
    current: Revision,
    mut read: impl FnMut(&Bytes) -> Result<Option<KeyValue>, StoreError>,
) -> Result<Step, StoreError> {
    let mut state: HashMap<Bytes, Option<KeyValue>> = HashMap::new();
    let mut lookup = |key: &Bytes| -> Result<Option<KeyValue>, StoreError> {
        if let Some(known) = state.get(key) {
            return Ok(known.clone());
        }
        let found = read(key)?;
        state.insert(key.clone(), found.clone());
        Ok(found)
    };
    for (index, Compare::ModRevision { key, revision }) in txn.compares.iter().enumerate() {
        let found = match lookup(key) {
            Ok(found) => found.map_or(0, |kv| kv.mod_revision),
            Err(err @ StoreError::Corrupt { .. }) => return Ok(Step::Corrupt(err)),
            Err(err) => return Err(err),
        };
        if found != *revision {
            return Ok(Step::CompareFailed(index));
        }
    }

    let revision = current + 1;
    let mut changes = Vec::with_capacity(txn.ops.len());
    let mut next_state: HashMap<Bytes, Option<KeyValue>> = HashMap::new();
    for op in &txn.ops {
        let key = match op {
            Op::Put { key, .. } | Op::Delete { key } => key,
        };
        let prev = match next_state.get(key) {
            Some(prev) => prev.clone(),
            None => match lookup(key) {
                Ok(prev) => prev,
                Err(err @ StoreError::Corrupt { .. }) => return Ok(Step::Corrupt(err)),
                Err(err) => return Err(err),
            },
        };
        let (next, change) = match (op, prev) {
            (Op::Put { value, .. }, prev) => {
                let kv = KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
                    mod_revision: revision,
                };
                let change = Change {
                    kind: ChangeKind::Put,
                    kv: kv.clone(),
                    prev,
                };
                (Some(kv), Some(change))
            }
            (Op::Delete { .. }, Some(prev)) => {
                let change = Change {
                    kind: ChangeKind::Delete,
                    kv: KeyValue {
                        mod_revision: revision,
                        ..prev.clone()
                    },
                    prev: Some(prev),
                };
                (None, Some(change))
            }
            (Op::Delete { .. }, None) => (None, None),
        };
        next_state.insert(key.clone(), next);
        changes.extend(change);
    }
    if changes.is_empty() {
        return Ok(Step::Unchanged);
    }
    Ok(Step::Applied {
        batch: ChangeBatch { revision, changes },
        writes: next_state.into_iter().collect(),
    })
}
