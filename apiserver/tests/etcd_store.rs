//! The etcd store against a real 3-member etcd cluster on loopback: the whole store conformance
//! suite (each test on a fresh cluster), then what only a replicated store can be asked: that a
//! write stream survives `kill -9` of members without a failed call or a lost write, that the
//! change feed resumes on another member, that prefixes keep two clusters' keys apart, and that
//! an unreachable cluster is an error naming its endpoints.
//!
//! Every test skips, saying so, when `etcd` is not installed (`apt-get install etcd-server`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use drover_apiserver::storage::etcd::{EtcdConfig, EtcdStore};
use drover_apiserver::storage::etcd_cluster::EtcdCluster;
use drover_apiserver::storage::{Compare, Op, Store, StoreError, Txn, conformance};
use futures::StreamExt;
use tokio::sync::Mutex;

/// Starts a 3-member cluster, or says why the test is skipped.
async fn cluster() -> Option<EtcdCluster> {
    if EtcdCluster::binary().is_none() {
        eprintln!("skipping: etcd is not installed (apt-get install etcd-server)");
        return None;
    }
    Some(
        EtcdCluster::start(3)
            .await
            .expect("start a 3-member etcd cluster"),
    )
}

async fn store_on(cluster: &EtcdCluster, prefix: &str) -> Arc<dyn Store> {
    Arc::new(
        EtcdStore::connect(cluster.config(prefix))
            .await
            .expect("connect to etcd"),
    )
}

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

/// An unconditional put of `key`.
async fn put(
    store: &Arc<dyn Store>,
    key: &str,
    value: &str,
) -> drover_apiserver::storage::TxnResult {
    store
        .txn(Txn {
            compares: vec![],
            ops: vec![Op::Put {
                key: b(key),
                value: b(value),
            }],
        })
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_on_a_three_member_cluster() {
    if EtcdCluster::binary().is_none() {
        eprintln!("skipping: etcd is not installed (apt-get install etcd-server)");
        return;
    }
    // One live cluster at a time: each test's factory call replaces the previous test's.
    let current: Mutex<Option<EtcdCluster>> = Mutex::new(None);
    conformance::run_all(|| async {
        let mut slot = current.lock().await;
        *slot = None;
        let cluster = EtcdCluster::start(3).await.expect("start etcd");
        let store = store_on(&cluster, "").await;
        *slot = Some(cluster);
        store
    })
    .await;
}

/// Writers put keys while members are killed with SIGKILL and restarted, one at a time (the
/// one the store talks to first, so calls are cut mid-flight): no call fails, every
/// acknowledged write is there afterwards, and a watcher from before the faults sees each of
/// them exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_survive_members_killed_mid_stream() {
    let Some(mut cluster) = cluster().await else {
        return;
    };
    let store = store_on(&cluster, "/t").await;
    let mut feed = store.watch(0).await.expect("watch");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = BTreeMap::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("w{w}/{i:05}");
                let txn = Txn {
                    compares: vec![Compare::ModRevision {
                        key: b(&key),
                        revision: 0,
                    }],
                    ops: vec![Op::Put {
                        key: b(&key),
                        value: b(&format!("{w}-{i}")),
                    }],
                };
                let r = store
                    .txn(txn)
                    .await
                    .unwrap_or_else(|e| panic!("write {key} failed: {e}"));
                assert!(r.succeeded, "create of a fresh key {key} must succeed");
                acked.insert(key, r.revision);
                i += 1;
            }
            acked
        }));
    }
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        cluster.kill(round);
        tokio::time::sleep(Duration::from_millis(600)).await;
        cluster.restart(round).expect("restart the member");
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = BTreeMap::new();
    for writer in writers {
        acked.extend(writer.await.expect("writer"));
    }
    assert!(acked.len() > 100, "only {} writes in the run", acked.len());
    for (key, revision) in &acked {
        let kv = store
            .get(key.as_bytes())
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("acknowledged write {key} lost"));
        assert_eq!(
            kv.mod_revision, *revision,
            "{key} at its acknowledged revision"
        );
    }
    let mut seen = BTreeMap::new();
    let mut last = 0;
    while seen.len() < acked.len() {
        let batch = tokio::time::timeout(Duration::from_secs(60), feed.next())
            .await
            .expect("the feed went quiet")
            .expect("the feed ended")
            .expect("the feed failed");
        assert!(batch.revision > last, "revisions in order");
        last = batch.revision;
        for change in batch.changes {
            let key = String::from_utf8(change.kv.key.to_vec()).expect("utf-8 key");
            assert!(
                seen.insert(key.clone(), batch.revision).is_none(),
                "{key} delivered twice"
            );
        }
    }
    assert_eq!(seen, acked, "the feed saw exactly the acknowledged writes");
}

