//! `drover logs POD [-c CONTAINER] [-f] [--tail N]`: streams a container's log to stdout.

use std::io::Write;

use anyhow::Context;
use futures::StreamExt;

use super::{GlobalArgs, namespace_or_default};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pod (or `pod/NAME`).
    pub pod: String,
    /// The container (default: the pod's only or first container).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Keep streaming as the log grows.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines (default: all).
    #[arg(long, allow_hyphen_values = true)]
    pub tail: Option<i64>,
    /// Namespace (default: `default`).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<()> {
    let pod = match args.pod.split_once('/') {
        Some((kind, name)) => {
            let info = super::kind_arg(kind)?;
            if info.plural != "pods" {
                anyhow::bail!(
                    "logs are kept for pods only: expected pod/NAME, got {}",
                    args.pod
                );
            }
            name.to_string()
        }
        None => args.pod.clone(),
    };
    let ns = namespace_or_default(args.namespace.as_deref());
    let client = global.client()?;
    let tail = args.tail.filter(|t| *t >= 0);
    let container = args.container.unwrap_or_default();
    let mut stream = client
        .logs(&ns, &pod, &container, args.follow, tail)
        .await?;
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        out.write_all(&chunk)
            .context("cannot write the log to stdout")?;
        out.flush().context("cannot write the log to stdout")?;
    }
    Ok(())
}
