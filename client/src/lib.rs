//! The typed async client every component uses to talk to the API server, over gRPC.
//!
//! [`Client`] holds one HTTP/2 connection (multiplexed, reconnecting, kept alive; see `transport`)
//! and the bearer token;
//! [`Api<T>`] gives typed verbs for one kind in one namespace (or across all);
//! [`informer`] keeps a local cache of a kind up to date through list + watch.

pub mod clock;
pub mod config;
pub mod events;
pub mod informer;
pub mod leader;
pub mod stop;
mod transport;
mod typed;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tonic::metadata::AsciiMetadataValue;

use drover_api::error::{Reason, Status};
use drover_api::resource::KindInfo;

pub use config::ClientConfig;
pub use typed::{Api, DeleteParams, ListParams, PreparedCreate, WatchEvent};

/// The generated gRPC types and stubs.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("drover.v1");
}

/// Media type of JSON merge patches.
pub const MERGE_PATCH: &str = "application/merge-patch+json";

/// Largest message the client sends or accepts.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// What can go wrong talking to the API server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a structured error.
    #[error("{0}")]
    Api(Status),
    #[error("cannot reach the API server at {server}: {message}")]
    Unreachable { server: String, message: String },
    #[error("invalid client configuration: {0}")]
    Config(String),
    #[error("cannot decode the server's answer: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("cannot encode the request: {0}")]
    Encode(String),
}

impl ClientError {
    /// The structured status, when the server sent one.
    pub fn status(&self) -> Option<&Status> {
        match self {
            ClientError::Api(s) => Some(s),
            _ => None,
        }
    }
    pub fn reason(&self) -> Option<Reason> {
        self.status().map(|s| s.reason)
    }
    pub fn is_not_found(&self) -> bool {
        self.reason() == Some(Reason::NotFound)
    }
    pub fn is_conflict(&self) -> bool {
        self.reason() == Some(Reason::Conflict)
    }
    pub fn is_already_exists(&self) -> bool {
        self.reason() == Some(Reason::AlreadyExists)
    }
    /// Whether retrying later may succeed (server away or overloaded).
    pub fn is_transient(&self) -> bool {
        matches!(self, ClientError::Unreachable { .. })
            || matches!(
                self.reason(),
                Some(Reason::ServiceUnavailable | Reason::TooManyRequests | Reason::Timeout)
            )
    }
}

/// A connection to one API server.
#[derive(Clone)]
pub struct Client {
    grpc: proto::api_client::ApiClient<transport::Transport>,
    auth: AsciiMetadataValue,
    server: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.server)
            .finish()
    }
}

impl Client {
    /// A client that connects on first use and reconnects after failures, so components can
    /// start before the API server and survive its restarts.
    pub fn new(config: &ClientConfig) -> Result<Client, ClientError> {
        let server = config.server.trim_end_matches('/').to_string();
        let auth = format!("Bearer {}", config.token)
            .parse::<AsciiMetadataValue>()
            .map_err(|_| {
                ClientError::Config("token: expected printable ASCII characters".into())
            })?;
        Self::connect(server, auth)
    }

    /// Another client for the same server and credentials on a connection of its own. Clones
    /// of a client share one HTTP/2 connection, which one task serves on each side; busy
    /// components that should not queue behind each other each take their own.
    pub fn new_connection(&self) -> Result<Client, ClientError> {
        Self::connect(self.server.clone(), self.auth.clone())
    }

