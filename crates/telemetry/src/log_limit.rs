//! Rate-limited logging for failures that repeat: when auth-check goes away under load, every
//! request fails the same way, and a line per request (57 714 in two seconds, once) buries
//! everything else. A [`LogLimiter`] lets the first occurrence through, then one per period,
//! saying how many it held back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets one event through per period, counting the rest.
pub struct LogLimiter {
    period: Duration,
    state: Mutex<State>,
}

struct State {
    /// When the last event was let through.
    last: Option<Instant>,
    /// Events held back since.
    held_back: u64,
}

impl LogLimiter {
    /// A limiter letting one event through per `period` (usable in a `static`).
    pub const fn new(period: Duration) -> Self {
        Self {
            period,
            state: Mutex::new(State {
                last: None,
                held_back: 0,
            }),
        }
    }

    /// `Some(n)` when this event should be logged, `n` being how many were held back since the
    /// last one logged; `None` when it is held back.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.last {
            Some(last) if now.duration_since(last) < self.period => {
                state.held_back += 1;
                None
            }
            _ => {
                state.last = Some(now);
                Some(std::mem::take(&mut state.held_back))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_period_with_the_count_held_back() {
        let limiter = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limiter.allow_at(t0), Some(0), "the first goes through");
        for i in 1..=1000 {
            assert_eq!(limiter.allow_at(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(
            limiter.allow_at(t0 + Duration::from_secs(10)),
            Some(1000),
            "the next period's first says how many were held back"
        );
        assert_eq!(limiter.allow_at(t0 + Duration::from_secs(25)), Some(0));
    }
}
