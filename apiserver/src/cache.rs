//! The watch cache: every object in memory, indexed by kind and `(namespace, name)`, fed in
//! revision order by the store's change feed, plus a window of recent changes so watches can
//! resume from a resource version. The window is bounded by count and by bytes (of the events'
//! JSON): whichever bound is reached first drops the oldest events.
//!
//! ```text
//! store change feed ──► decode (outside the lock) ──► apply batch (write lock) ──► watchers
//!                                                         │
//!                         get / list / watch-start ◄──────┘ (read lock)
//! ```
//!
//! Watchers whose field selector names a node (`spec.nodeName=n`, every node agent's pod watch)
//! are indexed by it, so an event is matched only against the watchers of its pod's node (now
//! and before) and the watchers without such a selector, not against every agent's.
//!
//! Writers wait until the cache has applied their revision before they answer, so a client
//! always reads its own writes, and a watcher has the event before the writer's acknowledgement.
//!
//! A writer also leaves the typed object it encoded with the cache ([`WatchCache::expect`]), so
//! applying its change (on the one task that follows the feed, in revision order) decodes
//! nothing: the change's stored JSON is compared with the writer's and the typed object reused.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use drover_api::Status;
use drover_api::selector::{FieldSelector, Selector};
use tokio::sync::{mpsc, watch};

use crate::kinds::{ErasedObject, Kinds};
use crate::storage::{ChangeBatch, ChangeKind, KeyValue};

/// One object as the cache holds it: the typed value (whose `resourceVersion` is empty: the
/// version is `rv`) and its JSON as clients see it (with `resourceVersion`).
pub struct CachedObject {
    /// `group/plural` of the kind.
    pub kind: Arc<str>,
    pub key: Bytes,
    pub rv: u64,
    pub object: Arc<dyn ErasedObject>,
    pub json: Bytes,
}

impl std::fmt::Debug for CachedObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedObject")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("rv", &self.rv)
            .finish()
    }
}

impl CachedObject {
    pub fn namespace(&self) -> &str {
        &self.object.meta().namespace
    }
    pub fn name(&self) -> &str {
        &self.object.meta().name
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// A write announced with [`WatchCache::expect`]; dropping it withdraws the announcement.
pub struct ExpectedWrite {
    expected: Arc<Mutex<Expected>>,
    key: Bytes,
    id: u64,
}

impl std::fmt::Debug for ExpectedWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpectedWrite")
            .field("key", &String::from_utf8_lossy(&self.key))
            .finish_non_exhaustive()
    }
}

impl Drop for ExpectedWrite {
    fn drop(&mut self) {
        let mut expected = self.expected.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(writes) = expected.get_mut(&self.key) {
            writes.retain(|w| w.0 != self.id);
            if writes.is_empty() {
                expected.remove(&self.key);
            }
        }
    }
}

/// One change, as watchers see it.
#[derive(Debug)]
pub struct CacheEvent {
    pub rev: u64,
    pub kind: EventType,
    /// The new state (for a delete: the last state, with the delete's revision).
    pub object: Arc<CachedObject>,
    pub prev: Option<Arc<CachedObject>>,
}

/// What a list or watch selects.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub kind: Arc<str>,
    /// `None`: every namespace.
    pub namespace: Option<String>,
    pub labels: Option<Selector>,
    pub fields: Option<FieldSelector>,
}

impl Filter {
    pub fn matches(&self, o: &CachedObject) -> bool {
        if o.kind != self.kind {
            return false;
        }
        let meta = o.object.meta();
        self.namespace
            .as_ref()
            .is_none_or(|ns| &meta.namespace == ns)
            && self.labels.as_ref().is_none_or(|l| l.matches(&meta.labels))
            && self
                .fields
                .as_ref()
                .is_none_or(|f| f.matches(|p| o.object.field(p)))
    }

