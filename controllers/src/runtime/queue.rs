//! The work queue as a pure state machine: keys are de-duplicated, a key is never handed out
//! twice at once, at most `max_concurrent` keys are out at a time, and failed keys come back
//! after an exponential backoff. Time is passed in, so tests drive it without a clock.
//!
//! A key is in at most one of: `ready` (waiting its turn), `delayed` (waiting until an instant),
//! `processing` (handed out). A key added while processing is marked dirty and goes back to
//! `ready` when it is done, so no change is ever lost and no key runs twice concurrently.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// First retry delay after a failed reconcile.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_millis(50);
/// Longest retry delay.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(30);
/// Reconciles of one controller running at once. A reconcile mostly waits on the API (a create,
/// a status write, each a durable store write), so this is about latency, not cores: with 4, a
/// burst of 1,000 Jobs was created at ~25 pods/s.
pub const DEFAULT_CONCURRENCY: usize = 32;

/// What became of a key handed out by [`WorkQueue::pop`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Reconciled; forget its failures; come back at the instant if given.
    Done(Option<Instant>),
    /// Failed; retry after the key's backoff.
    Failed,
}

/// The queue's state.
#[derive(Debug)]
pub struct WorkQueue {
    ready: VecDeque<String>,
    queued: HashSet<String>,
    delayed: HashMap<String, Instant>,
    delayed_order: BTreeSet<(Instant, String)>,
    processing: HashSet<String>,
    dirty: HashSet<String>,
    failures: HashMap<String, u32>,
    max_concurrent: usize,
    retry_base: Duration,
    retry_max: Duration,
}

impl WorkQueue {
    pub fn new(max_concurrent: usize) -> Self {
        WorkQueue {
            ready: VecDeque::new(),
            queued: HashSet::new(),
            delayed: HashMap::new(),
            delayed_order: BTreeSet::new(),
            processing: HashSet::new(),
            dirty: HashSet::new(),
            failures: HashMap::new(),
            max_concurrent: max_concurrent.max(1),
            retry_base: DEFAULT_RETRY_BASE,
            retry_max: DEFAULT_RETRY_MAX,
        }
    }

    pub fn with_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.retry_base = base;
        self.retry_max = max.max(base);
        self
    }

    /// Makes `key` ready now (a no-op when it already is; marks it dirty while it runs).
    pub fn add(&mut self, key: &str) {
        if self.processing.contains(key) {
            self.dirty.insert(key.to_string());
            return;
        }
        if self.queued.contains(key) {
            return;
        }
        self.undelay(key);
        self.queued.insert(key.to_string());
        self.ready.push_back(key.to_string());
    }

    /// Makes `key` ready at `at`, unless it is ready sooner already.
    pub fn add_at(&mut self, key: &str, at: Instant, now: Instant) {
        if at <= now {
            return self.add(key);
        }
        if self.queued.contains(key) || self.dirty.contains(key) {
            return;
        }
        match self.delayed.get(key) {
            Some(old) if *old <= at => {}
            _ => {
                self.undelay(key);
                self.delayed.insert(key.to_string(), at);
                self.delayed_order.insert((at, key.to_string()));
            }
        }
    }

    fn undelay(&mut self, key: &str) {
        if let Some(at) = self.delayed.remove(key) {
            self.delayed_order.remove(&(at, key.to_string()));
        }
    }

    /// Hands out the next ready key, if one is ready and a slot is free.
    pub fn pop(&mut self, now: Instant) -> Option<String> {
        self.promote(now);
        if self.processing.len() >= self.max_concurrent {
            return None;
        }
        let key = self.ready.pop_front()?;
        self.queued.remove(&key);
        self.processing.insert(key.clone());
        Some(key)
    }

    fn promote(&mut self, now: Instant) {
        while let Some((at, key)) = self.delayed_order.first().cloned() {
            if at > now {
                break;
            }
            self.delayed_order.remove(&(at, key.clone()));
            self.delayed.remove(&key);
            if self.processing.contains(&key) {
                self.dirty.insert(key);
            } else if self.queued.insert(key.clone()) {
                self.ready.push_back(key);
            }
        }
    }

    /// Records the end of a key's reconcile.
    pub fn done(&mut self, key: &str, outcome: Outcome, now: Instant) {
        self.processing.remove(key);
        let again = match outcome {
            Outcome::Done(at) => {
                self.failures.remove(key);
                at
            }
            Outcome::Failed => {
                let n = self.failures.entry(key.to_string()).or_insert(0);
                let delay = backoff(self.retry_base, self.retry_max, *n);
                *n = n.saturating_add(1);
                Some(now + delay)
            }
        };
        if self.dirty.remove(key) {
            self.add(key);
        } else if let Some(at) = again {
            self.add_at(key, at, now);
        }
    }

    /// Forgets `key` entirely (its object is gone), unless it is being processed.
    pub fn forget(&mut self, key: &str) {
        self.failures.remove(key);
    }

    /// The earliest instant a delayed key becomes ready.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.delayed_order.first().map(|(at, _)| *at)
    }

    pub fn processing(&self) -> usize {
        self.processing.len()
    }

    /// Keys waiting (ready or delayed).
    pub fn pending(&self) -> usize {
        self.ready.len() + self.delayed.len()
    }

    /// How many times in a row `key` has failed.
    pub fn failures(&self, key: &str) -> u32 {
        self.failures.get(key).copied().unwrap_or(0)
    }
}

