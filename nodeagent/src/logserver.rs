//! The agent's log server: `GET /containerLogs/{namespace}/{pod}/{container}?follow=&tailLines=`
//! serves a container's log file (the API server proxies `drover logs` here).
//!
//! Callers present a bearer token; the agent asks the API server about it with a TokenReview (as
//! the kubelet's webhook authentication does) for the audiences it accepts: its own node's
//! (`drover:node:NAME`, the tokens the API server's log proxy mints for this node only) and the
//! API server's (user tokens, for callers who come straight here). It remembers a positive answer
//! for a short while.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use drover_api::authentication::{API_AUDIENCE, TokenReview, TokenReviewSpec, node_audience};
use drover_api::validation::{is_dns1123_label, is_dns1123_subdomain};
use drover_client::Client;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::pods::LogIndex;
use crate::state::StateStore;

/// The default port of the log server (the kubelet's).
pub const DEFAULT_LOG_PORT: u16 = 10250;
/// How long a verified token is trusted before it is checked again.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(60);
/// How often a followed log is polled for new bytes.
pub const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// Most bytes read back to find the last lines of a log.
const TAIL_WINDOW: u64 = 16 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LogServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Checks bearer tokens against the API server, with a cache.
#[derive(Debug)]
pub struct TokenChecker {
    /// The agent's own client: it asks, the token under review is only the question.
    client: Client,
    audiences: Vec<String>,
    /// Token → when the positive answer expires. Only lock; never held across an await.
    valid: Mutex<HashMap<String, Instant>>,
}

enum Verdict {
    Valid,
    Invalid(String),
    Unknown(String),
}

impl TokenChecker {
    /// A checker for the log server of node `node`.
    pub fn new(client: Client, node: &str) -> Self {
        TokenChecker {
            client,
            audiences: vec![node_audience(node), API_AUDIENCE.to_string()],
            valid: Mutex::new(HashMap::new()),
        }
    }

    async fn check(&self, token: &str) -> Verdict {
        {
            let mut valid = self.valid.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            valid.retain(|_, until| *until > now);
            if valid.contains_key(token) {
                return Verdict::Valid;
            }
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: self.audiences.clone(),
            },
            ..Default::default()
        };
        match self.client.all::<TokenReview>().create(&review).await {
            Ok(r) if r.status.authenticated => {
                self.valid
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(token.to_string(), Instant::now() + TOKEN_CACHE_TTL);
                Verdict::Valid
            }
            Ok(r) => Verdict::Invalid(r.status.error),
            Err(e) => Verdict::Unknown(e.to_string()),
        }
    }
}

#[derive(Clone)]
struct LogState {
    store: StateStore,
    logs: Arc<LogIndex>,
    auth: Arc<TokenChecker>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogQuery {
    #[serde(default)]
    follow: Option<bool>,
    #[serde(default)]
    tail_lines: Option<i64>,
}

/// The router of the log server.
pub fn router(store: StateStore, logs: Arc<LogIndex>, auth: Arc<TokenChecker>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .with_state(LogState { store, logs, auth })
}

/// Binds the log server; returns the listener (its port is the node's kubelet port).
pub async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, LogServerError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| LogServerError::Bind { addr, source })
}

fn reply(code: StatusCode, message: impl Into<String>) -> Response {
    (code, message.into()).into_response()
}

async fn container_logs(
    State(s): State<LogState>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(q): Query<LogQuery>,
    headers: HeaderMap,
) -> Response {
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return reply(StatusCode::UNAUTHORIZED, "a bearer token is required");
    };
    match s.auth.check(token).await {
        Verdict::Valid => {}
        Verdict::Invalid(why) => {
            return reply(
                StatusCode::UNAUTHORIZED,
                format!("the token was refused: {why}"),
            );
        }
        Verdict::Unknown(why) => {
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot verify the token with the API server: {why}"),
            );
        }
    }
    if let Err(why) = check_target(&namespace, &pod, &container) {
        return reply(StatusCode::BAD_REQUEST, why);
    }
    let Some(dir) = s.store.find_pod_dir(&namespace, &pod) else {
        return reply(
            StatusCode::NOT_FOUND,
            format!("pod {namespace}/{pod} has no logs on this node"),
        );
    };
    let path = dir.join(format!("{container}.log"));
    // The pod's folder is the agent's; still, never follow a link out of it.
    let file = match tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&path)
        .await
    {
        Ok(f) => f,
        Err(_) => {
            return reply(
                StatusCode::NOT_FOUND,
                format!(
                    "container {container} of pod {namespace}/{pod} has no log on this node (not started yet?)"
                ),
            );
        }
    };
    let dir_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let start = match q.tail_lines.filter(|n| *n >= 0) {
        Some(n) => tail_offset(&path, n as u64).await,
        None => 0,
    };
    let reader = Reader {
        file,
        path,
        pos: start,
        follow: q.follow.unwrap_or(false),
        logs: s.logs.clone(),
        dir_name,
        container,
        buf: vec![0; CHUNK],
        seeked: false,
    };
    let stream = futures::stream::unfold(reader, |mut r| async move {
        r.next_chunk()
            .await
            .map(|chunk| (Ok::<Bytes, std::io::Error>(chunk), r))
    });
    Response::builder()
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| reply(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Refuses names that are not what the API allows (namespace and container: DNS-1123 labels;
/// pod: a DNS-1123 subdomain), so no name can climb out of the pods folder (`..%2F` decodes to
/// `../`) or match another pod's folder.
fn check_target(namespace: &str, pod: &str, container: &str) -> Result<(), String> {
    let checks = [
        (
            "namespace",
            namespace,
            is_dns1123_label(namespace),
            "a DNS-1123 label",
        ),
        (
            "pod",
            pod,
            is_dns1123_subdomain(pod),
            "a DNS-1123 subdomain",
        ),
        (
            "container",
            container,
            is_dns1123_label(container),
            "a DNS-1123 label",
        ),
    ];
    match checks.iter().find(|(_, _, ok, _)| !ok) {
        None => Ok(()),
        Some((what, value, _, expected)) => Err(format!(
            "invalid {what} name {value:?}: expected {expected} (lower-case letters, digits and '-')"
        )),
    }
}

/// Where the last `n` lines of the file start.
async fn tail_offset(path: &std::path::Path, n: u64) -> u64 {
    let Ok(mut f) = tokio::fs::File::open(path).await else {
        return 0;
    };
    let Ok(len) = f.metadata().await.map(|m| m.len()) else {
        return 0;
    };
    let from = len.saturating_sub(TAIL_WINDOW);
    if f.seek(std::io::SeekFrom::Start(from)).await.is_err() {
        return 0;
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).await.is_err() {
        return 0;
    }
    from + tail_start(&buf, n) as u64
}

/// The index in `buf` where its last `n` lines begin.
pub fn tail_start(buf: &[u8], n: u64) -> usize {
    if n == 0 {
        return buf.len();
    }
    // A final newline ends the last line; it does not start an empty one.
    let end = if buf.last() == Some(&b'\n') {
        buf.len() - 1
    } else {
        buf.len()
    };
    let mut seen = 0;
    for (i, b) in buf[..end].iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return i + 1;
            }
        }
    }
    0
}

