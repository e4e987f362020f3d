//! gRPC transport: the `drover.v1.Api` service over the same [`ApiService`] as REST. Errors
//! cross here, once, through [`status_to_grpc`].

use std::pin::Pin;

use bytes::Bytes;
use drover_api::Status;
use drover_api::error::Reason;
use drover_client::proto::{self, api_server};
use drover_client::status_to_grpc;
use futures::{Stream, StreamExt};

use crate::auth::User;
use crate::service::{ApiService, DeleteOptions, ListOptions, Target};
use crate::watch::{bookmark_object, frames};

/// The gRPC service.
#[derive(Clone, Debug)]
pub struct GrpcApi {
    svc: ApiService,
}

impl GrpcApi {
    pub fn new(svc: ApiService) -> Self {
        GrpcApi { svc }
    }

    /// The tonic server, accepting messages up to `limit` bytes (larger bodies are refused with
    /// a structured error by the handlers).
    pub fn server(self, limit: usize) -> api_server::ApiServer<GrpcApi> {
        api_server::ApiServer::new(self)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(usize::MAX)
    }

    fn user<M>(&self, req: &tonic::Request<M>) -> Result<User, tonic::Status> {
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let user = self
            .svc
            .authenticate(header)
            .map_err(|s| status_to_grpc(&s))?;
        if let Some(c) = req.extensions().get::<crate::connections::ConnectionAuth>() {
            c.authenticated();
        }
        Ok(user)
    }

    fn check_size(&self, body: &[u8]) -> Result<(), tonic::Status> {
        let limit = self.svc.max_body_bytes();
        if body.len() > limit {
            return Err(status_to_grpc(&Status::new(
                Reason::RequestEntityTooLarge,
                format!(
                    "the request body is {} bytes, larger than the limit of {limit} bytes",
                    body.len()
                ),
            )));
        }
        Ok(())
    }
}

fn target(t: Option<proto::Target>) -> Result<Target, tonic::Status> {
    let t = t.ok_or_else(|| status_to_grpc(&Status::bad_request("target: required")))?;
    Ok(Target {
        api_version: t.api_version,
        resource: t.resource,
        namespace: t.namespace,
        name: t.name,
        subresource: t.subresource,
    })
}

fn grpc<T>(r: Result<T, Status>) -> Result<T, tonic::Status> {
    r.map_err(|s| status_to_grpc(&s))
}

