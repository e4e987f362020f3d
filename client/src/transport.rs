//! The client's HTTP/2 transport: a small pool of connections per [`Transport`] (shared by its
//! clones), opened on first use, grown when the open ones have no free stream, and reopened
//! after they fail.
//!
//! A request goes from the caller's task straight onto a connection's streams, and the caller
//! polls its own response: no task is spawned and no channel crossed per call. (tonic's
//! `Channel` hands each request to a buffer task, then to hyper's connection task, which spawns
//! a task per request to await the response and hand it back: three task hops per call, which
//! on a busy scheduler or controller is measurable CPU.) Each connection's task only does I/O,
//! and a keep-alive ping closes a connection whose peer stopped answering.
//!
//! Failover: the server address may list several API servers of one cluster
//! (`http://a:6443,http://b:6443`). Connections go to the current one; when it cannot be
//! reached, the next ones are tried in turn and the first that answers becomes current, so a
//! call made after a server died goes to a live one. Calls in flight on the dead server's
//! connections fail once (the caller retries, as every component does).
//!
//! Why a pool: a server caps the streams open at once on one connection (its
//! `SETTINGS_MAX_CONCURRENT_STREAMS`, 200 by default in hyper), and a watch holds its stream
//! for as long as it runs. One connection shared by many watchers (1,000 in-process node agents
//! of `drover up --simulate-nodes`, each with its pod watch) filled every slot, and every other
//! call of every agent (lease renewals, status writes) queued behind watches that never end:
//! the nodes went NotReady. The pool counts the streams it has open on each connection and
//! opens another connection when all are at the server's limit (as Go's HTTP/2 client does).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
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
/// Streams assumed allowed on a new connection until the server's SETTINGS say how many.
const INITIAL_MAX_STREAMS: usize = 100;
/// Most connections one pool opens; past it, calls share the least loaded one (and wait for a
/// stream there, as HTTP/2 makes them).
pub(crate) const MAX_CONNECTIONS: usize = 64;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where to connect, parsed once from the server address.
#[derive(Debug)]
struct Target {
    origin: Uri,
    host: String,
    port: u16,
}

/// One pooled connection: its handle, how many of its streams this pool has open, and which
/// server it goes to.
struct Conn {
    sender: h2::client::SendRequest<Bytes>,
    streams: Arc<AtomicUsize>,
    target: usize,
}

impl Conn {
    /// Streams the server allows at once on this connection (as its SETTINGS last said).
    fn limit(&self) -> usize {
        self.sender.current_max_send_streams().max(1)
    }

    fn open_streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }

    fn has_room(&self) -> bool {
        self.open_streams() < self.limit()
    }

    /// Takes one stream slot: the guard gives it back when the response (or the call) is dropped.
    fn claim(&self) -> Slot {
        self.streams.fetch_add(1, Ordering::Relaxed);
        Slot {
            sender: self.sender.clone(),
            guard: StreamGuard(self.streams.clone()),
            target: self.target,
        }
    }
}

/// A stream slot on a connection to server `target`.
struct Slot {
    sender: h2::client::SendRequest<Bytes>,
    guard: StreamGuard,
    target: usize,
}

