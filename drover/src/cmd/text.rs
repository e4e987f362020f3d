//! The readable layout `describe` prints: `Key:  value` lines padded to one column, nested
//! sections, maps, resource lists, small tables, conditions and events, kubectl-like.

use chrono::Utc;
use serde_json::Value;

use super::printers::{self, NONE, age_of, or, s};

pub fn arr<'a>(obj: &'a Value, p: &str) -> &'a [Value] {
    obj.pointer(p)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub fn num(obj: &Value, p: &str) -> String {
    match obj.pointer(p) {
        Some(Value::Number(n)) => n.to_string(),
        _ => "0".into(),
    }
}

/// `minMember` → `Min Member`, as kubectl's generic describer spells keys.
pub fn title(key: &str) -> String {
    if !key.chars().all(|c| c.is_ascii_alphanumeric()) {
        // A name, not a field (`nvidia.com/gpu`, a label key): print it as it is.
        return key.to_string();
    }
    let mut out = String::new();
    for (i, ch) in key.chars().enumerate() {
        if i == 0 {
            out.extend(ch.to_uppercase());
        } else if ch.is_uppercase()
            && out.ends_with(|p: char| p.is_lowercase() || p.is_ascii_digit())
        {
            out.push(' ');
            out.push(ch);
        } else {
            out.push(ch);
        }
    }
    out
}

/// The text being built.
#[derive(Default)]
pub struct Out(pub String);

/// Width the `Key:` column is padded to.
const KEY_WIDTH: usize = 21;

impl Out {
    pub fn line(&mut self, indent: usize, text: &str) {
        self.0.push_str(&" ".repeat(indent));
        self.0.push_str(text);
        self.0.push('\n');
    }

    pub fn field(&mut self, indent: usize, key: &str, value: &str) {
        let key = format!("{key}:");
        let pad = KEY_WIDTH.saturating_sub(indent + key.len()).max(1);
        self.line(
            indent,
            format!("{key}{}{value}", " ".repeat(pad)).trim_end(),
        );
    }

    /// A map, one `k=v` per line (`<none>` when empty), leaving out `skip`.
    pub fn map(&mut self, indent: usize, key: &str, v: Option<&Value>, skip: &[&str]) {
        let entries: Vec<String> = v
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        self.list(indent, key, &entries);
    }

    pub fn list(&mut self, indent: usize, key: &str, entries: &[String]) {
        if entries.is_empty() {
            return self.field(indent, key, NONE);
        }
        self.field(indent, key, &entries[0]);
        let pad = " ".repeat(KEY_WIDTH.saturating_sub(indent).max(key.len() + 2));
        for e in &entries[1..] {
            self.line(indent, &format!("{pad}{e}"));
        }
    }

    /// A resource list, one `name: quantity` per line.
    pub fn resources(&mut self, indent: usize, key: &str, v: Option<&Value>) {
        match v.and_then(Value::as_object).filter(|m| !m.is_empty()) {
            None => self.field(indent, key, NONE),
            Some(m) => {
                self.line(indent, &format!("{key}:"));
                for (k, q) in m {
                    self.field(indent + 2, k, &scalar(q));
                }
            }
        }
    }

    /// Any JSON value, nested fields indented; empty strings are left out.
    pub fn value(&mut self, indent: usize, key: &str, v: &Value) {
        match v {
            Value::String(s) if s.is_empty() => {}
            _ => self.value_inner(indent, key, v),
        }
    }

    pub fn value_inner(&mut self, indent: usize, key: &str, v: &Value) {
        match v {
            Value::Object(m) if m.is_empty() => self.field(indent, &title(key), NONE),
            Value::Object(m) => {
                self.line(indent, &format!("{}:", title(key)));
                for (k, v) in m {
                    self.value(indent + 2, k, v);
                }
            }
            Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
                let parts: Vec<String> = items.iter().map(scalar).collect();
                self.field(indent, &title(key), &or(&parts.join(", "), NONE));
            }
            Value::Array(items) => {
                self.line(indent, &format!("{}:", title(key)));
                for (i, item) in items.iter().enumerate() {
                    self.value(indent + 2, &format!("[{i}]"), item);
                }
            }
            other => self.field(indent, &title(key), &scalar(other)),
        }
    }

    pub fn table(&mut self, indent: usize, headers: &[&str], rows: &[Vec<String>]) {
        let dashes: Vec<String> = headers.iter().map(|h| "-".repeat(h.len())).collect();
        let mut all = vec![dashes];
        all.extend(rows.iter().cloned());
        for l in printers::table(headers, &all).lines() {
            self.line(indent, l);
        }
    }

    pub fn conditions(&mut self, obj: &Value, with_times: bool) {
        let conds = arr(obj, "/status/conditions");
        if conds.is_empty() {
            return;
        }
        self.line(0, "Conditions:");
        let rows: Vec<Vec<String>> = conds
            .iter()
            .map(|c| {
                let mut r = vec![s(c, "/type").to_string(), s(c, "/status").to_string()];
                if with_times {
                    r.push(or(s(c, "/lastHeartbeatTime"), NONE));
                }
                r.extend([s(c, "/reason").to_string(), s(c, "/message").to_string()]);
                r
            })
            .collect();
        let headers: &[&str] = if with_times {
            &["Type", "Status", "LastHeartbeatTime", "Reason", "Message"]
        } else {
            &["Type", "Status", "Reason", "Message"]
        };
        self.table(2, headers, &rows);
    }

    pub fn events(&mut self, events: &[Value]) {
        if events.is_empty() {
            self.field(0, "Events", NONE);
            return;
        }
        self.line(0, "Events:");
        let now = Utc::now();
        let rows: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                let seen = age_of(
                    [
                        "/lastTimestamp",
                        "/eventTime",
                        "/metadata/creationTimestamp",
                    ]
                    .iter()
                    .find_map(|p| e.pointer(p).filter(|v| !v.is_null())),
                    now,
                );
                let count = e.get("count").and_then(Value::as_i64).unwrap_or(1);
                let age = if count > 1 {
                    let first = age_of(e.pointer("/firstTimestamp"), now);
                    format!("{seen} (x{count} over {first})")
                } else {
                    seen
                };
                let from = match s(e, "/source/component") {
                    "" => s(e, "/reportingComponent"),
                    c => c,
                };
                vec![
                    s(e, "/type").to_string(),
                    s(e, "/reason").to_string(),
                    age,
                    from.to_string(),
                    s(e, "/message").to_string(),
                ]
            })
            .collect();
        self.table(2, &["Type", "Reason", "Age", "From", "Message"], &rows);
    }
}

pub fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => NONE.into(),
        other => other.to_string(),
    }
}
