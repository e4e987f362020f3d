//! v1 Namespace.

use serde::{Deserialize, Serialize};

use crate::error::FieldErrors;
use crate::meta::ObjectMeta;
use crate::resource::Resource;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Namespace {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<NamespaceSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<NamespaceStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceStatus {
    /// `Active` or `Terminating`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
}

impl Namespace {
    pub fn new(name: impl Into<String>) -> Self {
        let mut ns = Namespace {
            metadata: ObjectMeta {
                name: name.into(),
                ..Default::default()
            },
            ..Default::default()
        };
        ns.set_type_meta();
        ns
    }
}

impl Resource for Namespace {
    const GROUP: &'static str = "";
    const VERSION: &'static str = "v1";
    const KIND: &'static str = "Namespace";
    const PLURAL: &'static str = "namespaces";
    const SINGULAR: &'static str = "namespace";
    const SHORT_NAMES: &'static [&'static str] = &["ns"];
    const NAMESPACED: bool = false;
    const HAS_STATUS: bool = true;
    /// The server alone moves the phase (`Active`, then `Terminating`).
    const STATUS_OWNED_BY_SYSTEM: bool = true;

    crate::impl_resource_meta!(Namespace);

    /// A namespace's name is a DNS label (no dots, at most 63 characters), not a subdomain as
    /// other names are: it is the `metadata.namespace` of everything in it, which must be one.
    fn validate(&self) -> Result<(), FieldErrors> {
        let mut errs = crate::validation::validate_object_meta(&self.metadata, false)
            .err()
            .unwrap_or_default();
        let name = &self.metadata.name;
        if !name.is_empty()
            && crate::validation::is_dns1123_subdomain(name)
            && !crate::validation::is_dns1123_label(name)
        {
            errs.push(crate::error::FieldError::invalid(
                "metadata.name",
                format!(
                    "{name:?}: expected a lower-case RFC 1123 label (letters, digits and '-', starting and ending with a letter or digit, no '.', at most 63 characters)"
                ),
            ));
        }
        errs.into_result()
    }

    fn default_fields(&mut self) {
        let status = self.status.get_or_insert_with(Default::default);
        if status.phase.is_empty() {
            status.phase = "Active".into();
        }
    }

    fn copy_status_from(&mut self, other: &Self) {
        self.status = other.status.clone();
    }

    fn field(&self, path: &str) -> Option<String> {
        match path {
            "status.phase" => Some(
                self.status
                    .as_ref()
                    .map(|s| s.phase.clone())
                    .unwrap_or_default(),
            ),
            _ => None,
        }
    }
}
