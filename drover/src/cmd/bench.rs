//! `drover bench SCENARIO`: starts the control plane in process with simulated nodes (or uses
//! `--server`), runs a scenario, prints its parameters first and a table last, and writes
//! `--json` (all figures) and `--plot` (SVG charts). The scenarios live in `drover-benches`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use drover_benches::cluster::ClusterOptions;
use drover_benches::podrun::RunOptions;
use drover_benches::report::render_parameters;
use drover_benches::scenario::{self, ClusterSpec};
use drover_benches::workload::{Layout, ShapeMix};
use drover_benches::{Progress, Report, openb};
use drover_client::ClientConfig;
use serde::Serialize;

use super::GlobalArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub scenario: Scenario,
    /// Write every figure, with the parameters, as JSON to this file.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Draw the charts (latency CDF, throughput over time, allocation curves) to this .svg file.
    #[arg(long, global = true)]
    pub plot: Option<PathBuf>,
    /// No progress bar (it is also off when stderr is not a terminal).
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum Scenario {
    /// N nodes, M pods of a shape mix: bound pods/s, create→bound latency, CPU and memory.
    Throughput(ThroughputArgs),
    /// Required node affinity, pod affinity, anti-affinity and topology spread, one sub-run each.
    Constraints(ConstraintsArgs),
    /// Gangs with a topology requirement against a loaded cluster: decision and all-bound latency.
    Gang(GangArgs),
    /// Replay of the Alibaba openb GPU trace (FGD paper): GPU allocation ratio per policy.
    Openb(OpenbArgs),
    /// Replay of the Microsoft Philly jobs: JCT, queueing delay and GPU utilisation, Drover vs FIFO.
    Philly(PhillyArgs),
    /// Raw API throughput and watch latency.
    Api(ApiArgs),
    /// Jobs released at once on a cluster of real agents (needs --server): release → every pod Running.
    Burst(BurstArgs),
}

/// The simulated cluster.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Simulated nodes to create.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Device profile of the nodes: h100-8, a100-8, l4-4 or cpu.
    #[arg(long, default_value = "h100-8")]
    pub profile: String,
    /// Zones the nodes are spread over (label topology.kubernetes.io/zone).
    #[arg(long, default_value_t = 10)]
    pub zones: usize,
    /// Nodes per rack (label drover.dev/rack).
    #[arg(long, default_value_t = 64)]
    pub rack_size: usize,
    /// Concurrent pod creators over the shared gRPC client.
    #[arg(long, default_value_t = drover_benches::podrun::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Stop waiting when no pod was bound for this many seconds.
    #[arg(long, default_value_t = 20)]
    pub idle_timeout_s: u64,
    /// Create pods at this many per second, evenly paced (open loop), to measure latency below
    /// saturation; 0 creates as fast as the creators can (throughput).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Serve the nodes by hollow node agents in this process (simulated devices of the profile,
    /// leases renewed every 10 s, every bound pod run by the simulated runtime with its status
    /// written) instead of bare Node objects. In process only: not with --server.
    /// (`--hollow true|false` is accepted too: the parameters line prints it so.)
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value_t = false,
          action = clap::ArgAction::Set)]
    pub hollow: bool,
}

#[derive(clap::Args, Debug)]
pub struct ThroughputArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Pods to create.
    #[arg(long, default_value_t = 10_000)]
    pub pods: usize,
    /// Weighted pod shapes: cpu, gpuN (N whole GPUs), shareM (M thousandths of one GPU).
    #[arg(long, default_value = scenario::throughput::DEFAULT_SHAPE_MIX)]
    pub shape_mix: String,
    /// Seed of the shape draw.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(clap::Args, Debug)]
pub struct ConstraintsArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Pods per sub-run.
    #[arg(long, default_value_t = 2000)]
    pub pods: usize,
    /// Sub-runs (default all): node-affinity, pod-affinity, pod-anti-affinity, topology-spread.
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct GangArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Pods placed (by the scheduler) before the gangs arrive.
    #[arg(long, default_value_t = 10_000)]
    pub running: usize,
    /// Shapes of the running pods.
    #[arg(long, default_value = scenario::gang::DEFAULT_RUNNING_MIX)]
    pub running_mix: String,
    /// Gangs submitted, one after another.
    #[arg(long, default_value_t = 20)]
    pub gangs: usize,
    #[arg(long, default_value_t = 64)]
    pub gang_size: usize,
    #[arg(long, default_value_t = 8)]
    pub gpus_per_pod: u32,
    /// Required topology domain of a gang: `rack`, any node label key, or "" for none.
    #[arg(long, default_value = "rack")]
    pub topology_key: String,
    /// How long a gang may be partly bound (its binding burst) before it counts as having held
    /// a partial allocation.
    #[arg(long, default_value_t = 1000)]
    pub burst_allowance_ms: u64,
}

