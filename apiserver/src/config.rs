//! The API server's configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where the API server listens unless told otherwise (loopback only).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:6443";
/// Largest request body accepted (Kubernetes' limit is 3 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// How many recent changes the watch cache keeps for watches that resume from a version.
pub const DEFAULT_WATCH_HISTORY: usize = 100_000;
/// How often the store's change history is compacted.
pub const DEFAULT_COMPACTION_INTERVAL: Duration = Duration::from_secs(60);
/// How many revisions of history the store keeps at each compaction.
pub const DEFAULT_COMPACTION_RETAIN: u64 = 100_000;
/// How often an idle watch gets a bookmark with the current version.
pub const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);
/// Events a watcher may have queued before it is dropped as too slow (it then resumes).
pub const DEFAULT_WATCH_QUEUE: usize = 10_000;

/// Configuration of one API server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Directory of the embedded store and the token file.
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub watch_history: usize,
    pub compaction_interval: Duration,
    pub compaction_retain: u64,
    pub bookmark_interval: Duration,
    pub watch_queue: usize,
}

impl ServerConfig {
    /// A configuration with every default, storing its state under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            data_dir: data_dir.into(),
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 6443))),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            watch_history: DEFAULT_WATCH_HISTORY,
            compaction_interval: DEFAULT_COMPACTION_INTERVAL,
            compaction_retain: DEFAULT_COMPACTION_RETAIN,
            bookmark_interval: DEFAULT_BOOKMARK_INTERVAL,
            watch_queue: DEFAULT_WATCH_QUEUE,
        }
    }

    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// The embedded store's file.
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("store.redb")
    }

    /// The static token file.
    pub fn tokens_path(&self) -> PathBuf {
        self.data_dir.join("tokens")
    }
}