    /// The event a watcher with this filter sees for `e`, if any: an object that starts matching
    /// is ADDED, one that stops matching is DELETED.
    pub fn translate(&self, e: &CacheEvent) -> Option<EventType> {
        let now = self.matches(&e.object);
        match e.kind {
            EventType::Added => now.then_some(EventType::Added),
            EventType::Deleted => now.then_some(EventType::Deleted),
            EventType::Modified => {
                let before = e.prev.as_ref().is_some_and(|p| self.matches(p));
                match (before, now) {
                    (true, true) => Some(EventType::Modified),
                    (false, true) => Some(EventType::Added),
                    (true, false) => Some(EventType::Deleted),
                    (false, false) => None,
                }
            }
        }
    }
}

/// An event on its way to one watcher.
pub type WatchItem = (EventType, Arc<CachedObject>);

struct Watcher {
    filter: Filter,
    tx: mpsc::Sender<WatchItem>,
}

/// The field watchers are indexed by (Kubernetes' watch cache "indexed triggers"): every node
/// agent watches the pods with `spec.nodeName=<its node>`, so with a thousand agents an event
/// would otherwise be matched against a thousand filters, on the write path, under the lock.
const TRIGGER_FIELD: &str = "spec.nodeName";

/// The value a watcher is filed under: its filter's `spec.nodeName=V` requirement (not empty:
/// `spec.nodeName=` selects unbound pods, and objects without the field read as empty).
fn trigger_of(filter: &Filter) -> Option<&str> {
    filter
        .fields
        .as_ref()?
        .requirements
        .iter()
        .find(|r| r.field == TRIGGER_FIELD && !r.negated && !r.value.is_empty())
        .map(|r| r.value.as_str())
}

/// Every watcher, and which may see an event: those without a trigger, and those filed under
/// the event's object's (or its previous state's) node.
#[derive(Default)]
struct Watchers {
    all: HashMap<u64, Watcher>,
    untriggered: BTreeSet<u64>,
    by_trigger: HashMap<String, Vec<u64>>,
}

impl Watchers {
    fn insert(&mut self, id: u64, w: Watcher) {
        match trigger_of(&w.filter) {
            Some(v) => self.by_trigger.entry(v.to_string()).or_default().push(id),
            None => {
                self.untriggered.insert(id);
            }
        }
        self.all.insert(id, w);
    }

    fn remove(&mut self, id: u64) {
        let Some(w) = self.all.remove(&id) else {
            return;
        };
        match trigger_of(&w.filter) {
            Some(v) => {
                if let Some(ids) = self.by_trigger.get_mut(v) {
                    ids.retain(|x| *x != id);
                    if ids.is_empty() {
                        self.by_trigger.remove(v);
                    }
                }
            }
            None => {
                self.untriggered.remove(&id);
            }
        }
    }

    fn clear(&mut self) {
        *self = Watchers::default();
    }

    fn len(&self) -> usize {
        self.all.len()
    }

    /// The ids of the watchers that may see `e` (each once).
    fn candidates(&self, e: &CacheEvent, out: &mut Vec<u64>) {
        out.clear();
        out.extend(self.untriggered.iter().copied());
        if self.by_trigger.is_empty() {
            return;
        }
        let now = e
            .object
            .object
            .field(TRIGGER_FIELD)
            .filter(|v| !v.is_empty());
        let before = e
            .prev
            .as_ref()
            .and_then(|p| p.object.field(TRIGGER_FIELD))
            .filter(|v| !v.is_empty() && Some(v) != now.as_ref());
        for v in now.iter().chain(before.iter()) {
            if let Some(ids) = self.by_trigger.get(v) {
                out.extend(ids.iter().copied());
            }
        }
    }
}

/// One kind's objects: a hash index by `(namespace, name)` for the reads and writes of single
/// objects, and the keys in order for lists. (A B-tree alone costs dozens of string comparisons
/// per lookup at 100,000 objects, and every create and binding does several.)
#[derive(Default)]
struct KindObjects {
    by_key: HashMap<(String, String), Arc<CachedObject>>,
    order: BTreeSet<(String, String)>,
}

impl KindObjects {
    fn get(&self, key: &dyn ObjectKey) -> Option<&Arc<CachedObject>> {
        self.by_key.get(key)
    }