#[derive(clap::Args, Debug)]
pub struct OpenbArgs {
    /// Node list (openb CSV format).
    #[arg(long)]
    pub nodes_csv: Option<PathBuf>,
    /// Pod list (openb CSV format, with gpu_milli and gpu_spec).
    #[arg(long)]
    pub pods_csv: Option<PathBuf>,
    /// Seeds 0..N.
    #[arg(long, default_value_t = openb::DEFAULT_SEEDS)]
    pub seeds: u64,
    /// Arrived demand at the end, as a fraction of GPU capacity.
    #[arg(long, default_value_t = openb::DEFAULT_DEMAND)]
    pub demand: f64,
    /// Policies (default all): drover, drover-fgd, drover-most-allocated,
    /// drover-least-allocated, random, best-fit, gpu-packing.
    #[arg(long, value_delimiter = ',')]
    pub policies: Vec<String>,
    /// Replays at once (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

#[derive(clap::Args, Debug)]
pub struct PhillyArgs {
    /// Jobs file (default: philly/philly_jobs_normalized.csv in $DROVER_DATA_DIR or the
    /// shared data directory beside the workspace).
    #[arg(long)]
    pub jobs_csv: Option<PathBuf>,
    /// Virtual clusters' node counts (default: philly/philly_vc_nodes_from_HeliosArtifact.csv there).
    /// Not with --live, whose node count is --nodes.
    #[arg(long, conflicts_with = "live")]
    pub nodes_csv: Option<PathBuf>,
    /// Use this many 8-GPU nodes instead of the VC file's total (with --live: 64 by default).
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Divide submit times and durations by this.
    #[arg(long, default_value_t = 1000.0)]
    pub time_compression: f64,
    /// Replay only the first N jobs by submit time.
    #[arg(long)]
    pub max_jobs: Option<usize>,
    /// drover, fifo.
    #[arg(long, value_delimiter = ',', default_value = "drover,fifo")]
    pub policies: Vec<String>,
    /// Replay through the real control plane on hollow nodes in this process, on the wall clock
    /// (jobs run for duration ÷ compression), instead of the simulator: use a slice
    /// (--max-jobs) and a large --time-compression. Not with --server.
    #[arg(long)]
    pub live: bool,
    /// With --live: stop when nothing happened for this many seconds past every running pod's
    /// expected end (default: 30).
    #[arg(long, requires = "live")]
    pub idle_timeout_s: Option<u64>,
}

#[derive(clap::Args, Debug)]
pub struct ApiArgs {
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Objects (pods) to create.
    #[arg(long, default_value_t = 100_000)]
    pub objects: usize,
    /// grpc or rest.
    #[arg(long, default_value = "grpc")]
    pub transport: String,
    /// The in-process API servers' store: embedded, etcd://HOST:PORT,... (then a first phase
    /// measures etcd's own transaction rate as the base of the ratio) or tikv://PD:PORT,...
    #[arg(long, default_value = "embedded")]
    pub store: drover_apiserver::config::StoreSpec,
    /// In-process API servers on that store, the gRPC clients spread over them (REST clients
    /// all use the first; more than one needs a shared --store, etcd:// or tikv://).
    #[arg(long, default_value_t = 1)]
    pub apiservers: usize,
}

#[derive(clap::Args, Debug, Clone)]
pub struct BurstArgs {
    /// Jobs in the burst (the mix: 40% 1 GPU, 25% 2, 15% 4, 10% 8, 10% gangs of 2/4/8 whole nodes).
    #[arg(long, default_value_t = 1000)]
    pub jobs: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Namespace of the Jobs.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// How long each pod's process sleeps, in seconds.
    #[arg(long, default_value_t = 300)]
    pub sleep_s: u64,
    /// How long to wait for every pod to run, in seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_s: u64,
}

impl ClusterArgs {
    fn spec(&self, server: Option<ClientConfig>) -> ClusterSpec {
        let scheduler = server.is_none().then(drover_scheduler_config);
        ClusterSpec {
            nodes: self.nodes,
            profile: self.profile.clone(),
            layout: Layout {
                zones: self.zones,
                rack_size: self.rack_size,
            },
            hollow: self.hollow,
            cluster: ClusterOptions {
                server,
                scheduler,
                controllers: false,
                ..Default::default()
            },
        }
    }

