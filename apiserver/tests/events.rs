//! The shared event recorder (`drover_client::events`) against a real server: repeats are
//! aggregated into one Event, events of one object keep their order, and a full queue drops
//! (and counts) events instead of blocking the caller.

mod common;

use std::time::Duration;

use drover_api::core::{Event, Pod};
use drover_client::ListParams;
use drover_client::events::{Recorder, RecorderOptions, reference};

fn pod(name: &str) -> Pod {
    let mut p = Pod::default();
    p.metadata.namespace = "default".into();
    p.metadata.name = name.into();
    p.metadata.uid = format!("uid-{name}");
    p
}

async fn events_of(client: &drover_client::Client, name: &str, want: usize) -> Vec<Event> {
    for _ in 0..200 {
        let list = client
            .namespaced::<Event>("default")
            .list(&ListParams::default())
            .await
            .expect("list events");
        let mine: Vec<Event> = list
            .items
            .into_iter()
            .filter(|e| e.involved_object.name == name)
            .collect();
        if mine.len() >= want {
            return mine;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("fewer than {want} events about {name}");
}

#[tokio::test]
async fn repeats_are_aggregated_and_distinct_events_kept() {
    let s = common::start().await;
    let client = s.client();
    let rec = Recorder::new(
        client.clone(),
        RecorderOptions::new("test-component", "host-a"),
    );
    let p = pod("aggregated");
    let now = chrono::Utc::now();
    for _ in 0..3 {
        rec.record(
            now,
            reference(&p),
            "Warning",
            "FailedScheduling",
            "no nodes",
        );
    }
    rec.record(now, reference(&p), "Normal", "Scheduled", "assigned to n1");
    let evs = events_of(&client, "aggregated", 2).await;
    // The count reaches 3 once the two repeats are patched in.
    let mut failed = None;
    for _ in 0..200 {
        let evs = events_of(&client, "aggregated", 2).await;
        failed = evs.into_iter().find(|e| e.reason == "FailedScheduling");
        if failed.as_ref().is_some_and(|e| e.count == 3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failed = failed.expect("a FailedScheduling event");
    assert_eq!(failed.count, 3, "three repeats make one event with count 3");
    assert_eq!(failed.type_, "Warning");
    assert_eq!(failed.involved_object.uid, "uid-aggregated");
    assert_eq!(
        failed.source.as_ref().map(|s| s.component.as_str()),
        Some("test-component")
    );
    assert_eq!(failed.reporting_instance, "host-a");
    assert_eq!(evs.len(), 2, "one aggregated event and one distinct event");
    assert_eq!(rec.dropped(), 0);
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_instead_of_blocking() {
    let s = common::start().await;
    let client = s.client();
    let rec = Recorder::new(
        client.clone(),
        RecorderOptions {
            queue: 1,
            workers: 1,
            ..RecorderOptions::new("test-component", "")
        },
    );
    let p = pod("flood");
    let now = chrono::Utc::now();
    // Recording never awaits, so 200 records in a row outrun one writer with a queue of one.
    for i in 0..200 {
        rec.record(now, reference(&p), "Normal", "Tick", format!("tick {i}"));
    }
    let dropped = rec.dropped() as usize;
    assert!(dropped > 0, "a queue of one cannot hold 200 events");
    let written = 200 - dropped;
    let evs = events_of(&client, "flood", written).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let evs_after = events_of(&client, "flood", written).await;
    assert_eq!(evs.len(), written, "every event not dropped is written");
    assert_eq!(evs_after.len(), written, "and nothing more");
    // The first event is never the one dropped: it went straight to the writer's queue.
    assert!(evs.iter().any(|e| e.message == "tick 0"));
}
