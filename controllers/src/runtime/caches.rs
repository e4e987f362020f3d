//! Informer caches shared by every controller: one list+watch per kind, fanned out to each
//! controller's handlers. Controllers register handlers first; [`Caches::start`] then starts the
//! informers, and [`Caches::wait_synced`] waits for their first lists.
//!
//! The pod and pod-group caches keep indexes ([`index`]) so that no controller scans every pod
//! to find the few it is about: the pods on a node, owned by an object, in a gang, finished.

use std::future::Future;
use std::sync::{Arc, RwLock};

use drover_api::Resource;
use drover_api::batch::Job;
use drover_api::coordination::Lease;
use drover_api::core::{Node, Pod};
use drover_api::scheduling::PodGroup;
use drover_client::informer::{Cache, Change, Informer};
use drover_client::{Client, ListParams};

/// Names of the indexes the shared caches keep.
pub mod index {
    /// Pods by the node they are bound to (`spec.nodeName`; unbound pods are not filed).
    pub const NODE: &str = "node";
    /// Pods and pod groups by the uid of each of their owners.
    pub const OWNER_UID: &str = "owner-uid";
    /// Gang members by `namespace/group`.
    pub const POD_GROUP: &str = "pod-group";
    /// Finished pods (`Succeeded` or `Failed`), all under [`FINISHED`].
    pub const TERMINAL: &str = "terminal";
    /// The one value of [`TERMINAL`].
    pub const FINISHED: &str = "finished";
}

fn owner_uids(meta: &drover_api::ObjectMeta) -> Vec<String> {
    meta.owner_references
        .iter()
        .map(|o| o.uid.clone())
        .collect()
}

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
        let caches = Caches {
            pods: Shared::new(client, all.clone(), None),
            nodes: Shared::new(client, all.clone(), None),
            jobs: Shared::new(client, all.clone(), None),
            pod_groups: Shared::new(client, all.clone(), None),
            node_leases: Shared::new(client, all, Some(node_lease_namespace)),
        };
        let pods = &caches.pods.cache;
        pods.add_index(index::NODE, |p: &Pod| {
            p.is_bound()
                .then(|| p.spec.node_name.clone())
                .into_iter()
                .collect()
        });
        pods.add_index(index::OWNER_UID, |p: &Pod| owner_uids(&p.metadata));
        pods.add_index(index::POD_GROUP, |p: &Pod| {
            p.pod_group()
                .map(|g| format!("{}/{g}", p.metadata.namespace))
                .into_iter()
                .collect()
        });
        pods.add_index(index::TERMINAL, |p: &Pod| {
            p.is_terminal()
                .then(|| index::FINISHED.to_string())
                .into_iter()
                .collect()
        });
        caches
            .pod_groups
            .cache
            .add_index(index::OWNER_UID, |g: &PodGroup| owner_uids(&g.metadata));
        caches
    }

    /// The pods bound to `node`.
    pub fn pods_on(&self, node: &str) -> Vec<Arc<Pod>> {
        self.pods.cache.by_index(index::NODE, node)
    }

    /// The names of the nodes that have at least one pod bound to them.
    pub fn nodes_with_pods(&self) -> Vec<String> {
        self.pods.cache.index_values(index::NODE)
    }

    /// The pods with an owner reference to `uid`.
    pub fn pods_owned_by(&self, uid: &str) -> Vec<Arc<Pod>> {
        self.pods.cache.by_index(index::OWNER_UID, uid)
    }

    /// The pod groups with an owner reference to `uid`.
    pub fn pod_groups_owned_by(&self, uid: &str) -> Vec<Arc<PodGroup>> {
        self.pod_groups.cache.by_index(index::OWNER_UID, uid)
    }

    /// The members of the gang `group` in `namespace`.
    pub fn members_of(&self, namespace: &str, group: &str) -> Vec<Arc<Pod>> {
        self.pods
            .cache
            .by_index(index::POD_GROUP, &format!("{namespace}/{group}"))
    }

    /// Every finished pod.
    pub fn finished_pods(&self) -> Vec<Arc<Pod>> {
        self.pods.cache.by_index(index::TERMINAL, index::FINISHED)
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
