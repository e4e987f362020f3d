//! `drover delete KIND NAME...`, `-l SELECTOR` or `-f FILE`: deletes objects and prints
//! `pod "x" deleted` for each, as kubectl does.

use drover_api::resource::KindInfo;
use drover_client::{Client, ClientError, DeleteParams, ListParams, target};
use serde_json::Value;

use super::manifest::{self, Check};
use super::{GlobalArgs, kind_arg, namespace_or_default};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Kind (pods, po, jobs, ns, ...), or `KIND/NAME`; not with -f.
    pub kind: Option<String>,
    /// Names of the objects to delete.
    pub names: Vec<String>,
    /// Delete the objects of these files, directories or stdin (`-`), last document first.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    /// Namespace (default: `default`).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Delete every object of the kind that matches this label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Seconds the object gets to stop (0: at once); default: the object's own.
    #[arg(long, allow_hyphen_values = true)]
    pub grace_period: Option<i64>,
    /// What happens to dependents: background, foreground or orphan.
    #[arg(long, default_value = "background")]
    pub cascade: String,
    /// Treat objects that do not exist as deleted.
    #[arg(long)]
    pub ignore_not_found: bool,
}

pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<()> {
    let params = DeleteParams {
        propagation_policy: Some(propagation(&args.cascade)?),
        grace_period_seconds: args.grace_period.filter(|g| *g >= 0),
        ..DeleteParams::default()
    };
    let targets = targets(&args)?;
    let client = global.client()?;
    let targets = match targets {
        Targets::Named(t) => t,
        Targets::Selected(info, ns, selector) => select(&client, info, &ns, &selector).await?,
    };
    let mut errors = Vec::new();
    for (info, ns, name) in &targets {
        match client
            .delete_raw(target(info, Some(ns), name, ""), &params)
            .await
        {
            Ok(_) => println!("{} {name:?} deleted", info.qualified_singular()),
            Err(e) if e.is_not_found() && args.ignore_not_found => {}
            Err(e) => errors.push(anyhow::Error::from(e)),
        }
    }
    // Every failure gets its line; the last one is returned for `main` to print and exit on.
    let last = errors.pop();
    for e in &errors {
        eprintln!("error: {}", super::render_error(e));
    }
    match last {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// kubectl's `--cascade` values, as the API's propagation policy.
fn propagation(cascade: &str) -> anyhow::Result<String> {
    Ok(match cascade.to_ascii_lowercase().as_str() {
        "background" | "true" => "Background",
        "foreground" => "Foreground",
        "orphan" | "false" => "Orphan",
        other => {
            anyhow::bail!("invalid --cascade {other:?}: expected background, foreground or orphan")
        }
    }
    .to_string())
}

type Named = Vec<(KindInfo, String, String)>;

enum Targets {
    Named(Named),
    Selected(KindInfo, String, String),
}

/// What the flags name, checked before anything is sent.
fn targets(args: &Args) -> anyhow::Result<Targets> {
    if !args.files.is_empty() {
        if args.kind.is_some() {
            anyhow::bail!("give either -f FILE or KIND NAME, not both");
        }
        let docs = manifest::load(&args.files, args.namespace.as_deref(), Check::Identity)?;
        return Ok(Targets::Named(
            docs.into_iter()
                .rev()
                .map(|d| (d.info, d.namespace, d.name))
                .collect(),
        ));
    }
    let Some(kind) = &args.kind else {
        anyhow::bail!("must give KIND NAME..., KIND -l SELECTOR, or -f FILE");
    };
    let (kind, mut names) = match kind.split_once('/') {
        Some((k, n)) => (k.to_string(), vec![n.to_string()]),
        None => (kind.clone(), Vec::new()),
    };
    names.extend(args.names.iter().cloned());
    let info = kind_arg(&kind)?;
    let ns = namespace_or_default(args.namespace.as_deref());
    match (&args.selector, names.is_empty()) {
        (Some(s), true) => Ok(Targets::Selected(info, ns, s.clone())),
        (Some(_), false) => anyhow::bail!("give either names or -l SELECTOR, not both"),
        (None, true) => anyhow::bail!(
            "must give the names of the {} to delete, or -l SELECTOR",
            info.plural
        ),
        (None, false) => Ok(Targets::Named(
            names.into_iter().map(|n| (info, ns.clone(), n)).collect(),
        )),
    }
}

/// The objects a label selector matches.
async fn select(
    client: &Client,
    info: KindInfo,
    ns: &str,
    selector: &str,
) -> anyhow::Result<Named> {
    let params = ListParams::default().labels(selector);
    let list: Value = serde_json::from_slice(
        &client
            .list_raw(target(&info, Some(ns), "", ""), &params)
            .await?,
    )
    .map_err(ClientError::Decode)?;
    let items = list.get("items").and_then(Value::as_array);
    let named: Named = items
        .into_iter()
        .flatten()
        .filter_map(|o| o.pointer("/metadata/name").and_then(Value::as_str))
        .map(|n| (info, ns.to_string(), n.to_string()))
        .collect();
    if named.is_empty() {
        if info.namespaced {
            eprintln!("No resources found in {ns} namespace.");
        } else {
            eprintln!("No resources found");
        }
    }
    Ok(named)
}
