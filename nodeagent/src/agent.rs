//! The agent of one real node: [`AgentConfig`] and [`run`], which registers the node, renews its
//! lease, keeps its status current as device health changes, runs the pods bound to it, serves
//! their logs and rotates them, until `shutdown` resolves. Pods keep running when the agent
//! stops; the next agent with the same state directory adopts them.
//!
//! Pods run as an unprivileged user, not as the agent: see [`crate::runtime::user`] for who
//! (`pod_user`) and where their working directories live (`pod_work_root`). The state
//! directory (records, logs) is private to the agent: 0700, files 0600.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use drover_api::core::Pod;
use drover_client::informer::{Change, Informer};
use drover_client::{Client, ListParams};
use drover_device_plugins::{DeviceError, DeviceManager, Discovery, HealthEvents};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::lease::{DEFAULT_LEASE_DURATION_SECONDS, LeaseKeeper};
use crate::logserver::{self, DEFAULT_LOG_PORT, LogServerError, TokenChecker};
use crate::node::{self, DEFAULT_MAX_PODS, NodeError, NodeFacts};
use crate::pods::{Backoff, LogIndex, NodeContext, PodSupervisor};
use crate::runtime::cgroup::{Cgroups, DEFAULT_CGROUP_ROOT};
use crate::runtime::process::ProcessRuntime;
use crate::runtime::user::{DEFAULT_POD_WORK_ROOT, PodUsers, UserError, prepare_work_root};
use crate::runtime::{PROCESS_RUNTIME, Runtime, oci_runtimes_on_path};
use crate::state::{StateStore, make_private_dir};

