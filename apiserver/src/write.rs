//! What a write does to an object before it is stored, per kind: decoding, type checks, defaults,
//! validation and the server-managed metadata (Kubernetes' "REST strategies"). Generic over the
//! kind; the service reaches it through [`crate::kinds::KindOps`].

use std::sync::Arc;

use bytes::Bytes;
use drover_api::{Resource, Status, Time};

use crate::cache::CachedObject;
use crate::kinds::{ErasedObject, decode_typed, downcast};

/// An object ready to be stored.
pub struct Prepared {
    pub namespace: String,
    pub name: String,
    /// JSON without `resourceVersion` (the store's revision is the version).
    pub value: Bytes,
    /// The typed object `value` encodes, so the watch cache need not decode it again.
    pub object: Arc<dyn ErasedObject>,
    /// The write removed the last finalizer of an object marked for deletion: delete it.
    pub finalize_delete: bool,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("finalize_delete", &self.finalize_delete)
            .finish_non_exhaustive()
    }
}

/// Finalizer the garbage collector removes after deleting dependents (foreground deletion).
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// Finalizer the garbage collector removes after orphaning dependents.
pub const ORPHAN_FINALIZER: &str = "orphan";

fn check_type_meta<T: Resource>(obj: &T) -> Result<(), Status> {
    let (api_version, kind) = obj.type_meta();
    if !api_version.is_empty() && api_version != T::api_version() {
        return Err(Status::bad_request(format!(
            "apiVersion {api_version:?} does not match the request: expected {:?}",
            T::api_version()
        )));
    }
    if !kind.is_empty() && kind != T::KIND {
        return Err(Status::bad_request(format!(
            "kind {kind:?} does not match the request: expected {:?}",
            T::KIND
        )));
    }
    Ok(())
}

fn check_namespace<T: Resource>(obj: &mut T, namespace: &str) -> Result<(), Status> {
    let meta = obj.meta_mut();
    if T::NAMESPACED {
        if meta.namespace.is_empty() {
            meta.namespace = namespace.to_string();
        } else if meta.namespace != namespace {
            return Err(Status::bad_request(format!(
                "the namespace of the object ({:?}) does not match the namespace on the request ({namespace:?})",
                meta.namespace
            )));
        }
    } else if !meta.namespace.is_empty() {
        return Err(Status::bad_request(format!(
            "metadata.namespace: {} is cluster-scoped: expected no namespace, got {:?}",
            T::KIND,
            meta.namespace
        )));
    }
    Ok(())
}

/// Encodes an object for the store. The typed object travels with its JSON to the watch cache,
/// which must hold exactly what decoding the stored JSON gives (as after a restart): debug builds
/// check that the two agree on every write.
pub fn encode<T: Resource>(mut obj: T, finalize_delete: bool) -> Result<Prepared, Status> {
    obj.set_type_meta();
    let meta = obj.meta_mut();
    meta.resource_version.clear();
    meta.managed_fields = None;
    let value = serde_json::to_vec(&obj)
        .map_err(|e| Status::internal(format!("cannot encode {}: {e}", T::KIND)))?;
    check_no_nul(&obj, &value)?;
    debug_assert_eq!(
        serde_json::from_slice::<T>(&value).ok().as_ref(),
        Some(&obj),
        "{} does not survive a JSON round trip: the watch cache would differ from the store",
        T::KIND
    );
    let meta = obj.meta();
    Ok(Prepared {
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        value: Bytes::from(value),
        finalize_delete,
        object: Arc::new(obj),
    })
}

/// Refuses an object with a NUL character in any string (see
/// [`drover_api::validation::nul_errors`]). Every write passes here, so one check covers every
/// field of every kind. JSON spells NUL `\u0000`, so a scan of the encoded bytes finds every
/// candidate; only then is the object walked for the field paths (a literal `\\u0000` text
/// matches the scan too, and the walk clears it).
fn check_no_nul<T: Resource>(obj: &T, value: &[u8]) -> Result<(), Status> {
    if !crate::kinds::contains(value, b"\\u0000") {
        return Ok(());
    }
    let tree: serde_json::Value = serde_json::from_slice(value)
        .map_err(|e| Status::internal(format!("cannot decode {} again: {e}", T::KIND)))?;
    drover_api::validation::nul_errors(&tree)
        .into_result()
        .map_err(|e| Status::invalid(T::KIND, &obj.meta().name, &e))
}