struct Reader {
    file: tokio::fs::File,
    path: PathBuf,
    pos: u64,
    follow: bool,
    logs: Arc<LogIndex>,
    dir_name: String,
    container: String,
    buf: Vec<u8>,
    seeked: bool,
}

impl Reader {
    /// The next bytes of the log; `None` at the end (for `follow`: once the container stopped
    /// and everything it wrote was sent).
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if !self.seeked {
                self.file
                    .seek(std::io::SeekFrom::Start(self.pos))
                    .await
                    .ok()?;
                self.seeked = true;
            }
            let running = self.follow && self.logs.is_running(&self.dir_name, &self.container);
            let n = self.file.read(&mut self.buf).await.ok()?;
            if n > 0 {
                self.pos += n as u64;
                return Some(Bytes::copy_from_slice(&self.buf[..n]));
            }
            if !running {
                return None;
            }
            // Rotated (copied and truncated): start again from the top.
            let len = tokio::fs::metadata(&self.path)
                .await
                .map(|m| m.len())
                .unwrap_or(0);
            if len < self.pos {
                self.pos = 0;
                self.seeked = false;
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }
}

/// Rotates oversized logs of running containers: copies `<c>.log` to `<c>.log.1` and truncates
/// it (the process keeps its append-mode descriptor, so nothing has to reopen the file).
pub fn rotate_logs(store: &StateStore, logs: &LogIndex, max_bytes: u64) {
    for (dir, container) in logs.running() {
        let path = store.pods_dir().join(&dir).join(format!("{container}.log"));
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.len() <= max_bytes {
            continue;
        }
        let rotated = path.with_extension("log.1");
        let result = std::fs::copy(&path, &rotated).and_then(|_| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)?
                .set_len(0)
        });
        match result {
            Ok(()) => tracing::info!(log = %path.display(), "rotated a container log"),
            Err(e) => {
                tracing::warn!(log = %path.display(), error = %e, "cannot rotate a container log")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_leave_the_pods_folder_are_refused() {
        let cases: &[(&str, &str, &str, Option<&str>)] = &[
            ("default", "train-0", "main", None),
            ("default", "job.worker-1", "main", None),
            (
                "default",
                "p",
                "../../../../var/log/dpkg",
                Some("invalid container name"),
            ),
            ("default", "p", "..", Some("invalid container name")),
            ("default", "..", "main", Some("invalid pod name")),
            ("default", "a/b", "main", Some("invalid pod name")),
            ("..", "p", "main", Some("invalid namespace name")),
            ("a_b", "p", "main", Some("invalid namespace name")),
            ("default", "p", "", Some("invalid container name")),
        ];
        for (ns, pod, container, want) in cases {
            let got = check_target(ns, pod, container);
            match want {
                None => assert!(got.is_ok(), "{ns}/{pod}/{container}: {got:?}"),
                Some(w) => {
                    let msg = got.expect_err(&format!("{ns}/{pod}/{container} accepted"));
                    assert!(msg.starts_with(w), "{ns}/{pod}/{container}: {msg}");
                }
            }
        }
    }

    #[test]
    fn tail_finds_the_last_lines() {
        let cases: &[(&str, u64, &str)] = &[
            ("a\nb\nc\n", 2, "b\nc\n"),
            ("a\nb\nc", 2, "b\nc"),
            ("a\nb\n", 5, "a\nb\n"),
            ("a\nb\n", 0, ""),
            ("", 3, ""),
        ];
        for (text, n, want) in cases {
            let start = tail_start(text.as_bytes(), *n);
            assert_eq!(&text[start..], *want, "text {text:?} n {n}");
        }
    }
}
