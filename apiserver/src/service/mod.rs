//! The verbs of the API, independent of transport: REST and gRPC parse a request into one
//! [`Request`] (one type per verb, [`request`]) and call [`ApiService::serve`], the one path
//! every request takes.
//!
//! ```text
//! transport: authenticate (ApiService::authenticate) ─► parse into a Request
//! serve:     body size ─► authorise (auth::authz) ─► resolve kind and target ─► the verb:
//!              read.rs          get, list (from the watch cache, never waiting on the store)
//!              watch.rs         watch (from the watch cache)
//!              write.rs         create, update, patch: decode/default/validate (crate::write)
//!                               ─► admission/ ─► commit.rs
//!              delete.rs        delete, and the cleanup of a deleted namespace
//!              subresource.rs   pods/binding, TokenReview
//!            commit.rs: store txn (compare on revision) ─► wait for the watch cache ─► answer
//! ```

mod commit;
mod delete;
mod read;
pub mod request;
mod subresource;
mod watch;
mod write;

use std::sync::Arc;

use bytes::Bytes;
use drover_api::core::{Namespace, Pod};
use drover_api::error::Reason;
use drover_api::resource::split_api_version;
use drover_api::{KindInfo, Resource, Status};

use crate::agent_credential::AgentCredentials;
use crate::auth::{AlwaysAllow, Attributes, Authenticator, Authorizer, User};
use crate::cache::{CachedObject, WatchCache};
use crate::config::ServerConfig;
use crate::connections::ConnectionAuth;
use crate::kinds::{KindOps, Kinds};
use crate::storage::Store;

pub use commit::Outcome;
pub use read::render_list;
pub use request::{
    Bind, Create, Delete, DeleteOptions, Get, List, ListOptions, Patch, Request, ReviewToken,
    Target, Update, Watch,
};
pub use watch::Watching;

/// Namespaces that exist from the first start and may not be deleted.
pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-node-lease"];

/// How many times a server-side read-modify-write (merge patch, delete) retries after a conflict.
const PATCH_RETRIES: usize = 8;

/// What a request is answered with.
pub enum Reply {
    /// An object, a list or a TokenReview, as JSON.
    Json(Bytes),
    /// A started watch: the transport sends its [`Watching::frames`].
    Watch(Watching),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Json(b) => f.debug_tuple("Json").field(&b.len()).finish(),
            Reply::Watch(_) => f.write_str("Watch"),
        }
    }
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
    // One indirect call per request: RBAC (issue 16) chooses the authoriser at start, and the
    // call is nothing next to a request's JSON.
    pub(crate) authorizer: Arc<dyn Authorizer>,
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

/// A store failure: 503, with a hint to retry in a second (the store's own retries, failover
/// to another member included, have already run out).
fn store_err(e: crate::storage::StoreError) -> Status {
    let mut status = Status::new(Reason::ServiceUnavailable, format!("storage: {e}"));
    status.details = Some(drover_api::error::StatusDetails {
        retry_after_seconds: Some(1),
        ..Default::default()
    });
    status
}

impl ApiService {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        cache: WatchCache,
        kinds: Kinds,
        auth: Authenticator,
        agents: AgentCredentials,
        config: ServerConfig,
    ) -> ApiService {
        ApiService {
            store,
            cache,
            kinds,
            auth,
            authorizer: Arc::new(AlwaysAllow),
            agents,
            config,
        }
    }

    /// The same service deciding with `authorizer` (the default is [`AlwaysAllow`]).
    pub fn with_authorizer(mut self, authorizer: Arc<dyn Authorizer>) -> ApiService {
        self.authorizer = authorizer;
        self
    }

    /// Who sent a request, from its `Authorization` header value. A request on a connection that
    /// has not authenticated yet carries its [`ConnectionAuth`]: proving who the caller is lets
    /// the connection stay past the idle timeout.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        connection: Option<&ConnectionAuth>,
    ) -> Result<User, Status> {
        let user = self.auth.authenticate(authorization)?;
        if let Some(c) = connection {
            c.authenticated();
        }
        Ok(user)
    }

    /// Whether `user` may do what `attributes` say; a refusal is the `Forbidden` Status.
    pub fn authorize(&self, user: &User, attributes: &Attributes<'_>) -> Result<(), Status> {
        crate::auth::authz::check(&*self.authorizer, user, attributes)
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

    /// The error for a body over [`ServerConfig::max_body_bytes`]: for a transport that stops
    /// reading at the limit (`size` unknown), as for [`serve`](Self::serve), which checks every
    /// body it is given.
    pub fn body_too_large(&self, size: Option<usize>) -> Status {
        let limit = self.max_body_bytes();
        let message = match size {
            Some(size) => {
                format!("the request body is {size} bytes, larger than the limit of {limit} bytes")
            }
            None => format!("the request body is larger than the limit of {limit} bytes"),
        };
        Status::new(Reason::RequestEntityTooLarge, message)
    }

    /// Serves one request of an authenticated user: the one path of every verb on both
    /// transports.
    pub async fn serve(&self, user: &User, request: Request) -> Result<Reply, Status> {
        if let Some(body) = request.body()
            && body.len() > self.max_body_bytes()
        {
            return Err(self.body_too_large(Some(body.len())));
        }
        self.authorize(user, &request.attributes())?;
        match request {
            Request::Create(r) => self.create(&r).await.map(Reply::Json),
            Request::Bind(r) => self.bind(&r).await.map(Reply::Json),
            Request::ReviewToken(r) => self.review_token(&r).map(Reply::Json),
            Request::Get(r) => self.get(&r).map(Reply::Json),
            Request::List(r) => self.list(&r).await.map(Reply::Json),
            Request::Watch(r) => self.watch(&r).await.map(Reply::Watch),
            Request::Update(r) => self.update(&r).await.map(Reply::Json),
            Request::Patch(r) => self.patch(&r).await.map(Reply::Json),
            Request::Delete(r) => self.delete(&r).await.map(Reply::Json),
        }
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

    /// Creates the system namespaces if they are missing. The server itself asks, so nothing is
    /// authorised: the create verb is called directly.
    pub async fn bootstrap(&self) -> Result<(), Status> {
        for ns in SYSTEM_NAMESPACES {
            let body = serde_json::to_vec(&Namespace::new(*ns))
                .map_err(|e| Status::internal(e.to_string()))?;
            let create = Create {
                target: Target {
                    api_version: "v1".into(),
                    resource: "namespaces".into(),
                    ..Default::default()
                },
                body: Bytes::from(body),
            };
            match self.create(&create).await {
                Ok(_) => {}
                Err(e) if e.reason == Reason::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