    /// Stores `obj`; returns the object it replaced.
    fn put(&mut self, obj: Arc<CachedObject>) -> Option<Arc<CachedObject>> {
        let key: &dyn ObjectKey = &(obj.namespace(), obj.name());
        if let Some(slot) = self.by_key.get_mut(key) {
            return Some(std::mem::replace(slot, obj));
        }
        let k = (obj.namespace().to_string(), obj.name().to_string());
        self.order.insert(k.clone());
        self.by_key.insert(k, obj);
        None
    }

    fn remove(&mut self, key: &dyn ObjectKey) -> Option<Arc<CachedObject>> {
        let (k, obj) = self.by_key.remove_entry(key)?;
        self.order.remove(&k);
        Some(obj)
    }

    /// The objects in key order, from `start` on.
    fn range<'a>(
        &'a self,
        start: std::ops::Bound<(String, String)>,
    ) -> impl Iterator<Item = (&'a (String, String), &'a Arc<CachedObject>)> + 'a {
        self.order
            .range((start, std::ops::Bound::Unbounded))
            .filter_map(|k| self.by_key.get(k).map(|o| (k, o)))
    }
}

/// A `(namespace, name)` key, owned or borrowed, so that lookups in [`KindObjects`] need not
/// build an owned key (two allocations on every read and write of an object).
trait ObjectKey {
    fn parts(&self) -> (&str, &str);
}

impl ObjectKey for (String, String) {
    fn parts(&self) -> (&str, &str) {
        (&self.0, &self.1)
    }
}

impl ObjectKey for (&str, &str) {
    fn parts(&self) -> (&str, &str) {
        (self.0, self.1)
    }
}

impl<'a> std::borrow::Borrow<dyn ObjectKey + 'a> for (String, String) {
    fn borrow(&self) -> &(dyn ObjectKey + 'a) {
        self
    }
}

// Ordered as the owned tuple is, as `Borrow` requires.
impl PartialEq for dyn ObjectKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn ObjectKey + '_ {}

impl PartialOrd for dyn ObjectKey + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn ObjectKey + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.parts().cmp(&other.parts())
    }
}

// Hashed as the owned tuple is, as `Borrow` requires.
impl Hash for dyn ObjectKey + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state)
    }
}

struct State {
    /// Revision of the last applied batch.
    rev: u64,
    /// Objects by kind, then `(namespace, name)`.
    objects: HashMap<Arc<str>, KindObjects>,
    history: VecDeque<Arc<CacheEvent>>,
    /// Bytes of the JSON of the objects in `history`.
    history_bytes: usize,
    /// Every event after this revision is in `history`.
    history_from: u64,
    watchers: Watchers,
    next_watcher: u64,
    /// Set at shutdown: no new watches.
    closed: bool,
}

/// Objects being written through this server, by store key: `(id, stored JSON, typed value)`.
type Expected = HashMap<Bytes, Vec<(u64, Bytes, Arc<dyn ErasedObject>)>>;

/// The API server's in-memory copy of the store.
#[derive(Clone)]
pub struct WatchCache {
    // Locks: `state` or `expected`, never both, never held across an await.
    state: Arc<RwLock<State>>,
    expected: Arc<Mutex<Expected>>,
    next_expected: Arc<AtomicU64>,
    applied: watch::Sender<u64>,
    kinds: Kinds,
    history_cap: usize,
    history_bytes_cap: usize,
    watch_queue: usize,
}

impl std::fmt::Debug for WatchCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchCache").finish_non_exhaustive()
    }
}

/// A new watch: the events it starts with, then the live channel.
pub struct WatchStart {
    pub initial: Vec<WatchItem>,
    pub rx: mpsc::Receiver<WatchItem>,
    pub id: u64,
}