    fn run(&self, label: &str) -> RunOptions {
        RunOptions {
            concurrency: self.concurrency,
            idle_timeout: Duration::from_secs(self.idle_timeout_s),
            label: label.into(),
            rate: self.rate,
        }
    }
}

fn drover_scheduler_config() -> drover_scheduler::SchedulerConfig {
    drover_scheduler::SchedulerConfig::default()
}

/// The JSON file: what ran, when, and every figure.
#[derive(Serialize)]
struct Output<'a, R: Serialize> {
    scenario: &'a str,
    command: String,
    date: String,
    parameters: std::collections::BTreeMap<String, String>,
    report: &'a R,
}

/// Runs the chosen scenario: checks the output options, resolves the server (when the bench
/// runs against one), then hands over to the scenario's own function.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<()> {
    if let Some(p) = &args.plot
        && p.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
            != Some("svg")
    {
        anyhow::bail!(
            "--plot {}: only .svg is supported (PNG would need a system font library)",
            p.display()
        );
    }
    let server = match &global.server {
        Some(_) => Some(ClientConfig::resolve(
            global.server.as_deref(),
            global.token.as_deref(),
            global.config.as_deref(),
        )?),
        None => None,
    };
    let progress = Progress::new(args.quiet);
    match &args.scenario {
        Scenario::Throughput(a) => run_throughput(a, server, &progress, &args).await,
        Scenario::Constraints(a) => run_constraints(a, server, &progress, &args).await,
        Scenario::Gang(a) => run_gang(a, server, &progress, &args).await,
        Scenario::Openb(a) => run_openb(a, &progress, &args).await,
        Scenario::Philly(a) => run_philly(a, &progress, &args).await,
        Scenario::Api(a) => run_api(a, server, &progress, &args).await,
        Scenario::Burst(a) => run_burst(a, server, &progress, &args).await,
    }
}

async fn run_throughput(
    a: &ThroughputArgs,
    server: Option<ClientConfig>,
    progress: &Progress,
    args: &Args,
) -> anyhow::Result<()> {
    let opts = scenario::throughput::Options {
        cluster: a.cluster.spec(server),
        pods: a.pods,
        shape_mix: ShapeMix::parse(&a.shape_mix)?,
        seed: a.seed,
        run: a.cluster.run("pods"),
    };
    let params = opts.params();
    start("throughput", &params);
    let r = scenario::throughput::run(&opts, progress).await?;
    finish("throughput", &params, &r, args)
}

async fn run_constraints(
    a: &ConstraintsArgs,
    server: Option<ClientConfig>,
    progress: &Progress,
    args: &Args,
) -> anyhow::Result<()> {
    let opts = scenario::constraints::Options {
        cluster: a.cluster.spec(server),
        pods: a.pods,
        kinds: a.kinds.clone(),
        run: a.cluster.run("pods"),
    };
    let params = opts.params();
    start("constraints", &params);
    let r = scenario::constraints::run(&opts, progress).await?;
    finish("constraints", &params, &r, args)
}

async fn run_gang(
    a: &GangArgs,
    server: Option<ClientConfig>,
    progress: &Progress,
    args: &Args,
) -> anyhow::Result<()> {
    let opts = scenario::gang::Options {
        cluster: a.cluster.spec(server),
        running: a.running,
        running_mix: ShapeMix::parse(&a.running_mix)?,
        gangs: a.gangs,
        gang_size: a.gang_size,
        gpus_per_pod: a.gpus_per_pod,
        topology_key: a.topology_key.clone(),
        burst_allowance: Duration::from_millis(a.burst_allowance_ms),
        run: a.cluster.run("load"),
    };
    let params = opts.params();
    start("gang", &params);
    let r = scenario::gang::run(&opts, progress).await?;
    finish("gang", &params, &r, args)
}

async fn run_openb(a: &OpenbArgs, progress: &Progress, args: &Args) -> anyhow::Result<()> {
    let mut opts = openb::OpenbOptions::default();
    if let Some(p) = &a.nodes_csv {
        opts.nodes_csv = p.clone();
    }
    if let Some(p) = &a.pods_csv {
        opts.pods_csv = p.clone();
    }
    opts.seeds = (0..a.seeds).collect();
    opts.demand = a.demand;
    opts.threads = a.threads;
    if !a.policies.is_empty() {
        opts.policies = a
            .policies
            .iter()
            .map(|p| p.parse())
            .collect::<Result<_, _>>()?;
    }
    let params = vec![
        (
            "nodes-csv".to_string(),
            opts.nodes_csv.display().to_string(),
        ),
        ("pods-csv".into(), opts.pods_csv.display().to_string()),
        ("seeds".into(), a.seeds.to_string()),
        ("demand".into(), opts.demand.to_string()),
        (
            "policies".into(),
            opts.policies
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(","),
        ),
    ];
    start("openb", &params);
    let bar = progress.clone();
    let total = opts.seeds.len() * opts.policies.len();
    bar.phase("replays", total as u64);
    let r = tokio::task::spawn_blocking(move || {
        openb::run(&opts, &move |done, _| bar.set(done as u64))
    })
    .await??;
    progress.finish();
    finish("openb", &params, &r, args)
}

