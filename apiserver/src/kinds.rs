//! How the API server handles each kind: decoding, defaults, validation and the per-kind hooks,
//! behind one object-safe trait so the rest of the server is kind-agnostic.

use std::any::Any;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use drover_api::error::FieldError;
use drover_api::resource::{KindInfo, KindVisitor, visit_kinds};
use drover_api::selector::{FieldSelector, field_of};
use drover_api::{ObjectMeta, Resource, Status, Time};

use crate::cache::CachedObject;
use crate::write::{self, Prepared, UpdateScope};

/// A stored object of some kind, type-erased.
pub trait ErasedObject: Any + Send + Sync {
    fn meta(&self) -> &ObjectMeta;
    /// A selectable field's value (`metadata.name`, `spec.nodeName`, ...).
    fn field(&self, path: &str) -> Option<String>;
    fn as_any(&self) -> &dyn Any;
}

impl<T: Resource> ErasedObject for T {
    fn meta(&self) -> &ObjectMeta {
        Resource::meta(self)
    }
    fn field(&self, path: &str) -> Option<String> {
        field_of(self, path)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// What the server needs to do with one kind, independent of its Rust type.
pub trait KindOps: Send + Sync {
    fn info(&self) -> &KindInfo;
    /// The identifier the watch cache files this kind's objects under (`group/plural`), made
    /// once so the write and watch paths don't allocate it per object.
    fn id(&self) -> &Arc<str>;
    /// Decodes stored or submitted JSON into the typed object.
    fn decode(&self, json: &[u8]) -> Result<Arc<dyn ErasedObject>, Status>;
    /// Encodes the typed object to JSON with its resource version set to `rv` (the slow path of
    /// [`render_with_rv`]).
    fn encode_with_rv(&self, obj: &dyn ErasedObject, rv: u64) -> Result<Bytes, Status>;
    /// Checks that every field of a field selector is selectable on this kind.
    fn check_fields(&self, selector: &FieldSelector) -> Result<(), Status>;
    fn prepare_create(&self, body: &[u8], namespace: &str, now: Time) -> Result<Prepared, Status>;
    fn prepare_update(
        &self,
        body: &[u8],
        old: &CachedObject,
        scope: UpdateScope,
    ) -> Result<Prepared, Status>;
    fn deletion_is_graceful(&self, old: &CachedObject, grace: Option<i64>) -> Result<bool, Status>;
    fn prepare_mark_deleted(
        &self,
        old: &CachedObject,
        now: Time,
        grace: Option<i64>,
        finalizer: Option<&str>,
    ) -> Result<Prepared, Status>;
}

/// [`KindOps`] for a Rust type.
pub struct Typed<T>(PhantomData<fn() -> T>, KindInfo, Arc<str>);

impl<T: Resource> Typed<T> {
    pub fn new() -> Self {
        Typed(
            PhantomData,
            T::info(),
            crate::cache::kind_id(T::GROUP, T::PLURAL),
        )
    }
}

impl<T: Resource> Default for Typed<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Decodes JSON into `T`, with the path of the offending field in the error.
pub fn decode_typed<T: Resource>(json: &[u8]) -> Result<T, Status> {
    // The fast path; only a failure pays for tracking the path of the offending field.
    if let Ok(obj) = serde_json::from_slice(json) {
        return Ok(obj);
    }
    // The recursion limit of serde_json (128 levels) stays on here too: the path tracker wraps
    // the same deserializer, it does not replace it.
    let mut de = serde_json::Deserializer::from_slice(json);
    let obj = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = clean_serde_message(&inner.to_string());
        // Malformed JSON is a bad request; well-formed JSON with a wrong field is invalid.
        if inner.classify() != serde_json::error::Category::Data || path == "." || path == "?" {
            return Status::bad_request(format!("cannot decode {}: {message}", T::KIND));
        }
        // Name the object when the body names it (the typed decode failed, so read it raw).
        let name = serde_json::from_slice::<serde_json::Value>(json)
            .ok()
            .and_then(|v| v.pointer("/metadata/name")?.as_str().map(str::to_string))
            .unwrap_or_default();
        Status::invalid(T::KIND, &name, &FieldError::invalid(path, message).into())
    })?;
    // The fast path refused the body for trailing data only if the object itself decoded: one
    // object per body, and nothing after it but whitespace.
    de.end().map_err(|_| trailing_data::<T>(json))?;
    Ok(obj)
}

/// The error for a body with something after its object: names where it starts and what it is.
fn trailing_data<T: Resource>(json: &[u8]) -> Status {
    let end = object_end(json).unwrap_or(0);
    let rest = json[end..].trim_ascii_start();
    let offset = json.len() - rest.len();
    let shown: String = String::from_utf8_lossy(&rest[..rest.len().min(32)]).into_owned();
    Status::bad_request(format!(
        "cannot decode {}: unexpected data after the object at byte {offset}: {shown:?} (a body holds exactly one object)",
        T::KIND
    ))
}

