//! The verbs of the API, independent of transport: REST and gRPC both call [`ApiService`].
//!
//! ```text
//! request ─► authenticate ─► resolve kind ─► decode/default/validate (write.rs) ─► admission/
//!         ─► store txn (compare on revision) ─► wait for the watch cache ─► answer
//! ```
//!
//! Reads (get, list, watch) are served from the watch cache and never wait on the store.

use std::sync::Arc;

use bytes::Bytes;
use drover_api::authentication::TokenReview;
use drover_api::core::{Binding, Namespace, Pod};
use drover_api::error::Reason;
use drover_api::resource::split_api_version;
use drover_api::selector::{FieldSelector, Selector};
use drover_api::{KindInfo, Resource, Status};

use crate::admission::Operation;
use crate::agent_credential::AgentCredentials;
use crate::auth::{Authenticator, User};
use crate::cache::{CachedObject, Filter, WatchCache, WatchStart, kind_id};
use crate::config::ServerConfig;
use crate::keys;
use crate::kinds::{KindOps, Kinds, downcast};
use crate::storage::{Compare, Op, Store, Txn};
use crate::write::{FOREGROUND_FINALIZER, ORPHAN_FINALIZER, Prepared, UpdateScope};

/// Namespaces that exist from the first start and may not be deleted.
pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-node-lease"];

/// How many times a server-side read-modify-write (merge patch) retries after a conflict.
const PATCH_RETRIES: usize = 8;

/// What a request is about.
#[derive(Clone, Debug, Default)]
pub struct Target {
    pub api_version: String,
    pub resource: String,
    pub namespace: String,
    pub name: String,
    pub subresource: String,
}

/// Options of list and watch.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    pub label_selector: String,
    pub field_selector: String,
    pub limit: u64,
    pub continue_token: String,
    pub resource_version: String,
    pub allow_bookmarks: bool,
    /// Watches only: end the watch after this long.
    pub timeout: Option<std::time::Duration>,
}

/// Options of delete.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    pub propagation_policy: String,
    pub precondition_resource_version: String,
    pub precondition_uid: String,
    pub grace_period_seconds: Option<i64>,
}

/// A resolved target: the kind and where.
pub struct Resolved<'a> {
    pub ops: &'a Arc<dyn KindOps>,
    pub info: KindInfo,
    pub kind: Arc<str>,
    pub namespace: String,
    pub name: String,
    pub subresource: String,
}

/// The API: every verb, over the store and the watch cache.
#[derive(Clone)]
pub struct ApiService {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) cache: WatchCache,
    pub(crate) kinds: Kinds,
    pub(crate) auth: Authenticator,
    pub(crate) agents: AgentCredentials,
    pub(crate) config: ServerConfig,
}

impl std::fmt::Debug for ApiService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiService").finish_non_exhaustive()
    }
}

fn now() -> drover_api::Time {
    chrono::Utc::now()
}

fn store_err(e: crate::storage::StoreError) -> Status {
    Status::new(Reason::ServiceUnavailable, format!("storage: {e}"))
}

impl ApiService {
    pub fn authenticate(&self, header: Option<&str>) -> Result<User, Status> {
        self.auth.authenticate(header)
    }

    /// The credential presented to node agents (see [`crate::agent_credential`]).
    pub fn agent_credentials(&self) -> &AgentCredentials {
        &self.agents
    }

    pub fn cache(&self) -> &WatchCache {
        &self.cache
    }

    pub fn max_body_bytes(&self) -> usize {
        self.config.max_body_bytes
    }

