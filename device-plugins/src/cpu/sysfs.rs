//! Parsers for the CPU and NUMA topology under `/sys/devices/system`. Each takes the directory
//! to read, so tests point them at fixture trees.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use drover_api::device::{CpuTopology, NumaNode};

use crate::{DeviceError, cpulist};

/// One logical CPU as sysfs describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysCpu {
    pub id: u32,
    /// `physical_package_id`: the socket (-1 on some virtual machines).
    pub package: i64,
    pub core: i64,
    /// `thread_siblings_list`: the logical CPUs sharing this one's core, itself included.
    pub siblings: Vec<u32>,
}

fn read(path: &Path) -> Result<String, DeviceError> {
    fs::read_to_string(path).map_err(|source| DeviceError::ReadSysfs {
        path: path.to_path_buf(),
        source,
    })
}

fn bad(path: &Path, reason: impl Into<String>) -> DeviceError {
    DeviceError::ParseSysfs {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Entries `<prefix><number>` of a directory, sorted by number.
fn numbered_entries(dir: &Path, prefix: &str) -> Result<Vec<(u32, PathBuf)>, DeviceError> {
    let entries = fs::read_dir(dir).map_err(|source| DeviceError::ReadSysfs {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| DeviceError::ReadSysfs {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        found.push((number, entry.path()));
    }
    found.sort();
    Ok(found)
}

/// `MemTotal` of a node's `meminfo` (`Node 0 MemTotal:  32772340 kB`), in MiB.
pub fn parse_node_meminfo(text: &str) -> Result<u64, String> {
    let line = text
        .lines()
        .find(|l| l.contains("MemTotal:"))
        .ok_or("no MemTotal line")?;
    let mut words = line.split_whitespace().rev();
    let unit = words.next();
    let value = words.next().and_then(|v| v.parse::<u64>().ok());
    match (value, unit) {
        (Some(kib), Some("kB")) => Ok(kib / 1024),
        _ => Err(format!("cannot read MemTotal from {line:?}")),
    }
}

/// NUMA nodes under `dir` (normally `/sys/devices/system/node`): `nodeN/cpulist` and
/// `nodeN/meminfo`.
pub fn read_numa_nodes(dir: &Path) -> Result<Vec<NumaNode>, DeviceError> {
    let mut nodes = Vec::new();
    for (id, path) in numbered_entries(dir, "node")? {
        let cpulist_path = path.join("cpulist");
        let cpus = cpulist::parse(&read(&cpulist_path)?).map_err(|r| bad(&cpulist_path, r))?;
        let meminfo_path = path.join("meminfo");
        let memory_mib = match fs::read_to_string(&meminfo_path) {
            Ok(text) => parse_node_meminfo(&text).map_err(|r| bad(&meminfo_path, r))?,
            Err(_) => 0,
        };
        nodes.push(NumaNode {
            id,
            cpus: cpulist::format(&cpus),
            memory_mib,
        });
    }
    Ok(nodes)
}

/// Online logical CPUs under `dir` (normally `/sys/devices/system/cpu`) with their package,
/// core and hyperthread siblings.
pub fn read_cpus(dir: &Path) -> Result<Vec<SysCpu>, DeviceError> {
    let online_path = dir.join("online");
    let online: Option<BTreeSet<u32>> = match fs::read_to_string(&online_path) {
        Ok(text) => Some(
            cpulist::parse(&text)
                .map_err(|r| bad(&online_path, r))?
                .into_iter()
                .collect(),
        ),
        Err(_) => None,
    };
    let mut cpus = Vec::new();
    for (id, path) in numbered_entries(dir, "cpu")? {
        if online.as_ref().is_some_and(|o| !o.contains(&id)) {
            continue;
        }
        let topology = path.join("topology");
        let number = |file: &str| -> Result<i64, DeviceError> {
            let p = topology.join(file);
            let text = read(&p)?;
            text.trim()
                .parse::<i64>()
                .map_err(|_| bad(&p, format!("{:?} is not a number", text.trim())))
        };
        let siblings_path = topology.join("thread_siblings_list");
        let siblings =
            cpulist::parse(&read(&siblings_path)?).map_err(|r| bad(&siblings_path, r))?;
        cpus.push(SysCpu {
            id,
            package: number("physical_package_id")?,
            core: number("core_id")?,
            siblings,
        });
    }
    if cpus.is_empty() {
        return Err(bad(dir, "no cpuN directories"));
    }
    Ok(cpus)
}

/// Sockets, cores and hyperthread sibling groups of a set of CPUs.
pub fn topology(cpus: &[SysCpu]) -> CpuTopology {
    let sockets: BTreeSet<i64> = cpus.iter().map(|c| c.package).collect();
    let cores: BTreeSet<(i64, i64)> = cpus.iter().map(|c| (c.package, c.core)).collect();
    let groups: BTreeSet<Vec<u32>> = cpus.iter().map(|c| c.siblings.clone()).collect();
    CpuTopology {
        sockets: sockets.len() as u32,
        cores: cores.len() as u32,
        threads: cpus.len() as u32,
        core_siblings: groups.iter().map(|g| cpulist::format(g)).collect(),
    }
}
