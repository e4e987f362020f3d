//! The one router both transports share a port through: the REST routes, the gRPC service, and
//! what answers a path neither serves.
//!
//! tonic's routes end in a fallback that answers every path with an empty gRPC reply (HTTP 200),
//! and its service answers any method name under `/drover.v1.Api/` the same way: `GET /foo` and
//! `GET /drover.v1.Api/nope` looked like success (issue 12 item 12). Here a gRPC caller
//! (content-type `application/grpc…`) still gets gRPC's `UNIMPLEMENTED` for an unknown method;
//! anyone else gets the Kubernetes `Status` 404 that `rest/` renders for unknown resources.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, Uri, header};
use axum::response::Response;
use drover_api::Status;
use drover_api::error::Reason;
use futures::future::{Either, Ready, ready};
use tonic::server::NamedService;

use crate::service::ApiService;

/// REST and gRPC on one router, every other path answered by [`unknown_path`].
pub fn app(service: ApiService) -> Router {
    let grpc = crate::grpc::GrpcApi::new(service.clone()).server(drover_client::MAX_MESSAGE_BYTES);
    crate::rest::router(service)
        .merge(tonic::service::Routes::new(GrpcOnly(grpc)).into_axum_router())
        .fallback(unknown_path)
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/grpc"))
}

fn not_found(method: &Method, uri: &Uri) -> Response {
    crate::rest::error_response(&Status::new(
        Reason::NotFound,
        format!(
            "the server could not find the requested resource: {method} {}",
            uri.path()
        ),
    ))
}

/// Answers a path that is neither a REST route nor a gRPC service.
async fn unknown_path(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if is_grpc(&headers) {
        return tonic::Status::unimplemented(format!("unknown method {}", uri.path()))
            .into_http::<Body>();
    }
    not_found(&method, &uri)
}

/// A gRPC service that answers only gRPC requests: anything else under its path is an unknown
/// resource. Costs a header lookup per call, no allocation.
#[derive(Clone)]
struct GrpcOnly<S>(S);

impl<S: NamedService> NamedService for GrpcOnly<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower_service::Service<Request<tonic::body::Body>> for GrpcOnly<S>
where
    S: tower_service::Service<
            Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        >,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Either<S::Future, Ready<Result<Self::Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<tonic::body::Body>) -> Self::Future {
        if is_grpc(req.headers()) {
            return Either::Left(self.0.call(req));
        }
        let (parts, body) = not_found(req.method(), req.uri()).into_parts();
        Either::Right(ready(Ok(http::Response::from_parts(
            parts,
            tonic::body::Body::new(body),
        ))))
    }
}
