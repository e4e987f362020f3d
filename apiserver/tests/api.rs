//! The API's verbs over both transports, against a real in-process server on the embedded store.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{node_json, pod_json, start, start_with};
use drover_api::Reason;
use drover_api::core::{Binding, DeviceAssignment, Namespace, Node, Pod};
use drover_client::{DeleteParams, ListParams, WatchEvent};
use futures::StreamExt;

fn pod(ns: &str, name: &str) -> Pod {
    serde_json::from_value(pod_json(ns, name)).expect("pod")
}

#[tokio::test]
async fn crud_over_grpc_and_rest() {
    let s = start().await;
    let c = s.client();
    let pods = c.namespaced::<Pod>("default");

    // Create over gRPC; the server fills uid, version, timestamps and defaults.
    let created = pods.create(&pod("default", "a")).await.unwrap();
    assert!(!created.metadata.uid.is_empty());
    assert!(created.metadata.revision().unwrap() > 0);
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.spec.scheduler_name.as_str(), "drover");

    // Read it back over REST.
    let r = s.rest().get("/api/v1/namespaces/default/pods/a").await;
    assert_eq!(r.code, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["metadata"]["uid"], created.metadata.uid.as_str());

    // Create over REST with YAML.
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: b\n  labels: {app: other}\nspec:\n  containers:\n  - name: c\n    command: [\"true\"]\n";
    let r = s
        .rest()
        .call(
            "POST",
            "/api/v1/namespaces/default/pods",
            "application/yaml",
            yaml,
        )
        .await;
    assert_eq!(r.code, 201, "{}", String::from_utf8_lossy(&r.body));

    // List with label and field selectors, both transports.
    let l = pods
        .list(&ListParams::default().labels("app=test"))
        .await
        .unwrap();
    assert_eq!(
        l.items
            .iter()
            .map(|p| p.metadata.name.as_str())
            .collect::<Vec<_>>(),
        ["a"]
    );
    let l = pods
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .unwrap();
    assert_eq!(l.items.len(), 1);
    let l = pods
        .list(&ListParams::default().fields("status.phase=Pending"))
        .await
        .unwrap();
    assert_eq!(l.items.len(), 2);
    let r = s
        .rest()
        .get("/api/v1/pods?labelSelector=app%20in%20(other)")
        .await;
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1);
    assert_eq!(r.json()["kind"], "PodList");
    let r = s
        .rest()
        .get("/api/v1/namespaces/default/pods?fieldSelector=spec.nodeName%3D")
        .await;
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 2);
    let r = s
        .rest()
        .get("/api/v1/namespaces/default/pods?fieldSelector=spec.bogus%3Dx")
        .await;
    assert_eq!(r.code, 400);

    // Update with a stale resourceVersion is a Conflict; with the current one it goes through.
    let mut stale = created.clone();
    let mut fresh = pods.get("a").await.unwrap();
    fresh.metadata.labels.insert("x".into(), "1".into());
    let updated = pods.update(&fresh).await.unwrap();
    assert!(updated.metadata.revision() > created.metadata.revision());
    stale.metadata.labels.insert("x".into(), "2".into());
    let err = pods.update(&stale).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::Conflict), "{err}");

    // Merge patch.
    let patched = pods
        .patch(
            "a",
            &serde_json::json!({"metadata": {"labels": {"x": null, "y": "2"}}}),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.metadata.labels.get("y").map(String::as_str),
        Some("2")
    );
    assert!(!patched.metadata.labels.contains_key("x"));
    let r = s
        .rest()
        .call(
            "PATCH",
            "/api/v1/namespaces/default/pods/b",
            "application/merge-patch+json",
            r#"{"metadata":{"annotations":{"k":"v"}}}"#,
        )
        .await;
    assert_eq!(r.code, 200);
    assert_eq!(r.json()["metadata"]["annotations"]["k"], "v");

    // Delete (unbound pods go at once), over both transports.
    pods.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(pods.get_opt("a").await.unwrap().is_none());
    let r = s
        .rest()
        .call("DELETE", "/api/v1/namespaces/default/pods/b", "", "")
        .await;
    assert_eq!(r.code, 200);
    let r = s.rest().get("/api/v1/namespaces/default/pods/b").await;
    assert_eq!(r.code, 404);
    assert_eq!(r.json()["reason"], "NotFound");
}

