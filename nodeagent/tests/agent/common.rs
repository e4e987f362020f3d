//! Shared helpers: an in-process API server, an agent with short intervals, pods, waiting.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use drover_api::core::{Container, Pod, PodSpec};
use drover_apiserver::{RunningServer, ServerConfig};
use drover_client::{Client, ClientConfig};
use drover_device_plugins::DeviceManager;
use drover_nodeagent::AgentConfig;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const WAIT: Duration = Duration::from_secs(15);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub server: Option<RunningServer>,
    pub addr: SocketAddr,
    pub client: Client,
}

impl Cluster {
    pub async fn start() -> Cluster {
        init_tracing();
        let dir = tempfile::tempdir().expect("tempdir");
        let server = drover_apiserver::start(
            ServerConfig::new(dir.path().join("data")).listen("127.0.0.1:0".parse().expect("addr")),
        )
        .await
        .expect("apiserver starts");
        let addr = server.addr;
        let client = Client::new(&ClientConfig {
            server: server.url(),
            token: server.admin_token.clone(),
        })
        .expect("client");
        Cluster {
            dir,
            server: Some(server),
            addr,
            client,
        }
    }

    pub fn state_dir(&self, node: &str) -> PathBuf {
        self.dir.path().join(format!("agent-{node}"))
    }

    pub fn agent_config(&self, node: &str) -> AgentConfig {
        AgentConfig::new(node, self.state_dir(node))
            .with_devices("simulated:h100-8")
            .with_log_port(0)
            .with_node_ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .with_lease_interval(Duration::from_millis(200))
            .with_backoff(Duration::from_millis(50), Duration::from_millis(400))
    }

    pub fn start_agent(&self, config: AgentConfig) -> Agent {
        let (stop, rx) = oneshot::channel::<()>();
        let client = self.client.clone();
        let task = tokio::spawn(async move {
            drover_nodeagent::run(config, client, async move {
                let _ = rx.await;
            })
            .await
            .expect("agent runs");
        });
        Agent {
            stop: Some(stop),
            task,
        }
    }

    pub fn simulated_devices(node: &str) -> Arc<DeviceManager> {
        Arc::new(DeviceManager::from_spec_for_node("simulated:h100-8", node).expect("profile"))
    }

    pub async fn create_pod(&self, pod: Pod) -> Pod {
        self.client.all().create(&pod).await.expect("pod created")
    }

    pub async fn get_pod(&self, name: &str) -> Option<Pod> {
        self.client
            .namespaced::<Pod>("default")
            .get_opt(name)
            .await
            .expect("get pod")
    }

    /// Polls the pod until `pred` holds.
    pub async fn wait_pod(&self, name: &str, what: &str, pred: impl Fn(&Pod) -> bool) -> Pod {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut last = None;
        loop {
            if let Ok(Some(p)) = self.client.namespaced::<Pod>("default").get_opt(name).await {
                if pred(&p) {
                    return p;
                }
                last = Some(p);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "pod {name}: timed out waiting for {what}; last: {last:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_gone(&self, name: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.get_pod(name).await.is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "pod {name} was not removed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub struct Agent {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Agent {
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// A pod bound to `node` running `sh -c script`.
pub fn sh_pod(name: &str, node: &str, script: &str, restart_policy: &str) -> Pod {
    let mut pod = Pod::new(
        "default",
        name,
        PodSpec {
            containers: vec![Container {
                name: "main".into(),
                command: vec!["sh".into(), "-c".into(), script.into()],
                ..Default::default()
            }],
            restart_policy: restart_policy.into(),
            node_name: node.into(),
            ..Default::default()
        },
    );
    pod.spec.termination_grace_period_seconds = Some(2);
    pod
}

pub fn terminated(
    pod: &Pod,
    container: &str,
) -> Option<drover_api::core::ContainerStateTerminated> {
    pod.status
        .container_statuses
        .iter()
        .find(|c| c.name == container)?
        .state
        .as_ref()?
        .terminated
        .clone()
}

pub fn main_pid(pod: &Pod) -> Option<i32> {
    pod.status
        .container_statuses
        .first()?
        .container_id
        .strip_prefix("process://")?
        .parse()
        .ok()
}

/// Live (non-zombie) processes whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some(s) = drover_nodeagent::runtime::procfs::parse_stat(&text)
            && s.pgid as i32 == pgid
            && s.state != 'Z'
        {
            out.push(pid);
        }
    }
    out
}

/// A TCP proxy in front of the API server that can be cut and restored, so an agent sees the
/// API server go away and come back at the same address.
pub struct Proxy {
    pub addr: SocketAddr,
    upstream: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let mut p = Proxy {
            addr: "127.0.0.1:0".parse().expect("addr"),
            upstream,
            task: None,
        };
        p.resume().await;
        p
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes the listener and every open connection.
    pub fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Listens again on the same address.
    pub async fn resume(&mut self) {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("reuseaddr");
        socket.bind(self.addr).expect("bind proxy");
        let listener = socket.listen(64).expect("listen");
        self.addr = listener.local_addr().expect("addr");
        let upstream = self.upstream;
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut down, _)) = listener.accept().await {
                conns.spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
            }
        }));
    }
}

impl Cluster {
    /// A client for the admin token through another address.
    pub fn client_via(&self, url: String) -> Client {
        let token = self
            .server
            .as_ref()
            .map(|s| s.admin_token.clone())
            .unwrap_or_default();
        Client::new(&ClientConfig { server: url, token }).expect("client")
    }

    pub fn start_agent_with(&self, config: AgentConfig, client: Client) -> Agent {
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            drover_nodeagent::run(config, client, async move {
                let _ = rx.await;
            })
            .await
            .expect("agent runs");
        });
        Agent {
            stop: Some(stop),
            task,
        }
    }
}

impl Cluster {
    /// Force-deletes every pod and waits until the agent of `node` has stopped and forgotten
    /// them, so no test leaves processes (or cgroups) behind.
    pub async fn cleanup(&self, node: &str) {
        let pods = self.client.namespaced::<Pod>("default");
        let params = drover_client::DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        if let Ok(list) = pods.list(&Default::default()).await {
            for p in list.items {
                let _ = pods.delete(&p.metadata.name, &params).await;
            }
        }
        let dir = self.state_dir(node).join("pods");
        let deadline = tokio::time::Instant::now() + WAIT;
        while std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0) > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "pods of {node} were not cleaned up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
