//! REST/JSON transport on Kubernetes' own paths (`/api/v1/namespaces/{ns}/pods/{name}`,
//! `/apis/batch/v1/jobs`, ...). Bodies are JSON or YAML; errors are `Status` objects; watches are
//! streams of JSON lines.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use bytes::Bytes;
use drover_api::Status;
use drover_api::error::Reason;
use drover_api::resource::find_kind_by_resource;
use futures::StreamExt;

use crate::service::{ApiService, DeleteOptions, ListOptions, Target};
use crate::watch::{bookmark_object, frames};

/// The REST routes.
pub fn router(svc: ApiService) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/version", get(version))
        .route("/api/{*rest}", any(handle))
        .route("/apis/{*rest}", any(handle))
        .with_state(svc)
}

async fn version() -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "major": "1",
        "minor": "0",
        "gitVersion": concat!("drover-", env!("CARGO_PKG_VERSION")),
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    }))
}

/// An error response.
pub fn error_response(s: &Status) -> Response {
    let code = StatusCode::from_u16(s.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(s).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn json_response(code: StatusCode, body: Bytes) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

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

/// Reads the body, converting YAML to JSON.
async fn read_body(svc: &ApiService, headers: &HeaderMap, body: Body) -> Result<Bytes, Status> {
    let limit = svc.max_body_bytes();
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        Status::new(
            Reason::RequestEntityTooLarge,
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    })?;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ctype.contains("yaml") {
        return yaml_body_to_json(bytes).await;
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

/// Bodies at least this large are converted from YAML on a blocking thread, not an async worker.
const YAML_BLOCKING_BYTES: usize = 64 * 1024;

/// [`yaml_to_json`], off the async workers for large bodies.
async fn yaml_body_to_json(bytes: Bytes) -> Result<Bytes, Status> {
    if bytes.len() < YAML_BLOCKING_BYTES {
        return yaml_to_json(&bytes);
    }
    tokio::task::spawn_blocking(move || yaml_to_json(&bytes))
        .await
        .map_err(|e| Status::internal(format!("the YAML conversion stopped: {e}")))?
}

/// The deepest nesting of a YAML body's flow collections (`[`, `{`) accepted. The YAML parser's
/// cost grows with the square of that depth (100,000 levels in 200 KB cost tens of seconds), and
/// the decoder refuses anything nested deeper than 128 levels anyway; block nesting needs
/// indentation, so it cannot get deep cheaply.
pub const MAX_YAML_FLOW_DEPTH: usize = 128;

/// Where the flow collections of `bytes` first nest deeper than `max`, as (line, column), both
/// from 1. A linear scan that follows YAML's rules for where quoted scalars and comments start
/// (at the start of a token), so brackets inside them do not count and a quote inside a plain
/// scalar (`don't`) hides nothing.
pub fn flow_too_deep(bytes: &[u8], max: usize) -> Option<(usize, usize)> {
    #[derive(PartialEq)]
    enum In {
        Plain,
        Double,
        Single,
        Comment,
    }
    let (mut state, mut depth, mut line, mut line_start) = (In::Plain, 0usize, 1, 0);
    let mut prev = b'\n';
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\n' {
            line += 1;
            line_start = i + 1;
        }
        let token_start = matches!(
            prev,
            b' ' | b'\t' | b'\n' | b'\r' | b'[' | b'{' | b',' | b':' | b'-' | b'?'
        );
        match state {
            In::Plain => match b {
                b'[' | b'{' => {
                    depth += 1;
                    if depth > max {
                        return Some((line, i - line_start + 1));
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                b'"' if token_start => state = In::Double,
                b'\'' if token_start => state = In::Single,
                b'#' if matches!(prev, b' ' | b'\t' | b'\n' | b'\r') => state = In::Comment,
                _ => {}
            },
            In::Double => match b {
                b'\\' => i += 1,
                b'"' => state = In::Plain,
                _ => {}
            },
            In::Single => {
                if b == b'\'' {
                    if bytes.get(i + 1) == Some(&b'\'') {
                        i += 1;
                    } else {
                        state = In::Plain;
                    }
                }
            }
            In::Comment => {
                if b == b'\n' {
                    state = In::Plain;
                }
            }
        }
        prev = b;
        i += 1;
    }
    None
}

/// Converts one YAML document to JSON.
pub fn yaml_to_json(bytes: &[u8]) -> Result<Bytes, Status> {
    if let Some((line, column)) = flow_too_deep(bytes, MAX_YAML_FLOW_DEPTH) {
        return Err(Status::bad_request(format!(
            "the request body nests deeper than {MAX_YAML_FLOW_DEPTH} levels (line {line}, column {column})"
        )));
    }
    let v: serde_json::Value = yaml_serde::from_slice(bytes).map_err(|e| {
        Status::bad_request(format!("the request body is not valid YAML or JSON: {e}"))
    })?;
    serde_json::to_vec(&v)
        .map(Bytes::from)
        .map_err(|e| Status::internal(e.to_string()))
}

fn flag(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k)
        .is_some_and(|v| v == "true" || v == "1" || v.is_empty())
}

async fn handle(
    State(svc): State<ApiService>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    connection: Option<axum::Extension<crate::connections::ConnectionAuth>>,
    body: Body,
) -> Response {
    let connection = connection.map(|axum::Extension(c)| c);
    match handle_inner(&svc, method, uri, headers, q, connection, body).await {
        Ok(r) => r,
        Err(s) => error_response(&s),
    }
}

async fn handle_inner(
    svc: &ApiService,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    q: HashMap<String, String>,
    connection: Option<crate::connections::ConnectionAuth>,
    body: Body,
) -> Result<Response, Status> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let user = svc.authenticate(auth)?;
    if let Some(c) = connection {
        c.authenticated();
    }
    let t = parse_path(uri.path())?;
    let list_opts = || ListOptions {
        label_selector: q.get("labelSelector").cloned().unwrap_or_default(),
        field_selector: q.get("fieldSelector").cloned().unwrap_or_default(),
        limit: q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0),
        continue_token: q.get("continue").cloned().unwrap_or_default(),
        resource_version: q.get("resourceVersion").cloned().unwrap_or_default(),
        allow_bookmarks: flag(&q, "allowWatchBookmarks"),
        timeout: q
            .get("timeoutSeconds")
            .and_then(|s| s.parse().ok())
            .filter(|s| *s > 0)
            .map(std::time::Duration::from_secs),
    };
    for key in ["limit", "timeoutSeconds"] {
        if let Some(v) = q.get(key)
            && v.parse::<u64>().is_err()
        {
            return Err(Status::bad_request(format!(
                "{key}: {v:?} is not a non-negative integer"
            )));
        }
    }
    match method {
        Method::GET if t.subresource == "log" => Err(Status::new(
            Reason::ServiceUnavailable,
            "pod logs are served through the gRPC Logs call (drover logs)",
        )),
        Method::GET if flag(&q, "watch") => {
            let opts = list_opts();
            let start = svc.watch(&user, &t, &opts).await?;
            let r = svc.resolve(&t)?;
            let api_version = r.info.api_version();
            let kind = r.info.kind.to_string();
            let bookmarks = opts.allow_bookmarks.then(|| {
                let render: crate::watch::RenderBookmark =
                    Box::new(move |rev| bookmark_object(&api_version, &kind, rev));
                (svc.config.bookmark_interval, render)
            });
            let stream = frames(svc.cache().clone(), start, bookmarks, opts.timeout).map(|f| {
                let mut line = Vec::with_capacity(f.object.len() + 32);
                line.extend_from_slice(b"{\"type\":\"");
                line.extend_from_slice(f.event_type.as_bytes());
                line.extend_from_slice(b"\",\"object\":");
                line.extend_from_slice(&f.object);
                line.extend_from_slice(b"}\n");
                Ok::<_, Infallible>(Bytes::from(line))
            });
            Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json;stream=watch")],
                Body::from_stream(stream),
            )
                .into_response())
        }
        Method::GET if t.name.is_empty() => Ok(json_response(
            StatusCode::OK,
            svc.list(&user, &t, &list_opts()).await?,
        )),
        Method::GET => Ok(json_response(StatusCode::OK, svc.get(&user, &t).await?)),
        Method::POST => {
            let body = read_body(svc, &headers, body).await?;
            Ok(json_response(
                StatusCode::CREATED,
                svc.create(&user, &t, &body).await?,
            ))
        }
        Method::PUT => {
            let body = read_body(svc, &headers, body).await?;
            Ok(json_response(
                StatusCode::OK,
                svc.update(&user, &t, &body).await?,
            ))
        }
        Method::PATCH => {
            let ctype = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !ctype.is_empty()
                && !ctype.starts_with("application/merge-patch+json")
                && !ctype.starts_with("application/json")
            {
                return Err(Status::new(
                    Reason::UnsupportedMediaType,
                    format!(
                        "patch type {ctype:?} is not supported: expected application/merge-patch+json"
                    ),
                ));
            }
            let limit = svc.max_body_bytes();
            let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
                Status::new(
                    Reason::RequestEntityTooLarge,
                    format!("the request body is larger than the limit of {limit} bytes"),
                )
            })?;
            Ok(json_response(
                StatusCode::OK,
                svc.patch(&user, &t, &body).await?,
            ))
        }
        Method::DELETE => {
            let limit = svc.max_body_bytes();
            let raw = axum::body::to_bytes(body, limit).await.map_err(|_| {
                Status::new(
                    Reason::RequestEntityTooLarge,
                    format!("the request body is larger than the limit of {limit} bytes"),
                )
            })?;
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
            if !raw.is_empty() {
                let v: serde_json::Value = serde_json::from_slice(&raw)
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
            }
            Ok(json_response(
                StatusCode::OK,
                svc.delete(&user, &t, &opts).await?,
            ))
        }
        other => Err(Status::new(
            Reason::MethodNotAllowed,
            format!("method {other} is not supported"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_depth_is_counted_where_yaml_would_nest() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let cases: Vec<(String, Option<(usize, usize)>)> = vec![
            (deep(4), None),
            (deep(5), Some((1, 5))),
            (format!("a:\n  b: {}", deep(5)), Some((2, 10))),
            // Brackets in quoted scalars and comments do not nest.
            (format!("a: \"{}\"", "[".repeat(9)), None),
            (format!("a: '{}'", "{".repeat(9)), None),
            (format!("a: 'it''s {}'", "{".repeat(9)), None),
            (format!("a: \"\\\"{}\"", "[".repeat(9)), None),
            (format!("a: 1 # {}\nb: 2", "[".repeat(9)), None),
            // A quote or hash inside a plain scalar starts nothing, so it hides nothing.
            (format!("[don't{}", "[".repeat(9)), Some((1, 10))),
            (format!("[a#b{}", "[".repeat(9)), Some((1, 8))),
            (format!("{{\"a\":{}}}", deep(4)), Some((1, 9))),
        ];
        for (body, want) in cases {
            assert_eq!(flow_too_deep(body.as_bytes(), 4), want, "{body:?}");
        }
        let e = yaml_to_json(deep(100_000).as_bytes()).expect_err("too deep");
        assert!(e.message.contains("deeper than 128"), "{}", e.message);
        assert!(yaml_to_json(deep(100).as_bytes()).is_ok());
    }

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
