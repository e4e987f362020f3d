//! Validation helpers shared by every kind: names, labels, metadata.

use crate::error::{FieldError, FieldErrors};
use crate::meta::ObjectMeta;

/// Maximum length of a DNS-1123 subdomain (object names).
pub const DNS1123_SUBDOMAIN_MAX: usize = 253;
/// Maximum length of a DNS-1123 label (namespace names).
pub const DNS1123_LABEL_MAX: usize = 63;

/// Checks a DNS-1123 label: lower-case alphanumerics and '-', starting and ending alphanumeric.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= DNS1123_LABEL_MAX
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Checks a DNS-1123 subdomain: dot-separated DNS-1123 labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= DNS1123_SUBDOMAIN_MAX && s.split('.').all(is_dns1123_label)
}

/// Validates the metadata of an object on create or update.
pub fn validate_object_meta(meta: &ObjectMeta, namespaced: bool) -> Result<(), FieldErrors> {
    let mut errs = FieldErrors::new();
    if meta.name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else if !is_dns1123_subdomain(&meta.name) {
        errs.push(FieldError::invalid(
            "metadata.name",
            format!(
                "{:?}: expected a lower-case RFC 1123 subdomain (letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters)",
                meta.name
            ),
        ));
    }
    if namespaced && !meta.namespace.is_empty() && !is_dns1123_label(&meta.namespace) {
        errs.push(FieldError::invalid(
            "metadata.namespace",
            format!(
                "{:?}: expected a lower-case RFC 1123 label (at most 63 characters)",
                meta.namespace
            ),
        ));
    }
    errs.extend(validate_labels(&meta.labels, "metadata.labels"));
    errs.extend(validate_annotations(
        &meta.annotations,
        "metadata.annotations",
    ));
    errs.into_result()
}

/// What a qualified name (label key, resource name) must look like, for error messages.
pub const QUALIFIED_NAME_EXPECTED: &str = "expected an optional DNS subdomain prefix and '/', then a name of at most 63 characters (letters, digits, '-', '_' and '.', starting and ending with a letter or digit), e.g. 'example.com/my-name'";
/// What a label value must look like, for error messages.
pub const LABEL_VALUE_EXPECTED: &str = "expected an empty string or at most 63 characters (letters, digits, '-', '_' and '.', starting and ending with a letter or digit)";

/// The name part of a qualified name, or a label value that is not empty.
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Checks a qualified name (label and annotation keys, resource names): `[prefix/]name`, where
/// the prefix is a DNS-1123 subdomain.
pub fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns1123_subdomain(prefix) && is_qualified_name_part(name),
        None => is_qualified_name_part(s),
    }
}

/// Checks a label value: empty, or at most 63 characters of `[A-Za-z0-9_.-]` starting and ending
/// with a letter or digit.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_qualified_name_part(s)
}

/// Checks a C identifier-like environment variable name loosely, as Kubernetes now does: not
/// empty and without `=`.
pub fn is_env_var_name(s: &str) -> bool {
    !s.is_empty() && !s.contains('=') && s.chars().all(|c| !c.is_control())
}

/// Checks label keys and values; `path` is the map's field path (`metadata.labels`).
pub fn validate_labels(
    labels: &std::collections::BTreeMap<String, String>,
    path: &str,
) -> FieldErrors {
    let mut errs = FieldErrors::new();
    for (k, v) in labels {
        if !is_qualified_name(k) {
            errs.push(FieldError::invalid(
                format!("{path}[{k}]"),
                format!("key {k:?}: {QUALIFIED_NAME_EXPECTED}"),
            ));
        }
        if !is_label_value(v) {
            errs.push(FieldError::invalid(
                format!("{path}[{k}]"),
                format!("value {v:?}: {LABEL_VALUE_EXPECTED}"),
            ));
        }
    }
    errs
}

/// The most bytes all of an object's annotations may take, keys and values together
/// (Kubernetes' `TotalAnnotationSizeLimitB`). Every write of the object stores, keeps in the
/// watch window and sends to every watcher the whole annotation map again, so without a cap a
/// few patches of one large annotation hold gigabytes.
pub const TOTAL_ANNOTATION_SIZE_LIMIT_BYTES: usize = 256 * 1024;

