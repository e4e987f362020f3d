use std::io::Write;

use drover_api::device::{DeviceHealth, LinkKind};

use super::*;
use crate::nvidia::RESOURCE_NVIDIA_GPU;
use crate::{LABEL_GPU_INTERCONNECT, LABEL_NUMA_NODES};

fn node(profile: &str) -> SimulatedPlugin {
    SimulatedPlugin::from_profile_name(profile, "n1").expect("built-in profile loads")
}

fn ids(plugin: &SimulatedPlugin, indices: &[u32]) -> Vec<String> {
    indices.iter().map(|&i| plugin.device_id(i)).collect()
}

struct ProfileCase {
    name: &'static str,
    gpus: u64,
    cpu_millis: u64,
    memory_gib: u64,
    numa_nodes: usize,
    product: Option<&'static str>,
    gpu_memory: Option<&'static str>,
    interconnect: Option<&'static str>,
}

#[test]
fn builtin_profiles() {
    let cases = [
        ProfileCase {
            name: "h100-8",
            gpus: 8,
            cpu_millis: 192_000,
            memory_gib: 2048,
            numa_nodes: 2,
            product: Some("NVIDIA-H100-80GB-HBM3"),
            gpu_memory: Some("81559"),
            interconnect: Some("nvswitch"),
        },
        ProfileCase {
            name: "a100-8",
            gpus: 8,
            cpu_millis: 256_000,
            memory_gib: 2048,
            numa_nodes: 2,
            product: Some("NVIDIA-A100-SXM4-80GB"),
            gpu_memory: Some("81920"),
            interconnect: Some("nvlink"),
        },
        ProfileCase {
            name: "l4-4",
            gpus: 4,
            cpu_millis: 48_000,
            memory_gib: 192,
            numa_nodes: 1,
            product: Some("NVIDIA-L4"),
            gpu_memory: Some("23034"),
            interconnect: Some("pcie"),
        },
        ProfileCase {
            name: "cpu",
            gpus: 0,
            cpu_millis: 32_000,
            memory_gib: 128,
            numa_nodes: 1,
            product: None,
            gpu_memory: None,
            interconnect: None,
        },
    ];
    assert_eq!(
        list_profiles(),
        cases.iter().map(|c| c.name).collect::<Vec<_>>()
    );
    for case in cases {
        let found = node(case.name).discover().expect("discover");
        let name = case.name;
        let gpu = RESOURCE_NVIDIA_GPU;
        assert_eq!(
            found.resources.get(gpu).copied().unwrap_or(0),
            case.gpus,
            "{name}"
        );
        assert_eq!(found.resources[RESOURCE_CPU], case.cpu_millis, "{name}");
        assert_eq!(
            found.resources[RESOURCE_MEMORY],
            case.memory_gib << 30,
            "{name}"
        );
        assert_eq!(found.inventory.numa_nodes.len(), case.numa_nodes, "{name}");
        assert_eq!(found.labels[LABEL_NUMA_NODES], case.numa_nodes.to_string());
        let label = |key: &str| found.labels.get(key).map(String::as_str);
        assert_eq!(label("nvidia.com/gpu.product"), case.product, "{name}");
        assert_eq!(label("nvidia.com/gpu.memory"), case.gpu_memory, "{name}");
        assert_eq!(label(LABEL_GPU_INTERCONNECT), case.interconnect, "{name}");
        let count = case.gpus.to_string();
        assert_eq!(
            label("nvidia.com/gpu.count"),
            (case.gpus > 0).then_some(count.as_str()),
            "{name}"
        );
        let n = case.gpus as usize;
        assert_eq!(found.inventory.devices.len(), n, "{name}");
        assert_eq!(
            found.inventory.links.len(),
            n * n.saturating_sub(1) / 2,
            "{name}"
        );
        assert!(found.inventory.devices.iter().all(|d| d.is_healthy()));
    }
}

#[test]
fn numa_layout_follows_linux_numbering() {
    let found = node("h100-8").discover().expect("discover");
    let numa = &found.inventory.numa_nodes;
    assert_eq!(numa[0].cpus, "0-47,96-143");
    assert_eq!(numa[1].cpus, "48-95,144-191");
    assert_eq!(numa[1].memory_mib, 1024 * 1024);
    let gpu5 = &found.inventory.devices[5];
    assert_eq!(gpu5.numa_node, Some(1));
    assert_eq!(gpu5.cpu_affinity.as_deref(), Some("48-95,144-191"));
    let cpu = found.cpu.expect("cpu topology");
    assert_eq!((cpu.sockets, cpu.cores, cpu.threads), (2, 96, 192));
}

