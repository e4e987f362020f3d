//! Rate limits on evictions from unreachable nodes, per zone (Kubernetes' node lifecycle
//! "zone states"): in a zone where few nodes are unhealthy, nodes are evicted at the primary
//! rate; where at least the unhealthy-zone threshold (and more than two) are, at the much lower
//! secondary rate — many nodes lost at once is more likely a network split than dead machines;
//! where every node is unhealthy in every zone, not at all (the controller is probably the one
//! cut off). Pure: time is passed in.

use std::collections::HashMap;

use tokio::time::Instant;

/// The label naming a node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneState {
    Normal,
    PartialDisruption,
    FullDisruption,
}

/// A zone's state from its node counts.
pub fn zone_state(total: usize, unhealthy: usize, threshold: f64) -> ZoneState {
    if total > 0 && unhealthy == total {
        ZoneState::FullDisruption
    } else if unhealthy > 2 && (unhealthy as f64) / (total.max(1) as f64) >= threshold {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// A token bucket with a burst of one.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            tokens: 1.0,
            last: now,
        }
    }

    pub fn set_rate(&mut self, rate: f64, now: Instant) {
        self.refill(now);
        self.rate = rate;
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(1.0);
        self.last = now;
    }

    /// Takes a token if one is there.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Per-zone limiters.
#[derive(Debug)]
pub struct ZoneLimiter {
    primary: f64,
    secondary: f64,
    threshold: f64,
    buckets: HashMap<String, TokenBucket>,
    states: HashMap<String, ZoneState>,
}

impl ZoneLimiter {
    pub fn new(primary: f64, secondary: f64, threshold: f64) -> Self {
        ZoneLimiter {
            primary,
            secondary,
            threshold,
            buckets: HashMap::new(),
            states: HashMap::new(),
        }
    }

    /// Updates zone states from `(zone, total, unhealthy)`.
    pub fn update(&mut self, zones: &HashMap<String, (usize, usize)>, now: Instant) {
        self.states.clear();
        for (zone, (total, unhealthy)) in zones {
            let state = zone_state(*total, *unhealthy, self.threshold);
            self.states.insert(zone.clone(), state);
            let rate = match state {
                ZoneState::Normal => self.primary,
                ZoneState::PartialDisruption => self.secondary,
                // Full disruption in one zone alone: evict at the primary rate (the zone is gone).
                ZoneState::FullDisruption => self.primary,
            };
            self.buckets
                .entry(zone.clone())
                .or_insert_with(|| TokenBucket::new(rate, now))
                .set_rate(rate, now);
        }
    }

    pub fn state(&self, zone: &str) -> ZoneState {
        self.states.get(zone).copied().unwrap_or(ZoneState::Normal)
    }

    /// Whether a node of `zone` may be evicted now (takes a token if so).
    pub fn admit(&mut self, zone: &str, now: Instant) -> bool {
        let all_down = !self.states.is_empty()
            && self
                .states
                .values()
                .all(|s| *s == ZoneState::FullDisruption);
        if all_down {
            return false;
        }
        match self.buckets.get_mut(zone) {
            Some(b) => b.try_take(now),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn zone_states() {
        for (total, unhealthy, want) in [
            (10, 0, ZoneState::Normal),
            (10, 5, ZoneState::Normal),
            (10, 6, ZoneState::PartialDisruption),
            (4, 2, ZoneState::Normal),
            (4, 3, ZoneState::PartialDisruption),
            (2, 2, ZoneState::FullDisruption),
        ] {
            assert_eq!(
                zone_state(total, unhealthy, 0.55),
                want,
                "{total}/{unhealthy}"
            );
        }
    }

    #[test]
    fn partial_disruption_slows_evictions() {
        let now = Instant::now();
        let mut z = ZoneLimiter::new(0.1, 0.01, 0.55);
        let zones: HashMap<String, (usize, usize)> =
            [("a".to_string(), (10, 7)), ("b".to_string(), (5, 1))].into();
        z.update(&zones, now);
        assert!(z.admit("a", now));
        assert!(
            !z.admit("a", now + Duration::from_secs(10)),
            "secondary rate: one per 100 s"
        );
        assert!(z.admit("a", now + Duration::from_secs(101)));
        assert!(z.admit("b", now));
        assert!(
            z.admit("b", now + Duration::from_secs(10)),
            "primary rate: one per 10 s"
        );
    }

    #[test]
    fn everything_down_stops_evictions() {
        let now = Instant::now();
        let mut z = ZoneLimiter::new(0.1, 0.01, 0.55);
        z.update(&[("a".to_string(), (3, 3))].into(), now);
        assert!(!z.admit("a", now));
    }
}
