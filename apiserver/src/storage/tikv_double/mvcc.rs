//! The double's storage: Percolator MVCC over one in-memory sorted map, as TiKV keeps it.
//!
//! Each key has at most one lock (a prewritten, uncommitted write of one transaction, named by
//! its start timestamp) and a list of writes by commit timestamp: committed puts and deletes,
//! lock-only records, and rollback records (kept at the start timestamp of a rolled-back
//! transaction so that a late prewrite of it fails). Reads at a timestamp see the newest
//! committed value at or before it and stop at a lock that may commit before it; prewrite
//! refuses a key with another transaction's lock or with a write committed after the
//! transaction started (the write conflict that optimistic transactions rely on).

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

use super::pb::kvrpcpb::{
    self, AlreadyExist, KeyError, KvPair, LockInfo, Mutation, TxnNotFound, WriteConflict,
};

/// Bits of a timestamp below its physical part (milliseconds), as PD allocates them.
pub(super) const LOGICAL_BITS: u32 = 18;

fn physical_ms(ts: u64) -> u64 {
    ts >> LOGICAL_BITS
}

#[derive(Clone, Debug)]
enum Intent {
    Put(Vec<u8>),
    Delete,
    /// A lock without a value (`Op::Lock`): it commits to a lock-only record.
    LockOnly,
}

#[derive(Clone, Debug)]
struct Lock {
    primary: Vec<u8>,
    start_ts: u64,
    ttl: u64,
    txn_size: u64,
    intent: Intent,
}

#[derive(Clone, Debug)]
enum WriteKind {
    Put(Vec<u8>),
    Delete,
    LockOnly,
    Rollback,
}

#[derive(Clone, Debug)]
struct Write {
    start_ts: u64,
    kind: WriteKind,
}

#[derive(Default, Debug)]
struct Entry {
    lock: Option<Lock>,
    /// Newest first: keyed by the reversed commit timestamp.
    writes: BTreeMap<Reverse<u64>, Write>,
}

impl Entry {
    /// The write of the transaction that started at `start_ts`, with its commit timestamp.
    fn write_of(&self, start_ts: u64) -> Option<(u64, &Write)> {
        self.writes
            .iter()
            .find(|(_, w)| w.start_ts == start_ts)
            .map(|(Reverse(ts), w)| (*ts, w))
    }

    fn is_empty(&self) -> bool {
        self.lock.is_none() && self.writes.is_empty()
    }
}

/// What `check_txn_status` found for a transaction, in the response's terms.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct TxnStatus {
    pub lock_ttl: u64,
    pub commit_version: u64,
    pub action: kvrpcpb::Action,
    pub lock_info: Option<LockInfo>,
}

#[derive(Default)]
pub(super) struct Mvcc {
    keys: Mutex<BTreeMap<Vec<u8>, Entry>>,
}

fn lock_info(key: &[u8], lock: &Lock) -> LockInfo {
    LockInfo {
        primary_lock: lock.primary.clone(),
        lock_version: lock.start_ts,
        key: key.to_vec(),
        lock_ttl: lock.ttl,
        txn_size: lock.txn_size,
        lock_type: match lock.intent {
            Intent::Put(_) => kvrpcpb::Op::Put,
            Intent::Delete => kvrpcpb::Op::Del,
            Intent::LockOnly => kvrpcpb::Op::Lock,
        } as i32,
        ..Default::default()
    }
}

fn locked(key: &[u8], lock: &Lock) -> KeyError {
    KeyError {
        locked: Some(lock_info(key, lock)),
        ..Default::default()
    }
}

fn abort(message: String) -> KeyError {
    KeyError {
        abort: message,
        ..Default::default()
    }
}

fn txn_not_found(start_ts: u64, primary: &[u8]) -> KeyError {
    KeyError {
        txn_not_found: Some(TxnNotFound {
            start_ts,
            primary_key: primary.to_vec(),
        }),
        ..Default::default()
    }
}

/// The value of `entry` visible at `ts`, or the lock that hides it.
fn read_entry(key: &[u8], entry: &Entry, ts: u64) -> Result<Option<Vec<u8>>, KeyError> {
    if let Some(lock) = &entry.lock {
        // A lock-only intent never changes the value; a lock of a transaction that started
        // after `ts` commits after it too.
        if lock.start_ts <= ts && !matches!(lock.intent, Intent::LockOnly) {
            return Err(locked(key, lock));
        }
    }
    for write in entry.writes.range(Reverse(ts)..).map(|(_, w)| w) {
        match &write.kind {
            WriteKind::Put(value) => return Ok(Some(value.clone())),
            WriteKind::Delete => return Ok(None),
            WriteKind::LockOnly | WriteKind::Rollback => {}
        }
    }
    Ok(None)
}

