//! The client's HTTP/2 transport: one connection per [`Transport`] (shared by its clones),
//! opened on first use and again after it fails.
//!
//! tonic's `Channel` queues every request through a buffer task before the connection's own
//! task sees it; here a request goes from the caller straight to the connection (one task hop
//! fewer per call, which on a busy scheduler or controller is measurable CPU).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, Scheme, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tracing::debug;

/// Receive window of each stream (a watch, a request) on a client connection.
const STREAM_WINDOW_BYTES: u32 = 1 << 20;
/// Receive window of a whole client connection.
const CONNECTION_WINDOW_BYTES: u32 = 4 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const KEEP_ALIVE: Duration = Duration::from_secs(20);

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = tonic::body::Body;

/// Where to connect, parsed once from the server address.
#[derive(Debug)]
struct Target {
    origin: Uri,
    host: String,
    port: u16,
}

struct Shared {
    target: Target,
    /// The open connection's handle; `None` before the first call and after a failure.
    sender: Mutex<Option<SendRequest<Body>>>,
    /// Held while connecting, so concurrent first calls open one connection, not many.
    connecting: tokio::sync::Mutex<()>,
}

/// A lazily connected, reconnecting HTTP/2 connection to one server (plain `http://`).
#[derive(Clone)]
pub(crate) struct Transport {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("server", &self.shared.target.origin)
            .finish()
    }
}

impl Transport {
    /// Parses `server` (`http://host:port`); connects on the first request.
    pub(crate) fn new(server: &str) -> Result<Transport, String> {
        let uri: Uri = server
            .parse()
            .map_err(|e| format!("server {server:?}: {e}"))?;
        match uri.scheme() {
            Some(s) if *s == Scheme::HTTP => {}
            Some(s) => {
                return Err(format!(
                    "server {server:?}: scheme {s:?} is not supported; expected http://"
                ));
            }
            None => return Err(format!("server {server:?}: expected http://host:port")),
        }
        let authority: Authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("server {server:?}: expected http://host:port"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = authority.port_u16().unwrap_or(80);
        let origin = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(authority)
            .path_and_query("/")
            .build()
            .map_err(|e| format!("server {server:?}: {e}"))?;
        Ok(Transport {
            shared: Arc::new(Shared {
                target: Target { origin, host, port },
                sender: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The origin requests are addressed to (`http://host:port/`).
    pub(crate) fn origin(&self) -> Uri {
        self.shared.target.origin.clone()
    }

    fn open(&self) -> Option<SendRequest<Body>> {
        let guard = self.shared.sender.lock().ok()?;
        guard.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    /// The open connection, or a new one.
    async fn sender(&self) -> Result<SendRequest<Body>, BoxError> {
        if let Some(s) = self.open() {
            return Ok(s);
        }
        let _connecting = self.shared.connecting.lock().await;
        // Someone else may have connected while this call waited.
        if let Some(s) = self.open() {
            return Ok(s);
        }
        let sender = self.connect().await?;
        if let Ok(mut slot) = self.shared.sender.lock() {
            *slot = Some(sender.clone());
        }
        Ok(sender)
    }

    async fn connect(&self) -> Result<SendRequest<Body>, BoxError> {
        let t = &self.shared.target;
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((t.host.as_str(), t.port)),
        )
        .await
        .map_err(|_| {
            format!(
                "connecting to {}: timed out after {CONNECT_TIMEOUT:?}",
                t.origin
            )
        })??;
        tcp.set_nodelay(true)?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            // HTTP/2's default 64 KiB windows make a busy watch stop every 32 KiB until the
            // client's WINDOW_UPDATE arrives; objects are a few KiB and watches carry many.
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .keep_alive_interval(KEEP_ALIVE)
            .keep_alive_timeout(KEEP_ALIVE)
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(tcp))
            .await?;
        let origin = t.origin.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(server = %origin, error = %e, "connection to the API server closed");
            }
        });
        Ok(sender)
    }
}

impl tower_service::Service<http::Request<Body>> for Transport {
    type Response = http::Response<Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is the connection's, awaited in `call`: a clone per request never waits
        // on another caller's slot.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            // A connection that failed reports itself closed, and the next call opens another.
            let mut sender = this.sender().await?;
            sender.ready().await?;
            Ok(sender.send_request(request).await?)
        })
    }
}