/// Checks annotation keys (values are free-form) and their total size.
pub fn validate_annotations(
    annotations: &std::collections::BTreeMap<String, String>,
    path: &str,
) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let mut total = 0usize;
    for (k, v) in annotations {
        total += k.len() + v.len();
        if !is_qualified_name(k) {
            errs.push(FieldError::invalid(
                format!("{path}[{k}]"),
                format!("key {k:?}: {QUALIFIED_NAME_EXPECTED}"),
            ));
        }
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT_BYTES {
        errs.push(FieldError::new(
            crate::error::FieldErrorKind::TooLong,
            path,
            format!(
                "annotations take {total} bytes (keys and values): expected at most {TOTAL_ANNOTATION_SIZE_LIMIT_BYTES} bytes"
            ),
        ));
    }
    errs
}

/// The field paths of every string (map keys included) in `value` that holds a NUL character,
/// as `spec.containers[0].command[1]`. NUL ends a string for the C interfaces a value reaches
/// (`execve` arguments and environment, file names, log lines), so what ran would differ from
/// what the API shows: Drover refuses it in every field rather than per field.
pub fn nul_errors(value: &serde_json::Value) -> FieldErrors {
    fn walk(v: &serde_json::Value, path: &mut String, errs: &mut FieldErrors) {
        match v {
            serde_json::Value::String(s) if s.contains('\0') => errs.push(FieldError::invalid(
                path.clone(),
                "expected a string without NUL (\\u0000) characters",
            )),
            serde_json::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    walk(item, path, errs);
                    path.truncate(len);
                }
            }
            serde_json::Value::Object(map) => {
                for (k, item) in map {
                    let len = path.len();
                    if k.contains('\0') {
                        errs.push(FieldError::invalid(
                            format!("{path}[{}]", k.replace('\0', "\\u0000")),
                            "expected a key without NUL (\\u0000) characters",
                        ));
                        continue;
                    }
                    // Keys of free-form maps (labels, annotations, resources) read as `[key]`.
                    let free_form = ["labels", "annotations", "Selector", "limits", "requests"]
                        .iter()
                        .any(|m| path.ends_with(m));
                    if free_form || !k.bytes().all(|b| b.is_ascii_alphanumeric()) {
                        path.push_str(&format!("[{k}]"));
                    } else {
                        if !path.is_empty() {
                            path.push('.');
                        }
                        path.push_str(k);
                    }
                    walk(item, path, errs);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }
    let mut errs = FieldErrors::new();
    walk(value, &mut String::new(), &mut errs);
    errs
}

/// Pushes an error when `value` is not one of `allowed` (an empty value is allowed when
/// `allow_empty`, for fields that get a default).
pub fn check_enum(
    errs: &mut FieldErrors,
    path: &str,
    value: &str,
    allowed: &[&str],
    allow_empty: bool,
) {
    if (value.is_empty() && allow_empty) || allowed.contains(&value) {
        return;
    }
    if value.is_empty() {
        errs.push(FieldError::required(
            path,
            format!("expected one of {}", allowed.join(", ")),
        ));
    } else {
        errs.push(FieldError::not_supported(
            path,
            format!("{value:?}: expected one of {}", allowed.join(", ")),
        ));
    }
}

/// Pushes an error when `value` is set and below `min`.
pub fn check_min<T: PartialOrd + std::fmt::Display + Copy>(
    errs: &mut FieldErrors,
    path: &str,
    value: Option<T>,
    min: T,
) {
    if let Some(v) = value
        && v < min
    {
        errs.push(FieldError::invalid(
            path,
            format!("{v}: expected a number greater than or equal to {min}"),
        ));
    }
}

/// Pushes an error when `value` is set and not greater than zero.
pub fn check_positive<T: PartialOrd + std::fmt::Display + Copy + Default>(
    errs: &mut FieldErrors,
    path: &str,
    value: Option<T>,
) {
    if let Some(v) = value
        && v <= T::default()
    {
        errs.push(FieldError::invalid(
            path,
            format!("{v}: expected a number greater than 0"),
        ));
    }
}

/// Pushes an error when a set name is not a DNS-1123 subdomain.
pub fn check_subdomain(errs: &mut FieldErrors, path: &str, value: &str) {
    if !value.is_empty() && !is_dns1123_subdomain(value) {
        errs.push(FieldError::invalid(
            path,
            format!("{value:?}: expected a lower-case RFC 1123 subdomain (letters, digits, '-' and '.', starting and ending with a letter or digit)"),
        ));
    }
}

/// Pushes an error when a set name is not a DNS-1123 label.
pub fn check_label(errs: &mut FieldErrors, path: &str, value: &str) {
    if !value.is_empty() && !is_dns1123_label(value) {
        errs.push(FieldError::invalid(
            path,
            format!("{value:?}: expected a lower-case RFC 1123 label (letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)"),
        ));
    }
}