/// A random (version 4) UUID from the thread's CSPRNG: `Uuid::new_v4` asks the kernel for its
/// 16 bytes, one system call per created object.
fn new_uid() -> String {
    use rand::RngExt;
    let bytes: [u8; 16] = rand::rng().random();
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

fn random_suffix() -> String {
    use rand::RngExt;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Prepares a new object: `namespace` is the request's (empty for cluster-scoped kinds).
pub fn prepare_create<T: Resource>(
    body: &[u8],
    namespace: &str,
    now: Time,
) -> Result<Prepared, Status> {
    let mut obj: T = decode_typed(body)?;
    check_type_meta(&obj)?;
    check_namespace(&mut obj, namespace)?;
    let meta = obj.meta_mut();
    if meta.name.is_empty() && !meta.generate_name.is_empty() {
        meta.name = format!("{}{}", meta.generate_name, random_suffix());
    }
    if !meta.resource_version.is_empty() {
        return Err(Status::bad_request(
            "metadata.resourceVersion: must not be set on objects to be created",
        ));
    }
    meta.uid = new_uid();
    meta.creation_timestamp = Some(now);
    meta.deletion_timestamp = None;
    meta.deletion_grace_period_seconds = None;
    meta.generation = 1;
    if T::STATUS_OWNED_BY_SYSTEM {
        // The status is the system's report: set through `/status` and admission defaults only.
        obj.copy_status_from(&T::default());
    }
    obj.default_fields();
    obj.validate()
        .map_err(|e| Status::invalid(T::KIND, &obj.meta().name, &e))?;
    encode(obj, false)
}

/// How an update treats the object's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateScope {
    /// The main resource: the stored status is kept.
    Object,
    /// The `status` subresource: only the status changes.
    Status,
}

/// Prepares an update of `old` to the body's content.
pub fn prepare_update<T: Resource>(
    body: &[u8],
    old: &CachedObject,
    scope: UpdateScope,
) -> Result<Prepared, Status> {
    let mut new: T = decode_typed(body)?;
    check_type_meta(&new)?;
    let old_t: &T = downcast(&*old.object)?;
    let name = &old_t.meta().name;
    if new.meta().name.is_empty() {
        new.meta_mut().name = name.clone();
    } else if &new.meta().name != name {
        return Err(Status::bad_request(format!(
            "metadata.name {:?} does not match the name on the request ({name:?})",
            new.meta().name
        )));
    }
    check_namespace(&mut new, &old_t.meta().namespace)?;
    let given = &new.meta().resource_version;
    if !given.is_empty() && given.parse::<u64>().ok() != Some(old.rv) {
        return Err(Status::conflict(
            T::KIND,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    let mut new = match scope {
        UpdateScope::Status => {
            let mut merged = old_t.clone();
            merged.copy_status_from(&new);
            merged
        }
        UpdateScope::Object => {
            if T::HAS_STATUS {
                new.copy_status_from(old_t);
            }
            new
        }
    };
    // Server-managed metadata never changes through an update.
    let spec_changed = new.spec_differs(old_t);
    {
        let om = old_t.meta();
        let meta = new.meta_mut();
        meta.uid = om.uid.clone();
        meta.creation_timestamp = om.creation_timestamp;
        meta.deletion_timestamp = om.deletion_timestamp;
        meta.deletion_grace_period_seconds = om.deletion_grace_period_seconds;
        meta.generate_name = om.generate_name.clone();
        meta.generation = om.generation + i64::from(spec_changed);
        if scope == UpdateScope::Status {
            meta.labels = om.labels.clone();
            meta.annotations = om.annotations.clone();
            meta.finalizers = om.finalizers.clone();
            meta.owner_references = om.owner_references.clone();
        }
    }
    new.validate_update(old_t)
        .map_err(|e| Status::invalid(T::KIND, name, &e))?;
    let finalize = new.meta().deletion_timestamp.is_some() && new.meta().finalizers.is_empty();
    encode(new, finalize)
}

/// Whether deleting `old` only marks it (finalizers remain, or a pod still runs on a node and
/// its agent must stop it within the grace period).
pub fn deletion_is_graceful<T: Resource>(
    old: &CachedObject,
    grace_period_seconds: Option<i64>,
) -> Result<bool, Status> {
    let old_t: &T = downcast(&*old.object)?;
    if !old_t.meta().finalizers.is_empty() {
        return Ok(true);
    }
    Ok(grace_period_seconds != Some(0) && pod_runs_on_node(old_t))
}

fn pod_runs_on_node<T: Resource>(obj: &T) -> bool {
    (obj as &dyn std::any::Any)
        .downcast_ref::<drover_api::core::Pod>()
        .is_some_and(|p| p.is_bound() && !p.is_terminal())
}

/// Marks `old` for deletion: sets `deletionTimestamp` and adds `finalizer` if given.
pub fn prepare_mark_deleted<T: Resource>(
    old: &CachedObject,
    now: Time,
    grace_period_seconds: Option<i64>,
    finalizer: Option<&str>,
) -> Result<Prepared, Status> {
    let mut obj: T = downcast::<T>(&*old.object)?.clone();
    let default_grace = (&obj as &dyn std::any::Any)
        .downcast_ref::<drover_api::core::Pod>()
        .and_then(|p| p.spec.termination_grace_period_seconds);
    let meta = obj.meta_mut();
    if meta.deletion_timestamp.is_none() {
        meta.deletion_timestamp = Some(now);
    }
    let grace = grace_period_seconds.or(default_grace);
    if grace.is_some() {
        // A shorter grace period may replace a longer one, never the reverse.
        meta.deletion_grace_period_seconds = match (meta.deletion_grace_period_seconds, grace) {
            (Some(old), Some(new)) => Some(old.min(new)),
            (_, new) => new,
        };
    }
    if let Some(f) = finalizer
        && !meta.finalizers.iter().any(|x| x == f)
    {
        meta.finalizers.push(f.to_string());
    }
    encode(obj, false)
}

#[cfg(test)]
mod tests {
    #[test]
    fn uids_are_distinct_version_4_uuids() {
        let a = super::new_uid();
        let b = super::new_uid();
        assert_ne!(a, b);
        for u in [a, b] {
            let parsed = uuid::Uuid::parse_str(&u).expect("a UUID");
            assert_eq!(parsed.get_version_num(), 4, "{u}");
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122, "{u}");
        }
    }
}
