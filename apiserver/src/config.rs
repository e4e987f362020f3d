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
/// The most bytes (of the objects' JSON) those recent changes may hold: a window bounded by count
/// alone holds 100,000 copies of whatever was written, gigabytes for large objects. A watch
/// resuming from before the window is told "expired, relist".
pub const DEFAULT_WATCH_HISTORY_BYTES: usize = 256 << 20;
/// How often the store's change history is compacted.
pub const DEFAULT_COMPACTION_INTERVAL: Duration = Duration::from_secs(60);
/// How many revisions of history the store keeps at each compaction.
pub const DEFAULT_COMPACTION_RETAIN: u64 = 100_000;
/// The most bytes of old values the store keeps in its history, enforced after every write (the
/// embedded store's bound; see `storage/embedded.rs`).
pub const DEFAULT_COMPACTION_RETAIN_BYTES: u64 = crate::storage::embedded::DEFAULT_RETAIN_BYTES;
/// How often an idle watch gets a bookmark with the current version.
pub const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);
/// Events a watcher may have queued before it is dropped as too slow (it then resumes).
pub const DEFAULT_WATCH_QUEUE: usize = 10_000;
/// How long a new connection may take to send its first complete request (and an HTTP/1
/// connection each later request's headers) before the server closes it. A connection past its
/// first request is never cut for being quiet (a watch, a log stream): HTTP/2 keep-alive pings
/// find the peers that are gone.
pub const DEFAULT_IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// The most connections that may be waiting for their first request at once; a new connection
/// past it closes the oldest waiting one, so a flood of idle sockets cycles through a bounded set
/// of file descriptors while a client that sends its request at once is served. Never more than
/// half of the connections in all, so the waiting ones leave room for connections in use.
pub const DEFAULT_MAX_PENDING_CONNECTIONS: usize = 256;
/// The most open connections in all; past it (or past the open-file limit less
/// [`RESERVED_FILE_DESCRIPTORS`]), a new connection is closed at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// File descriptors kept out of the connection budget for the store, log files, the process's
/// own clients (`drover up` runs its components in process) and child processes.
pub const RESERVED_FILE_DESCRIPTORS: u64 = 256;
/// HTTP/2 keep-alive: a ping after this long without a frame; a peer that does not answer it
/// within the same time is gone and its connection closed.
pub const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(20);
/// Streams one HTTP/2 connection may have open at once (hyper's default is 200). Every watch holds
/// one for as long as it runs; the client opens another connection when a connection is full.
pub const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 1000;

/// Which store the API server keeps its state in, as `--store` names it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StoreSpec {
    /// The embedded store: one file under the data directory (`embedded`, the default).
    #[default]
    Embedded,
    /// An etcd v3 cluster: `etcd://HOST:PORT[,HOST:PORT...][/prefix]`.
    Etcd(crate::storage::etcd::EtcdConfig),
    /// A TiKV cluster, by its PD members: `tikv://HOST:PORT[,HOST:PORT...][/prefix]`.
    Tikv(crate::storage::tikv::TikvConfig),
}

/// What `--store` accepts, for error messages.
const STORE_FORMS: &str =
    "embedded, etcd://HOST:PORT[,HOST:PORT...][/prefix] or tikv://PD_HOST:PORT[,...][/prefix]";

impl std::str::FromStr for StoreSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<StoreSpec, String> {
        let s = s.trim();
        if s == "embedded" {
            return Ok(StoreSpec::Embedded);
        }
        if let Some(rest) = s.strip_prefix("etcd://") {
            let (endpoints, prefix) = parse_cluster(s, "etcd", rest, 2379)?;
            return Ok(StoreSpec::Etcd(crate::storage::etcd::EtcdConfig {
                endpoints,
                prefix,
            }));
        }
        if let Some(rest) = s.strip_prefix("tikv://") {
            let (endpoints, prefix) = parse_cluster(s, "tikv", rest, 2379)?;
            return Ok(StoreSpec::Tikv(crate::storage::tikv::TikvConfig::new(
                endpoints, prefix,
            )));
        }
        match s.split_once("://") {
            Some((scheme, _)) => Err(format!(
                "scheme {scheme:?} in {s:?}: expected {STORE_FORMS}"
            )),
            None => Err(format!("{s:?}: expected {STORE_FORMS}")),
        }
    }
}

/// The `HOST:PORT,...[/prefix]` after `SCHEME://` in `url`.
fn parse_cluster(
    url: &str,
    scheme: &str,
    rest: &str,
    example_port: u16,
) -> Result<(Vec<String>, String), String> {
    let (hosts, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if hosts.is_empty() {
        return Err(format!(
            "{url:?}: expected at least one HOST:PORT after {scheme}:// (e.g. \
             {scheme}://127.0.0.1:{example_port})"
        ));
    }
    let endpoints = hosts
        .split(',')
        .map(parse_endpoint)
        .collect::<Result<Vec<_>, _>>()?;
    if prefix.len() > 1 && prefix.ends_with('/') {
        return Err(format!(
            "prefix {prefix:?}: expected no trailing '/' (keys are PREFIX/drover/...)"
        ));
    }
    let prefix = if prefix == "/" { "" } else { prefix };
    Ok((endpoints, prefix.to_string()))
}

/// One `HOST:PORT` of an etcd or PD URL.
fn parse_endpoint(endpoint: &str) -> Result<String, String> {
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        return Err(format!(
            "endpoint {endpoint:?}: expected HOST:PORT (e.g. 127.0.0.1:2379)"
        ));
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']' | ':'));
    if !host_ok {
        return Err(format!(
            "host {host:?} in endpoint {endpoint:?}: expected a host name or IP address"
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(endpoint.to_string()),
        _ => Err(format!(
            "port {port:?} in endpoint {endpoint:?}: expected a number from 1 to 65535"
        )),
    }
}

impl std::fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSpec::Embedded => f.write_str("embedded"),
            StoreSpec::Etcd(c) => write!(f, "etcd://{}{}", c.endpoints.join(","), c.prefix),
            StoreSpec::Tikv(c) => write!(f, "tikv://{}{}", c.pd_endpoints.join(","), c.prefix),
        }
    }
}

