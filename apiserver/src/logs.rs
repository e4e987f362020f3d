//! The log proxy: the gRPC `Logs` call finds the pod in the watch cache, its node, and the
//! node's address and agent port, then asks that node agent for the container's log over HTTP and
//! streams the bytes back. The caller's credentials never leave this server: the agent gets a
//! token minted for that one node ([`crate::agent_credential`]), which it checks with a
//! TokenReview; whoever answers at the address a Node declares can do nothing with it elsewhere. Every failure is a structured status: pod not found, not bound yet, unknown
//! container, agent unreachable.

use std::time::Duration;

use bytes::Bytes;
use drover_api::Status;
use drover_api::core::{Node, Pod};
use drover_api::error::Reason;
use drover_api::resource::Resource;
use futures::{Stream, StreamExt};
use http_body_util::{BodyExt, BodyStream, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;

use crate::cache::kind_id;
use crate::service::ApiService;

/// How long connecting to an agent and getting its answer's head may take.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the caller asked for.
#[derive(Clone, Debug, Default)]
pub struct LogsQuery {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub follow: bool,
    /// Negative: the whole log.
    pub tail_lines: i64,
}

/// Where a pod's log is served, once the pod and container are checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogTarget {
    pub node: String,
    pub url: String,
}

fn decode<T: Resource>(json: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(json)
        .map_err(|e| Status::internal(format!("cached {} is not valid: {e}", T::KIND)))
}

/// Resolves the agent URL for a log request from the watch cache.
pub fn resolve(svc: &ApiService, q: &LogsQuery) -> Result<LogTarget, Status> {
    let pods = kind_id("", Pod::PLURAL);
    let obj = svc
        .cache()
        .get(&pods, &q.namespace, &q.pod)
        .ok_or_else(|| Status::not_found("pods", &q.pod))?;
    let pod: Pod = decode(&obj.json)?;
    if pod.spec.node_name.is_empty() {
        return Err(Status::bad_request(format!(
            "pod {}/{} is not bound to a node yet: it has no logs",
            q.namespace, q.pod
        )));
    }
    let names: Vec<&str> = pod
        .spec
        .init_containers
        .iter()
        .chain(&pod.spec.containers)
        .map(|c| c.name.as_str())
        .collect();
    let container = if q.container.is_empty() {
        match pod.spec.containers.as_slice() {
            [only] => only.name.clone(),
            _ => {
                return Err(Status::bad_request(format!(
                    "pod {}/{} has several containers: name one of {}",
                    q.namespace,
                    q.pod,
                    names.join(", ")
                )));
            }
        }
    } else if names.contains(&q.container.as_str()) {
        q.container.clone()
    } else {
        return Err(Status::new(
            Reason::NotFound,
            format!(
                "container {:?} is not in pod {}/{}: expected one of {}",
                q.container,
                q.namespace,
                q.pod,
                names.join(", ")
            ),
        ));
    };
    let node_name = pod.spec.node_name.clone();
    let unavailable = |why: &str| {
        Status::new(
            Reason::ServiceUnavailable,
            format!(
                "cannot reach the agent of node {node_name} for pod {}/{}: {why}",
                q.namespace, q.pod
            ),
        )
    };
    let nodes = kind_id("", Node::PLURAL);
    let node_obj = svc
        .cache()
        .get(&nodes, "", &node_name)
        .ok_or_else(|| unavailable("the node is not registered"))?;
    let node: Node = decode(&node_obj.json)?;
    let ip = node
        .status
        .addresses
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address.clone())
        .ok_or_else(|| unavailable("the node reports no InternalIP address"))?;
    let port = node
        .status
        .daemon_endpoints
        .as_ref()
        .and_then(|d| d.kubelet_endpoint.as_ref())
        .map(|e| e.port)
        .filter(|p| *p > 0)
        .ok_or_else(|| unavailable("the node reports no agent port"))?;
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip
    };
    let mut url = format!(
        "http://{host}:{port}/containerLogs/{}/{}/{}?follow={}",
        q.namespace, q.pod, container, q.follow
    );
    if q.tail_lines >= 0 {
        url.push_str(&format!("&tailLines={}", q.tail_lines));
    }
    Ok(LogTarget {
        node: node_name,
        url,
    })
}

/// Calls the agent and streams the log back.
pub async fn stream(
    svc: &ApiService,
    q: &LogsQuery,
) -> Result<impl Stream<Item = Result<Bytes, Status>> + Send + 'static + use<>, Status> {
    let target = resolve(svc, q)?;
    let unavailable = |why: String| {
        Status::new(
            Reason::ServiceUnavailable,
            format!("cannot reach the agent of node {}: {why}", target.node),
        )
    };
    let client = HttpClient::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let token = svc
        .agent_credentials()
        .mint(&target.node, std::time::SystemTime::now());
    let req = http::Request::get(&target.url)
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::new())
        .map_err(|e| Status::internal(format!("cannot build the agent request: {e}")))?;
    let resp = match tokio::time::timeout(AGENT_TIMEOUT, client.request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(unavailable(e.to_string())),
        Err(_) => return Err(unavailable(format!("no answer within {AGENT_TIMEOUT:?}"))),
    };
    let code = resp.status();
    if !code.is_success() {
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = String::from_utf8_lossy(&body).trim().to_string();
        let reason = match code.as_u16() {
            401 => Reason::Unauthorized,
            403 => Reason::Forbidden,
            404 => Reason::NotFound,
            400 => Reason::BadRequest,
            _ => Reason::ServiceUnavailable,
        };
        return Err(Status::new(
            reason,
            format!("node agent of {}: {message}", target.node),
        ));
    }
    let node = target.node.clone();
    Ok(BodyStream::new(resp.into_body()).filter_map(move |frame| {
        let node = node.clone();
        async move {
            match frame {
                Ok(f) => f.into_data().ok().map(Ok),
                Err(e) => Some(Err(Status::new(
                    Reason::ServiceUnavailable,
                    format!("the log stream from node {node} broke: {e}"),
                ))),
            }
        }
    }))
}
