//! Delete: marks an object for deletion while finalizers (or a running pod) remain, else removes
//! it; a deleted namespace takes everything in it along.

use bytes::Bytes;
use drover_api::core::Namespace;
use drover_api::error::Reason;
use drover_api::{Resource, Status};

use super::commit::Outcome;
use super::request::{Delete, DeleteOptions};
use super::{ApiService, PATCH_RETRIES, Resolved, SYSTEM_NAMESPACES, now, store_err};
use crate::cache::CachedObject;
use crate::keys;
use crate::storage::{Op, Txn};
use crate::write::{FOREGROUND_FINALIZER, ORPHAN_FINALIZER};

impl ApiService {
    /// Deletes an object, or marks it for deletion when finalizers (or a running pod) remain.
    pub(super) async fn delete(&self, req: &Delete) -> Result<Bytes, Status> {
        let o = &req.options;
        let r = self.resolve(&req.target)?;
        Self::need_name(&r)?;
        Self::need_namespace(&r)?;
        if !r.subresource.is_empty() {
            return Err(Status::new(
                Reason::MethodNotAllowed,
                "delete of a subresource is not supported",
            ));
        }
        if r.info.kind == Namespace::KIND && SYSTEM_NAMESPACES.contains(&r.name.as_str()) {
            return Err(Status::forbidden(format!(
                "namespace {:?} is a system namespace and may not be deleted",
                r.name
            )));
        }
        let finalizer = check_options(o)?;
        for _ in 0..PATCH_RETRIES {
            let old = self.get_cached(&r)?;
            check_preconditions(&r, o, &old)?;
            let graceful = finalizer.is_some()
                || r.info.kind == Namespace::KIND
                || r.ops.deletion_is_graceful(&old, o.grace_period_seconds)?;
            let outcome = if graceful {
                let p =
                    r.ops
                        .prepare_mark_deleted(&old, now(), o.grace_period_seconds, finalizer)?;
                self.finish_update(&r, &old, p).await?
            } else {
                self.remove(&old).await?
            };
            match outcome {
                Outcome::Written(json) => {
                    if r.info.kind == Namespace::KIND {
                        self.spawn_namespace_cleanup(r.name.clone());
                    }
                    return Ok(json);
                }
                Outcome::Conflict => continue,
            }
        }
        Err(Status::conflict(
            r.info.plural,
            &r.name,
            "the object kept changing; try again",
        ))
    }

    /// Deletes everything in a namespace being terminated, then the namespace itself.
    fn spawn_namespace_cleanup(&self, namespace: String) {
        let svc = self.clone();
        tokio::spawn(async move {
            if let Err(e) = svc.cleanup_namespace(&namespace).await {
                tracing::warn!(namespace = %namespace, error = %e, "namespace cleanup failed");
            }
        });
    }

    async fn cleanup_namespace(&self, namespace: &str) -> Result<(), Status> {
        for obj in self.cache.in_namespace(namespace) {
            let txn = Txn {
                compares: vec![],
                ops: vec![Op::Delete {
                    key: obj.key.clone(),
                }],
            };
            self.store.txn(txn).await.map_err(store_err)?;
        }
        let info = Namespace::info();
        let key = Bytes::from(keys::object_key(&info, "", namespace));
        let res = self
            .store
            .txn(Txn {
                compares: vec![],
                ops: vec![Op::Delete { key }],
            })
            .await
            .map_err(store_err)?;
        self.cache.wait_for(res.revision).await;
        Ok(())
    }
}

/// Checks a delete's options; returns the finalizer its propagation policy leaves on the object
/// for the garbage collector.
fn check_options(o: &DeleteOptions) -> Result<Option<&'static str>, Status> {
    let finalizer = match o.propagation_policy.as_str() {
        "" | "Background" => None,
        "Foreground" => Some(FOREGROUND_FINALIZER),
        "Orphan" => Some(ORPHAN_FINALIZER),
        other => {
            return Err(Status::bad_request(format!(
                "propagationPolicy: {other:?} is not supported: expected Background, Foreground or Orphan"
            )));
        }
    };
    if let Some(g) = o.grace_period_seconds
        && g < 0
    {
        return Err(Status::bad_request(format!(
            "gracePeriodSeconds: {g}: expected a non-negative number"
        )));
    }
    Ok(finalizer)
}

/// The caller's preconditions (uid, resourceVersion) against the object as read.
fn check_preconditions(
    r: &Resolved<'_>,
    o: &DeleteOptions,
    old: &CachedObject,
) -> Result<(), Status> {
    let meta = old.object.meta();
    if !o.precondition_uid.is_empty() && o.precondition_uid != meta.uid {
        return Err(Status::conflict(
            r.info.plural,
            &r.name,
            &format!(
                "precondition failed: uid in precondition: {}, uid in object: {}",
                o.precondition_uid, meta.uid
            ),
        ));
    }
    if !o.precondition_resource_version.is_empty()
        && o.precondition_resource_version != old.rv.to_string()
    {
        return Err(Status::conflict(
            r.info.plural,
            &r.name,
            &format!(
                "precondition failed: resourceVersion in precondition: {}, resourceVersion in object: {}",
                o.precondition_resource_version, old.rv
            ),
        ));
    }
    Ok(())
}
