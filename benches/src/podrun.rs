//! The measuring loop every pod scenario shares: many concurrent creators over one shared gRPC
//! client, and a watch on the pods that records when `spec.nodeName` first appears.
//!
//! Create→bound latency of a pod is from the moment its create was acknowledged to the watch
//! event that first shows it bound (clamped at zero: the event can overtake the ack). A pod
//! bound twice is one whose `spec.nodeName` changes after it was first set.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drover_api::core::Pod;
use drover_client::{Api, Client, ClientError, ListParams, WatchEvent};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Serialize;

use crate::procstat::{self, Usage};
use crate::stats::{self, Latency};
use crate::{BenchError, Progress};

/// Creators running at once.
pub const DEFAULT_CONCURRENCY: usize = 64;
/// Connections the creators share out.
pub const CREATOR_CONNECTIONS: usize = 4;
/// A run ends when no pod was bound for this long after the last create.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub concurrency: usize,
    pub idle_timeout: Duration,
    /// Label shown on the progress bar.
    pub label: String,
    /// Pods created per second, evenly paced (open loop); 0: as fast as the creators can.
    pub rate: f64,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            concurrency: DEFAULT_CONCURRENCY,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            label: "pods".into(),
            rate: 0.0,
        }
    }
}

/// Everything measured about one batch of pods.
#[derive(Debug, Default)]
pub struct PodRun {
    pub start: Option<Instant>,
    pub created: usize,
    pub create_errors: usize,
    pub first_error: Option<String>,
    /// When each pod's create was acknowledged (by pod name).
    pub acked: HashMap<String, Instant>,
    /// When each pod was first seen bound, and where.
    pub bound: HashMap<String, (Instant, String)>,
    pub bound_twice: usize,
    pub rewatches: usize,
    pub create_wall: Duration,
    pub usage: Usage,
}

impl PodRun {
    pub fn latencies(&self) -> Vec<Duration> {
        self.bound
            .iter()
            .filter_map(|(n, (at, _))| self.acked.get(n).map(|a| at.saturating_duration_since(*a)))
            .collect()
    }

    /// Offsets of bindings from the start of the run.
    pub fn bound_offsets(&self) -> Vec<Duration> {
        let Some(t0) = self.start else { return vec![] };
        self.bound
            .values()
            .map(|(at, _)| at.saturating_duration_since(t0))
            .collect()
    }

    /// From the first create to the last binding.
    pub fn bind_span(&self) -> Duration {
        self.bound_offsets().into_iter().max().unwrap_or_default()
    }

    pub fn summary(&self, with_series: bool) -> PodRunSummary {
        let lat = self.latencies();
        let offsets = self.bound_offsets();
        let span = self.bind_span();
        let over_time = stats::rate_over_time(&offsets, stats::bucket_for(span));
        PodRunSummary {
            created: self.created,
            create_errors: self.create_errors,
            first_error: self.first_error.clone(),
            bound: self.bound.len(),
            pending: self.created.saturating_sub(self.bound.len()),
            bound_twice: self.bound_twice,
            rewatches: self.rewatches,
            creates_per_s: self.created as f64 / self.create_wall.as_secs_f64().max(1e-9),
            bind_span_s: span.as_secs_f64(),
            pods_per_s: self.bound.len() as f64 / span.as_secs_f64().max(1e-9),
            peak_pods_per_s: over_time.iter().map(|p| p.1).fold(0.0, f64::max),
            latency: Latency::from_durations(&lat),
            usage: self.usage.clone(),
            bound_per_s_over_time: if with_series { over_time } else { vec![] },
            latency_cdf_ms: if with_series {
                stats::cdf(&lat, 400)
            } else {
                vec![]
            },
        }
    }
}

/// The figures of a [`PodRun`].
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct PodRunSummary {
    pub created: usize,
    pub create_errors: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    pub bound: usize,
    /// Created but never seen bound.
    pub pending: usize,
    pub bound_twice: usize,
    /// Times the harness's watch was ended by the server and resumed.
    pub rewatches: usize,
    pub creates_per_s: f64,
    /// First create → last binding, seconds.
    pub bind_span_s: f64,
    /// Bound pods per second over the span.
    pub pods_per_s: f64,
    pub peak_pods_per_s: f64,
    /// Create ack → bound.
    pub latency: Latency,
    pub usage: Usage,
    /// (seconds since start, bound pods/s in the bucket ending there).
    pub bound_per_s_over_time: Vec<(f64, f64)>,
    /// (latency ms, fraction of pods at or below).
    pub latency_cdf_ms: Vec<(f64, f64)>,
}