/// One open stream of a pooled connection.
pub(crate) struct StreamGuard(Arc<AtomicUsize>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Lock order: `connecting` (async, held across the connect) before `conns` (never held across
/// an await).
struct Shared {
    /// The API servers, in the order given; at least one.
    targets: Vec<Target>,
    /// The server new connections go to first.
    current: AtomicUsize,
    /// The open connections; failed ones are dropped when next looked at.
    conns: Mutex<Vec<Conn>>,
    /// Held while connecting, so concurrent calls that find no room open one connection, not many.
    connecting: tokio::sync::Mutex<()>,
}

/// A lazily connected, reconnecting pool of HTTP/2 connections to one of the listed servers
/// (plain `http://`).
#[derive(Clone)]
pub(crate) struct Transport {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("servers", &self.shared.targets)
            .finish()
    }
}

impl Transport {
    /// Parses `servers` (`http://host:port`, or several separated by commas); connects on the
    /// first request.
    pub(crate) fn new(servers: &str) -> Result<Transport, String> {
        let targets = servers
            .split(',')
            .map(|s| Target::parse(s.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Transport {
            shared: Arc::new(Shared {
                targets,
                current: AtomicUsize::new(0),
                conns: Mutex::new(Vec::new()),
                connecting: tokio::sync::Mutex::new(()),
            }),
        })
    }
}

impl Target {
    /// Parses one server address, `http://host:port`.
    fn parse(server: &str) -> Result<Target, String> {
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
        Ok(Target { origin, host, port })
    }
}

impl Transport {
    /// The origin requests are addressed to (`http://host:port/` of the first server; each
    /// request's authority is set to the server its connection goes to).
    pub(crate) fn origin(&self) -> Uri {
        self.shared.targets[0].origin.clone()
    }

    /// A stream slot on an open connection with room, dropping connections that failed. With
    /// `or_least_loaded`, a full pool still answers with its least loaded connection.
    fn pick(&self, or_least_loaded: bool) -> Option<Slot> {
        let mut conns = self.shared.conns.lock().ok()?;
        let noop = std::task::Waker::noop();
        conns.retain_mut(|c| {
            !matches!(
                c.sender.poll_ready(&mut Context::from_waker(noop)),
                Poll::Ready(Err(_))
            )
        });
        if let Some(c) = conns.iter().find(|c| c.has_room()) {
            return Some(c.claim());
        }
        if or_least_loaded || conns.len() >= MAX_CONNECTIONS {
            return conns
                .iter()
                .min_by_key(|c| c.open_streams())
                .map(Conn::claim);
        }
        None
    }

    /// A stream slot: on an open connection with room, else on a new connection.
    async fn sender(&self) -> Result<Slot, BoxError> {
        if let Some(s) = self.pick(false) {
            return Ok(s);
        }
        let _connecting = self.shared.connecting.lock().await;
        // Someone else may have connected while this call waited.
        if let Some(s) = self.pick(false) {
            return Ok(s);
        }
        let (sender, target) = match self.connect_any().await {
            Ok(s) => s,
            // A pool that has connections keeps working through them rather than failing.
            Err(e) => return self.pick(true).ok_or(e),
        };
        let conn = Conn {
            sender,
            streams: Arc::new(AtomicUsize::new(0)),
            target,
        };
        let slot = conn.claim();
        if let Ok(mut conns) = self.shared.conns.lock() {
            if !conns.is_empty() {
                debug!(server = %self.shared.targets[target].origin, connections = conns.len() + 1, "every connection is at its stream limit; opened another");
            }
            conns.push(conn);
        }
        Ok(slot)
    }

    /// How many connections the pool holds and how many streams it has open on each.
    #[cfg(test)]
    pub(crate) fn open_streams(&self) -> Vec<usize> {
        self.shared
            .conns
            .lock()
            .map(|c| c.iter().map(Conn::open_streams).collect())
            .unwrap_or_default()
    }

    /// Connects to the current server, or failing that to the next ones in turn; the first
    /// that answers becomes current.
    async fn connect_any(&self) -> Result<(h2::client::SendRequest<Bytes>, usize), BoxError> {
        let n = self.shared.targets.len();
        let first = self.shared.current.load(Ordering::Relaxed) % n;
        let mut failures = Vec::new();
        for k in 0..n {
            let i = (first + k) % n;
            match self.connect(&self.shared.targets[i]).await {
                Ok(sender) => {
                    if i != first {
                        debug!(from = %self.shared.targets[first].origin, to = %self.shared.targets[i].origin, "failed over to another API server");
                    }
                    self.shared.current.store(i, Ordering::Relaxed);
                    return Ok((sender, i));
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        Err(if n == 1 {
            failures.remove(0).into()
        } else {
            format!("no API server answered: {}", failures.join("; ")).into()
        })
    }

    async fn connect(&self, t: &Target) -> Result<h2::client::SendRequest<Bytes>, BoxError> {
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
        })?
        .map_err(|e| format!("connecting to {}: {e}", t.origin))?;
        tcp.set_nodelay(true)?;
        let (sender, mut connection) = h2::client::Builder::new()
            // HTTP/2's default 64 KiB windows make a busy watch stop every 32 KiB until the
            // client's WINDOW_UPDATE arrives; objects are a few KiB and watches carry many.
            .initial_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .initial_max_send_streams(INITIAL_MAX_STREAMS)
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
            let Slot {
                sender,
                guard,
                target,
            } = this.sender().await?;
            let mut sender = sender.ready().await?;
            let mut parts = parts;
            if target != 0 && parts.uri.authority().is_some() {
                // Addressed to the server the connection goes to, not the first listed.
                let mut uri = parts.uri.into_parts();
                uri.authority = this.shared.targets[target].origin.authority().cloned();
                parts.uri = Uri::from_parts(uri)?;
            }
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
                _stream: guard,
            }))
        })
    }
}