    fn connect(server: String, auth: AsciiMetadataValue) -> Result<Client, ClientError> {
        let transport = transport::Transport::new(&server).map_err(ClientError::Config)?;
        let origin = transport.origin();
        let grpc = proto::api_client::ApiClient::with_origin(transport, origin)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Client { grpc, auth, server })
    }

    /// The server address this client talks to.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Typed verbs for `T` across all namespaces (or for a cluster-scoped kind).
    pub fn all<T: drover_api::Resource>(&self) -> Api<T> {
        Api::new(self.clone(), None)
    }

    /// Typed verbs for `T` in `namespace`.
    pub fn namespaced<T: drover_api::Resource>(&self, namespace: &str) -> Api<T> {
        Api::new(self.clone(), Some(namespace.to_string()))
    }

    fn request<M>(&self, msg: M) -> tonic::Request<M> {
        let mut req = tonic::Request::new(msg);
        req.metadata_mut()
            .insert("authorization", self.auth.clone());
        req
    }

    fn map_err(&self, status: tonic::Status) -> ClientError {
        status_to_error(&self.server, status)
    }

    /// Creates an object given as JSON; returns the stored object as JSON.
    pub async fn create_raw(
        &self,
        target: proto::Target,
        object: impl Into<Bytes>,
    ) -> Result<Bytes, ClientError> {
        let req = self.request(proto::CreateRequest {
            target: Some(target),
            object: object.into(),
        });
        let reply = self.grpc.clone().create(req).await;
        Ok(reply.map_err(|e| self.map_err(e))?.into_inner().object)
    }

    pub async fn get_raw(&self, target: proto::Target) -> Result<Bytes, ClientError> {
        let req = self.request(proto::GetRequest {
            target: Some(target),
        });
        let reply = self.grpc.clone().get(req).await;
        Ok(reply.map_err(|e| self.map_err(e))?.into_inner().object)
    }

    pub async fn list_raw(
        &self,
        target: proto::Target,
        params: &ListParams,
    ) -> Result<Bytes, ClientError> {
        let req = self.request(proto::ListRequest {
            target: Some(target),
            label_selector: params.label_selector.clone().unwrap_or_default(),
            field_selector: params.field_selector.clone().unwrap_or_default(),
            limit: params.limit.unwrap_or(0),
            continue_token: params.continue_token.clone().unwrap_or_default(),
        });
        let reply = self.grpc.clone().list(req).await;
        Ok(reply.map_err(|e| self.map_err(e))?.into_inner().list)
    }

    pub async fn update_raw(
        &self,
        target: proto::Target,
        object: Vec<u8>,
    ) -> Result<Bytes, ClientError> {
        let req = self.request(proto::UpdateRequest {
            target: Some(target),
            object: object.into(),
        });
        let reply = self.grpc.clone().update(req).await;
        Ok(reply.map_err(|e| self.map_err(e))?.into_inner().object)
    }

    pub async fn patch_raw(
        &self,
        target: proto::Target,
        patch: Vec<u8>,
    ) -> Result<Bytes, ClientError> {
        let req = self.request(proto::PatchRequest {
            target: Some(target),
            patch: patch.into(),
            patch_type: MERGE_PATCH.into(),
        });
        let reply = self.grpc.clone().patch(req).await;
        Ok(reply.map_err(|e| self.map_err(e))?.into_inner().object)
    }

    /// Deletes an object; returns it as JSON (marked for deletion, or as it was when removed).
    pub async fn delete_raw(
        &self,
        target: proto::Target,
        params: &DeleteParams,
    ) -> Result<Bytes, ClientError> {
        let req = self.request(proto::DeleteRequest {
            target: Some(target),
            propagation_policy: params.propagation_policy.clone().unwrap_or_default(),
            precondition_resource_version: params
                .precondition_resource_version
                .clone()
                .unwrap_or_default(),
            precondition_uid: params.precondition_uid.clone().unwrap_or_default(),
            grace_period_seconds: params.grace_period_seconds,
        });
        let reply = self.grpc.clone().delete(req).await;
        Ok(reply.map_err(|e| self.map_err(e))?.into_inner().object)
    }

    /// Watches a collection; yields raw events in order.
    pub async fn watch_raw(
        &self,
        target: proto::Target,
        params: &ListParams,
        resource_version: &str,
    ) -> Result<impl Stream<Item = Result<proto::WatchEvent, ClientError>> + use<>, ClientError>
    {
        let req = self.request(proto::WatchRequest {
            target: Some(target),
            label_selector: params.label_selector.clone().unwrap_or_default(),
            field_selector: params.field_selector.clone().unwrap_or_default(),
            resource_version: resource_version.to_string(),
            allow_bookmarks: true,
            timeout_seconds: params.timeout_seconds.map(i64::from).unwrap_or(0),
        });
        let stream = self
            .grpc
            .clone()
            .watch(req)
            .await
            .map_err(|e| self.map_err(e))?
            .into_inner();
        let server = self.server.clone();
        Ok(stream.map(move |r| r.map_err(|e| status_to_error(&server, e))))
    }

    /// Streams a container's log.
    pub async fn logs(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        follow: bool,
        tail_lines: Option<i64>,
    ) -> Result<impl Stream<Item = Result<Bytes, ClientError>> + use<>, ClientError> {
        let req = self.request(proto::LogsRequest {
            namespace: namespace.into(),
            pod: pod.into(),
            container: container.into(),
            follow,
            tail_lines: tail_lines.unwrap_or(-1),
        });
        let stream = self
            .grpc
            .clone()
            .logs(req)
            .await
            .map_err(|e| self.map_err(e))?
            .into_inner();
        let server = self.server.clone();
        Ok(stream.map(move |r| r.map(|c| c.data).map_err(|e| status_to_error(&server, e))))
    }
}

