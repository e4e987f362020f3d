//! The garbage collector: owner references and deletion propagation.
//!
//! - Background: a dependent whose owners are all gone is deleted (an owner missing from the
//!   cache is checked with a live read first, so a slow watch never deletes a new object's
//!   dependents).
//! - Foreground: an owner marked for deletion with the `foregroundDeletion` finalizer has its
//!   dependents deleted; once none remain, the finalizer is removed (and the server deletes it).
//! - Orphan: an owner marked with the `orphan` finalizer has its reference stripped from every
//!   dependent, then the finalizer removed.
//!
//! Owners and dependents are the kinds the controllers cache: Jobs and PodGroups own; pods and
//! PodGroups depend. It runs on the controller runtime, one key per object (`Kind/namespace/name`,
//! see [`key`]): an object is queued when it becomes a dependent or changes owners, when an owner
//! starts or finishes being deleted, when one of its dependents goes, and — the dependents, found
//! through the caches' owner-uid index — when an owner is deleted.

use std::sync::Arc;

use drover_api::Resource;
use drover_api::batch::Job;
use drover_api::core::{Node, Pod};
use drover_api::meta::{ObjectMeta, OwnerReference};
use drover_api::scheduling::PodGroup;
use drover_client::informer::Change;
use drover_client::{Client, ClientError, DeleteParams};

use crate::runtime::{Action, Caches, QueueHandle, Reconciler};

pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
pub const ORPHAN_FINALIZER: &str = "orphan";

/// The work-queue key of an object: `Kind/namespace/name`.
pub fn key(kind: &str, meta: &ObjectMeta) -> String {
    format!("{kind}/{}/{}", meta.namespace, meta.name)
}

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("{kind} {namespace}/{name}: {source}")]
    Api {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<ClientError>,
    },
    #[error("garbage collector key {0:?} is not Kind/namespace/name of a Job, PodGroup or Pod")]
    Key(Box<str>),
}

pub struct GarbageCollector {
    client: Client,
    caches: Arc<Caches>,
}

/// A dependent of any cached kind.
#[derive(Clone, Debug)]
enum Dependent {
    Pod(Arc<Pod>),
    PodGroup(Arc<PodGroup>),
}

impl Dependent {
    fn meta(&self) -> &ObjectMeta {
        match self {
            Dependent::Pod(p) => &p.metadata,
            Dependent::PodGroup(g) => &g.metadata,
        }
    }

    fn info(&self) -> drover_api::KindInfo {
        match self {
            Dependent::Pod(_) => Pod::info(),
            Dependent::PodGroup(_) => PodGroup::info(),
        }
    }

    /// The API target of this dependent.
    fn target(&self) -> drover_client::proto::Target {
        let m = self.meta();
        drover_client::target(&self.info(), Some(&m.namespace), &m.name, "")
    }

    /// Wraps a client error with what it was about.
    fn err(&self, source: ClientError) -> GcError {
        let m = self.meta();
        GcError::Api {
            kind: self.info().kind,
            namespace: m.namespace.clone(),
            name: m.name.clone(),
            source: Box::new(source),
        }
    }
}

fn gc_err<T: Resource>(meta: &ObjectMeta) -> impl Fn(ClientError) -> GcError + '_ {
    move |source| GcError::Api {
        kind: T::KIND,
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        source: Box::new(source),
    }
}

/// Queues the dependents of `uid` (a deleted owner: they may be orphans now).
fn queue_dependents(caches: &Caches, q: &QueueHandle, uid: &str) {
    for p in caches.pods_owned_by(uid) {
        q.add(key(Pod::KIND, &p.metadata));
    }
    for g in caches.pod_groups_owned_by(uid) {
        q.add(key(PodGroup::KIND, &g.metadata));
    }
}

/// Queues the owners of a deleted dependent this collector reconciles (one waiting on its
/// dependents in foreground deletion may be done now).
fn queue_owners(q: &QueueHandle, meta: &ObjectMeta) {
    for o in &meta.owner_references {
        if o.kind == Job::KIND || o.kind == PodGroup::KIND {
            q.add(format!("{}/{}/{}", o.kind, meta.namespace, o.name));
        }
    }
}

/// Whether a dependent's change may change what the collector decides about it: it is new, or
/// its owners changed. (Owners going away queue their dependents themselves.)
fn owners_changed(old: Option<&ObjectMeta>, new: &ObjectMeta) -> bool {
    !new.owner_references.is_empty()
        && old.is_none_or(|o| o.owner_references != new.owner_references)
}

impl GarbageCollector {
    pub fn new(client: Client, caches: Arc<Caches>) -> Self {
        GarbageCollector { client, caches }
    }

