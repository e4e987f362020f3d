//! `drover get KIND [NAME...]`: kubectl-style tables, `-o json|yaml|name|wide`, and `-w` to
//! stream changes (watching from the list's resource version, resuming after a disconnect).

use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use drover_api::error::Reason;
use drover_api::resource::KindInfo;
use drover_client::{Client, ClientError, ListParams, proto, target};
use futures::StreamExt;
use serde_json::{Value, json};

use super::printers::{self, TableOptions};
use super::{GlobalArgs, kind_arg, namespace_or_default};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Kind: pods (pod, po), nodes (no), jobs, namespaces (ns), podgroups (pg), events (ev),
    /// leases, priorityclasses (pc); `KIND/NAME` also works.
    pub kind: String,
    /// Names of the objects to show (default: all).
    pub names: Vec<String>,
    /// Namespace (default: `default`).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// List across all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Label selector (`app=x,tier!=db`, `env in (a,b)`).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Field selector (`spec.nodeName=n1`, `status.phase=Running`).
    #[arg(long)]
    pub field_selector: Option<String>,
    /// Output format: wide, json, yaml or name.
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    /// After listing, print a line for every change.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Leave out the header line.
    #[arg(long)]
    pub no_headers: bool,
}

/// How objects are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Table { wide: bool },
    Json,
    Yaml,
    Name,
}

impl Output {
    fn parse(o: Option<&str>) -> anyhow::Result<Output> {
        Ok(match o {
            None | Some("") => Output::Table { wide: false },
            Some("wide") => Output::Table { wide: true },
            Some("json") => Output::Json,
            Some("yaml") => Output::Yaml,
            Some("name") => Output::Name,
            Some(other) => anyhow::bail!(
                "unable to match a printer suitable for the output format {other:?}: expected wide, json, yaml or name"
            ),
        })
    }
}

pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<()> {
    let (kind, mut names) = match args.kind.split_once('/') {
        Some((k, n)) => (k.to_string(), vec![n.to_string()]),
        None => (args.kind.clone(), Vec::new()),
    };
    names.extend(args.names.iter().cloned());
    let info = kind_arg(&kind)?;
    let output = Output::parse(args.output.as_deref())?;
    if args.all_namespaces && !names.is_empty() {
        anyhow::bail!("a resource cannot be retrieved by name across all namespaces");
    }
    let ns = namespace_or_default(args.namespace.as_deref());
    let all = args.all_namespaces && info.namespaced;
    let opts = TableOptions {
        wide: output == Output::Table { wide: true },
        all_namespaces: all,
    };
    let client = global.client()?;
    let mut params = ListParams {
        label_selector: args.selector.clone(),
        field_selector: args.field_selector.clone(),
        ..ListParams::default()
    };
    let list_target = target(&info, (!all).then_some(ns.as_str()), "", "");

    let (objects, list_rv, missing) = if names.is_empty() {
        let list: Value = decode(&client.list_raw(list_target.clone(), &params).await?)?;
        let rv = printers::s(&list, "/metadata/resourceVersion").to_string();
        let items = list
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        (items, rv, None)
    } else {
        let mut found = Vec::new();
        let mut missing = None;
        for n in &names {
            match client.get_raw(target(&info, Some(&ns), n, "")).await {
                Ok(b) => found.push(decode(&b)?),
                Err(e) if missing.is_none() => missing = Some(e),
                Err(_) => {}
            }
        }
        (found, String::new(), missing)
    };
    let objects: Vec<Value> = objects.into_iter().map(|o| with_type(o, &info)).collect();

    let widths = print_objects(&info, &objects, output, opts, &names, args.no_headers)?;
    if objects.is_empty() && names.is_empty() && !matches!(output, Output::Json | Output::Yaml) {
        if info.namespaced && !all {
            eprintln!("No resources found in {ns} namespace.");
        } else {
            eprintln!("No resources found");
        }
    }
    if let Some(e) = missing {
        return Err(e.into());
    }
    if !args.watch {
        return Ok(());
    }
    if names.len() == 1 {
        let by_name = format!("metadata.name={}", names[0]);
        params.field_selector = Some(match &params.field_selector {
            Some(f) if !f.is_empty() => format!("{f},{by_name}"),
            _ => by_name,
        });
    }
    let mut widths = widths;
    if objects.is_empty() && matches!(output, Output::Table { .. }) && !args.no_headers {
        let h = printers::headers(&info, opts);
        widths = printers::widths(&h, &[])
            .into_iter()
            .map(|w| w.max(12))
            .collect();
        println!("{}", printers::line(&h, &widths));
    }
    watch(
        &client,
        &info,
        list_target,
        &params,
        list_rv,
        output,
        opts,
        &widths,
    )
    .await
}

