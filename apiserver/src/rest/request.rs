//! From an HTTP request to a [`Request`]: the path names the target (`parse_path`), the method
//! and query the verb and its options, the body (JSON or YAML, at most `max_body_bytes`) the
//! object.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{HeaderMap, Method, header};
use bytes::Bytes;
use drover_api::Status;
use drover_api::error::Reason;
use drover_api::resource::find_kind_by_resource;

use crate::service::{
    ApiService, Delete, DeleteOptions, Get, List, ListOptions, Patch, Request, Target, Update,
    Watch,
};

/// Parses `/api/v1/...` or `/apis/{group}/{version}/...`.
pub fn parse_path(path: &str) -> Result<Target, Status> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let not_found = || {
        Status::new(
            Reason::NotFound,
            format!("the server could not find the requested resource: {path}"),
        )
    };
    let (group, version, rest) = match segs.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(not_found()),
    };
    let api_version = drover_api::resource::api_version_of(group, version);
    let mut t = Target {
        api_version,
        ..Default::default()
    };
    let is_namespaced_plural =
        |p: &str| find_kind_by_resource(group, p).is_some_and(|k| k.namespaced);
    match rest {
        ["namespaces", ns, plural, tail @ ..] if is_namespaced_plural(plural) => {
            t.namespace = ns.to_string();
            t.resource = plural.to_string();
            match tail {
                [] => {}
                [name] => t.name = name.to_string(),
                [name, sub] => {
                    t.name = name.to_string();
                    t.subresource = sub.to_string();
                }
                _ => return Err(not_found()),
            }
        }
        [plural, tail @ ..] if !plural.is_empty() => {
            t.resource = plural.to_string();
            match tail {
                [] => {}
                [name] => t.name = name.to_string(),
                [name, sub] => {
                    t.name = name.to_string();
                    t.subresource = sub.to_string();
                }
                _ => return Err(not_found()),
            }
        }
        _ => return Err(not_found()),
    }
    Ok(t)
}

/// The query of a request, by parameter.
pub(super) type Query = HashMap<String, String>;

fn flag(q: &Query, k: &str) -> bool {
    q.get(k)
        .is_some_and(|v| v == "true" || v == "1" || v.is_empty())
}

/// The request an HTTP request stands for. Reads the body only for the verbs that have one.
pub(super) async fn parse(
    svc: &ApiService,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    q: &Query,
    body: Body,
) -> Result<Request, Status> {
    let target = parse_path(path)?;
    for key in ["limit", "timeoutSeconds"] {
        if let Some(v) = q.get(key)
            && v.parse::<u64>().is_err()
        {
            return Err(Status::bad_request(format!(
                "{key}: {v:?} is not a non-negative integer"
            )));
        }
    }
    Ok(match *method {
        Method::GET if target.subresource == "log" => {
            return Err(Status::new(
                Reason::ServiceUnavailable,
                "pod logs are served through the gRPC Logs call (drover logs)",
            ));
        }
        Method::GET if flag(q, "watch") => Request::Watch(Watch {
            target,
            options: list_options(q),
        }),
        Method::GET if target.name.is_empty() => Request::List(List {
            target,
            options: list_options(q),
        }),
        Method::GET => Request::Get(Get { target }),
        Method::POST => Request::create(target, read_object(svc, headers, body).await?),
        Method::PUT => Request::Update(Update {
            target,
            body: read_object(svc, headers, body).await?,
        }),
        Method::PATCH => Request::Patch(Patch {
            target,
            patch: read_patch(svc, headers, body).await?,
        }),
        Method::DELETE => Request::Delete(Delete {
            target,
            options: delete_options(q, &read(svc, body).await?)?,
        }),
        ref other => {
            return Err(Status::new(
                Reason::MethodNotAllowed,
                format!("method {other} is not supported"),
            ));
        }
    })
}

/// The options of a list or watch (the numbers are checked by [`parse`]).
fn list_options(q: &Query) -> ListOptions {
    ListOptions {
        label_selector: q.get("labelSelector").cloned().unwrap_or_default(),
        field_selector: q.get("fieldSelector").cloned().unwrap_or_default(),
        limit: q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0),
        continue_token: q.get("continue").cloned().unwrap_or_default(),
        resource_version: q.get("resourceVersion").cloned().unwrap_or_default(),
        allow_bookmarks: flag(q, "allowWatchBookmarks"),
        timeout: q
            .get("timeoutSeconds")
            .and_then(|s| s.parse().ok())
            .filter(|s| *s > 0)
            .map(std::time::Duration::from_secs),
    }
}

