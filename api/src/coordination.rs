//! `coordination.k8s.io/v1` Lease: a lock with a holder and an expiry, renewed by heartbeats.
//!
//! Node agents renew a Lease per node (in namespace `drover-node-lease`, as Kubernetes' kubelet
//! does in `kube-node-lease`); leader election of the controllers and the scheduler uses Leases
//! too.

use serde::{Deserialize, Serialize};

use crate::error::FieldErrors;
use crate::meta::{ObjectMeta, Time};
use crate::resource::Resource;
use crate::validation::{check_min, check_positive};

/// A time with microsecond precision (Kubernetes' `MicroTime`), serialised as
/// `2024-01-02T03:04:05.123456Z`.
pub type MicroTime = Time;

/// Serde helpers for `Option<MicroTime>` fields: writes six fractional digits, reads any
/// RFC 3339 time.
pub mod micro_time {
    use chrono::SecondsFormat;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::MicroTime;

    pub fn serialize<S: Serializer>(t: &Option<MicroTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MicroTime>, D::Error> {
        Option::<MicroTime>::deserialize(d)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Lease {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: LeaseSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaseSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_duration_seconds: Option<i32>,
    #[serde(default, with = "micro_time", skip_serializing_if = "Option::is_none")]
    pub acquire_time: Option<MicroTime>,
    #[serde(default, with = "micro_time", skip_serializing_if = "Option::is_none")]
    pub renew_time: Option<MicroTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_transitions: Option<i32>,
    /// Accepted for compatibility (coordinated leader election).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_holder: Option<String>,
    /// Accepted for compatibility (coordinated leader election).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
}

impl Lease {
    /// A lease with a name and a namespace, its type fields set.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        let mut lease = Lease {
            metadata: ObjectMeta::named(namespace, name),
            ..Default::default()
        };
        lease.set_type_meta();
        lease
    }

    /// When the lease runs out: the last renewal (or acquisition) plus its duration. `None` when
    /// it has never been held.
    pub fn expires_at(&self) -> Option<Time> {
        let last = self.spec.renew_time.or(self.spec.acquire_time)?;
        let secs = self.spec.lease_duration_seconds.unwrap_or(0);
        Some(last + chrono::Duration::seconds(i64::from(secs)))
    }

    /// Whether the lease is unheld or has run out at `now`.
    pub fn is_expired(&self, now: Time) -> bool {
        let unheld = self
            .spec
            .holder_identity
            .as_deref()
            .is_none_or(str::is_empty);
        unheld || self.expires_at().is_none_or(|t| t <= now)
    }
}

impl Resource for Lease {
    const GROUP: &'static str = "coordination.k8s.io";
    const VERSION: &'static str = "v1";
    const KIND: &'static str = "Lease";
    const PLURAL: &'static str = "leases";
    const SINGULAR: &'static str = "lease";
    const NAMESPACED: bool = true;

    crate::impl_resource_meta!(Lease);

    fn validate(&self) -> Result<(), FieldErrors> {
        let mut errs = FieldErrors::new();
        if let Err(e) = crate::validation::validate_object_meta(&self.metadata, true) {
            errs.extend(e);
        }
        check_positive(
            &mut errs,
            "spec.leaseDurationSeconds",
            self.spec.lease_duration_seconds,
        );
        check_min(
            &mut errs,
            "spec.leaseTransitions",
            self.spec.lease_transitions,
            0,
        );
        errs.into_result()
    }

    fn spec_differs(&self, other: &Self) -> bool {
        self.spec != other.spec
    }
}
