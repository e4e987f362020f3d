//! Wall-clock time derived from tokio's clock, so tests with a paused clock move leases,
//! deadlines and TTLs forward in milliseconds.
//!
//! [`Clock::now`] is the wall time when the clock was made plus the tokio time elapsed since.
//! In production that tracks the system clock; under `start_paused` it advances only when tokio
//! time does.

use drover_api::Time;
use tokio::time::Instant;

/// A wall clock driven by tokio's monotonic clock. Cheap to copy.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall: Time,
    base: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock starting at the system's wall time.
    pub fn new() -> Self {
        Clock {
            wall: chrono::Utc::now(),
            base: Instant::now(),
        }
    }

    /// The current wall time.
    pub fn now(&self) -> Time {
        let elapsed = Instant::now().saturating_duration_since(self.base);
        self.wall + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::zero())
    }

    /// The tokio instant at which wall time `t` is reached (now, if it has passed).
    pub fn instant_at(&self, t: Time) -> Instant {
        let now_wall = self.now();
        let now = Instant::now();
        match (t - now_wall).to_std() {
            Ok(d) => now + d,
            Err(_) => now,
        }
    }
}

/// `std::time::Duration` until `t`, zero if it has passed.
pub fn until(clock: &Clock, t: Time) -> std::time::Duration {
    (t - clock.now()).to_std().unwrap_or_default()
}