/// `base * 2^n`, capped at `max`.
pub fn backoff(base: Duration, max: Duration, n: u32) -> Duration {
    let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(max).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn deduplicates_ready_keys() {
        let now = t0();
        let mut q = WorkQueue::new(4);
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.pop(now).as_deref(), Some("a"));
        assert_eq!(q.pop(now).as_deref(), Some("b"));
        assert_eq!(q.pop(now), None);
    }

    #[test]
    fn never_hands_out_a_key_twice_at_once() {
        let now = t0();
        let mut q = WorkQueue::new(4);
        q.add("a");
        assert_eq!(q.pop(now).as_deref(), Some("a"));
        q.add("a");
        assert_eq!(q.pop(now), None, "a is processing; it must wait");
        q.done("a", Outcome::Done(None), now);
        assert_eq!(q.pop(now).as_deref(), Some("a"), "dirty key comes back");
        q.done("a", Outcome::Done(None), now);
        assert_eq!(q.pop(now), None);
    }

    #[test]
    fn bounds_concurrency() {
        let now = t0();
        let mut q = WorkQueue::new(2);
        for k in ["a", "b", "c"] {
            q.add(k);
        }
        assert!(q.pop(now).is_some());
        assert!(q.pop(now).is_some());
        assert_eq!(q.pop(now), None);
        q.done("a", Outcome::Done(None), now);
        assert_eq!(q.pop(now).as_deref(), Some("c"));
    }

    #[test]
    fn failures_back_off_exponentially_and_reset_on_success() {
        let now = t0();
        let mut q =
            WorkQueue::new(1).with_backoff(Duration::from_millis(10), Duration::from_secs(1));
        q.add("a");
        let mut at = now;
        for n in 0..4u32 {
            assert_eq!(q.pop(at).as_deref(), Some("a"));
            q.done("a", Outcome::Failed, at);
            let expect = at + Duration::from_millis(10 * 2u64.pow(n));
            assert_eq!(q.next_deadline(), Some(expect));
            assert_eq!(q.pop(expect - Duration::from_millis(1)), None);
            at = expect;
        }
        assert_eq!(q.failures("a"), 4);
        assert_eq!(q.pop(at).as_deref(), Some("a"));
        q.done("a", Outcome::Done(None), at);
        assert_eq!(q.failures("a"), 0);
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn backoff_is_capped() {
        let d = backoff(Duration::from_millis(50), Duration::from_secs(30), 40);
        assert_eq!(d, Duration::from_secs(30));
    }

    #[test]
    fn add_beats_a_later_delay_and_earlier_delay_wins() {
        let now = t0();
        let mut q = WorkQueue::new(1);
        q.add_at("a", now + Duration::from_secs(10), now);
        q.add_at("a", now + Duration::from_secs(5), now);
        assert_eq!(q.next_deadline(), Some(now + Duration::from_secs(5)));
        q.add_at("a", now + Duration::from_secs(8), now);
        assert_eq!(q.next_deadline(), Some(now + Duration::from_secs(5)));
        q.add("a");
        assert_eq!(q.next_deadline(), None);
        assert_eq!(q.pop(now).as_deref(), Some("a"));
    }

    #[test]
    fn requeue_after_comes_back_at_its_time() {
        let now = t0();
        let mut q = WorkQueue::new(1);
        q.add("a");
        q.pop(now);
        q.done("a", Outcome::Done(Some(now + Duration::from_secs(3))), now);
        assert_eq!(q.pop(now + Duration::from_secs(2)), None);
        assert_eq!(q.pop(now + Duration::from_secs(3)).as_deref(), Some("a"));
        assert_eq!(q.pending(), 0);
        assert_eq!(q.processing(), 1);
    }

    #[test]
    fn delay_expiring_while_processing_marks_dirty() {
        let now = t0();
        let mut q = WorkQueue::new(2);
        q.add("a");
        q.pop(now);
        // Cannot normally delay a processing key into `delayed`, but a delay set before
        // the pop may expire while it runs.
        q.add_at("b", now + Duration::from_secs(1), now);
        q.add("b");
        assert_eq!(q.pop(now).as_deref(), Some("b"));
        q.done("a", Outcome::Done(None), now);
        assert_eq!(q.pop(now + Duration::from_secs(2)), None);
    }
}
