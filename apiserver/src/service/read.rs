//! Get and list: answered from the watch cache. A list at the most recent version (no
//! `resourceVersion`) first asks the store for its revision and waits until the cache has
//! reached it, so a write acknowledged by any API server on the same store is in the list (as
//! Kubernetes' consistent reads from the cache); every other read never waits on the store.

use std::sync::Arc;

use bytes::Bytes;
use drover_api::error::Reason;
use drover_api::selector::{FieldSelector, Selector};
use drover_api::{KindInfo, Status};

use super::request::{Get, List, ListOptions};
use super::{ApiService, Resolved};
use crate::cache::{CachedObject, Filter};

impl ApiService {
    pub(super) fn get(&self, req: &Get) -> Result<Bytes, Status> {
        let r = self.resolve(&req.target)?;
        Self::need_name(&r)?;
        Ok(self.get_cached(&r)?.json.clone())
    }

    /// Lists a collection; returns the list object as JSON.
    pub(super) async fn list(&self, req: &List) -> Result<Bytes, Status> {
        let o = &req.options;
        let r = self.resolve(&req.target)?;
        let filter = self.filter(&r, o)?;
        // The cache answers at its own revision, which is never older than the one checked.
        if o.resource_version.is_empty() {
            self.consistent().await?;
        } else {
            self.not_older_than(&o.resource_version).await?;
        }
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

    /// The cache filter of a list or watch.
    pub(super) fn filter(&self, r: &Resolved<'_>, o: &ListOptions) -> Result<Filter, Status> {
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

    /// Waits until the cache has applied every write the store has committed, by this server or
    /// another one on the same store: a read at the most recent version. The store's revision
    /// is one small read; the wait is bounded as [`Self::not_older_than`]'s.
    async fn consistent(&self) -> Result<(), Status> {
        let rev = self
            .store
            .current_revision()
            .await
            .map_err(super::store_err)?;
        self.wait_for_cache(rev).await
    }

    /// Waits until the cache has reached `rev`; as Kubernetes, a version the cache does not
    /// reach within 3 s is `Timeout`.
    async fn wait_for_cache(&self, rev: u64) -> Result<(), Status> {
        if rev > self.cache.revision() {
            let wait = self.cache.wait_for(rev);
            if tokio::time::timeout(std::time::Duration::from_secs(3), wait)
                .await
                .is_err()
            {
                return Err(Status::new(
                    Reason::Timeout,
                    format!(
                        "too large resource version: {rev}, current: {}",
                        self.cache.revision()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The revision a list or watch must not be older than: `None` for "" and "0" (anything
    /// recent), else the number, once the cache has reached it (as Kubernetes, a version the
    /// cache does not reach within 3 s is `Timeout`). Anything else is a bad request.
    pub(super) async fn not_older_than(
        &self,
        resource_version: &str,
    ) -> Result<Option<u64>, Status> {
        let rv: u64 = match resource_version {
            "" | "0" => return Ok(None),
            v => v.parse().map_err(|_| {
                Status::bad_request(format!(
                    "resourceVersion: {v:?} is not a valid version: expected a non-negative integer"
                ))
            })?,
        };
        self.wait_for_cache(rv).await?;
        Ok(Some(rv))
    }
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