/// Two stores with different prefixes on one cluster see only their own keys and changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_keep_clusters_apart() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let a = store_on(&cluster, "/a").await;
    let other = store_on(&cluster, "/b").await;
    let mut feed = a
        .watch(a.current_revision().await.expect("rev"))
        .await
        .expect("watch");
    put(&other, "/k", "b").await;
    let r = put(&a, "/k", "a").await;
    let all = a.range(b"", b"", 0).await.expect("range");
    assert_eq!(all.kvs.len(), 1);
    assert_eq!(
        (all.kvs[0].key.clone(), all.kvs[0].value.clone()),
        (b("/k"), b("a"))
    );
    let batch = feed.next().await.expect("a change").expect("no error");
    assert_eq!(batch.revision, r.revision, "b's write is not in a's feed");
    assert_eq!(batch.changes[0].kv.value, b("a"));
}

/// Nothing listens at the endpoints: connecting fails with `Unavailable`, naming them.
#[tokio::test]
async fn unreachable_cluster_names_its_endpoints() {
    let config = EtcdConfig {
        endpoints: vec!["127.0.0.1:1".to_string(), "127.0.0.1:9".to_string()],
        prefix: String::new(),
    };
    match EtcdStore::connect(config).await {
        Err(StoreError::Unavailable { message }) => {
            assert!(
                message.contains("127.0.0.1:1") && message.contains("127.0.0.1:9"),
                "{message}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// An API server on etcd while the whole etcd cluster is down: a write fails with
/// ServiceUnavailable and a retry hint (not a hang, not a panic), and applies nothing; when
/// etcd is back, writes and reads work again and the server's watch cache caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_writes_are_503_while_etcd_is_down_and_work_after() {
    use drover_api::core::Pod;
    use drover_api::error::Reason;
    use drover_apiserver::config::StoreSpec;
    use drover_client::{Client, ClientConfig, ClientError};

    let Some(mut cluster) = cluster().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = drover_apiserver::ServerConfig::new(dir.path())
        .listen("127.0.0.1:0".parse().expect("addr"));
    config.store = StoreSpec::Etcd(cluster.config(""));
    let server = drover_apiserver::start(config)
        .await
        .expect("server on etcd");
    let client = Client::new(&ClientConfig {
        server: server.url(),
        token: server.admin_token.clone(),
    })
    .expect("client");
    let pods = client.namespaced::<Pod>("default");
    let pod = |name: &str| -> Pod {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "command": ["true"]}]}
        }))
        .expect("pod")
    };
    pods.create(&pod("before"))
        .await
        .expect("create before the outage");

    for i in 0..3 {
        cluster.kill(i);
    }
    match pods.create(&pod("during")).await {
        Err(ClientError::Api(status)) => {
            assert_eq!(status.reason, Reason::ServiceUnavailable, "{status:?}");
            assert_eq!(status.code, 503);
            assert_eq!(
                status.details.and_then(|d| d.retry_after_seconds),
                Some(1),
                "a retry hint"
            );
        }
        other => panic!("a write with etcd down: {other:?}"),
    }

    for i in 0..3 {
        cluster.restart(i).expect("restart etcd member");
    }
    let after = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match pods.create(&pod("after")).await {
                Ok(p) => return p,
                Err(e) => {
                    eprintln!("etcd not back yet: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    })
    .await
    .expect("writes work again once etcd is back");
    assert!(
        pods.get("before").await.is_ok(),
        "data from before the outage"
    );
    assert!(
        pods.get_opt("during").await.expect("get").is_none(),
        "the failed write applied nothing"
    );
    assert_eq!(
        pods.get("after")
            .await
            .expect("get")
            .metadata
            .resource_version,
        after.metadata.resource_version
    );
    server.shutdown().await.ok();
}
