//! The API server's accept loop: one task per connection, HTTP/1 and HTTP/2 (gRPC speaks h2c
//! with prior knowledge) through hyper's auto builder, with the limits that keep idle sockets
//! from eating the file-descriptor table and starving real clients (issue 12 item 7):
//!
//! - a connection must send an authenticated request within the idle timeout, or it is closed
//!   (requests that fail authentication, or need none, do not count: see [`ConnectionAuth`]);
//!   HTTP/1 also gets hyper's header-read timeout for every later request. (The auto builder
//!   first waits for bytes to tell HTTP/1 from HTTP/2, with no timeout of its own: a socket that
//!   sends nothing would wait there for ever.)
//! - at most `max_pending` connections wait for their first authenticated request at once; a new
//!   one past that
//!   closes the oldest waiting one. A flood of idle sockets cycles through a bounded set, and a
//!   client that sends its request at once (every real one) is served;
//! - at most `max_connections` in all, below the open-file limit (raised to the hard limit at
//!   start); past it a new connection is closed at once rather than left in the backlog;
//! - a connection past its first authenticated request is never cut for being quiet (a watch, a log stream):
//!   HTTP/2 keep-alive pings close the ones whose peer is gone.
//!
//! Per request, the only cost over a bare hyper connection is one relaxed atomic load.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::config::{
    HTTP2_KEEP_ALIVE, HTTP2_MAX_CONCURRENT_STREAMS, RESERVED_FILE_DESCRIPTORS, ServerConfig,
};

/// The connection limits in effect.
#[derive(Clone, Debug)]
pub struct Limits {
    pub idle_timeout: Duration,
    pub max_pending: usize,
    pub max_connections: usize,
}

impl Limits {
    /// The configured limits, with `max_connections` kept below the open-file limit (raised to
    /// its hard limit first).
    pub fn new(config: &ServerConfig) -> Limits {
        let limits = Limits::within(config, raise_open_file_limit());
        info!(
            max_connections = limits.max_connections,
            max_pending_connections = limits.max_pending,
            idle_connection_timeout = ?limits.idle_timeout,
            "connection limits"
        );
        limits
    }

    /// The configured limits within `open_files` file descriptors: the connections leave
    /// [`RESERVED_FILE_DESCRIPTORS`] free, and those waiting for an authenticated request take at most
    /// half of them, so a flood of waiting ones always leaves room for connections in use (a new
    /// one past the total is refused, not made room for).
    fn within(config: &ServerConfig, open_files: Option<u64>) -> Limits {
        let mut max_connections = config.max_connections.max(1);
        if let Some(files) = open_files {
            let budget = files.saturating_sub(RESERVED_FILE_DESCRIPTORS).max(1);
            max_connections = max_connections.min(usize::try_from(budget).unwrap_or(usize::MAX));
        }
        Limits {
            idle_timeout: config.idle_connection_timeout,
            max_pending: config
                .max_pending_connections
                .min(max_connections / 2)
                .max(1),
            max_connections,
        }
    }
}

/// Raises the soft limit of open files to the hard limit; the soft limit now in effect, or
/// `None` when it cannot be read.
fn raise_open_file_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "cannot read the open-file limit");
            return None;
        }
    };
    if soft >= hard {
        info!(open_files = soft, "open-file limit");
        return Some(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => {
            info!(
                open_files = hard,
                was = soft,
                "raised the open-file limit to its hard limit"
            );
            Some(hard)
        }
        Err(e) => {
            // macOS refuses an unlimited soft limit; the old one still holds.
            warn!(error = %e, open_files = soft, hard, "cannot raise the open-file limit");
            Some(soft)
        }
    }
}

