//! Loading the openb CSV files: the node list (`sn, cpu_milli, memory_mib, gpu, model`) and the
//! pod list (`name, cpu_milli, memory_mib, num_gpu, gpu_milli[, gpu_spec], ...`). Columns are
//! found by their header name, so extra columns and any order are fine; `gpu_spec` is optional
//! (FGD's multi-GPU traces have none: any model will do); every error names the file, the line
//! and the column.

use std::path::Path;

use super::OpenbError;

/// One GPU thousandth-count: a whole GPU.
pub const FULL_GPU_MILLI: u32 = 1000;

/// One node of the node list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRow {
    pub name: String,
    pub cpu_milli: i64,
    pub memory_mib: i64,
    pub gpus: u32,
    /// GPU model (`G2`, `T4`, `V100M16`, ...); empty for cpu-only nodes.
    pub model: String,
}

/// What a pod asks of GPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuAsk {
    None,
    /// This many whole GPUs.
    Whole(u32),
    /// A share of one GPU, in thousandths (1..1000).
    Share(u32),
}

impl GpuAsk {
    /// GPU thousandths asked for.
    pub fn milli(self) -> u64 {
        match self {
            GpuAsk::None => 0,
            GpuAsk::Whole(n) => u64::from(n) * u64::from(FULL_GPU_MILLI),
            GpuAsk::Share(m) => u64::from(m),
        }
    }
}

/// One pod of the pod list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRow {
    pub name: String,
    pub cpu_milli: i64,
    pub memory_mib: i64,
    pub gpu: GpuAsk,
    /// GPU models the pod may run on (empty: any).
    pub gpu_spec: Vec<String>,
}

/// A parsed CSV: its header and its data lines (with their 1-based line numbers).
struct Table<'a> {
    file: &'a Path,
    header: Vec<&'a str>,
    rows: Vec<(usize, Vec<&'a str>)>,
}

impl<'a> Table<'a> {
    fn parse(file: &'a Path, text: &'a str) -> Result<Table<'a>, OpenbError> {
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((_, header)) = lines.next() else {
            return Err(OpenbError::Empty { file: file.into() });
        };
        let header: Vec<&str> = header.split(',').map(str::trim).collect();
        let rows: Vec<(usize, Vec<&str>)> = lines
            .map(|(n, l)| (n, l.split(',').map(str::trim).collect()))
            .collect();
        if rows.is_empty() {
            return Err(OpenbError::Empty { file: file.into() });
        }
        Ok(Table { file, header, rows })
    }

    fn column(&self, name: &str) -> Result<usize, OpenbError> {
        self.optional_column(name)
            .ok_or_else(|| OpenbError::MissingColumn {
                file: self.file.into(),
                column: name.into(),
            })
    }

    fn optional_column(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| *h == name)
    }

    fn bad(&self, line: usize, column: &str, message: String) -> OpenbError {
        OpenbError::Parse {
            file: self.file.into(),
            line,
            column: column.into(),
            message,
        }
    }

    fn field<'r>(
        &self,
        line: usize,
        row: &'r [&'a str],
        col: usize,
    ) -> Result<&'a str, OpenbError> {
        row.get(col).copied().ok_or_else(|| {
            self.bad(
                line,
                self.header[col],
                format!("missing (the line has {} fields)", row.len()),
            )
        })
    }

    fn number(&self, line: usize, row: &[&'a str], col: usize) -> Result<i64, OpenbError> {
        let v = self.field(line, row, col)?;
        let n: i64 = v
            .parse()
            .map_err(|_| self.bad(line, self.header[col], format!("not a number: {v:?}")))?;
        if n < 0 {
            return Err(self.bad(line, self.header[col], format!("negative: {n}")));
        }
        Ok(n)
    }
}

fn read(file: &Path) -> Result<String, OpenbError> {
    std::fs::read_to_string(file).map_err(|source| OpenbError::Read {
        file: file.into(),
        source,
    })
}

/// Reads a node list.
pub fn load_nodes(file: &Path) -> Result<Vec<NodeRow>, OpenbError> {
    let text = read(file)?;
    parse_nodes(file, &text)
}

/// Parses a node list (`file` names it in errors).
pub fn parse_nodes(file: &Path, text: &str) -> Result<Vec<NodeRow>, OpenbError> {
    let t = Table::parse(file, text)?;
    let [sn, cpu, mem, gpu, model] =
        ["sn", "cpu_milli", "memory_mib", "gpu", "model"].map(|c| t.column(c));
    let (sn, cpu, mem, gpu, model) = (sn?, cpu?, mem?, gpu?, model?);
    let mut out = Vec::with_capacity(t.rows.len());
    for (line, row) in &t.rows {
        let gpus = t.number(*line, row, gpu)?;
        if gpus > 64 {
            return Err(t.bad(*line, "gpu", format!("{gpus} GPUs: at most 64 per node")));
        }
        let name = t.field(*line, row, sn)?;
        if name.is_empty() {
            return Err(t.bad(*line, "sn", "empty".into()));
        }
        out.push(NodeRow {
            name: name.into(),
            cpu_milli: t.number(*line, row, cpu)?,
            memory_mib: t.number(*line, row, mem)?,
            gpus: gpus as u32,
            // Trailing empty fields may be cut off.
            model: row.get(model).copied().unwrap_or_default().into(),
        });
    }
    Ok(out)
}

/// Reads a pod list.
pub fn load_pods(file: &Path) -> Result<Vec<PodRow>, OpenbError> {
    let text = read(file)?;
    parse_pods(file, &text)
}

/// Parses a pod list (`file` names it in errors). `num_gpu = 1` with `gpu_milli < 1000` is a
/// share of one GPU; otherwise `num_gpu` whole GPUs.
pub fn parse_pods(file: &Path, text: &str) -> Result<Vec<PodRow>, OpenbError> {
    let t = Table::parse(file, text)?;
    let [name, cpu, mem, num, milli] =
        ["name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli"].map(|c| t.column(c));
    let (name, cpu, mem, num, milli) = (name?, cpu?, mem?, num?, milli?);
    let spec = t.optional_column("gpu_spec");
    let mut out = Vec::with_capacity(t.rows.len());
    for (line, row) in &t.rows {
        let n = t.number(*line, row, num)?;
        let m = t.number(*line, row, milli)?;
        if m > i64::from(FULL_GPU_MILLI) {
            return Err(t.bad(
                *line,
                "gpu_milli",
                format!("{m} is more than one GPU (1000)"),
            ));
        }
        if n > 64 {
            return Err(t.bad(*line, "num_gpu", format!("{n} GPUs: at most 64 per pod")));
        }
        let gpu = match (n, m) {
            (0, _) => GpuAsk::None,
            (1, m) if m > 0 && m < i64::from(FULL_GPU_MILLI) => GpuAsk::Share(m as u32),
            (n, _) => GpuAsk::Whole(n as u32),
        };
        let gpu_spec = spec
            .and_then(|spec| row.get(spec))
            .copied()
            .unwrap_or_default()
            .split('|')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        out.push(PodRow {
            name: t.field(*line, row, name)?.into(),
            cpu_milli: t.number(*line, row, cpu)?,
            memory_mib: t.number(*line, row, mem)?,
            gpu,
            gpu_spec,
        });
    }
    Ok(out)
}
