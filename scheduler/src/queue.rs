//! The scheduling queue: active (ordered by priority, then age), backoff (waiting out a delay
//! after a failure) and unschedulable (waiting for the cluster to change). The unit is a pod or
//! a whole gang, which moves through the queue as one.
//!
//! Time is `tokio::time::Instant`, so tests drive backoff with tokio's paused clock.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// First backoff after a failed attempt.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest backoff.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Unschedulable units are retried at least this often, even without cluster events.
pub const DEFAULT_UNSCHEDULABLE_FLUSH: Duration = Duration::from_secs(60);

/// What moves through the queue.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnitKey {
    /// `namespace/name`
    Pod(Arc<str>),
    /// `namespace/podgroup`
    Gang(Arc<str>),
}

impl std::fmt::Display for UnitKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnitKey::Pod(k) => write!(f, "pod {k}"),
            UnitKey::Gang(k) => write!(f, "gang {k}"),
        }
    }
}

/// Backoff settings.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub unschedulable_flush: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            unschedulable_flush: DEFAULT_UNSCHEDULABLE_FLUSH,
        }
    }
}

#[derive(Debug)]
struct Entry {
    priority: i32,
    /// Creation time in milliseconds (older first).
    created: i64,
    attempts: u32,
    last_attempt: Option<Instant>,
    place: Place,
    seq: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Active,
    Backoff(Instant),
    Unschedulable(Instant),
    InFlight,
}

#[derive(Debug, PartialEq, Eq)]
struct Ready {
    priority: i32,
    created: Reverse<i64>,
    seq: Reverse<u64>,
    key: UnitKey,
}

impl Ord for Ready {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.priority, self.created, self.seq).cmp(&(o.priority, o.created, o.seq))
    }
}
impl PartialOrd for Ready {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// The queue.
#[derive(Debug, Default)]
pub struct SchedulingQueue {
    config: QueueConfig,
    entries: HashMap<UnitKey, Entry>,
    active: BinaryHeap<Ready>,
    backoff: BTreeMap<(Instant, u64), UnitKey>,
    /// Unschedulable units a pod placed elsewhere may let in (refused by pod affinity or
    /// topology spread): woken by [`SchedulingQueue::on_pod_placed`] as well as by any
    /// cluster change. Entries no longer unschedulable are skipped when woken.
    on_pods: HashSet<UnitKey>,
    seq: u64,
}

impl SchedulingQueue {
    pub fn new(config: QueueConfig) -> SchedulingQueue {
        SchedulingQueue {
            config,
            ..Default::default()
        }
    }

    fn push_active(&mut self, key: UnitKey) {
        self.seq += 1;
        let seq = self.seq;
        if let Some(e) = self.entries.get_mut(&key) {
            e.place = Place::Active;
            e.seq = seq;
            self.active.push(Ready {
                priority: e.priority,
                created: Reverse(e.created),
                seq: Reverse(seq),
                key,
            });
        }
    }

    /// Adds a unit (or updates its priority); a new unit is active at once.
    pub fn add(&mut self, key: UnitKey, priority: i32, created: i64) {
        match self.entries.get_mut(&key) {
            Some(e) => {
                if e.priority != priority {
                    e.priority = priority;
                    if e.place == Place::Active {
                        self.push_active(key);
                    }
                }
            }
            None => {
                self.entries.insert(
                    key.clone(),
                    Entry {
                        priority,
                        created,
                        attempts: 0,
                        last_attempt: None,
                        place: Place::Active,
                        seq: 0,
                    },
                );
                self.push_active(key);
            }
        }
    }

    /// Forgets a unit (scheduled, deleted).
    pub fn remove(&mut self, key: &UnitKey) {
        self.on_pods.remove(key);
        if let Some(e) = self.entries.remove(key)
            && let Place::Backoff(t) = e.place
        {
            self.backoff.remove(&(t, e.seq));
        }
    }

    pub fn contains(&self, key: &UnitKey) -> bool {
        self.entries.contains_key(key)
    }

    /// The next unit to schedule, highest priority and oldest first.
    pub fn pop(&mut self, now: Instant) -> Option<UnitKey> {
        self.promote_backoff(now);
        while let Some(r) = self.active.pop() {
            let Some(e) = self.entries.get_mut(&r.key) else {
                continue;
            };
            if e.place != Place::Active || e.seq != r.seq.0 {
                continue;
            }
            e.place = Place::InFlight;
            e.last_attempt = Some(now);
            e.attempts += 1;
            return Some(r.key);
        }
        None
    }

