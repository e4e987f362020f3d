//! Shared helpers for the API server's integration tests: an in-process server, a typed gRPC
//! client, and a minimal REST client.

#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use drover_apiserver::{RunningServer, ServerConfig};
use drover_client::{Client, ClientConfig};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;

pub struct TestServer {
    pub server: RunningServer,
    pub dir: tempfile::TempDir,
}

pub async fn start() -> TestServer {
    start_with(|c| c).await
}

pub async fn start_with(f: impl FnOnce(ServerConfig) -> ServerConfig) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = f(ServerConfig::new(dir.path()).listen("127.0.0.1:0".parse().expect("addr")));
    let server = drover_apiserver::start(cfg).await.expect("server starts");
    TestServer { server, dir }
}

impl TestServer {
    pub fn client(&self) -> Client {
        Client::new(&ClientConfig {
            server: self.server.url(),
            token: self.server.admin_token.clone(),
        })
        .expect("client")
    }

    pub fn client_with_token(&self, token: &str) -> Client {
        Client::new(&ClientConfig {
            server: self.server.url(),
            token: token.into(),
        })
        .expect("client")
    }

    pub fn rest(&self) -> Rest {
        Rest {
            base: self.server.url(),
            token: Some(self.server.admin_token.clone()),
            http: HttpClient::builder(TokioExecutor::new()).build_http(),
        }
    }
}

/// A REST response: status code and body.
#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

pub struct Rest {
    pub base: String,
    pub token: Option<String>,
    http: HttpClient<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Rest {
    pub fn without_token(mut self) -> Self {
        self.token = None;
        self
    }

    pub fn with_token(mut self, t: &str) -> Self {
        self.token = Some(t.into());
        self
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        ctype: &str,
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if !ctype.is_empty() {
            req = req.header("content-type", ctype);
        }
        let req = req.body(Full::new(body.into())).expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(10), self.http.request(req))
            .await
            .expect("no timeout")
            .expect("response");
        let code = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        Reply { code, body }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, "", Bytes::new()).await
    }

    pub async fn post_json(&self, path: &str, v: &serde_json::Value) -> Reply {
        self.call(
            "POST",
            path,
            "application/json",
            serde_json::to_vec(v).expect("json"),
        )
        .await
    }
}

/// A minimal valid pod as JSON.
pub fn pod_json(ns: &str, name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "test"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "image": "busybox",
                "command": ["sh", "-c", "true"],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}
            }]
        }
    })
}

pub fn node_json(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "8"}}
    })
}
