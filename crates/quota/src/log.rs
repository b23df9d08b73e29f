//! The exact rolling log, in plain Rust: the reference the Lua script mirrors.
//!
//! Per window of limit `N` and period `P`, a ring of the last `N` admission times (ms). Slots hold
//! `0` ("never") until used. Admission times are kept non-decreasing (a clock that steps back
//! decides, and is charged, at the newest admission seen), so the ring is sorted oldest → newest
//! from `head`.

use std::time::Duration;

use crate::{Decision, Mode, NamedWindow, WindowState};

/// One window's ring.
///
/// Grown as admissions arrive, up to `limit` slots: a key admitted once holds one time, not a
/// ring of `limit` (10 000 at the largest limits, 80 KB a window). Slots not yet grown are
/// "never" (0), and come first in the ring's logical order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    /// Window length in ms.
    period_ms: u64,
    /// The window's limit: the most slots the ring grows to.
    limit: u32,
    /// The last admission times (at most `limit`), ms since the epoch; while fewer than `limit`,
    /// oldest first from index 0, else oldest at `head`.
    slots: Vec<u64>,
    /// Index of the oldest slot once grown (the next to overwrite); 0 while growing.
    head: usize,
}

impl Ring {
    /// An empty ring for `limit` admissions per `period_ms`.
    pub fn new(limit: u32, period_ms: u64) -> Self {
        Self {
            period_ms,
            limit,
            slots: Vec::new(),
            head: 0,
        }
    }

    fn limit(&self) -> usize {
        self.limit as usize
    }

    /// The `i`-th oldest slot (0 = oldest), "never" (0) for a slot not grown yet.
    fn logical(&self, i: usize) -> u64 {
        let missing = self.limit() - self.slots.len();
        if i < missing {
            0
        } else {
            self.slots[(self.head + i - missing) % self.slots.len()]
        }
    }

    fn newest(&self) -> u64 {
        self.logical(self.limit() - 1)
    }

    /// Adapts to a changed limit or period, keeping the newest admissions, so a configuration
    /// change never forgets what was admitted.
    pub fn reshape(&mut self, limit: u32, period_ms: u64) {
        self.period_ms = period_ms;
        if limit == self.limit {
            return;
        }
        let keep = (limit as usize).min(self.limit());
        let slots: Vec<u64> = (self.limit() - keep..self.limit())
            .map(|i| self.logical(i))
            .filter(|&t| t != 0)
            .collect();
        self.slots = slots;
        self.limit = limit;
        self.head = 0;
    }

    /// Records one admission at `at` (not before the newest).
    fn push(&mut self, at: u64) {
        if self.slots.len() < self.limit() {
            if self.slots.len() == self.slots.capacity() {
                // Doubling, but never past the limit: a full ring holds exactly `limit` slots.
                let grown = (self.slots.len() * 2).max(4).min(self.limit());
                self.slots.reserve_exact(grown - self.slots.len());
            }
            self.slots.push(at);
        } else {
            let head = self.head;
            self.slots[head] = at;
            self.head = (head + 1) % self.slots.len();
        }
    }

    /// Whether `cost` more admissions at `now` keep every span of `period` within the limit:
    /// the `(N-cost+1)`-th most recent admission must be at least a period old.
    fn admits(&self, cost: u32, now: u64) -> bool {
        let slot = self.logical(cost as usize - 1);
        slot == 0 || slot + self.period_ms <= now
    }

    /// When a request of `cost` would be admitted, relative to `now`.
    fn retry_after(&self, cost: u32, now: u64) -> u64 {
        (self.logical(cost as usize - 1) + self.period_ms).saturating_sub(now)
    }

    fn charge(&mut self, cost: u32, now: u64) {
        let at = now.max(self.newest());
        for _ in 0..cost {
            self.push(at);
        }
    }

    /// Admissions inside `(now - period, now]`: a suffix of the sorted ring, found by binary search.
    fn count(&self, now: u64) -> usize {
        let (mut lo, mut hi) = (0, self.limit());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let slot = self.logical(mid);
            if slot != 0 && slot + self.period_ms > now {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        self.limit() - lo
    }

    /// The state of `window` (its name is cloned: free for a borrowed name).
    fn state(&self, window: &NamedWindow, now: u64) -> WindowState {
        let count = self.count(now);
        let reset_ms = if count == 0 {
            0
        } else {
            (self.newest() + self.period_ms).saturating_sub(now)
        };
        WindowState {
            name: window.name.clone(),
            limit: self.limit() as u32,
            period: Duration::from_millis(self.period_ms),
            remaining: (self.limit() - count) as u32,
            reset_after: Duration::from_millis(reset_ms),
        }
    }
}

/// A subject's rings, one per window, in request order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Log {
    rings: Vec<Ring>,
}

impl Log {
    /// The newest admission of any window (0 if none), for idle expiry.
    pub fn last_admission(&self) -> u64 {
        self.rings.iter().map(Ring::newest).max().unwrap_or(0)
    }

