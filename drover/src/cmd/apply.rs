//! `drover apply -f FILE`: creates or updates every object of a manifest, kubectl-style.
//!
//! Every document is read and checked first ([`super::manifest`]), so a bad file sends nothing.
//! An object that does not exist is created with its applied configuration kept in the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation. One that exists gets a
//! three-way JSON merge patch: fields removed since the last apply are deleted (nulls from the
//! last-applied configuration to the new manifest), fields that differ from the live object are
//! set, and fields others added are left alone.

use drover_client::{Client, ClientError, target};
use serde_json::{Map, Value};

use super::GlobalArgs;
use super::manifest::{self, Check, Document};

/// The annotation kubectl keeps the applied configuration in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// File, directory (its *.yaml, *.yml and *.json files in name order) or `-` for stdin;
    /// may be repeated.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
    /// Namespace for documents that name none (default: `default`).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<()> {
    let docs = manifest::load(&args.files, args.namespace.as_deref(), Check::Full)?;
    let client = global.client()?;
    for doc in &docs {
        println!("{}", apply_one(&client, doc).await?);
    }
    Ok(())
}

/// Applies every object in a manifest text; returns one line per object (`job.batch/x created`).
pub async fn apply_text(client: &Client, text: &str, source: &str) -> anyhow::Result<Vec<String>> {
    let docs = manifest::documents_from_text(text, source, None, Check::Full)?;
    let mut lines = Vec::with_capacity(docs.len());
    for doc in &docs {
        lines.push(apply_one(client, doc).await?);
    }
    Ok(lines)
}

/// Creates or patches one object; returns kubectl's line for it. A server error names the
/// document it is about.
pub async fn apply_one(client: &Client, doc: &Document) -> anyhow::Result<String> {
    apply_doc(client, doc)
        .await
        .map_err(|e| match e.downcast::<ClientError>() {
            Ok(ClientError::Api(mut status)) => {
                status.message =
                    format!("error when applying {}: {}", doc.location(), status.message);
                ClientError::Api(status).into()
            }
            Ok(other) => other.into(),
            Err(e) => e,
        })
}

async fn apply_doc(client: &Client, doc: &Document) -> anyhow::Result<String> {
    let modified = with_last_applied(&doc.value)?;
    let t = target(&doc.info, Some(&doc.namespace), &doc.name, "");
    let collection = target(&doc.info, Some(&doc.namespace), "", "");
    match client
        .create_raw(collection, serde_json::to_vec(&modified)?)
        .await
    {
        Ok(_) => return Ok(format!("{} created", doc.display_name())),
        Err(e) if e.is_already_exists() => {}
        Err(e) => return Err(e.into()),
    }
    let current: Value =
        serde_json::from_slice(&client.get_raw(t.clone()).await?).map_err(ClientError::Decode)?;
    let original = current
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str::<Value>(s).ok());
    let Some(patch) = three_way_patch(original.as_ref(), &modified, &current) else {
        return Ok(format!("{} unchanged", doc.display_name()));
    };
    let updated: Value =
        serde_json::from_slice(&client.patch_raw(t, serde_json::to_vec(&patch)?).await?)
            .map_err(ClientError::Decode)?;
    let verb = if resource_version(&updated) == resource_version(&current) {
        "unchanged"
    } else {
        "configured"
    };
    Ok(format!("{} {verb}", doc.display_name()))
}

fn resource_version(v: &Value) -> &str {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The manifest with its own configuration (without the annotation) in the last-applied
/// annotation.
pub fn with_last_applied(value: &Value) -> anyhow::Result<Value> {
    let mut applied = value.clone();
    if let Some(ann) = applied
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        ann.remove(LAST_APPLIED);
        if ann.is_empty()
            && let Some(meta) = applied.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.remove("annotations");
        }
    }
    let config = serde_json::to_string(&applied)?;
    let mut out = value.clone();
    let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) else {
        anyhow::bail!("metadata must be an object");
    };
    let ann = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    match ann {
        Value::Object(a) => {
            a.insert(LAST_APPLIED.to_string(), Value::String(config));
        }
        Value::Null => {
            let mut a = Map::new();
            a.insert(LAST_APPLIED.to_string(), Value::String(config));
            *ann = Value::Object(a);
        }
        _ => anyhow::bail!("metadata.annotations must be a map of strings"),
    }
    Ok(out)
}

/// A JSON merge patch from `current` to `modified`: keys of `modified` whose value differs from
/// the live object are set, and keys of `original` (the last applied configuration) that
/// `modified` dropped are deleted. Keys only the live object has are left alone. `None` when
/// there is nothing to change.
pub fn three_way_patch(
    original: Option<&Value>,
    modified: &Value,
    current: &Value,
) -> Option<Value> {
    let (Value::Object(m), Value::Object(c)) = (modified, current) else {
        return (modified != current).then(|| modified.clone());
    };
    let o = original.and_then(Value::as_object);
    let mut patch = Map::new();
    for (k, mv) in m {
        let cv = c.get(k);
        let sub = match (mv, cv) {
            (Value::Object(_), Some(cv @ Value::Object(_))) => {
                three_way_patch(o.and_then(|o| o.get(k)), mv, cv)
            }
            (Value::Null, None) => None,
            _ => (cv != Some(mv)).then(|| mv.clone()),
        };
        if let Some(s) = sub {
            patch.insert(k.clone(), s);
        }
    }
    if let Some(o) = o {
        for k in o.keys() {
            if !m.contains_key(k) && c.contains_key(k) {
                patch.insert(k.clone(), Value::Null);
            }
        }
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn removed_fields_become_nulls_and_foreign_fields_stay() {
        let original = json!({"spec": {"a": 1, "b": 2}, "metadata": {"labels": {"x": "1"}}});
        let modified = json!({"spec": {"a": 1}, "metadata": {"labels": {"x": "1"}}});
        let current = json!({"spec": {"a": 1, "b": 2, "c": 3}, "metadata": {"labels": {"x": "1", "y": "2"}}, "status": {}});
        let p = three_way_patch(Some(&original), &modified, &current);
        assert_eq!(p, Some(json!({"spec": {"b": null}})));
    }

    #[test]
    fn unchanged_gives_no_patch_and_changes_are_set() {
        let m = json!({"spec": {"a": [1, 2]}});
        assert_eq!(three_way_patch(Some(&m), &m, &m), None);
        let current = json!({"spec": {"a": [1]}});
        assert_eq!(
            three_way_patch(Some(&m), &m, &current),
            Some(json!({"spec": {"a": [1, 2]}}))
        );
    }

    #[test]
    fn last_applied_excludes_itself() {
        let v = json!({"metadata": {"name": "x", "annotations": {LAST_APPLIED: "old"}}});
        let out = with_last_applied(&v).unwrap_or_default();
        let stored = out
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(LAST_APPLIED));
        assert_eq!(stored, Some(&json!("{\"metadata\":{\"name\":\"x\"}}")));
    }
}