/// A response body read straight off its HTTP/2 stream (data, then trailers: gRPC's status).
pub(crate) struct ResponseBody {
    recv: h2::RecvStream,
    trailers_done: bool,
    /// The stream's slot in the pool, given back when the body is dropped.
    _stream: StreamGuard,
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

#[cfg(test)]
mod tests {
    use super::*;
    use tower_service::Service;

    /// An HTTP/2 server allowing `limit` streams per connection: `/hold` answers its headers and
    /// never ends (a watch), anything else answers at once. Returns its address and a counter of
    /// accepted connections.
    async fn server(limit: u32) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut conn = h2::server::Builder::new()
                        .max_concurrent_streams(limit)
                        .handshake::<_, Bytes>(tcp)
                        .await
                        .unwrap();
                    let mut held = Vec::new();
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        let hold = req.uri().path() == "/hold";
                        let resp = http::Response::new(());
                        let stream = respond.send_response(resp, !hold).unwrap();
                        if hold {
                            held.push(stream);
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn request(path: &str) -> http::Request<tonic::body::Body> {
        http::Request::builder()
            .method("POST")
            .uri(path)
            .body(tonic::body::Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn long_lived_streams_at_the_server_limit_do_not_block_other_calls() {
        let (addr, accepted) = server(2).await;
        let mut t = Transport::new(&format!("http://{addr}")).unwrap();
        // Two watches fill the first connection's streams; the third opens a second one.
        let mut held = Vec::new();
        for i in 0..3 {
            let call = tokio::time::timeout(Duration::from_secs(10), t.call(request("/hold")));
            held.push(
                call.await
                    .unwrap_or_else(|_| panic!("watch {i} got no stream"))
                    .unwrap(),
            );
        }
        // An ordinary call is answered rather than queued behind the watches.
        let answered = tokio::time::timeout(Duration::from_secs(10), t.call(request("/get")))
            .await
            .expect("a call while every stream of the first connection is held");
        drop(answered.unwrap());
        let mut open = t.open_streams();
        open.sort();
        assert_eq!(open, vec![1, 2], "streams per connection");
        assert_eq!(accepted.load(Ordering::Relaxed), 2);
        // Ending the watches gives their slots back.
        held.clear();
        assert_eq!(t.open_streams().iter().sum::<usize>(), 0);
    }

    #[tokio::test]
    async fn a_dead_server_in_the_list_fails_over_to_the_next() {
        // Nothing listens at `dead` (bound, then closed).
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let (live, accepted) = server(10).await;
        let mut t = Transport::new(&format!("http://{dead}, http://{live}")).unwrap();
        for _ in 0..3 {
            let answered = tokio::time::timeout(Duration::from_secs(10), t.call(request("/get")))
                .await
                .expect("a call with one live server listed");
            drop(answered.expect("answered by the live server"));
        }
        assert_eq!(
            accepted.load(Ordering::Relaxed),
            1,
            "one connection, reused"
        );
        assert_eq!(
            t.shared.current.load(Ordering::Relaxed),
            1,
            "the live server is current"
        );

        // Every server dead: the error names each.
        let (a, b) = (dead, {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        });
        let mut none = Transport::new(&format!("http://{a},http://{b}")).unwrap();
        let err = match none.call(request("/get")).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("no server listens"),
        };
        assert!(
            err.contains(&a.to_string()) && err.contains(&b.to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_malformed_server_in_the_list_is_named() {
        let err = Transport::new("http://127.0.0.1:1,ftp://x:2").unwrap_err();
        assert!(
            err.contains("ftp://x:2") && err.contains("http://"),
            "{err}"
        );
    }
}