/// Serves `app` on `listener` until `stop` fires, then closes every connection gracefully (an
/// open request finishes; an idle connection closes at once) and returns when all have closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    mut stop: oneshot::Receiver<()>,
) {
    let builder = Arc::new(builder(&limits));
    let pending = Arc::new(Pending::new(limits.max_pending));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refused = AtomicU64::new(0);
    let (closing_tx, closing_rx) = watch::channel(());
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            Some(done) = conns.join_next() => {
                if let Err(e) = done {
                    warn!(error = %e, "a connection's task failed");
                }
            }
            accepted = listener.accept() => {
                let tcp = match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        accept_failed(e).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    // Closed at once: left in the backlog it would hold a client waiting.
                    note(&refused, limits.max_connections, "open connections at the limit; refusing new ones");
                    continue;
                };
                // Small request/response pairs must not wait for Nagle's algorithm and delayed ACKs.
                if let Err(e) = tcp.set_nodelay(true) {
                    debug!(error = %e, "cannot set TCP_NODELAY");
                }
                let conn = Conn {
                    builder: builder.clone(),
                    app: app.clone(),
                    first: pending.admit(),
                    idle_timeout: limits.idle_timeout,
                    closing: closing_rx.clone(),
                };
                conns.spawn(async move {
                    conn.run(tcp).await;
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    let _ = closing_tx.send(());
    while conns.join_next().await.is_some() {}
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_KEEP_ALIVE)
        .keep_alive_timeout(HTTP2_KEEP_ALIVE)
        .max_concurrent_streams(HTTP2_MAX_CONCURRENT_STREAMS);
    b
}

/// An accept that failed. A connection reset before it was accepted says nothing about the
/// listener; anything else (out of file descriptors, of memory) would fail again at once, so
/// the loop pauses rather than spins.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused
    ) {
        debug!(error = %e, "a connection closed before it was accepted");
        return;
    }
    warn!(error = %e, "cannot accept a connection; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Counts an event a flood repeats; warns on the first and every 1,000th, so a flood cannot
/// flood the log too.
fn note(count: &AtomicU64, limit: usize, what: &str) {
    let n = count.fetch_add(1, Ordering::Relaxed);
    if n.is_multiple_of(1000) {
        warn!(limit, times = n + 1, "{what}");
    } else {
        debug!(limit, "{what}");
    }
}

/// One accepted connection.
struct Conn {
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: Router,
    first: FirstRequest,
    idle_timeout: Duration,
    closing: watch::Receiver<()>,
}

impl Conn {
    async fn run(self, tcp: TcpStream) {
        let Conn {
            builder,
            app,
            first,
            idle_timeout,
            mut closing,
        } = self;
        let FirstRequest {
            ticket,
            mut evicted,
        } = first;
        let service = Service {
            inner: TowerToHyperService::new(app),
            ticket: ticket.clone(),
        };
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
        tokio::pin!(conn);
        let deadline = tokio::time::sleep(idle_timeout);
        tokio::pin!(deadline);
        // Until a request authenticates, the deadline and an eviction may close the connection.
        let mut waiting = true;
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        debug!(error = %e, "connection ended");
                    }
                    return;
                }
                _ = &mut deadline, if waiting => {
                    if !ticket.started() {
                        debug!(timeout = ?idle_timeout, "closing a connection that sent no request in time");
                        return;
                    }
                    waiting = false;
                }
                r = &mut evicted, if waiting => {
                    // `Err`: the ticket left the waiting set because a request authenticated.
                    if r.is_ok() && !ticket.started() {
                        return;
                    }
                    waiting = false;
                }
                _ = closing.changed() => {
                    conn.as_mut().graceful_shutdown();
                    if let Err(e) = conn.as_mut().await {
                        debug!(error = %e, "connection ended");
                    }
                    return;
                }
            }
        }
    }
}

/// The router as one connection's hyper service, handing unauthenticated connections' requests
/// the [`ConnectionAuth`] that marks them.
struct Service {
    inner: TowerToHyperService<Router>,
    ticket: Arc<Ticket>,
}

impl hyper::service::Service<http::Request<Incoming>> for Service {
    type Response =
        <TowerToHyperService<Router> as hyper::service::Service<http::Request<Incoming>>>::Response;
    type Error =
        <TowerToHyperService<Router> as hyper::service::Service<http::Request<Incoming>>>::Error;
    type Future =
        <TowerToHyperService<Router> as hyper::service::Service<http::Request<Incoming>>>::Future;

    fn call(&self, mut req: http::Request<Incoming>) -> Self::Future {
        // Until a request on it authenticates, the connection counts as waiting; after that
        // nothing is added to its requests.
        if !self.ticket.started() {
            req.extensions_mut()
                .insert(ConnectionAuth(self.ticket.clone()));
        }
        self.inner.call(req)
    }
}

