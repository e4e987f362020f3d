//! The pods waiting for a place and the gangs they form, and the objects (PodGroups,
//! PriorityClasses) the informers last saw that decide how a pending pod is scheduled.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use drover_api::core::{Pod, preemption_policy};
use drover_api::scheduling::{PodGroup, PriorityClass};
use tokio::time::Instant;

use crate::cache::PodInfo;
use crate::queue::UnitKey;

/// The unit a pod is scheduled in: its gang, or itself.
pub(super) fn unit_of(info: &PodInfo) -> UnitKey {
    match &info.gang {
        Some(g) => UnitKey::Gang(g.clone()),
        None => UnitKey::Pod(info.key.clone()),
    }
}

/// Pods not yet bound that this scheduler places, by key, with their gangs.
#[derive(Default)]
pub(super) struct Pending {
    pods: HashMap<Arc<str>, Arc<PodInfo>>,
    /// Gang → the keys of its pending members.
    gangs: HashMap<Arc<str>, BTreeSet<Arc<str>>>,
    /// Gang → when its first member arrived (the member-arrival grace and the schedule
    /// timeout count from it); cleared when the gang is placed.
    gang_since: HashMap<Arc<str>, Instant>,
}

impl Pending {
    pub(super) fn get(&self, key: &str) -> Option<&Arc<PodInfo>> {
        self.pods.get(key)
    }

    pub(super) fn contains(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    /// Adds or replaces the pod `key`; a gang's clock starts with its first member.
    pub(super) fn insert(&mut self, key: Arc<str>, info: Arc<PodInfo>, now: Instant) {
        if let Some(g) = &info.gang {
            self.gangs.entry(g.clone()).or_default().insert(key.clone());
            self.gang_since.entry(g.clone()).or_insert(now);
        }
        self.pods.insert(key, info);
    }

    /// Removes the pod `key`: the pod, and whether its unit has no pending pod left.
    pub(super) fn remove(&mut self, key: &str) -> Option<(Arc<PodInfo>, bool)> {
        let info = self.pods.remove(key)?;
        let last = match &info.gang {
            Some(g) => {
                let set = self.gangs.entry(g.clone()).or_default();
                set.remove(key);
                let empty = set.is_empty();
                if empty {
                    self.gangs.remove(g);
                }
                empty
            }
            None => true,
        };
        Some((info, last))
    }

    /// The keys of gang `g`'s pending members, in key order.
    pub(super) fn members(&self, g: &str) -> impl Iterator<Item = &Arc<str>> {
        self.gangs.get(g).into_iter().flatten()
    }

    /// When gang `g`'s first pending member arrived.
    pub(super) fn gang_since(&self, g: &str) -> Option<Instant> {
        self.gang_since.get(g).copied()
    }

    /// Gang `g` is placed: its clock stops.
    pub(super) fn gang_placed(&mut self, g: &str) {
        self.gang_since.remove(g);
    }
}

/// PodGroups and PriorityClasses as the informers last saw them.
#[derive(Default)]
pub(super) struct Objects {
    pub(super) groups: HashMap<Arc<str>, Arc<PodGroup>>,
    pub(super) classes: HashMap<String, Arc<PriorityClass>>,
}

impl Objects {
    /// Priority from the pod, else its class, else the global default class.
    pub(super) fn resolve(&self, pod: &Arc<Pod>) -> PodInfo {
        let class = if pod.spec.priority_class_name.is_empty() {
            self.classes.values().find(|c| c.global_default).cloned()
        } else {
            self.classes.get(&pod.spec.priority_class_name).cloned()
        };
        let priority = pod
            .spec
            .priority
            .unwrap_or_else(|| class.as_ref().map_or(0, |c| c.value));
        let never = pod.spec.preemption_policy.as_deref() == Some(preemption_policy::NEVER)
            || class
                .as_ref()
                .is_some_and(|c| c.preemption_policy.as_deref() == Some(preemption_policy::NEVER));
        PodInfo::with_priority(pod.clone(), priority, never)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pod;

    #[test]
    fn a_unit_is_done_with_its_last_pending_pod() {
        let now = Instant::now();
        let mut p = Pending::default();
        let solo = pod("ns", "solo").info();
        let (a, b) = (
            pod("ns", "a").gang("g").info(),
            pod("ns", "b").gang("g").info(),
        );
        let g = a.gang.clone().expect("a gang member");
        for info in [&solo, &a, &b] {
            p.insert(info.key.clone(), info.clone(), now);
        }
        assert_eq!(p.members(&g).count(), 2);
        assert_eq!(p.gang_since(&g), Some(now));
        // (removed, whether it was its unit's last pending pod)
        let cases = [
            (&solo.key, Some(true)),
            (&a.key, Some(false)),
            (&a.key, None),
            (&b.key, Some(true)),
        ];
        for (key, want) in cases {
            assert_eq!(p.remove(key).map(|(_, last)| last), want, "{key}");
        }
        assert_eq!(p.members(&g).count(), 0);
        assert!(!p.contains(&b.key));
        p.gang_placed(&g);
        assert_eq!(p.gang_since(&g), None);
    }
}