fn range_bounds(start: &[u8], end: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let upper = if end.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Excluded(end.to_vec())
    };
    (Bound::Included(start.to_vec()), upper)
}

impl Mvcc {
    fn keys(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, Entry>> {
        // A panic while holding the map would be a bug in this file; the map itself is never
        // left half-changed by one (every change is checked before it is made).
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn get(&self, key: &[u8], ts: u64) -> Result<Option<Vec<u8>>, KeyError> {
        match self.keys().get(key) {
            Some(entry) => read_entry(key, entry, ts),
            None => Ok(None),
        }
    }

    pub(super) fn batch_get(&self, keys: &[Vec<u8>], ts: u64) -> Vec<KvPair> {
        let map = self.keys();
        keys.iter()
            .filter_map(|key| {
                let found = map.get(key).map(|e| read_entry(key, e, ts));
                match found {
                    Some(Ok(Some(value))) => Some(KvPair {
                        key: key.clone(),
                        value,
                        error: None,
                    }),
                    Some(Err(error)) => Some(KvPair {
                        key: key.clone(),
                        value: Vec::new(),
                        error: Some(error),
                    }),
                    Some(Ok(None)) | None => None,
                }
            })
            .collect()
    }

    /// Keys in `[start, end)` (in reverse: `[end, start)`, newest key first) visible at `ts`.
    pub(super) fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        ts: u64,
        key_only: bool,
        reverse: bool,
    ) -> Vec<KvPair> {
        let map = self.keys();
        let (lower, upper) = if reverse { (end, start) } else { (start, end) };
        let range = map.range(range_bounds(lower, upper));
        let entries: Box<dyn Iterator<Item = (&Vec<u8>, &Entry)>> = if reverse {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        let mut pairs = Vec::new();
        for (key, entry) in entries {
            if limit > 0 && pairs.len() >= limit {
                break;
            }
            match read_entry(key, entry, ts) {
                Ok(Some(value)) => pairs.push(KvPair {
                    key: key.clone(),
                    value: if key_only { Vec::new() } else { value },
                    error: None,
                }),
                Ok(None) => {}
                Err(error) => pairs.push(KvPair {
                    key: key.clone(),
                    value: Vec::new(),
                    error: Some(error),
                }),
            }
        }
        pairs
    }

    /// Locks every mutated key for the transaction `start_ts`, or none of them: the errors say
    /// which keys are locked by another transaction or were written after `start_ts`.
    pub(super) fn prewrite(
        &self,
        mutations: &[Mutation],
        primary: &[u8],
        start_ts: u64,
        ttl: u64,
        txn_size: u64,
    ) -> Vec<KeyError> {
        let mut map = self.keys();
        let mut errors = Vec::new();
        let mut intents = Vec::with_capacity(mutations.len());
        for mutation in mutations {
            let key = &mutation.key;
            let op = kvrpcpb::Op::try_from(mutation.op).unwrap_or(kvrpcpb::Op::Put);
            let entry = map.get(key);
            if let Some(lock) = entry.and_then(|e| e.lock.as_ref()) {
                if lock.start_ts != start_ts {
                    errors.push(locked(key, lock));
                }
                // Locked by this transaction already: a retried prewrite.
                continue;
            }
            if let Some(entry) = entry {
                if let Some((_, own)) = entry.write_of(start_ts) {
                    errors.push(abort(format!(
                        "transaction {start_ts} already {} on this key",
                        if matches!(own.kind, WriteKind::Rollback) {
                            "rolled back"
                        } else {
                            "committed"
                        }
                    )));
                    continue;
                }
                let newer = entry
                    .writes
                    .range(..Reverse(start_ts))
                    .find(|(_, w)| !matches!(w.kind, WriteKind::Rollback));
                if let Some((Reverse(commit_ts), write)) = newer {
                    errors.push(KeyError {
                        conflict: Some(WriteConflict {
                            start_ts,
                            conflict_ts: write.start_ts,
                            key: key.clone(),
                            primary: primary.to_vec(),
                            conflict_commit_ts: *commit_ts,
                            reason: 0,
                        }),
                        ..Default::default()
                    });
                    continue;
                }
            }
            let exists = match entry.map(|e| read_entry(key, e, u64::MAX)) {
                Some(Ok(value)) => value.is_some(),
                _ => false,
            };
            let intent = match op {
                kvrpcpb::Op::Put => Intent::Put(mutation.value.clone()),
                kvrpcpb::Op::Insert | kvrpcpb::Op::CheckNotExists if exists => {
                    errors.push(KeyError {
                        already_exist: Some(AlreadyExist { key: key.clone() }),
                        ..Default::default()
                    });
                    continue;
                }
                kvrpcpb::Op::Insert => Intent::Put(mutation.value.clone()),
                kvrpcpb::Op::CheckNotExists => continue,
                kvrpcpb::Op::Del => Intent::Delete,
                kvrpcpb::Op::Lock => Intent::LockOnly,
                other => {
                    errors.push(abort(format!(
                        "the double does not serve {other:?} in an optimistic prewrite"
                    )));
                    continue;
                }
            };
            intents.push((key.clone(), intent));
        }
        if !errors.is_empty() {
            return errors;
        }
        for (key, intent) in intents {
            map.entry(key).or_default().lock = Some(Lock {
                primary: primary.to_vec(),
                start_ts,
                ttl: ttl.max(1),
                txn_size,
                intent,
            });
        }
        errors
    }

    /// Turns the locks of `start_ts` on `keys` into writes at `commit_ts`.
    pub(super) fn commit(
        &self,
        keys: &[Vec<u8>],
        start_ts: u64,
        commit_ts: u64,
    ) -> Option<KeyError> {
        if commit_ts <= start_ts {
            return Some(abort(format!(
                "commit timestamp {commit_ts} is not after start timestamp {start_ts}"
            )));
        }
        let mut map = self.keys();
        for key in keys {
            let entry = map.get(key);
            let ours = entry
                .and_then(|e| e.lock.as_ref())
                .is_some_and(|l| l.start_ts == start_ts);
            if ours {
                continue;
            }
            match entry.and_then(|e| e.write_of(start_ts)) {
                Some((_, w)) if matches!(w.kind, WriteKind::Rollback) => {
                    return Some(abort(format!("transaction {start_ts} was rolled back")));
                }
                // Committed already: a retried commit.
                Some(_) => {}
                None => {
                    return Some(KeyError {
                        retryable: format!("TxnLockNotFound: no lock of {start_ts} on the key"),
                        ..Default::default()
                    });
                }
            }
        }
        for key in keys {
            if let Some(entry) = map.get_mut(key) {
                commit_entry(entry, start_ts, commit_ts);
            }
        }
        None
    }

    /// Rolls back the transaction `start_ts` on `keys` (leaving rollback records).
    pub(super) fn rollback(&self, keys: &[Vec<u8>], start_ts: u64) -> Option<KeyError> {
        let mut map = self.keys();
        for key in keys {
            if let Some((_, w)) = map.get(key).and_then(|e| e.write_of(start_ts))
                && !matches!(w.kind, WriteKind::Rollback)
            {
                return Some(abort(format!(
                    "transaction {start_ts} is already committed"
                )));
            }
        }
        for key in keys {
            rollback_entry(map.entry(key.clone()).or_default(), start_ts);
        }
        None
    }

    /// The state of the transaction `lock_ts` as its primary key tells it; an expired lock is
    /// rolled back, and with `rollback_if_not_exist` a missing one is recorded as rolled back.
    pub(super) fn check_txn_status(
        &self,
        primary: &[u8],
        lock_ts: u64,
        current_ts: u64,
        rollback_if_not_exist: bool,
    ) -> Result<TxnStatus, KeyError> {
        let mut map = self.keys();
        let entry = map.entry(primary.to_vec()).or_default();
        if let Some(lock) = entry.lock.clone().filter(|l| l.start_ts == lock_ts) {
            if physical_ms(lock_ts).saturating_add(lock.ttl) <= physical_ms(current_ts) {
                rollback_entry(entry, lock_ts);
                return Ok(TxnStatus {
                    lock_ttl: 0,
                    commit_version: 0,
                    action: kvrpcpb::Action::TtlExpireRollback,
                    lock_info: None,
                });
            }
            return Ok(TxnStatus {
                lock_ttl: lock.ttl,
                commit_version: 0,
                action: kvrpcpb::Action::NoAction,
                lock_info: Some(lock_info(primary, &lock)),
            });
        }
        let status = match entry.write_of(lock_ts) {
            Some((_, w)) if matches!(w.kind, WriteKind::Rollback) => TxnStatus {
                lock_ttl: 0,
                commit_version: 0,
                action: kvrpcpb::Action::NoAction,
                lock_info: None,
            },
            Some((commit_ts, _)) => TxnStatus {
                lock_ttl: 0,
                commit_version: commit_ts,
                action: kvrpcpb::Action::NoAction,
                lock_info: None,
            },
            None if rollback_if_not_exist => {
                rollback_entry(entry, lock_ts);
                TxnStatus {
                    lock_ttl: 0,
                    commit_version: 0,
                    action: kvrpcpb::Action::LockNotExistRollback,
                    lock_info: None,
                }
            }
            None => {
                if entry.is_empty() {
                    map.remove(primary);
                }
                return Err(txn_not_found(lock_ts, primary));
            }
        };
        Ok(status)
    }

    /// Commits (`commit_ts > 0`) or rolls back every lock of each `(start_ts, commit_ts)`, on
    /// `keys` when given, else wherever it is.
    pub(super) fn resolve(&self, txns: &[(u64, u64)], keys: &[Vec<u8>]) {
        let mut map = self.keys();
        let targets: Vec<Vec<u8>> = if keys.is_empty() {
            map.iter()
                .filter(|(_, e)| {
                    e.lock
                        .as_ref()
                        .is_some_and(|l| txns.iter().any(|(s, _)| *s == l.start_ts))
                })
                .map(|(k, _)| k.clone())
                .collect()
        } else {
            keys.to_vec()
        };
        for key in targets {
            let Some(entry) = map.get_mut(&key) else {
                continue;
            };
            let Some(start_ts) = entry.lock.as_ref().map(|l| l.start_ts) else {
                continue;
            };
            match txns.iter().find(|(s, _)| *s == start_ts) {
                Some((_, 0)) => rollback_entry(entry, start_ts),
                Some((_, commit_ts)) => commit_entry(entry, start_ts, *commit_ts),
                None => {}
            }
        }
    }

    /// Extends the lock of `start_ts` on its primary key to at least `ttl`.
    pub(super) fn heart_beat(
        &self,
        primary: &[u8],
        start_ts: u64,
        ttl: u64,
    ) -> Result<u64, KeyError> {
        let mut map = self.keys();
        match map
            .get_mut(primary)
            .and_then(|e| e.lock.as_mut())
            .filter(|l| l.start_ts == start_ts)
        {
            Some(lock) => {
                lock.ttl = lock.ttl.max(ttl);
                Ok(lock.ttl)
            }
            None => Err(txn_not_found(start_ts, primary)),
        }
    }

    /// Locks in `[start, end)` of transactions that started at or before `max_ts`.
    pub(super) fn scan_locks(
        &self,
        start: &[u8],
        end: &[u8],
        max_ts: u64,
        limit: usize,
    ) -> Vec<LockInfo> {
        self.keys()
            .range(range_bounds(start, end))
            .filter_map(|(k, e)| e.lock.as_ref().map(|l| (k, l)))
            .filter(|(_, l)| l.start_ts <= max_ts)
            .take(if limit == 0 { usize::MAX } else { limit })
            .map(|(k, l)| lock_info(k, l))
            .collect()
    }

    /// Drops every version that no read at or after `safe_point` can see.
    pub(super) fn gc(&self, safe_point: u64) {
        let mut map = self.keys();
        map.retain(|_, entry| {
            let mut kept_visible = false;
            entry.writes.retain(|Reverse(commit_ts), write| {
                if *commit_ts > safe_point {
                    return true;
                }
                match write.kind {
                    WriteKind::Put(_) | WriteKind::Delete if !kept_visible => {
                        kept_visible = true;
                        matches!(write.kind, WriteKind::Put(_))
                    }
                    _ => false,
                }
            });
            !entry.is_empty()
        });
    }

    /// Number of stored versions (writes and locks) over all keys, for tests of GC.
    pub(super) fn versions(&self) -> usize {
        self.keys()
            .values()
            .map(|e| e.writes.len() + usize::from(e.lock.is_some()))
            .sum()
    }
}

fn commit_entry(entry: &mut Entry, start_ts: u64, commit_ts: u64) {
    let Some(lock) = entry.lock.take_if(|l| l.start_ts == start_ts) else {
        return;
    };
    let kind = match lock.intent {
        Intent::Put(value) => WriteKind::Put(value),
        Intent::Delete => WriteKind::Delete,
        Intent::LockOnly => WriteKind::LockOnly,
    };
    entry
        .writes
        .insert(Reverse(commit_ts), Write { start_ts, kind });
}

fn rollback_entry(entry: &mut Entry, start_ts: u64) {
    entry.lock.take_if(|l| l.start_ts == start_ts);
    if entry.write_of(start_ts).is_none() {
        entry.writes.insert(
            Reverse(start_ts),
            Write {
                start_ts,
                kind: WriteKind::Rollback,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> Mutation {
        Mutation {
            op: kvrpcpb::Op::Put as i32,
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            assertion: 0,
        }
    }

    fn k(key: &str) -> Vec<u8> {
        key.as_bytes().to_vec()
    }

    #[test]
    fn reads_see_the_snapshot_and_stop_at_locks() {
        let mvcc = Mvcc::default();
        assert!(
            mvcc.prewrite(&[put("a", "1")], b"a", 10, 3000, 1)
                .is_empty()
        );
        // A reader after the prewrite meets the lock; one before it does not.
        assert!(mvcc.get(b"a", 11).unwrap_err().locked.is_some());
        assert_eq!(mvcc.get(b"a", 9).unwrap(), None);
        assert!(mvcc.commit(&[k("a")], 10, 12).is_none());
        assert_eq!(mvcc.get(b"a", 11).unwrap(), None);
        assert_eq!(mvcc.get(b"a", 12).unwrap(), Some(k("1")));
    }

    #[test]
    fn a_write_after_the_start_is_a_conflict() {
        let mvcc = Mvcc::default();
        assert!(
            mvcc.prewrite(&[put("a", "1")], b"a", 10, 3000, 1)
                .is_empty()
        );
        assert!(mvcc.commit(&[k("a")], 10, 20).is_none());
        let errors = mvcc.prewrite(&[put("a", "2"), put("b", "2")], b"a", 15, 3000, 2);
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].conflict.as_ref().map(|c| c.conflict_commit_ts),
            Some(20)
        );
        // Nothing of the refused prewrite was locked.
        assert_eq!(mvcc.get(b"b", 30).unwrap(), None);
    }

    #[test]
    fn a_rolled_back_transaction_cannot_commit_or_prewrite_again() {
        let mvcc = Mvcc::default();
        assert!(
            mvcc.prewrite(&[put("a", "1")], b"a", 10, 3000, 1)
                .is_empty()
        );
        assert!(mvcc.rollback(&[k("a")], 10).is_none());
        assert!(mvcc.commit(&[k("a")], 10, 20).is_some());
        assert!(
            !mvcc
                .prewrite(&[put("a", "1")], b"a", 10, 3000, 1)
                .is_empty()
        );
    }

    #[test]
    fn check_txn_status_rolls_back_only_expired_locks() {
        let mvcc = Mvcc::default();
        let start = 1000 << LOGICAL_BITS;
        assert!(
            mvcc.prewrite(&[put("a", "1")], b"a", start, 100, 1)
                .is_empty()
        );
        let alive = mvcc
            .check_txn_status(b"a", start, 1050 << LOGICAL_BITS, false)
            .unwrap();
        assert_eq!(alive.lock_ttl, 100);
        assert!(alive.lock_info.is_some());
        let expired = mvcc
            .check_txn_status(b"a", start, 1100 << LOGICAL_BITS, false)
            .unwrap();
        assert_eq!(expired.action, kvrpcpb::Action::TtlExpireRollback);
        assert!(mvcc.commit(&[k("a")], start, start + 5).is_some());
        assert!(
            mvcc.check_txn_status(b"b", 7, 8, false)
                .unwrap_err()
                .txn_not_found
                .is_some()
        );
    }

    #[test]
    fn gc_keeps_what_reads_after_the_safe_point_see() {
        let mvcc = Mvcc::default();
        for (i, ts) in [10u64, 20, 30].iter().enumerate() {
            assert!(
                mvcc.prewrite(&[put("a", &i.to_string())], b"a", *ts, 3000, 1)
                    .is_empty()
            );
            assert!(mvcc.commit(&[k("a")], *ts, ts + 1).is_none());
        }
        mvcc.gc(25);
        assert_eq!(mvcc.versions(), 2);
        assert_eq!(mvcc.get(b"a", 25).unwrap(), Some(k("1")));
        assert_eq!(mvcc.get(b"a", 40).unwrap(), Some(k("2")));
    }
}
