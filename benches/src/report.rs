//! What every scenario report offers: tables for the terminal, charts for `--plot`, and serde
//! JSON for `--json` (all figures).

use std::fmt;

use serde::Serialize;

use crate::plot::Chart;

/// A scenario's result.
pub trait Report: Serialize {
    /// Tables printed at the end of a run.
    fn tables(&self) -> Vec<Table>;
    /// Charts drawn by `--plot` (latency CDF, throughput over time, allocation curves).
    fn charts(&self) -> Vec<Chart>;
}

/// Parameters of a run, printed first so a result can be reproduced.
pub fn render_parameters(scenario: &str, params: &[(String, String)]) -> String {
    let mut s = format!("drover bench {scenario}");
    for (k, v) in params {
        s.push_str(&format!(" --{k} {v}"));
    }
    s
}

/// A plain text table: a title, column headers, and right-aligned numbers.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Table {
    pub title: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: impl Into<String>, headers: &[&str]) -> Table {
        Table {
            title: title.into(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: vec![],
        }
    }

    pub fn row<S: ToString>(&mut self, cells: impl IntoIterator<Item = S>) -> &mut Table {
        self.rows
            .push(cells.into_iter().map(|c| c.to_string()).collect());
        self
    }

    /// A two-column figure/value table.
    pub fn figures(title: impl Into<String>, rows: &[(&str, String)]) -> Table {
        let mut t = Table::new(title, &["figure", "value"]);
        for (k, v) in rows {
            t.row([k.to_string(), v.clone()]);
        }
        t
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cols = self
            .headers
            .len()
            .max(self.rows.iter().map(Vec::len).max().unwrap_or(0));
        let mut width = vec![0usize; cols];
        for r in std::iter::once(&self.headers).chain(&self.rows) {
            for (i, c) in r.iter().enumerate() {
                width[i] = width[i].max(c.chars().count());
            }
        }
        if !self.title.is_empty() {
            writeln!(f, "{}", self.title)?;
        }
        let line = |f: &mut fmt::Formatter<'_>, r: &[String]| -> fmt::Result {
            let cells: Vec<String> = (0..cols)
                .map(|i| {
                    let c = r.get(i).map(String::as_str).unwrap_or("");
                    // Text left, figures right.
                    let figure = c
                        .replace(',', "")
                        .trim_end_matches('%')
                        .parse::<f64>()
                        .is_ok();
                    if i == 0 || !figure {
                        format!("{c:<w$}", w = width[i])
                    } else {
                        format!("{c:>w$}", w = width[i])
                    }
                })
                .collect();
            writeln!(f, "  {}", cells.join("  ").trim_end())
        };
        line(f, &self.headers)?;
        let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
        writeln!(f, "  {}", rule.join("  "))?;
        for r in &self.rows {
            line(f, r)?;
        }
        Ok(())
    }
}

/// Formats a number with thousands separators and `digits` decimals.
pub fn num(v: f64, digits: usize) -> String {
    let s = format!("{:.*}", digits, v.abs());
    let (int, frac) = s
        .split_once('.')
        .map_or((s.as_str(), None), |(a, b)| (a, Some(b)));
    let mut out = String::new();
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if let Some(frac) = frac {
        out.push('.');
        out.push_str(frac);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let mut t = Table::new("t", &["name", "value"]);
        t.row(["a", "1"]).row(["bbb", "22.5"]);
        let s = t.to_string();
        assert!(s.contains("  a         1\n"), "{s}");
        assert!(s.contains("  bbb    22.5\n"), "{s}");
        assert_eq!(num(1234567.891, 1), "1,234,567.9");
        assert_eq!(num(12.0, 0), "12");
    }
}
