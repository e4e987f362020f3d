//! Typed verbs for one kind: [`Api<T>`].

use std::marker::PhantomData;

use futures::{Stream, StreamExt};
use serde::Serialize;

use super::{Client, ClientError, proto, target};
use drover_api::error::Status;
use drover_api::meta::List;
use drover_api::resource::Resource;

/// Objects per page of [`Api::list_all`].
pub const LIST_PAGE: u64 = 500;

/// A create encoded ahead of time ([`Api::prepare_create`]).
#[derive(Clone, Debug)]
pub struct PreparedCreate {
    target: proto::Target,
    body: bytes::Bytes,
}

/// Options of list and watch calls.
#[derive(Clone, Debug, Default)]
pub struct ListParams {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: Option<u64>,
    pub continue_token: Option<String>,
    /// Watches only: the server ends the watch after this many seconds.
    pub timeout_seconds: Option<u32>,
}

impl ListParams {
    pub fn labels(mut self, selector: impl Into<String>) -> Self {
        self.label_selector = Some(selector.into());
        self
    }
    pub fn fields(mut self, selector: impl Into<String>) -> Self {
        self.field_selector = Some(selector.into());
        self
    }
}

/// Options of delete calls.
#[derive(Clone, Debug, Default)]
pub struct DeleteParams {
    /// `Background` (default), `Foreground` or `Orphan`.
    pub propagation_policy: Option<String>,
    pub precondition_resource_version: Option<String>,
    pub precondition_uid: Option<String>,
    pub grace_period_seconds: Option<i64>,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq)]
pub enum WatchEvent<T> {
    Added(T),
    Modified(T),
    Deleted(T),
    /// Progress: every change up to this resource version has been sent.
    Bookmark(String),
    /// The watch ended with an error; `Expired` means "relist".
    Error(Status),
}

/// Typed verbs for kind `T`, in one namespace or across all.
pub struct Api<T> {
    client: Client,
    namespace: Option<String>,
    _kind: PhantomData<fn() -> T>,
}

