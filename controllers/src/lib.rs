//! Drover's controller manager: the loops that move the cluster towards what its objects ask for.
//!
//! - [`runtime`]: the shared machinery — informer caches shared by all controllers (with indexes:
//!   pods by node, by owner, by gang, finished), a de-duplicating work queue with bounded
//!   concurrency and backoff, the reconcile driver. Every controller below runs on it.
//! - [`job`]: batch/v1 Jobs, and gang Jobs for distributed training ([`job::gang`]).
//! - [`podgroup`]: gang phases and member counts.
//! - [`node_lifecycle`]: unreachable nodes, `NodeLost` evictions ([`eviction`] rate limits),
//!   failed devices.
//! - [`gc`] (owner references) and [`pod_gc`] (finished pods, pods of deleted nodes).
//! - [`leader`]: leader election through a Lease, so several managers can run for availability.
//! - [`events`]: Events about every decision a user would ask about.
//!
//! Start at [`run`], which wires them together.

pub mod config;
pub mod events;
pub mod eviction;
pub mod gc;
pub mod job;
pub mod node_lifecycle;
pub mod pod_failure;
pub mod pod_gc;
pub mod podgroup;
pub mod runtime;

use std::future::Future;
use std::sync::Arc;

use drover_client::Client;
use tokio::task::JoinSet;

// Leader election and its clock live in the client crate, shared with the scheduler.
pub use clock::Clock;
pub use config::ControllersConfig;
pub use drover_client::{clock, leader};

use crate::runtime::{Caches, Controller, QueueHandle, Stop, WorkQueue};

/// What can stop the controller manager.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("leader election: {0}")]
    Leader(#[from] leader::LeaderError),
}

/// Runs every controller until `shutdown` resolves (behind leader election when
/// `config.leader_elect`), then stops them gracefully and releases the lease.
pub async fn run(
    config: ControllersConfig,
    client: Client,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ControllerError> {
    run_with_clock(config, client, Clock::new(), shutdown).await
}

/// [`run`] with a given clock (tests share one between the manager and simulated agents).
pub async fn run_with_clock(
    config: ControllersConfig,
    client: Client,
    clock: Clock,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ControllerError> {
    let work = {
        let (config, client) = (config.clone(), client.clone());
        move |leading: Stop| run_controllers(config.clone(), client.clone(), clock, leading)
    };
    drover_client::stop::run_until(shutdown, |stop| async move {
        if config.leader_elect {
            let election = leader::ElectionConfig {
                namespace: config.lease_namespace.clone(),
                name: config.lease_name.clone(),
                identity: config.identity.clone(),
                lease_duration: config.lease_duration,
                renew_deadline: config.renew_deadline,
                retry_period: config.retry_period,
            };
            leader::LeaderElector::new(&client, election, clock)
                .run(stop, work)
                .await;
        } else {
            (work)(stop).await;
        }
    })
    .await;
    Ok(())
}

/// Starts the caches and every controller; returns once `stop` resolves and all have stopped.
async fn run_controllers(config: ControllersConfig, client: Client, clock: Clock, stop: Stop) {
    let caches = Arc::new(Caches::new(&client, &config.node_lease_namespace));
    let recorder = events::Recorder::new(client.clone(), clock, config.identity.clone());
    let queue = || QueueHandle::new(WorkQueue::new(config.concurrency));

    let jobs = job::JobController::new(client.clone(), caches.clone(), clock, recorder.clone());
    let job_queue = queue();
    jobs.watch(&job_queue);
    let groups =
        podgroup::PodGroupController::new(client.clone(), caches.clone(), clock, recorder.clone());
    let group_queue = queue();
    groups.watch(&group_queue);
    let gc = gc::GarbageCollector::new(client.clone(), caches.clone());
    let gc_queue = queue();
    gc.watch(&gc_queue);
    let pod_gc = pod_gc::PodGc::new(
        client.clone(),
        caches.clone(),
        config.terminated_pod_gc_threshold,
        config.terminated_pod_ttl,
        config.gc_period,
        config.orphaned_pod_quarantine,
        recorder.clone(),
    );
    let pod_gc_queue = queue();
    pod_gc.watch(&pod_gc_queue);
    let nodes = node_lifecycle::NodeLifecycle::new(
        client.clone(),
        caches.clone(),
        clock,
        recorder,
        config.clone(),
    );
    let node_queue = queue();
    nodes.watch(&node_queue);

    caches.start(&stop);
    tokio::select! {
        _ = stop.wait() => return,
        _ = caches.wait_synced() => {}
    }
    tracing::info!("caches synced; controllers starting");
    // Dropping this set (a crash, or losing the lease abruptly) aborts every controller.
    let mut set = JoinSet::new();
    set.spawn(Controller::new(jobs, job_queue).run(stop.wait()));
    set.spawn(Controller::new(groups, group_queue).run(stop.wait()));
    set.spawn(Controller::new(gc, gc_queue).run(stop.wait()));
    set.spawn(Controller::new(pod_gc, pod_gc_queue).run(stop.wait()));
    set.spawn(Controller::new(nodes, node_queue).run(stop.wait()));
    while set.join_next().await.is_some() {}
}
