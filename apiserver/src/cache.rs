//! The watch cache: every object in memory, indexed by kind and `(namespace, name)`, fed in
//! revision order by the store's change feed, plus a window of recent changes so watches can
//! resume from a resource version.
//!
//! ```text
//! store change feed ──► decode (outside the lock) ──► apply batch (write lock) ──► watchers
//!                                                         │
//!                         get / list / watch-start ◄──────┘ (read lock)
//! ```
//!
//! Writers wait until the cache has applied their revision before they answer, so a client
//! always reads its own writes, and a watcher has the event before the writer's acknowledgement.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};

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

/// One kind's objects by `(namespace, name)`.
type KindObjects = BTreeMap<(String, String), Arc<CachedObject>>;

struct State {
    /// Revision of the last applied batch.
    rev: u64,
    /// Objects by kind, then `(namespace, name)`.
    objects: HashMap<Arc<str>, KindObjects>,
    history: VecDeque<Arc<CacheEvent>>,
    /// Every event after this revision is in `history`.
    history_from: u64,
    watchers: HashMap<u64, Watcher>,
    next_watcher: u64,
    /// Set at shutdown: no new watches.
    closed: bool,
}

/// The API server's in-memory copy of the store.
#[derive(Clone)]
pub struct WatchCache {
    // Lock order: `state` only; never held across an await.
    state: Arc<RwLock<State>>,
    applied: watch::Sender<u64>,
    kinds: Kinds,
    history_cap: usize,
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
                history_from: 0,
                watchers: HashMap::new(),
                next_watcher: 1,
                closed: false,
            })),
            applied: watch::Sender::new(0),
            kinds,
            history_cap,
            watch_queue,
        }
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
        let object = ops.decode(&kv.value)?;
        let json = crate::kinds::render_with_rv(&**ops, &kv.value, rev)?;
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
            let k = (o.namespace().to_string(), o.name().to_string());
            st.objects.entry(o.kind.clone()).or_default().insert(k, o);
        }
        st.rev = rev;
        st.history.clear();
        st.history_from = rev;
        drop(st);
        self.applied.send_replace(rev);
    }

    /// Applies one committed batch from the change feed.
    pub fn apply(&self, batch: &ChangeBatch) {
        // Decode outside the lock.
        let mut decoded = Vec::with_capacity(batch.changes.len());
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
                Ok(o) => decoded.push((c.kind.clone(), o)),
                Err(e) => tracing::error!(
                    key = %String::from_utf8_lossy(&c.kv.key),
                    error = %e,
                    "skipping undecodable change"
                ),
            }
        }
        let mut st = self.write();
        let mut slow = Vec::new();
        for (kind, obj) in decoded {
            let k = (obj.namespace().to_string(), obj.name().to_string());
            let map = st.objects.entry(obj.kind.clone()).or_default();
            let (etype, prev) = match kind {
                ChangeKind::Put => match map.insert(k, obj.clone()) {
                    Some(prev) => (EventType::Modified, Some(prev)),
                    None => (EventType::Added, None),
                },
                ChangeKind::Delete => (EventType::Deleted, map.remove(&k)),
            };
            let event = Arc::new(CacheEvent {
                rev: batch.revision,
                kind: etype,
                object: obj,
                prev,
            });
            for (id, w) in &st.watchers {
                if let Some(t) = w.filter.translate(&event)
                    && w.tx.try_send((t, event.object.clone())).is_err()
                {
                    slow.push(*id);
                }
            }
            st.history.push_back(event);
        }
        for id in slow {
            // Dropping the sender ends the watch; the client resumes from its last version.
            st.watchers.remove(&id);
            tracing::debug!(watcher = id, "dropped a watcher that fell behind");
        }
        while st.history.len() > self.history_cap {
            if let Some(e) = st.history.pop_front() {
                st.history_from = e.rev;
            }
        }
        st.rev = batch.revision;
        drop(st);
        self.applied.send_replace(batch.revision);
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
            .get(&(namespace.to_string(), name.to_string()))
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
            type Entries<'a> =
                Box<dyn Iterator<Item = (&'a (String, String), &'a Arc<CachedObject>)> + 'a>;
            let iter: Entries<'_> = match (continue_after, &filter.namespace) {
                (Some(after), _) => Box::new(map.range((
                    std::ops::Bound::Excluded(after.clone()),
                    std::ops::Bound::Unbounded,
                ))),
                (None, Some(ns)) => Box::new(map.range((ns.clone(), String::new())..)),
                (None, None) => Box::new(map.iter()),
            };
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
                m.range((namespace.to_string(), String::new())..)
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
                        map.values()
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
        self.write().watchers.remove(&id);
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
