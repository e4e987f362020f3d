use std::time::Duration;

use drover_api::device::DeviceHealth;

use super::*;
use crate::{RESOURCE_CPU, RESOURCE_NVIDIA_GPU};

#[test]
fn spec_forms() {
    // (spec, plugin names, or error text)
    let cases: &[(&str, Result<&str, &str>)] = &[
        ("none", Ok("cpu")),
        ("simulated:h100-8", Ok("simulated")),
        ("simulated: l4-4", Ok("simulated")),
        ("simulated:", Err("needs a profile")),
        ("simulated:h900-2", Err("unknown node profile \"h900-2\"")),
        (
            "simulated:/no/such/profile.yaml",
            Err("/no/such/profile.yaml"),
        ),
        ("gpus", Err("invalid device spec \"gpus\"")),
        ("", Err("accepted forms: auto")),
        ("amd:1", Err("simulated:PROFILE")),
    ];
    for (spec, want) in cases {
        let got = DeviceManager::from_spec_for_node(spec, "n");
        match (got, want) {
            (Ok(manager), Ok(names)) => assert_eq!(manager.plugin_names(), *names, "{spec}"),
            (Err(err), Err(needle)) => {
                assert!(err.to_string().contains(needle), "{spec}: {err}")
            }
            (Ok(manager), Err(needle)) => panic!("{spec}: got {manager:?}, want error {needle}"),
            (Err(err), Ok(_)) => panic!("{spec}: {err}"),
        }
    }
}

#[test]
fn auto_and_nvidia_without_a_gpu() {
    let auto = DeviceManager::from_spec("auto").expect("auto never fails for lack of GPUs");
    let names = auto.plugin_names();
    assert!(names == "cpu" || names == "cpu+nvidia", "{names}");
    match DeviceManager::from_spec("nvidia") {
        Ok(manager) => assert_eq!(manager.plugin_names(), "cpu+nvidia"),
        Err(err) => assert!(err.to_string().starts_with("no NVIDIA GPUs"), "{err}"),
    }
    let found = auto.discover().expect("discover");
    assert!(found.resources[RESOURCE_CPU] >= 1000);
}

#[test]
fn simulated_manager_discovers_and_allocates() {
    let manager = DeviceManager::from_spec_for_node("simulated:a100-8", "w7").expect("spec");
    let allocation = manager
        .allocate(&["GPU-sim-w7-5".to_string(), "GPU-sim-w7-4".to_string()])
        .expect("allocate before any discovery");
    assert_eq!(allocation.env["CUDA_VISIBLE_DEVICES"], "4,5");
    let found = manager.discover().expect("discover");
    assert_eq!(found.resources[RESOURCE_NVIDIA_GPU], 8);
    assert_eq!(found.capacity()["memory"], (2048u64 << 30).to_string());
    let err = manager
        .allocate(&["GPU-sim-w8-0".to_string()])
        .expect_err("another node's device");
    assert!(err.to_string().contains("GPU-sim-w8-0"), "{err}");
    let none = manager.allocate(&[]).expect("no devices");
    assert_eq!(none.env["NVIDIA_VISIBLE_DEVICES"], "void");
}

#[test]
fn merging_two_simulated_nodes_adds_resources() {
    let a = Arc::new(SimulatedPlugin::from_profile_name("l4-4", "a").expect("profile"));
    let b = Arc::new(SimulatedPlugin::from_profile_name("l4-4", "b").expect("profile"));
    let manager = DeviceManager::new(vec![a, b]);
    let found = manager.discover().expect("discover");
    assert_eq!(found.resources[RESOURCE_NVIDIA_GPU], 8);
    assert_eq!(found.inventory.devices.len(), 8);
    let allocation = manager
        .allocate(&["GPU-sim-b-1".to_string(), "GPU-sim-a-0".to_string()])
        .expect("allocate across plugins");
    assert_eq!(allocation.device_ids, vec!["GPU-sim-a-0", "GPU-sim-b-1"]);
}

#[tokio::test]
async fn health_events_fan_in() {
    let manager = DeviceManager::from_spec_for_node("simulated:h100-8", "h").expect("spec");
    let mut events = manager.health_events();
    let sim = manager
        .simulated_plugin()
        .expect("simulated plugin")
        .clone();
    sim.fail_device("GPU-sim-h-6", "xid 79").expect("fail");
    let event = tokio::time::timeout(Duration::from_secs(1), events.recv())
        .await
        .expect("event arrives")
        .expect("not lagged");
    assert_eq!(event.device_id, "GPU-sim-h-6");
    assert_eq!(event.health, DeviceHealth::Unhealthy);
    let err = manager
        .allocate(&["GPU-sim-h-6".to_string()])
        .expect_err("unhealthy");
    assert!(err.to_string().contains("xid 79"), "{err}");
    sim.recover_device("GPU-sim-h-6").expect("recover");
    let event = events.recv().await.expect("recovery event");
    assert_eq!(event.health, DeviceHealth::Healthy);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), events.recv())
            .await
            .is_err(),
        "nothing else happens"
    );
}