impl<T> Clone for Api<T> {
    fn clone(&self) -> Self {
        Api {
            client: self.client.clone(),
            namespace: self.namespace.clone(),
            _kind: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Api<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl<T: Resource> Api<T> {
    pub(super) fn new(client: Client, namespace: Option<String>) -> Self {
        Api {
            client,
            namespace,
            _kind: PhantomData,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    fn target(&self, name: &str, sub: &str) -> proto::Target {
        target(&T::info(), self.namespace.as_deref(), name, sub)
    }

    /// The target of `obj`, taking the namespace from the object when this Api has none.
    fn target_of(&self, obj: &T, sub: &str) -> proto::Target {
        let meta = obj.meta();
        let ns = self
            .namespace
            .as_deref()
            .or(Some(meta.namespace.as_str()).filter(|s| !s.is_empty()));
        target(&T::info(), ns, &meta.name, sub)
    }

    fn encode<S: Serialize>(value: &S) -> Result<Vec<u8>, ClientError> {
        serde_json::to_vec(value).map_err(|e| ClientError::Encode(e.to_string()))
    }

    /// The JSON of `obj` with its `apiVersion` and `kind` set (copying the object only when
    /// they are not set already).
    fn encode_object(obj: &T) -> Result<Vec<u8>, ClientError> {
        let (api_version, kind) = obj.type_meta();
        if api_version == T::api_version() && kind == T::KIND {
            Self::encode(obj)
        } else {
            let mut obj = obj.clone();
            obj.set_type_meta();
            Self::encode(&obj)
        }
    }

    pub async fn create(&self, obj: &T) -> Result<T, ClientError> {
        let out = self.create_bytes(obj).await?;
        Ok(serde_json::from_slice(&out)?)
    }

    /// Creates the object and returns once the server has acknowledged it (durably), without
    /// decoding the stored object the server answers with: for callers that do not use it (a
    /// controller that learns of its pods from an informer, a load generator).
    pub async fn create_ack(&self, obj: &T) -> Result<(), ClientError> {
        self.create_bytes(obj).await.map(|_| ())
    }

    async fn create_bytes(&self, obj: &T) -> Result<bytes::Bytes, ClientError> {
        let p = self.prepare_create(obj)?;
        self.client.create_raw(p.target, p.body).await
    }

    /// Encodes a create of `obj` ahead of sending it, for a load generator that prepares its
    /// requests before it starts the clock; send it with
    /// [`create_prepared_ack`](Self::create_prepared_ack).
    pub fn prepare_create(&self, obj: &T) -> Result<PreparedCreate, ClientError> {
        let body = Self::encode_object(obj)?.into();
        let mut target = self.target_of(obj, "");
        // A create goes to the collection; the name travels in the body.
        target.name.clear();
        Ok(PreparedCreate { target, body })
    }

    /// [`create_ack`](Self::create_ack) of a create encoded by
    /// [`prepare_create`](Self::prepare_create) (on any `Api` of the same client's server).
    pub async fn create_prepared_ack(&self, p: &PreparedCreate) -> Result<(), ClientError> {
        self.client
            .create_raw(p.target.clone(), p.body.clone())
            .await
            .map(|_| ())
    }

    pub async fn get(&self, name: &str) -> Result<T, ClientError> {
        let out = self.client.get_raw(self.target(name, "")).await?;
        Ok(serde_json::from_slice(&out)?)
    }

    /// Like [`get`](Self::get), with `None` for NotFound.
    pub async fn get_opt(&self, name: &str) -> Result<Option<T>, ClientError> {
        match self.get(name).await {
            Ok(o) => Ok(Some(o)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn list(&self, params: &ListParams) -> Result<List<T>, ClientError> {
        let out = self.client.list_raw(self.target("", ""), params).await?;
        Ok(serde_json::from_slice(&out)?)
    }

    /// Every object `params` selects, listed [`LIST_PAGE`] at a time (or `params.limit`), so a
    /// large collection never meets the message size limit (10,000 nodes with their devices are
    /// more than 64 MiB in one answer). Pages are read at successive revisions: the list's
    /// `resourceVersion` is the first page's, and a watch from it replays every change made
    /// while the later pages were read, so list-then-watch still converges.
    pub async fn list_all(&self, params: &ListParams) -> Result<List<T>, ClientError> {
        let mut all: Option<List<T>> = None;
        self.list_pages(params, |mut page| match &mut all {
            Some(a) => a.items.append(&mut page.items),
            None => all = Some(page),
        })
        .await?;
        Ok(all.unwrap_or_default())
    }

    /// [`Api::list_all`] a page at a time: `each` gets every page in order (for a reader that
    /// needs not hold the whole collection).
    pub async fn list_pages(
        &self,
        params: &ListParams,
        mut each: impl FnMut(List<T>),
    ) -> Result<(), ClientError> {
        let mut page_params = ListParams {
            limit: Some(params.limit.unwrap_or(LIST_PAGE)),
            continue_token: None,
            ..params.clone()
        };
        loop {
            let mut page = self.list(&page_params).await?;
            let next = std::mem::take(&mut page.metadata.continue_token);
            each(page);
            if next.is_empty() {
                return Ok(());
            }
            page_params.continue_token = Some(next);
        }
    }

    /// Replaces the object; fails with Conflict when its resourceVersion is stale.
    pub async fn update(&self, obj: &T) -> Result<T, ClientError> {
        let body = Self::encode_object(obj)?;
        let out = self
            .client
            .update_raw(self.target_of(obj, ""), body)
            .await?;
        Ok(serde_json::from_slice(&out)?)
    }

    /// Replaces the object's status (the `status` subresource).
    pub async fn update_status(&self, obj: &T) -> Result<T, ClientError> {
        let body = Self::encode_object(obj)?;
        let out = self
            .client
            .update_raw(self.target_of(obj, "status"), body)
            .await?;
        Ok(serde_json::from_slice(&out)?)
    }

    /// Applies a JSON merge patch.
    pub async fn patch<P: Serialize>(&self, name: &str, patch: &P) -> Result<T, ClientError> {
        let out = self
            .client
            .patch_raw(self.target(name, ""), Self::encode(patch)?)
            .await?;
        Ok(serde_json::from_slice(&out)?)
    }

    /// Applies a JSON merge patch to the status subresource.
    pub async fn patch_status<P: Serialize>(
        &self,
        name: &str,
        patch: &P,
    ) -> Result<T, ClientError> {
        let out = self
            .client
            .patch_raw(self.target(name, "status"), Self::encode(patch)?)
            .await?;
        Ok(serde_json::from_slice(&out)?)
    }

    /// Creates a subresource of the object (e.g. a pod's `binding`); returns the object.
    pub async fn create_subresource<B: Serialize>(
        &self,
        name: &str,
        subresource: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let out = self
            .client
            .create_raw(self.target(name, subresource), Self::encode(body)?)
            .await?;
        Ok(serde_json::from_slice(&out)?)
    }

    /// Like [`create_subresource`](Self::create_subresource), without decoding the object the
    /// server answers with (a scheduler's binding needs only the acknowledgement).
    pub async fn create_subresource_ack<B: Serialize>(
        &self,
        name: &str,
        subresource: &str,
        body: &B,
    ) -> Result<(), ClientError> {
        self.client
            .create_raw(self.target(name, subresource), Self::encode(body)?)
            .await
            .map(|_| ())
    }

    /// Deletes the object; returns it (marked for deletion when finalizers remain).
    pub async fn delete(&self, name: &str, params: &DeleteParams) -> Result<T, ClientError> {
        let out = self
            .client
            .delete_raw(self.target(name, ""), params)
            .await?;
        Ok(serde_json::from_slice(&out)?)
    }

    /// Watches the collection from `resource_version` ("" or "0": current state first).
    pub async fn watch(
        &self,
        params: &ListParams,
        resource_version: &str,
    ) -> Result<impl Stream<Item = Result<WatchEvent<T>, ClientError>> + use<T>, ClientError> {
        self.watch_as::<T>(params, resource_version).await
    }

    /// [`Api::watch`] decoding each object as `V`, a partial view of the kind (a struct with
    /// only the fields the watcher reads; serde skips the rest). For watchers that need a few
    /// fields of many large objects, as Kubernetes' metadata-only informers.
    pub async fn watch_as<V: serde::de::DeserializeOwned>(
        &self,
        params: &ListParams,
        resource_version: &str,
    ) -> Result<impl Stream<Item = Result<WatchEvent<V>, ClientError>> + use<T, V>, ClientError>
    {
        let stream = self
            .client
            .watch_raw(self.target("", ""), params, resource_version)
            .await?;
        Ok(stream.map(|r| r.and_then(decode_event::<V>)))
    }
}

/// Decodes one raw watch event.
pub fn decode_event<T: serde::de::DeserializeOwned>(
    e: proto::WatchEvent,
) -> Result<WatchEvent<T>, ClientError> {
    Ok(match e.r#type.as_str() {
        "ADDED" => WatchEvent::Added(serde_json::from_slice(&e.object)?),
        "MODIFIED" => WatchEvent::Modified(serde_json::from_slice(&e.object)?),
        "DELETED" => WatchEvent::Deleted(serde_json::from_slice(&e.object)?),
        "BOOKMARK" => {
            #[derive(serde::Deserialize)]
            struct Rv {
                metadata: drover_api::meta::ListMeta,
            }
            let rv: Rv = serde_json::from_slice(&e.object)?;
            WatchEvent::Bookmark(rv.metadata.resource_version)
        }
        "ERROR" => WatchEvent::Error(serde_json::from_slice(&e.object)?),
        other => {
            return Err(ClientError::Api(Status::internal(format!(
                "unknown watch event type {other:?}"
            ))));
        }
    })
}