impl WatchCache {
    pub fn new(kinds: Kinds, history_cap: usize, watch_queue: usize) -> Self {
        WatchCache {
            state: Arc::new(RwLock::new(State {
                rev: 0,
                objects: HashMap::new(),
                history: VecDeque::new(),
                history_bytes: 0,
                history_from: 0,
                watchers: Watchers::default(),
                next_watcher: 1,
                closed: false,
            })),
            expected: Arc::default(),
            next_expected: Arc::default(),
            applied: watch::Sender::new(0),
            kinds,
            history_cap,
            history_bytes_cap: usize::MAX,
            watch_queue,
        }
    }

    /// Bounds the window of recent changes by the bytes of their objects' JSON too.
    pub fn with_history_bytes(mut self, bytes: usize) -> Self {
        self.history_bytes_cap = bytes;
        self
    }

    /// The bytes of JSON the window of recent changes holds.
    pub fn history_bytes(&self) -> usize {
        self.read().history_bytes
    }

    /// Announces a write of `value` (the typed `object` encoded) under `key`: until the returned
    /// guard drops, a change that stores exactly `value` under `key` is cached as `object`
    /// instead of being decoded again. Keep the guard until the write's revision is applied.
    pub fn expect(&self, key: Bytes, value: Bytes, object: Arc<dyn ErasedObject>) -> ExpectedWrite {
        let id = self.next_expected.fetch_add(1, Ordering::Relaxed);
        self.lock_expected()
            .entry(key.clone())
            .or_default()
            .push((id, value, object));
        ExpectedWrite {
            expected: self.expected.clone(),
            key,
            id,
        }
    }

