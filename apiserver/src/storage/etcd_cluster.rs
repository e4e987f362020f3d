//! A real etcd cluster on loopback for tests: N `etcd` processes (Debian's `etcd-server`), each
//! with its own data directory and ports, that a test can kill and restart one by one.
//!
//! Tests that need it call [`EtcdCluster::binary`] first and skip, saying so, when etcd is not
//! installed (`apt-get install etcd-server`; `.ci/run` installs it).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Store;
use super::etcd::{EtcdConfig, EtcdStore};

/// How long a member may take to join and elect a leader before the cluster is called broken.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One member's process and where it listens.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    child: Option<Child>,
}

/// An etcd cluster of real processes; every member is killed when it is dropped.
pub struct EtcdCluster {
    binary: PathBuf,
    dir: PathBuf,
    token: String,
    members: Vec<Member>,
}

impl std::fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCluster")
            .field("dir", &self.dir)
            .field("endpoints", &self.endpoints())
            .finish()
    }
}

/// A free loopback port (free when asked; etcd binds it a moment later).
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EtcdCluster {
    /// The `etcd` binary, if one is installed (`$DROVER_ETCD`, then `PATH`, then `/usr/bin`).
    pub fn binary() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("DROVER_ETCD") {
            return Some(PathBuf::from(path));
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
            .map(|dir| dir.join("etcd"))
            .find(|candidate| candidate.is_file())
    }

    /// Starts a fresh cluster of `size` members and waits until it answers reads and writes.
    pub async fn start(size: usize) -> Result<EtcdCluster, String> {
        let binary = Self::binary().ok_or("etcd is not installed")?;
        let token = format!("drover-test-{}", uuid::Uuid::new_v4().simple());
        let dir = std::env::temp_dir().join(&token);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut members = Vec::with_capacity(size);
        for i in 0..size {
            let free = |what: &str| free_port().map_err(|e| format!("no free {what} port: {e}"));
            members.push(Member {
                name: format!("m{i}"),
                client_port: free("client")?,
                peer_port: free("peer")?,
                data_dir: dir.join(format!("m{i}")),
                child: None,
            });
        }
        let mut cluster = EtcdCluster {
            binary,
            dir,
            token,
            members,
        };
        for i in 0..size {
            cluster.spawn(i, "new")?;
        }
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize, state: &str) -> Result<(), String> {
        let initial_cluster = self.initial_cluster();
        let member = &self.members[i];
        let log_path = self.dir.join(format!("{}.log", member.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let client = format!("http://127.0.0.1:{}", member.client_port);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let child = Command::new(&self.binary)
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&member.data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            // Quick elections on loopback, with room for a loaded 2-core machine.
            .args(["--heartbeat-interval", "25", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        self.members[i].child = Some(child);
        Ok(())
    }

    async fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let attempt = async {
                let store = EtcdStore::connect(self.config("")).await?;
                store.current_revision().await
            };
            match tokio::time::timeout(Duration::from_secs(15), attempt).await {
                Ok(Ok(_)) => return Ok(()),
                _ if Instant::now() > deadline => {
                    return Err(format!(
                        "the etcd cluster in {} did not become ready within {START_TIMEOUT:?}",
                        self.dir.display()
                    ));
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// `host:port` of every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// The store configuration for this cluster, with keys under `prefix`.
    pub fn config(&self, prefix: &str) -> EtcdConfig {
        EtcdConfig {
            endpoints: self.endpoints(),
            prefix: prefix.to_string(),
        }
    }

    /// The `--store` URL of this cluster.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }

    /// Where the members keep their data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills member `i` with SIGKILL and waits for it to exit.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data directory, as a restarted machine would.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        self.kill(i);
        self.spawn(i, "existing")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