/// Configuration of one API server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Directory of the embedded store and the token file.
    pub data_dir: PathBuf,
    /// Where the objects are kept.
    pub store: StoreSpec,
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub watch_history: usize,
    pub watch_history_bytes: usize,
    pub compaction_interval: Duration,
    pub compaction_retain: u64,
    pub compaction_retain_bytes: u64,
    pub bookmark_interval: Duration,
    pub watch_queue: usize,
    /// See [`DEFAULT_IDLE_CONNECTION_TIMEOUT`].
    pub idle_connection_timeout: Duration,
    /// See [`DEFAULT_MAX_PENDING_CONNECTIONS`].
    pub max_pending_connections: usize,
    /// See [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
}

impl ServerConfig {
    /// A configuration with every default, storing its state under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            data_dir: data_dir.into(),
            store: StoreSpec::Embedded,
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 6443))),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            watch_history: DEFAULT_WATCH_HISTORY,
            watch_history_bytes: DEFAULT_WATCH_HISTORY_BYTES,
            compaction_interval: DEFAULT_COMPACTION_INTERVAL,
            compaction_retain: DEFAULT_COMPACTION_RETAIN,
            compaction_retain_bytes: DEFAULT_COMPACTION_RETAIN_BYTES,
            bookmark_interval: DEFAULT_BOOKMARK_INTERVAL,
            watch_queue: DEFAULT_WATCH_QUEUE,
            idle_connection_timeout: DEFAULT_IDLE_CONNECTION_TIMEOUT,
            max_pending_connections: DEFAULT_MAX_PENDING_CONNECTIONS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
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

    /// The key of the tokens the API server presents to node agents.
    pub fn agent_key_path(&self) -> PathBuf {
        self.data_dir.join("agent-credential.key")
    }
}

#[cfg(test)]
mod store_spec_tests {
    use super::StoreSpec;
    use crate::storage::etcd::EtcdConfig;

    #[test]
    fn accepted_forms() {
        assert_eq!("embedded".parse::<StoreSpec>(), Ok(StoreSpec::Embedded));
        let etcd = |endpoints: &[&str], prefix: &str| {
            Ok(StoreSpec::Etcd(EtcdConfig {
                endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
                prefix: prefix.to_string(),
            }))
        };
        assert_eq!(
            "etcd://127.0.0.1:2379".parse::<StoreSpec>(),
            etcd(&["127.0.0.1:2379"], "")
        );
        assert_eq!(
            "etcd://127.0.0.1:2379,127.0.0.1:2479,etcd-2.local:2579/prod".parse::<StoreSpec>(),
            etcd(
                &["127.0.0.1:2379", "127.0.0.1:2479", "etcd-2.local:2579"],
                "/prod"
            )
        );
        assert_eq!(
            "etcd://h:1/".parse::<StoreSpec>(),
            etcd(&["h:1"], ""),
            "a lone / is no prefix"
        );
        let spec: StoreSpec = "etcd://a:1,b:2/x".parse().expect("valid");
        assert_eq!(spec.to_string(), "etcd://a:1,b:2/x", "Display round-trips");
        let spec: StoreSpec = "tikv://pd1:2379,pd2:2379/x".parse().expect("valid");
        match &spec {
            StoreSpec::Tikv(c) => {
                assert_eq!(c.pd_endpoints, ["pd1:2379", "pd2:2379"]);
                assert_eq!(c.prefix, "/x");
            }
            other => panic!("tikv:// parsed as {other:?}"),
        }
        assert_eq!(spec.to_string(), "tikv://pd1:2379,pd2:2379/x");
    }

    /// Each malformed URL is refused naming the part that is wrong.
    #[test]
    fn malformed_urls_name_the_wrong_part() {
        for (url, names) in [
            ("", "expected embedded, etcd://"),
            ("etcd", "expected embedded, etcd://"),
            ("redis://h:1", "scheme \"redis\""),
            ("etcd://", "at least one HOST:PORT"),
            ("etcd:///prefix", "at least one HOST:PORT"),
            (
                "etcd://127.0.0.1",
                "endpoint \"127.0.0.1\": expected HOST:PORT",
            ),
            ("etcd://h:1,", "endpoint \"\""),
            ("etcd://h:0", "port \"0\""),
            ("etcd://h:99999", "port \"99999\""),
            ("etcd://h:x1", "port \"x1\""),
            ("etcd://:2379", "host \"\""),
            ("etcd://h st:2379", "host \"h st\""),
            ("etcd://h:1/p/", "prefix \"/p/\""),
            ("tikv://", "at least one HOST:PORT after tikv://"),
            ("tikv://pd", "endpoint \"pd\": expected HOST:PORT"),
            ("tikv://pd:2379/p/", "prefix \"/p/\""),
        ] {
            let err = url
                .parse::<StoreSpec>()
                .expect_err(&format!("{url:?} must be refused"));
            assert!(
                err.contains(names),
                "{url:?}: {err:?} should name {names:?}"
            );
        }
    }
}
