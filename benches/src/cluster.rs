//! The cluster a scenario runs against: the real control plane started in this process (API
//! servers on the embedded store in a temporary directory or on an etcd cluster, scheduler,
//! controllers where asked), or an existing server (`--server`), whose own scheduler then does
//! the work.

use drover_api::core::Namespace;
use drover_apiserver::config::StoreSpec;
use drover_apiserver::{RunningServer, ServerConfig};
use drover_client::{Api, Client, ClientConfig};
use drover_nodeagent::HollowCluster;
use drover_scheduler::SchedulerConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::BenchError;

/// What to start.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// Run against this server instead of starting one.
    pub server: Option<ClientConfig>,
    /// Start the scheduler (in process only).
    pub scheduler: Option<SchedulerConfig>,
    /// Start the controller manager (in process only).
    pub controllers: bool,
    /// The store of the in-process API servers.
    pub store: StoreSpec,
    /// In-process API servers on that store (0 counts as 1; more than one needs a shared store).
    pub apiservers: usize,
}

impl ClusterOptions {
    pub fn with_scheduler(mut self) -> Self {
        self.scheduler = Some(SchedulerConfig::default());
        self
    }
}

/// A running cluster and a client for it. [`Cluster::shutdown`] stops what it started.
pub struct Cluster {
    pub client: Client,
    /// Where the client connects, and its token (the REST transport uses them).
    pub config: ClientConfig,
    pub in_process: bool,
    /// Hollow node agents serving the nodes (`--hollow`); stopped first by [`Cluster::shutdown`].
    pub hollow: Option<HollowCluster>,
    /// A client of each in-process API server (the first is `client`'s server).
    pub clients: Vec<Client>,
    servers: Vec<RunningServer>,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    _dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("server", &self.client.server())
            .field("hollow", &self.hollow)
            .finish()
    }
}

impl Cluster {
    pub async fn start(options: &ClusterOptions) -> Result<Cluster, BenchError> {
        let (stop, _) = watch::channel(false);
        if let Some(cfg) = &options.server {
            if options.store != StoreSpec::Embedded || options.apiservers > 1 {
                return Err(BenchError::Invalid(
                    "--store and --apiservers shape the in-process servers: not with --server \
                     (that server has its own store)"
                        .into(),
                ));
            }
            let client = Client::new(cfg)?;
            return Ok(Cluster {
                clients: vec![client.clone()],
                client,
                config: cfg.clone(),
                in_process: false,
                hollow: None,
                servers: Vec::new(),
                tasks: vec![],
                stop,
                _dir: None,
            });
        }
        let dir = tempfile::tempdir()?;
        let count = options.apiservers.max(1);
        if count > 1 && options.store == StoreSpec::Embedded {
            return Err(BenchError::Invalid(format!(
                "--apiservers {count}: several API servers need a shared store (--store etcd://... or tikv://...)"
            )));
        }
        let mut servers = Vec::with_capacity(count);
        let mut clients = Vec::with_capacity(count);
        for _ in 0..count {
            // One data directory: the servers of one cluster share its tokens.
            let mut server_config = ServerConfig::new(dir.path())
                .listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
            server_config.store = options.store.clone();
            let server = drover_apiserver::start(server_config)
                .await
                .map_err(|e| BenchError::Start(e.to_string()))?;
            clients.push(Client::new(&ClientConfig {
                server: server.url(),
                token: server.admin_token.clone(),
            })?);
            servers.push(server);
        }
        let config = ClientConfig {
            server: servers[0].url(),
            token: servers[0].admin_token.clone(),
        };
        let client = clients[0].clone();
        let mut tasks = Vec::new();
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        // Each component gets its own connection, as it would in its own process: one HTTP/2
        // connection is served by one task, so sharing it would serialise their frames.
        if let Some(cfg) = options.scheduler.clone() {
            let (c, rx) = (client.new_connection()?, stop.subscribe());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = drover_scheduler::run(cfg, c, stopped(rx)).await {
                    tracing::error!(error = %e, "scheduler stopped");
                }
            }));
        }
        if options.controllers {
            let (c, rx) = (client.new_connection()?, stop.subscribe());
            tasks.push(tokio::spawn(async move {
                let cfg = drover_controllers::ControllersConfig::default();
                if let Err(e) = drover_controllers::run(cfg, c, stopped(rx)).await {
                    tracing::error!(error = %e, "controllers stopped");
                }
            }));
        }
        Ok(Cluster {
            client,
            config,
            in_process: true,
            hollow: None,
            clients,
            servers,
            tasks,
            stop,
            _dir: Some(dir),
        })
    }

    /// Creates namespace `name` if it does not exist.
    pub async fn ensure_namespace(&self, name: &str) -> Result<(), BenchError> {
        let api: Api<Namespace> = self.client.all();
        match api.create(&Namespace::new(name)).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_already_exists() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn shutdown(mut self) {
        if let Some(h) = self.hollow.take() {
            h.shutdown().await;
        }
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
        }
        for s in self.servers.drain(..) {
            let _ = s.shutdown().await;
        }
    }
}

/// A name unique to this run, so runs against one server do not collide.
pub fn run_id() -> String {
    format!("{:x}", chrono::Utc::now().timestamp_millis() & 0xff_ffff)
}