    fn promote_backoff(&mut self, now: Instant) {
        while let Some((&(t, seq), _)) = self.backoff.first_key_value() {
            if t > now {
                break;
            }
            if let Some(key) = self.backoff.remove(&(t, seq)) {
                self.push_active(key);
            }
        }
    }

    fn backoff_for(&self, attempts: u32) -> Duration {
        let exp = attempts.saturating_sub(1).min(16);
        self.config
            .initial_backoff
            .saturating_mul(1 << exp)
            .min(self.config.max_backoff)
    }

    /// After an error (or a failed binding): retry once the backoff passes.
    pub fn backoff(&mut self, key: &UnitKey, now: Instant) {
        let Some(e) = self.entries.get(key) else {
            return;
        };
        let until = now + self.backoff_for(e.attempts);
        self.seq += 1;
        let seq = self.seq;
        if let Some(e) = self.entries.get_mut(key) {
            e.place = Place::Backoff(until);
            e.seq = seq;
        }
        self.backoff.insert((until, seq), key.clone());
    }

    /// After "does not fit": wait for a cluster change (or the periodic flush).
    pub fn unschedulable(&mut self, key: &UnitKey, now: Instant) {
        self.on_pods.remove(key);
        if let Some(e) = self.entries.get_mut(key) {
            e.place = Place::Unschedulable(now);
        }
    }

    /// After "does not fit" where a pod placed elsewhere may change the answer (the pod's
    /// affinity peers or its spread domains fill up): like [`SchedulingQueue::unschedulable`],
    /// and woken by [`SchedulingQueue::on_pod_placed`] too (Kubernetes' queueing hint for
    /// assigned pods on InterPodAffinity and PodTopologySpread).
    pub fn unschedulable_until_pod_placed(&mut self, key: &UnitKey, now: Instant) {
        if self.entries.contains_key(key) {
            self.unschedulable(key, now);
            self.on_pods.insert(key.clone());
        }
    }

    /// A pod was placed (assumed or seen bound): units that wait on pods retry, after their
    /// backoff. Each is woken once per failure, so a stream of placements costs nothing more.
    pub fn on_pod_placed(&mut self, now: Instant) {
        if self.on_pods.is_empty() {
            return;
        }
        for k in std::mem::take(&mut self.on_pods) {
            self.wake(&k, now);
        }
    }

    /// A gang still short of `minMember` pods: it waits without a backoff penalty, so the member
    /// that completes it wakes it at once (its attempts so far did not fail for lack of room).
    pub fn wait_for_members(&mut self, key: &UnitKey, now: Instant) {
        if let Some(e) = self.entries.get_mut(key) {
            e.place = Place::Unschedulable(now);
            e.attempts = 0;
            e.last_attempt = None;
        }
    }

