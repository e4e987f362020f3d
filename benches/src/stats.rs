//! Latency summaries and counts over time.

use std::time::Duration;

use serde::Serialize;

/// Percentiles of a set of durations, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Latency {
    pub count: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The value at quantile `q` (0..=1) of sorted `v`, by the nearest-rank method.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Latency {
    pub fn from_durations(d: &[Duration]) -> Latency {
        Latency::from_ms(d.iter().map(|d| d.as_secs_f64() * 1000.0).collect())
    }

    pub fn from_ms(mut v: Vec<f64>) -> Latency {
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return Latency::default();
        }
        Latency {
            count: v.len(),
            mean_ms: v.iter().sum::<f64>() / v.len() as f64,
            p50_ms: quantile(&v, 0.50),
            p90_ms: quantile(&v, 0.90),
            p99_ms: quantile(&v, 0.99),
            max_ms: v[v.len() - 1],
        }
    }

    /// Whether p50 ≤ p90 ≤ p99 ≤ max (a report self-check).
    pub fn is_ordered(&self) -> bool {
        self.p50_ms <= self.p90_ms && self.p90_ms <= self.p99_ms && self.p99_ms <= self.max_ms
    }
}

/// The empirical CDF of durations (ms), thinned to at most `points` points.
pub fn cdf(durations: &[Duration], points: usize) -> Vec<(f64, f64)> {
    cdf_values(
        durations.iter().map(|d| d.as_secs_f64() * 1000.0).collect(),
        points,
    )
}

/// The empirical CDF of values, thinned to at most `points` points.
pub fn cdf_values(mut v: Vec<f64>, points: usize) -> Vec<(f64, f64)> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return vec![];
    }
    let step = n.div_ceil(points.max(1)).max(1);
    let mut out: Vec<(f64, f64)> = (0..n)
        .step_by(step)
        .map(|i| (v[i], (i + 1) as f64 / n as f64))
        .collect();
    out.push((v[n - 1], 1.0));
    out
}

/// Events per second in buckets of `bucket` after `0`, given offsets of each event.
pub fn rate_over_time(offsets: &[Duration], bucket: Duration) -> Vec<(f64, f64)> {
    let Some(last) = offsets.iter().max() else {
        return vec![];
    };
    let b = bucket.as_secs_f64().max(1e-3);
    let n = (last.as_secs_f64() / b) as usize + 1;
    let mut counts = vec![0u64; n];
    for o in offsets {
        counts[((o.as_secs_f64() / b) as usize).min(n - 1)] += 1;
    }
    counts
        .iter()
        .enumerate()
        .map(|(i, c)| ((i as f64 + 1.0) * b, *c as f64 / b))
        .collect()
}

/// A bucket width that gives about 50–100 buckets over `span`.
pub fn bucket_for(span: Duration) -> Duration {
    let s = span.as_secs_f64();
    let w = if s > 100.0 {
        1.0
    } else if s > 10.0 {
        0.2
    } else {
        0.1
    };
    Duration::from_secs_f64(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let l = Latency::from_ms((1..=100).map(f64::from).collect());
        assert_eq!(
            (l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms),
            (50.0, 90.0, 99.0, 100.0)
        );
        assert!(l.is_ordered());
        assert_eq!(Latency::from_ms(vec![]).count, 0);
    }

    #[test]
    fn rates_count_every_event() {
        let offs: Vec<Duration> = (0..30).map(|i| Duration::from_millis(i * 100)).collect();
        let r = rate_over_time(&offs, Duration::from_secs(1));
        let total: f64 = r.iter().map(|(_, v)| v).sum();
        assert_eq!(total, 30.0);
    }
}

/// Percentiles of unit-free values (the unit is in the field that holds it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Summary {
    pub count: usize,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(v: Vec<f64>) -> Summary {
        let l = Latency::from_ms(v);
        Summary {
            count: l.count,
            mean: l.mean_ms,
            p50: l.p50_ms,
            p90: l.p90_ms,
            p99: l.p99_ms,
            max: l.max_ms,
        }
    }
}
