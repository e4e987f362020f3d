//! The [`Resource`] trait every kind implements, and the registry of kinds.
//!
//! A kind is registered once, in [`visit_kinds`]; the API server, the client and the command line
//! all discover kinds from there, so adding a kind is one type plus one line.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::FieldErrors;
use crate::meta::ObjectMeta;

/// A kind of object stored by the API server.
pub trait Resource:
    Serialize + DeserializeOwned + Clone + Debug + Default + PartialEq + Send + Sync + 'static
{
    /// API group: `""` for the core group, `batch`, `scheduling.x-k8s.io`, ...
    const GROUP: &'static str;
    const VERSION: &'static str;
    const KIND: &'static str;
    /// Lower-case plural used in paths: `pods`.
    const PLURAL: &'static str;
    /// Lower-case singular: `pod`.
    const SINGULAR: &'static str;
    /// kubectl short names: `po`.
    const SHORT_NAMES: &'static [&'static str] = &[];
    const NAMESPACED: bool;
    /// Whether the kind has a `status` subresource: writes to the main resource keep the stored
    /// status, and writes to `/status` change only the status.
    const HAS_STATUS: bool = false;
    /// Whether only the system writes this kind's status (through the `status` subresource and
    /// admission defaults): a create body's `status` is then dropped (Kubernetes'
    /// `PrepareForCreate`), so a Job created "Complete" still runs. Each kind that sets it says
    /// why; kinds whose creator reports the status (a Node registered by its agent, as the
    /// kubelet does) leave it `false`.
    const STATUS_OWNED_BY_SYSTEM: bool = false;

    fn meta(&self) -> &ObjectMeta;
    fn meta_mut(&mut self) -> &mut ObjectMeta;

    /// Sets `apiVersion` and `kind` to this kind's.
    fn set_type_meta(&mut self);

    /// `apiVersion` and `kind` as the object carries them (empty when unset).
    fn type_meta(&self) -> (&str, &str);

    /// Checks the object on create (and, by default, on update), field by field.
    fn validate(&self) -> Result<(), FieldErrors> {
        Ok(())
    }

    /// Checks an update against the stored object (immutable fields and the like).
    fn validate_update(&self, _old: &Self) -> Result<(), FieldErrors> {
        self.validate()
    }

    /// Fills in defaults the server applies on create (restart policy, scheduler name, ...).
    fn default_fields(&mut self) {}

    /// Copies `other`'s status into `self` (used for status-subresource semantics).
    fn copy_status_from(&mut self, _other: &Self) {}

    /// Whether the desired state differs from `other`'s (bumps `metadata.generation`).
    fn spec_differs(&self, _other: &Self) -> bool {
        false
    }

    /// The value of a selectable field other than `metadata.name` / `metadata.namespace`
    /// (e.g. `spec.nodeName`, `status.phase`), or `None` when the kind has no such field.
    fn field(&self, _path: &str) -> Option<String> {
        None
    }

    /// `group/version`, or `version` for the core group.
    fn api_version() -> String {
        api_version_of(Self::GROUP, Self::VERSION)
    }

    fn info() -> KindInfo {
        KindInfo {
            group: Self::GROUP,
            version: Self::VERSION,
            kind: Self::KIND,
            plural: Self::PLURAL,
            singular: Self::SINGULAR,
            short_names: Self::SHORT_NAMES,
            namespaced: Self::NAMESPACED,
            has_status: Self::HAS_STATUS,
        }
    }
}

/// `group/version`, or `version` for the core group.
pub fn api_version_of(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// Splits an `apiVersion` into group and version.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.rsplit_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// What the registry knows about a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindInfo {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    pub has_status: bool,
}

impl KindInfo {
    pub fn api_version(&self) -> String {
        api_version_of(self.group, self.version)
    }

    /// `pods`, or `jobs.batch` for a kind outside the core group (as kubectl prints them).
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `pod`, or `job.batch` (the prefix of kubectl's `job.batch/train created`).
    pub fn qualified_singular(&self) -> String {
        if self.group.is_empty() {
            self.singular.to_string()
        } else {
            format!("{}.{}", self.singular, self.group)
        }
    }

    /// The REST path of the collection: `/api/v1/namespaces/{ns}/pods`, `/apis/batch/v1/jobs`.
    /// `namespace` is ignored for cluster-scoped kinds; `None` lists across namespaces.
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        let root = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match namespace {
            Some(ns) if self.namespaced => format!("{root}/namespaces/{ns}/{}", self.plural),
            _ => format!("{root}/{}", self.plural),
        }
    }

    /// The REST path of one object.
    pub fn object_path(&self, namespace: &str, name: &str) -> String {
        format!("{}/{name}", self.collection_path(Some(namespace)))
    }

    /// The kind of the list type: `PodList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Whether `name` names this kind: plural, singular, short name or kind, any case, optionally
    /// qualified by the group (`jobs.batch`, `job.batch`).
    pub fn matches(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        let (base, group) = match name.split_once('.') {
            Some((b, g)) => (b.to_string(), Some(g.to_string())),
            None => (name.clone(), None),
        };
        if group.as_ref().is_some_and(|g| g != self.group) {
            return false;
        }
        base == self.plural
            || base == self.singular
            || base == self.kind.to_ascii_lowercase()
            || self.short_names.contains(&base.as_str())
    }
}

/// Receives every registered kind as a type.
pub trait KindVisitor {
    fn visit<T: Resource>(&mut self);
}

/// The registry of kinds: calls `visitor.visit::<T>()` for every kind Drover serves.
pub fn visit_kinds<V: KindVisitor>(visitor: &mut V) {
    crate::kinds::register_all(visitor);
}

/// Every registered kind's [`KindInfo`].
pub fn all_kinds() -> Vec<KindInfo> {
    struct Collect(Vec<KindInfo>);
    impl KindVisitor for Collect {
        fn visit<T: Resource>(&mut self) {
            self.0.push(T::info());
        }
    }
    let mut c = Collect(Vec::new());
    visit_kinds(&mut c);
    c.0
}

/// Finds a kind by a name a user typed (`po`, `pods`, `Pod`, `jobs.batch`, ...).
pub fn find_kind(name: &str) -> Option<KindInfo> {
    all_kinds().into_iter().find(|k| k.matches(name))
}

/// Finds a kind by `apiVersion` and `kind`, as written in a manifest.
pub fn find_kind_by_type(api_version: &str, kind: &str) -> Option<KindInfo> {
    let (group, version) = split_api_version(api_version);
    all_kinds()
        .into_iter()
        .find(|k| k.group == group && k.version == version && k.kind == kind)
}

/// Finds a kind by group and plural, as written in a REST path.
pub fn find_kind_by_resource(group: &str, plural: &str) -> Option<KindInfo> {
    all_kinds()
        .into_iter()
        .find(|k| k.group == group && k.plural == plural)
}

/// Implements [`Resource`]'s boilerplate for a kind with `api_version`, `kind` and `metadata`
/// fields (and, with `status`, a status subresource over a `status` field and a `spec` field).
#[macro_export]
macro_rules! impl_resource_meta {
    ($t:ty) => {
        fn meta(&self) -> &$crate::meta::ObjectMeta {
            &self.metadata
        }
        fn meta_mut(&mut self) -> &mut $crate::meta::ObjectMeta {
            &mut self.metadata
        }
        fn set_type_meta(&mut self) {
            self.api_version = <$t as $crate::resource::Resource>::api_version();
            self.kind = <$t as $crate::resource::Resource>::KIND.to_string();
        }
        fn type_meta(&self) -> (&str, &str) {
            (&self.api_version, &self.kind)
        }
    };
}
