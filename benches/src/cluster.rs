//! The cluster a scenario runs against: the real control plane started in this process (API
//! server on the embedded store in a temporary directory, scheduler, controllers where asked),
//! or an existing server (`--server`), whose own scheduler then does the work.

use drover_api::core::Namespace;
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
    server: Option<RunningServer>,
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
            return Ok(Cluster {
                client: Client::new(cfg)?,
                config: cfg.clone(),
                in_process: false,
                hollow: None,
                server: None,
                tasks: vec![],
                stop,
                _dir: None,
            });
        }
        let dir = tempfile::tempdir()?;
        let server = drover_apiserver::start(
            ServerConfig::new(dir.path()).listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        )
        .await
        .map_err(|e| BenchError::Start(e.to_string()))?;
        let config = ClientConfig {
            server: server.url(),
            token: server.admin_token.clone(),
        };
        let client = Client::new(&config)?;
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
            server: Some(server),
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
        if let Some(s) = self.server.take() {
            let _ = s.shutdown().await;
        }
    }
}

/// A name unique to this run, so runs against one server do not collide.
pub fn run_id() -> String {
    format!("{:x}", chrono::Utc::now().timestamp_millis() & 0xff_ffff)
}