/// Seconds between lease renewals (Kubernetes' kubelet default).
pub const DEFAULT_LEASE_INTERVAL: Duration = Duration::from_secs(5);
/// Seconds between node status refreshes when nothing changed.
pub const DEFAULT_NODE_STATUS_INTERVAL: Duration = Duration::from_secs(60);
/// Log size at which a running container's log is rotated.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// How often logs are checked for rotation.
pub const LOG_ROTATE_INTERVAL: Duration = Duration::from_secs(10);
/// Processes (threads included) one container may have.
pub const DEFAULT_PIDS_LIMIT: u64 = 16_384;
/// First and longest wait between registration attempts.
const REGISTER_RETRY: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(5));

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("devices: {0}")]
    Devices(#[from] DeviceError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    LogServer(#[from] LogServerError),
    #[error(transparent)]
    PodUser(#[from] UserError),
    #[error("cannot create the state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How an agent runs. Build with [`AgentConfig::new`] and the `with_*` methods.
#[derive(Clone)]
pub struct AgentConfig {
    pub node_name: String,
    /// `auto`, `nvidia`, `none` or `simulated:PROFILE` (ignored when `device_manager` is set).
    pub devices: String,
    /// Devices already set up (tests use it to fail simulated devices).
    pub device_manager: Option<Arc<DeviceManager>>,
    pub state_dir: PathBuf,
    pub lease_interval: Duration,
    pub lease_duration_seconds: i32,
    pub node_status_interval: Duration,
    /// Port of the log server; 0 picks a free one.
    pub log_port: u16,
    /// The node's address; found from the route to the API server when `None`.
    pub node_ip: Option<IpAddr>,
    /// Where the log server listens; the node's address when `None`.
    pub log_address: Option<IpAddr>,
    pub backoff: Backoff,
    pub log_max_bytes: u64,
    /// The cgroup file system; `None` runs containers without limits.
    pub cgroup_root: Option<PathBuf>,
    pub pids_limit: Option<u64>,
    pub max_pods: u32,
    /// Who pods run as by default (`NAME`, `UID` or `UID:GID`); `None`: the `drover` system
    /// user when the agent is root (created when missing), else the agent's own user.
    pub pod_user: Option<String>,
    /// Below this directory, `<node>/<pod uid>/` is each pod's working directory; `None`:
    /// [`DEFAULT_POD_WORK_ROOT`] when the agent is root, else `<state_dir>/work`.
    pub pod_work_root: Option<PathBuf>,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("node_name", &self.node_name)
            .field("devices", &self.devices)
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

impl AgentConfig {
    pub fn new(node_name: impl Into<String>, state_dir: impl Into<PathBuf>) -> Self {
        AgentConfig {
            node_name: node_name.into(),
            devices: "auto".into(),
            device_manager: None,
            state_dir: state_dir.into(),
            lease_interval: DEFAULT_LEASE_INTERVAL,
            lease_duration_seconds: DEFAULT_LEASE_DURATION_SECONDS,
            node_status_interval: DEFAULT_NODE_STATUS_INTERVAL,
            log_port: DEFAULT_LOG_PORT,
            node_ip: None,
            log_address: None,
            backoff: Backoff::default(),
            log_max_bytes: DEFAULT_LOG_MAX_BYTES,
            cgroup_root: Some(DEFAULT_CGROUP_ROOT.into()),
            pids_limit: Some(DEFAULT_PIDS_LIMIT),
            max_pods: DEFAULT_MAX_PODS,
            pod_user: None,
            pod_work_root: None,
        }
    }

    pub fn with_pod_user(mut self, user: Option<String>) -> Self {
        self.pod_user = user;
        self
    }

    pub fn with_pod_work_root(mut self, root: Option<PathBuf>) -> Self {
        self.pod_work_root = root;
        self
    }

    /// The folder of this node's pod working directories.
    pub fn work_dir(&self, users: &PodUsers) -> PathBuf {
        let root = match &self.pod_work_root {
            Some(r) => r.clone(),
            None if users.can_switch => DEFAULT_POD_WORK_ROOT.into(),
            // Pods run as the agent itself: its own state directory is reachable.
            None => self.state_dir.join("work"),
        };
        root.join(&self.node_name)
    }

    pub fn with_devices(mut self, spec: impl Into<String>) -> Self {
        self.devices = spec.into();
        self
    }

    pub fn with_device_manager(mut self, manager: Arc<DeviceManager>) -> Self {
        self.device_manager = Some(manager);
        self
    }

    pub fn with_lease_interval(mut self, interval: Duration) -> Self {
        self.lease_interval = interval;
        self
    }

    pub fn with_log_port(mut self, port: u16) -> Self {
        self.log_port = port;
        self
    }

    pub fn with_node_ip(mut self, ip: IpAddr) -> Self {
        self.node_ip = Some(ip);
        self
    }

    pub fn with_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff = Backoff { base, max };
        self
    }

    pub fn with_cgroup_root(mut self, root: Option<PathBuf>) -> Self {
        self.cgroup_root = root;
        self
    }
}

/// The address this machine uses to reach the API server (no packet is sent).
pub async fn detect_node_ip(server: &str) -> IpAddr {
    // Of a list of API servers, the first.
    let server = server.split(',').next().unwrap_or(server);
    let hostport = server
        .split("://")
        .nth(1)
        .unwrap_or(server)
        .trim_end_matches('/');
    let hostport = hostport.split('/').next().unwrap_or(hostport);
    let target = match tokio::net::lookup_host(hostport).await {
        Ok(mut addrs) => addrs.next(),
        Err(_) => None,
    };
    let Some(target) = target else {
        return IpAddr::V4(Ipv4Addr::LOCALHOST);
    };
    let local = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let probe = async {
        let sock = tokio::net::UdpSocket::bind(local).await.ok()?;
        sock.connect(target).await.ok()?;
        sock.local_addr().ok().map(|a| a.ip())
    };
    probe.await.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A copy of an informer change, to hand to another task.
pub(crate) fn copy_change(c: &Change<Pod>) -> Change<Pod> {
    match c {
        Change::Applied { old, new } => Change::Applied {
            old: old.clone(),
            new: new.clone(),
        },
        Change::Deleted(o) => Change::Deleted(o.clone()),
        Change::Synced => Change::Synced,
    }
}

/// Runs the agent until `shutdown` resolves.
pub async fn run(
    config: AgentConfig,
    client: Client,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let span = tracing::info_span!("agent", node = %config.node_name);
    run_inner(config, client, shutdown).instrument(span).await
}

async fn run_inner(
    config: AgentConfig,
    client: Client,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let name = config.node_name.clone();
    let devices = match &config.device_manager {
        Some(m) => m.clone(),
        None => Arc::new(DeviceManager::from_spec_for_node(&config.devices, &name)?),
    };
    let health = devices.health_events();
    let discovery = devices.discover()?;
    let (store, users, work_dir) = prepare_pods(&config).await?;
    let runtime: Arc<dyn Runtime> =
        Arc::new(ProcessRuntime::new(cgroups_of(&config), users, work_dir));
    let ip = match config.node_ip {
        Some(ip) => ip,
        None => detect_node_ip(client.server()).await,
    };
    let listener = logserver::bind(SocketAddr::new(
        config.log_address.unwrap_or(ip),
        config.log_port,
    ))
    .await?;
    let log_port = listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or(config.log_port);
    let mut runtimes = vec![PROCESS_RUNTIME.to_string()];
    runtimes.extend(oci_runtimes_on_path());
    let facts = NodeFacts {
        name: name.clone(),
        ip: ip.to_string(),
        hostname: hostname(),
        log_port,
        max_pods: config.max_pods,
        runtimes,
        limits_unavailable: runtime.limits_unavailable(),
        agent_version: format!("drover-agent/{}", env!("CARGO_PKG_VERSION")),
    };
    let ctx = Arc::new(NodeContext::new(
        name.clone(),
        ip.to_string(),
        client.clone(),
        runtime,
        devices.clone(),
        Some(store.clone()),
        config.backoff,
        config.pids_limit,
    ));
    let mut tasks = JoinSet::new();
    let app = logserver::router(
        store.clone(),
        ctx.logs.clone(),
        Arc::new(TokenChecker::new(client.clone(), &name)),
    );
    tasks.spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the log server stopped");
        }
    });
    tracing::info!(ip = %ip, log_port, "node agent starting");

    tokio::pin!(shutdown);
    let registered = tokio::select! {
        _ = &mut shutdown => return Ok(()),
        r = register_until_ok(&client, &facts, &discovery) => r,
    };
    tracing::info!(node = %registered.metadata.name, "node registered");

    run_bound_pods(&mut tasks, &client, ctx.clone(), &store);
    tasks.spawn(
        renew_lease(
            client.clone(),
            name.clone(),
            config.lease_interval,
            config.lease_duration_seconds,
        )
        .in_current_span(),
    );
    tasks.spawn(
        report_status(
            client.clone(),
            facts,
            devices,
            health,
            config.node_status_interval,
        )
        .in_current_span(),
    );
    tasks.spawn(
        crate::recovery::recover_devices(ctx.clone(), ctx.devices.health_events())
            .in_current_span(),
    );
    tasks.spawn(rotate_logs(store, ctx.logs.clone(), config.log_max_bytes));

    shutdown.await;
    tracing::info!("node agent stopping; pods keep running");
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// The cgroup hierarchy pods' limits go in, or why there is none.
fn cgroups_of(config: &AgentConfig) -> Cgroups {
    let cgroups = match &config.cgroup_root {
        Some(root) => Cgroups::detect(root),
        None => Cgroups::Unavailable("disabled in the agent's configuration".into()),
    };
    if let Some(why) = cgroups.unavailable() {
        tracing::warn!(reason = %why, "containers will run without resource limits");
    }
    cgroups
}

/// Adopts the pods a previous run left in the state directory, then watches the pods bound to
/// this node and hands every change to the pod supervisor (two tasks on `tasks`).
fn run_bound_pods(
    tasks: &mut JoinSet<()>,
    client: &Client,
    ctx: Arc<NodeContext>,
    store: &StateStore,
) {
    let recovered = store.load_all();
    if !recovered.is_empty() {
        tracing::info!(
            pods = recovered.len(),
            "found pods of a previous run in the state directory"
        );
    }
    let node = ctx.node_name.clone();
    let mut supervisor = PodSupervisor::new(ctx, recovered);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let informer = Informer::new(
        client.all::<Pod>(),
        ListParams::default().fields(format!("spec.nodeName={node}")),
    )
    .on_change(move |c| {
        let _ = tx.send(copy_change(c));
    });
    tasks.spawn(informer.run(std::future::pending()));
    tasks.spawn(
        async move {
            while let Some(change) = rx.recv().await {
                supervisor.handle(&change);
            }
        }
        .in_current_span(),
    );
}

/// Renews the node's Lease every `interval`, forever.
async fn renew_lease(client: Client, node: String, interval: Duration, duration_seconds: i32) {
    let mut keeper = LeaseKeeper::new(node, duration_seconds);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = keeper.renew(&client).await {
            tracing::warn!(error = %e, "lease renewal failed");
        }
    }
}