#[test]
fn links_per_profile() {
    // (profile, a, b, kind, lanes)
    let cases = [
        ("h100-8", 0, 7, LinkKind::NVSwitch, 18),
        ("h100-8", 2, 3, LinkKind::NVSwitch, 18),
        ("a100-8", 0, 1, LinkKind::NVLink, 12),
        ("a100-8", 2, 3, LinkKind::NVLink, 12),
        ("a100-8", 4, 5, LinkKind::NVLink, 12),
        ("a100-8", 7, 6, LinkKind::NVLink, 12),
        ("a100-8", 1, 2, LinkKind::PCIeHostBridge, 0),
        ("a100-8", 0, 3, LinkKind::PCIeHostBridge, 0),
        ("a100-8", 5, 7, LinkKind::PCIeHostBridge, 0),
        ("a100-8", 3, 4, LinkKind::CrossSocket, 0),
        ("a100-8", 0, 7, LinkKind::CrossSocket, 0),
        ("l4-4", 0, 1, LinkKind::PCIeSwitch, 0),
        ("l4-4", 2, 3, LinkKind::PCIeSwitch, 0),
        ("l4-4", 1, 2, LinkKind::PCIeHostBridge, 0),
    ];
    for (profile, a, b, kind, lanes) in cases {
        let plugin = node(profile);
        let inventory = plugin.inventory();
        let link = inventory
            .link(&plugin.device_id(a), &plugin.device_id(b))
            .unwrap_or_else(|| panic!("{profile}: no link {a}-{b}"));
        assert_eq!((link.kind, link.lanes), (kind, lanes), "{profile} {a}-{b}");
    }
    let a100 = node("a100-8").inventory();
    let nvlink_pairs = a100
        .links
        .iter()
        .filter(|l| l.kind == LinkKind::NVLink)
        .count();
    assert_eq!(nvlink_pairs, 4);
}

#[test]
fn allocation_lists_devices_in_topology_order() {
    // (profile, requested indices, CUDA_VISIBLE_DEVICES)
    let cases: &[(&str, &[u32], &str)] = &[
        ("a100-8", &[2, 0, 3, 1], "0,1,2,3"),
        ("a100-8", &[5, 0, 4, 1], "0,1,4,5"),
        ("a100-8", &[6, 1, 7, 0], "0,1,6,7"),
        ("a100-8", &[3, 4, 2], "2,3,4"),
        ("l4-4", &[3, 0, 1], "0,1,3"),
        ("h100-8", &[7, 3], "3,7"),
        ("h100-8", &[], ""),
    ];
    for (profile, indices, want) in cases {
        let plugin = node(profile);
        let allocation = plugin.allocate(&ids(&plugin, indices)).expect("allocate");
        assert_eq!(
            allocation.env["CUDA_VISIBLE_DEVICES"], *want,
            "{profile} {indices:?}"
        );
        assert_eq!(allocation.env["CUDA_DEVICE_ORDER"], "PCI_BUS_ID");
        let visible = &allocation.env["NVIDIA_VISIBLE_DEVICES"];
        if indices.is_empty() {
            assert_eq!(visible, "void");
        } else {
            let want_ids: Vec<String> =
                want.split(',').map(|i| format!("GPU-sim-n1-{i}")).collect();
            assert_eq!(*visible, want_ids.join(","));
            assert_eq!(allocation.device_ids, want_ids);
        }
        assert!(allocation.device_files.is_empty());
    }
}

