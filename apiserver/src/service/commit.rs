//! The last step of every write: one store transaction that compares on the revision the
//! writer read, then the wait until the watch cache has applied it, so the answer is what a
//! read would now see.

use bytes::Bytes;
use drover_api::Status;

use super::{ApiService, Resolved, store_err};
use crate::cache::CachedObject;
use crate::keys;
use crate::storage::{Compare, Op, Txn};
use crate::write::Prepared;

/// How a write's compare on revision came out.
#[must_use]
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Stored (or nothing to store): the object as clients now see it.
    Written(Bytes),
    /// Another write came first (for a create: the object exists). Nothing was stored; the
    /// caller retries or answers with a conflict.
    Conflict,
}

impl ApiService {
    /// Writes a prepared object, comparing on the revision the caller read (0: must not exist).
    pub(super) async fn put(
        &self,
        r: &Resolved<'_>,
        p: &Prepared,
        expect_rev: u64,
    ) -> Result<Outcome, Status> {
        let key = keys::object_key(&r.info, &p.namespace, &p.name);
        let key = Bytes::from(key);
        let (op, _expected) = if p.finalize_delete {
            (Op::Delete { key: key.clone() }, None)
        } else {
            // The watch cache takes the typed object this write encoded: nothing decodes it again.
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
            return Ok(Outcome::Conflict);
        }
        self.cache.wait_for(res.revision).await;
        if p.finalize_delete {
            // Answer with the object's last state.
            return Ok(Outcome::Written(render_prepared(r, p, res.revision)));
        }
        match self.cache.get(&r.kind, &p.namespace, &p.name) {
            Some(o) if o.rv == res.revision => Ok(Outcome::Written(o.json.clone())),
            // Changed again already: answer with what this write stored.
            _ => Ok(Outcome::Written(render_prepared(r, p, res.revision))),
        }
    }

    /// Stores an update (or the final delete of an object whose last finalizer went).
    pub(super) async fn finish_update(
        &self,
        r: &Resolved<'_>,
        old: &CachedObject,
        p: Prepared,
    ) -> Result<Outcome, Status> {
        if !p.finalize_delete && unchanged(r, &p, old) {
            // Nothing changed: no write, no event (as Kubernetes does).
            return Ok(Outcome::Written(old.json.clone()));
        }
        self.put(r, &p, old.rv).await
    }

    /// Removes an object from the store, comparing on the revision read.
    pub(super) async fn remove(&self, old: &CachedObject) -> Result<Outcome, Status> {
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
            return Ok(Outcome::Conflict);
        }
        self.cache.wait_for(res.revision).await;
        Ok(Outcome::Written(old.json.clone()))
    }
}

/// The JSON of a prepared write at revision `rev`, from its typed object: nothing is decoded.
fn render_prepared(r: &Resolved<'_>, p: &Prepared, rev: u64) -> Bytes {
    crate::kinds::render_with_rv(&**r.ops, &*p.object, &p.value, rev)
        .unwrap_or_else(|_| p.value.clone())
}

/// Whether a prepared write would store exactly what is stored now.
fn unchanged(r: &Resolved<'_>, p: &Prepared, old: &CachedObject) -> bool {
    crate::kinds::render_with_rv(&**r.ops, &*p.object, &p.value, old.rv)
        .is_ok_and(|json| json == old.json)
}
