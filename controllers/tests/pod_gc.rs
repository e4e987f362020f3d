//! The orphaned-pod collector: pods bound to a node that no longer exists are failed with
//! `NodeLost` and deleted; a node that comes back within the quarantine keeps its pods. Sweeps
//! are driven by the test (no timer), with a zero quarantine: the two looks are two sweeps.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use drover_api::core::{Node, Pod};
use drover_client::DeleteParams;
use drover_controllers::events::Recorder;
use drover_controllers::pod_gc::PodGc;
use drover_controllers::runtime::{Caches, Stop};
use drover_controllers::{Clock, config};

const NS: &str = "default";

async fn bound_pod(c: &Cluster, name: &str, node: &str) -> Pod {
    let mut p = Pod::new(NS, name, Default::default());
    p.spec.containers = vec![drover_api::core::Container {
        name: "main".into(),
        command: vec!["sleep".into(), "1000".into()],
        ..Default::default()
    }];
    let p = c
        .client
        .namespaced::<Pod>(NS)
        .create(&p)
        .await
        .expect("pod");
    bind(&c.client, &p, node).await;
    p
}

async fn delete_node(c: &Cluster, caches: &Caches, name: &str) {
    c.client
        .all::<Node>()
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete node");
    eventually("the node cache forgets the node", 10, || async {
        caches.nodes.cache.get(name).is_none().then_some(())
    })
    .await;
}

async fn pod(c: &Cluster, name: &str) -> Option<Pod> {
    c.client
        .namespaced::<Pod>(NS)
        .get_opt(name)
        .await
        .expect("get pod")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_a_deleted_node_are_failed_and_deleted_after_a_second_look() {
    assert_eq!(
        config::DEFAULT_ORPHANED_POD_QUARANTINE,
        Duration::from_secs(40)
    );
    let c = cluster().await;
    let caches = Arc::new(Caches::new(&c.client, config::DEFAULT_NODE_LEASE_NAMESPACE));
    let (_stopper, stop) = Stop::new();
    caches.start(&stop);
    caches.wait_synced().await;
    let events = Recorder::new(c.client.clone(), Clock::new(), "test");
    let gc = PodGc::new(
        c.client.clone(),
        caches.clone(),
        usize::MAX,
        None,
        Duration::from_secs(3600),
        Duration::ZERO,
        events,
    );

    let lost = bound_pod(&c, "lost", "n3").await;
    bound_pod(&c, "kept", "n2").await;
    delete_node(&c, &caches, "n3").await;
    eventually("the pod cache has both bindings", 10, || async {
        caches
            .pods
            .cache
            .get_named(NS, "lost")
            .is_some_and(|p| p.is_bound())
            .then_some(())
    })
    .await;

    // First look: the node is missing from the cache; the pod is only suspected.
    gc.sweep_orphaned().await;
    let still = pod(&c, "lost").await.expect("kept through the quarantine");
    assert!(!still.is_terminal(), "{:?}", still.status);

    // Second look, a quarantine later: the API server has no such node either.
    gc.sweep_orphaned().await;
    assert!(pod(&c, "lost").await.is_none(), "the orphan is deleted");
    assert!(pod(&c, "kept").await.is_some(), "pods of live nodes stay");
    eventually("a NodeLost event about the pod", 10, || async {
        let evs = c
            .client
            .namespaced::<drover_api::core::Event>(NS)
            .list(&Default::default())
            .await
            .expect("events");
        evs.items
            .iter()
            .any(|e| e.reason == "NodeLost" && e.involved_object.uid == lost.metadata.uid)
            .then_some(())
    })
    .await;

    // A node deleted and registered again between the two looks keeps its pods.
    bound_pod(&c, "patient", "n1").await;
    eventually("the pod cache has the binding", 10, || async {
        caches
            .pods
            .cache
            .get_named(NS, "patient")
            .is_some_and(|p| p.is_bound())
            .then_some(())
    })
    .await;
    delete_node(&c, &caches, "n1").await;
    gc.sweep_orphaned().await;
    add_node(&c.client, "n1").await;
    gc.sweep_orphaned().await;
    gc.sweep_orphaned().await;
    let p = pod(&c, "patient").await.expect("kept: its node came back");
    assert!(!p.is_terminal(), "{:?}", p.status);
}
