//! One pod's life on the node: allocate its devices, run its init containers in order, then its
//! containers; restart them as `restartPolicy` says (with exponential backoff); report status;
//! on deletion stop everything (SIGTERM, the grace period, SIGKILL of the whole tree) and remove
//! the pod. Every step is written to the pod's record first, so an agent restart carries on
//! where this one stopped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use drover_api::core::{Container as ContainerSpecApi, Pod, pod_phase, restart_policy};
use drover_client::DeleteParams;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;

use super::status::{Reporter, build};
use super::{NodeContext, PodMsg, env};
use crate::runtime::{Container, ContainerSpec, ExitStatus, RuntimeError, StopSignal};
use crate::state::{PodRecord, RunRecord, TerminatedRecord};

/// How long to wait for processes to die after SIGKILL before giving up on them.
const KILL_WAIT: Duration = Duration::from_secs(10);

enum Ev {
    Exited {
        name: String,
        generation: u64,
        exit: ExitStatus,
    },
    Start {
        name: String,
    },
}

pub(super) struct Worker {
    ctx: Arc<NodeContext>,
    pod: Arc<Pod>,
    record: PodRecord,
    running: HashMap<String, (u64, Arc<dyn Container>)>,
    generation: u64,
    events: FuturesUnordered<BoxFuture<'static, Ev>>,
    reporter: Reporter,
    device_env: BTreeMap<String, BTreeMap<String, String>>,
    reason: String,
    message: String,
    terminating: bool,
    /// Containers whose start waits for annotations Drover has yet to write (see
    /// [`env::awaited_annotations`]); retried on every update of the pod.
    awaiting: Vec<String>,
}

fn now() -> drover_api::meta::Time {
    chrono::Utc::now()
}

impl Worker {
    pub(super) fn new(ctx: Arc<NodeContext>, pod: Arc<Pod>, record: Option<PodRecord>) -> Worker {
        let m = &pod.metadata;
        let record = record.unwrap_or_else(|| PodRecord {
            uid: m.uid.clone(),
            namespace: m.namespace.clone(),
            name: m.name.clone(),
            start_time: Some(now()),
            ..Default::default()
        });
        let reporter = Reporter::spawn(ctx.client.clone(), m.namespace.clone(), m.name.clone());
        Worker {
            ctx,
            pod,
            record,
            running: HashMap::new(),
            generation: 0,
            events: FuturesUnordered::new(),
            reporter,
            device_env: BTreeMap::new(),
            reason: String::new(),
            message: String::new(),
            terminating: false,
            awaiting: Vec::new(),
        }
    }

    fn key(&self) -> String {
        format!("{}/{}", self.record.namespace, self.record.name)
    }

    fn dir_name(&self) -> String {
        format!(
            "{}_{}_{}",
            self.record.namespace, self.record.name, self.record.uid
        )
    }

    fn save(&self) {
        if let Some(state) = &self.ctx.state
            && let Err(e) = state.save(&self.record)
        {
            tracing::warn!(error = %e, "cannot save the pod's record");
        }
    }

    fn is_init(&self, name: &str) -> bool {
        self.pod.spec.init_containers.iter().any(|c| c.name == name)
    }

    fn spec_of(&self, name: &str) -> Option<ContainerSpecApi> {
        self.pod.container(name).cloned()
    }