    /// Subscribes to the caches; see the module documentation for what queues what.
    pub fn watch(&self, queue: &QueueHandle) {
        let (q, caches) = (queue.clone(), self.caches.clone());
        self.caches
            .jobs
            .changes
            .subscribe(move |c: &Change<Job>| match c {
                Change::Applied { new, .. } if new.metadata.deletion_timestamp.is_some() => {
                    q.add(key(Job::KIND, &new.metadata));
                }
                Change::Deleted(j) => queue_dependents(&caches, &q, &j.metadata.uid),
                _ => {}
            });
        let (q, caches) = (queue.clone(), self.caches.clone());
        self.caches
            .pod_groups
            .changes
            .subscribe(move |c: &Change<PodGroup>| match c {
                Change::Applied { old, new } => {
                    if new.metadata.deletion_timestamp.is_some()
                        || owners_changed(old.as_ref().map(|o| &o.metadata), &new.metadata)
                    {
                        q.add(key(PodGroup::KIND, &new.metadata));
                    }
                }
                Change::Deleted(g) => {
                    queue_dependents(&caches, &q, &g.metadata.uid);
                    queue_owners(&q, &g.metadata);
                }
                Change::Synced => {}
            });
        let (q, caches) = (queue.clone(), self.caches.clone());
        self.caches
            .pods
            .changes
            .subscribe(move |c: &Change<Pod>| match c {
                Change::Applied { old, new } => {
                    if owners_changed(old.as_ref().map(|o| &o.metadata), &new.metadata) {
                        q.add(key(Pod::KIND, &new.metadata));
                    }
                }
                Change::Deleted(p) => {
                    queue_dependents(&caches, &q, &p.metadata.uid);
                    queue_owners(&q, &p.metadata);
                }
                Change::Synced => {}
            });
        let (q, caches) = (queue.clone(), self.caches.clone());
        self.caches
            .nodes
            .changes
            .subscribe(move |c: &Change<Node>| {
                if let Change::Deleted(n) = c {
                    queue_dependents(&caches, &q, &n.metadata.uid);
                }
            });
    }

    /// The cached dependents of `owner` (same namespace, an owner reference to its uid).
    fn dependents_of(&self, owner: &ObjectMeta) -> Vec<Dependent> {
        let same_ns = |m: &ObjectMeta| m.namespace == owner.namespace;
        let mut out: Vec<Dependent> = self
            .caches
            .pods_owned_by(&owner.uid)
            .into_iter()
            .filter(|p| same_ns(&p.metadata))
            .map(Dependent::Pod)
            .collect();
        out.extend(
            self.caches
                .pod_groups_owned_by(&owner.uid)
                .into_iter()
                .filter(|g| same_ns(&g.metadata))
                .map(Dependent::PodGroup),
        );
        out
    }

    /// Deletes a dependent whose owners are all gone.
    async fn collect_if_orphaned(&self, d: &Dependent) -> Result<(), GcError> {
        let m = d.meta();
        if m.owner_references.is_empty() || m.deletion_timestamp.is_some() {
            return Ok(());
        }
        for o in &m.owner_references {
            if self.owner_exists(&m.namespace, o).await? {
                return Ok(());
            }
        }
        tracing::info!(dependent = %m.name, "owners gone; deleting dependent");
        self.delete_dependent(d, "Background").await
    }

    /// Whether the owner still exists (cache first, then a live read).
    async fn owner_exists(&self, namespace: &str, o: &OwnerReference) -> Result<bool, GcError> {
        let cached = match o.kind.as_str() {
            "Job" => self
                .caches
                .jobs
                .cache
                .get_named(namespace, &o.name)
                .map(|j| j.metadata.uid.clone()),
            "PodGroup" => self
                .caches
                .pod_groups
                .cache
                .get_named(namespace, &o.name)
                .map(|g| g.metadata.uid.clone()),
            "Pod" => self
                .caches
                .pods
                .cache
                .get_named(namespace, &o.name)
                .map(|p| p.metadata.uid.clone()),
            "Node" => self
                .caches
                .nodes
                .cache
                .get(&o.name)
                .map(|n| n.metadata.uid.clone()),
            // Kinds this collector does not watch keep their dependents.
            _ => return Ok(true),
        };
        if cached.as_deref() == Some(o.uid.as_str()) {
            return Ok(true);
        }
        let meta = ObjectMeta::named(namespace, &o.name);
        let live = match o.kind.as_str() {
            "Job" => self
                .client
                .namespaced::<Job>(namespace)
                .get_opt(&o.name)
                .await
                .map_err(gc_err::<Job>(&meta))?
                .map(|j| j.metadata.uid),
            "PodGroup" => self
                .client
                .namespaced::<PodGroup>(namespace)
                .get_opt(&o.name)
                .await
                .map_err(gc_err::<PodGroup>(&meta))?
                .map(|g| g.metadata.uid),
            "Pod" => self
                .client
                .namespaced::<Pod>(namespace)
                .get_opt(&o.name)
                .await
                .map_err(gc_err::<Pod>(&meta))?
                .map(|p| p.metadata.uid),
            _ => self
                .client
                .all::<drover_api::core::Node>()
                .get_opt(&o.name)
                .await
                .map_err(gc_err::<drover_api::core::Node>(&meta))?
                .map(|n| n.metadata.uid),
        };
        Ok(live.as_deref() == Some(o.uid.as_str()))
    }

