//! Create, update (replace) and merge patch: decode, default and validate ([`crate::write`]),
//! admit ([`crate::admission`]), then commit ([`super::commit`]).

use bytes::Bytes;
use drover_api::core::Namespace;
use drover_api::error::Reason;
use drover_api::{KindInfo, Resource, Status};

use super::commit::Outcome;
use super::request::{Create, Patch, Update};
use super::{ApiService, PATCH_RETRIES, Resolved, now};
use crate::admission::Operation;
use crate::cache::kind_id;
use crate::write::{Prepared, UpdateScope};

const MODIFIED: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

impl ApiService {
    pub(super) async fn create(&self, req: &Create) -> Result<Bytes, Status> {
        let r = self.resolve(&req.target)?;
        Self::need_namespace(&r)?;
        if !r.subresource.is_empty() || !r.name.is_empty() {
            return Err(Status::new(
                Reason::MethodNotAllowed,
                "create is a POST to the collection",
            ));
        }
        // The one decode of the body: the typed object it gives travels to the store and the
        // watch cache (`Prepared::object`).
        let p = r.ops.prepare_create(&req.body, &r.namespace, now())?;
        let p = self.admit(&r, Operation::Create, p)?;
        self.check_namespace_open(&r.info, &p.namespace)?;
        match self.put(&r, &p, 0).await? {
            Outcome::Written(json) => Ok(json),
            Outcome::Conflict => Err(Status::already_exists(r.info.plural, &p.name).about(
                r.info.group,
                r.info.kind,
                &p.name,
            )),
        }
    }

    /// Objects may only be created in a namespace that exists and is not being deleted.
    fn check_namespace_open(&self, info: &KindInfo, namespace: &str) -> Result<(), Status> {
        if !info.namespaced {
            return Ok(());
        }
        let ns = self
            .cache
            .get(&kind_id("", Namespace::PLURAL), "", namespace)
            .ok_or_else(|| Status::not_found("namespaces", namespace))?;
        if ns.object.meta().deletion_timestamp.is_some() {
            return Err(Status::forbidden(format!(
                "namespace {namespace:?} is being terminated: no new objects may be created in it"
            )));
        }
        Ok(())
    }

    /// The admission hook: every create and every update of an object (not of its status)
    /// passes the admission chain after validation, before it is stored.
    fn admit(&self, r: &Resolved<'_>, op: Operation, p: Prepared) -> Result<Prepared, Status> {
        crate::admission::Chain::standard().admit(op, &r.info, &self.cache, p)
    }

    fn admit_update(
        &self,
        r: &Resolved<'_>,
        scope: UpdateScope,
        p: Prepared,
    ) -> Result<Prepared, Status> {
        match scope {
            UpdateScope::Object => self.admit(r, Operation::Update, p),
            // Status is the system's report, not a request: nothing to admit.
            UpdateScope::Status => Ok(p),
        }
    }

    /// Whether an update or patch is of the object or of its status (`verb` names it in the
    /// refusal of any other subresource).
    fn update_scope(r: &Resolved<'_>, verb: &str) -> Result<UpdateScope, Status> {
        match r.subresource.as_str() {
            "status" => Ok(UpdateScope::Status),
            "" => Ok(UpdateScope::Object),
            _ => Err(Status::new(
                Reason::MethodNotAllowed,
                format!("{verb} of this subresource is not supported"),
            )),
        }
    }

    pub(super) async fn update(&self, req: &Update) -> Result<Bytes, Status> {
        let r = self.resolve(&req.target)?;
        Self::need_name(&r)?;
        Self::need_namespace(&r)?;
        let scope = Self::update_scope(&r, "update")?;
        let old = self.get_cached(&r)?;
        let p = r.ops.prepare_update(&req.body, &old, scope)?;
        let p = self.admit_update(&r, scope, p)?;
        match self.finish_update(&r, &old, p).await? {
            Outcome::Written(json) => Ok(json),
            Outcome::Conflict => Err(Status::conflict(r.info.plural, &r.name, MODIFIED)),
        }
    }

    /// Applies a JSON merge patch.
    pub(super) async fn patch(&self, req: &Patch) -> Result<Bytes, Status> {
        let r = self.resolve(&req.target)?;
        Self::need_name(&r)?;
        Self::need_namespace(&r)?;
        let scope = Self::update_scope(&r, "patch")?;
        let patch: serde_json::Value = serde_json::from_slice(&req.patch)
            .map_err(|e| Status::bad_request(format!("the patch is not valid JSON: {e}")))?;
        if !patch.is_object() {
            return Err(Status::bad_request("a merge patch must be a JSON object"));
        }
        let pinned = patch
            .pointer("/metadata/resourceVersion")
            .is_some_and(|v| !v.is_null());
        for _ in 0..PATCH_RETRIES {
            let old = self.get_cached(&r)?;
            let mut doc: serde_json::Value = serde_json::from_slice(&old.json)
                .map_err(|e| Status::internal(format!("stored object is not JSON: {e}")))?;
            crate::merge_patch::apply(&mut doc, &patch);
            let body = serde_json::to_vec(&doc).map_err(|e| Status::internal(e.to_string()))?;
            let p = r.ops.prepare_update(&body, &old, scope)?;
            let p = self.admit_update(&r, scope, p)?;
            match self.finish_update(&r, &old, p).await? {
                Outcome::Written(json) => return Ok(json),
                Outcome::Conflict if !pinned => continue,
                Outcome::Conflict => break,
            }
        }
        Err(Status::conflict(r.info.plural, &r.name, MODIFIED))
    }
}
