//! REST/JSON transport on Kubernetes' own paths (`/api/v1/namespaces/{ns}/pods/{name}`,
//! `/apis/batch/v1/jobs`, ...). Bodies are JSON or YAML; errors are `Status` objects; watches are
//! streams of JSON lines.
//!
//! A request takes three steps: [`request`] parses it into the service's [`Request`] (path,
//! method, query, body; YAML through [`yaml`]), [`ApiService::serve`] executes it, and
//! `respond` encodes the reply.

pub mod discovery;
pub mod request;
pub mod yaml;

use std::convert::Infallible;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use bytes::Bytes;
use drover_api::Status;
use futures::StreamExt;

use crate::connections::ConnectionAuth;
use crate::service::{ApiService, Reply, Request, Watching};

pub use request::parse_path;
pub use yaml::{MAX_YAML_FLOW_DEPTH, flow_too_deep, yaml_to_json};

/// The REST routes.
pub fn router(svc: ApiService) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/version", get(version))
        .route("/api", any(handle))
        .route("/apis", any(handle))
        .route("/api/{*rest}", any(handle))
        .route("/apis/{*rest}", any(handle))
        .with_state(svc)
}

/// The Kubernetes API version whose shapes Drover serves, as `/version` reports it.
const KUBERNETES_MAJOR: &str = "1";
const KUBERNETES_MINOR: &str = "30";

/// `/version` as Kubernetes answers it: kubectl parses `gitVersion` as semver, so it is the
/// Kubernetes version served with Drover's own as the pre-release part
/// (`v1.30.0-drover.0.1.0`); `drover` carries our version plainly.
async fn version() -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "major": KUBERNETES_MAJOR,
        "minor": KUBERNETES_MINOR,
        "gitVersion": format!(
            "v{KUBERNETES_MAJOR}.{KUBERNETES_MINOR}.0-drover.{}",
            env!("CARGO_PKG_VERSION")
        ),
        "gitCommit": "",
        "gitTreeState": "",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        "drover": env!("CARGO_PKG_VERSION"),
    }))
}

/// An error response.
pub fn error_response(s: &Status) -> Response {
    let code = StatusCode::from_u16(s.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(s).unwrap_or_default();
    let mut response = (code, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(after) = s.details.as_ref().and_then(|d| d.retry_after_seconds) {
        // As Kubernetes does for 429 and 503: the hint in a header as well as in the Status.
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(after));
    }
    response
}

fn json_response(code: StatusCode, body: Bytes) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn handle(
    State(svc): State<ApiService>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<request::Query>,
    connection: Option<axum::Extension<ConnectionAuth>>,
    body: Body,
) -> Response {
    let connection = connection.map(|axum::Extension(c)| c);
    match handle_inner(&svc, method, uri, headers, q, connection, body).await {
        Ok(r) => r,
        Err(s) => error_response(&s),
    }
}

/// Authenticate, parse, serve, respond.
async fn handle_inner(
    svc: &ApiService,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    q: request::Query,
    connection: Option<ConnectionAuth>,
    body: Body,
) -> Result<Response, Status> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let user = svc.authenticate(authorization, connection.as_ref())?;
    if let Some(discovery) = discovery::Discovery::of_path(uri.path()) {
        // Every authenticated caller may read discovery (Kubernetes' system:discovery role).
        if method != Method::GET {
            return Err(Status::new(
                drover_api::error::Reason::MethodNotAllowed,
                format!("method {method} is not supported on {}", uri.path()),
            ));
        }
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let doc = discovery.document(host)?;
        return Ok(json_response(
            StatusCode::OK,
            Bytes::from(serde_json::to_vec(&doc).unwrap_or_default()),
        ));
    }
    let request = request::parse(svc, &method, uri.path(), &headers, &q, body).await?;
    let created = matches!(
        request,
        Request::Create(_) | Request::Bind(_) | Request::ReviewToken(_)
    );
    let reply = svc.serve(&user, request).await?;
    Ok(respond(created, reply))
}

/// Encodes a reply: objects as JSON (201 for what a POST made), a watch as a stream of JSON
/// lines.
fn respond(created: bool, reply: Reply) -> Response {
    match reply {
        Reply::Json(body) if created => json_response(StatusCode::CREATED, body),
        Reply::Json(body) => json_response(StatusCode::OK, body),
        Reply::Watch(w) => watch_response(w),
    }
}

fn watch_response(w: Watching) -> Response {
    let stream = w.frames().map(|f| {
        let mut line = Vec::with_capacity(f.object.len() + 32);
        line.extend_from_slice(b"{\"type\":\"");
        line.extend_from_slice(f.event_type.as_bytes());
        line.extend_from_slice(b"\",\"object\":");
        line.extend_from_slice(&f.object);
        line.extend_from_slice(b"}\n");
        Ok::<_, Infallible>(Bytes::from(line))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json;stream=watch")],
        Body::from_stream(stream),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_api::error::{Reason, StatusDetails};

    /// kubectl parses gitVersion as semver (`kubectl version` exited 1 on "drover-0.1.0").
    #[tokio::test]
    async fn version_is_semver_with_drover_as_pre_release() {
        let body = version().await.into_response().into_body();
        let bytes = axum::body::to_bytes(body, 1 << 16).await.expect("body");
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        let git = v["gitVersion"].as_str().expect("gitVersion");
        let rest = git
            .strip_prefix("v1.30.0-drover.")
            .expect("v1.30.0-drover.<ours>");
        assert_eq!(rest, env!("CARGO_PKG_VERSION"));
        assert_eq!(
            (v["major"].as_str(), v["minor"].as_str()),
            (Some("1"), Some("30"))
        );
        assert_eq!(v["drover"], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn a_retry_hint_is_also_a_retry_after_header() {
        let mut s = Status::new(Reason::ServiceUnavailable, "storage: down");
        assert!(
            error_response(&s)
                .headers()
                .get(header::RETRY_AFTER)
                .is_none()
        );
        s.details = Some(StatusDetails {
            retry_after_seconds: Some(1),
            ..Default::default()
        });
        let r = error_response(&s);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            r.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
    }
}