/// In the extensions of a request on a connection that has not authenticated yet: the handler
/// calls [`authenticated`](Self::authenticated) once the caller proved who it is, which takes
/// the connection out of the waiting set. Until then, requests (a 401, `/healthz`) do not
/// protect a connection from the idle timeout or from eviction.
#[derive(Clone)]
pub struct ConnectionAuth(Arc<Ticket>);

impl ConnectionAuth {
    pub fn authenticated(&self) {
        self.0.start();
    }
}

/// The connections waiting for their first authenticated request, oldest first, each with the sender that
/// closes it.
struct Pending {
    cap: usize,
    evictions: AtomicU64,
    inner: Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    next: u64,
    by_age: BTreeMap<u64, oneshot::Sender<()>>,
}

/// A new connection's place among the waiting ones.
struct FirstRequest {
    ticket: Arc<Ticket>,
    /// Fires when a newer connection took this one's place.
    evicted: oneshot::Receiver<()>,
}

/// Shared by a connection's task and its service; leaves the waiting set on the first
/// authenticated request
/// or when the connection ends.
struct Ticket {
    id: u64,
    started: AtomicBool,
    pending: Arc<Pending>,
}

impl Pending {
    fn new(cap: usize) -> Pending {
        Pending {
            cap: cap.max(1),
            evictions: AtomicU64::new(0),
            inner: Mutex::new(Waiting::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a connection, closing the oldest waiting ones past the cap.
    fn admit(self: &Arc<Self>) -> FirstRequest {
        let (tx, evicted) = oneshot::channel();
        let id = {
            let mut w = self.lock();
            while w.by_age.len() >= self.cap {
                let Some((_, oldest)) = w.by_age.pop_first() else {
                    break;
                };
                let _ = oldest.send(());
                note(
                    &self.evictions,
                    self.cap,
                    "connections waiting for an authenticated request at the limit; closing the oldest",
                );
            }
            let id = w.next;
            w.next += 1;
            w.by_age.insert(id, tx);
            id
        };
        FirstRequest {
            ticket: Arc::new(Ticket {
                id,
                started: AtomicBool::new(false),
                pending: self.clone(),
            }),
            evicted,
        }
    }

    fn remove(&self, id: u64) {
        self.lock().by_age.remove(&id);
    }
}

impl Ticket {
    fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    fn start(&self) {
        if !self.started.load(Ordering::Relaxed) && !self.started.swap(true, Ordering::AcqRel) {
            self.pending.remove(self.id);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !*self.started.get_mut() {
            self.pending.remove(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_stay_within_the_open_files() {
        // (case, max_connections, max_pending_connections, open files, expected total, pending)
        let cases = [
            (
                "defaults, many files",
                10_000,
                256,
                Some(1 << 20),
                10_000,
                256,
            ),
            ("defaults, 1,024 files", 10_000, 256, Some(1024), 768, 256),
            ("few files", 10_000, 256, Some(300), 44, 22),
            ("fewer files than reserved", 10_000, 256, Some(100), 1, 1),
            ("limit unknown", 500, 256, None, 500, 250),
            ("pending past the total", 100, 1000, Some(1 << 20), 100, 50),
            ("zeroes", 0, 0, Some(1 << 20), 1, 1),
        ];
        for (case, total, pending, files, want_total, want_pending) in cases {
            let mut c = ServerConfig::new("unused");
            c.max_connections = total;
            c.max_pending_connections = pending;
            let l = Limits::within(&c, files);
            assert_eq!(
                (l.max_connections, l.max_pending),
                (want_total, want_pending),
                "{case}"
            );
        }
    }

    #[test]
    fn the_oldest_waiting_connection_makes_room_and_started_ones_leave_the_set() {
        let pending = Arc::new(Pending::new(2));
        let mut a = pending.admit();
        let mut b = pending.admit();
        b.ticket.start();
        // b left the set when it started: its sender was dropped, not fired.
        assert!(matches!(
            b.evicted.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        let mut c = pending.admit();
        assert!(matches!(
            a.evicted.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        // The set holds a and c; a fourth closes a, the oldest.
        let _d = pending.admit();
        assert!(a.evicted.try_recv().is_ok());
        assert!(matches!(
            c.evicted.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        drop(c);
        assert_eq!(pending.lock().by_age.len(), 1);
    }
}
