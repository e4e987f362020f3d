//! `drover bench api`: raw API throughput and watch latency. `--clients` concurrent clients
//! create `--objects` pods (no scheduler runs, so they stay pending) over gRPC (one shared
//! client, HTTP/2) or REST (HTTP/1.1, a connection per client); a watcher records when each
//! pod's ADDED event arrives. Create latency is request sent → response; watch latency is
//! response (the durable acknowledgement) → event arrival, clamped at zero (an event can
//! overtake its own acknowledgement; those are counted).
//!
//! With `--store etcd://...` the in-process API servers (`--apiservers N`, clients spread over
//! them round-robin, the watcher on the first) keep their state in that etcd cluster, and a first
//! phase measures the base of the ratio: the same number of create-if-absent transactions of a
//! pod's size straight to etcd through the store client, from as many concurrent tasks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use drover_api::core::Pod;
use drover_client::{Api, ListParams, WatchEvent};
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use serde::Serialize;

use drover_apiserver::config::StoreSpec;
use drover_apiserver::storage::Store;
use drover_apiserver::storage::etcd::{EtcdConfig, EtcdStore};

use crate::cluster::{Cluster, ClusterOptions};
use crate::plot::Chart;
use crate::procstat::{self, Usage};
use crate::report::{Report, Table, num};
use crate::stats::{self, Latency};
use crate::workload::Shape;
use crate::{BenchError, Progress};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Grpc,
    Rest,
}

