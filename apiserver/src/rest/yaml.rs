//! YAML request bodies: converted to JSON before anything decodes them, with the nesting of flow
//! collections bounded first (the parser's cost grows with the square of that depth).

use bytes::Bytes;
use drover_api::Status;

/// Bodies at least this large are converted from YAML on a blocking thread, not an async worker.
const YAML_BLOCKING_BYTES: usize = 64 * 1024;

/// [`yaml_to_json`], off the async workers for large bodies.
pub(super) async fn yaml_body_to_json(bytes: Bytes) -> Result<Bytes, Status> {
    if bytes.len() < YAML_BLOCKING_BYTES {
        return yaml_to_json(&bytes);
    }
    tokio::task::spawn_blocking(move || yaml_to_json(&bytes))
        .await
        .map_err(|e| Status::internal(format!("the YAML conversion stopped: {e}")))?
}

/// The deepest nesting of a YAML body's flow collections (`[`, `{`) accepted. The YAML parser's
/// cost grows with the square of that depth (100,000 levels in 200 KB cost tens of seconds), and
/// the decoder refuses anything nested deeper than 128 levels anyway; block nesting needs
/// indentation, so it cannot get deep cheaply.
pub const MAX_YAML_FLOW_DEPTH: usize = 128;

/// Where the flow collections of `bytes` first nest deeper than `max`, as (line, column), both
/// from 1. A linear scan that follows YAML's rules for where quoted scalars and comments start
/// (at the start of a token), so brackets inside them do not count and a quote inside a plain
/// scalar (`don't`) hides nothing.
pub fn flow_too_deep(bytes: &[u8], max: usize) -> Option<(usize, usize)> {
    #[derive(PartialEq)]
    enum In {
        Plain,
        Double,
        Single,
        Comment,
    }
    let (mut state, mut depth, mut line, mut line_start) = (In::Plain, 0usize, 1, 0);
    let mut prev = b'\n';
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\n' {
            line += 1;
            line_start = i + 1;
        }
        let token_start = matches!(
            prev,
            b' ' | b'\t' | b'\n' | b'\r' | b'[' | b'{' | b',' | b':' | b'-' | b'?'
        );
        match state {
            In::Plain => match b {
                b'[' | b'{' => {
                    depth += 1;
                    if depth > max {
                        return Some((line, i - line_start + 1));
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                b'"' if token_start => state = In::Double,
                b'\'' if token_start => state = In::Single,
                b'#' if matches!(prev, b' ' | b'\t' | b'\n' | b'\r') => state = In::Comment,
                _ => {}
            },
            In::Double => match b {
                b'\\' => i += 1,
                b'"' => state = In::Plain,
                _ => {}
            },
            In::Single => {
                if b == b'\'' {
                    if bytes.get(i + 1) == Some(&b'\'') {
                        i += 1;
                    } else {
                        state = In::Plain;
                    }
                }
            }
            In::Comment => {
                if b == b'\n' {
                    state = In::Plain;
                }
            }
        }
        prev = b;
        i += 1;
    }
    None
}

/// Converts one YAML document to JSON.
pub fn yaml_to_json(bytes: &[u8]) -> Result<Bytes, Status> {
    if let Some((line, column)) = flow_too_deep(bytes, MAX_YAML_FLOW_DEPTH) {
        return Err(Status::bad_request(format!(
            "the request body nests deeper than {MAX_YAML_FLOW_DEPTH} levels (line {line}, column {column})"
        )));
    }
    let v: serde_json::Value = yaml_serde::from_slice(bytes).map_err(|e| {
        Status::bad_request(format!("the request body is not valid YAML or JSON: {e}"))
    })?;
    serde_json::to_vec(&v)
        .map(Bytes::from)
        .map_err(|e| Status::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_depth_is_counted_where_yaml_would_nest() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let cases: Vec<(String, Option<(usize, usize)>)> = vec![
            (deep(4), None),
            (deep(5), Some((1, 5))),
            (format!("a:\n  b: {}", deep(5)), Some((2, 10))),
            // Brackets in quoted scalars and comments do not nest.
            (format!("a: \"{}\"", "[".repeat(9)), None),
            (format!("a: '{}'", "{".repeat(9)), None),
            (format!("a: 'it''s {}'", "{".repeat(9)), None),
            (format!("a: \"\\\"{}\"", "[".repeat(9)), None),
            (format!("a: 1 # {}\nb: 2", "[".repeat(9)), None),
            // A quote or hash inside a plain scalar starts nothing, so it hides nothing.
            (format!("[don't{}", "[".repeat(9)), Some((1, 10))),
            (format!("[a#b{}", "[".repeat(9)), Some((1, 8))),
            (format!("{{\"a\":{}}}", deep(4)), Some((1, 9))),
        ];
        for (body, want) in cases {
            assert_eq!(flow_too_deep(body.as_bytes(), 4), want, "{body:?}");
        }
        let e = yaml_to_json(deep(100_000).as_bytes()).expect_err("too deep");
        assert!(e.message.contains("deeper than 128"), "{}", e.message);
        assert!(yaml_to_json(deep(100).as_bytes()).is_ok());
    }
}