async fn run_philly(a: &PhillyArgs, progress: &Progress, args: &Args) -> anyhow::Result<()> {
    let opts = scenario::philly::Options {
        jobs_csv: a
            .jobs_csv
            .clone()
            .unwrap_or_else(|| openb::data_dir().join(scenario::philly::DEFAULT_JOBS)),
        nodes_csv: a
            .nodes_csv
            .clone()
            .unwrap_or_else(|| openb::data_dir().join(scenario::philly::DEFAULT_NODES)),
        nodes: a.nodes,
        time_compression: a.time_compression,
        max_jobs: a.max_jobs,
        policies: a.policies.clone(),
    };
    if a.live {
        let queue = scenario::philly_live::compressed_queue(a.time_compression);
        let opts = scenario::philly_live::Options {
            trace: opts,
            cluster: ClusterOptions {
                scheduler: Some(drover_scheduler_config().with_queue(queue)),
                ..Default::default()
            },
            idle_timeout: a.idle_timeout_s.map_or(
                scenario::philly_live::DEFAULT_IDLE_TIMEOUT,
                Duration::from_secs,
            ),
        };
        let params = opts.params();
        start("philly", &params);
        println!(
            "mode: live (API server, scheduler and hollow node agents in process, wall \
             clock; scheduler queue timers ÷ compression; times in trace seconds)"
        );
        let r = scenario::philly_live::run(&opts, progress).await?;
        return finish("philly", &params, &r, args);
    }
    let params = opts.params();
    start("philly", &params);
    println!("mode: in-memory scheduler simulator with a virtual clock (not the full stack)");
    let p = progress.clone();
    let r = tokio::task::spawn_blocking(move || scenario::philly::run(&opts, &p)).await??;
    finish("philly", &params, &r, args)
}

async fn run_api(
    a: &ApiArgs,
    server: Option<ClientConfig>,
    progress: &Progress,
    args: &Args,
) -> anyhow::Result<()> {
    let opts = scenario::api::Options {
        cluster: ClusterOptions {
            server,
            store: a.store.clone(),
            apiservers: a.apiservers,
            ..Default::default()
        },
        clients: a.clients,
        objects: a.objects,
        transport: a.transport.parse()?,
        idle_timeout: Duration::from_secs(10),
    };
    let params = opts.params();
    start("api", &params);
    let r = scenario::api::run(&opts, progress).await?;
    finish("api", &params, &r, args)
}

async fn run_burst(
    a: &BurstArgs,
    server: Option<ClientConfig>,
    progress: &Progress,
    args: &Args,
) -> anyhow::Result<()> {
    let opts = scenario::burst::Options {
        cluster: ClusterOptions {
            server,
            ..Default::default()
        },
        jobs: a.jobs,
        seed: a.seed,
        namespace: a.namespace.clone(),
        sleep: Duration::from_secs(a.sleep_s),
        timeout: Duration::from_secs(a.timeout_s),
    };
    let params = opts.params();
    start("burst", &params);
    let r = scenario::burst::run(&opts, progress).await?;
    finish("burst", &params, &r, args)
}

fn start(name: &str, params: &[(String, String)]) {
    println!("{}", render_parameters(name, params));
    println!(
        "date: {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
    );
}

fn finish<R: Report>(
    name: &str,
    params: &[(String, String)],
    report: &R,
    args: &Args,
) -> anyhow::Result<()> {
    for t in report.tables() {
        println!("\n{t}");
    }
    if let Some(path) = &args.json {
        let out = Output {
            scenario: name,
            command: render_parameters(name, params),
            date: chrono::Utc::now().to_rfc3339(),
            parameters: params.iter().cloned().collect(),
            report,
        };
        let text = serde_json::to_string_pretty(&out)?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    if let Some(path) = &args.plot {
        drover_benches::plot::write_svg(path, &report.charts())?;
        println!("plot written to {}", path.display());
    }
    Ok(())
}
