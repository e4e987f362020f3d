//! Structured errors: Kubernetes' `Status` object, and field-level validation errors.
//!
//! Every error the API server returns, on REST and on gRPC, is a [`Status`]: a machine-readable
//! `reason` and HTTP `code`, a human `message`, and for `Invalid` the field paths and what was
//! expected.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a request failed; the string forms are Kubernetes' `StatusReason` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    AlreadyExists,
    Conflict,
    Invalid,
    /// The request body is larger than the server accepts.
    RequestEntityTooLarge,
    UnsupportedMediaType,
    MethodNotAllowed,
    NotAcceptable,
    /// A watch or list asked for a resource version that has been compacted: relist.
    Expired,
    Gone,
    TooManyRequests,
    Timeout,
    ServiceUnavailable,
    InternalError,
    #[serde(other)]
    Unknown,
}

impl Reason {
    /// The HTTP status code that goes with the reason.
    pub fn http_code(self) -> u16 {
        match self {
            Reason::BadRequest => 400,
            Reason::Unauthorized => 401,
            Reason::Forbidden => 403,
            Reason::NotFound => 404,
            Reason::MethodNotAllowed => 405,
            Reason::NotAcceptable => 406,
            Reason::AlreadyExists | Reason::Conflict => 409,
            Reason::Expired | Reason::Gone => 410,
            Reason::RequestEntityTooLarge => 413,
            Reason::UnsupportedMediaType => 415,
            Reason::Invalid => 422,
            Reason::TooManyRequests => 429,
            Reason::InternalError | Reason::Unknown => 500,
            Reason::ServiceUnavailable => 503,
            Reason::Timeout => 504,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadRequest => "BadRequest",
            Reason::Unauthorized => "Unauthorized",
            Reason::Forbidden => "Forbidden",
            Reason::NotFound => "NotFound",
            Reason::AlreadyExists => "AlreadyExists",
            Reason::Conflict => "Conflict",
            Reason::Invalid => "Invalid",
            Reason::RequestEntityTooLarge => "RequestEntityTooLarge",
            Reason::UnsupportedMediaType => "UnsupportedMediaType",
            Reason::MethodNotAllowed => "MethodNotAllowed",
            Reason::NotAcceptable => "NotAcceptable",
            Reason::Expired => "Expired",
            Reason::Gone => "Gone",
            Reason::TooManyRequests => "TooManyRequests",
            Reason::Timeout => "Timeout",
            Reason::ServiceUnavailable => "ServiceUnavailable",
            Reason::InternalError => "InternalError",
            Reason::Unknown => "Unknown",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a field failed validation (Kubernetes' `field.ErrorType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FieldErrorKind {
    #[serde(rename = "FieldValueRequired")]
    Required,
    #[serde(rename = "FieldValueInvalid")]
    Invalid,
    #[serde(rename = "FieldValueNotSupported")]
    NotSupported,
    #[serde(rename = "FieldValueDuplicate")]
    Duplicate,
    #[serde(rename = "FieldValueForbidden")]
    Forbidden,
    #[serde(rename = "FieldValueTooLong")]
    TooLong,
    #[serde(rename = "FieldValueTooMany")]
    TooMany,
    #[serde(rename = "FieldValueNotFound")]
    NotFound,
}

/// One field that failed validation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// The field path, e.g. `spec.containers[0].resources.limits[cpu]`.
    pub field: String,
    pub kind: FieldErrorKind,
    /// What is wrong and what was expected.
    pub message: String,
}

impl FieldError {
    pub fn new(kind: FieldErrorKind, field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind,
            message: message.into(),
        }
    }
    pub fn required(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(FieldErrorKind::Required, field, message)
    }
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(FieldErrorKind::Invalid, field, message)
    }
    pub fn not_supported(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(FieldErrorKind::NotSupported, field, message)
    }
    pub fn forbidden(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(FieldErrorKind::Forbidden, field, message)
    }
    pub fn duplicate(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(FieldErrorKind::Duplicate, field, message)
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A non-empty set of field errors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldErrors(pub Vec<FieldError>);

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn push(&mut self, e: FieldError) {
        self.0.push(e);
    }
    pub fn extend(&mut self, other: FieldErrors) {
        self.0.extend(other.0);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// `Ok(())` when empty, the errors otherwise.
    pub fn into_result(self) -> Result<(), FieldErrors> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl From<FieldError> for FieldErrors {
    fn from(e: FieldError) -> Self {
        FieldErrors(vec![e])
    }
}

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FieldErrors {}

/// One cause in a [`Status`]'s details.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusCause {
    #[serde(default, rename = "reason", skip_serializing_if = "Option::is_none")]
    pub kind: Option<FieldErrorKind>,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub field: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u32>,
}

/// A failed request, as the API returns it (Kubernetes' `metav1.Status`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    #[serde(default = "status_api_version")]
    pub api_version: String,
    #[serde(default = "status_kind")]
    pub kind: String,
    /// Always `Failure` for errors.
    #[serde(default = "failure")]
    pub status: String,
    pub message: String,
    pub reason: Reason,
    pub code: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
}

fn status_api_version() -> String {
    "v1".into()
}
fn status_kind() -> String {
    "Status".into()
}
fn failure() -> String {
    "Failure".into()
}

impl Status {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Status {
            api_version: status_api_version(),
            kind: status_kind(),
            status: failure(),
            message: message.into(),
            reason,
            code: reason.http_code(),
            details: None,
        }
    }

    /// Adds the object the error is about.
    pub fn about(mut self, group: &str, kind: &str, name: &str) -> Self {
        let d = self.details.get_or_insert_with(Default::default);
        d.group = group.into();
        d.kind = kind.into();
        d.name = name.into();
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Reason::BadRequest, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(Reason::Unauthorized, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Reason::Forbidden, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Reason::InternalError, message)
    }
    pub fn not_found(kind: &str, name: &str) -> Self {
        Self::new(Reason::NotFound, format!("{kind} \"{name}\" not found"))
    }
    pub fn already_exists(kind: &str, name: &str) -> Self {
        Self::new(
            Reason::AlreadyExists,
            format!("{kind} \"{name}\" already exists"),
        )
    }
    pub fn conflict(kind: &str, name: &str, why: &str) -> Self {
        Self::new(
            Reason::Conflict,
            format!("operation cannot be fulfilled on {kind} \"{name}\": {why}"),
        )
    }
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(Reason::Expired, message)
    }

    /// An `Invalid` status listing every field error.
    pub fn invalid(kind: &str, name: &str, errors: &FieldErrors) -> Self {
        let mut s = Self::new(
            Reason::Invalid,
            format!("{kind} \"{name}\" is invalid: {errors}"),
        );
        let d = s.details.get_or_insert_with(Default::default);
        d.kind = kind.into();
        d.name = name.into();
        d.causes = errors
            .0
            .iter()
            .map(|e| StatusCause {
                kind: Some(e.kind),
                message: e.message.clone(),
                field: e.field.clone(),
            })
            .collect();
        s
    }

    /// The field paths named by an `Invalid` status.
    pub fn fields(&self) -> Vec<&str> {
        self.details
            .iter()
            .flat_map(|d| d.causes.iter().map(|c| c.field.as_str()))
            .collect()
    }

    pub fn is(&self, reason: Reason) -> bool {
        self.reason == reason
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.reason, self.code, self.message)
    }
}

impl std::error::Error for Status {}
