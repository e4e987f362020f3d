//! `drover up` (a whole control plane on this machine) and `drover apiserver` (the API server
//! alone).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use drover_api::client::config::{default_config_path, drover_home};
use drover_api::client::{Client, ClientConfig};
use drover_apiserver::ServerConfig;

use super::GlobalArgs;

/// The demo manifest `drover up --demo` applies.
pub const DEMO_MANIFEST: &str = include_str!("../../../deploy/examples/demo.yaml");

/// Flags of the API server, shared by `up` and `apiserver`.
#[derive(clap::Args, Debug, Clone)]
pub struct ApiserverArgs {
    /// Directory of the embedded store and the token file (default: ~/.drover/data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address to serve REST and gRPC on (loopback by default; port 0 picks a free port).
    #[arg(long, default_value = drover_apiserver::config::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = drover_apiserver::config::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
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
        cfg.max_body_bytes = self.max_body_bytes;
        Ok(cfg)
    }

    fn config_path(&self, global: &GlobalArgs) -> anyhow::Result<PathBuf> {
        Ok(match (&self.write_config, &global.config) {
            (Some(p), _) | (None, Some(p)) => p.clone(),
            (None, None) => default_config_path()?,
        })
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