    /// A cluster change (node added, changed or deleted, pod deleted or finished, a placement
    /// undone): unschedulable units retry, after their backoff.
    pub fn on_cluster_change(&mut self, now: Instant) {
        let keys: Vec<UnitKey> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.place, Place::Unschedulable(_)))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.wake(&k, now);
        }
    }

    /// Moves one unschedulable unit back (its gang gained a member, its PodGroup appeared).
    pub fn wake(&mut self, key: &UnitKey, now: Instant) {
        let Some(e) = self.entries.get(key) else {
            return;
        };
        if !matches!(e.place, Place::Unschedulable(_)) {
            return;
        }
        let ready = e
            .last_attempt
            .map_or(now, |t| t + self.backoff_for(e.attempts));
        if ready <= now {
            self.push_active(key.clone());
        } else {
            self.seq += 1;
            let seq = self.seq;
            if let Some(e) = self.entries.get_mut(key) {
                e.place = Place::Backoff(ready);
                e.seq = seq;
            }
            self.backoff.insert((ready, seq), key.clone());
        }
    }

    /// Retries units unschedulable for longer than the flush interval.
    pub fn flush(&mut self, now: Instant) {
        let keys: Vec<UnitKey> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                matches!(e.place, Place::Unschedulable(t) if now.duration_since(t) >= self.config.unschedulable_flush)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.push_active(k);
        }
    }

    /// When the next backoff ends.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.backoff.first_key_value().map(|((t, _), _)| *t)
    }

    /// Units waiting (active, backing off, unschedulable or in flight).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Attempts made for a unit.
    pub fn attempts(&self, key: &UnitKey) -> u32 {
        self.entries.get(key).map_or(0, |e| e.attempts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(k: &str) -> UnitKey {
        UnitKey::Pod(k.into())
    }

    #[test]
    fn a_gang_waiting_for_members_wakes_without_backoff() {
        let mut q = SchedulingQueue::new(QueueConfig::default());
        let now = Instant::now();
        let g = UnitKey::Gang("g".into());
        q.add(g.clone(), 0, 0);
        assert_eq!(q.pop(now), Some(g.clone()));
        q.wait_for_members(&g, now);
        assert_eq!(q.pop(now), None, "it waits");
        // The next member arrives a moment later: the gang is tried at once.
        q.wake(&g, now + Duration::from_millis(5));
        assert_eq!(q.pop(now + Duration::from_millis(5)), Some(g.clone()));
        // A real failure still backs off.
        q.unschedulable(&g, now);
        q.wake(&g, now + Duration::from_millis(10));
        assert_eq!(q.pop(now + Duration::from_millis(10)), None);
    }

    #[test]
    fn a_pod_placed_wakes_only_units_waiting_on_pods() {
        let mut q = SchedulingQueue::new(QueueConfig::default());
        let now = Instant::now();
        let (spread, anti) = (pod("spread"), pod("anti"));
        q.add(spread.clone(), 0, 0);
        q.add(anti.clone(), 0, 1);
        assert_eq!(q.pop(now), Some(spread.clone()));
        assert_eq!(q.pop(now), Some(anti.clone()));
        q.unschedulable_until_pod_placed(&spread, now);
        q.unschedulable(&anti, now);
        let later = now + DEFAULT_INITIAL_BACKOFF;
        q.on_pod_placed(later);
        assert_eq!(q.pop(later), Some(spread.clone()), "spread retries");
        assert_eq!(q.pop(later), None, "anti waits for a cluster change");
        // Woken once per failure: a second placement finds nothing to wake.
        q.on_pod_placed(later);
        assert_eq!(q.pop(later), None);
        // A cluster change wakes both kinds.
        q.unschedulable_until_pod_placed(&spread, later);
        let later = later + 4 * DEFAULT_INITIAL_BACKOFF;
        q.on_cluster_change(later);
        let mut woken: Vec<UnitKey> = std::iter::from_fn(|| q.pop(later)).collect();
        woken.sort();
        assert_eq!(woken, vec![anti, spread]);
    }

    /// Time is passed in explicitly, so the test never sleeps.
    #[test]
    fn priority_then_age_and_backoff() {
        let mut q = SchedulingQueue::new(QueueConfig::default());
        let now = Instant::now();
        q.add(pod("old-low"), 0, 1);
        q.add(pod("new-high"), 10, 5);
        q.add(pod("old-high"), 10, 2);
        q.add(UnitKey::Gang("g".into()), 5, 0);
        let order: Vec<UnitKey> = std::iter::from_fn(|| q.pop(now)).collect();
        assert_eq!(
            order,
            vec![
                pod("old-high"),
                pod("new-high"),
                UnitKey::Gang("g".into()),
                pod("old-low")
            ]
        );
        // Backoff doubles from the initial value.
        q.backoff(&pod("old-low"), now);
        assert_eq!(q.pop(now), None);
        assert_eq!(q.pop(now + DEFAULT_INITIAL_BACKOFF), Some(pod("old-low")));
        q.backoff(&pod("old-low"), now);
        assert_eq!(q.pop(now + DEFAULT_INITIAL_BACKOFF), None);
        assert_eq!(
            q.pop(now + 2 * DEFAULT_INITIAL_BACKOFF),
            Some(pod("old-low"))
        );
        // Unschedulable waits for a cluster change, then for its backoff.
        q.unschedulable(&pod("new-high"), now);
        assert_eq!(q.pop(now + Duration::from_secs(30)), None);
        q.on_cluster_change(now + Duration::from_secs(30));
        assert_eq!(q.pop(now + Duration::from_secs(30)), Some(pod("new-high")));
        // ... or for the periodic flush.
        q.unschedulable(&pod("new-high"), now);
        q.flush(now + DEFAULT_UNSCHEDULABLE_FLUSH);
        assert_eq!(
            q.pop(now + DEFAULT_UNSCHEDULABLE_FLUSH),
            Some(pod("new-high"))
        );
    }
}
