//! Informers: a local cache of one kind, kept current by list + watch, with resume after
//! disconnects and a relist when the watch's version has been compacted.
//!
//! The cache update is a pure step ([`Cache::apply`], [`Cache::replace`]) that tests drive without
//! a server; [`Informer::run`] is the loop around it that talks to the API server.
//!
//! A cache also says how current its view is ([`Cache::view`]): whether its watch is up, and
//! how many times the view became current again after a break (a failed list or watch, an
//! expired version). Readers that judge time since something last changed (the node-lifecycle
//! controller's lease renewals) use it not to mistake "I could not see it" for "it did not
//! change".
//!
//! A cache may also keep **indexes** ([`Cache::add_index`]), as client-go's indexers do: named
//! functions that file each object under some values (the node a pod is bound to, the uids of its
//! owners), so a controller reads "the pods on node n" without scanning every pod.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use super::{Api, ClientError, ListParams, WatchEvent};
use drover_api::error::Reason;
use drover_api::resource::Resource;

/// First wait after a failed list or watch.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between retries.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// `namespace/name`, or `name` for cluster-scoped objects.
pub fn object_key<T: Resource>(obj: &T) -> String {
    let m = obj.meta();
    if m.namespace.is_empty() {
        m.name.clone()
    } else {
        format!("{}/{}", m.namespace, m.name)
    }
}

/// What changed in the cache.
#[derive(Debug)]
pub enum Change<T> {
    /// An object appeared or changed; `old` is what the cache held before.
    Applied { old: Option<Arc<T>>, new: Arc<T> },
    /// An object went away (the last state the cache saw).
    Deleted(Arc<T>),
    /// The cache holds the complete state as of a list (first sync, or after a relist).
    Synced,
}

impl<T> Change<T> {
    /// The object the change is about (`None` for [`Change::Synced`]).
    pub fn object(&self) -> Option<&Arc<T>> {
        match self {
            Change::Applied { new, .. } => Some(new),
            Change::Deleted(o) => Some(o),
            Change::Synced => None,
        }
    }
}

/// How current a cache's view is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// How many times the view became current after being broken (the first list counts).
    pub generation: u64,
    /// Whether the view is current now: listed, and the watch after it up.
    pub current: bool,
}

#[derive(Default)]
struct ViewState {
    generation: AtomicU64,
    current: AtomicBool,
}

/// What an index files an object under (none, one or several values).
pub type IndexFn<T> = Arc<dyn Fn(&T) -> Vec<String> + Send + Sync>;

/// One index: value -> keys of the objects filed under it.
struct Index<T> {
    name: &'static str,
    values_of: IndexFn<T>,
    keys: HashMap<String, HashSet<String>>,
}

impl<T> Index<T> {
    fn file(&mut self, key: &str, obj: &T) {
        for v in (self.values_of)(obj) {
            self.keys.entry(v).or_default().insert(key.to_string());
        }
    }

    fn unfile(&mut self, key: &str, obj: &T) {
        for v in (self.values_of)(obj) {
            if let Some(set) = self.keys.get_mut(&v) {
                set.remove(key);
                if set.is_empty() {
                    self.keys.remove(&v);
                }
            }
        }
    }
}

/// The objects and their indexes, kept together under one lock so they never disagree.
struct Store<T> {
    objects: HashMap<String, Arc<T>>,
    indexes: Vec<Index<T>>,
}

impl<T> Store<T> {
    fn insert(&mut self, key: String, new: Arc<T>) -> Option<Arc<T>> {
        let old = self.objects.insert(key.clone(), new.clone());
        for index in &mut self.indexes {
            if let Some(o) = &old {
                index.unfile(&key, o);
            }
            index.file(&key, &new);
        }
        old
    }

    fn remove(&mut self, key: &str) -> Option<Arc<T>> {
        let old = self.objects.remove(key)?;
        for index in &mut self.indexes {
            index.unfile(key, &old);
        }
        Some(old)
    }

