//! Authorisation: may this user do this verb on this resource? Asked once per request, on the one
//! request path both transports share ([`crate::service::ApiService::serve`]), after the user is
//! known and before the target is resolved or anything is read from the cache, so a denied caller
//! learns nothing about what exists (as Kubernetes: 403 even for a resource that is not served).
//!
//! The attributes are Kubernetes' (verb, API group, resource, subresource, namespace, name), so
//! RBAC (issue 16) and a node authoriser can plug in here as further [`Authorizer`]s. Today the
//! only one is [`AlwaysAllow`]: every authenticated user may do everything (a token the server
//! mints for the log proxy authenticates nothing, so it reaches no verb).

use drover_api::Status;

use super::User;

/// What a request does, in Kubernetes' words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    Create,
    Get,
    List,
    Watch,
    Update,
    Patch,
    Delete,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }
}

impl std::fmt::Display for Verb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an authoriser decides on: borrowed from the request, so asking costs no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attributes<'a> {
    pub verb: Verb,
    /// The API group (`""` for the core group, `batch`, ...).
    pub api_group: &'a str,
    /// The plural (`pods`).
    pub resource: &'a str,
    /// `status`, `binding`, `log`, or `""`.
    pub subresource: &'a str,
    /// `""` for cluster-scoped resources and for requests across all namespaces.
    pub namespace: &'a str,
    /// `""` for collections.
    pub name: &'a str,
}

/// An authoriser's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused, with why (shown to the caller).
    Deny(String),
    /// Neither: a later authoriser may decide; when none allows, the request is refused.
    NoOpinion,
}

/// Decides whether a user may do what a request asks.
pub trait Authorizer: Send + Sync {
    fn authorize(&self, user: &User, attributes: &Attributes<'_>) -> Decision;
}

/// Every authenticated user may do everything: the behaviour before authorisation had a seam.
#[derive(Clone, Copy, Debug, Default)]
pub struct AlwaysAllow;

impl Authorizer for AlwaysAllow {
    fn authorize(&self, _user: &User, _attributes: &Attributes<'_>) -> Decision {
        Decision::Allow
    }
}

/// The `Forbidden` Status of a refused request, in Kubernetes' words: it names the user, the
/// verb, the resource (and subresource), the group and the namespace.
pub fn forbidden(user: &User, a: &Attributes<'_>, reason: &str) -> Status {
    let resource = if a.subresource.is_empty() {
        a.resource.to_string()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let what = if a.name.is_empty() {
        resource.clone()
    } else {
        format!("{resource} {:?}", a.name)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace {:?}", a.namespace)
    };
    let mut message = format!(
        "{what} is forbidden: User {:?} cannot {} resource {resource:?} in API group {:?} {scope}",
        user.name, a.verb, a.api_group
    );
    if !reason.is_empty() {
        message.push_str(": ");
        message.push_str(reason);
    }
    Status::forbidden(message).about(a.api_group, a.resource, a.name)
}

/// Asks `authorizer`; anything but [`Decision::Allow`] is the `Forbidden` Status.
pub fn check(
    authorizer: &dyn Authorizer,
    user: &User,
    attributes: &Attributes<'_>,
) -> Result<(), Status> {
    match authorizer.authorize(user, attributes) {
        Decision::Allow => Ok(()),
        Decision::Deny(reason) => Err(forbidden(user, attributes, &reason)),
        Decision::NoOpinion => Err(forbidden(user, attributes, "no authoriser allowed it")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            name: "alice".into(),
            groups: vec![],
        }
    }

    #[test]
    fn decisions_map_to_forbidden_statuses() {
        struct Fixed(Decision);
        impl Authorizer for Fixed {
            fn authorize(&self, _: &User, _: &Attributes<'_>) -> Decision {
                self.0.clone()
            }
        }
        let a = Attributes {
            verb: Verb::Get,
            api_group: "batch",
            resource: "jobs",
            subresource: "status",
            namespace: "ns1",
            name: "j1",
        };
        let cases = [
            ("allow", Decision::Allow, None),
            (
                "deny",
                Decision::Deny("not today".into()),
                Some(
                    "jobs/status \"j1\" is forbidden: User \"alice\" cannot get resource \"jobs/status\" in API group \"batch\" in the namespace \"ns1\": not today",
                ),
            ),
            (
                "no opinion",
                Decision::NoOpinion,
                Some(
                    "jobs/status \"j1\" is forbidden: User \"alice\" cannot get resource \"jobs/status\" in API group \"batch\" in the namespace \"ns1\": no authoriser allowed it",
                ),
            ),
        ];
        for (name, decision, want) in cases {
            let got = check(&Fixed(decision), &user(), &a);
            match (got, want) {
                (Ok(()), None) => {}
                (Err(s), Some(message)) => {
                    assert_eq!(s.code, 403, "{name}");
                    assert_eq!(s.reason, drover_api::error::Reason::Forbidden, "{name}");
                    assert_eq!(s.message, message, "{name}");
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
        assert_eq!(check(&AlwaysAllow, &user(), &a), Ok(()));
    }
}
