//! gRPC transport: the `drover.v1.Api` service over the same [`ApiService`] as REST. Each call
//! authenticates, parses its message into a [`Request`] and hands it to
//! [`ApiService::serve`]; errors cross here, once, through [`status_to_grpc`].

use std::pin::Pin;

use drover_api::Status;
use drover_api::error::Reason;
use drover_client::proto::{self, api_server};
use drover_client::status_to_grpc;
use futures::{Stream, StreamExt};

use crate::auth::{Attributes, User, Verb};
use crate::service::{
    ApiService, Delete, DeleteOptions, Get, List, ListOptions, Patch, Reply, Request, Target,
    Update, Watch, Watching,
};

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
    /// a structured error by [`ApiService::serve`]).
    pub fn server(self, limit: usize) -> api_server::ApiServer<GrpcApi> {
        api_server::ApiServer::new(self)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(usize::MAX)
    }

    fn user<M>(&self, req: &tonic::Request<M>) -> Result<User, Status> {
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        self.svc.authenticate(
            header,
            req.extensions().get::<crate::connections::ConnectionAuth>(),
        )
    }

    /// Authenticates the call, parses its message with `parse` and serves it.
    async fn serve<M>(
        &self,
        req: tonic::Request<M>,
        parse: impl FnOnce(M) -> Result<Request, Status>,
    ) -> Result<Reply, tonic::Status> {
        let user = self.user(&req).map_err(|s| status_to_grpc(&s))?;
        let request = parse(req.into_inner()).map_err(|s| status_to_grpc(&s))?;
        self.svc
            .serve(&user, request)
            .await
            .map_err(|s| status_to_grpc(&s))
    }

    /// [`serve`](Self::serve) for the calls answered with one object.
    async fn object<M>(
        &self,
        req: tonic::Request<M>,
        parse: impl FnOnce(M) -> Result<Request, Status>,
    ) -> Result<tonic::Response<proto::ObjectReply>, tonic::Status> {
        let object = json(self.serve(req, parse).await?)?;
        Ok(tonic::Response::new(proto::ObjectReply { object }))
    }
}

fn json(reply: Reply) -> Result<bytes::Bytes, tonic::Status> {
    match reply {
        Reply::Json(b) => Ok(b),
        Reply::Watch(_) => Err(tonic::Status::internal(
            "a watch answered a call for an object",
        )),
    }
}

fn watching(reply: Reply) -> Result<Watching, tonic::Status> {
    match reply {
        Reply::Watch(w) => Ok(w),
        Reply::Json(_) => Err(tonic::Status::internal("an object answered a watch")),
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;

#[tonic::async_trait]
impl api_server::Api for GrpcApi {
    async fn create(
        &self,
        req: tonic::Request<proto::CreateRequest>,
    ) -> Result<tonic::Response<proto::ObjectReply>, tonic::Status> {
        self.object(req, |r| {
            Ok(Request::create(Target::from_proto(r.target)?, r.object))
        })
        .await
    }

    async fn get(
        &self,
        req: tonic::Request<proto::GetRequest>,
    ) -> Result<tonic::Response<proto::ObjectReply>, tonic::Status> {
        self.object(req, |r| {
            Ok(Request::Get(Get {
                target: Target::from_proto(r.target)?,
            }))
        })
        .await
    }

    async fn list(
        &self,
        req: tonic::Request<proto::ListRequest>,
    ) -> Result<tonic::Response<proto::ListReply>, tonic::Status> {
        let reply = self
            .serve(req, |r| {
                Ok(Request::List(List {
                    target: Target::from_proto(r.target)?,
                    options: ListOptions {
                        label_selector: r.label_selector,
                        field_selector: r.field_selector,
                        limit: r.limit,
                        continue_token: r.continue_token,
                        ..Default::default()
                    },
                }))
            })
            .await?;
        Ok(tonic::Response::new(proto::ListReply {
            list: json(reply)?,
        }))
    }

    async fn update(
        &self,
        req: tonic::Request<proto::UpdateRequest>,
    ) -> Result<tonic::Response<proto::ObjectReply>, tonic::Status> {
        self.object(req, |r| {
            Ok(Request::Update(Update {
                target: Target::from_proto(r.target)?,
                body: r.object,
            }))
        })
        .await
    }

    async fn patch(
        &self,
        req: tonic::Request<proto::PatchRequest>,
    ) -> Result<tonic::Response<proto::ObjectReply>, tonic::Status> {
        self.object(req, |r| {
            if !r.patch_type.is_empty() && r.patch_type != drover_client::MERGE_PATCH {
                return Err(Status::new(
                    Reason::UnsupportedMediaType,
                    format!(
                        "patch type {:?} is not supported: expected {}",
                        r.patch_type,
                        drover_client::MERGE_PATCH
                    ),
                ));
            }
            Ok(Request::Patch(Patch {
                target: Target::from_proto(r.target)?,
                patch: r.patch,
            }))
        })
        .await
    }

    async fn delete(
        &self,
        req: tonic::Request<proto::DeleteRequest>,
    ) -> Result<tonic::Response<proto::ObjectReply>, tonic::Status> {
        self.object(req, |r| {
            Ok(Request::Delete(Delete {
                target: Target::from_proto(r.target)?,
                options: DeleteOptions {
                    propagation_policy: r.propagation_policy,
                    precondition_resource_version: r.precondition_resource_version,
                    precondition_uid: r.precondition_uid,
                    grace_period_seconds: r.grace_period_seconds,
                },
            }))
        })
        .await
    }

    type WatchStream = BoxStream<proto::WatchEvent>;

    async fn watch(
        &self,
        req: tonic::Request<proto::WatchRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        let reply = self
            .serve(req, |r| {
                let timeout = match r.timeout_seconds {
                    0 => None,
                    s if s > 0 => Some(std::time::Duration::from_secs(s as u64)),
                    s => {
                        return Err(Status::bad_request(format!(
                            "timeoutSeconds: {s} is negative: expected a number of seconds"
                        )));
                    }
                };
                Ok(Request::Watch(Watch {
                    target: Target::from_proto(r.target)?,
                    options: ListOptions {
                        label_selector: r.label_selector,
                        field_selector: r.field_selector,
                        resource_version: r.resource_version,
                        allow_bookmarks: r.allow_bookmarks,
                        timeout,
                        ..Default::default()
                    },
                }))
            })
            .await?;
        let stream = watching(reply)?.frames().map(|f| {
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
        let user = self.user(&req).map_err(|s| status_to_grpc(&s))?;
        let r = req.into_inner();
        let query = crate::logs::LogsQuery {
            namespace: r.namespace,
            pod: r.pod,
            container: r.container,
            follow: r.follow,
            tail_lines: r.tail_lines,
        };
        // Reading a pod's log is a get of its `log` subresource, as in Kubernetes.
        let attributes = Attributes {
            verb: Verb::Get,
            api_group: "",
            resource: "pods",
            subresource: "log",
            namespace: &query.namespace,
            name: &query.pod,
        };
        self.svc
            .authorize(&user, &attributes)
            .map_err(|s| status_to_grpc(&s))?;
        let stream = crate::logs::stream(&self.svc, &query)
            .await
            .map_err(|s| status_to_grpc(&s))?;
        let stream = stream.map(|chunk| {
            chunk
                .map(|data| proto::LogChunk { data })
                .map_err(|s| status_to_grpc(&s))
        });
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}
