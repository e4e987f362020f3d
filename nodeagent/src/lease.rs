//! Node leases: `coordination.k8s.io/v1` Lease objects named after each node in
//! `kube-node-lease`, renewed every few seconds. [`LeaseKeeper`] renews one lease without a
//! read per renewal (it updates the copy it last wrote, and re-reads only on conflict);
//! [`renew_all`] renews many with bounded concurrency (hollow clusters).

use drover_api::coordination::Lease;
use drover_client::{Api, Client, ClientError};

/// The namespace of node leases (Kubernetes' name).
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// Seconds a lease stays valid after its renewal (Kubernetes' kubelet default).
pub const DEFAULT_LEASE_DURATION_SECONDS: i32 = 15;

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("cannot renew the lease of node {node}: {source}")]
    Renew {
        node: String,
        #[source]
        source: ClientError,
    },
}

/// Renews one node's lease.
#[derive(Debug)]
pub struct LeaseKeeper {
    node: String,
    duration_seconds: i32,
    last: Option<Lease>,
}

impl LeaseKeeper {
    pub fn new(node: impl Into<String>, duration_seconds: i32) -> Self {
        LeaseKeeper {
            node: node.into(),
            duration_seconds,
            last: None,
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The lease as last written.
    pub fn last(&self) -> Option<&Lease> {
        self.last.as_ref()
    }

    /// Creates or renews the lease (one write when nothing else touched it).
    pub async fn renew(&mut self, client: &Client) -> Result<(), LeaseError> {
        let api: Api<Lease> = client.namespaced(NODE_LEASE_NAMESPACE);
        let err = |source| LeaseError::Renew {
            node: self.node.clone(),
            source,
        };
        for _ in 0..2 {
            let now = chrono::Utc::now();
            let result = match self.last.take() {
                Some(mut lease) => {
                    lease.spec.renew_time = Some(now);
                    lease.spec.holder_identity = Some(self.node.clone());
                    lease.spec.lease_duration_seconds = Some(self.duration_seconds);
                    api.update(&lease).await
                }
                None => match api.get_opt(&self.node).await.map_err(err)? {
                    Some(mut lease) => {
                        lease.spec.renew_time = Some(now);
                        lease.spec.holder_identity = Some(self.node.clone());
                        lease.spec.lease_duration_seconds = Some(self.duration_seconds);
                        api.update(&lease).await
                    }
                    None => {
                        let mut lease = Lease::new(NODE_LEASE_NAMESPACE, &self.node);
                        lease.spec.holder_identity = Some(self.node.clone());
                        lease.spec.lease_duration_seconds = Some(self.duration_seconds);
                        lease.spec.acquire_time = Some(now);
                        lease.spec.renew_time = Some(now);
                        client.all().create(&lease).await
                    }
                },
            };
            match result {
                Ok(lease) => {
                    self.last = Some(lease);
                    return Ok(());
                }
                // Someone else wrote it (or it vanished): re-read and try once more.
                Err(e) if e.is_conflict() || e.is_not_found() || e.is_already_exists() => continue,
                Err(e) => return Err(err(e)),
            }
        }
        Err(err(ClientError::Config("the lease kept changing".into())))
    }
}

/// Renews every lease in `keepers`, at most `concurrency` at a time; returns how many failed.
pub async fn renew_all(client: &Client, keepers: &mut [LeaseKeeper], concurrency: usize) -> usize {
    let mut failed = 0;
    for chunk in keepers.chunks_mut(concurrency.max(1)) {
        let results = futures::future::join_all(chunk.iter_mut().map(|k| k.renew(client))).await;
        for e in results.into_iter().filter_map(Result::err) {
            tracing::debug!(error = %e, "lease renewal failed");
            failed += 1;
        }
    }
    failed
}
