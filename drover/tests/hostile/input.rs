//! Bodies, queries and manifests, probed against the real `drover up` over raw HTTP/1.1 (see
//! [`super`]): trailing data, deep nesting, a body without a Content-Type, bad query values,
//! watch timeouts, and manifests too large for the CLI.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use drover_client::ClientConfig;

use super::common::World;
use super::state::up_with;

/// The API server's `host:port` and the admin token.
fn endpoint(w: &World) -> (String, String) {
    let cfg = ClientConfig::load(&w.config()).expect("config");
    let addr = cfg
        .server
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    (addr, cfg.token)
}

/// One request on a fresh connection: (status code, the whole answer as text). A server that
/// does not answer within a minute fails the probe.
fn http(
    addr: &str,
    token: &str,
    method: &str,
    path: &str,
    ctype: &str,
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("read timeout");
    let ctype = if ctype.is_empty() {
        String::new()
    } else {
        format!("Content-Type: {ctype}\r\n")
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n{ctype}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("send head");
    s.write_all(body).expect("send body");
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)
        .unwrap_or_else(|e| panic!("{method} {path}: no complete answer: {e}"));
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let code = reply
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, reply)
}

const PODS: &str = "/api/v1/namespaces/default/pods";

fn pod_json(name: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},"spec":{{"containers":[{{"name":"main","command":["sleep","600"]}}]}}}}"#
    )
}

#[test]
fn bodies_are_read_whole_once_and_not_too_deep() {
    let (w, _client, _rt) = up_with(&[]);
    let (addr, token) = endpoint(&w);
    let post = |ctype: &str, body: &[u8]| http(&addr, &token, "POST", PODS, ctype, body);

    // Trailing data, and two objects in one body: refused, nothing created.
    let (code, answer) = post(
        "application/json",
        format!("{}garbage", pod_json("t1")).as_bytes(),
    );
    assert_eq!(code, 400, "{answer}");
    let two = format!("{}{}", pod_json("t2"), pod_json("t3"));
    let (code, answer) = post("application/json", two.as_bytes());
    assert_eq!(code, 400, "{answer}");
    for name in ["t1", "t2", "t3"] {
        let (code, _) = http(&addr, &token, "GET", &format!("{PODS}/{name}"), "", b"");
        assert_eq!(code, 404, "{name} was created");
    }

    // No Content-Type is JSON, as in Kubernetes.
    let (code, answer) = post("", pod_json("plain").as_bytes());
    assert_eq!(code, 201, "{answer}");

    // Deep bodies, several at once: each refused, and the server answers others meanwhile
    // (before the fix, each took tens of seconds of CPU on an async worker).
    let flow = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let mapping = format!("{}1{}", "{\"a\":".repeat(40_000), "}".repeat(40_000));
    let probes = [
        ("application/yaml", flow.clone()),
        ("application/yaml", mapping.clone()),
        ("", mapping.clone()),
        ("application/json", flow),
    ];
    std::thread::scope(|scope| {
        let deep: Vec<_> = probes
            .iter()
            .map(|(ctype, body)| {
                let post = &post;
                scope.spawn(move || (*ctype, post(ctype, body.as_bytes())))
            })
            .collect();
        let (code, answer) = http(&addr, &token, "GET", "/api/v1/namespaces", "", b"");
        assert_eq!(code, 200, "a normal request during the deep ones: {answer}");
        for d in deep {
            let (ctype, (code, answer)) = d.join().expect("probe thread");
            // JSON is refused by the decoder, at its first unexpected token or at serde's
            // recursion limit; YAML by the depth scan before the parser runs.
            assert!(matches!(code, 400 | 422), "{ctype:?}: {answer}");
            if ctype.contains("yaml") {
                assert!(answer.contains("deeper than 128"), "{ctype:?}: {answer}");
            }
        }
    });
}

#[test]
fn query_values_are_checked_and_watches_end_on_time() {
    let (w, _client, _rt) = up_with(&[]);
    let (addr, token) = endpoint(&w);
    let get = |path: &str| http(&addr, &token, "GET", path, "", b"");
    for query in [
        "resourceVersion=abc",
        "resourceVersion=-1",
        "limit=x",
        "watch=true&timeoutSeconds=soon",
    ] {
        let (code, answer) = get(&format!("{PODS}?{query}"));
        assert_eq!(code, 400, "{query}: {answer}");
        let key = query.rsplit('&').next().and_then(|q| q.split('=').next());
        assert!(
            answer.contains(key.unwrap_or_default()),
            "{query}: {answer}"
        );
    }
    let (code, answer) = get(&format!("{PODS}?resourceVersion=1"));
    assert_eq!(code, 200, "{answer}");
    // The watch ends by itself (read_to_end returns) well within the probe's read timeout.
    let (code, answer) = get(&format!("{PODS}?watch=true&timeoutSeconds=1"));
    assert_eq!(code, 200, "{answer}");
}

#[test]
fn manifests_too_large_are_refused_before_they_are_read() {
    let (w, _client, _rt) = up_with(&[]);
    let big = w.path().join("big.json");
    let f = std::fs::File::create(&big).expect("create");
    // 100 MB, sparse: the CLI must refuse it by its size, not by reading it.
    f.set_len(100 << 20).expect("size");
    let out = w.run(&["apply", "-f", big.to_str().expect("utf-8 path")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("larger than the limit") && err.contains("big.json"),
        "{err}"
    );

    // An object over the server's body limit: the server's 413, named as such.
    let arg = "x".repeat(4 << 20);
    let body = pod_json("huge").replace("\"600\"", &format!("\"{arg}\""));
    let huge = w.path().join("huge.json");
    std::fs::write(&huge, body).expect("write");
    let out = w.run(&["apply", "-f", huge.to_str().expect("utf-8 path")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("RequestEntityTooLarge (413)"), "{err}");
    assert!(!err.contains("InternalError"), "{err}");
}