    /// Runs the pod until it is deleted (or the agent stops).
    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<PodMsg>) {
        if self.record.final_phase.is_empty() {
            self.begin();
        }
        self.save();
        self.report();
        loop {
            if self.pod.metadata.deletion_timestamp.is_some() {
                let grace = self.pod.metadata.deletion_grace_period_seconds.unwrap_or(0);
                self.terminate(grace, &mut rx).await;
                self.finish(true).await;
                return;
            }
            tokio::select! {
                Some(ev) = self.events.next(), if !self.events.is_empty() => self.handle(ev).await,
                msg = rx.recv() => match msg {
                    Some(PodMsg::Update(pod)) => {
                        self.pod = pod;
                        self.retry_awaiting();
                    }
                    Some(PodMsg::Deleted(pod)) => {
                        let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(0);
                        self.terminate(grace, &mut rx).await;
                        self.finish(false).await;
                        return;
                    }
                    // The agent is stopping: leave the processes running for the next one.
                    None => return,
                },
            }
        }
    }

    /// Allocates devices, re-adopts recorded processes and starts what should run.
    fn begin(&mut self) {
        if let Err(message) = self.allocate() {
            tracing::warn!(%message, "cannot allocate the pod's devices");
            self.ctx.release_devices(&self.record.uid);
            self.reason = "UnexpectedAdmissionError".into();
            self.message = message;
            self.record.final_phase = pod_phase::FAILED.into();
            return;
        }
        let recorded: Vec<(String, RunRecord)> = self
            .record
            .containers
            .iter()
            .filter_map(|(n, c)| c.running.map(|r| (n.clone(), r)))
            .collect();
        for (name, run) in recorded {
            let spec = self.container_spec(&name);
            let adopted = spec
                .as_ref()
                .and_then(|s| self.ctx.runtime.attach(s, run.process));
            match adopted {
                Some(c) => {
                    tracing::info!(container = %name, pid = run.process.pid, "re-adopted a running container");
                    self.watch(name, Arc::from(c));
                }
                None => {
                    let exit = spec
                        .as_ref()
                        .map(|s| self.ctx.runtime.ended_while_away(s))
                        .unwrap_or_else(ExitStatus::unknown);
                    tracing::warn!(container = %name, code = exit.code, unknown = exit.unknown, "container ended while the agent was down");
                    self.exited(&name, exit);
                }
            }
        }
        self.advance();
    }

    /// Gives each container its devices: those the binding named (checked against this node's
    /// inventory and claims), or (no scheduler) the first free healthy ones.
    fn allocate(&mut self) -> Result<(), String> {
        let pod = self.pod.clone();
        let m = &pod.metadata;
        let claim = super::Claim::new(&m.uid, &m.namespace, &m.name);
        let assigned: Vec<String> = pod
            .spec
            .device_assignments
            .iter()
            .flat_map(|a| a.ids.clone())
            .collect();
        self.ctx.claim_assigned(&claim, &assigned)?;
        let mut all = Vec::new();
        for c in pod.spec.init_containers.iter().chain(&pod.spec.containers) {
            let mut ids: Vec<String> = pod
                .spec
                .device_assignments
                .iter()
                .filter(|a| a.container == c.name)
                .flat_map(|a| a.ids.clone())
                .collect();
            if pod.spec.device_assignments.is_empty() {
                ids = match self.record.devices.is_empty() {
                    true => self.ctx.pick_free_devices(&claim, c)?,
                    false => self.ctx.recorded_devices_for(&self.record.devices, c),
                };
            }
            let alloc = match self.ctx.devices.allocate(&ids) {
                Ok(a) => a,
                Err(e) => {
                    self.ctx.release_devices(&m.uid);
                    return Err(e.to_string());
                }
            };
            self.ctx.claim_devices(&claim, &ids);
            all.extend(ids);
            self.device_env.insert(c.name.clone(), alloc.env);
        }
        self.record.devices = all;
        Ok(())
    }

    fn container_spec(&self, name: &str) -> Option<ContainerSpec> {
        let c = self.spec_of(name)?;
        let mut argv = c.command.clone();
        argv.extend(c.args.iter().cloned());
        let empty = BTreeMap::new();
        let devices = self.device_env.get(name).unwrap_or(&empty);
        let env = env::container_env(&self.pod, &c, &self.ctx.node_ip, devices);
        let vars: BTreeMap<String, String> = env.iter().cloned().collect();
        let argv = argv.iter().map(|a| env::expand(a, &vars)).collect();
        let pod_dir = self
            .ctx
            .state
            .as_ref()
            .map(|s| s.pod_dir(&self.record.namespace, &self.record.name, &self.record.uid));
        // Empty: the pod's own directory, which the runtime makes for the pod's user (the
        // state directory holding `pod_dir` is the agent's alone).
        let working_dir = std::path::PathBuf::from(&c.working_dir);
        let limits = crate::runtime::Limits {
            memory_bytes: c
                .resources
                .limits
                .get("memory")
                .map(|q| q.value().max(0) as u64),
            cpu_milli: c
                .resources
                .limits
                .get("cpu")
                .map(|q| q.milli().max(0) as u64),
            pids: self.ctx.pids_limit,
        };
        Some(ContainerSpec {
            pod_uid: self.record.uid.clone(),
            pod_key: self.key(),
            container: name.to_string(),
            argv,
            env,
            working_dir,
            log_path: pod_dir
                .map(|d| d.join(format!("{name}.log")))
                .unwrap_or_default(),
            limits,
            annotations: self.pod.metadata.annotations.clone(),
            pod_security: self.pod.spec.security_context.clone(),
            container_security: c.security_context.clone(),
        })
    }

    /// Schedules whatever should start next: the first unfinished init container, or (all init
    /// containers done) every container not started yet.
    fn advance(&mut self) {
        if self.terminating || !self.record.final_phase.is_empty() {
            return;
        }
        let inits: Vec<String> = self
            .pod
            .spec
            .init_containers
            .iter()
            .map(|c| c.name.clone())
            .collect();
        for name in inits {
            let rec = self.record.containers.entry(name.clone()).or_default();
            let succeeded =
                rec.terminated.as_ref().is_some_and(|t| t.exit.success()) && rec.waiting.is_none();
            if succeeded {
                continue;
            }
            if rec.running.is_none() && rec.terminated.is_none() && rec.waiting.is_none() {
                self.schedule_start(name, Duration::ZERO);
            }
            return;
        }
        let mains: Vec<String> = self
            .pod
            .spec
            .containers
            .iter()
            .map(|c| c.name.clone())
            .collect();
        for name in mains {
            let rec = self.record.containers.entry(name.clone()).or_default();
            if rec.running.is_none() && rec.terminated.is_none() && rec.waiting.is_none() {
                rec.waiting = Some(("ContainerCreating".into(), String::new()));
                self.schedule_start(name, Duration::ZERO);
            }
        }
    }

    fn schedule_start(&mut self, name: String, delay: Duration) {
        self.events.push(Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ev::Start { name }
        }));
    }

    fn watch(&mut self, name: String, c: Arc<dyn Container>) {
        self.generation += 1;
        let generation = self.generation;
        self.running.insert(name.clone(), (generation, c.clone()));
        self.ctx.logs.set_running(&self.dir_name(), &name, true);
        self.events.push(Box::pin(async move {
            let exit = c.wait().await;
            Ev::Exited {
                name,
                generation,
                exit,
            }
        }));
    }

    async fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Start { name } if !self.terminating => self.start(&name).await,
            Ev::Start { .. } => {}
            Ev::Exited {
                name,
                generation,
                exit,
            } => {
                if self
                    .running
                    .get(&name)
                    .is_some_and(|(g, _)| *g == generation)
                {
                    self.running.remove(&name);
                    self.exited(&name, exit);
                }
            }
        }
        self.save();
        self.report();
    }

    /// Schedules the start of the containers whose awaited annotations have arrived.
    fn retry_awaiting(&mut self) {
        let ready: Vec<String> = self
            .awaiting
            .iter()
            .filter(|n| {
                self.spec_of(n)
                    .is_none_or(|c| env::awaited_annotations(&self.pod, &c).is_empty())
            })
            .cloned()
            .collect();
        for name in ready {
            self.awaiting.retain(|n| *n != name);
            self.schedule_start(name, Duration::ZERO);
        }
    }

    async fn start(&mut self, name: &str) {
        if let Some(c) = self.spec_of(name) {
            let awaited = env::awaited_annotations(&self.pod, &c);
            if !awaited.is_empty() {
                // e.g. MASTER_ADDR before the gang's rank 0 is bound: starting now would give
                // the process an empty value it can never change.
                tracing::info!(
                    container = name,
                    ?awaited,
                    "waiting for annotations before starting"
                );
                let rec = self.record.containers.entry(name.to_string()).or_default();
                rec.waiting = Some((
                    "ContainerCreating".into(),
                    format!("waiting for annotation {}", awaited.join(", ")),
                ));
                if !self.awaiting.iter().any(|n| n == name) {
                    self.awaiting.push(name.to_string());
                }
                return;
            }
        }
        let Some(spec) = self.container_spec(name) else {
            return;
        };
        let started = self.ctx.runtime.start(&spec).await;
        let rec = self.record.containers.entry(name.to_string()).or_default();
        if let Err(e @ RuntimeError::Config { .. }) = &started {
            // As the kubelet: the container waits with the reason until the pod is deleted
            // (its security context cannot change), and nothing restarts it.
            tracing::warn!(container = name, error = %e, "cannot configure the container");
            rec.waiting = Some(("CreateContainerConfigError".into(), e.to_string()));
            return;
        }
        if let Some(t) = rec.terminated.take() {
            rec.last_terminated = Some(t);
            rec.restart_count += 1;
        }
        rec.waiting = None;
        match started {
            Ok(c) => {
                rec.running = Some(RunRecord {
                    process: c.id(),
                    started_at: now(),
                });
                tracing::info!(container = name, pid = c.id().pid, "container started");
                self.watch(name.to_string(), Arc::from(c));
            }
            Err(e) => {
                tracing::warn!(container = name, error = %e, "cannot start the container");
                let permanent = matches!(e, RuntimeError::NoCommand { .. });
                rec.terminated = Some(TerminatedRecord {
                    exit: ExitStatus::exited(128),
                    started_at: None,
                    finished_at: now(),
                    reason: "StartError".into(),
                    message: e.to_string(),
                });
                if permanent {
                    self.reason = "StartError".into();
                    self.message = e.to_string();
                    self.record.final_phase = pod_phase::FAILED.into();
                    self.stop_all();
                } else {
                    self.after_exit(name, false);
                }
            }
        }
    }

    /// Records an exit and applies the restart policy.
    fn exited(&mut self, name: &str, exit: ExitStatus) {
        self.ctx.logs.set_running(&self.dir_name(), name, false);
        let rec = self.record.containers.entry(name.to_string()).or_default();
        let run = rec.running.take();
        let finished_at = now();
        let ran_for = run.map(|r| (finished_at - r.started_at).to_std().unwrap_or_default());
        if ran_for.is_some_and(|d| d >= self.ctx.backoff.max * 2) {
            rec.backoff_step = 0;
        }
        tracing::info!(container = name, code = exit.code, signal = ?exit.signal, reason = exit.reason(), "container exited");
        let success = exit.success();
        rec.terminated = Some(TerminatedRecord {
            exit,
            started_at: run.map(|r| r.started_at),
            finished_at,
            reason: String::new(),
            message: String::new(),
        });
        self.after_exit(name, success);
    }

    fn after_exit(&mut self, name: &str, success: bool) {
        if self.terminating {
            return;
        }
        let policy = self.pod.spec.restart_policy.as_str();
        let restart = if self.is_init(name) {
            !success && policy != restart_policy::NEVER
        } else {
            match policy {
                restart_policy::NEVER => false,
                restart_policy::ON_FAILURE => !success,
                _ => true,
            }
        };
        if restart {
            let rec = self.record.containers.entry(name.to_string()).or_default();
            let delay = self.ctx.backoff.delay(rec.backoff_step);
            rec.backoff_step = rec.backoff_step.saturating_add(1).min(32);
            rec.waiting = Some((
                "CrashLoopBackOff".into(),
                format!("back-off {delay:?} restarting failed container {name}"),
            ));
            self.schedule_start(name.to_string(), delay);
        } else if self.is_init(name) && success {
            self.advance();
        }
        self.update_final_phase();
    }

    /// Sets `final_phase` once nothing runs and nothing will be restarted.
    fn update_final_phase(&mut self) {
        if !self.record.final_phase.is_empty() {
            return;
        }
        let recs = &self.record.containers;
        let done = |name: &str| {
            recs.get(name).is_some_and(|r| {
                r.running.is_none() && r.waiting.is_none() && r.terminated.is_some()
            })
        };
        let ok = |name: &str| {
            recs.get(name)
                .and_then(|r| r.terminated.as_ref())
                .is_some_and(|t| t.exit.success())
        };
        let init_failed = self
            .pod
            .spec
            .init_containers
            .iter()
            .any(|c| done(&c.name) && !ok(&c.name));
        let all_done = self.pod.spec.containers.iter().all(|c| done(&c.name));
        if init_failed {
            self.record.final_phase = pod_phase::FAILED.into();
        } else if all_done && !self.pod.spec.containers.is_empty() {
            let all_ok = self.pod.spec.containers.iter().all(|c| ok(&c.name));
            self.record.final_phase = if all_ok {
                pod_phase::SUCCEEDED
            } else {
                pod_phase::FAILED
            }
            .into();
        }
        if !self.record.final_phase.is_empty() {
            tracing::info!(phase = %self.record.final_phase, "pod finished");
            self.ctx.release_devices(&self.record.uid);
        }
    }

    fn phase(&self) -> &str {
        if !self.record.final_phase.is_empty() {
            return &self.record.final_phase;
        }
        let recs = &self.record.containers;
        let init_done = self.pod.spec.init_containers.iter().all(|c| {
            recs.get(&c.name).is_some_and(|r| {
                r.waiting.is_none() && r.terminated.as_ref().is_some_and(|t| t.exit.success())
            })
        });
        let any_started = self.pod.spec.containers.iter().any(|c| {
            recs.get(&c.name).is_some_and(|r| {
                r.running.is_some() || r.terminated.is_some() || r.last_terminated.is_some()
            })
        });
        if init_done && any_started {
            pod_phase::RUNNING
        } else {
            pod_phase::PENDING
        }
    }

    fn report(&mut self) -> u64 {
        let status = build(
            &self.pod,
            &self.record,
            self.phase(),
            &self.message,
            &self.reason,
            &self.ctx.node_ip,
        );
        self.reporter.send(status)
    }

    fn stop_all(&mut self) {
        for (_, c) in self.running.values() {
            let _ = c.signal(StopSignal::Kill);
        }
    }

    /// Stops every container: SIGTERM, up to `grace` seconds, then SIGKILL of everything.
    async fn terminate(&mut self, grace: i64, rx: &mut mpsc::UnboundedReceiver<PodMsg>) {
        self.terminating = true;
        tracing::info!(
            grace_seconds = grace,
            running = self.running.len(),
            "stopping the pod"
        );
        for (name, rec) in self.record.containers.iter_mut() {
            if rec.waiting.take().is_some()
                && rec.terminated.is_none()
                && rec.last_terminated.is_none()
            {
                rec.terminated = Some(TerminatedRecord {
                    exit: ExitStatus::exited(0),
                    started_at: None,
                    finished_at: now(),
                    reason: "PodDeleted".into(),
                    message: format!("container {name} never started"),
                });
            }
        }
        let signal = if grace <= 0 {
            StopSignal::Kill
        } else {
            StopSignal::Terminate
        };
        for (_, c) in self.running.values() {
            if let Err(e) = c.signal(signal) {
                tracing::warn!(error = %e, "cannot signal the container");
            }
        }
        let grace_end = tokio::time::Instant::now() + Duration::from_secs(grace.max(0) as u64);
        let mut killed = signal == StopSignal::Kill;
        let mut give_up = grace_end + KILL_WAIT;
        while !self.running.is_empty() {
            tokio::select! {
                Some(ev) = self.events.next(), if !self.events.is_empty() => self.handle(ev).await,
                _ = tokio::time::sleep_until(grace_end), if !killed => {
                    tracing::info!("grace period over; killing the remaining processes");
                    self.stop_all();
                    killed = true;
                    give_up = tokio::time::Instant::now() + KILL_WAIT;
                }
                _ = tokio::time::sleep_until(give_up), if killed => {
                    tracing::warn!("processes survived SIGKILL; giving up on them");
                    let names: Vec<String> = self.running.keys().cloned().collect();
                    for n in names {
                        self.running.remove(&n);
                        self.exited(&n, ExitStatus::unknown());
                    }
                }
                msg = rx.recv() => match msg {
                    Some(PodMsg::Update(pod)) => self.pod = pod,
                    Some(PodMsg::Deleted(_)) if !killed => {
                        self.stop_all();
                        killed = true;
                        give_up = tokio::time::Instant::now() + KILL_WAIT;
                    }
                    Some(PodMsg::Deleted(_)) => {}
                    None => return,
                },
            }
        }
        if self.record.final_phase.is_empty() {
            let all_ok = self
                .record
                .containers
                .values()
                .all(|r| r.terminated.as_ref().is_none_or(|t| t.exit.success()));
            self.record.final_phase = if all_ok {
                pod_phase::SUCCEEDED
            } else {
                pod_phase::FAILED
            }
            .into();
        }
        self.save();
    }

    /// Reports the final status, deletes the pod object (when it still exists) and forgets it.
    async fn finish(mut self, delete: bool) {
        if delete {
            let seq = self.report();
            self.reporter.flushed(seq).await;
            let api = self.ctx.client.namespaced::<Pod>(&self.record.namespace);
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                precondition_uid: Some(self.record.uid.clone()),
                ..Default::default()
            };
            let mut retry = Duration::from_millis(200);
            loop {
                match api.delete(&self.record.name, &params).await {
                    Ok(_) => break,
                    Err(e) if e.is_not_found() || e.is_conflict() => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot delete the pod; will retry");
                        tokio::time::sleep(retry).await;
                        retry = (retry * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
        self.ctx.release_devices(&self.record.uid);
        for name in self.record.containers.keys() {
            self.ctx.logs.set_running(&self.dir_name(), name, false);
        }
        let runtime = self.ctx.runtime.clone();
        let uid = self.record.uid.clone();
        let names: Vec<String> = self.record.containers.keys().cloned().collect();
        let cleaned = tokio::task::spawn_blocking(move || {
            for name in names {
                runtime.cleanup(&uid, &name);
            }
        });
        if let Err(e) = cleaned.await {
            tracing::warn!(error = %e, "cgroup cleanup failed");
        }
        if let Some(state) = &self.ctx.state {
            state.remove(&self.record.namespace, &self.record.name, &self.record.uid);
        }
        tracing::info!("pod removed from the node");
    }
}
