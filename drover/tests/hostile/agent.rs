//! The node agent and the log path, probed against the real `drover up --simulate-nodes 1` (see
//! [`super`]): one GPU bound to two pods, names that climb out of a pod's log folder, and what
//! the log proxy sends to the address a Node declares.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use drover_api::core::{Binding, DeviceAssignment, Node, Pod};
use drover_api::quantity::Quantity;
use drover_client::{Client, ClientConfig};

use super::common::{World, wait_for};
use super::state::{pod, up_with};

/// The simulated node and its first GPU (see the simulated device plugin).
const NODE: &str = "sim-0";
const GPU: &str = "nvidia.com/gpu";

/// `drover up` with one simulated 8-GPU node that runs real processes.
fn up_one_node() -> (World, Client, tokio::runtime::Runtime) {
    let (mut w, client, rt) = up_with(&["--simulate-nodes", "1", "--node-profile", "h100-8"]);
    w.track_state_dir(w.path().join("data").join("sim").join(NODE));
    wait_for(Duration::from_secs(60), "the simulated node", || {
        rt.block_on(client.all::<Node>().get(NODE)).ok()
    });
    (w, client, rt)
}

/// A pod the default scheduler leaves alone (the test binds it), asking for one GPU.
fn manual_gpu_pod(name: &str) -> Pod {
    let mut p = pod(name);
    p.spec.scheduler_name = "manual".into();
    p.spec.containers[0]
        .resources
        .limits
        .insert(GPU.into(), Quantity::from_value(1));
    p
}

fn bind(rt: &tokio::runtime::Runtime, client: &Client, name: &str, gpu_id: &str) {
    let binding = Binding::new(
        "default",
        name,
        NODE,
        vec![DeviceAssignment {
            container: "main".into(),
            resource: GPU.into(),
            ids: vec![gpu_id.into()],
            share_milli: None,
        }],
    );
    rt.block_on(
        client
            .namespaced::<Pod>("default")
            .create_subresource_ack(name, "binding", &binding),
    )
    .unwrap_or_else(|e| panic!("bind {name}: {e}"));
}

fn phase_of(rt: &tokio::runtime::Runtime, client: &Client, name: &str) -> Option<Pod> {
    rt.block_on(client.namespaced::<Pod>("default").get(name))
        .ok()
}

#[test]
fn one_gpu_is_never_given_to_two_pods() {
    let (_w, client, rt) = up_one_node();
    let gpu_id = format!("GPU-sim-{NODE}-3");
    let pods = client.namespaced::<Pod>("default");
    for name in ["holder", "intruder"] {
        rt.block_on(pods.create(&manual_gpu_pod(name)))
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
    }
    bind(&rt, &client, "holder", &gpu_id);
    wait_for(Duration::from_secs(60), "the holder to run", || {
        let p = phase_of(&rt, &client, "holder")?;
        (p.status.phase == "Running").then_some(())
    });
    // The binding itself is valid (the device exists, the node has room by count): only the
    // agent knows the device is taken, and it must refuse to start the pod, naming both.
    bind(&rt, &client, "intruder", &gpu_id);
    let refused = wait_for(
        Duration::from_secs(60),
        "the intruder to be refused",
        || {
            let p = phase_of(&rt, &client, "intruder")?;
            (p.status.phase == "Failed").then_some(p)
        },
    );
    assert_eq!(refused.status.reason, "UnexpectedAdmissionError");
    let message = &refused.status.message;
    assert!(
        message.contains(&gpu_id) && message.contains("holder"),
        "the refusal names the device and its holder: {message}"
    );
    let holder = phase_of(&rt, &client, "holder").expect("holder");
    assert_eq!(holder.status.phase, "Running", "the holder keeps its GPU");
}

/// `GET path` on the agent's log server with the admin token: (status code, body).
fn agent_get(port: i32, path: &str, token: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port as u16)).expect("connect to the agent");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).expect("read the answer");
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let code = reply
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, reply)
}

