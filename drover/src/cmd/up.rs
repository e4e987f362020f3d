//! `drover up` (a whole control plane on this machine) and `drover apiserver` (the API server
//! alone).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use drover_apiserver::ServerConfig;
use drover_client::config::{default_config_path, drover_home};
use drover_client::{Client, ClientConfig};

use super::GlobalArgs;

/// The demo manifest `drover up --demo` applies.
pub const DEMO_MANIFEST: &str = include_str!("../../../deploy/examples/demo.yaml");

/// Flags of the API server, shared by `up` and `apiserver`.
#[derive(clap::Args, Debug, Clone)]
pub struct ApiserverArgs {
    /// Directory of the embedded store and the token file (default: ~/.drover/data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where the objects are kept: `embedded` (one file under --data-dir), an etcd v3 cluster,
    /// `etcd://HOST:PORT[,HOST:PORT...][/prefix]`, or a TiKV cluster by its PD members,
    /// `tikv://HOST:PORT[,HOST:PORT...][/prefix]`; several API servers on one etcd or TiKV serve
    /// the same state.
    #[arg(long, default_value = "embedded")]
    pub store: drover_apiserver::config::StoreSpec,
    /// Address to serve REST and gRPC on (loopback by default; port 0 picks a free port).
    #[arg(long, default_value = drover_apiserver::config::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = drover_apiserver::config::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// How long a new connection may take to send its first complete request (and an HTTP/1
    /// connection each later request's headers) before the server closes it; a connection in
    /// use (a watch, a log stream) is never cut for being quiet.
    #[arg(long, default_value = "10s", value_parser = idle_timeout)]
    pub idle_connection_timeout: std::time::Duration,
    /// The most connections waiting for their first request at once; a new one past it closes
    /// the oldest waiting one, so idle sockets cannot crowd out real clients.
    #[arg(long, default_value_t = drover_apiserver::config::DEFAULT_MAX_PENDING_CONNECTIONS, value_parser = at_least_one)]
    pub max_pending_connections: usize,
    /// The most open connections in all (kept below the open-file limit, which the server
    /// raises to its hard limit); past it new connections are closed at once.
    #[arg(long, default_value_t = drover_apiserver::config::DEFAULT_MAX_CONNECTIONS, value_parser = at_least_one)]
    pub max_connections: usize,
    /// Write the client config (server address and admin token) here instead of
    /// $DROVER_CONFIG or ~/.drover/config.
    #[arg(long)]
    pub write_config: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub apiserver: ApiserverArgs,
    /// Apply the demo manifest once the control plane is up.
    #[arg(long)]
    pub demo: bool,
    /// Also run N simulated nodes in this process (sim-0, sim-1, ...): full node agents with
    /// the simulated devices of --node-profile that run their pods as real processes on this
    /// machine, each with its own state directory and log server.
    #[arg(long, default_value_t = 0)]
    pub simulate_nodes: usize,
    /// Also run N hollow nodes (hollow-0, ...), for scale: simulated devices and a simulated
    /// runtime (pods start no process; they finish after their `drover.dev/sim-duration`).
    #[arg(long, default_value_t = 0)]
    pub hollow_nodes: usize,
    /// Device profile of the simulated and hollow nodes: h100-8, a100-8, l4-4, cpu, or a
    /// YAML file.
    #[arg(long, default_value = "h100-8")]
    pub node_profile: String,
    #[command(flatten)]
    pub pods: super::agent::PodUserArgs,
}

impl ApiserverArgs {
    fn server_config(&self) -> anyhow::Result<ServerConfig> {
        let data_dir = match &self.data_dir {
            Some(d) => d.clone(),
            None => drover_home()?.join("data"),
        };
        let mut cfg = ServerConfig::new(data_dir).listen(self.listen);
        cfg.store = self.store.clone();
        cfg.max_body_bytes = self.max_body_bytes;
        cfg.idle_connection_timeout = self.idle_connection_timeout;
        cfg.max_pending_connections = self.max_pending_connections;
        cfg.max_connections = self.max_connections;
        Ok(cfg)
    }

    fn config_path(&self, global: &GlobalArgs) -> anyhow::Result<PathBuf> {
        Ok(match (&self.write_config, &global.config) {
            (Some(p), _) | (None, Some(p)) => p.clone(),
            (None, None) => default_config_path()?,
        })
    }
}

/// A duration (see [`super::controllers::parse_duration`]) longer than zero: a zero idle
/// timeout would close every connection before its first request.
fn idle_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d = super::controllers::parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?}: expected a duration longer than zero"));
    }
    Ok(d)
}

/// A count of at least one.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?}: expected a whole number of at least 1")),
    }
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Creates the data directory (the store and the token file) mode 0700, or makes an existing
/// one 0700: nobody but the server's user may look into it, pods included.
fn make_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .with_context(|| {
            format!(
                "cannot create the data directory {} (mode 0700)",
                dir.display()
            )
        })
}