#[tokio::test]
async fn namespaces_must_exist_and_default_exists() {
    let s = start().await;
    let c = s.client();
    let err = c
        .namespaced::<Pod>("nope")
        .create(&pod("nope", "a"))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Some(Reason::NotFound), "{err}");
    let nss = c
        .all::<Namespace>()
        .list(&ListParams::default())
        .await
        .unwrap();
    let names: BTreeSet<_> = nss.items.iter().map(|n| n.metadata.name.clone()).collect();
    assert!(names.contains("default"));
    let err = c
        .all::<Namespace>()
        .delete("default", &DeleteParams::default())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Some(Reason::Forbidden));

    // Deleting a namespace removes what it holds.
    c.all::<Namespace>()
        .create(&Namespace::new("team"))
        .await
        .unwrap();
    c.namespaced::<Pod>("team")
        .create(&pod("team", "p"))
        .await
        .unwrap();
    c.all::<Namespace>()
        .delete("team", &DeleteParams::default())
        .await
        .unwrap();
    let mut gone = false;
    for _ in 0..100 {
        if c.all::<Namespace>()
            .get_opt("team")
            .await
            .unwrap()
            .is_none()
        {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "namespace still there");
    assert!(
        c.namespaced::<Pod>("team")
            .get_opt("p")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let s = start().await;
    let pods = s.client().namespaced::<Pod>("default");
    let mut p = pod("default", "f");
    p.metadata.finalizers = vec!["example.com/wait".into()];
    pods.create(&p).await.unwrap();
    let marked = pods.delete("f", &DeleteParams::default()).await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    let still = pods.get("f").await.unwrap();
    assert!(still.metadata.deletion_timestamp.is_some());
    // Deleting again is idempotent.
    pods.delete("f", &DeleteParams::default()).await.unwrap();
    let mut cur = pods.get("f").await.unwrap();
    cur.metadata.finalizers.clear();
    pods.update(&cur).await.unwrap();
    assert!(pods.get_opt("f").await.unwrap().is_none());

    // Foreground propagation adds its own finalizer.
    pods.create(&pod("default", "g")).await.unwrap();
    let marked = pods
        .delete(
            "g",
            &DeleteParams {
                propagation_policy: Some("Foreground".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        marked.metadata.finalizers,
        vec!["foregroundDeletion".to_string()]
    );
}

#[tokio::test]
async fn status_subresource_and_binding() {
    let s = start().await;
    let c = s.client();
    let pods = c.namespaced::<Pod>("default");
    let nodes = c.all::<Node>();
    let node: Node = serde_json::from_value(node_json("n1")).unwrap();
    nodes.create(&node).await.unwrap();
    pods.create(&pod("default", "p")).await.unwrap();

    // A status write changes only the status; a main write keeps the status.
    let mut p = pods.get("p").await.unwrap();
    p.status.message = "hello".into();
    p.metadata.labels.insert("ignored".into(), "yes".into());
    let after = pods.update_status(&p).await.unwrap();
    assert_eq!(after.status.message, "hello");
    assert!(!after.metadata.labels.contains_key("ignored"));
    let mut q = after.clone();
    q.status.message = "overwritten".into();
    let after2 = pods.update(&q).await.unwrap();
    assert_eq!(after2.status.message, "hello");

    // Binding sets the node and devices once.
    let b = Binding::new(
        "default",
        "p",
        "n1",
        vec![DeviceAssignment {
            container: "main".into(),
            resource: "nvidia.com/gpu".into(),
            ids: vec!["GPU-0".into()],
            share_milli: None,
        }],
    );
    let bound = pods.create_subresource("p", "binding", &b).await.unwrap();
    assert_eq!(bound.spec.node_name, "n1");
    assert_eq!(bound.spec.device_assignments.len(), 1);
    // As Kubernetes' binding: PodScheduled=True, once (a qosClass was set at creation).
    let scheduled: Vec<_> = bound
        .status
        .conditions
        .iter()
        .filter(|c| c.type_ == "PodScheduled")
        .collect();
    assert_eq!(scheduled.len(), 1, "{:?}", bound.status.conditions);
    assert_eq!(scheduled[0].status, "True");
    assert!(scheduled[0].last_transition_time.is_some());
    assert!(
        !bound.status.qos_class.is_empty(),
        "qosClass set at creation"
    );
    let err = pods
        .create_subresource::<Binding>("p", "binding", &b)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Some(Reason::Conflict), "{err}");
    pods.create(&pod("default", "q")).await.unwrap();
    let err = pods
        .create_subresource(
            "q",
            "binding",
            &Binding::new("default", "q", "missing", vec![]),
        )
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Some(Reason::NotFound), "{err}");

    // A bound, running pod is only marked on delete (its agent stops it); grace 0 removes it.
    let marked = pods.delete("p", &DeleteParams::default()).await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(30));
    pods.delete(
        "p",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(pods.get_opt("p").await.unwrap().is_none());
}

#[tokio::test]
async fn unauthenticated_requests_are_refused_on_both_transports() {
    let s = start().await;
    let err = s
        .client_with_token("wrong")
        .namespaced::<Pod>("default")
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Some(Reason::Unauthorized), "{err}");
    let r = s.rest().without_token().get("/api/v1/pods").await;
    assert_eq!(r.code, 401);
    assert_eq!(r.json()["reason"], "Unauthorized");
    let r = s.rest().with_token("nope").get("/api/v1/pods").await;
    assert_eq!(r.code, 401);
}

