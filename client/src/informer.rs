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

use std::collections::HashMap;
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

/// The cached objects of one kind. Cheap to clone; readers never wait on the network.
pub struct Cache<T> {
    // Lock order: only this lock; never held across an await or a handler call.
    objects: Arc<RwLock<HashMap<String, Arc<T>>>>,
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
            objects: Arc::new(RwLock::new(HashMap::new())),
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

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<T>>> {
        self.objects.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<T>>> {
        self.objects.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The object at `key` (`namespace/name` or `name`).
    pub fn get(&self, key: &str) -> Option<Arc<T>> {
        self.read().get(key).cloned()
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
        self.read().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
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
        let mut fresh: HashMap<String, Arc<T>> = items
            .into_iter()
            .map(|o| (object_key(&o), Arc::new(o)))
            .collect();
        let mut changes = Vec::new();
        {
            let mut map = self.write();
            for (key, old) in map.iter() {
                if !fresh.contains_key(key) {
                    changes.push(Change::Deleted(old.clone()));
                }
            }
            for (key, new) in &fresh {
                match map.get(key) {
                    Some(old) if old.meta().resource_version == new.meta().resource_version => {}
                    old => changes.push(Change::Applied {
                        old: old.cloned(),
                        new: new.clone(),
                    }),
                }
            }
            std::mem::swap(&mut *map, &mut fresh);
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