    fn lock_expected(&self) -> std::sync::MutexGuard<'_, Expected> {
        self.expected.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The typed object a writer announced for exactly this key and stored JSON.
    fn expected_object(&self, kv: &KeyValue) -> Option<Arc<dyn ErasedObject>> {
        let expected = self.lock_expected();
        let writes = expected.get(&kv.key)?;
        writes
            .iter()
            .find(|(_, value, _)| *value == kv.value)
            .map(|(_, _, object)| object.clone())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Decodes a stored key-value into a cached object (with `resourceVersion` = `rev`).
    pub fn decode(&self, kv: &KeyValue, rev: u64) -> Result<Arc<CachedObject>, Status> {
        let ops = self.kinds.for_key(&kv.key).ok_or_else(|| {
            Status::internal(format!(
                "no kind for stored key {}",
                String::from_utf8_lossy(&kv.key)
            ))
        })?;
        // The typed object keeps an empty resourceVersion: the version is `CachedObject::rv`, and
        // the JSON clients see carries it.
        let object = match self.expected_object(kv) {
            Some(object) => object,
            None => ops.decode(&kv.value)?,
        };
        let json = crate::kinds::render_with_rv(&**ops, &*object, &kv.value, rev)?;
        Ok(Arc::new(CachedObject {
            kind: ops.id().clone(),
            key: kv.key.clone(),
            rv: rev,
            object,
            json,
        }))
    }

    /// Loads the full state read from the store at `rev`.
    pub fn load(&self, kvs: &[KeyValue], rev: u64) {
        let mut decoded = Vec::with_capacity(kvs.len());
        for kv in kvs {
            match self.decode(kv, kv.mod_revision) {
                Ok(o) => decoded.push(o),
                Err(e) => tracing::error!(
                    key = %String::from_utf8_lossy(&kv.key),
                    error = %e,
                    "skipping undecodable stored object"
                ),
            }
        }
        let mut st = self.write();
        st.objects.clear();
        for o in decoded {
            st.objects.entry(o.kind.clone()).or_default().put(o);
        }
        st.rev = rev;
        st.history.clear();
        st.history_bytes = 0;
        st.history_from = rev;
        drop(st);
        self.applied.send_replace(rev);
    }

    /// Applies consecutive committed batches from the change feed under one lock, waking the
    /// writers waiting for any of them once.
    pub fn apply(&self, batches: &[ChangeBatch]) {
        let Some(last) = batches.last() else { return };
        // Decode outside the lock.
        let mut decoded = Vec::with_capacity(batches.iter().map(|b| b.changes.len()).sum());
        for batch in batches {
            self.decode_batch(batch, &mut decoded);
        }
        let mut st = self.write();
        let mut slow = Vec::new();
        let mut candidates = Vec::new();
        for (rev, kind, obj) in decoded {
            let map = st.objects.entry(obj.kind.clone()).or_default();
            let (etype, prev) = match kind {
                ChangeKind::Put => match map.put(obj.clone()) {
                    Some(prev) => (EventType::Modified, Some(prev)),
                    None => (EventType::Added, None),
                },
                ChangeKind::Delete => (
                    EventType::Deleted,
                    map.remove(&(obj.namespace(), obj.name())),
                ),
            };
            let event = Arc::new(CacheEvent {
                rev,
                kind: etype,
                object: obj,
                prev,
            });
            st.watchers.candidates(&event, &mut candidates);
            for id in &candidates {
                let Some(w) = st.watchers.all.get(id) else {
                    continue;
                };
                // A watcher that missed an event gets nothing after it (it resumes from the
                // last event it has, so a later one would hide the gap).
                if let Some(t) = w.filter.translate(&event)
                    && !slow.contains(id)
                    && w.tx.try_send((t, event.object.clone())).is_err()
                {
                    slow.push(*id);
                }
            }
            st.history_bytes += event.object.json.len();
            st.history.push_back(event);
        }
        for id in slow {
            // Dropping the sender ends the watch; the client resumes from its last version.
            st.watchers.remove(id);
            tracing::debug!(watcher = id, "dropped a watcher that fell behind");
        }
        while st.history.len() > self.history_cap || st.history_bytes > self.history_bytes_cap {
            let Some(e) = st.history.pop_front() else {
                break;
            };
            st.history_bytes -= e.object.json.len();
            st.history_from = e.rev;
        }
        st.rev = last.revision;
        drop(st);
        self.applied.send_replace(last.revision);
    }

    /// Decodes one batch's changes into `(revision, kind, object)`.
    fn decode_batch(
        &self,
        batch: &ChangeBatch,
        decoded: &mut Vec<(u64, ChangeKind, Arc<CachedObject>)>,
    ) {
        for c in &batch.changes {
            let obj = match c.kind {
                ChangeKind::Put => self.decode(&c.kv, batch.revision),
                // A deleted object is reported in its last state, at the delete's revision.
                ChangeKind::Delete => match &c.prev {
                    Some(prev) => self.decode(prev, batch.revision),
                    None => continue,
                },
            };
            match obj {
                Ok(o) => decoded.push((batch.revision, c.kind.clone(), o)),
                Err(e) => tracing::error!(
                    key = %String::from_utf8_lossy(&c.kv.key),
                    error = %e,
                    "skipping undecodable change"
                ),
            }
        }
    }

    /// The revision of the last applied change.
    pub fn revision(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until the cache has applied `rev`.
    pub async fn wait_for(&self, rev: u64) {
        let mut rx = self.applied.subscribe();
        let _ = rx.wait_for(|r| *r >= rev).await;
    }

    /// One object.
    pub fn get(&self, kind: &Arc<str>, namespace: &str, name: &str) -> Option<Arc<CachedObject>> {
        self.read()
            .objects
            .get(kind)?
            .get(&(namespace, name) as &dyn ObjectKey)
            .cloned()
    }

    /// Every object matching `filter`, in `(namespace, name)` order, after `continue_after`, at
    /// most `limit` (0: all). Returns the items, the revision of the read, and whether more
    /// remain.
    pub fn list(
        &self,
        filter: &Filter,
        continue_after: Option<&(String, String)>,
        limit: usize,
    ) -> (Vec<Arc<CachedObject>>, u64, bool) {
        let st = self.read();
        let mut out = Vec::new();
        let mut more = false;
        if let Some(map) = st.objects.get(&filter.kind) {
            use std::ops::Bound;
            let start = match (continue_after, &filter.namespace) {
                (Some(after), _) => Bound::Excluded(after.clone()),
                (None, Some(ns)) => Bound::Included((ns.clone(), String::new())),
                (None, None) => Bound::Unbounded,
            };
            let iter = map.range(start);
            for ((ns, _), o) in iter {
                if let Some(want) = &filter.namespace
                    && ns != want
                {
                    if ns > want {
                        break;
                    }
                    continue;
                }
                if filter.matches(o) {
                    if limit > 0 && out.len() == limit {
                        more = true;
                        break;
                    }
                    out.push(o.clone());
                }
            }
        }
        (out, st.rev, more)
    }

    /// Every object of a kind in a namespace (for namespace deletion).
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<CachedObject>> {
        let st = self.read();
        st.objects
            .values()
            .flat_map(|m| {
                m.range(std::ops::Bound::Included((
                    namespace.to_string(),
                    String::new(),
                )))
                .take_while(|((ns, _), _)| ns == namespace)
                .map(|(_, o)| o.clone())
            })
            .collect()
    }

    /// Starts a watch after `from` (`None`: the current state as ADDED events first).
    pub fn watch(&self, filter: Filter, from: Option<u64>) -> Result<WatchStart, Status> {
        let mut st = self.write();
        if st.closed {
            return Err(Status::new(
                drover_api::Reason::ServiceUnavailable,
                "the API server is shutting down",
            ));
        }
        let mut initial = Vec::new();
        match from {
            None => {
                if let Some(map) = st.objects.get(&filter.kind) {
                    initial.extend(
                        map.range(std::ops::Bound::Unbounded)
                            .map(|(_, o)| o)
                            .filter(|o| filter.matches(o))
                            .map(|o| (EventType::Added, o.clone())),
                    );
                }
            }
            Some(rv) if rv >= st.rev => {}
            Some(rv) if rv < st.history_from => {
                return Err(Status::expired(format!(
                    "too old resource version: {rv} (oldest available is {})",
                    st.history_from
                )));
            }
            Some(rv) => {
                let start = st.history.partition_point(|e| e.rev <= rv);
                initial.extend(
                    st.history
                        .range(start..)
                        .filter_map(|e| filter.translate(e).map(|t| (t, e.object.clone()))),
                );
            }
        }
        let (tx, rx) = mpsc::channel(self.watch_queue);
        let id = st.next_watcher;
        st.next_watcher += 1;
        st.watchers.insert(id, Watcher { filter, tx });
        Ok(WatchStart { initial, rx, id })
    }

    /// Ends every watch (their streams finish) and refuses new ones: for shutdown, so that
    /// long-lived watch connections do not hold the server open.
    pub fn close_watchers(&self) {
        let mut st = self.write();
        st.closed = true;
        st.watchers.clear();
    }

    /// Ends a watch.
    pub fn unwatch(&self, id: u64) {
        self.write().watchers.remove(id);
    }

    /// The current revision if `rx` holds no undelivered event, for a bookmark. Taken under the
    /// lock so no event at or before the revision can still be on its way.
    pub fn bookmark_revision(&self, rx: &mpsc::Receiver<WatchItem>) -> Option<u64> {
        let st = self.read();
        rx.is_empty().then_some(st.rev)
    }

    /// Number of open watches.
    pub fn watcher_count(&self) -> usize {
        self.read().watchers.len()
    }
}

/// The identifier the cache uses for a kind.
pub fn kind_id(group: &str, plural: &str) -> Arc<str> {
    Arc::from(format!("{group}/{plural}"))
}

#[cfg(test)]
mod tests {
    use drover_api::Resource;
    use drover_api::core::Pod;

    use super::*;
    use crate::storage::Change;

    fn put(key: &Bytes, value: &Bytes, rev: u64) -> ChangeBatch {
        ChangeBatch {
            revision: rev,
            changes: vec![Change {
                kind: ChangeKind::Put,
                kv: KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: rev,
                    mod_revision: rev,
                },
                prev: None,
            }],
        }
    }

    fn pod(name: &str, image: &str) -> (Bytes, Bytes, Arc<dyn ErasedObject>) {
        let mut p = Pod::default();
        p.metadata.namespace = "default".into();
        p.metadata.name = name.into();
        p.spec.containers = vec![drover_api::core::Container {
            name: "main".into(),
            image: image.into(),
            ..Default::default()
        }];
        p.set_type_meta();
        let key = crate::keys::object_key(&Pod::info(), "default", name);
        let value = Bytes::from(serde_json::to_vec(&p).unwrap());
        (Bytes::from(key), value, Arc::new(p))
    }

    fn cached(cache: &WatchCache, name: &str) -> Arc<CachedObject> {
        cache
            .get(&kind_id(Pod::GROUP, Pod::PLURAL), "default", name)
            .expect("cached")
    }

    #[test]
    fn an_announced_write_is_cached_as_its_typed_object_without_decoding() {
        let cache = WatchCache::new(Kinds::new(), 100, 100);
        let (key, value, object) = pod("a", "img:1");
        let guard = cache.expect(key.clone(), value.clone(), object.clone());
        cache.apply(&[put(&key, &value, 1)]);
        let got = cached(&cache, "a");
        assert!(
            Arc::ptr_eq(&got.object, &object),
            "the announced object is reused"
        );
        assert_eq!(got.rv, 1);
        assert!(
            std::str::from_utf8(&got.json)
                .unwrap()
                .contains("\"resourceVersion\":\"1\"")
        );

        // Another value under the same key (someone else's write) is decoded, not mistaken for
        // the announced one.
        let (_, other, _) = pod("a", "img:2");
        cache.apply(&[put(&key, &other, 2)]);
        let got = cached(&cache, "a");
        assert!(!Arc::ptr_eq(&got.object, &object));
        let p: &Pod = got.object.as_any().downcast_ref().unwrap();
        assert_eq!(p.spec.containers[0].image, "img:2");

        // Once the guard drops, the announcement is gone: nothing is kept per write.
        drop(guard);
        cache.apply(&[put(&key, &value, 3)]);
        assert!(!Arc::ptr_eq(&cached(&cache, "a").object, &object));
        assert!(cache.lock_expected().is_empty());
    }

    #[test]
    fn batches_applied_together_keep_order_and_end_a_watcher_that_falls_behind() {
        // Room for one event per watcher.
        let cache = WatchCache::new(Kinds::new(), 100, 1);
        let filter = Filter {
            kind: kind_id(Pod::GROUP, Pod::PLURAL),
            ..Default::default()
        };
        let mut w = cache.watch(filter, None).expect("watch");
        let batches: Vec<ChangeBatch> = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let (key, value, _) = pod(n, "img");
                put(&key, &value, i as u64 + 1)
            })
            .collect();
        cache.apply(&batches);
        assert_eq!(cache.revision(), 3);
        assert_eq!(cached(&cache, "c").rv, 3);
        // The watcher got the first event, missed the second, and is ended: it never sees the
        // third (which would make it resume after the gap).
        let (t, first) = w.rx.try_recv().expect("first event");
        assert_eq!((t, first.rv), (EventType::Added, 1));
        assert!(matches!(
            w.rx.try_recv(),
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected)
        ));
        assert_eq!(cache.watcher_count(), 0);
    }

    #[test]
    fn the_window_of_recent_changes_is_bounded_by_bytes() {
        let (key, first, _) = pod("a", "img:0");
        // Room for about three versions of the object (each carries its resourceVersion too).
        let cap = 3 * (first.len() + 32);
        let cache = WatchCache::new(Kinds::new(), 1000, 100).with_history_bytes(cap);
        for rev in 1..=10u64 {
            let (_, value, _) = pod("a", &format!("img:{rev}"));
            cache.apply(&[put(&key, &value, rev)]);
            assert!(
                cache.history_bytes() <= cap,
                "{} > {cap}",
                cache.history_bytes()
            );
        }
        let kept = cache.read().history.len();
        assert!((1..=3).contains(&kept), "{kept} events kept");
        assert_eq!(cache.history_bytes(), {
            let st = cache.read();
            st.history
                .iter()
                .map(|e| e.object.json.len())
                .sum::<usize>()
        });
        let filter = || Filter {
            kind: kind_id(Pod::GROUP, Pod::PLURAL),
            ..Default::default()
        };
        // A watch from before the window is told to relist; one inside it gets what followed.
        let err = cache.watch(filter(), Some(2)).err().expect("expired");
        assert_eq!(err.reason, drover_api::Reason::Expired, "{err:?}");
        let w = cache
            .watch(filter(), Some(9))
            .expect("watch inside the window");
        assert_eq!(w.initial.len(), 1);
        assert_eq!(w.initial[0].1.rv, 10);
    }

    #[test]
    fn two_announced_writes_of_one_key_each_find_their_own_object() {
        let cache = WatchCache::new(Kinds::new(), 100, 100);
        let (key, v1, o1) = pod("b", "img:1");
        let (_, v2, o2) = pod("b", "img:2");
        let g1 = cache.expect(key.clone(), v1.clone(), o1.clone());
        let g2 = cache.expect(key.clone(), v2.clone(), o2.clone());
        cache.apply(&[put(&key, &v2, 1)]);
        assert!(Arc::ptr_eq(&cached(&cache, "b").object, &o2));
        cache.apply(&[put(&key, &v1, 2)]);
        assert!(Arc::ptr_eq(&cached(&cache, "b").object, &o1));
        drop(g1);
        assert_eq!(cache.lock_expected().get(&key).map(Vec::len), Some(1));
        drop(g2);
        assert!(cache.lock_expected().is_empty());
    }

    fn bound(name: &str, node: &str) -> (Bytes, Bytes, Arc<dyn ErasedObject>) {
        let (key, _, _) = pod(name, "img");
        let mut p = Pod::default();
        p.metadata.namespace = "default".into();
        p.metadata.name = name.into();
        p.spec.node_name = node.into();
        p.set_type_meta();
        let value = Bytes::from(serde_json::to_vec(&p).unwrap());
        (key, value, Arc::new(p))
    }

    /// Watchers filed under a node see exactly the events a scan of every filter would give
    /// them: their pods arriving, changing and leaving (a pod moved away is DELETED for the old
    /// node's watcher), and nothing of other nodes; a watcher without a trigger sees everything.
    #[test]
    fn watchers_by_node_see_what_their_filters_select() {
        let cache = WatchCache::new(Kinds::new(), 100, 100);
        let kind = kind_id(Pod::GROUP, Pod::PLURAL);
        let on = |node: &str| Filter {
            kind: kind.clone(),
            fields: Some(FieldSelector::parse(&format!("spec.nodeName={node}")).unwrap()),
            ..Default::default()
        };
        let mut n1 = cache.watch(on("n1"), None).expect("watch");
        let mut n2 = cache.watch(on("n2"), None).expect("watch");
        let mut all = cache
            .watch(
                Filter {
                    kind: kind.clone(),
                    ..Default::default()
                },
                None,
            )
            .expect("watch");
        let steps = [
            ("a", ""),
            ("a", "n1"),
            ("b", "n2"),
            ("a", "n1"),
            ("a", "n2"),
        ];
        for (rev, (name, node)) in steps.iter().enumerate() {
            let (key, value, _) = bound(name, node);
            cache.apply(&[put(&key, &value, rev as u64 + 1)]);
        }
        let drain = |w: &mut WatchStart| {
            let mut got = Vec::new();
            while let Ok((t, o)) = w.rx.try_recv() {
                got.push(format!("{t:?} {}@{}", o.name(), o.rv));
            }
            got
        };
        assert_eq!(drain(&mut n1), ["Added a@2", "Modified a@4", "Deleted a@5"]);
        assert_eq!(drain(&mut n2), ["Added b@3", "Added a@5"]);
        assert_eq!(drain(&mut all).len(), 5);
        cache.unwatch(n1.id);
        cache.unwatch(n2.id);
        assert_eq!(cache.read().watchers.by_trigger.len(), 0);
        assert_eq!(cache.read().watchers.len(), 1);
    }
}
