//! The client's HTTP/2 transport: one connection per [`Transport`] (shared by its clones),
//! opened on first use and again after it fails.
//!
//! A request goes from the caller's task straight onto the connection's streams, and the caller
//! polls its own response: no task is spawned and no channel crossed per call. (tonic's
//! `Channel` hands each request to a buffer task, then to hyper's connection task, which spawns
//! a task per request to await the response and hand it back: three task hops per call, which
//! on a busy scheduler or controller is measurable CPU.) The connection's task only does I/O,
//! and a keep-alive ping closes a connection whose peer stopped answering.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme, Uri};
use http_body::Frame;
use http_body_util::BodyExt;
use tracing::debug;

/// Receive window of each stream (a watch, a request) on a client connection.
const STREAM_WINDOW_BYTES: u32 = 1 << 20;
/// Receive window of a whole client connection.
const CONNECTION_WINDOW_BYTES: u32 = 4 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A ping every this long; a connection whose pong does not come within it again is closed.
const KEEP_ALIVE: Duration = Duration::from_secs(20);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    sender: Mutex<Option<h2::client::SendRequest<Bytes>>>,
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
        let bad = |why: &str| format!("server {server:?}: {why}");
        let uri: Uri = server.parse().map_err(|e| bad(&format!("{e}")))?;
        match uri.scheme() {
            Some(s) if *s == Scheme::HTTP => {}
            Some(s) => {
                return Err(bad(&format!(
                    "scheme {s} is not supported; expected http://"
                )));
            }
            None => return Err(bad("expected http://host:port")),
        }
        let authority: Authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| bad("expected http://host:port"))?;
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
            .map_err(|e| bad(&format!("{e}")))?;
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

    /// The stored connection's handle, unless that connection has failed.
    fn open(&self) -> Option<h2::client::SendRequest<Bytes>> {
        let mut slot = self.shared.sender.lock().ok()?;
        let mut sender = slot.clone()?;
        let noop = std::task::Waker::noop();
        match sender.poll_ready(&mut Context::from_waker(noop)) {
            Poll::Ready(Err(_)) => {
                *slot = None;
                None
            }
            _ => Some(sender),
        }
    }

    /// The open connection, or a new one.
    async fn sender(&self) -> Result<h2::client::SendRequest<Bytes>, BoxError> {
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

    async fn connect(&self) -> Result<h2::client::SendRequest<Bytes>, BoxError> {
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
        let (sender, mut connection) = h2::client::Builder::new()
            // HTTP/2's default 64 KiB windows make a busy watch stop every 32 KiB until the
            // client's WINDOW_UPDATE arrives; objects are a few KiB and watches carry many.
            .initial_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .enable_push(false)
            .handshake::<_, Bytes>(tcp)
            .await?;
        let pings = connection.ping_pong();
        let origin = t.origin.clone();
        tokio::spawn(async move {
            // Dropping the connection (a failed keep-alive) fails its streams and its handle.
            let outcome = tokio::select! {
                r = &mut connection => r.map_err(|e| e.to_string()),
                e = keep_alive(pings) => Err(e),
            };
            if let Err(e) = outcome {
                debug!(server = %origin, error = %e, "connection to the API server closed");
            }
        });
        Ok(sender)
    }
}

/// Pings every [`KEEP_ALIVE`]; returns when a pong does not come back in time.
async fn keep_alive(pings: Option<h2::PingPong>) -> String {
    let Some(mut pings) = pings else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(KEEP_ALIVE).await;
        match tokio::time::timeout(KEEP_ALIVE, pings.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return format!("keep-alive ping failed: {e}"),
            Err(_) => return format!("no answer to a keep-alive ping within {KEEP_ALIVE:?}"),
        }
    }
}

impl tower_service::Service<http::Request<tonic::body::Body>> for Transport {
    type Response = http::Response<ResponseBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is the connection's, awaited in `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            // Every call of the API sends one message: its encoding is ready at once.
            let body = body.collect().await?.to_bytes();
            let mut sender = this.sender().await?.ready().await?;
            let end = body.is_empty();
            let (response, mut stream) =
                sender.send_request(http::Request::from_parts(parts, ()), end)?;
            if !end {
                // Sent as the stream's window allows; h2 holds the rest meanwhile.
                stream.send_data(body, true)?;
            }
            let response = response.await?;
            Ok(response.map(|recv| ResponseBody {
                recv,
                trailers_done: false,
            }))
        })
    }
}

/// A response body read straight off its HTTP/2 stream (data, then trailers: gRPC's status).
pub(crate) struct ResponseBody {
    recv: h2::RecvStream,
    trailers_done: bool,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.recv.is_end_stream() {
            match std::task::ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Open the window again for what was read.
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {}
            }
        }
        if self.trailers_done {
            return Poll::Ready(None);
        }
        let trailers = std::task::ready!(self.recv.poll_trailers(cx));
        self.trailers_done = true;
        Poll::Ready(match trailers {
            Ok(Some(t)) => Some(Ok(Frame::trailers(t))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        })
    }

    fn is_end_stream(&self) -> bool {
        self.trailers_done
    }
}