/// The options of a delete: from the query, then from a `DeleteOptions` body if there is one.
fn delete_options(q: &Query, raw: &[u8]) -> Result<DeleteOptions, Status> {
    let mut opts = DeleteOptions {
        propagation_policy: q.get("propagationPolicy").cloned().unwrap_or_default(),
        grace_period_seconds: match q.get("gracePeriodSeconds") {
            Some(g) => Some(g.parse().map_err(|_| {
                Status::bad_request(format!("gracePeriodSeconds: {g:?} is not an integer"))
            })?),
            None => None,
        },
        ..Default::default()
    };
    if raw.is_empty() {
        return Ok(opts);
    }
    let v: serde_json::Value = serde_json::from_slice(raw)
        .map_err(|e| Status::bad_request(format!("DeleteOptions: {e}")))?;
    if let Some(p) = v.get("propagationPolicy").and_then(|p| p.as_str()) {
        opts.propagation_policy = p.to_string();
    }
    if let Some(g) = v.get("gracePeriodSeconds").and_then(|g| g.as_i64()) {
        opts.grace_period_seconds = Some(g);
    }
    if let Some(pre) = v.get("preconditions") {
        opts.precondition_uid = pre
            .get("uid")
            .and_then(|u| u.as_str())
            .unwrap_or_default()
            .to_string();
        opts.precondition_resource_version = pre
            .get("resourceVersion")
            .and_then(|u| u.as_str())
            .unwrap_or_default()
            .to_string();
    }
    Ok(opts)
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Reads the body, stopping at the limit (the service checks the size of every body it is
/// given; here it bounds what is read at all).
async fn read(svc: &ApiService, body: Body) -> Result<Bytes, Status> {
    axum::body::to_bytes(body, svc.max_body_bytes())
        .await
        .map_err(|_| svc.body_too_large(None))
}

/// Reads an object, converting YAML to JSON.
async fn read_object(svc: &ApiService, headers: &HeaderMap, body: Body) -> Result<Bytes, Status> {
    let bytes = read(svc, body).await?;
    let ctype = content_type(headers);
    if ctype.contains("yaml") {
        return super::yaml::yaml_body_to_json(bytes).await;
    }
    // No content type means JSON, as in Kubernetes: only a body that says it is YAML pays for
    // the YAML parser.
    if ctype.contains("json") || ctype.is_empty() {
        // Decoding into the kind reports malformed JSON as a bad request; no need to parse twice.
        return Ok(bytes);
    }
    Err(Status::new(
        Reason::UnsupportedMediaType,
        format!(
            "content type {ctype:?} is not supported: expected application/json, application/yaml or application/merge-patch+json"
        ),
    ))
}

/// Reads a JSON merge patch.
async fn read_patch(svc: &ApiService, headers: &HeaderMap, body: Body) -> Result<Bytes, Status> {
    let ctype = content_type(headers);
    if !ctype.is_empty()
        && !ctype.starts_with("application/merge-patch+json")
        && !ctype.starts_with("application/json")
    {
        return Err(Status::new(
            Reason::UnsupportedMediaType,
            format!("patch type {ctype:?} is not supported: expected application/merge-patch+json"),
        ));
    }
    read(svc, body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_like_kubernetes() {
        let t = parse_path("/api/v1/namespaces/ns1/pods/p1/status").unwrap();
        assert_eq!(
            (
                t.namespace.as_str(),
                t.resource.as_str(),
                t.name.as_str(),
                t.subresource.as_str()
            ),
            ("ns1", "pods", "p1", "status")
        );
        let t = parse_path("/api/v1/namespaces/ns1").unwrap();
        assert_eq!(
            (t.resource.as_str(), t.name.as_str()),
            ("namespaces", "ns1")
        );
        let t = parse_path("/api/v1/namespaces/ns1/status").unwrap();
        assert_eq!(
            (t.resource.as_str(), t.name.as_str(), t.subresource.as_str()),
            ("namespaces", "ns1", "status")
        );
        let t = parse_path("/apis/batch/v1/namespaces/a/jobs").unwrap();
        assert_eq!(
            (
                t.api_version.as_str(),
                t.namespace.as_str(),
                t.resource.as_str()
            ),
            ("batch/v1", "a", "jobs")
        );
        let t = parse_path("/api/v1/nodes/n1").unwrap();
        assert_eq!((t.resource.as_str(), t.name.as_str()), ("nodes", "n1"));
        let t = parse_path("/api/v1/pods").unwrap();
        assert_eq!((t.resource.as_str(), t.namespace.as_str()), ("pods", ""));
        assert!(parse_path("/api/v1/namespaces/a/pods/b/c/d").is_err());
        assert!(parse_path("/nope").is_err());
    }
}
