//! Connections against a real in-process server on loopback (issue 12 items 7 and 12): idle
//! sockets past the pending cap and the idle timeout are closed while real clients are served,
//! connections in use are never cut for being quiet, and unknown paths get a 404 `Status` (gRPC
//! callers `UNIMPLEMENTED`).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{TestServer, pod_json, start_with};
use drover_api::core::Pod;
use drover_client::{ListParams, WatchEvent};
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous bound on anything the server should do within a second or two.
const PATIENCE: Duration = Duration::from_secs(30);
const IDLE: Duration = Duration::from_secs(1);
const PENDING_CAP: usize = 8;

/// A server with a short idle timeout and a small cap on connections waiting for a first
/// request; bookmarks rare enough that an open watch is quiet on the wire.
async fn server() -> TestServer {
    start_with(|mut c| {
        c.idle_connection_timeout = IDLE;
        c.max_pending_connections = PENDING_CAP;
        c.bookmark_interval = Duration::from_secs(3600);
        c
    })
    .await
}

/// How a hostile client holds a socket open without finishing a request.
#[derive(Clone, Copy, Debug)]
enum Idle {
    /// Connects and sends nothing.
    Silent,
    /// Half an HTTP/1 request head (slowloris).
    PartialHead,
    /// The HTTP/2 preface and SETTINGS, then no request.
    Http2Preface,
    /// Complete HTTP/1.1 keep-alive requests with a wrong token (each answered 401), then
    /// nothing: answered requests that never authenticated do not make a connection "in use".
    Unauthenticated,
}

async fn open_idle(s: &TestServer, how: Idle) -> TcpStream {
    let mut tcp = TcpStream::connect(s.server.addr).await.expect("connect");
    match how {
        Idle::Silent => {}
        Idle::PartialHead => tcp
            .write_all(b"GET /api/v1/pods HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write"),
        Idle::Http2Preface => {
            // The preface, then an empty SETTINGS frame (length 0, type 4, no flags, stream 0).
            tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
                .await
                .expect("write")
        }
        Idle::Unauthenticated => {
            for path in ["/api/v1/pods", "/healthz"] {
                let req = format!(
                    "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n\r\n"
                );
                tcp.write_all(req.as_bytes()).await.expect("write");
            }
        }
    }
    tcp
}

/// Reads until the server closes the socket (EOF or reset); panics if it stays open past
/// [`PATIENCE`]. Whatever the server sent before closing (its SETTINGS, a GOAWAY) is skipped.
async fn closed_by_server(tcp: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept {what} open");
}

#[tokio::test]
async fn idle_connections_past_the_cap_are_closed_and_real_clients_are_served() {
    let s = server().await;
    let kinds = [
        Idle::Silent,
        Idle::PartialHead,
        Idle::Http2Preface,
        Idle::Unauthenticated,
    ];
    let mut idle = Vec::new();
    for i in 0..PENDING_CAP * 8 {
        let how = kinds[i % kinds.len()];
        idle.push((how, open_idle(&s, how).await));
    }

    // Every idle socket holds a place among the waiting ones; a real request still gets through
    // on both transports.
    let pods = s.client().namespaced::<Pod>("default");
    let list = tokio::time::timeout(PATIENCE, pods.list(&ListParams::default()))
        .await
        .expect("gRPC list answered")
        .expect("gRPC list succeeds");
    assert!(list.items.is_empty());
    let r = s.rest().get("/api/v1/namespaces/default/pods").await;
    assert_eq!(r.code, 200, "{}", String::from_utf8_lossy(&r.body));

    // Each idle socket is closed: the oldest as newer ones took their places, the rest at the
    // idle timeout.
    for (i, (how, tcp)) in idle.iter_mut().enumerate() {
        closed_by_server(tcp, &format!("idle connection {i} ({how:?})")).await;
    }
}

#[tokio::test]
async fn connections_in_use_are_not_cut_when_quiet() {
    let s = server().await;
    // A gRPC watch on its own HTTP/2 connection, and a REST watch on its own HTTP/1 connection.
    let grpc = s.client().new_connection().expect("client");
    let watch = grpc
        .namespaced::<Pod>("default")
        .watch(&ListParams::default(), "0")
        .await
        .expect("gRPC watch");
    let mut grpc_watch = Box::pin(
        watch.filter(|e| futures::future::ready(!matches!(e, Ok(WatchEvent::Bookmark(_))))),
    );
    let http1 = HttpClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = http::Request::get(format!(
        "{}/api/v1/namespaces/default/pods?watch=1",
        s.server.url()
    ))
    .header("authorization", format!("Bearer {}", s.server.admin_token))
    .body(Full::new(Bytes::new()))
    .expect("request");
    let resp = tokio::time::timeout(PATIENCE, http1.request(req))
        .await
        .expect("REST watch answered")
        .expect("REST watch");
    assert_eq!(resp.status(), 200);
    let mut rest_watch = resp.into_body();

    // An idle socket opened after both watches is closed at the idle timeout: by then both
    // watches have been quiet for longer than that.
    let mut later = open_idle(&s, Idle::Silent).await;
    closed_by_server(&mut later, "an idle connection").await;

    let pod: Pod = serde_json::from_value(pod_json("default", "after-quiet")).expect("pod");
    s.client()
        .namespaced::<Pod>("default")
        .create(&pod)
        .await
        .expect("create");
    let event = tokio::time::timeout(PATIENCE, grpc_watch.next())
        .await
        .expect("the gRPC watch still delivers");
    assert!(
        matches!(&event, Some(Ok(WatchEvent::Added(p))) if p.metadata.name == "after-quiet"),
        "{event:?}"
    );
    let seen = tokio::time::timeout(PATIENCE, async {
        let mut text = String::new();
        while let Some(frame) = rest_watch.frame().await {
            let frame = frame.expect("the REST watch still delivers");
            if let Some(data) = frame.data_ref() {
                text.push_str(&String::from_utf8_lossy(data));
                if text.contains("after-quiet") {
                    return text;
                }
            }
        }
        panic!("the REST watch ended: {text}");
    })
    .await
    .expect("the REST watch still delivers");
    assert!(seen.contains("ADDED"), "{seen}");
}