fn object(b: Bytes) -> tonic::Response<proto::ObjectReply> {
    tonic::Response::new(proto::ObjectReply { object: b })
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;

#[tonic::async_trait]
impl api_server::Api for GrpcApi {
    async fn create(
        &self,
        req: tonic::Request<proto::CreateRequest>,
    ) -> Result<tonic::Response<proto::ObjectReply>, tonic::Status> {
        let user = self.user(&req)?;
        let r = req.into_inner();
        self.check_size(&r.object)?;
        let t = target(r.target)?;
        Ok(object(grpc(self.svc.create(&user, &t, &r.object).await)?))
    }

    async fn get(
        &self,
        req: tonic::Request<proto::GetRequest>,
    ) -> Result<tonic::Response<proto::ObjectReply>, tonic::Status> {
        let user = self.user(&req)?;
        let t = target(req.into_inner().target)?;
        Ok(object(grpc(self.svc.get(&user, &t).await)?))
    }

    async fn list(
        &self,
        req: tonic::Request<proto::ListRequest>,
    ) -> Result<tonic::Response<proto::ListReply>, tonic::Status> {
        let user = self.user(&req)?;
        let r = req.into_inner();
        let t = target(r.target)?;
        let opts = ListOptions {
            label_selector: r.label_selector,
            field_selector: r.field_selector,
            limit: r.limit,
            continue_token: r.continue_token,
            ..Default::default()
        };
        let list = grpc(self.svc.list(&user, &t, &opts).await)?;
        Ok(tonic::Response::new(proto::ListReply { list }))
    }

    async fn update(
        &self,
        req: tonic::Request<proto::UpdateRequest>,
    ) -> Result<tonic::Response<proto::ObjectReply>, tonic::Status> {
        let user = self.user(&req)?;
        let r = req.into_inner();
        self.check_size(&r.object)?;
        let t = target(r.target)?;
        Ok(object(grpc(self.svc.update(&user, &t, &r.object).await)?))
    }

    async fn patch(
        &self,
        req: tonic::Request<proto::PatchRequest>,
    ) -> Result<tonic::Response<proto::ObjectReply>, tonic::Status> {
        let user = self.user(&req)?;
        let r = req.into_inner();
        self.check_size(&r.patch)?;
        if !r.patch_type.is_empty() && r.patch_type != drover_client::MERGE_PATCH {
            return Err(status_to_grpc(&Status::new(
                Reason::UnsupportedMediaType,
                format!(
                    "patch type {:?} is not supported: expected {}",
                    r.patch_type,
                    drover_client::MERGE_PATCH
                ),
            )));
        }
        let t = target(r.target)?;
        Ok(object(grpc(self.svc.patch(&user, &t, &r.patch).await)?))
    }

    async fn delete(
        &self,
        req: tonic::Request<proto::DeleteRequest>,
    ) -> Result<tonic::Response<proto::ObjectReply>, tonic::Status> {
        let user = self.user(&req)?;
        let r = req.into_inner();
        let t = target(r.target)?;
        let opts = DeleteOptions {
            propagation_policy: r.propagation_policy,
            precondition_resource_version: r.precondition_resource_version,
            precondition_uid: r.precondition_uid,
            grace_period_seconds: r.grace_period_seconds,
        };
        Ok(object(grpc(self.svc.delete(&user, &t, &opts).await)?))
    }

    type WatchStream = BoxStream<proto::WatchEvent>;

    async fn watch(
        &self,
        req: tonic::Request<proto::WatchRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        let user = self.user(&req)?;
        let r = req.into_inner();
        let t = target(r.target)?;
        let opts = ListOptions {
            label_selector: r.label_selector,
            field_selector: r.field_selector,
            resource_version: r.resource_version,
            allow_bookmarks: r.allow_bookmarks,
            timeout: match r.timeout_seconds {
                0 => None,
                s if s > 0 => Some(std::time::Duration::from_secs(s as u64)),
                s => {
                    return Err(status_to_grpc(&Status::bad_request(format!(
                        "timeoutSeconds: {s} is negative: expected a number of seconds"
                    ))));
                }
            },
            ..Default::default()
        };
        let start = grpc(self.svc.watch(&user, &t, &opts).await)?;
        let resolved = grpc(self.svc.resolve(&t))?;
        let api_version = resolved.info.api_version();
        let kind = resolved.info.kind.to_string();
        let bookmarks = opts.allow_bookmarks.then(|| {
            let render: crate::watch::RenderBookmark =
                Box::new(move |rev| bookmark_object(&api_version, &kind, rev));
            (self.svc.config.bookmark_interval, render)
        });
        let stream = frames(self.svc.cache().clone(), start, bookmarks, opts.timeout).map(|f| {
            Ok(proto::WatchEvent {
                r#type: f.event_type.to_string(),
                object: f.object,
            })
        });
        Ok(tonic::Response::new(Box::pin(stream)))
    }

    type LogsStream = BoxStream<proto::LogChunk>;

    async fn logs(
        &self,
        req: tonic::Request<proto::LogsRequest>,
    ) -> Result<tonic::Response<Self::LogsStream>, tonic::Status> {
        let _user = self.user(&req)?;
        let r = req.into_inner();
        let query = crate::logs::LogsQuery {
            namespace: r.namespace,
            pod: r.pod,
            container: r.container,
            follow: r.follow,
            tail_lines: r.tail_lines,
        };
        let stream = grpc(crate::logs::stream(&self.svc, &query).await)?;
        let stream = stream.map(|chunk| {
            chunk
                .map(|data| proto::LogChunk { data })
                .map_err(|s| status_to_grpc(&s))
        });
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}