/// Creates `pods` (all in `namespace`) and waits until each is bound, or no binding arrives
/// for `idle_timeout`.
pub async fn run_pods(
    client: &Client,
    namespace: &str,
    pods: Vec<Pod>,
    opts: &RunOptions,
    progress: &Progress,
) -> Result<PodRun, BenchError> {
    let total = pods.len();
    // The measuring watch and each group of creators have connections of their own, as
    // separate clients of a real cluster would.
    let (seen, watcher) = watch_bindings(client, namespace).await?;
    let connections = (0..CREATOR_CONNECTIONS)
        .map(|_| {
            client
                .new_connection()
                .map(|c| c.namespaced::<Pod>(namespace))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bound_count = || seen.lock().map(|s| s.bound.len()).unwrap_or(0);
    // Requests are encoded before the clock starts, as a load generator prepares its payloads:
    // the creators' own JSON encoding would otherwise take CPU from the control plane measured.
    let pods = pods
        .iter()
        .map(|p| Ok((p.metadata.name.clone(), connections[0].prepare_create(p)?)))
        .collect::<Result<Vec<_>, BenchError>>()?;

    progress.phase(&opts.label, total as u64);
    let cpu0 = procstat::sample();
    let start = Instant::now();
    let pods = Arc::new(pods);
    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(Mutex::new(HashMap::with_capacity(total)));
    let errors = Arc::new(Mutex::new((0usize, None::<String>)));
    let mut creators = tokio::task::JoinSet::new();
    let rate = opts.rate;
    for i in 0..opts.concurrency.max(1) {
        let (api, pods, next, acked, errors) = (
            connections[i % connections.len()].clone(),
            pods.clone(),
            next.clone(),
            acked.clone(),
            errors.clone(),
        );
        creators.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((name, p)) = pods.get(i) else { return };
                if rate > 0.0 {
                    tokio::time::sleep_until(
                        (start + Duration::from_secs_f64(i as f64 / rate)).into(),
                    )
                    .await;
                }
                // Creators read only the acknowledgement, as a controller that learns of its
                // pods from an informer does; the harness's watch sees the pods.
                match api.create_prepared_ack(p).await {
                    Ok(()) => {
                        let now = Instant::now();
                        if let Ok(mut a) = acked.lock() {
                            a.insert(name.clone(), now);
                        }
                    }
                    Err(e) => {
                        if let Ok(mut er) = errors.lock() {
                            er.0 += 1;
                            er.1.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
            }
        });
    }
    // Progress follows bindings while creators run.
    let ticker = {
        let (seen, progress) = (seen.clone(), progress.clone());
        tokio::spawn(async move {
            loop {
                progress.set(seen.lock().map(|s| s.bound.len()).unwrap_or(0) as u64);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    while creators.join_next().await.is_some() {}
    let create_wall = start.elapsed();
    let (create_errors, first_error) = errors
        .lock()
        .map(|e| (e.0, e.1.clone()))
        .unwrap_or_default();
    let created = total - create_errors;
    let mut last = (bound_count(), Instant::now());
    loop {
        let n = bound_count();
        if n >= created {
            break;
        }
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() >= opts.idle_timeout {
            progress.println(format!(
                "{} pods still unbound after {:?} without progress",
                created - n,
                opts.idle_timeout
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let usage = procstat::usage_since(&cpu0);
    ticker.abort();
    watcher.abort();
    let Bindings {
        bound,
        twice: bound_twice,
        rewatches,
    } = std::mem::take(
        &mut *seen
            .lock()
            .map_err(|_| BenchError::Start("poisoned".into()))?,
    );
    progress.finish();
    let acked = std::mem::take(
        &mut *acked
            .lock()
            .map_err(|_| BenchError::Start("poisoned".into()))?,
    );
    Ok(PodRun {
        start: Some(start),
        created,
        create_errors,
        first_error,
        acked,
        bound,
        bound_twice,
        rewatches,
        create_wall,
        usage,
    })
}

/// First bindings seen by [`watch_bindings`].
#[derive(Debug, Default)]
pub struct Bindings {
    /// When each pod was first seen bound, and where.
    pub bound: HashMap<String, (Instant, String)>,
    /// Pods whose `spec.nodeName` changed after it was set.
    pub twice: usize,
    /// Times the server ended the watch and it was resumed (after expiry, from the current
    /// state: pods bound meanwhile are timed when the resumed watch shows them).
    pub rewatches: usize,
}

/// The fields of a pod the harness's watches read. Decoding only these keeps the measuring
/// watch's cost out of the figures it measures (a whole pod costs several times more).
#[derive(Debug, Default, serde::Deserialize)]
pub struct PodView {
    pub metadata: ViewMeta,
    #[serde(default)]
    pub spec: ViewSpec,
    #[serde(default)]
    pub status: ViewStatus,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewMeta {
    pub name: String,
    #[serde(default)]
    pub resource_version: String,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewSpec {
    #[serde(default)]
    pub node_name: String,
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct ViewStatus {
    #[serde(default)]
    pub phase: String,
}

/// The harness's watch of bound pods: on a connection of its own (it must not queue behind the
/// creators), selecting bound pods only, decoding [`PodView`]s.
pub struct BoundPodWatch {
    api: Api<Pod>,
    params: ListParams,
}

impl BoundPodWatch {
    pub fn new(client: &Client, namespace: &str) -> Result<Self, BenchError> {
        Ok(BoundPodWatch {
            api: client.new_connection()?.namespaced(namespace),
            params: ListParams::default().fields(drover_api::core::BOUND_PODS_SELECTOR),
        })
    }

    /// The watch from `resource_version` ("": the current state first).
    pub async fn watch(
        &self,
        resource_version: &str,
    ) -> Result<BoxStream<'static, Result<WatchEvent<PodView>, ClientError>>, BenchError> {
        Ok(self
            .api
            .watch_as::<PodView>(&self.params, resource_version)
            .await?
            .boxed())
    }
}

/// Watches the bound pods of `namespace` ([`BoundPodWatch`]) and records first bindings until
/// the task is aborted. The watch is established before this returns, and resumed whenever the
/// server ends it.
pub async fn watch_bindings(
    client: &Client,
    namespace: &str,
) -> Result<(Arc<Mutex<Bindings>>, tokio::task::JoinHandle<()>), BenchError> {
    let watch = BoundPodWatch::new(client, namespace)?;
    let first = watch.watch("").await?;
    let seen = Arc::new(Mutex::new(Bindings::default()));
    let shared = seen.clone();
    let task = tokio::spawn(async move {
        let mut stream = Some(first);
        let mut rv = String::new();
        loop {
            let mut st = match stream.take() {
                Some(s) => s,
                None => match watch.watch(&rv).await {
                    Ok(s) => s,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            while let Some(ev) = st.next().await {
                let pod = match ev {
                    Ok(WatchEvent::Added(p) | WatchEvent::Modified(p)) => p,
                    Ok(WatchEvent::Bookmark(v)) => {
                        rv = v;
                        continue;
                    }
                    Ok(WatchEvent::Deleted(_)) => continue,
                    Ok(WatchEvent::Error(_)) | Err(_) => {
                        // Resume from the current state: first bindings are kept, repeats ignored.
                        rv.clear();
                        break;
                    }
                };
                rv.clone_from(&pod.metadata.resource_version);
                if pod.spec.node_name.is_empty() {
                    continue;
                }
                let now = Instant::now();
                let Ok(mut s) = shared.lock() else { return };
                match s.bound.get(&pod.metadata.name) {
                    Some((_, node)) if *node != pod.spec.node_name => s.twice += 1,
                    Some(_) => {}
                    None => {
                        s.bound
                            .insert(pod.metadata.name.clone(), (now, pod.spec.node_name.clone()));
                    }
                }
            }
            if let Ok(mut s) = shared.lock() {
                s.rewatches += 1;
            }
        }
    });
    Ok((seen, task))
}