    fn index(&self, name: &str) -> Option<&Index<T>> {
        self.indexes.iter().find(|i| i.name == name)
    }
}

/// The cached objects of one kind. Cheap to clone; readers never wait on the network.
pub struct Cache<T> {
    // Lock order: only this lock; never held across an await or a handler call.
    objects: Arc<RwLock<Store<T>>>,
    synced: watch::Sender<bool>,
    view: Arc<ViewState>,
}

impl<T> Clone for Cache<T> {
    fn clone(&self) -> Self {
        Cache {
            objects: self.objects.clone(),
            synced: self.synced.clone(),
            view: self.view.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Cache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").finish_non_exhaustive()
    }
}

impl<T: Resource> Default for Cache<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Resource> Cache<T> {
    pub fn new() -> Self {
        Cache {
            objects: Arc::new(RwLock::new(Store {
                objects: HashMap::new(),
                indexes: Vec::new(),
            })),
            synced: watch::Sender::new(false),
            view: Arc::default(),
        }
    }

    /// How current the view is (see [`View`]).
    pub fn view(&self) -> View {
        View {
            generation: self.view.generation.load(Ordering::Acquire),
            current: self.view.current.load(Ordering::Acquire),
        }
    }

    /// Records that changes may be going unseen (the list or watch failed). The informer calls
    /// it; so may tests that drive a cache by hand.
    pub fn mark_broken(&self) {
        self.view.current.store(false, Ordering::Release);
    }

