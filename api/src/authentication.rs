//! `authentication.k8s.io/v1` TokenReview: "who does this bearer token belong to, and for which
//! audiences is it valid?". Not a stored kind: a create is answered with the review filled in.
//!
//! Node agents ask it about the tokens their log servers receive (as the kubelet's webhook
//! authentication does), with their own audience, so a token the API server minted for one node
//! is good on that node only.

use serde::{Deserialize, Serialize};

use crate::error::{FieldError, FieldErrors};
use crate::meta::ObjectMeta;
use crate::resource::Resource;

/// The audience of the API server itself: what user tokens are valid for.
pub const API_AUDIENCE: &str = "drover:apiserver";
/// The prefix of a node agent's audience (`drover:node:NAME`).
pub const NODE_AUDIENCE_PREFIX: &str = "drover:node:";

/// The audience of the agent of node `node`.
pub fn node_audience(node: &str) -> String {
    format!("{NODE_AUDIENCE_PREFIX}{node}")
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenReview {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: TokenReviewSpec,
    #[serde(default)]
    pub status: TokenReviewStatus,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenReviewSpec {
    /// The bearer token to review.
    #[serde(default)]
    pub token: String,
    /// The audiences the caller accepts; empty means the API server's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenReviewStatus {
    #[serde(default)]
    pub authenticated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserInfo>,
    /// The requested audiences the token is valid for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Why the token was not authenticated.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserInfo {
    #[serde(default)]
    pub username: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

impl Resource for TokenReview {
    const GROUP: &'static str = "authentication.k8s.io";
    const VERSION: &'static str = "v1";
    const KIND: &'static str = "TokenReview";
    const PLURAL: &'static str = "tokenreviews";
    const SINGULAR: &'static str = "tokenreview";
    const NAMESPACED: bool = false;
    const HAS_STATUS: bool = true;
    const STATUS_OWNED_BY_SYSTEM: bool = true;

    crate::impl_resource_meta!(TokenReview);

    fn validate(&self) -> Result<(), FieldErrors> {
        let mut errs = FieldErrors::new();
        if self.spec.token.is_empty() {
            errs.push(FieldError::required(
                "spec.token",
                "expected the bearer token to review",
            ));
        }
        errs.into_result()
    }
}