#[test]
fn log_names_cannot_climb_out_of_the_pod() {
    let (w, client, rt) = up_one_node();
    let token = ClientConfig::load(&w.config()).expect("config").token;
    // A host file the agent can read, ending in `.log` as the server appends.
    let secret = w.path().join("secret.log");
    std::fs::write(&secret, "the host's secret\n").expect("write the host file");

    let mut p = pod("talker");
    p.spec.node_name = NODE.into();
    p.spec.containers[0].command = vec!["sh".into(), "-c".into(), "echo hello; sleep 600".into()];
    rt.block_on(client.namespaced::<Pod>("default").create(&p))
        .expect("create the pod");
    let node = rt.block_on(client.all::<Node>().get(NODE)).expect("node");
    let port = node
        .status
        .daemon_endpoints
        .and_then(|d| d.kubelet_endpoint)
        .map(|e| e.port)
        .expect("the node reports its agent port");
    wait_for(Duration::from_secs(60), "the pod's log", || {
        let (code, body) = agent_get(port, "/containerLogs/default/talker/main", &token);
        (code == 200 && body.contains("hello")).then_some(())
    });

    // From the pod's folder (<state>/pods/<ns>_<pod>_<uid>/) up to the filesystem root.
    let climb = "..%2F".repeat(32);
    let target = secret.with_extension("");
    let target = target.to_str().expect("utf-8 path").trim_start_matches('/');
    let encoded = target.replace('/', "%2F");
    for path in [
        format!("/containerLogs/default/talker/{climb}{encoded}"),
        "/containerLogs/default/talker/..".to_string(),
        format!("/containerLogs/default/..%2F..%2F{climb}/main"),
        format!("/containerLogs/{climb}/talker/main"),
    ] {
        let (code, body) = agent_get(port, &path, &token);
        assert!(
            !body.contains("the host's secret"),
            "{path} read a host file"
        );
        assert_eq!(code, 400, "{path}: {body}");
        assert!(body.contains("invalid"), "{path}: {body}");
    }
}

/// Accepts one HTTP request on `listener`, answers it with a short log, and returns its head.
fn capture_one_request(listener: std::net::TcpListener) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("the proxy to call");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).map(|n| n == 1).unwrap_or(false) {
            head.push(byte[0]);
        }
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nfake log\n",
        );
        String::from_utf8_lossy(&head).into_owned()
    })
}

#[test]
fn the_log_proxy_never_forwards_the_callers_token() {
    let (w, client, rt) = up_with(&[]);
    let admin = ClientConfig::load(&w.config()).expect("config").token;
    // Whoever may create Nodes declares where "its agent" listens: here, our own listener.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let nodes = client.all::<Node>();
    let evil = rt.block_on(nodes.create(&Node::new("evil"))).expect("node");
    let mut declared = evil.clone();
    declared.status.addresses = vec![drover_api::core::NodeAddress {
        type_: "InternalIP".into(),
        address: "127.0.0.1".into(),
    }];
    declared.status.daemon_endpoints = Some(drover_api::core::NodeDaemonEndpoints {
        kubelet_endpoint: Some(drover_api::core::DaemonEndpoint { port: port.into() }),
    });
    rt.block_on(nodes.update_status(&declared))
        .expect("declare the address");
    let mut p = pod("victim");
    p.spec.node_name = "evil".into();
    rt.block_on(client.namespaced::<Pod>("default").create(&p))
        .expect("create the pod");

    let captured = capture_one_request(listener);
    let out = w.run(&["logs", "victim"]);
    let head = captured.join().expect("the listener thread");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("fake log"),
        "the proxy called the declared address: {out:?}"
    );
    assert!(
        !head.contains(&admin),
        "the caller's token reached the declared address:\n{head}"
    );
    let presented = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("authorization: Bearer ")
                .or_else(|| l.strip_prefix("Authorization: Bearer "))
        })
        .expect("the proxy authenticates to the agent")
        .trim()
        .to_string();

    // What the listener received is worth nothing on the API server...
    let stolen = Client::new(&ClientConfig {
        server: ClientConfig::load(&w.config()).expect("config").server,
        token: presented.clone(),
    })
    .expect("client");
    let e = rt
        .block_on(stolen.all::<Node>().get("evil"))
        .expect_err("the minted token must not authenticate API calls");
    assert!(e.to_string().contains("Unauthorized"), "{e}");
    // ...nor on another node's agent; only on the node it was minted for.
    let review = |audience: String| {
        let r = drover_api::authentication::TokenReview {
            spec: drover_api::authentication::TokenReviewSpec {
                token: presented.clone(),
                audiences: vec![audience],
            },
            ..Default::default()
        };
        rt.block_on(
            client
                .all::<drover_api::authentication::TokenReview>()
                .create(&r),
        )
        .expect("token review")
        .status
    };
    let other = review(drover_api::authentication::node_audience("gpu-node-1"));
    assert!(!other.authenticated, "{other:?}");
    let own = review(drover_api::authentication::node_audience("evil"));
    assert!(own.authenticated, "{own:?}");
}