#[tokio::test]
async fn unknown_paths_get_a_not_found_status_and_grpc_callers_unimplemented() {
    let s = server().await;
    for (method, path) in [
        ("GET", "/foo"),
        ("POST", "/foo/bar"),
        ("GET", "/"),
        ("DELETE", "/drover.v1.Nope/Create"),
        // The gRPC service's own paths, without gRPC's content type.
        ("GET", "/drover.v1.Api/Nope"),
        ("POST", "/drover.v1.Api/List"),
    ] {
        let r = s.rest().call(method, path, "", Bytes::new()).await;
        assert_eq!(r.code, 404, "{method} {path}");
        let body = r.json();
        assert_eq!(body["kind"], "Status", "{body}");
        assert_eq!(body["apiVersion"], "v1", "{body}");
        assert_eq!(body["status"], "Failure", "{body}");
        assert_eq!(body["reason"], "NotFound", "{body}");
        assert_eq!(body["code"], 404, "{body}");
        assert_eq!(
            body["message"],
            format!("the server could not find the requested resource: {method} {path}"),
        );
    }

    // gRPC over h2c: an unknown service, and an unknown method of the known one.
    let h2 = HttpClient::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    for path in ["/drover.v1.Nope/Create", "/drover.v1.Api/Nope"] {
        let req = http::Request::post(format!("{}{path}", s.server.url()))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
            .expect("request");
        let resp = tokio::time::timeout(PATIENCE, h2.request(req))
            .await
            .expect("answered")
            .expect("response");
        assert_eq!(resp.status(), 200, "{path}");
        let headers = resp.headers().clone();
        let trailers = resp
            .into_body()
            .collect()
            .await
            .expect("body")
            .trailers()
            .cloned();
        let code = headers
            .get("grpc-status")
            .or_else(|| trailers.as_ref().and_then(|t| t.get("grpc-status")))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // 12 is UNIMPLEMENTED.
        assert_eq!(
            code.as_deref(),
            Some("12"),
            "{path}: {headers:?} {trailers:?}"
        );
    }
}

#[tokio::test]
async fn an_http2_connection_allows_a_thousand_streams() {
    // hyper's default of 200 filled up with watches; the client's pool opens another connection
    // only when every stream the server allows is taken.
    let s = server().await;
    let tcp = TcpStream::connect(s.server.addr).await.expect("connect");
    let (mut send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(conn);
    let req = http::Request::get(format!("{}/healthz", s.server.url()))
        .body(())
        .expect("request");
    let (resp, _) = send.send_request(req, true).expect("send");
    let resp = tokio::time::timeout(PATIENCE, resp)
        .await
        .expect("answered")
        .expect("response");
    assert_eq!(resp.status(), 200);
    // The server's SETTINGS came before its answer.
    assert_eq!(
        send.current_max_send_streams(),
        drover_apiserver::config::HTTP2_MAX_CONCURRENT_STREAMS as usize
    );
}

#[tokio::test]
async fn http2_connections_that_never_authenticate_do_not_stay() {
    // Each asks once with a wrong token (401) and once without needing one (/healthz), then
    // holds the connection open, answering the server's pings: it must still be closed, while
    // a client that authenticates is served throughout.
    let s = server().await;
    let mut held = Vec::new();
    for _ in 0..PENDING_CAP * 2 {
        let tcp = TcpStream::connect(s.server.addr).await.expect("connect");
        let (mut send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
        let conn = tokio::spawn(conn);
        for (path, token) in [("/api/v1/pods", "Bearer wrong"), ("/healthz", "")] {
            let mut req = http::Request::get(format!("{}{path}", s.server.url()));
            if !token.is_empty() {
                req = req.header("authorization", token);
            }
            let (resp, _) = send
                .send_request(req.body(()).expect("request"), true)
                .expect("send");
            tokio::time::timeout(PATIENCE, resp)
                .await
                .expect("answered")
                .expect("response");
        }
        held.push((send, conn));
    }
    let pods = s.client().namespaced::<Pod>("default");
    pods.list(&ListParams::default())
        .await
        .expect("an authenticated client is served");
    for (i, (_send, conn)) in held.into_iter().enumerate() {
        // How it ended (a GOAWAY, a reset) does not matter; that it ended does.
        let _ended = tokio::time::timeout(PATIENCE, conn)
            .await
            .unwrap_or_else(|_| panic!("the server kept unauthenticated connection {i} open"))
            .expect("connection task");
    }
    pods.list(&ListParams::default())
        .await
        .expect("an authenticated client is still served");
}