/// Writes the Node's status every `interval` and whenever a device's health changes; a write
/// that failed is retried every second until one succeeds.
async fn report_status(
    client: Client,
    facts: NodeFacts,
    devices: Arc<DeviceManager>,
    mut health: HealthEvents,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    let mut dirty = false;
    loop {
        let retry = tokio::time::sleep(Duration::from_secs(1));
        tokio::select! {
            ev = health.recv() => match ev {
                Ok(ev) => {
                    tracing::info!(device = %ev.device_id, health = %ev.health, "device health changed");
                    dirty = true;
                }
                Err(drover_device_plugins::HealthRecvError::Closed) => {
                    health = devices.health_events();
                    tokio::time::sleep(interval).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "missed device health events; rediscovering");
                    dirty = true;
                }
            },
            _ = tick.tick() => dirty = true,
            _ = retry, if dirty => {}
        }
        if dirty {
            dirty = !refresh_status(&client, &facts, &devices).await;
        }
    }
}

/// Rotates the containers' logs past `max_bytes`, every [`LOG_ROTATE_INTERVAL`], off the async
/// threads.
async fn rotate_logs(store: StateStore, logs: Arc<LogIndex>, max_bytes: u64) {
    let mut tick = tokio::time::interval(LOG_ROTATE_INTERVAL);
    loop {
        tick.tick().await;
        let (store, logs) = (store.clone(), logs.clone());
        let _ =
            tokio::task::spawn_blocking(move || logserver::rotate_logs(&store, &logs, max_bytes))
                .await;
    }
}