#[test]
fn allocation_refuses_unknown_repeated_and_unhealthy_devices() {
    let plugin = node("h100-8");
    let other = SimulatedPlugin::from_profile_name("h100-8", "n2").expect("profile");
    let cases: &[(&str, Vec<String>, &str)] = &[
        ("unknown index", vec!["GPU-sim-n1-8".into()], "GPU-sim-n1-8"),
        ("other node", vec![other.device_id(0)], "GPU-sim-n2-0"),
        ("garbage", vec!["nonsense".into()], "nonsense"),
        ("repeated", ids(&plugin, &[1, 1]), "more than once"),
    ];
    for (case, request, needle) in cases {
        let err = plugin.allocate(request).expect_err(case);
        assert!(err.to_string().contains(needle), "{case}: {err}");
    }
    plugin
        .fail_device(&plugin.device_id(2), "xid 79: fallen off the bus")
        .expect("fail");
    let err = plugin
        .allocate(&ids(&plugin, &[0, 2]))
        .expect_err("unhealthy device");
    let message = err.to_string();
    assert!(
        message.contains("GPU-sim-n1-2") && message.contains("xid 79"),
        "{message}"
    );
    assert!(matches!(err, DeviceError::UnhealthyDevice { .. }));
    let cpu_only = node("cpu");
    assert!(cpu_only.allocate(&[]).is_ok());
    assert!(cpu_only.allocate(&["GPU-sim-n1-0".into()]).is_err());
}

#[test]
fn fail_and_recover_emit_events() {
    let plugin = node("a100-8");
    let mut events = plugin.subscribe_health();
    let id = plugin.device_id(3);
    plugin.fail_device(&id, "test says so").expect("fail");
    plugin.fail_device(&id, "test says so").expect("fail again");
    let inventory = plugin.inventory();
    let device = inventory.device(&id).expect("device");
    assert_eq!(device.health, DeviceHealth::Unhealthy);
    assert_eq!(device.health_reason.as_deref(), Some("test says so"));
    let found = plugin.discover().expect("discover");
    assert_eq!(
        found.resources[RESOURCE_NVIDIA_GPU], 8,
        "capacity counts unhealthy devices"
    );

    plugin.recover_device(&id).expect("recover");
    assert!(
        plugin
            .inventory()
            .device(&id)
            .is_some_and(|d| d.is_healthy())
    );
    assert!(plugin.allocate(std::slice::from_ref(&id)).is_ok());

    let first = events.try_recv().expect("failure event");
    assert_eq!(
        first,
        HealthEvent {
            device_id: id.clone(),
            health: DeviceHealth::Unhealthy,
            reason: Some("test says so".into()),
        }
    );
    let second = events.try_recv().expect("recovery event");
    assert_eq!(
        (second.device_id.as_str(), second.health),
        (id.as_str(), DeviceHealth::Healthy)
    );
    assert!(
        events.try_recv().is_err(),
        "a repeated failure is announced once"
    );

    let err = plugin
        .fail_device("GPU-sim-n1-99", "x")
        .expect_err("unknown");
    assert!(err.to_string().contains("GPU-sim-n1-99"));
}

#[test]
fn nodes_have_distinct_ids_and_share_the_profile() {
    let profile = builtin_profile("h100-8").expect("profile");
    let a = SimulatedPlugin::new(Arc::clone(&profile), "node-a");
    let b = SimulatedPlugin::new(Arc::clone(&profile), "node-b");
    assert_eq!(a.device_id(0), "GPU-sim-node-a-0");
    assert!(a.device_ids().iter().all(|id| !b.device_ids().contains(id)));
    assert!(Arc::ptr_eq(
        a.profile(),
        &builtin_profile("h100-8").expect("profile")
    ));
    // A node whose name ends like another's index must not claim the other's devices.
    let tricky = SimulatedPlugin::new(profile, "node");
    assert!(tricky.fail_device("GPU-sim-node-a-0", "x").is_err());
}

#[test]
fn custom_profile_from_yaml_file() {
    let mut file = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("tempfile");
    write!(
        file,
        "name: two-gpus\ncpu: 16\nmemoryGiB: 64\ngpus:\n  count: 2\n  model: Test GPU\n  memoryMiB: 1024\n  resource: example.com/gpu\n  interconnect: pcie\n  links: [{{a: 0, b: 1, kind: NVLink, lanes: 4}}]\n"
    )
    .expect("write profile");
    let path = file.path().to_str().expect("utf-8 temp path").to_string();
    let plugin = SimulatedPlugin::from_profile_name(&path, "c").expect("custom profile");
    let found = plugin.discover().expect("discover");
    assert_eq!(found.resources["example.com/gpu"], 2);
    assert_eq!(found.labels["example.com/gpu.product"], "Test-GPU");
    assert_eq!(
        found.inventory.link_kind("GPU-sim-c-0", "GPU-sim-c-1"),
        Some(LinkKind::NVLink)
    );
    assert_eq!(found.inventory.numa_nodes[0].cpus, "0-15");
}

