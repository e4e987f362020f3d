//! The subcommands, and what they share: global flags, client setup, error rendering.

pub mod agent;
pub mod apply;
pub mod bench;
pub mod controllers;
pub mod delete;
pub mod describe;
pub mod get;
pub mod logs;
pub mod manifest;
pub mod printers;
pub mod scheduler;
pub mod text;
pub mod up;

use std::path::PathBuf;

use drover_client::{Client, ClientConfig, ClientError};

/// Flags every command takes.
#[derive(clap::Args, Debug, Clone)]
pub struct GlobalArgs {
    /// API server address, or several of one cluster separated by commas (calls fail over to
    /// the next when one cannot be reached); default: from the config file, else
    /// http://127.0.0.1:6443.
    #[arg(long, global = true, env = "DROVER_SERVER")]
    pub server: Option<String>,
    /// Bearer token (default: from the config file).
    #[arg(long, global = true, env = "DROVER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Client config file (default: $DROVER_CONFIG, else ~/.drover/config).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Log filter for the components (e.g. `info`, `drover_apiserver=debug`); also RUST_LOG.
    #[arg(long, global = true, default_value = "info")]
    pub log: String,
}

impl GlobalArgs {
    /// A client for the configured server.
    pub fn client(&self) -> anyhow::Result<Client> {
        let cfg = ClientConfig::resolve(
            self.server.as_deref(),
            self.token.as_deref(),
            self.config.as_deref(),
        )?;
        Ok(Client::new(&cfg)?)
    }
}

pub fn init_tracing(g: &GlobalArgs) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&g.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// One clear line for an error.
pub fn render_error(e: &anyhow::Error) -> String {
    if let Some(ClientError::Api(s)) = e.downcast_ref::<ClientError>() {
        let mut line = format!("{} ({}): {}", s.reason, s.code, s.message);
        let fields = s.fields();
        if !fields.is_empty() && !s.message.contains(fields[0]) {
            line.push_str(&format!(" [fields: {}]", fields.join(", ")));
        }
        return line;
    }
    format!("{e:#}")
}

/// Exit codes: 1 for errors the server reported, 2 for usage and input errors, 3 when the server
/// cannot be reached.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Unreachable { .. }) => 3,
        Some(ClientError::Api(_)) => 1,
        Some(_) => 2,
        None => 1,
    }
}

/// Resolves a kind as a user typed it (`po`, `pods`, `jobs.batch`, `pg`), or says which exist.
pub fn kind_arg(name: &str) -> anyhow::Result<drover_api::resource::KindInfo> {
    drover_api::resource::find_kind(name).ok_or_else(|| {
        let known: Vec<&str> = drover_api::resource::all_kinds()
            .iter()
            .map(|k| k.plural)
            .collect();
        anyhow::anyhow!(
            "the server doesn't have a resource type {name:?}: expected one of {}",
            known.join(", ")
        )
    })
}

/// The namespace a command works in: `-n`, else `default`.
pub fn namespace_or_default(ns: Option<&str>) -> String {
    ns.filter(|n| !n.is_empty())
        .unwrap_or(manifest::DEFAULT_NAMESPACE)
        .to_string()
}