fn decode(bytes: &[u8]) -> anyhow::Result<Value> {
    Ok(serde_json::from_slice(bytes).map_err(ClientError::Decode)?)
}

/// Fills in `apiVersion` and `kind` when the server left them out of list items.
fn with_type(mut obj: Value, info: &KindInfo) -> Value {
    if let Some(m) = obj.as_object_mut()
        && !m.contains_key("kind")
    {
        let mut typed = serde_json::Map::new();
        typed.insert("apiVersion".into(), Value::String(info.api_version()));
        typed.insert("kind".into(), Value::String(info.kind.to_string()));
        typed.extend(std::mem::take(m));
        *m = typed;
    }
    obj
}

/// Prints the objects; returns the table's column widths (for the rows a watch adds).
fn print_objects(
    info: &KindInfo,
    objects: &[Value],
    output: Output,
    opts: TableOptions,
    names: &[String],
    no_headers: bool,
) -> anyhow::Result<Vec<usize>> {
    let single = names.len() == 1 && objects.len() == 1;
    let doc = || {
        if single {
            objects[0].clone()
        } else {
            json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": objects})
        }
    };
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&doc())?),
        Output::Yaml => print!(
            "{}",
            yaml_serde::to_string(&doc()).context("cannot print YAML")?
        ),
        Output::Name => {
            for o in objects {
                println!(
                    "{}/{}",
                    info.qualified_singular(),
                    printers::s(o, "/metadata/name")
                );
            }
        }
        Output::Table { .. } => {
            if objects.is_empty() {
                return Ok(Vec::new());
            }
            let now = Utc::now();
            let h = printers::headers(info, opts);
            let rows: Vec<Vec<String>> = objects
                .iter()
                .map(|o| printers::row(info, o, opts, now))
                .collect();
            let widths = printers::widths(&h, &rows);
            if !no_headers {
                println!("{}", printers::line(&h, &widths));
            }
            for r in &rows {
                println!("{}", printers::line(r, &widths));
            }
            return Ok(widths);
        }
    }
    Ok(Vec::new())
}

/// Prints one changed object.
fn print_change(
    info: &KindInfo,
    obj: &Value,
    output: Output,
    opts: TableOptions,
    widths: &[usize],
) {
    match output {
        Output::Table { .. } => {
            let r = printers::row(info, obj, opts, Utc::now());
            println!("{}", printers::line(&r, widths));
        }
        Output::Json => println!("{}", serde_json::to_string_pretty(obj).unwrap_or_default()),
        Output::Yaml => println!(
            "---\n{}",
            yaml_serde::to_string(obj).unwrap_or_default().trim_end()
        ),
        Output::Name => println!(
            "{}/{}",
            info.qualified_singular(),
            printers::s(obj, "/metadata/name")
        ),
    }
}

/// Streams changes from `rv` on, reconnecting when the server goes away and relisting when the
/// version has been compacted.
#[allow(clippy::too_many_arguments)]
async fn watch(
    client: &Client,
    info: &KindInfo,
    t: proto::Target,
    params: &ListParams,
    mut rv: String,
    output: Output,
    opts: TableOptions,
    widths: &[usize],
) -> anyhow::Result<()> {
    loop {
        let mut stream = match client.watch_raw(t.clone(), params, &rv).await {
            Ok(s) => s,
            Err(e) if e.is_transient() => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        while let Some(ev) = stream.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) if e.is_transient() => break,
                Err(e) => return Err(e.into()),
            };
            let obj: Value = decode(&ev.object)?;
            match ev.r#type.as_str() {
                "BOOKMARK" => rv = printers::s(&obj, "/metadata/resourceVersion").to_string(),
                "ERROR" => {
                    let status: drover_api::Status =
                        serde_json::from_value(obj).map_err(ClientError::Decode)?;
                    if !matches!(status.reason, Reason::Expired | Reason::Gone) {
                        return Err(ClientError::Api(status).into());
                    }
                    // Compacted away: start again from the current state.
                    let list: Value = decode(&client.list_raw(t.clone(), params).await?)?;
                    rv = printers::s(&list, "/metadata/resourceVersion").to_string();
                    break;
                }
                _ => {
                    rv = printers::s(&obj, "/metadata/resourceVersion").to_string();
                    print_change(info, &with_type(obj, info), output, opts, widths);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
