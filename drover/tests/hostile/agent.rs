//! The node agent and the log path, probed against the real `drover up --simulate-nodes 1` (see
//! [`super`]): one GPU bound to two pods, names that climb out of a pod's log folder, and what
//! the log proxy sends to the address a Node declares.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use drover_api::client::{Client, ClientConfig};
use drover_api::core::{Binding, DeviceAssignment, Node, Pod};
use drover_api::quantity::Quantity;

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
