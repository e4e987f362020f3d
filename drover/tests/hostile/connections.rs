//! Connections, probed against the real `drover apiserver` (see [`super`]): a flood of idle
//! sockets past the server's open-file limit, and paths no route serves.
//!
//! Last run (loopback, 2 cores): 1,100 idle connections against an API server whose open-file
//! limit was 1,024 (soft and hard); `drover get pods` and an authenticated REST list answered at
//! once, and all 1,100 idle sockets were closed by the server (the oldest as newer ones took their
//! place among the 256 waiting, the rest at the 10 s idle timeout). Before the fix the server ran
//! out of file descriptors and the same `drover get pods` failed ("h2 protocol error: stream
//! closed because of a broken pipe"), and `GET /foo` answered 200 with an empty body.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use drover_client::ClientConfig;

use super::common::World;

/// The open-file limit the probed server runs under (the figure of issue 12).
const SERVER_OPEN_FILES: u64 = 1024;
/// Idle sockets opened against it: more than it has file descriptors.
const IDLE_SOCKETS: usize = 1100;
/// A generous bound on anything that should take a second or two.
const PATIENCE: Duration = Duration::from_secs(60);

/// `drover apiserver` under an open-file limit of [`SERVER_OPEN_FILES`]; its address and token.
fn apiserver(w: &mut World) -> (SocketAddr, String) {
    let data = w.path().join("data");
    let config = w.config();
    let (data_s, config_s) = (
        data.to_str().expect("utf-8 path").to_string(),
        config.to_str().expect("utf-8 path").to_string(),
    );
    w.spawn_with_open_file_limit(
        "apiserver",
        SERVER_OPEN_FILES,
        &[
            "apiserver",
            "--data-dir",
            &data_s,
            "--listen",
            "127.0.0.1:0",
            "--write-config",
            &config_s,
        ],
    );
    w.wait_config(PATIENCE);
    let cfg = ClientConfig::load(&config).expect("client config");
    let addr = cfg
        .server
        .trim_start_matches("http://")
        .parse()
        .expect("server address");
    (addr, cfg.token)
}

/// Raises this process's soft open-file limit to its hard limit; whether it allows `needed`.
fn allow_open_files(needed: u64) -> bool {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return false;
    };
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() && hard >= needed
}

/// One HTTP/1 request on a fresh connection; the status code and the body.
fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut tcp = TcpStream::connect_timeout(&addr, PATIENCE).expect("connect");
    tcp.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        tcp,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("write");
    let mut reply = String::new();
    tcp.read_to_string(&mut reply).expect("read the reply");
    let code = reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP reply: {reply:?}"));
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// `drover get pods`, killed if it has not answered within [`PATIENCE`]; whether it succeeded.
fn get_pods(w: &World) -> Result<(), String> {
    let mut child = w
        .command()
        .env("RUST_LOG", "error")
        .args(["get", "pods"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run drover");
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return if status.success() {
                Ok(())
            } else {
                Err(format!("drover get pods failed: {err}"))
            };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("drover get pods hung for {PATIENCE:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn idle_connections_past_the_open_file_limit_leave_room_for_real_clients() {
    if !allow_open_files(IDLE_SOCKETS as u64 + 200) {
        eprintln!(
            "skipped: this process may not open {IDLE_SOCKETS} sockets (raise its hard open-file limit)"
        );
        return;
    }
    let mut w = World::new();
    let (addr, token) = apiserver(&mut w);

    let mut idle = Vec::with_capacity(IDLE_SOCKETS);
    for i in 0..IDLE_SOCKETS {
        let tcp = TcpStream::connect_timeout(&addr, PATIENCE)
            .unwrap_or_else(|e| panic!("idle connection {i}: {e}"));
        idle.push(tcp);
    }

    // Real clients are served while every idle socket is still open on this side.
    get_pods(&w).unwrap_or_else(|e| panic!("{e}\n{}", w.log("apiserver")));
    let (code, body) = http(addr, "GET", "/api/v1/namespaces/default/pods", Some(&token));
    assert_eq!(code, 200, "{body}");

    // And the server closes every idle socket: read returns 0 (or the connection was reset).
    let mut closed = 0;
    for (i, tcp) in idle.iter_mut().enumerate() {
        tcp.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let mut buf = [0u8; 64];
        match tcp.read(&mut buf) {
            Ok(0) => closed += 1,
            Err(e)
                if e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut =>
            {
                closed += 1
            }
            other => panic!("idle connection {i} still open: {other:?}"),
        }
    }
    assert_eq!(closed, IDLE_SOCKETS);
}

#[test]
fn unknown_paths_get_a_not_found_status() {
    let mut w = World::new();
    let (addr, token) = apiserver(&mut w);
    for (method, path) in [
        ("GET", "/foo"),
        ("POST", "/drover.v1.Nope/Create"),
        ("GET", "/drover.v1.Api/Nope"),
    ] {
        for token in [None, Some(token.as_str())] {
            let (code, body) = http(addr, method, path, token);
            assert_eq!(code, 404, "{method} {path}: {body}");
            let status: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {body}"));
            assert_eq!(status["kind"], "Status", "{body}");
            assert_eq!(status["reason"], "NotFound", "{body}");
            assert_eq!(status["code"], 404, "{body}");
        }
    }
}
