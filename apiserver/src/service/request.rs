//! The requests the service serves, one type per verb, as both transports parse them: REST from
//! a method, path, query and body (`rest::request`), gRPC from its messages (`grpc.rs`). What
//! follows the parse is the same for both: [`super::ApiService::serve`].

use bytes::Bytes;
use drover_api::Resource;
use drover_api::authentication::TokenReview;
use drover_api::resource::split_api_version;
use drover_client::proto;

use crate::auth::{Attributes, Verb};

/// What a request is about, as the caller named it (checked by [`super::ApiService::resolve`]).
#[derive(Clone, Debug, Default)]
pub struct Target {
    pub api_version: String,
    pub resource: String,
    pub namespace: String,
    pub name: String,
    pub subresource: String,
}

impl Target {
    /// The target of a gRPC request, which every call must carry.
    pub fn from_proto(t: Option<proto::Target>) -> Result<Target, drover_api::Status> {
        let t = t.ok_or_else(|| drover_api::Status::bad_request("target: required"))?;
        Ok(Target {
            api_version: t.api_version,
            resource: t.resource,
            namespace: t.namespace,
            name: t.name,
            subresource: t.subresource,
        })
    }

    fn attributes(&self, verb: Verb) -> Attributes<'_> {
        Attributes {
            verb,
            api_group: split_api_version(&self.api_version).0,
            resource: &self.resource,
            subresource: &self.subresource,
            namespace: &self.namespace,
            name: &self.name,
        }
    }
}

/// Options of list and watch.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    pub label_selector: String,
    pub field_selector: String,
    pub limit: u64,
    pub continue_token: String,
    pub resource_version: String,
    pub allow_bookmarks: bool,
    /// Watches only: end the watch after this long.
    pub timeout: Option<std::time::Duration>,
}

/// Options of delete.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    pub propagation_policy: String,
    pub precondition_resource_version: String,
    pub precondition_uid: String,
    pub grace_period_seconds: Option<i64>,
}

/// A create: a POST of `body` to the collection of `target`.
#[derive(Clone, Debug)]
pub struct Create {
    pub target: Target,
    pub body: Bytes,
}

/// `pods/{name}/binding`: assigns the pod to a node and devices (a create of the subresource).
#[derive(Clone, Debug)]
pub struct Bind {
    pub target: Target,
    pub body: Bytes,
}

/// A TokenReview: answered, never stored (a create of `tokenreviews`).
#[derive(Clone, Debug)]
pub struct ReviewToken {
    pub target: Target,
    pub body: Bytes,
}

/// A get of one object.
#[derive(Clone, Debug)]
pub struct Get {
    pub target: Target,
}

/// A list of a collection.
#[derive(Clone, Debug)]
pub struct List {
    pub target: Target,
    pub options: ListOptions,
}

/// A watch of a collection.
#[derive(Clone, Debug)]
pub struct Watch {
    pub target: Target,
    pub options: ListOptions,
}

/// A replace of an object, or of its `status` subresource (the target's subresource says which).
#[derive(Clone, Debug)]
pub struct Update {
    pub target: Target,
    pub body: Bytes,
}

/// A JSON merge patch of an object, or of its `status` subresource.
#[derive(Clone, Debug)]
pub struct Patch {
    pub target: Target,
    pub patch: Bytes,
}

/// A delete of an object.
#[derive(Clone, Debug)]
pub struct Delete {
    pub target: Target,
    pub options: DeleteOptions,
}

/// Every request the service serves.
#[derive(Clone, Debug)]
pub enum Request {
    Create(Create),
    Bind(Bind),
    ReviewToken(ReviewToken),
    Get(Get),
    List(List),
    Watch(Watch),
    Update(Update),
    Patch(Patch),
    Delete(Delete),
}

impl Request {
    /// A POST of `body` to `target`: a create, or the subresource a create stands for (a
    /// binding, a token review).
    pub fn create(target: Target, body: Bytes) -> Request {
        // The plural first: it is a plain comparison, while `api_version()` builds a String.
        if target.resource == TokenReview::PLURAL
            && target.api_version == TokenReview::api_version()
        {
            return Request::ReviewToken(ReviewToken { target, body });
        }
        if target.subresource == "binding" {
            return Request::Bind(Bind { target, body });
        }
        Request::Create(Create { target, body })
    }

    pub fn target(&self) -> &Target {
        match self {
            Request::Create(Create { target, .. })
            | Request::Bind(Bind { target, .. })
            | Request::ReviewToken(ReviewToken { target, .. })
            | Request::Get(Get { target })
            | Request::List(List { target, .. })
            | Request::Watch(Watch { target, .. })
            | Request::Update(Update { target, .. })
            | Request::Patch(Patch { target, .. })
            | Request::Delete(Delete { target, .. }) => target,
        }
    }

    pub fn verb(&self) -> Verb {
        match self {
            Request::Create(_) | Request::Bind(_) | Request::ReviewToken(_) => Verb::Create,
            Request::Get(_) => Verb::Get,
            Request::List(_) => Verb::List,
            Request::Watch(_) => Verb::Watch,
            Request::Update(_) => Verb::Update,
            Request::Patch(_) => Verb::Patch,
            Request::Delete(_) => Verb::Delete,
        }
    }

    /// The body the caller sent, if this verb has one.
    pub fn body(&self) -> Option<&Bytes> {
        match self {
            Request::Create(Create { body, .. })
            | Request::Bind(Bind { body, .. })
            | Request::ReviewToken(ReviewToken { body, .. })
            | Request::Update(Update { body, .. })
            | Request::Patch(Patch { patch: body, .. }) => Some(body),
            Request::Get(_) | Request::List(_) | Request::Watch(_) | Request::Delete(_) => None,
        }
    }

    /// What the authoriser decides on.
    pub fn attributes(&self) -> Attributes<'_> {
        self.target().attributes(self.verb())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_is_the_request_its_target_names() {
        let t = |api_version: &str, resource: &str, name: &str, sub: &str| Target {
            api_version: api_version.into(),
            resource: resource.into(),
            namespace: "ns".into(),
            name: name.into(),
            subresource: sub.into(),
        };
        let cases = [
            ("a create", t("v1", "pods", "", ""), "create"),
            ("a binding", t("v1", "pods", "p", "binding"), "bind"),
            (
                "a token review",
                t("authentication.k8s.io/v1", "tokenreviews", "", ""),
                "review",
            ),
            // Only the group that serves TokenReview makes one.
            (
                "another group's tokenreviews",
                t("v1", "tokenreviews", "", ""),
                "create",
            ),
        ];
        for (name, target, want) in cases {
            let got = match Request::create(target, Bytes::new()) {
                Request::Create(_) => "create",
                Request::Bind(_) => "bind",
                Request::ReviewToken(_) => "review",
                other => panic!("{name}: {other:?}"),
            };
            assert_eq!(got, want, "{name}");
        }
        let r = Request::create(t("batch/v1", "jobs", "j", "status"), Bytes::new());
        let a = r.attributes();
        assert_eq!(
            (
                a.verb,
                a.api_group,
                a.resource,
                a.subresource,
                a.namespace,
                a.name
            ),
            (Verb::Create, "batch", "jobs", "status", "ns", "j")
        );
    }
}