#[tokio::test]
async fn watch_sees_every_event_in_order_under_concurrent_writers() {
    let s = start().await;
    let c = s.client();
    let pods = c.namespaced::<Pod>("default");
    let watch = pods.watch(&ListParams::default(), "0").await.unwrap();
    const WRITERS: usize = 8;
    const EACH: usize = 40;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let pods = pods.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                let name = format!("w{w}-{i}");
                pods.create(&pod("default", &name)).await.unwrap();
                pods.patch(
                    &name,
                    &serde_json::json!({"metadata":{"labels":{"step":"2"}}}),
                )
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = WRITERS * EACH * 2;
    let watch = watch.filter(|e| futures::future::ready(!matches!(e, Ok(WatchEvent::Bookmark(_)))));
    let events: Vec<_> = tokio::time::timeout(
        Duration::from_secs(20),
        watch.take(total).collect::<Vec<_>>(),
    )
    .await
    .expect("all events arrive");
    let mut last = 0u64;
    let mut added = BTreeSet::new();
    let mut modified = BTreeSet::new();
    for e in events {
        let (kind, p) = match e.unwrap() {
            WatchEvent::Added(p) => ("a", p),
            WatchEvent::Modified(p) => ("m", p),
            other => panic!("unexpected {other:?}"),
        };
        let rv = p.metadata.revision().unwrap();
        assert!(
            rv > last,
            "versions must strictly increase: {rv} after {last}"
        );
        last = rv;
        let name = p.metadata.name.clone();
        if kind == "a" {
            assert!(added.insert(name));
        } else {
            assert!(added.contains(&name), "MODIFIED before ADDED for {name}");
            assert!(modified.insert(name));
        }
    }
    assert_eq!(added.len(), WRITERS * EACH);
    assert_eq!(modified.len(), WRITERS * EACH);
}

