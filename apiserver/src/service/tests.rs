//! The one request path, through both transports: what the authoriser sees and what a
//! refusal looks like.

use std::sync::Mutex;

use axum::body::Body;
use drover_api::error::Reason;
use drover_client::proto::{self, api_server::Api};
use http_body_util::BodyExt;
use tower_service::Service;

use super::*;
use crate::auth::{Attributes, Decision};

/// Refuses everything, and remembers what it was asked.
#[derive(Default)]
struct DenyAll(Mutex<Vec<String>>);

impl Authorizer for DenyAll {
    fn authorize(&self, user: &User, a: &Attributes<'_>) -> Decision {
        let asked = format!(
            "{} {} {}/{}/{} ns={} name={}",
            user.name, a.verb, a.api_group, a.resource, a.subresource, a.namespace, a.name
        );
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(asked);
        Decision::Deny("the test authoriser says no".into())
    }
}

fn grpc_target(api_version: &str, resource: &str, name: &str) -> Option<proto::Target> {
    Some(proto::Target {
        api_version: api_version.into(),
        resource: resource.into(),
        namespace: "default".into(),
        name: name.into(),
        subresource: String::new(),
    })
}

fn with_token<M>(message: M, token: &str) -> tonic::Request<M> {
    let mut req = tonic::Request::new(message);
    let value = format!("Bearer {token}").parse().expect("header value");
    req.metadata_mut().insert("authorization", value);
    req
}

/// A Status from a gRPC error, as the client decodes it.
fn from_grpc(s: tonic::Status) -> Status {
    match drover_client::status_to_error("test", s) {
        drover_client::ClientError::Api(s) => s,
        other => panic!("not an API error: {other:?}"),
    }
}

async fn rest_call(svc: &ApiService, method: &str, path: &str, token: &str) -> Status {
    let mut router = crate::rest::router(svc.clone());
    let body = if method == "POST" {
        Body::from(r#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"j1"}}"#)
    } else {
        Body::empty()
    };
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(body)
        .expect("request");
    std::future::poll_fn(|cx| Service::<http::Request<Body>>::poll_ready(&mut router, cx))
        .await
        .expect("ready");
    let res = router.call(req).await.expect("response");
    assert_eq!(res.status(), http::StatusCode::FORBIDDEN, "{method} {path}");
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    serde_json::from_slice(&bytes).expect("a Status")
}

#[tokio::test]
async fn a_denied_request_is_forbidden_on_both_transports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ServerConfig::new(dir.path()).listen("127.0.0.1:0".parse().expect("addr"));
    let server = crate::start(config).await.expect("server starts");
    let token = server.admin_token.clone();
    let authorizer = Arc::new(DenyAll::default());
    let svc = server.service.clone().with_authorizer(authorizer.clone());
    let grpc = crate::grpc::GrpcApi::new(svc.clone());

    // Nothing named j1 exists: the refusal comes before the target is looked up.
    let jobs = "/apis/batch/v1/namespaces/default/jobs";
    let cases: Vec<(&str, Status, &str)> = vec![
        (
            "REST get",
            rest_call(&svc, "GET", &format!("{jobs}/j1"), &token).await,
            "admin get batch/jobs/ ns=default name=j1",
        ),
        (
            "REST create",
            rest_call(&svc, "POST", jobs, &token).await,
            "admin create batch/jobs/ ns=default name=",
        ),
        (
            "gRPC get",
            from_grpc(
                grpc.get(with_token(
                    proto::GetRequest {
                        target: grpc_target("batch/v1", "jobs", "j1"),
                    },
                    &token,
                ))
                .await
                .expect_err("denied"),
            ),
            "admin get batch/jobs/ ns=default name=j1",
        ),
        (
            "gRPC create",
            from_grpc(
                grpc.create(with_token(
                    proto::CreateRequest {
                        target: grpc_target("batch/v1", "jobs", ""),
                        object: Bytes::from_static(b"{}"),
                    },
                    &token,
                ))
                .await
                .expect_err("denied"),
            ),
            "admin create batch/jobs/ ns=default name=",
        ),
    ];
    let asked = authorizer
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    assert_eq!(
        asked.len(),
        cases.len(),
        "asked once per request: {asked:?}"
    );
    for ((name, status, want_asked), asked) in cases.into_iter().zip(asked) {
        assert_eq!(status.code, 403, "{name}: {status:?}");
        assert_eq!(status.reason, Reason::Forbidden, "{name}");
        let verb = want_asked.split(' ').nth(1).unwrap_or_default();
        assert!(
            status
                .message
                .contains(&format!("cannot {verb} resource \"jobs\"")),
            "{name}: {}",
            status.message
        );
        assert!(
            status.message.contains("the test authoriser says no"),
            "{name}: {}",
            status.message
        );
        assert_eq!(asked, want_asked, "{name}");
    }
    server.shutdown().await.expect("shutdown");
}
