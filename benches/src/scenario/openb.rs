//! `drover bench openb`: the table and allocation curves of the openb replay (the replay
//! itself is [`crate::openb`]).

use crate::openb::OpenbReport;
use crate::plot::Chart;
use crate::report::{Report, Table, num};

impl Report for OpenbReport {
    fn tables(&self) -> Vec<Table> {
        let mut t = Table::new(
            format!(
                "openb: {} nodes, {} GPUs, {} pod types, demand {:.0}%, {} seeds",
                self.nodes,
                self.gpus,
                self.pod_types,
                self.demand * 100.0,
                self.seeds.len()
            ),
            &[
                "policy",
                "alloc @100% mean",
                "alloc @demand mean",
                "min",
                "max",
                "placement p50 µs",
                "p99 µs",
                "max µs",
            ],
        );
        let mut rows: Vec<_> = self.policies.iter().collect();
        rows.sort_by(|a, b| {
            a.allocation_at_demand
                .mean
                .total_cmp(&b.allocation_at_demand.mean)
        });
        for p in rows {
            let pct = |v: f64| format!("{:.2}%", v * 100.0);
            t.row([
                p.name.clone(),
                pct(p.allocation_at_full.mean),
                pct(p.allocation_at_demand.mean),
                pct(p.allocation_at_demand.min),
                pct(p.allocation_at_demand.max),
                num(p.placement.p50_us, 1),
                num(p.placement.p99_us, 1),
                num(p.placement.max_us, 1),
            ]);
        }
        vec![t]
    }

    fn charts(&self) -> Vec<Chart> {
        let mut c = Chart::new(
            "GPU allocation as demand arrives (mean of seeds)",
            "arrived GPU demand (fraction of capacity)",
            "GPUs allocated (fraction)",
        );
        for p in &self.policies {
            c = c.line(
                &p.name,
                p.curve
                    .iter()
                    .map(|pt| (pt.demand, pt.allocation))
                    .collect(),
            );
        }
        vec![c]
    }
}
