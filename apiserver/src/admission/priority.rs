//! `Priority` (Kubernetes' admission plugin of the same name): a pod's priority comes from its
//! PriorityClass, resolved once when the pod is created.
//!
//! - A pod naming a class that does not exist is refused (Forbidden: `no PriorityClass with name
//!   X was found`). The built-in classes `system-cluster-critical` and `system-node-critical`
//!   always exist.
//! - A pod naming no class gets the `globalDefault` class (the lowest-valued, should several say
//!   so); with none, its priority stays unset, which every reader takes as 0.
//! - The class's value is written to `spec.priority`, and its `preemptionPolicy` when the pod has
//!   the default one; a `spec.priority` the pod sets that disagrees with its class is refused.
//! - A PodGroup naming a class that does not exist is refused too (on create and update: a
//!   gang's class may change while it waits).
//!
//! Pods stored before this plugin existed keep working: the scheduler still resolves the class
//! of a pod without `spec.priority` itself.

use std::sync::{Arc, LazyLock};

use drover_api::core::{Pod, preemption_policy};
use drover_api::scheduling::{PodGroup, PriorityClass};
use drover_api::{KindInfo, Resource, Status};

use super::{Attributes, Operation, Plugin};
use crate::cache::{Filter, WatchCache, kind_id};
use crate::write::{Prepared, encode};

/// Kubernetes' built-in classes: `(name, value)`.
pub const SYSTEM_PRIORITY_CLASSES: &[(&str, i32)] = &[
    ("system-cluster-critical", 2_000_000_000),
    ("system-node-critical", 2_000_001_000),
];

static CLASSES: LazyLock<Arc<str>> =
    LazyLock::new(|| kind_id(PriorityClass::GROUP, PriorityClass::PLURAL));

/// The plugin; see the module documentation.
#[derive(Debug, Default)]
pub struct Priority;

/// What a class gives a pod.
struct Resolved {
    name: String,
    value: i32,
    preemption_policy: Option<String>,
}

impl Resolved {
    fn of(class: &PriorityClass) -> Self {
        Resolved {
            name: class.metadata.name.clone(),
            value: class.value,
            preemption_policy: class.preemption_policy.clone(),
        }
    }
}

fn not_found(name: &str) -> Status {
    Status::forbidden(format!("no PriorityClass with name {name} was found"))
}

/// The class named `name` (stored, or built in).
fn named(cache: &WatchCache, name: &str) -> Option<Resolved> {
    if let Some(&(n, value)) = SYSTEM_PRIORITY_CLASSES.iter().find(|(n, _)| *n == name) {
        return Some(Resolved {
            name: n.to_string(),
            value,
            preemption_policy: Some(preemption_policy::PREEMPT_LOWER_PRIORITY.into()),
        });
    }
    let stored = cache.get(&CLASSES, "", name)?;
    let class = stored.object.as_any().downcast_ref::<PriorityClass>()?;
    Some(Resolved::of(class))
}

/// The global default class: the lowest-valued of those marked `globalDefault`, as Kubernetes.
fn global_default(cache: &WatchCache) -> Option<Resolved> {
    let filter = Filter {
        kind: CLASSES.clone(),
        ..Default::default()
    };
    let (classes, _, _) = cache.list(&filter, None, 0);
    classes
        .iter()
        .filter_map(|o| o.object.as_any().downcast_ref::<PriorityClass>())
        .filter(|c| c.global_default)
        .min_by_key(|c| c.value)
        .map(Resolved::of)
}

impl Priority {
    fn admit_pod(&self, pod: &Pod, cache: &WatchCache) -> Result<Option<Prepared>, Status> {
        let class = if pod.spec.priority_class_name.is_empty() {
            global_default(cache)
        } else {
            Some(
                named(cache, &pod.spec.priority_class_name)
                    .ok_or_else(|| not_found(&pod.spec.priority_class_name))?,
            )
        };
        let computed = class.as_ref().map_or(0, |c| c.value);
        if let Some(given) = pod.spec.priority
            && given != computed
        {
            return Err(Status::forbidden(format!(
                "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {computed} from the given PriorityClass name"
            )));
        }
        let Some(class) = class else {
            return Ok(None);
        };
        let mut new = pod.clone();
        new.spec.priority_class_name = class.name;
        new.spec.priority = Some(class.value);
        // The pod's policy was defaulted (to PreemptLowerPriority) before admission; a class
        // that never preempts wins, as the scheduler has always read it.
        let defaulted = new.spec.preemption_policy.as_deref()
            == Some(preemption_policy::PREEMPT_LOWER_PRIORITY);
        if let Some(policy) = class.preemption_policy
            && (new.spec.preemption_policy.is_none() || defaulted)
        {
            new.spec.preemption_policy = Some(policy);
        }
        if new == *pod {
            return Ok(None);
        }
        encode(new, false).map(Some)
    }
}

impl Plugin for Priority {
    fn name(&self) -> &'static str {
        "Priority"
    }

    fn handles(&self, info: &KindInfo, operation: Operation) -> bool {
        (info.kind == Pod::KIND && info.group == Pod::GROUP && operation == Operation::Create)
            || (info.kind == PodGroup::KIND && info.group == PodGroup::GROUP)
    }

    fn admit(&self, attrs: &Attributes<'_>) -> Result<Option<Prepared>, Status> {
        let any = attrs.object.as_any();
        if let Some(pod) = any.downcast_ref::<Pod>() {
            return self.admit_pod(pod, attrs.cache);
        }
        if let Some(group) = any.downcast_ref::<PodGroup>() {
            let name = &group.spec.priority_class_name;
            if !name.is_empty() && named(attrs.cache, name).is_none() {
                return Err(not_found(name));
            }
        }
        Ok(None)
    }
}
