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
//! PodGroups depend. A sweep runs after changes (debounced) and every `gc_period`.

use std::sync::Arc;
use std::time::Duration;

use drover_api::Resource;
use drover_api::batch::Job;
use drover_api::core::Pod;
use drover_api::meta::{ObjectMeta, OwnerReference};
use drover_api::scheduling::PodGroup;
use drover_client::{Client, ClientError, DeleteParams};
use tokio::sync::Notify;

use crate::runtime::{Caches, Stop};

pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
pub const ORPHAN_FINALIZER: &str = "orphan";
/// Changes are gathered this long before a sweep.
pub const SWEEP_DEBOUNCE: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("{kind} {namespace}/{name}: {source}")]
    Api {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: ClientError,
    },
}

pub struct GarbageCollector {
    client: Client,
    caches: Arc<Caches>,
    period: Duration,
    wake: Arc<Notify>,
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
            source,
        }
    }
}

fn gc_err<T: Resource>(meta: &ObjectMeta) -> impl Fn(ClientError) -> GcError + '_ {
    move |source| GcError::Api {
        kind: T::KIND,
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        source,
    }
}

impl GarbageCollector {
    pub fn new(client: Client, caches: Arc<Caches>, period: Duration) -> Self {
        let wake = Arc::new(Notify::new());
        let w = wake.clone();
        caches.jobs.changes.subscribe(move |_| w.notify_one());
        let w = wake.clone();
        caches.pod_groups.changes.subscribe(move |_| w.notify_one());
        let w = wake.clone();
        caches.pods.changes.subscribe(move |c| {
            if c.object()
                .is_some_and(|p| !p.metadata.owner_references.is_empty())
            {
                w.notify_one();
            }
        });
        GarbageCollector {
            client,
            caches,
            period,
            wake,
        }
    }

    pub async fn run(self, stop: Stop) {
        loop {
            tokio::select! {
                _ = stop.wait() => return,
                _ = self.wake.notified() => tokio::time::sleep(SWEEP_DEBOUNCE).await,
                _ = tokio::time::sleep(self.period) => {}
            }
            if let Err(e) = self.sweep().await {
                tracing::warn!(error = %e, "garbage collection sweep failed");
            }
        }
    }

    fn dependents(&self) -> Vec<Dependent> {
        let mut out: Vec<Dependent> = self
            .caches
            .pods
            .cache
            .list()
            .into_iter()
            .map(Dependent::Pod)
            .collect();
        out.extend(
            self.caches
                .pod_groups
                .cache
                .list()
                .into_iter()
                .map(Dependent::PodGroup),
        );
        out.retain(|d| !d.meta().owner_references.is_empty());
        out
    }

    /// One pass: propagate owners being deleted, then remove orphans.
    pub async fn sweep(&self) -> Result<(), GcError> {
        let deps = self.dependents();
        for job in self.caches.jobs.cache.list() {
            if job.metadata.deletion_timestamp.is_some() {
                self.propagate::<Job>(&job, &deps).await?;
            }
        }
        for pg in self.caches.pod_groups.cache.list() {
            if pg.metadata.deletion_timestamp.is_some() {
                self.propagate::<PodGroup>(&pg, &deps).await?;
            }
        }
        for d in &deps {
            if d.meta().deletion_timestamp.is_some() {
                continue;
            }
            let mut alive = false;
            for o in &d.meta().owner_references {
                if self.owner_exists(&d.meta().namespace, o).await? {
                    alive = true;
                    break;
                }
            }
            if !alive {
                tracing::info!(dependent = %d.meta().name, "owners gone; deleting dependent");
                self.delete_dependent(d, "Background").await?;
            }
        }
        Ok(())
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

    async fn propagate<T: Resource>(&self, owner: &T, deps: &[Dependent]) -> Result<(), GcError> {
        let m = owner.meta();
        let mine: Vec<&Dependent> = deps
            .iter()
            .filter(|d| d.meta().namespace == m.namespace && d.meta().is_owned_by(&m.uid))
            .collect();
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
