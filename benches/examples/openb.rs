//! The openb packing replay, printed as a table (and the full report as JSON with `--json`).
//!
//! `cargo run --release -p drover-benches --example openb -- [--seeds N] [--first-seed S]
//!  [--demand 1.3] [--policies drover,random,...] [--threads N] [--nodes-csv F] [--pods-csv F]
//!  [--json F]` (`--first-seed S` shifts the seeds to S, S + 1, ...)

use std::io::Write;

use anyhow::{Context, bail};
use drover_benches::openb::{self, OpenbOptions, Policy};

fn main() -> anyhow::Result<()> {
    let mut opts = OpenbOptions::default();
    let mut json = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seeds" => opts.seeds = (0..value()?.parse::<u64>()?).collect(),
            "--first-seed" => {
                let first = value()?.parse::<u64>()?;
                opts.seeds = opts.seeds.iter().map(|s| s + first).collect();
            }
            "--demand" => opts.demand = value()?.parse()?,
            "--threads" => opts.threads = value()?.parse()?,
            "--nodes-csv" => opts.nodes_csv = value()?.into(),
            "--pods-csv" => opts.pods_csv = value()?.into(),
            "--json" => json = Some(value()?),
            "--policies" => {
                opts.policies = value()?
                    .split(',')
                    .map(str::parse::<Policy>)
                    .collect::<Result<_, _>>()?
            }
            other => bail!("unknown flag {other}"),
        }
    }
    let progress = |done: usize, total: usize| {
        eprint!("\r{done}/{total} replays");
        let _ = std::io::stderr().flush();
    };
    let report = openb::run(&opts, &progress)?;
    eprintln!();
    print!("{}", report.table());
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
