//! Reading manifests: the files, directories and stdin named by `-f`, split into documents,
//! each resolved to a registered kind and checked locally (decoding, defaults, validation)
//! before anything is sent, so a bad file changes nothing.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use drover_api::Resource;
use drover_api::resource::{KindInfo, KindVisitor, find_kind_by_type, visit_kinds};
use serde::Deserialize;
use serde_json::Value;

/// Namespace used when neither the document nor `-n` names one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// One object read from a manifest.
#[derive(Debug, Clone)]
pub struct Document {
    /// Where it came from: `job.yaml` or `stdin`.
    pub source: String,
    /// 1-based index of the document in its source (after `List` expansion).
    pub index: usize,
    pub info: KindInfo,
    /// The namespace the object goes to (empty for cluster-scoped kinds).
    pub namespace: String,
    pub name: String,
    /// The object as written, with `metadata.namespace` filled in for namespaced kinds.
    pub value: Value,
}

impl Document {
    /// `job.batch/train`, as kubectl prints it.
    pub fn display_name(&self) -> String {
        format!("{}/{}", self.info.qualified_singular(), self.name)
    }

    /// `job.yaml document 2`, for error messages.
    pub fn location(&self) -> String {
        format!("{} document {}", self.source, self.index)
    }
}

/// Expands `-f` arguments into `(source name, text)` pairs: a file, every `*.yaml`, `*.yml`
/// and `*.json` file of a directory in name order, or stdin for `-`.
pub fn read_sources(paths: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    if paths.is_empty() {
        bail!("must specify -f FILE (a file, a directory, or - for stdin)");
    }
    let mut out = Vec::new();
    for p in paths {
        if p == "-" {
            let mut text = String::new();
            std::io::stdin()
                .take(MAX_MANIFEST_BYTES + 1)
                .read_to_string(&mut text)
                .context("cannot read the manifest from stdin")?;
            if text.len() as u64 > MAX_MANIFEST_BYTES {
                return Err(too_large("stdin (stopped reading)", text.len() as u64));
            }
            out.push(("stdin".to_string(), text));
            continue;
        }
        let path = Path::new(p);
        if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot read directory {p}"))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && is_manifest_file(f))
                .collect();
            files.sort();
            if files.is_empty() {
                bail!("directory {p} holds no *.yaml, *.yml or *.json files");
            }
            for f in files {
                out.push((f.display().to_string(), read_file(&f)?));
            }
        } else {
            out.push((p.clone(), read_file(path)?));
        }
    }
    Ok(out)
}

fn is_manifest_file(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// The largest manifest read (a file or stdin). The API server takes objects of a few MiB at
/// most, so a larger manifest is a mistake; refusing it before reading keeps the CLI small.
pub const MAX_MANIFEST_BYTES: u64 = 32 << 20;

fn too_large(source: &str, size: u64) -> anyhow::Error {
    anyhow::anyhow!(
        "{source} is {size} bytes: larger than the limit of {MAX_MANIFEST_BYTES} bytes for a manifest"
    )
}

fn read_file(path: &Path) -> anyhow::Result<String> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if size > MAX_MANIFEST_BYTES {
        return Err(too_large(&path.display().to_string(), size));
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Splits a text into JSON values: a JSON stream when it starts with `{` or `[`, else YAML
/// documents separated by `---`. Empty documents are skipped; `List`s are expanded.
pub fn parse_values(source: &str, text: &str) -> anyhow::Result<Vec<Value>> {
    let mut raw = Vec::new();
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        for (i, v) in serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .enumerate()
        {
            let v = v.map_err(|e| {
                anyhow::anyhow!("{source}: document {}: malformed JSON: {e}", i + 1)
            })?;
            raw.push(v);
        }
    } else {
        for (i, doc) in yaml_serde::Deserializer::from_str(text).enumerate() {
            let v = Value::deserialize(doc).map_err(|e| {
                anyhow::anyhow!("{source}: document {}: malformed YAML: {e}", i + 1)
            })?;
            raw.push(v);
        }
    }
    let mut out = Vec::new();
    for v in raw {
        expand(v, &mut out);
    }
    Ok(out)
}

/// Drops empty documents and flattens `List`s (and top-level JSON arrays).
fn expand(v: Value, out: &mut Vec<Value>) {
    match v {
        Value::Null => {}
        Value::Array(items) => items.into_iter().for_each(|i| expand(i, out)),
        Value::Object(ref m)
            if m.get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k == "List" || k.ends_with("List"))
                && m.get("items").is_some_and(Value::is_array) =>
        {
            if let Some(Value::Array(items)) = v.get("items").cloned() {
                items.into_iter().for_each(|i| expand(i, out));
            }
        }
        other => out.push(other),
    }
}

/// How much of a document is checked before anything is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Kind, name and namespace, then decoding, defaults and validation as the server does them
    /// (for apply).
    Full,
    /// Kind, name and namespace only (for delete: the rest does not matter).
    Identity,
}

/// Reads, parses and checks every document named by `-f`; fails on the first bad one, before
/// anything has been sent.
pub fn load(
    paths: &[String],
    namespace: Option<&str>,
    check: Check,
) -> anyhow::Result<Vec<Document>> {
    let mut docs = Vec::new();
    for (source, text) in read_sources(paths)? {
        docs.extend(documents_from_text(&text, &source, namespace, check)?);
    }
    if docs.is_empty() {
        bail!("no objects found in {}", paths.join(", "));
    }
    Ok(docs)
}