/// Where the first JSON value of `json` ends.
fn object_end(json: &[u8]) -> Option<usize> {
    let mut it = serde_json::Deserializer::from_slice(json).into_iter::<serde::de::IgnoredAny>();
    it.next()?.ok()?;
    Some(it.byte_offset())
}

/// The JSON clients see for a stored value at revision `rv`: the stored JSON (which never holds
/// `resourceVersion`) with `"resourceVersion":"<rv>"` spliced in as the first field of the
/// top-level `metadata`, without decoding and re-encoding the object. `None` when the value does
/// not have the layout the server writes (`{"apiVersion":"…","kind":"…","metadata":{…`) or
/// already mentions a `resourceVersion` key; callers then take the slow path.
pub fn splice_resource_version(value: &[u8], rv: u64) -> Option<Bytes> {
    const START: &[u8] = b"{\"apiVersion\":\"";
    const KIND: &[u8] = b"\",\"kind\":\"";
    const META: &[u8] = b"\",\"metadata\":{";
    let rest = value.strip_prefix(START)?;
    let q = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    let rest = rest[q..].strip_prefix(KIND)?;
    let q = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    let rest = rest[q..].strip_prefix(META)?;
    if contains(value, b"\"resourceVersion\":") {
        return None;
    }
    let at = value.len() - rest.len();
    let rv = rv.to_string();
    let mut out = Vec::with_capacity(value.len() + rv.len() + 22);
    out.extend_from_slice(&value[..at]);
    out.extend_from_slice(b"\"resourceVersion\":\"");
    out.extend_from_slice(rv.as_bytes());
    out.push(b'"');
    if rest.first() != Some(&b'}') {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Some(Bytes::from(out))
}

/// Whether `needle` occurs in `haystack`.
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The JSON clients see for `value` (the stored JSON of `object`) at revision `rv`: spliced when
/// possible, else encoded from the typed object. Never decodes: every caller holds the typed
/// object already (a writer the one it encoded, the watch cache the one it decoded or was handed).
pub fn render_with_rv(
    ops: &dyn KindOps,
    object: &dyn ErasedObject,
    value: &[u8],
    rv: u64,
) -> Result<Bytes, Status> {
    if let Some(json) = splice_resource_version(value, rv) {
        return Ok(json);
    }
    ops.encode_with_rv(object, rv)
}

/// serde's messages end with " at line L column C", which means nothing to the user of a YAML
/// file that was converted to JSON; the field path says where.
fn clean_serde_message(m: &str) -> String {
    match m.rfind(" at line ") {
        Some(i) => m[..i].to_string(),
        None => m.to_string(),
    }
}

/// Downcasts an erased object to `T`.
pub fn downcast<T: Resource>(obj: &dyn ErasedObject) -> Result<&T, Status> {
    obj.as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| Status::internal(format!("cached object is not a {}", T::KIND)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_refuses_anything_after_the_object() {
        let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{"containers":[{"name":"c","command":["true"]}]}}"#;
        assert!(decode_typed::<drover_api::core::Pod>(pod.as_bytes()).is_ok());
        assert!(decode_typed::<drover_api::core::Pod>(format!(" {pod}\n\t ").as_bytes()).is_ok());
        let cases = [
            ("garbage", format!("{pod}garbage"), "\"garbage\""),
            ("second object", format!("{pod}{pod}"), "\"{\\\"apiVersion"),
            (
                "second object after a newline",
                format!("{pod}\n{pod}"),
                "\"{\\\"apiVersion",
            ),
            ("a stray bracket", format!("{pod}]"), "\"]\""),
        ];
        for (name, body, shown) in cases {
            let e = decode_typed::<drover_api::core::Pod>(body.as_bytes()).expect_err(name);
            assert_eq!(e.code, 400, "{name}: {e:?}");
            assert!(
                e.message.contains("unexpected data after the object"),
                "{name}: {}",
                e.message
            );
            assert!(e.message.contains(shown), "{name}: {}", e.message);
        }
    }

    #[test]
    fn splice_puts_the_version_first_in_metadata() {
        let v = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{}}"#;
        let out = splice_resource_version(v, 42).unwrap();
        assert_eq!(
            &out[..],
            br#"{"apiVersion":"v1","kind":"Pod","metadata":{"resourceVersion":"42","name":"a"},"spec":{}}"#
        );
        let empty = br#"{"apiVersion":"v1","kind":"Pod","metadata":{}}"#;
        assert_eq!(
            &splice_resource_version(empty, 7).unwrap()[..],
            br#"{"apiVersion":"v1","kind":"Pod","metadata":{"resourceVersion":"7"}}"#
        );
        // Anything else takes the slow path.
        assert!(
            splice_resource_version(br#"{"kind":"Pod","apiVersion":"v1","metadata":{}}"#, 1)
                .is_none()
        );
        assert!(
            splice_resource_version(br#"{"apiVersion":"v1","kind":"Pod","metadata":{"labels":{"resourceVersion":"x"}}}"#, 1)
                .is_none()
        );
        let out: serde_json::Value =
            serde_json::from_slice(&splice_resource_version(v, 42).unwrap()).unwrap();
        assert_eq!(out["metadata"]["resourceVersion"], "42");
    }

    #[test]
    fn render_encodes_the_typed_object_when_splicing_cannot() {
        use drover_api::core::Pod;
        let ops = Typed::<Pod>::new();
        let cases = [
            (
                "spliced",
                r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{"containers":[{"name":"c","command":["true"]}]}}"#,
            ),
            (
                "a label named resourceVersion: encoded from the typed object",
                r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","labels":{"resourceVersion":"x"}},"spec":{"containers":[{"name":"c","command":["true"]}]}}"#,
            ),
        ];
        for (name, value) in cases {
            let object = ops.decode(value.as_bytes()).expect(name);
            let json = render_with_rv(&ops, &*object, value.as_bytes(), 9).expect(name);
            let got: Pod = serde_json::from_slice(&json).expect(name);
            let mut want: Pod = serde_json::from_str(value).expect(name);
            want.metadata.resource_version = "9".into();
            assert_eq!(got, want, "{name}");
        }
    }
}

impl<T: Resource> KindOps for Typed<T> {
    fn info(&self) -> &KindInfo {
        &self.1
    }

    fn id(&self) -> &Arc<str> {
        &self.2
    }

    fn decode(&self, json: &[u8]) -> Result<Arc<dyn ErasedObject>, Status> {
        Ok(Arc::new(decode_typed::<T>(json)?))
    }

    fn encode_with_rv(&self, obj: &dyn ErasedObject, rv: u64) -> Result<Bytes, Status> {
        let mut obj: T = downcast::<T>(obj)?.clone();
        obj.meta_mut().resource_version = rv.to_string();
        obj.set_type_meta();
        let json = serde_json::to_vec(&obj)
            .map_err(|e| Status::internal(format!("cannot encode {}: {e}", T::KIND)))?;
        Ok(Bytes::from(json))
    }

    fn check_fields(&self, selector: &FieldSelector) -> Result<(), Status> {
        selector
            .check_supported::<T>()
            .map_err(|e| Status::bad_request(format!("fieldSelector: {e}")))
    }

    fn prepare_create(&self, body: &[u8], namespace: &str, now: Time) -> Result<Prepared, Status> {
        write::prepare_create::<T>(body, namespace, now)
    }

    fn prepare_update(
        &self,
        body: &[u8],
        old: &CachedObject,
        scope: UpdateScope,
    ) -> Result<Prepared, Status> {
        write::prepare_update::<T>(body, old, scope)
    }

    fn deletion_is_graceful(&self, old: &CachedObject, grace: Option<i64>) -> Result<bool, Status> {
        write::deletion_is_graceful::<T>(old, grace)
    }

    fn prepare_mark_deleted(
        &self,
        old: &CachedObject,
        now: Time,
        grace: Option<i64>,
        finalizer: Option<&str>,
    ) -> Result<Prepared, Status> {
        write::prepare_mark_deleted::<T>(old, now, grace, finalizer)
    }
}

/// Every kind the server serves, by `(group, plural)`.
#[derive(Clone)]
pub struct Kinds {
    by_resource: HashMap<(String, String), Arc<dyn KindOps>>,
}

impl std::fmt::Debug for Kinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kinds")
            .field("count", &self.by_resource.len())
            .finish()
    }
}

impl Default for Kinds {
    fn default() -> Self {
        Self::new()
    }
}

impl Kinds {
    /// The registry of every kind `drover_api` defines.
    pub fn new() -> Self {
        struct Collect(HashMap<(String, String), Arc<dyn KindOps>>);
        impl KindVisitor for Collect {
            fn visit<T: Resource>(&mut self) {
                self.0.insert(
                    (T::GROUP.to_string(), T::PLURAL.to_string()),
                    Arc::new(Typed::<T>::new()),
                );
            }
        }
        let mut c = Collect(HashMap::new());
        visit_kinds(&mut c);
        Kinds { by_resource: c.0 }
    }

    pub fn get(&self, group: &str, plural: &str) -> Option<&Arc<dyn KindOps>> {
        self.by_resource
            .get(&(group.to_string(), plural.to_string()))
    }

    /// The kind a storage key belongs to.
    pub fn for_key(&self, key: &[u8]) -> Option<&Arc<dyn KindOps>> {
        let (group, plural) = crate::keys::parse_kind(key)?;
        self.get(group, plural)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn KindOps>> {
        self.by_resource.values()
    }
}