    /// Decides for `windows` at `now` (ms); charges every window iff all admit and `mode` is
    /// Consume. The caller has checked `1 <= cost <= every limit`. A Peek changes nothing, not
    /// even the shape of the rings when its windows differ from the stored ones.
    pub fn decide(&mut self, cost: u32, windows: &[NamedWindow], mode: Mode, now: u64) -> Decision {
        match mode {
            Mode::Consume => self.decide_in_place(cost, windows, mode, now),
            Mode::Peek => self.clone().decide_in_place(cost, windows, mode, now),
        }
    }

    fn decide_in_place(
        &mut self,
        cost: u32,
        windows: &[NamedWindow],
        mode: Mode,
        now: u64,
    ) -> Decision {
        if self.rings.len() != windows.len() {
            self.rings.resize_with(windows.len(), || Ring::new(1, 1));
            self.rings.truncate(windows.len());
        }
        for (ring, w) in self.rings.iter_mut().zip(windows) {
            ring.reshape(w.limit.limit(), w.limit.period().as_millis() as u64);
        }
        // A clock that stepped back decides at the newest admission: a window is never counted
        // at a time earlier than one it was already counted at (the Redis script keeps a
        // forward-only count per window and relies on this).
        let now = self.last_admission().max(now);
        let refusal = self
            .rings
            .iter()
            .filter(|r| !r.admits(cost, now))
            .map(|r| r.retry_after(cost, now))
            .max();
        let allowed = refusal.is_none();
        if allowed && mode == Mode::Consume {
            for ring in &mut self.rings {
                ring.charge(cost, now);
            }
        }
        Decision {
            allowed,
            windows: self
                .rings
                .iter()
                .zip(windows)
                .map(|(r, w)| r.state(w, now))
                .collect(),
            retry_after: refusal.map(|ms| Duration::from_millis(ms.max(1))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stanna_keys::WindowLimit;

    fn windows(spec: &[(&str, u32, u64)]) -> Vec<NamedWindow> {
        spec.iter()
            .map(|(n, l, s)| NamedWindow {
                name: n.to_string().into(),
                limit: WindowLimit::new(*l, Duration::from_millis(*s)).unwrap(),
            })
            .collect()
    }

    const T0: u64 = 1_800_000_000_000;

    #[test]
    fn reshape_keeps_the_newest_admissions() {
        let mut ring = Ring::new(3, 1000);
        for t in [1, 2, 3] {
            ring.charge(1, T0 + t);
        }
        ring.reshape(2, 1000);
        assert_eq!((ring.logical(0), ring.logical(1)), (T0 + 2, T0 + 3));
        ring.reshape(4, 1000);
        assert_eq!(
            (0..4).map(|i| ring.logical(i)).collect::<Vec<_>>(),
            vec![0, 0, T0 + 2, T0 + 3]
        );
    }

    #[test]
    fn a_ring_grows_with_its_admissions_and_never_past_its_limit() {
        let mut ring = Ring::new(10_000, 60_000);
        ring.charge(1, T0);
        assert!(
            ring.slots.capacity() <= 4,
            "one admission, not 10 000 slots"
        );
        assert_eq!((ring.logical(9_999), ring.logical(9_998)), (T0, 0));
        let mut small = Ring::new(6, 1000);
        for t in 1..=9 {
            small.charge(1, T0 + t);
        }
        assert_eq!(small.slots.capacity(), 6);
        assert_eq!(
            (0..6).map(|i| small.logical(i)).collect::<Vec<_>>(),
            (4..=9).map(|t| T0 + t).collect::<Vec<_>>(),
            "the last six, oldest first"
        );
    }

    #[test]
    fn a_clock_stepping_back_is_charged_at_the_newest_time() {
        let w = windows(&[("burst", 2, 1000)]);
        let mut log = Log::default();
        assert!(log.decide(1, &w, Mode::Consume, T0 + 500).allowed);
        assert!(log.decide(1, &w, Mode::Consume, T0 + 100).allowed);
        // Both count until T0 + 1500, not T0 + 1100.
        assert!(!log.decide(1, &w, Mode::Consume, T0 + 1200).allowed);
        assert!(log.decide(1, &w, Mode::Consume, T0 + 1500).allowed);
    }

    #[test]
    fn a_peek_with_other_limits_changes_nothing() {
        let mut log = Log::default();
        let w = windows(&[("burst", 3, 1000)]);
        for t in 0..3 {
            assert!(log.decide(1, &w, Mode::Consume, T0 + t).allowed);
        }
        let before = log.clone();
        log.decide(1, &windows(&[("burst", 1, 1000)]), Mode::Peek, T0 + 5);
        assert_eq!(
            log, before,
            "a peek with a smaller limit must not drop admissions"
        );
        assert!(!log.decide(1, &w, Mode::Consume, T0 + 6).allowed);
    }

    #[test]
    fn cost_counts_as_that_many_requests() {
        let w = windows(&[("burst", 10, 1000)]);
        let mut log = Log::default();
        assert!(log.decide(7, &w, Mode::Consume, T0).allowed);
        let refused = log.decide(4, &w, Mode::Consume, T0 + 1);
        assert!(!refused.allowed);
        assert_eq!(refused.windows[0].remaining, 3);
        assert_eq!(refused.retry_after, Some(Duration::from_millis(999)));
        assert!(log.decide(3, &w, Mode::Consume, T0 + 1).allowed);
    }
}
