//! Starting and stopping an API server: open the store, load the watch cache, follow the change
//! feed, compact history, and serve REST and gRPC on one port (one router, [`crate::routes`];
//! the accept loop and its limits on idle connections are in [`crate::connections`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::agent_credential::AgentCredentials;
use crate::auth::Authenticator;
use crate::cache::WatchCache;
use crate::config::{ServerConfig, StoreSpec};
use crate::kinds::Kinds;
use crate::service::ApiService;
use crate::storage::embedded::EmbeddedStore;
use crate::storage::etcd::EtcdStore;
use crate::storage::tikv::TikvStore;
use crate::storage::{Store, StoreError, prefix_end};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bootstrap failed: {0}")]
    Bootstrap(drover_api::Status),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// How long shutdown waits for open requests before closing their connections.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// A running API server.
pub struct RunningServer {
    /// Where it listens (the real port when asked for port 0).
    pub addr: SocketAddr,
    /// The admin token.
    pub admin_token: String,
    pub service: ApiService,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
    /// Background tasks (cache feed, compaction), stopped at shutdown.
    background: Vec<tokio::task::JoinHandle<()>>,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RunningServer {
    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and waits for the server to finish.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        // Watches never end by themselves: end them, so graceful shutdown can finish.
        self.service.cache().close_watchers();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let served = match tokio::time::timeout(SHUTDOWN_GRACE, &mut self.task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(ServerError::Serve(std::io::Error::other(e))),
            Err(_) => {
                tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
                self.task.abort();
                Ok(())
            }
        };
        for t in self.background.drain(..) {
            t.abort();
            let _ = t.await;
        }
        self.store.close().await;
        served
    }

    /// Waits until the server stops by itself (it only does on error).
    pub async fn wait(&mut self) -> Result<(), ServerError> {
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(ServerError::Serve(std::io::Error::other(e))),
        }
    }
}

/// Creates the data directory (and any missing parents) 0700: it holds the tokens, the agent
/// credential's key and the store. An existing directory keeps its mode.
fn make_data_dir(config: &ServerConfig) -> Result<(), ServerError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.data_dir)
        .map_err(|source| ServerError::DataDir {
            path: config.data_dir.clone(),
            source,
        })
}

/// Opens the store `config.store` names (by default the embedded one under `config.data_dir`)
/// and starts serving.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    make_data_dir(&config)?;
    let store: Arc<dyn Store> = match &config.store {
        StoreSpec::Embedded => Arc::new(EmbeddedStore::open_with_retention(
            config.store_path(),
            config.compaction_retain_bytes,
        )?),
        StoreSpec::Etcd(etcd) => Arc::new(EtcdStore::connect(etcd.clone()).await?),
        StoreSpec::Tikv(tikv) => Arc::new(TikvStore::connect(tikv.clone()).await?),
    };
    start_with_store(config, store).await
}

/// Starts serving over any [`Store`].
pub async fn start_with_store(
    config: ServerConfig,
    store: Arc<dyn Store>,
) -> Result<RunningServer, ServerError> {
    make_data_dir(&config)?;
    let auth = Authenticator::load_or_init(&config.tokens_path())?;
    let agents = AgentCredentials::load_or_init(&config.agent_key_path())?;
    let kinds = Kinds::new();
    let cache = WatchCache::new(kinds.clone(), config.watch_history, config.watch_queue)
        .with_history_bytes(config.watch_history_bytes);

    // Load everything, then follow the change feed from the revision of that read.
    let root = crate::keys::root().as_bytes().to_vec();
    let all = store.range(&root, &prefix_end(&root), 0).await?;
    cache.load(&all.kvs, all.revision);
    let feed = store.watch(all.revision).await?;
    let background = vec![
        tokio::spawn(follow(store.clone(), cache.clone(), feed)),
        tokio::spawn(compact_periodically(store.clone(), config.clone())),
    ];

    let service = ApiService::new(
        store.clone(),
        cache,
        kinds,
        auth.clone(),
        agents,
        config.clone(),
    );
    service.bootstrap().await.map_err(ServerError::Bootstrap)?;

    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Listen {
                addr: config.listen,
                source,
            })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            addr: config.listen,
            source,
        })?;
    let app = crate::routes::app(service.clone());
    let limits = crate::connections::Limits::new(&config);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        crate::connections::serve(listener, app, limits, stop_rx).await;
        Ok(())
    });
    tracing::info!(%addr, "API server listening");
    Ok(RunningServer {
        addr,
        admin_token: auth.admin_token().to_string(),
        service,
        stop: Some(stop_tx),
        task,
        background,
        store,
    })
}

/// Runs an API server until `shutdown` completes.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let mut server = start(config).await?;
    tokio::select! {
        _ = shutdown => server.shutdown().await,
        r = server.wait() => r,
    }
}

/// The most change batches the watch cache applies at once.
const FOLLOW_CHUNK: usize = 1024;

/// Feeds the watch cache from the store's change feed; reloads if the feed breaks.
async fn follow(store: Arc<dyn Store>, cache: WatchCache, mut feed: crate::storage::ChangeStream) {
    loop {
        // Every batch already waiting is applied at once: one lock and one wake-up of the
        // waiting writers per group commit rather than per revision.
        let mut chunks = feed.ready_chunks(FOLLOW_CHUNK);
        'follow: while let Some(items) = chunks.next().await {
            let mut batches = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Ok(batch) => batches.push(batch),
                    Err(e) => {
                        cache.apply(&batches);
                        tracing::warn!(error = %e, "change feed failed; reloading the cache");
                        break 'follow;
                    }
                }
            }
            cache.apply(&batches);
        }
        // The feed ended or failed: reload and follow again.
        loop {
            let root = crate::keys::root().as_bytes().to_vec();
            match store.range(&root, &prefix_end(&root), 0).await {
                Ok(all) => match store.watch(all.revision).await {
                    Ok(f) => {
                        cache.load(&all.kvs, all.revision);
                        feed = f;
                        break;
                    }
                    Err(StoreError::Closed) => return,
                    Err(e) => tracing::warn!(error = %e, "cannot follow the store"),
                },
                Err(StoreError::Closed) => return,
                Err(e) => tracing::warn!(error = %e, "cannot read the store"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
}

async fn compact_periodically(store: Arc<dyn Store>, config: ServerConfig) {
    let mut tick = tokio::time::interval(config.compaction_interval);
    tick.tick().await;
    loop {
        tick.tick().await;
        match store.current_revision().await {
            Ok(rev) if rev > config.compaction_retain => {
                if let Err(e) = store.compact(rev - config.compaction_retain).await {
                    tracing::warn!(error = %e, "compaction failed");
                }
            }
            Ok(_) => {}
            Err(StoreError::Closed) => return,
            Err(e) => tracing::warn!(error = %e, "cannot read the store revision"),
        }
    }
}
