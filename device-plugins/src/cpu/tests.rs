use std::fs;
use std::path::Path;

use super::sysfs::{self, SysCpu};
use super::*;

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().expect("fixture path has a parent")).expect("mkdir fixture");
    fs::write(path, text).expect("write fixture");
}

/// Two sockets of two cores with two threads each, Linux numbering (threads 0-3 first, their
/// siblings 4-7), one NUMA node per socket, and an offline ninth CPU.
fn two_socket_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "devices/system/cpu/online", "0-7\n");
    for cpu in 0..8u32 {
        let first = cpu % 4;
        let package = first / 2;
        let core = first % 2;
        let base = format!("devices/system/cpu/cpu{cpu}/topology");
        write(
            root,
            &format!("{base}/physical_package_id"),
            &format!("{package}\n"),
        );
        write(root, &format!("{base}/core_id"), &format!("{core}\n"));
        write(
            root,
            &format!("{base}/thread_siblings_list"),
            &format!("{first},{}\n", first + 4),
        );
    }
    write(
        root,
        "devices/system/cpu/cpu8/topology/physical_package_id",
        "0\n",
    );
    write(root, "devices/system/cpu/cpufreq/ignored", "");
    for (node, cpus, kib) in [(0, "0-1,4-5\n", 4194304u64), (1, "2-3,6-7\n", 2097152)] {
        write(
            root,
            &format!("devices/system/node/node{node}/cpulist"),
            cpus,
        );
        write(
            root,
            &format!("devices/system/node/node{node}/meminfo"),
            &format!("Node {node} MemTotal:       {kib} kB\nNode {node} MemFree:  1 kB\n"),
        );
    }
    write(root, "devices/system/node/online", "0-1\n");
    dir
}

#[test]
fn reads_cpus_and_skips_offline_ones() {
    let fixture = two_socket_fixture();
    let cpus = sysfs::read_cpus(&fixture.path().join("devices/system/cpu")).expect("read cpus");
    assert_eq!(cpus.len(), 8);
    assert_eq!(
        cpus[5],
        SysCpu {
            id: 5,
            package: 0,
            core: 1,
            siblings: vec![1, 5]
        }
    );
    let topology = sysfs::topology(&cpus);
    assert_eq!(
        (topology.sockets, topology.cores, topology.threads),
        (2, 4, 8)
    );
    assert_eq!(topology.threads_per_core(), 2);
    assert_eq!(topology.core_siblings, vec!["0,4", "1,5", "2,6", "3,7"]);
}

#[test]
fn reads_numa_nodes() {
    let fixture = two_socket_fixture();
    let nodes =
        sysfs::read_numa_nodes(&fixture.path().join("devices/system/node")).expect("read nodes");
    assert_eq!(
        nodes,
        vec![
            NumaNode {
                id: 0,
                cpus: "0-1,4-5".into(),
                memory_mib: 4096
            },
            NumaNode {
                id: 1,
                cpus: "2-3,6-7".into(),
                memory_mib: 2048
            },
        ]
    );
}

#[test]
fn meminfo_parser() {
    let cases: &[(&str, Option<u64>)] = &[
        ("Node 0 MemTotal:       32772340 kB\n", Some(32004)),
        ("Node 0 MemFree: 5 kB\n", None),
        ("Node 0 MemTotal: lots kB\n", None),
        ("Node 0 MemTotal: 1024 MB\n", None),
    ];
    for (text, want) in cases {
        assert_eq!(sysfs::parse_node_meminfo(text).ok(), *want, "{text:?}");
    }
}

#[test]
fn malformed_sysfs_names_the_file() {
    let fixture = two_socket_fixture();
    write(
        fixture.path(),
        "devices/system/cpu/cpu3/topology/core_id",
        "three\n",
    );
    let err = sysfs::read_cpus(&fixture.path().join("devices/system/cpu"))
        .expect_err("core_id is not a number");
    let message = err.to_string();
    assert!(message.contains("cpu3/topology/core_id"), "{message}");
}

#[test]
fn discovery_from_fixture() {
    let fixture = two_socket_fixture();
    let plugin = CpuPlugin::with_sys_root(fixture.path());
    let found = plugin.discover().expect("discover");
    assert_eq!(found.resources[RESOURCE_CPU], 8000);
    assert_eq!(found.resources[RESOURCE_MEMORY], 6144 * 1024 * 1024);
    assert_eq!(found.labels[crate::LABEL_NUMA_NODES], "2");
    assert_eq!(found.labels[crate::LABEL_CPU_SOCKETS], "2");
    assert_eq!(found.labels[crate::LABEL_CPU_THREADS_PER_CORE], "2");
    assert!(found.inventory.devices.is_empty());
    assert_eq!(found.capacity()[RESOURCE_CPU], "8");
    assert!(plugin.allocate(&[]).is_ok());
    let err = plugin
        .allocate(&["GPU-0".to_string()])
        .expect_err("cpu offers no devices");
    assert!(err.to_string().contains("GPU-0"), "{err}");
}

#[test]
fn discovery_without_sysfs_falls_back_to_sysinfo() {
    let empty = tempfile::tempdir().expect("tempdir");
    let found = CpuPlugin::with_sys_root(empty.path())
        .discover()
        .expect("discover");
    assert!(found.resources[RESOURCE_CPU] >= 1000);
    assert!(found.resources[RESOURCE_MEMORY] > 0);
    assert_eq!(found.inventory.numa_nodes.len(), 1);
}

#[test]
fn discovery_on_this_machine() {
    let found = CpuPlugin::new().discover().expect("discover this machine");
    let cpu = found.cpu.expect("cpu topology");
    assert!(
        cpu.threads >= 1 && cpu.cores >= 1 && cpu.sockets >= 1,
        "{cpu:?}"
    );
    assert!(!found.inventory.numa_nodes.is_empty());
}
