//! CPU and memory of this process, from `/proc/self/stat` and `/proc/self/status` (Linux; zeros
//! elsewhere). The control plane runs in this process, so these are its figures.

use std::time::Instant;

use serde::Serialize;

/// Clock ticks per second of `/proc/self/stat` times (USER_HZ, 100 on every Linux we run on).
const USER_HZ: f64 = 100.0;

/// One reading.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub at: Instant,
    pub cpu_seconds: f64,
    pub rss_mib: f64,
}

/// CPU use between two samples and memory at the end.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct Usage {
    pub cpu_seconds: f64,
    /// CPU seconds per wall second (2.0 = both cores of a 2-core machine busy).
    pub cpu_cores: f64,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
}

impl Usage {
    /// The report rows every scenario shows for the process.
    pub fn rows(&self) -> [(&'static str, String); 2] {
        use crate::report::num;
        [
            ("CPU (cores busy)", num(self.cpu_cores, 2)),
            (
                "RSS MiB (end / peak)",
                format!("{} / {}", num(self.rss_mib, 0), num(self.peak_rss_mib, 0)),
            ),
        ]
    }
}

pub fn sample() -> Sample {
    Sample {
        at: Instant::now(),
        cpu_seconds: cpu_seconds().unwrap_or(0.0),
        rss_mib: status_kib("VmRSS:").unwrap_or(0) as f64 / 1024.0,
    }
}

pub fn usage_since(start: &Sample) -> Usage {
    let end = sample();
    let wall = end.at.duration_since(start.at).as_secs_f64().max(1e-9);
    let cpu = (end.cpu_seconds - start.cpu_seconds).max(0.0);
    Usage {
        cpu_seconds: cpu,
        cpu_cores: cpu / wall,
        rss_mib: end.rss_mib,
        peak_rss_mib: status_kib("VmHWM:").unwrap_or(0) as f64 / 1024.0,
    }
}

fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces; fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

fn status_kib(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let s = super::sample();
        if cfg!(target_os = "linux") {
            assert!(s.rss_mib > 0.0);
        }
        let u = super::usage_since(&s);
        assert!(u.cpu_seconds >= 0.0);
    }
}