#[test]
fn bad_profiles_name_the_field() {
    // (case, yaml, text the error must contain)
    let cases = [
        (
            "wrong type",
            "name: x\ncpu: 8\nmemoryGiB: 8\ngpus:\n  count: eight\n  model: m\n  memoryMiB: 1\n  interconnect: pcie\n",
            "gpus.count",
        ),
        (
            "unknown field",
            "name: x\ncpu: 8\nmemoryGiB: 8\ngpuz: 1\n",
            "gpuz",
        ),
        ("missing field", "name: x\ncpu: 8\n", "memoryGiB"),
        (
            "bad interconnect",
            "name: x\ncpu: 8\nmemoryGiB: 8\ngpus:\n  count: 1\n  model: m\n  memoryMiB: 1\n  interconnect: carrier-pigeon\n",
            "gpus.interconnect",
        ),
        (
            "numa out of range",
            "name: x\ncpu: 8\nmemoryGiB: 8\ngpus:\n  count: 2\n  model: m\n  memoryMiB: 1\n  interconnect: pcie\n  numa: [0, 3]\n",
            "gpus.numa",
        ),
        (
            "cpus do not divide",
            "name: x\ncpu: 7\nmemoryGiB: 8\nthreadsPerCore: 2\n",
            "field cpu",
        ),
        (
            "link to a missing gpu",
            "name: x\ncpu: 8\nmemoryGiB: 8\ngpus:\n  count: 2\n  model: m\n  memoryMiB: 1\n  interconnect: pcie\n  links: [{a: 0, b: 2, kind: NVLink}]\n",
            "gpus.links",
        ),
    ];
    for (case, yaml, needle) in cases {
        let err = Profile::from_yaml("test.yaml", yaml).expect_err(case);
        let message = err.to_string();
        assert!(
            message.contains(needle) && message.contains("test.yaml"),
            "{case}: {message}"
        );
    }
}

#[test]
fn unknown_profiles_list_the_builtins() {
    let err = load_profile("h200-16").expect_err("no such profile");
    let message = err.to_string();
    assert!(
        message.contains("h200-16") && message.contains("h100-8, a100-8, l4-4, cpu"),
        "{message}"
    );
    let err = load_profile("/nonexistent/profile.yaml").expect_err("no such file");
    assert!(
        err.to_string().contains("/nonexistent/profile.yaml"),
        "{err}"
    );
}

/// An XID does what its class calls for: nothing, a fault a reset mends, or one it does not.
#[test]
fn xids_by_class_and_the_reset_that_mends_some() {
    use drover_api::device::DeviceRecovery;

    use crate::xid::XidClass;
    let plugin = node("h100-8");
    let (app, reset, drain) = (
        plugin.device_id(0),
        plugin.device_id(1),
        plugin.device_id(2),
    );
    assert_eq!(
        plugin.inject_xid(&app, 13).expect("xid"),
        XidClass::Application
    );
    assert_eq!(plugin.inject_xid(&reset, 48).expect("xid"), XidClass::Reset);
    assert_eq!(plugin.inject_xid(&drain, 79).expect("xid"), XidClass::Drain);
    let inventory = plugin.inventory();
    let get = |id: &str| inventory.device(id).expect("device").clone();
    assert!(get(&app).is_healthy());
    assert_eq!(get(&reset).recovery, Some(DeviceRecovery::Reset));
    assert!(
        get(&reset)
            .health_reason
            .is_some_and(|r| r.contains("XID 48"))
    );
    assert_eq!(get(&drain).recovery, Some(DeviceRecovery::Drain));

    plugin.reset(&reset).expect("a reset mends XID 48");
    let err = plugin.reset(&drain).expect_err("no reset mends XID 79");
    assert!(err.to_string().contains(&drain), "{err}");
    let inventory = plugin.inventory();
    assert!(inventory.device(&reset).expect("device").is_healthy());
    let d = inventory.device(&drain).expect("device");
    assert!(!d.is_healthy());
    assert!(
        plugin.inject_xid("GPU-sim-other-0", 48).is_err(),
        "unknown device"
    );
}