    /// An owner being deleted: orphan or delete its dependents as its finalizer asks.
    async fn propagate<T: Resource>(&self, owner: &T) -> Result<(), GcError> {
        let m = owner.meta();
        let mine = self.dependents_of(m);
        let finalizers = &m.finalizers;
        if finalizers.iter().any(|f| f == ORPHAN_FINALIZER) {
            for d in &mine {
                self.strip_owner(d, &m.uid).await?;
            }
            return self.remove_finalizer(owner, ORPHAN_FINALIZER).await;
        }
        if finalizers.iter().any(|f| f == FOREGROUND_FINALIZER) {
            for d in &mine {
                if d.meta().deletion_timestamp.is_none() {
                    // Dependents go in the background: pods have no dependents of their own to wait for.
                    self.delete_dependent(d, "Background").await?;
                }
            }
            if mine.is_empty() {
                return self.remove_finalizer(owner, FOREGROUND_FINALIZER).await;
            }
        }
        Ok(())
    }

    async fn delete_dependent(&self, d: &Dependent, policy: &str) -> Result<(), GcError> {
        let m = d.meta();
        // The dependent is deleted only as the collector saw it: if it changed since (an orphaning
        // pass stripped its owner reference, say), the server answers Conflict and it stays.
        let params = DeleteParams {
            propagation_policy: Some(policy.into()),
            precondition_uid: Some(m.uid.clone()),
            precondition_resource_version: Some(m.resource_version.clone())
                .filter(|rv| !rv.is_empty()),
            ..Default::default()
        };
        let r = self
            .client
            .delete_raw(d.target(), &params)
            .await
            .map(|_| ())
            .map_err(|e| d.err(e));
        match r {
            Err(GcError::Api { source, .. }) if source.is_not_found() || source.is_conflict() => {
                Ok(())
            }
            r => r,
        }
    }

    async fn strip_owner(&self, d: &Dependent, uid: &str) -> Result<(), GcError> {
        let m = d.meta();
        let refs: Vec<OwnerReference> = m
            .owner_references
            .iter()
            .filter(|o| o.uid != uid)
            .cloned()
            .collect();
        let patch = serde_json::json!({"metadata": {"ownerReferences": refs}});
        let body =
            serde_json::to_vec(&patch).map_err(|e| d.err(ClientError::Encode(e.to_string())))?;
        let r = self
            .client
            .patch_raw(d.target(), body)
            .await
            .map(|_| ())
            .map_err(|e| d.err(e));
        match r {
            Err(GcError::Api { source, .. }) if source.is_not_found() => Ok(()),
            r => r,
        }
    }

    async fn remove_finalizer<T: Resource>(
        &self,
        owner: &T,
        finalizer: &str,
    ) -> Result<(), GcError> {
        let mut o = owner.clone();
        o.meta_mut().finalizers.retain(|f| f != finalizer);
        let m = owner.meta();
        let api = if T::NAMESPACED {
            self.client.namespaced::<T>(&m.namespace)
        } else {
            self.client.all::<T>()
        };
        match api.update(&o).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
            Err(e) => Err(gc_err::<T>(m)(e)),
        }
    }
}

impl Reconciler for GarbageCollector {
    const NAME: &'static str = "garbage-collector";
    type Error = GcError;

    async fn reconcile(&self, key: &str) -> Result<Action, GcError> {
        let Some((kind, at)) = key.split_once('/') else {
            return Err(GcError::Key(key.into()));
        };
        match kind {
            "Job" => {
                if let Some(job) = self.caches.jobs.cache.get(at)
                    && job.metadata.deletion_timestamp.is_some()
                {
                    self.propagate::<Job>(&job).await?;
                }
            }
            "PodGroup" => {
                if let Some(pg) = self.caches.pod_groups.cache.get(at) {
                    if pg.metadata.deletion_timestamp.is_some() {
                        self.propagate::<PodGroup>(&pg).await?;
                    }
                    self.collect_if_orphaned(&Dependent::PodGroup(pg)).await?;
                }
            }
            "Pod" => {
                if let Some(p) = self.caches.pods.cache.get(at) {
                    self.collect_if_orphaned(&Dependent::Pod(p)).await?;
                }
            }
            _ => return Err(GcError::Key(key.into())),
        }
        Ok(Action::AwaitChange)
    }

    fn error_policy(&self, _key: &str, error: &GcError) -> Option<Action> {
        // A malformed key never gets better; API errors retry with the queue's backoff.
        matches!(error, GcError::Key(_)).then_some(Action::AwaitChange)
    }
}
