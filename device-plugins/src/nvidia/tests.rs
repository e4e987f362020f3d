//! Runs on whatever this machine has: real checks where NVML loads, a clear skip otherwise.

use super::*;

#[test]
fn discovery_on_this_machine() {
    let plugin = match NvidiaPlugin::new() {
        Ok(plugin) => plugin,
        Err(err @ DeviceError::NoNvidiaGpus { .. }) => {
            println!("skipped: no NVIDIA library or GPU ({err})");
            return;
        }
        Err(err) => panic!("nvml loaded but discovery failed: {err}"),
    };
    println!("nvidia driver {:?}", plugin.driver_version());
    let found = plugin.discover().expect("discover");
    let gpus: Vec<_> = found
        .inventory
        .devices
        .iter()
        .filter(|d| d.resource == RESOURCE_NVIDIA_GPU)
        .collect();
    assert!(!gpus.is_empty());
    for (i, gpu) in gpus.iter().enumerate() {
        println!("{gpu:?}");
        assert_eq!(gpu.index, i as u32);
        assert!(gpu.id.starts_with("GPU-"), "{}", gpu.id);
        assert!(!gpu.model.is_empty() && gpu.memory_mib > 0, "{gpu:?}");
        assert!(gpu.pci_bus_id.is_some(), "{gpu:?}");
    }
    let n = gpus.len();
    assert_eq!(
        found.inventory.links.len(),
        n * (n - 1) / 2,
        "one link per pair"
    );
    for link in &found.inventory.links {
        println!("{} {} {:?} x{}", link.a, link.b, link.kind, link.lanes);
    }
    println!("labels {:?}", found.labels);
    assert!(found.labels.contains_key("nvidia.com/gpu.product"));

    let first = gpus[0].id.clone();
    if gpus[0].is_healthy()
        && gpus[0].attributes.get("mig.mode").map(String::as_str) != Some("enabled")
    {
        let allocation = plugin
            .allocate(std::slice::from_ref(&first))
            .expect("allocate");
        assert_eq!(allocation.env["CUDA_VISIBLE_DEVICES"], "0");
        assert_eq!(allocation.env["NVIDIA_VISIBLE_DEVICES"], first);
        assert!(
            allocation
                .device_files
                .contains(&PathBuf::from("/dev/nvidiactl"))
        );
        println!("allocation {allocation:?}");
    }
    let err = plugin
        .allocate(&["GPU-not-here".to_string()])
        .expect_err("unknown id");
    assert!(err.to_string().contains("GPU-not-here"));
}

#[test]
fn missing_library_is_reported_as_no_gpus() {
    if let Err(err) = NvidiaPlugin::new() {
        let message = err.to_string();
        assert!(message.starts_with("no NVIDIA GPUs: "), "{message}");
    }
}