/// The gRPC target for a kind, namespace, name and subresource.
pub fn target(info: &KindInfo, namespace: Option<&str>, name: &str, sub: &str) -> proto::Target {
    proto::Target {
        api_version: info.api_version(),
        resource: info.plural.to_string(),
        namespace: if info.namespaced {
            namespace.unwrap_or_default().to_string()
        } else {
            String::new()
        },
        name: name.to_string(),
        subresource: sub.to_string(),
    }
}

/// Key of the gRPC status detail that carries the JSON [`Status`].
pub const STATUS_DETAILS_KEY: &str = "drover-status-bin";

/// Encodes a [`Status`] as a gRPC status (the one place the API's errors meet gRPC's).
pub fn status_to_grpc(status: &Status) -> tonic::Status {
    let code = match status.reason {
        Reason::BadRequest | Reason::Invalid | Reason::UnsupportedMediaType => {
            tonic::Code::InvalidArgument
        }
        Reason::Unauthorized => tonic::Code::Unauthenticated,
        Reason::Forbidden => tonic::Code::PermissionDenied,
        Reason::NotFound => tonic::Code::NotFound,
        Reason::AlreadyExists => tonic::Code::AlreadyExists,
        Reason::Conflict => tonic::Code::Aborted,
        Reason::Expired | Reason::Gone => tonic::Code::OutOfRange,
        Reason::RequestEntityTooLarge | Reason::TooManyRequests => tonic::Code::ResourceExhausted,
        Reason::MethodNotAllowed | Reason::NotAcceptable => tonic::Code::Unimplemented,
        Reason::Timeout => tonic::Code::DeadlineExceeded,
        Reason::ServiceUnavailable => tonic::Code::Unavailable,
        Reason::InternalError | Reason::Unknown => tonic::Code::Internal,
    };
    let details = serde_json::to_vec(status).unwrap_or_default();
    tonic::Status::with_details(code, status.message.clone(), details.into())
}

/// Decodes a gRPC status into a [`ClientError`]: the structured [`Status`] when the server sent
/// one, otherwise a transport-level error.
pub fn status_to_error(server: &str, status: tonic::Status) -> ClientError {
    if !status.details().is_empty()
        && let Ok(s) = serde_json::from_slice::<Status>(status.details())
    {
        return ClientError::Api(s);
    }
    let reason = match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
            return ClientError::Unreachable {
                server: server.to_string(),
                message: status.message().to_string(),
            };
        }
        tonic::Code::Unauthenticated => Reason::Unauthorized,
        tonic::Code::PermissionDenied => Reason::Forbidden,
        tonic::Code::NotFound => Reason::NotFound,
        tonic::Code::InvalidArgument => Reason::BadRequest,
        tonic::Code::ResourceExhausted => Reason::RequestEntityTooLarge,
        tonic::Code::DeadlineExceeded => Reason::Timeout,
        tonic::Code::Unimplemented => Reason::MethodNotAllowed,
        // The server's errors carry their Status (above); a bare OutOfRange is tonic refusing
        // a message over this client's own limit, before it was sent or once it arrived.
        tonic::Code::OutOfRange => {
            return ClientError::Api(Status::new(
                Reason::RequestEntityTooLarge,
                format!(
                    "the message is over this client's limit of {MAX_MESSAGE_BYTES} bytes: {}",
                    status.message()
                ),
            ));
        }
        _ => Reason::InternalError,
    };
    ClientError::Api(Status::new(reason, status.message().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_without_a_status_map_to_reasons() {
        let cases = [
            (tonic::Code::OutOfRange, Some(Reason::RequestEntityTooLarge)),
            (
                tonic::Code::ResourceExhausted,
                Some(Reason::RequestEntityTooLarge),
            ),
            (tonic::Code::Unauthenticated, Some(Reason::Unauthorized)),
            (tonic::Code::Internal, Some(Reason::InternalError)),
            (tonic::Code::Unavailable, None),
        ];
        for (code, want) in cases {
            let got = status_to_error("s", tonic::Status::new(code, "too large"));
            match (want, got) {
                (Some(r), ClientError::Api(s)) => assert_eq!(s.reason, r, "{code:?}: {s:?}"),
                (None, ClientError::Unreachable { .. }) => {}
                (w, g) => panic!("{code:?}: want {w:?}, got {g:?}"),
            }
        }
    }
}