#[tokio::test]
async fn watch_resumes_from_a_version_and_expires_after_compaction() {
    let s = start_with(|mut c| {
        c.watch_history = 20;
        c
    })
    .await;
    let c = s.client();
    let pods = c.namespaced::<Pod>("default");
    let first = pods.create(&pod("default", "r0")).await.unwrap();
    let from = first.metadata.resource_version.clone();
    for i in 1..5 {
        pods.create(&pod("default", &format!("r{i}")))
            .await
            .unwrap();
    }
    // Resume: exactly the events after `from`.
    let w = pods.watch(&ListParams::default(), &from).await.unwrap();
    let w = w.filter(|e| futures::future::ready(!matches!(e, Ok(WatchEvent::Bookmark(_)))));
    let got: Vec<_> = tokio::time::timeout(Duration::from_secs(5), w.take(4).collect::<Vec<_>>())
        .await
        .unwrap();
    let names: Vec<_> = got
        .into_iter()
        .map(|e| match e.unwrap() {
            WatchEvent::Added(p) => p.metadata.name,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(names, ["r1", "r2", "r3", "r4"]);

    // Push the version out of the window: the watch says "expired, relist".
    for i in 5..40 {
        pods.create(&pod("default", &format!("r{i}")))
            .await
            .unwrap();
    }
    let err = match pods.watch(&ListParams::default(), &from).await {
        Err(e) => e,
        Ok(mut w) => match w.next().await {
            Some(Err(e)) => e,
            other => panic!("expected an Expired error, got {other:?}"),
        },
    };
    assert_eq!(err.reason(), Some(Reason::Expired), "{err}");
}

#[tokio::test]
async fn idle_watch_gets_bookmarks() {
    let s = start_with(|mut c| {
        c.bookmark_interval = Duration::from_millis(50);
        c
    })
    .await;
    let c = s.client();
    let pods = c.namespaced::<Pod>("default");
    let mut w = pods
        .watch(&ListParams::default().labels("never=matches"), "0")
        .await
        .unwrap();
    let last = pods.create(&pod("default", "x")).await.unwrap();
    let want = last.metadata.revision().unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match w.next().await {
                Some(Ok(WatchEvent::Bookmark(rv))) if rv.parse::<u64>().unwrap() >= want => {
                    return rv;
                }
                Some(Ok(WatchEvent::Bookmark(_))) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("a bookmark arrives");
    assert!(got.parse::<u64>().unwrap() >= want);
}

#[tokio::test]
async fn watch_with_selector_reports_objects_leaving_and_entering() {
    let s = start().await;
    let pods = s.client().namespaced::<Pod>("default");
    pods.create(&pod("default", "s")).await.unwrap();
    let w = pods
        .watch(&ListParams::default().labels("app=test"), "0")
        .await
        .unwrap();
    let mut w =
        Box::pin(w.filter(|e| futures::future::ready(!matches!(e, Ok(WatchEvent::Bookmark(_))))));
    assert!(matches!(w.next().await, Some(Ok(WatchEvent::Added(_)))));
    pods.patch(
        "s",
        &serde_json::json!({"metadata":{"labels":{"app":"gone"}}}),
    )
    .await
    .unwrap();
    assert!(matches!(w.next().await, Some(Ok(WatchEvent::Deleted(_)))));
    pods.patch(
        "s",
        &serde_json::json!({"metadata":{"labels":{"app":"test"}}}),
    )
    .await
    .unwrap();
    assert!(matches!(w.next().await, Some(Ok(WatchEvent::Added(_)))));
}

/// The fields of a pod a binding watcher reads (`Api::watch_as`).
#[derive(Debug, serde::Deserialize)]
struct BoundView {
    metadata: drover_api::meta::ObjectMeta,
    spec: BoundSpec,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct BoundSpec {
    #[serde(default)]
    node_name: String,
}

#[tokio::test]
async fn a_partial_view_watch_on_its_own_connection_sees_pods_as_they_are_bound() {
    let s = start().await;
    let c = s.client();
    c.all::<Node>()
        .create(&serde_json::from_value(node_json("n1")).unwrap())
        .await
        .unwrap();
    let pods = c.namespaced::<Pod>("default");
    pods.create(&pod("default", "unbound")).await.unwrap();
    let watcher = c.new_connection().unwrap().namespaced::<Pod>("default");
    let w = watcher
        .watch_as::<BoundView>(&ListParams::default().fields("spec.nodeName!="), "")
        .await
        .unwrap();
    let mut w =
        Box::pin(w.filter(|e| futures::future::ready(!matches!(e, Ok(WatchEvent::Bookmark(_))))));
    pods.create(&pod("default", "later")).await.unwrap();
    pods.create_subresource_ack(
        "later",
        "binding",
        &Binding::new("default", "later", "n1", vec![]),
    )
    .await
    .unwrap();
    // Neither creation is seen; the binding is, as ADDED (the pod entered the selection).
    match tokio::time::timeout(Duration::from_secs(5), w.next()).await {
        Ok(Some(Ok(WatchEvent::Added(v)))) => {
            assert_eq!(v.metadata.name, "later");
            assert_eq!(v.spec.node_name, "n1");
            assert!(!v.metadata.resource_version.is_empty());
        }
        other => panic!("expected the bound pod as ADDED, got {other:?}"),
    }
}

#[tokio::test]
async fn restart_resumes_from_disk_with_every_object() {
    let dir = tempfile::tempdir().unwrap();
    let cfg =
        || drover_apiserver::ServerConfig::new(dir.path()).listen("127.0.0.1:0".parse().unwrap());
    let server = drover_apiserver::start(cfg()).await.unwrap();
    let client = drover_client::Client::new(&drover_client::ClientConfig {
        server: server.url(),
        token: server.admin_token.clone(),
    })
    .unwrap();
    let token = server.admin_token.clone();
    let mut last = 0;
    for i in 0..20 {
        let p = client
            .namespaced::<Pod>("default")
            .create(&pod("default", &format!("p{i}")))
            .await
            .unwrap();
        last = p.metadata.revision().unwrap();
    }
    let addr: std::net::SocketAddr = server.url().trim_start_matches("http://").parse().unwrap();
    server.shutdown().await.unwrap();
    let down = client.namespaced::<Pod>("default").get("p0").await;
    assert!(
        matches!(down, Err(drover_client::ClientError::Unreachable { .. })),
        "a call while the server is down says it is unreachable: {down:?}"
    );

    // The same address again: the client that saw the server go reconnects by itself.
    let server = drover_apiserver::start(cfg().listen(addr)).await.unwrap();
    assert_eq!(
        server.admin_token, token,
        "the admin token survives restarts"
    );
    let list = client
        .namespaced::<Pod>("default")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(list.items.len(), 20);
    let p = client
        .namespaced::<Pod>("default")
        .create(&pod("default", "after"))
        .await
        .unwrap();
    assert!(
        p.metadata.revision().unwrap() > last,
        "revisions continue after a restart"
    );
}

#[tokio::test]
async fn list_pages_with_limit_and_continue() {
    let s = start().await;
    let pods = s.client().namespaced::<Pod>("default");
    for i in 0..7 {
        pods.create(&pod("default", &format!("p{i}")))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut cont: Option<String> = None;
    loop {
        let l = pods
            .list(&ListParams {
                limit: Some(3),
                continue_token: cont.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        seen.extend(l.items.into_iter().map(|p| p.metadata.name));
        if l.metadata.continue_token.is_empty() {
            break;
        }
        cont = Some(l.metadata.continue_token);
    }
    assert_eq!(seen, ["p0", "p1", "p2", "p3", "p4", "p5", "p6"]);

    // The client's paging: the same objects, in pages of three, under the first page's version.
    let three = ListParams {
        limit: Some(3),
        ..Default::default()
    };
    let mut pages = 0;
    pods.list_pages(&three, |_| pages += 1).await.unwrap();
    assert_eq!(pages, 3);
    let all = pods.list_all(&three).await.unwrap();
    let names: Vec<_> = all.items.into_iter().map(|p| p.metadata.name).collect();
    assert_eq!(names, seen);
    assert!(!all.metadata.resource_version.is_empty());
    assert!(all.metadata.continue_token.is_empty());
}

#[tokio::test]
async fn shutdown_ends_open_watches() {
    let s = start().await;
    let pods = s.client().namespaced::<Pod>("default");
    let mut w = pods.watch(&ListParams::default(), "0").await.unwrap();
    let common::TestServer { server, dir: _dir } = s;
    tokio::time::timeout(Duration::from_secs(4), server.shutdown())
        .await
        .expect("shutdown does not wait for the watch")
        .unwrap();
    // The watch ends (cleanly or with an error), it does not hang.
    let end = tokio::time::timeout(Duration::from_secs(4), async {
        while let Some(Ok(_)) = w.next().await {}
    })
    .await;
    assert!(end.is_ok(), "the watch stream still hangs");
}

#[tokio::test]
async fn objects_larger_than_the_flow_control_windows_cross_grpc_both_ways() {
    // 2 MiB: past HTTP/2's 64 KiB default windows and the client's 1 MiB stream window, so
    // the request waits on the server's window updates and the answer and the watch event on
    // the client's.
    let s = start().await;
    let pods = s.client().namespaced::<Pod>("default");
    let mut watch = Box::pin(
        pods.watch(
            &ListParams::default(),
            &pods
                .list(&ListParams::default())
                .await
                .unwrap()
                .metadata
                .resource_version,
        )
        .await
        .unwrap(),
    );
    let mut big = pod("default", "big");
    let arg: String = (0..2 * 1024 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    big.spec.containers[0].args = vec![arg.clone()];
    // A window never reopened would stall the call rather than fail it.
    let within = Duration::from_secs(30);
    let created = tokio::time::timeout(within, pods.create(&big))
        .await
        .expect("the create answered within 30 s")
        .unwrap();
    assert_eq!(created.spec.containers[0].args, vec![arg.clone()]);
    let got = tokio::time::timeout(within, pods.get("big"))
        .await
        .expect("the get answered within 30 s")
        .unwrap();
    assert_eq!(got.spec.containers[0].args, vec![arg.clone()]);
    let added = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = watch.next().await {
            match ev.unwrap() {
                WatchEvent::Added(p) => return Some(p),
                WatchEvent::Bookmark(_) => {}
                other => panic!("expected the big pod as ADDED, got {other:?}"),
            }
        }
        None
    })
    .await
    .expect("the big pod's event within 10 s")
    .expect("the watch open");
    assert_eq!(added.spec.containers[0].args, vec![arg]);
}