/// Parses and checks every document of one text.
pub fn documents_from_text(
    text: &str,
    source: &str,
    namespace: Option<&str>,
    check: Check,
) -> anyhow::Result<Vec<Document>> {
    let mut docs = Vec::new();
    for (i, value) in parse_values(source, text)?.into_iter().enumerate() {
        docs.push(check_document(value, source, i + 1, namespace, check)?);
    }
    Ok(docs)
}

/// Resolves one document's kind, name and namespace, and checks it as the server would.
fn check_document(
    mut value: Value,
    source: &str,
    index: usize,
    namespace: Option<&str>,
    check: Check,
) -> anyhow::Result<Document> {
    let at = format!("{source}: document {index}");
    let Some(obj) = value.as_object() else {
        bail!(
            "{at}: expected an object with apiVersion, kind and metadata, got {}",
            type_name(&value)
        );
    };
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    if api_version.is_empty() || kind.is_empty() {
        bail!("{at}: apiVersion and kind are required (e.g. apiVersion: batch/v1, kind: Job)");
    }
    let Some(info) = find_kind_by_type(api_version, kind) else {
        let known: Vec<String> = drover_api::resource::all_kinds()
            .iter()
            .map(|k| format!("{}/{}", k.api_version(), k.kind))
            .collect();
        bail!(
            "{at}: unknown kind {kind:?} in apiVersion {api_version:?}: expected one of {}",
            known.join(", ")
        );
    };
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if name.is_empty() {
        bail!("{at}: metadata.name is required");
    }
    let doc_ns = value
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let ns = if info.namespaced {
        match (doc_ns.as_str(), namespace) {
            ("", Some(n)) => n.to_string(),
            ("", None) => DEFAULT_NAMESPACE.to_string(),
            (d, Some(n)) if d != n => bail!(
                "{at}: the namespace of {}/{name} ({d:?}) does not match --namespace {n:?}",
                info.qualified_singular()
            ),
            (d, _) => d.to_string(),
        }
    } else {
        if !doc_ns.is_empty() {
            bail!("{at}: {kind} is cluster-scoped: expected no metadata.namespace, got {doc_ns:?}");
        }
        String::new()
    };
    if info.namespaced
        && let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.insert("namespace".into(), Value::String(ns.clone()));
    }
    let mut local = LocalCheck {
        info,
        value: &value,
        result: None,
    };
    if check == Check::Full {
        visit_kinds(&mut local);
    }
    if let Some(Err(why)) = local.result {
        bail!("{at} ({}/{name}): {why}", info.qualified_singular());
    }
    Ok(Document {
        source: source.to_string(),
        index,
        info,
        namespace: ns,
        name,
        value,
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Decodes a document as its kind, applies the server's defaults and validates it.
struct LocalCheck<'a> {
    info: KindInfo,
    value: &'a Value,
    result: Option<Result<(), String>>,
}

impl KindVisitor for LocalCheck<'_> {
    fn visit<T: Resource>(&mut self) {
        if T::info() != self.info {
            return;
        }
        // The path of the offending field is tracked, so a bad value is named where it is
        // (`spec.template.spec.containers[0].resources.limits.memory`), as the server names it.
        let mut obj: T = match serde_path_to_error::deserialize(self.value.clone()) {
            Ok(o) => o,
            Err(e) => {
                let path = e.path().to_string();
                let msg = e.into_inner().to_string();
                let at = unknown_field(&msg)
                    .and_then(|f| find_key(self.value, f, String::new()))
                    .or_else(|| (path != "." && path != "?").then_some(path))
                    .map(|p| format!("{p}: "))
                    .unwrap_or_default();
                self.result = Some(Err(format!("invalid {}: {at}{msg}", T::KIND)));
                return;
            }
        };
        obj.default_fields();
        let name = obj.meta().name.clone();
        self.result = Some(
            obj.validate()
                .map_err(|e| format!("{} {name:?} is invalid: {e}", T::KIND)),
        );
    }
}

/// The field serde names in an "unknown field `x`, expected ..." message.
fn unknown_field(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("unknown field `")?;
    rest.split_once('`').map(|(f, _)| f)
}

/// The path of the first occurrence of `key` in `v`: `spec.containers[0].bogus`.
fn find_key(v: &Value, key: &str, at: String) -> Option<String> {
    let join = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    match v {
        Value::Object(m) => {
            if m.contains_key(key) {
                return Some(join(key));
            }
            m.iter().find_map(|(k, v)| find_key(v, key, join(k)))
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| find_key(v, key, format!("{at}[{i}]"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A garbled quantity is named by its field, as the server names it (issue 17).
    #[test]
    fn a_bad_value_names_its_field() {
        let text = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: q}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: main\n        command: [\"true\"]\n        resources: {limits: {memory: 1Gx}}\n";
        let err = documents_from_text(text, "job.yaml", None, Check::Full)
            .expect_err("a bad quantity")
            .to_string();
        assert!(
            err.contains(
                "spec.template.spec.containers[0].resources.limits.memory: invalid quantity \"1Gx\""
            ),
            "{err}"
        );
    }
}