/// Makes the state directory private, resolves who pods run as (creating the `drover` user
/// when needed) and prepares the node's work root.
async fn prepare_pods(config: &AgentConfig) -> Result<(StateStore, PodUsers, PathBuf), AgentError> {
    let flag = config.pod_user.clone();
    let users = tokio::task::spawn_blocking(move || PodUsers::resolve(flag.as_deref()))
        .await
        .unwrap_or_else(|e| {
            Err(UserError::Create {
                name: crate::runtime::user::DEFAULT_POD_USER.into(),
                detail: e.to_string(),
            })
        })?;
    if users.can_switch {
        tracing::info!(
            uid = users.default.uid,
            gid = users.default.gid,
            "pods run as this user unless their securityContext names another"
        );
    } else {
        tracing::warn!(
            uid = users.default.uid,
            "the agent is not root: pods run as the agent's own user and can read what it can read (run the agent as root to run them as another user)"
        );
    }
    // The state directory is private before anything is written into it.
    let store = StateStore::new(&config.state_dir);
    for dir in [config.state_dir.as_path(), store.pods_dir()] {
        make_private_dir(dir).map_err(|source| AgentError::StateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let work_dir = config.work_dir(&users);
    prepare_work_root(&work_dir, &users)?;
    Ok((store, users, work_dir))
}

/// Rediscovers the devices and rewrites the node's status; whether it worked.
async fn refresh_status(client: &Client, facts: &NodeFacts, devices: &DeviceManager) -> bool {
    let discovery: Discovery = match devices.discover() {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "device discovery failed");
            return false;
        }
    };
    match node::update_status(client, facts, &discovery).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "cannot update the node's status; will retry");
            false
        }
    }
}

async fn register_until_ok(
    client: &Client,
    facts: &NodeFacts,
    discovery: &Discovery,
) -> drover_api::core::Node {
    let mut wait = REGISTER_RETRY.0;
    loop {
        match node::register(client, facts, discovery).await {
            Ok(n) => return n,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?wait, "cannot register the node; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(REGISTER_RETRY.1);
            }
        }
    }
}
