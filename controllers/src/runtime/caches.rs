//! Informer caches shared by every controller: one list+watch per kind, fanned out to each
//! controller's handlers. Controllers register handlers first; [`Caches::start`] then starts the
//! informers, and [`Caches::wait_synced`] waits for their first lists.

use std::future::Future;
use std::sync::{Arc, RwLock};

use drover_api::Resource;
use drover_api::batch::Job;
use drover_api::coordination::Lease;
use drover_api::core::{Node, Pod};
use drover_api::scheduling::PodGroup;
use drover_client::informer::{Cache, Change, Informer};
use drover_client::{Client, ListParams};

type Handler<T> = Arc<dyn Fn(&Change<T>) + Send + Sync>;

/// Handlers of one kind.
pub struct Fanout<T> {
    // Lock order: only this lock; written while registering, read by the informer task.
    handlers: Arc<RwLock<Vec<Handler<T>>>>,
}

impl<T> Clone for Fanout<T> {
    fn clone(&self) -> Self {
        Fanout {
            handlers: self.handlers.clone(),
        }
    }
}

impl<T> Default for Fanout<T> {
    fn default() -> Self {
        Fanout {
            handlers: Arc::new(RwLock::new(Vec::new())),
        }
    }
}

impl<T: Resource> Fanout<T> {
    /// Calls `f` for every change of the kind.
    pub fn subscribe(&self, f: impl Fn(&Change<T>) + Send + Sync + 'static) {
        self.handlers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::new(f));
    }

    fn publish(&self, change: &Change<T>) {
        let handlers = self
            .handlers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for h in handlers {
            h(change);
        }
    }
}

/// One kind: its informer (until started), cache and handlers.
pub struct Shared<T: Resource> {
    informer: std::sync::Mutex<Option<Informer<T>>>,
    pub cache: Cache<T>,
    pub changes: Fanout<T>,
}

impl<T: Resource> Shared<T> {
    fn new(client: &Client, params: ListParams, namespace: Option<&str>) -> Self {
        let api = match namespace {
            Some(ns) => client.namespaced::<T>(ns),
            None => client.all::<T>(),
        };
        let changes = Fanout::<T>::default();
        let fan = changes.clone();
        let informer = Informer::new(api, params).on_change(move |c| fan.publish(c));
        Shared {
            cache: informer.cache(),
            informer: std::sync::Mutex::new(Some(informer)),
            changes,
        }
    }

    fn start(&self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let informer = self
            .informer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(i) = informer {
            i.spawn(shutdown);
        }
    }
}

/// Every cache the controllers read.
pub struct Caches {
    pub pods: Shared<Pod>,
    pub nodes: Shared<Node>,
    pub jobs: Shared<Job>,
    pub pod_groups: Shared<PodGroup>,
    /// Node leases only (in the node-lease namespace).
    pub node_leases: Shared<Lease>,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches").finish_non_exhaustive()
    }
}

impl Caches {
    pub fn new(client: &Client, node_lease_namespace: &str) -> Self {
        let all = ListParams::default();
        Caches {
            pods: Shared::new(client, all.clone(), None),
            nodes: Shared::new(client, all.clone(), None),
            jobs: Shared::new(client, all.clone(), None),
            pod_groups: Shared::new(client, all.clone(), None),
            node_leases: Shared::new(client, all, Some(node_lease_namespace)),
        }
    }

    /// Starts every informer; each stops when `shutdown` resolves.
    pub fn start(&self, stop: &super::Stop) {
        self.pods.start(stop.wait());
        self.nodes.start(stop.wait());
        self.jobs.start(stop.wait());
        self.pod_groups.start(stop.wait());
        self.node_leases.start(stop.wait());
    }

    /// Waits until every cache holds its first list.
    pub async fn wait_synced(&self) {
        self.pods.cache.wait_synced().await;
        self.nodes.cache.wait_synced().await;
        self.jobs.cache.wait_synced().await;
        self.pod_groups.cache.wait_synced().await;
        self.node_leases.cache.wait_synced().await;
    }
}