/// Starts the API server and writes the client config; returns the running server.
async fn start_apiserver(
    args: &ApiserverArgs,
    global: &GlobalArgs,
) -> anyhow::Result<(drover_apiserver::RunningServer, ClientConfig)> {
    let cfg = args.server_config()?;
    let data_dir = cfg.data_dir.clone();
    make_private_dir(&data_dir)?;
    let server = drover_apiserver::start(cfg).await.with_context(|| {
        format!(
            "cannot start the API server (data in {})",
            data_dir.display()
        )
    })?;
    let mut addr = server.addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let client_cfg = ClientConfig {
        server: format!("http://{addr}"),
        token: server.admin_token.clone(),
    };
    let path = args.config_path(global)?;
    client_cfg.save(&path)?;
    println!("API server listening on {} (REST and gRPC)", server.url());
    println!("data directory: {}", data_dir.display());
    println!("client config written to {}", path.display());
    Ok((server, client_cfg))
}

pub async fn run_apiserver(args: ApiserverArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let (mut server, _) = start_apiserver(&args, global).await?;
    tokio::select! {
        _ = stop_signal() => {
            println!("stopping");
            server.shutdown().await?;
        }
        r = server.wait() => r?,
    }
    Ok(())
}

pub async fn run_up(args: Args, global: &GlobalArgs) -> anyhow::Result<()> {
    let (mut server, client_cfg) = start_apiserver(&args.apiserver, global).await?;
    let client = Client::new(&client_cfg)?;

    // The other components of the control plane start here, each as a task on this runtime,
    // against the API server above (scheduler, controllers, the node agents). The scheduler and
    // the controllers each get their own connection, as in their own processes: one HTTP/2
    // connection is served by one task, so sharing it would serialise their requests.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut components: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    components.push(tokio::spawn(super::controllers::run_in_process(
        client.new_connection()?,
    )));
    let state_root = match &args.apiserver.data_dir {
        // Next to the data directory, so that two `drover up`s with their own data directories
        // never share an agent's state.
        Some(d) => d.clone(),
        None => drover_home()?,
    };
    let agents = super::agent::spawn_for_up(
        &client,
        state_root,
        args.simulate_nodes,
        args.hollow_nodes,
        &args.node_profile,
        &args.pods,
        stop_rx,
    )
    .await?;
    components.push(tokio::spawn(super::scheduler::run_in_process(
        client.new_connection()?,
    )));

    if args.demo {
        let lines = super::apply::apply_text(&client, DEMO_MANIFEST, "demo.yaml").await?;
        for l in lines {
            println!("{l}");
        }
    }
    println!("Drover is up. Try: drover get pods -A    (Ctrl-C stops it)");
    tokio::select! {
        _ = stop_signal() => {
            println!("stopping");
            // The agents stop first (they leave their pods' processes running for the next
            // `drover up` to adopt), then the scheduler and controllers, then the API server.
            let _ = stop_tx.send(true);
            let agents_stopped = futures::future::join_all(agents);
            if tokio::time::timeout(std::time::Duration::from_secs(10), agents_stopped)
                .await
                .is_err()
            {
                tracing::warn!("node agents did not stop within 10s");
            }
            for c in &components {
                c.abort();
            }
            server.shutdown().await?;
        }
        r = server.wait() => r?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        apiserver: ApiserverArgs,
    }

    #[test]
    fn connection_flags_default_to_the_servers_defaults_and_refuse_zero() {
        let cli = Cli::try_parse_from(["drover"]).expect("defaults parse");
        let cfg = cli.apiserver.server_config().expect("config");
        let defaults = ServerConfig::new("unused");
        assert_eq!(
            cfg.idle_connection_timeout,
            defaults.idle_connection_timeout
        );
        assert_eq!(
            cfg.max_pending_connections,
            defaults.max_pending_connections
        );
        assert_eq!(cfg.max_connections, defaults.max_connections);

        for (args, field) in [
            (
                ["--idle-connection-timeout", "0s"],
                "--idle-connection-timeout",
            ),
            (
                ["--idle-connection-timeout", "soon"],
                "--idle-connection-timeout",
            ),
            (
                ["--max-pending-connections", "0"],
                "--max-pending-connections",
            ),
            (["--max-connections", "lots"], "--max-connections"),
        ] {
            let err = match Cli::try_parse_from(["drover"].into_iter().chain(args)) {
                Ok(_) => panic!("{args:?} accepted"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(field), "{args:?}: {err}");
        }
        let cli = Cli::try_parse_from([
            "drover",
            "--idle-connection-timeout",
            "500ms",
            "--max-pending-connections",
            "4",
            "--max-connections",
            "100",
        ])
        .expect("parses");
        let cfg = cli.apiserver.server_config().expect("config");
        assert_eq!(
            cfg.idle_connection_timeout,
            std::time::Duration::from_millis(500)
        );
        assert_eq!(cfg.max_pending_connections, 4);
        assert_eq!(cfg.max_connections, 100);
    }
}
