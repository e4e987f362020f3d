//! The simulated runtime of hollow nodes: a container "runs" for the number of seconds in the
//! pod's `drover.dev/sim-duration` annotation (or a default), then exits with the code in
//! `drover.dev/sim-exit-code` (default 0). Nothing is executed; a stop signal ends it at once.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    Container, ContainerSpec, ExitStatus, ProcessId, Runtime, RuntimeError, SIMULATED_RUNTIME,
    StopSignal,
};

/// Annotation: how long a simulated container runs, in seconds (fractions allowed).
pub const SIM_DURATION_ANNOTATION: &str = "drover.dev/sim-duration";
/// Annotation: the exit code of a simulated container.
pub const SIM_EXIT_CODE_ANNOTATION: &str = "drover.dev/sim-exit-code";
/// How long a simulated container runs when the pod does not say.
pub const DEFAULT_SIM_DURATION: Duration = Duration::from_secs(30);

/// Pretends to run containers.
#[derive(Debug)]
pub struct SimulatedRuntime {
    default_duration: Duration,
}

impl Default for SimulatedRuntime {
    fn default() -> Self {
        Self::new(DEFAULT_SIM_DURATION)
    }
}

impl SimulatedRuntime {
    pub fn new(default_duration: Duration) -> Self {
        SimulatedRuntime { default_duration }
    }

    /// The duration and exit code a pod asks for.
    pub fn plan(&self, spec: &ContainerSpec) -> (Duration, i32) {
        let duration = spec
            .annotations
            .get(SIM_DURATION_ANNOTATION)
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map_or(self.default_duration, Duration::from_secs_f64);
        let code = spec
            .annotations
            .get(SIM_EXIT_CODE_ANNOTATION)
            .and_then(|s| s.trim().parse::<i32>().ok())
            .unwrap_or(0);
        (duration, code)
    }
}

#[async_trait::async_trait]
impl Runtime for SimulatedRuntime {
    fn name(&self) -> &'static str {
        SIMULATED_RUNTIME
    }

    async fn start(&self, spec: &ContainerSpec) -> Result<Box<dyn Container>, RuntimeError> {
        let (duration, code) = self.plan(spec);
        Ok(Box::new(SimulatedContainer {
            deadline: Instant::now() + duration,
            code,
            stopped: Mutex::new(None),
            notify: Notify::new(),
        }))
    }

    fn attach(&self, _spec: &ContainerSpec, _id: ProcessId) -> Option<Box<dyn Container>> {
        None
    }

    fn cleanup(&self, _pod_uid: &str, _container: &str) {}
}

struct SimulatedContainer {
    deadline: Instant,
    code: i32,
    stopped: Mutex<Option<ExitStatus>>,
    notify: Notify,
}

impl SimulatedContainer {
    fn stopped(&self) -> Option<ExitStatus> {
        self.stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[async_trait::async_trait]
impl Container for SimulatedContainer {
    fn id(&self) -> ProcessId {
        ProcessId::default()
    }

    async fn wait(&self) -> ExitStatus {
        loop {
            if let Some(exit) = self.stopped() {
                return exit;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(self.deadline) => return ExitStatus::exited(self.code),
                _ = self.notify.notified() => {}
            }
        }
    }

    fn signal(&self, signal: StopSignal) -> Result<(), RuntimeError> {
        let exit = match signal {
            StopSignal::Terminate => ExitStatus::signalled(15),
            StopSignal::Kill => ExitStatus::signalled(9),
        };
        self.stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(exit);
        self.notify.notify_one();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(duration: &str, code: &str) -> ContainerSpec {
        let mut s = ContainerSpec::default();
        s.annotations
            .insert(SIM_DURATION_ANNOTATION.into(), duration.into());
        s.annotations
            .insert(SIM_EXIT_CODE_ANNOTATION.into(), code.into());
        s
    }

    #[tokio::test(start_paused = true)]
    async fn runs_for_the_annotated_time_and_exits_as_told() {
        let rt = SimulatedRuntime::default();
        let started = Instant::now();
        let c = rt.start(&spec("2.5", "4")).await.expect("starts");
        let exit = c.wait().await;
        assert_eq!(exit, ExitStatus::exited(4));
        assert_eq!(started.elapsed(), Duration::from_millis(2500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_signal_ends_it_at_once() {
        let rt = SimulatedRuntime::default();
        let c = rt.start(&spec("100", "0")).await.expect("starts");
        c.signal(StopSignal::Terminate).expect("signal");
        assert_eq!(c.wait().await.signal, Some(15));
    }

    #[test]
    fn bad_annotations_fall_back_to_defaults() {
        let rt = SimulatedRuntime::new(Duration::from_secs(7));
        assert_eq!(rt.plan(&spec("soon", "x")), (Duration::from_secs(7), 0));
        assert_eq!(rt.plan(&spec("-1", "2")), (Duration::from_secs(7), 2));
    }
}