    /// Records that the view is current again (a list loaded, or a watch resumed after a
    /// break); starts a new [`View::generation`] if it was broken.
    pub fn mark_current(&self) {
        if !self.view.current.swap(true, Ordering::AcqRel) {
            self.view.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Store<T>> {
        self.objects.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Store<T>> {
        self.objects.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds the index `name`: every object, now and later, is filed under the values
    /// `values_of` gives it. Adding a name twice replaces the first.
    pub fn add_index(
        &self,
        name: &'static str,
        values_of: impl Fn(&T) -> Vec<String> + Send + Sync + 'static,
    ) {
        let mut index = Index {
            name,
            values_of: Arc::new(values_of),
            keys: HashMap::new(),
        };
        let mut store = self.write();
        for (key, obj) in &store.objects {
            index.file(key, obj);
        }
        store.indexes.retain(|i| i.name != name);
        store.indexes.push(index);
    }

    /// The objects filed under `value` in the index `name` (none when there is no such index).
    pub fn by_index(&self, name: &str, value: &str) -> Vec<Arc<T>> {
        let store = self.read();
        let Some(keys) = store.index(name).and_then(|i| i.keys.get(value)) else {
            return Vec::new();
        };
        keys.iter()
            .filter_map(|k| store.objects.get(k).cloned())
            .collect()
    }

    /// Every value of the index `name` that has at least one object filed under it.
    pub fn index_values(&self, name: &str) -> Vec<String> {
        self.read()
            .index(name)
            .map(|i| i.keys.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The object at `key` (`namespace/name` or `name`).
    pub fn get(&self, key: &str) -> Option<Arc<T>> {
        self.read().objects.get(key).cloned()
    }

    /// The object `name` in `namespace` ("" for cluster-scoped kinds).
    pub fn get_named(&self, namespace: &str, name: &str) -> Option<Arc<T>> {
        if namespace.is_empty() {
            self.get(name)
        } else {
            self.get(&format!("{namespace}/{name}"))
        }
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<Arc<T>> {
        self.read().objects.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.read().objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().objects.is_empty()
    }

    /// Whether the first list has been loaded.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the first list has been loaded.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        // An error means every sender is gone: nothing will ever sync, so stop waiting.
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Applies one watch event; returns the change, if it is one.
    pub fn apply(&self, event: WatchEvent<T>) -> Option<Change<T>> {
        match event {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                let new = Arc::new(o);
                let old = self.write().insert(object_key(&*new), new.clone());
                Some(Change::Applied { old, new })
            }
            WatchEvent::Deleted(o) => {
                let removed = self.write().remove(&object_key(&o));
                Some(Change::Deleted(removed.unwrap_or_else(|| Arc::new(o))))
            }
            WatchEvent::Bookmark(_) | WatchEvent::Error(_) => None,
        }
    }

    /// Replaces the whole content with a fresh list; returns what changed, ending with
    /// [`Change::Synced`].
    pub fn replace(&self, items: Vec<T>) -> Vec<Change<T>> {
        let fresh: HashMap<String, Arc<T>> = items
            .into_iter()
            .map(|o| (object_key(&o), Arc::new(o)))
            .collect();
        let mut changes = Vec::new();
        {
            let mut store = self.write();
            let gone: Vec<String> = store
                .objects
                .keys()
                .filter(|k| !fresh.contains_key(*k))
                .cloned()
                .collect();
            for key in gone {
                if let Some(old) = store.remove(&key) {
                    changes.push(Change::Deleted(old));
                }
            }
            for (key, new) in fresh {
                match store.objects.get(&key) {
                    Some(old) if old.meta().resource_version == new.meta().resource_version => {}
                    _ => {
                        let old = store.insert(key, new.clone());
                        changes.push(Change::Applied { old, new });
                    }
                }
            }
        }
        changes.push(Change::Synced);
        // A relist is a new view even when the watch never looked broken.
        self.mark_broken();
        self.mark_current();
        self.synced.send_replace(true);
        changes
    }
}

/// A callback told of every change.
type Handler<T> = Box<dyn Fn(&Change<T>) + Send + Sync>;

/// Keeps a [`Cache`] of one kind current and tells handlers what changed.
pub struct Informer<T: Resource> {
    api: Api<T>,
    params: ListParams,
    cache: Cache<T>,
    handlers: Vec<Handler<T>>,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl<T: Resource> std::fmt::Debug for Informer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Informer")
            .field("kind", &T::KIND)
            .field("params", &self.params)
            .finish()
    }
}

impl<T: Resource> Informer<T> {
    pub fn new(api: Api<T>, params: ListParams) -> Self {
        Informer {
            api,
            params,
            cache: Cache::new(),
            handlers: Vec::new(),
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }

    /// The cache this informer fills.
    pub fn cache(&self) -> Cache<T> {
        self.cache.clone()
    }

    /// Calls `f` for every change, on the informer's task, in order. Keep it quick (push a key
    /// onto a work queue).
    pub fn on_change(mut self, f: impl Fn(&Change<T>) + Send + Sync + 'static) -> Self {
        self.handlers.push(Box::new(f));
        self
    }

    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    fn publish(&self, change: &Change<T>) {
        for h in &self.handlers {
            h(change);
        }
    }

    /// Runs until `shutdown` completes: list, then watch from the list's version; on a dropped
    /// watch, resume from the last version seen; on `Expired`, list again.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        tokio::select! {
            _ = &mut shutdown => {}
            _ = self.run_forever() => {}
        }
    }

    /// Spawns [`run`](Self::run) on the current runtime; returns the cache.
    pub fn spawn(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Cache<T> {
        let cache = self.cache();
        tokio::spawn(self.run(shutdown));
        cache
    }

    async fn run_forever(&self) {
        let mut backoff = self.initial_backoff;
        loop {
            let list = match self.api.list_all(&self.params).await {
                Ok(l) => l,
                Err(e) => {
                    self.cache.mark_broken();
                    tracing::warn!(kind = T::KIND, error = %e, "list failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.max_backoff);
                    continue;
                }
            };
            let mut rv = list.metadata.resource_version.clone();
            for change in self.cache.replace(list.items) {
                self.publish(&change);
            }
            // Watch until the version expires; reconnect from the last version seen otherwise.
            loop {
                match self.watch_once(&mut rv).await {
                    WatchEnd::Expired => {
                        self.cache.mark_broken();
                        break;
                    }
                    WatchEnd::Closed => backoff = self.initial_backoff,
                    WatchEnd::Failed(e) => {
                        self.cache.mark_broken();
                        tracing::debug!(kind = T::KIND, error = %e, "watch failed; resuming");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(self.max_backoff);
                    }
                }
            }
        }
    }

    async fn watch_once(&self, rv: &mut String) -> WatchEnd {
        let stream = match self.api.watch(&self.params, rv).await {
            Ok(s) => s,
            Err(e) if e.reason() == Some(Reason::Expired) => return WatchEnd::Expired,
            Err(e) => return WatchEnd::Failed(Box::new(e)),
        };
        // Resumed from the last version seen: what was missed arrives first, on this stream.
        self.cache.mark_current();
        tokio::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(WatchEvent::Bookmark(v)) => *rv = v,
                Ok(WatchEvent::Error(s)) if s.reason == Reason::Expired => {
                    return WatchEnd::Expired;
                }
                Ok(WatchEvent::Error(s)) => return WatchEnd::Failed(Box::new(ClientError::Api(s))),
                Ok(event) => {
                    if let WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) =
                        &event
                    {
                        *rv = o.meta().resource_version.clone();
                    }
                    if let Some(change) = self.cache.apply(event) {
                        self.publish(&change);
                    }
                }
                Err(e) if e.reason() == Some(Reason::Expired) => return WatchEnd::Expired,
                Err(e) => return WatchEnd::Failed(Box::new(e)),
            }
        }
        WatchEnd::Closed
    }
}

enum WatchEnd {
    Expired,
    Closed,
    Failed(Box<ClientError>),
}

#[cfg(test)]
mod tests {
    use drover_api::core::Pod;

    use super::*;

    fn pod(name: &str, node: &str, rv: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = "ns".into();
        p.metadata.name = name.into();
        p.metadata.resource_version = rv.into();
        p.spec.node_name = node.into();
        p
    }

    fn names(mut pods: Vec<Arc<Pod>>) -> Vec<String> {
        pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        pods.iter().map(|p| p.metadata.name.clone()).collect()
    }

    fn by_node(p: &Pod) -> Vec<String> {
        if p.spec.node_name.is_empty() {
            Vec::new()
        } else {
            vec![p.spec.node_name.clone()]
        }
    }

    /// The index follows every way an object enters, moves and leaves the cache, and agrees
    /// with a scan of the whole cache at each step.
    #[test]
    fn an_index_follows_adds_moves_deletes_and_relists() {
        let cache = Cache::<Pod>::new();
        cache.apply(WatchEvent::Added(pod("a", "n1", "1")));
        // Added after objects exist: files them too.
        cache.add_index("node", by_node);
        let check = |cache: &Cache<Pod>| {
            for node in ["n1", "n2", "n3"] {
                let scan: Vec<Arc<Pod>> = cache
                    .list()
                    .into_iter()
                    .filter(|p| p.spec.node_name == node)
                    .collect();
                assert_eq!(names(cache.by_index("node", node)), names(scan), "{node}");
            }
        };
        check(&cache);
        cache.apply(WatchEvent::Added(pod("b", "", "2")));
        cache.apply(WatchEvent::Modified(pod("b", "n2", "3")));
        cache.apply(WatchEvent::Added(pod("c", "n2", "4")));
        check(&cache);
        assert_eq!(names(cache.by_index("node", "n2")), ["b", "c"]);
        // A move leaves nothing behind under the old value.
        cache.apply(WatchEvent::Modified(pod("a", "n3", "5")));
        check(&cache);
        assert!(cache.by_index("node", "n1").is_empty());
        cache.apply(WatchEvent::Deleted(pod("c", "n2", "4")));
        check(&cache);
        // A relist that drops b and moves a.
        cache.replace(vec![pod("a", "n1", "6"), pod("d", "n2", "7")]);
        check(&cache);
        let mut values = cache.index_values("node");
        values.sort();
        assert_eq!(values, ["n1", "n2"]);
        assert!(cache.by_index("missing", "n1").is_empty());
    }
}
