//! Two controller managers behind one Lease: only the leader acts; when it dies without
//! releasing, the other takes over within the lease duration, and no pod is created twice.

mod common;

use std::time::{Duration, Instant};

use common::*;
use drover_api::coordination::Lease;

const NS: &str = "default";

fn job(name: &str) -> drover_api::batch::Job {
    job_from_yaml(&format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {{name: {name}}}
spec:
  parallelism: 3
  completions: 3
  template:
    spec:
      restartPolicy: Never
      containers: [{{name: main, image: busybox, command: ["true"]}}]
"#
    ))
}

async fn lease(c: &Cluster) -> Lease {
    c.client
        .namespaced::<Lease>("kube-system")
        .get("drover-controller-manager")
        .await
        .expect("the leader lease")
}

async fn holder(c: &Cluster) -> Option<String> {
    c.client
        .namespaced::<Lease>("kube-system")
        .get_opt("drover-controller-manager")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec.holder_identity)
        .filter(|h| !h.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_takes_over_without_double_action() {
    let c = cluster().await;
    let cfg = |id: &str| job_config().leader_elect(true).identity(id);
    let a = start_manager(&c.client, cfg("a"));
    let first = eventually("a leader", 10, || async { holder(&c).await }).await;
    assert_eq!(first, "a");
    let b = start_manager(&c.client, cfg("b"));
    create_job(&c.client, NS, &job("one")).await;
    eventually("pods of job one", 10, || async {
        (job_pods(&c.client, NS, "one").await.len() == 3).then_some(())
    })
    .await;
    // Kill the leader without releasing; create more work while nobody leads.
    a.kill();
    let killed = Instant::now();
    let last = lease(&c).await;
    create_job(&c.client, NS, &job("two")).await;
    let new = eventually("b takes over", 10, || async {
        holder(&c).await.filter(|h| h == "b")
    })
    .await;
    let took = killed.elapsed();
    assert_eq!(new, "b");
    // b waited for a's lease to run out: it took no lease that was still held.
    let taken = lease(&c).await;
    let renewed = last.spec.renew_time.expect("a renewed its lease");
    let duration = i64::from(last.spec.lease_duration_seconds.expect("a lease duration"));
    let acquired = taken.spec.acquire_time.expect("b's acquire time");
    assert!(
        acquired >= renewed + chrono::Duration::seconds(duration),
        "b took the lease at {acquired}, before a's renewal at {renewed} ran out ({duration} s)"
    );
    eventually("pods of job two", 10, || async {
        (job_pods(&c.client, NS, "two").await.len() == 3).then_some(())
    })
    .await;
    // Settle, then check nothing was created twice.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        job_pods(&c.client, NS, "one").await.len(),
        3,
        "job one's pods created twice"
    );
    assert_eq!(job_pods(&c.client, NS, "two").await.len(), 3);
    eprintln!("leader killed → follower leading after {took:?} (lease 2 s, retry 0.3 s)");
    // Graceful shutdown releases the lease.
    b.shutdown().await;
    assert_eq!(holder(&c).await, None, "released on shutdown");
}
