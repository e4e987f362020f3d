//! Leader election through a `coordination.k8s.io/v1` Lease (Kubernetes' leaderelection): a
//! candidate takes the lease when it is free or when the holder has not renewed it for the
//! lease duration (measured on the candidate's own clock from when it last saw the lease change,
//! so clock skew between machines does not matter); the leader renews it every retry period and
//! steps down when it has not managed to for the renew deadline; on shutdown it releases it.
//!
//! The controller manager and the scheduler both elect through it, so several copies of each can
//! run and exactly one acts.

use std::future::Future;
use std::time::Duration;

use drover_api::coordination::{Lease, LeaseSpec};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::stop::Stop;
use crate::{Api, Client, ClientError};

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("lease {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: ClientError,
    },
}

/// A candidate identity unique to this process: host name, pid and a random part.
pub fn default_identity() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "drover".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{host}_{}_{nanos:08x}", std::process::id())
}

/// Settings of one election.
#[derive(Clone, Debug)]
pub struct ElectionConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// One candidate's view of the lease.
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: ElectionConfig,
    clock: Clock,
    observed: Option<(LeaseSpec, Instant)>,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl LeaderElector {
    pub fn new(client: &Client, cfg: ElectionConfig, clock: Clock) -> Self {
        LeaderElector {
            api: client.namespaced::<Lease>(&cfg.namespace),
            cfg,
            clock,
            observed: None,
        }
    }

    fn err(&self, source: ClientError) -> LeaderError {
        LeaderError::Api {
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.name.clone(),
            source,
        }
    }

    fn duration_secs(&self) -> i32 {
        i32::try_from(self.cfg.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// Takes or renews the lease; `Ok(true)` when this candidate holds it afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaderError> {
        let now = self.clock.now();
        let current = self
            .api
            .get_opt(&self.cfg.name)
            .await
            .map_err(|e| self.err(e))?;
        let Some(mut lease) = current else {
            let mut lease = Lease::new(&self.cfg.namespace, &self.cfg.name);
            lease.spec = LeaseSpec {
                holder_identity: Some(self.cfg.identity.clone()),
                lease_duration_seconds: Some(self.duration_secs()),
                acquire_time: Some(now),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            };
            return match self.api.client().all().create(&lease).await {
                Ok(l) => {
                    self.observe(&l.spec);
                    Ok(true)
                }
                Err(e) if e.is_already_exists() || e.is_conflict() => Ok(false),
                Err(e) => Err(self.err(e)),
            };
        };
        self.observe(&lease.spec);
        let holder = lease.spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.cfg.identity;
        if !mine && !holder.is_empty() && !self.observed_expired() {
            return Ok(false);
        }
        if !mine {
            lease.spec.acquire_time = Some(now);
            lease.spec.lease_transitions =
                Some(lease.spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        lease.spec.holder_identity = Some(self.cfg.identity.clone());
        lease.spec.lease_duration_seconds = Some(self.duration_secs());
        lease.spec.renew_time = Some(now);
        match self.api.update(&lease).await {
            Ok(l) => {
                self.observe(&l.spec);
                Ok(true)
            }
            Err(e) if e.is_conflict() || e.is_not_found() => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    fn observe(&mut self, spec: &LeaseSpec) {
        match &self.observed {
            Some((s, _)) if s == spec => {}
            _ => self.observed = Some((spec.clone(), Instant::now())),
        }
    }

    fn observed_expired(&self) -> bool {
        match &self.observed {
            Some((spec, at)) => {
                let secs = spec.lease_duration_seconds.unwrap_or(0).max(0) as u64;
                Instant::now() >= *at + Duration::from_secs(secs)
            }
            None => true,
        }
    }

    /// Gives the lease up (holder cleared) if this candidate holds it.
    pub async fn release(&mut self) -> Result<(), LeaderError> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.cfg.name)
            .await
            .map_err(|e| self.err(e))?
        else {
            return Ok(());
        };
        if lease.spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        lease.spec.holder_identity = None;
        lease.spec.renew_time = Some(self.clock.now());
        lease.spec.lease_duration_seconds = Some(1);
        match self.api.update(&lease).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_conflict() || e.is_not_found() => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Campaigns until `stop`; while leading, runs `lead(stop_leading)` and stops it when the
    /// lease is lost. Releases the lease on shutdown. Dropping the returned future (a crash)
    /// stops the work at once and leaves the lease to expire.
    pub async fn run<F, Fut>(mut self, stop: Stop, mut lead: F)
    where
        F: FnMut(Stop) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let retry = self.cfg.retry_period;
        loop {
            // Candidate.
            loop {
                if stop.is_stopped() {
                    return;
                }
                match self.try_acquire_or_renew().await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot acquire the leader lease"),
                }
                tokio::select! {
                    _ = stop.wait() => return,
                    _ = tokio::time::sleep(retry) => {}
                }
            }
            tracing::info!(identity = %self.cfg.identity, "became leader");
            let (tx, leading) = Stop::new();
            let mut work = JoinSet::new();
            work.spawn(lead(leading));
            let mut last_renew = Instant::now();
            let shutting_down = loop {
                tokio::select! {
                    _ = stop.wait() => break true,
                    _ = work.join_next() => {
                        // The work ended on its own; keep leading but idle until stopped.
                        stop.wait().await;
                        break true;
                    }
                    _ = tokio::time::sleep(retry) => {}
                }
                match self.try_acquire_or_renew().await {
                    Ok(true) => last_renew = Instant::now(),
                    Ok(false) => {
                        tracing::warn!("lost the leader lease");
                        break false;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot renew the leader lease"),
                }
                if last_renew.elapsed() >= self.cfg.renew_deadline {
                    tracing::warn!("could not renew the leader lease in time; stepping down");
                    break false;
                }
            };
            tx.stop();
            while work.join_next().await.is_some() {}
            if shutting_down {
                if let Err(e) = self.release().await {
                    tracing::warn!(error = %e, "cannot release the leader lease");
                }
                return;
            }
        }
    }
}