impl std::str::FromStr for Transport {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<Transport, BenchError> {
        match s {
            "grpc" => Ok(Transport::Grpc),
            "rest" => Ok(Transport::Rest),
            o => Err(BenchError::Invalid(format!(
                "transport {o:?}: expected grpc or rest"
            ))),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub cluster: ClusterOptions,
    pub clients: usize,
    pub objects: usize,
    pub transport: Transport,
    pub idle_timeout: Duration,
}

/// The store's own rate, measured in the same run (etcd only).
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct StoreBaseline {
    pub txns: usize,
    pub errors: usize,
    pub txns_per_s: f64,
    pub latency: Latency,
}

impl Options {
    pub fn params(&self) -> Vec<(String, String)> {
        vec![
            ("clients".into(), self.clients.to_string()),
            ("objects".into(), self.objects.to_string()),
            (
                "transport".into(),
                format!("{:?}", self.transport).to_lowercase(),
            ),
            ("store".into(), self.cluster.store.to_string()),
            (
                "apiservers".into(),
                self.cluster.apiservers.max(1).to_string(),
            ),
        ]
    }
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ApiReport {
    pub transport: Transport,
    pub clients: usize,
    pub objects: usize,
    pub in_process: bool,
    pub store: String,
    pub apiservers: usize,
    pub store_baseline: Option<StoreBaseline>,
    pub created: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub wall_s: f64,
    pub creates_per_s: f64,
    pub create_latency: Latency,
    pub watch_events: usize,
    pub watch_latency: Latency,
    /// Watch latency of the writes acknowledged by another server than the watcher's.
    pub cross_server_watch_latency: Option<Latency>,
    pub events_before_ack: usize,
    pub usage: Usage,
    pub create_latency_cdf_ms: Vec<(f64, f64)>,
    pub watch_latency_cdf_ms: Vec<(f64, f64)>,
    pub creates_per_s_over_time: Vec<(f64, f64)>,
}

/// Each acknowledged create: pod name, when acked, create latency, the server it went through.
type Acks = Arc<Mutex<Vec<(String, Instant, Duration, usize)>>>;

pub async fn run(opts: &Options, progress: &Progress) -> Result<ApiReport, BenchError> {
    // The base first, before any API server watches the store, so its keys are gone by then.
    let store_baseline = match &opts.cluster.store {
        StoreSpec::Etcd(etcd) if opts.cluster.server.is_none() => {
            Some(etcd_baseline(etcd, opts, progress).await?)
        }
        _ => None,
    };
    let cluster = Cluster::start(&opts.cluster).await?;
    let result = run_on(&cluster, opts, progress, store_baseline).await;
    cluster.shutdown().await;
    result
}

async fn run_on(
    cluster: &Cluster,
    opts: &Options,
    progress: &Progress,
    store_baseline: Option<StoreBaseline>,
) -> Result<ApiReport, BenchError> {
    let ns = format!("api-{}", crate::cluster::run_id());
    cluster.ensure_namespace(&ns).await?;
    let api: Api<Pod> = cluster.client.namespaced(&ns);
    let apis: Vec<Api<Pod>> = cluster.clients.iter().map(|c| c.namespaced(&ns)).collect();
    let mut stream = api.watch(&ListParams::default(), "").await?;
    let arrived = Arc::new(AtomicUsize::new(0));
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let watcher = {
        let arrived = arrived.clone();
        let n = opts.objects;
        tokio::spawn(async move {
            let mut seen: HashMap<String, Instant> = HashMap::with_capacity(n);
            loop {
                let ev = tokio::select! { ev = stream.next() => ev, _ = &mut stop_rx => break };
                match ev {
                    Some(Ok(WatchEvent::Added(p))) => {
                        seen.insert(p.metadata.name, Instant::now());
                        arrived.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
            seen
        })
    };
    progress.phase("creates", opts.objects as u64);
    let cpu0 = procstat::sample();
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let acks: Acks = Arc::new(Mutex::new(Vec::with_capacity(opts.objects)));
    let errors = Arc::new(Mutex::new((0usize, None::<String>)));
    let rest = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let url: Arc<str> = format!(
        "{}/api/v1/namespaces/{ns}/pods",
        cluster.config.server.trim_end_matches('/')
    )
    .into();
    let auth: Arc<str> = format!("Bearer {}", cluster.config.token).into();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..opts.clients.max(1) {
        let server = c % apis.len();
        let (api, next, acks, errors, progress) = (
            apis[server].clone(),
            next.clone(),
            acks.clone(),
            errors.clone(),
            progress.clone(),
        );
        let (rest, url, auth, ns, total, transport) = (
            rest.clone(),
            url.clone(),
            auth.clone(),
            ns.clone(),
            opts.objects,
            opts.transport,
        );
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                let pod = Shape::Cpu.pod(&ns, &format!("o-{i}"));
                let sent = Instant::now();
                let r = match transport {
                    // The acknowledgement only (the watcher sees the objects).
                    Transport::Grpc => api.create_ack(&pod).await.map_err(|e| e.to_string()),
                    Transport::Rest => rest_create(&rest, &url, &auth, &pod).await,
                };
                let acked = Instant::now();
                match r {
                    Ok(()) => {
                        if let Ok(mut a) = acks.lock() {
                            a.push((pod.metadata.name, acked, acked - sent, server));
                        }
                    }
                    Err(e) => {
                        if let Ok(mut er) = errors.lock() {
                            er.0 += 1;
                            er.1.get_or_insert(e);
                        }
                    }
                }
                progress.inc(1);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let wall = start.elapsed();
    let usage = procstat::usage_since(&cpu0);
    progress.finish();
    let acks = std::mem::take(
        &mut *acks
            .lock()
            .map_err(|_| BenchError::Start("poisoned".into()))?,
    );
    let (errors, first_error) = errors
        .lock()
        .map(|e| (e.0, e.1.clone()))
        .unwrap_or_default();
    let deadline = Instant::now() + opts.idle_timeout;
    while arrived.load(Ordering::Relaxed) < acks.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(());
    let seen = watcher
        .await
        .map_err(|e| BenchError::Start(e.to_string()))?;
    let mut watch = Vec::with_capacity(acks.len());
    let mut cross = Vec::new();
    let mut before = 0;
    for (name, acked, _, server) in &acks {
        if let Some(at) = seen.get(name) {
            if at < acked {
                before += 1;
            }
            let latency = at.saturating_duration_since(*acked);
            watch.push(latency);
            // The watcher is on the first server: a write through another crossed the store.
            if *server != 0 {
                cross.push(latency);
            }
        }
    }
    let create: Vec<Duration> = acks.iter().map(|a| a.2).collect();
    let offsets: Vec<Duration> = acks.iter().map(|a| a.1 - start).collect();
    Ok(ApiReport {
        transport: opts.transport,
        clients: opts.clients,
        objects: opts.objects,
        in_process: cluster.in_process,
        store: opts.cluster.store.to_string(),
        apiservers: cluster.clients.len(),
        store_baseline,
        created: acks.len(),
        errors,
        first_error,
        wall_s: wall.as_secs_f64(),
        creates_per_s: acks.len() as f64 / wall.as_secs_f64().max(1e-9),
        create_latency: Latency::from_durations(&create),
        watch_events: watch.len(),
        watch_latency: Latency::from_durations(&watch),
        cross_server_watch_latency: (!cross.is_empty()).then(|| Latency::from_durations(&cross)),
        events_before_ack: before,
        usage,
        create_latency_cdf_ms: stats::cdf(&create, 400),
        watch_latency_cdf_ms: stats::cdf(&watch, 400),
        creates_per_s_over_time: stats::rate_over_time(&offsets, stats::bucket_for(wall)),
    })
}

/// Where the baseline's keys go (outside the API server's keys), removed after it.
const BASELINE_PREFIX: &str = "/drover-bench-baseline/";

/// `opts.objects` create-if-absent transactions of a pod's JSON straight to etcd (one etcd
/// `Txn` each, not the store's group commit), from `opts.clients` tasks, under a key prefix of
/// their own.
async fn etcd_baseline(
    etcd: &EtcdConfig,
    opts: &Options,
    progress: &Progress,
) -> Result<StoreBaseline, BenchError> {
    let store = EtcdStore::connect(etcd.clone())
        .await
        .map_err(|e| BenchError::Start(e.to_string()))?;
    let value = Bytes::from(
        serde_json::to_vec(&Shape::Cpu.pod("default", "o-0"))
            .map_err(|e| BenchError::Start(e.to_string()))?,
    );
    progress.phase("etcd baseline txns", opts.objects as u64);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for _ in 0..opts.clients.max(1) {
        let (store, next, value, progress) =
            (store.clone(), next.clone(), value.clone(), progress.clone());
        let total = opts.objects;
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return (latencies, errors);
                }
                let key = format!("{BASELINE_PREFIX}{i}");
                let sent = Instant::now();
                match store
                    .engine()
                    .raw_create(key.as_bytes(), value.clone())
                    .await
                {
                    Ok(true) => latencies.push(sent.elapsed()),
                    _ => errors += 1,
                }
                progress.inc(1);
            }
        });
    }
    let mut latencies = Vec::with_capacity(opts.objects);
    let mut errors = 0;
    while let Some(done) = tasks.join_next().await {
        let (l, e) = done.map_err(|e| BenchError::Start(e.to_string()))?;
        latencies.extend(l);
        errors += e;
    }
    let wall = start.elapsed();
    progress.finish();
    // Leave etcd as it was: the baseline's keys go.
    store
        .engine()
        .raw_delete_prefix(BASELINE_PREFIX.as_bytes())
        .await
        .map_err(|e| BenchError::Start(e.to_string()))?;
    store.close().await;
    Ok(StoreBaseline {
        txns: latencies.len(),
        errors,
        txns_per_s: latencies.len() as f64 / wall.as_secs_f64().max(1e-9),
        latency: Latency::from_durations(&latencies),
    })
}

async fn rest_create(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    url: &str,
    auth: &str,
    pod: &Pod,
) -> Result<(), String> {
    let body = serde_json::to_vec(pod).map_err(|e| e.to_string())?;
    let req = http::Request::post(url)
        .header(http::header::AUTHORIZATION, auth)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
    }
}

impl Report for ApiReport {
    fn tables(&self) -> Vec<Table> {
        let mut rows = vec![
            ("transport", format!("{:?}", self.transport).to_lowercase()),
            (
                "server",
                if self.in_process {
                    format!(
                        "in process ×{} ({} store, durable acks)",
                        self.apiservers, self.store
                    )
                } else {
                    "remote (--server)".into()
                },
            ),
            ("clients", self.clients.to_string()),
            ("objects created", num(self.created as f64, 0)),
            ("errors", num(self.errors as f64, 0)),
            ("creates/s", num(self.creates_per_s, 0)),
            ("create p50 ms", num(self.create_latency.p50_ms, 2)),
            ("create p90 ms", num(self.create_latency.p90_ms, 2)),
            ("create p99 ms", num(self.create_latency.p99_ms, 2)),
            ("create max ms", num(self.create_latency.max_ms, 2)),
            ("watch events seen", num(self.watch_events as f64, 0)),
            ("watch ack→event p50 ms", num(self.watch_latency.p50_ms, 2)),
            ("watch ack→event p99 ms", num(self.watch_latency.p99_ms, 2)),
            (
                "watch p99 ms, written via another server",
                self.cross_server_watch_latency
                    .as_ref()
                    .map_or("-".to_string(), |l| num(l.p99_ms, 2)),
            ),
            (
                "events before their ack",
                num(self.events_before_ack as f64, 0),
            ),
        ];
        if let Some(b) = &self.store_baseline {
            rows.push(("etcd txns/s (base)", num(b.txns_per_s, 0)));
            rows.push(("etcd txn p50 ms", num(b.latency.p50_ms, 2)));
            rows.push(("etcd txn p99 ms", num(b.latency.p99_ms, 2)));
            rows.push(("etcd baseline errors", num(b.errors as f64, 0)));
            rows.push((
                "creates/s ÷ etcd txns/s",
                num(self.creates_per_s / b.txns_per_s.max(1e-9), 2),
            ));
        }
        rows.extend(self.usage.rows());
        if let Some(e) = &self.first_error {
            rows.push(("first error", e.clone()));
        }
        vec![Table::figures("api", &rows)]
    }

    fn charts(&self) -> Vec<Chart> {
        vec![
            Chart::new("latency CDF", "latency (ms)", "fraction")
                .line("create", self.create_latency_cdf_ms.clone())
                .line("watch ack→event", self.watch_latency_cdf_ms.clone()),
            Chart::new("creates per second", "seconds since start", "creates/s")
                .line("creates", self.creates_per_s_over_time.clone()),
        ]
    }
}