    /// Finds the kind and checks the namespace/name shape of a request.
    pub fn resolve<'a>(&'a self, t: &Target) -> Result<Resolved<'a>, Status> {
        let (group, _version) = split_api_version(&t.api_version);
        let ops = self.kinds.get(group, &t.resource).ok_or_else(|| {
            Status::new(
                Reason::NotFound,
                format!(
                    "the server does not serve resource {:?} in {:?}",
                    t.resource, t.api_version
                ),
            )
        })?;
        let info = *ops.info();
        if info.api_version() != t.api_version {
            return Err(Status::new(
                Reason::NotFound,
                format!(
                    "the server serves {} as {}, not {}",
                    info.plural,
                    info.api_version(),
                    t.api_version
                ),
            ));
        }
        if !info.namespaced && !t.namespace.is_empty() {
            return Err(Status::bad_request(format!(
                "{} is cluster-scoped: expected no namespace, got {:?}",
                info.kind, t.namespace
            )));
        }
        match t.subresource.as_str() {
            "" => {}
            "status" if info.has_status => {}
            "binding" if info.kind == Pod::KIND => {}
            other => {
                return Err(Status::new(
                    Reason::NotFound,
                    format!("{} has no subresource {other:?}", info.plural),
                ));
            }
        }
        Ok(Resolved {
            ops,
            kind: ops.id().clone(),
            info,
            namespace: t.namespace.clone(),
            name: t.name.clone(),
            subresource: t.subresource.clone(),
        })
    }

    fn get_cached(&self, r: &Resolved<'_>) -> Result<Arc<CachedObject>, Status> {
        self.cache
            .get(&r.kind, &r.namespace, &r.name)
            .ok_or_else(|| {
                Status::not_found(r.info.plural, &r.name).about(r.info.group, r.info.kind, &r.name)
            })
    }

    fn need_name(r: &Resolved<'_>) -> Result<(), Status> {
        if r.name.is_empty() {
            return Err(Status::new(
                Reason::MethodNotAllowed,
                "this verb needs an object name".to_string(),
            ));
        }
        Ok(())
    }

    fn need_namespace(r: &Resolved<'_>) -> Result<(), Status> {
        if r.info.namespaced && r.namespace.is_empty() {
            return Err(Status::bad_request(format!(
                "{} is namespaced: the request needs a namespace",
                r.info.kind
            )));
        }
        Ok(())
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

    /// Writes a prepared object, comparing on the revision the caller read (0: must not exist).
    async fn put(
        &self,
        r: &Resolved<'_>,
        p: &Prepared,
        expect_rev: u64,
    ) -> Result<Result<Bytes, ()>, Status> {
        let key = keys::object_key(&r.info, &p.namespace, &p.name);
        let key = Bytes::from(key);
        let (op, _expected) = if p.finalize_delete {
            (Op::Delete { key: key.clone() }, None)
        } else {
            let expected = self
                .cache
                .expect(key.clone(), p.value.clone(), p.object.clone());
            let op = Op::Put {
                key: key.clone(),
                value: p.value.clone(),
            };
            (op, Some(expected))
        };
        let res = self
            .store
            .txn(Txn {
                compares: vec![Compare::ModRevision {
                    key,
                    revision: expect_rev,
                }],
                ops: vec![op],
            })
            .await
            .map_err(store_err)?;
        if !res.succeeded {
            return Ok(Err(()));
        }
        self.cache.wait_for(res.revision).await;
        if p.finalize_delete {
            // Answer with the object's last state.
            return Ok(Ok(self.render_prepared(r, p, res.revision)));
        }
        match self.cache.get(&r.kind, &p.namespace, &p.name) {
            Some(o) if o.rv == res.revision => Ok(Ok(o.json.clone())),
            // Changed again already: answer with what this write stored.
            _ => Ok(Ok(self.render_prepared(r, p, res.revision))),
        }
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

    fn render_prepared(&self, r: &Resolved<'_>, p: &Prepared, rev: u64) -> Bytes {
        crate::kinds::render_with_rv(&**r.ops, &p.value, rev).unwrap_or_else(|_| p.value.clone())
    }

    pub async fn create(&self, _user: &User, t: &Target, body: &[u8]) -> Result<Bytes, Status> {
        // The plural first: it is a plain comparison, while `api_version()` builds a String.
        if t.resource == TokenReview::PLURAL && t.api_version == TokenReview::api_version() {
            return self.review_token(t, body);
        }
        let r = self.resolve(t)?;
        Self::need_namespace(&r)?;
        if r.subresource == "binding" {
            return self.bind(&r, body).await;
        }
        if !r.subresource.is_empty() || !r.name.is_empty() {
            return Err(Status::new(
                Reason::MethodNotAllowed,
                "create is a POST to the collection",
            ));
        }
        let p = r.ops.prepare_create(body, &r.namespace, now())?;
        let p = self.admit(&r, Operation::Create, p)?;
        self.check_namespace_open(&r.info, &p.namespace)?;
        match self.put(&r, &p, 0).await? {
            Ok(json) => Ok(json),
            Err(()) => Err(Status::already_exists(r.info.plural, &p.name).about(
                r.info.group,
                r.info.kind,
                &p.name,
            )),
        }
    }

    /// A TokenReview: answered, never stored (see [`crate::agent_credential`]).
    fn review_token(&self, t: &Target, body: &[u8]) -> Result<Bytes, Status> {
        if !t.name.is_empty() || !t.subresource.is_empty() || !t.namespace.is_empty() {
            return Err(Status::new(
                Reason::MethodNotAllowed,
                "a TokenReview is a POST to /apis/authentication.k8s.io/v1/tokenreviews",
            ));
        }
        let review: TokenReview = crate::kinds::decode_typed(body)?;
        review
            .validate()
            .map_err(|errs| Status::invalid(TokenReview::KIND, "", &errs))?;
        let mut answer = self
            .agents
            .review(&self.auth, &review, std::time::SystemTime::now());
        answer.set_type_meta();
        serde_json::to_vec(&answer)
            .map(Bytes::from)
            .map_err(|e| Status::internal(format!("cannot encode the TokenReview: {e}")))
    }

    pub async fn get(&self, _user: &User, t: &Target) -> Result<Bytes, Status> {
        let r = self.resolve(t)?;
        Self::need_name(&r)?;
        Ok(self.get_cached(&r)?.json.clone())
    }

    fn filter(&self, r: &Resolved<'_>, o: &ListOptions) -> Result<Filter, Status> {
        let labels = if o.label_selector.trim().is_empty() {
            None
        } else {
            Some(
                Selector::parse(&o.label_selector)
                    .map_err(|e| Status::bad_request(format!("labelSelector: {e}")))?,
            )
        };
        let fields = if o.field_selector.trim().is_empty() {
            None
        } else {
            let f = FieldSelector::parse(&o.field_selector)
                .map_err(|e| Status::bad_request(format!("fieldSelector: {e}")))?;
            r.ops.check_fields(&f)?;
            Some(f)
        };
        Ok(Filter {
            kind: r.kind.clone(),
            namespace: (r.info.namespaced && !r.namespace.is_empty()).then(|| r.namespace.clone()),
            labels,
            fields,
        })
    }

    /// Lists a collection; returns the list object as JSON.
    pub async fn list(&self, _user: &User, t: &Target, o: &ListOptions) -> Result<Bytes, Status> {
        let r = self.resolve(t)?;
        let filter = self.filter(&r, o)?;
        // The cache answers at its own revision, which is never older than the one checked.
        self.not_older_than(&o.resource_version).await?;
        let after = if o.continue_token.is_empty() {
            None
        } else {
            let (ns, name) = o
                .continue_token
                .split_once('/')
                .ok_or_else(|| Status::bad_request("continue: malformed token"))?;
            Some((ns.to_string(), name.to_string()))
        };
        let (items, rev, more) = self.cache.list(&filter, after.as_ref(), o.limit as usize);
        let cont = if more {
            items
                .last()
                .map(|l| format!("{}/{}", l.namespace(), l.name()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(render_list(&r.info, &items, rev, &cont))
    }

    /// The revision a list or watch must not be older than: `None` for "" and "0" (anything
    /// recent), else the number, once the cache has reached it (as Kubernetes, a version the
    /// cache does not reach within 3 s is `Timeout`). Anything else is a bad request.
    async fn not_older_than(&self, resource_version: &str) -> Result<Option<u64>, Status> {
        let rv: u64 = match resource_version {
            "" | "0" => return Ok(None),
            v => v.parse().map_err(|_| {
                Status::bad_request(format!(
                    "resourceVersion: {v:?} is not a valid version: expected a non-negative integer"
                ))
            })?,
        };
        if rv > self.cache.revision() {
            let wait = self.cache.wait_for(rv);
            if tokio::time::timeout(std::time::Duration::from_secs(3), wait)
                .await
                .is_err()
            {
                return Err(Status::new(
                    Reason::Timeout,
                    format!(
                        "too large resource version: {rv}, current: {}",
                        self.cache.revision()
                    ),
                ));
            }
        }
        Ok(Some(rv))
    }

    /// Starts a watch.
    pub async fn watch(
        &self,
        _user: &User,
        t: &Target,
        o: &ListOptions,
    ) -> Result<WatchStart, Status> {
        let r = self.resolve(t)?;
        let filter = self.filter(&r, o)?;
        let from = self.not_older_than(&o.resource_version).await?;
        self.cache.watch(filter, from)
    }

    pub async fn update(&self, _user: &User, t: &Target, body: &[u8]) -> Result<Bytes, Status> {
        let r = self.resolve(t)?;
        Self::need_name(&r)?;
        Self::need_namespace(&r)?;
        let scope = match r.subresource.as_str() {
            "status" => UpdateScope::Status,
            "" => UpdateScope::Object,
            _ => {
                return Err(Status::new(
                    Reason::MethodNotAllowed,
                    "update of this subresource is not supported",
                ));
            }
        };
        let old = self.get_cached(&r)?;
        let p = r.ops.prepare_update(body, &old, scope)?;
        let p = self.admit_update(&r, scope, p)?;
        self.finish_update(&r, &old, p).await?.map_err(|()| {
            Status::conflict(
                r.info.plural,
                &r.name,
                "the object has been modified; please apply your changes to the latest version and try again",
            )
        })
    }

    /// Stores an update (or the final delete of an object whose last finalizer went).
    async fn finish_update(
        &self,
        r: &Resolved<'_>,
        old: &CachedObject,
        p: Prepared,
    ) -> Result<Result<Bytes, ()>, Status> {
        if !p.finalize_delete && unchanged(r, &p, old) {
            // Nothing changed: no write, no event (as Kubernetes does).
            return Ok(Ok(old.json.clone()));
        }
        self.put(r, &p, old.rv).await
    }

    /// Applies a JSON merge patch.
    pub async fn patch(&self, _user: &User, t: &Target, patch: &[u8]) -> Result<Bytes, Status> {
        let r = self.resolve(t)?;
        Self::need_name(&r)?;
        Self::need_namespace(&r)?;
        let scope = match r.subresource.as_str() {
            "status" => UpdateScope::Status,
            "" => UpdateScope::Object,
            _ => {
                return Err(Status::new(
                    Reason::MethodNotAllowed,
                    "patch of this subresource is not supported",
                ));
            }
        };
        let patch: serde_json::Value = serde_json::from_slice(patch)
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
                Ok(json) => return Ok(json),
                Err(()) if !pinned => continue,
                Err(()) => break,
            }
        }
        Err(Status::conflict(
            r.info.plural,
            &r.name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ))
    }

    /// Deletes an object, or marks it for deletion when finalizers (or a running pod) remain.
    pub async fn delete(
        &self,
        _user: &User,
        t: &Target,
        o: &DeleteOptions,
    ) -> Result<Bytes, Status> {
        let r = self.resolve(t)?;
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
        for _ in 0..PATCH_RETRIES {
            let old = self.get_cached(&r)?;
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
            let graceful = finalizer.is_some()
                || r.info.kind == Namespace::KIND
                || r.ops.deletion_is_graceful(&old, o.grace_period_seconds)?;
            let result = if graceful {
                let p =
                    r.ops
                        .prepare_mark_deleted(&old, now(), o.grace_period_seconds, finalizer)?;
                self.finish_update(&r, &old, p).await?
            } else {
                self.remove(&old).await?
            };
            match result {
                Ok(json) => {
                    if r.info.kind == Namespace::KIND {
                        self.spawn_namespace_cleanup(r.name.clone());
                    }
                    return Ok(json);
                }
                Err(()) => continue,
            }
        }
        Err(Status::conflict(
            r.info.plural,
            &r.name,
            "the object kept changing; try again",
        ))
    }

    /// Removes an object from the store, comparing on the revision read.
    async fn remove(&self, old: &CachedObject) -> Result<Result<Bytes, ()>, Status> {
        let res = self
            .store
            .txn(Txn {
                compares: vec![Compare::ModRevision {
                    key: old.key.clone(),
                    revision: old.rv,
                }],
                ops: vec![Op::Delete {
                    key: old.key.clone(),
                }],
            })
            .await
            .map_err(store_err)?;
        if !res.succeeded {
            return Ok(Err(()));
        }
        self.cache.wait_for(res.revision).await;
        Ok(Ok(old.json.clone()))
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

    /// `pods/{name}/binding`: assigns the pod to a node and devices.
    async fn bind(&self, r: &Resolved<'_>, body: &[u8]) -> Result<Bytes, Status> {
        Self::need_name(r)?;
        let binding: Binding = serde_json::from_slice(body)
            .map_err(|e| Status::bad_request(format!("cannot decode Binding: {e}")))?;
        if !binding.metadata.name.is_empty() && binding.metadata.name != r.name {
            return Err(Status::bad_request(format!(
                "metadata.name {:?} does not match the pod on the request ({:?})",
                binding.metadata.name, r.name
            )));
        }
        binding
            .validate()
            .map_err(|e| Status::invalid("Binding", &r.name, &e))?;
        let node_kind = kind_id("", drover_api::core::Node::PLURAL);
        if self
            .cache
            .get(&node_kind, "", &binding.target.name)
            .is_none()
        {
            return Err(Status::not_found("nodes", &binding.target.name));
        }
        let old = self.get_cached(r)?;
        let pod: &Pod = downcast(&*old.object)?;
        if pod.meta().deletion_timestamp.is_some() {
            return Err(Status::conflict(
                "pods",
                &r.name,
                "the pod is being deleted",
            ));
        }
        let mut new = pod.clone();
        binding.apply_to(&mut new).map_err(|e| {
            if new.is_bound() {
                Status::conflict(
                    "pods",
                    &r.name,
                    &format!("pod is already assigned to node {:?}", pod.spec.node_name),
                )
            } else {
                Status::invalid("Binding", &r.name, &e)
            }
        })?;
        // Binding changes spec fields a plain update may not: store the pod as bound.
        let p = crate::write::encode(new, false)?;
        self.put(r, &p, old.rv).await?.map_err(|()| {
            Status::conflict(
                "pods",
                &r.name,
                "the pod changed while it was being bound; try again",
            )
        })
    }

    /// Creates the system namespaces if they are missing.
    pub async fn bootstrap(&self) -> Result<(), Status> {
        let user = User {
            name: "system:apiserver".into(),
            groups: vec![],
        };
        for ns in SYSTEM_NAMESPACES {
            let t = Target {
                api_version: "v1".into(),
                resource: "namespaces".into(),
                ..Default::default()
            };
            let body = serde_json::to_vec(&Namespace::new(*ns))
                .map_err(|e| Status::internal(e.to_string()))?;
            match self.create(&user, &t, &body).await {
                Ok(_) => {}
                Err(e) if e.reason == Reason::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Whether a prepared write would store exactly what is stored now.
fn unchanged(r: &Resolved<'_>, p: &Prepared, old: &CachedObject) -> bool {
    crate::kinds::render_with_rv(&**r.ops, &p.value, old.rv).is_ok_and(|json| json == old.json)
}

/// Renders a list object by splicing the cached JSON of each item.
pub fn render_list(info: &KindInfo, items: &[Arc<CachedObject>], rev: u64, cont: &str) -> Bytes {
    let mut out = Vec::with_capacity(64 + items.iter().map(|i| i.json.len() + 1).sum::<usize>());
    out.extend_from_slice(b"{\"apiVersion\":\"");
    out.extend_from_slice(info.api_version().as_bytes());
    out.extend_from_slice(b"\",\"kind\":\"");
    out.extend_from_slice(info.list_kind().as_bytes());
    out.extend_from_slice(b"\",\"metadata\":{\"resourceVersion\":\"");
    out.extend_from_slice(rev.to_string().as_bytes());
    out.push(b'"');
    if !cont.is_empty() {
        out.extend_from_slice(b",\"continue\":");
        out.extend_from_slice(serde_json::to_string(cont).unwrap_or_default().as_bytes());
    }
    out.extend_from_slice(b"},\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&item.json);
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}
