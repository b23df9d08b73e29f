//! A local cache of subjects already over a limit, as envoyproxy/ratelimit keeps: until the
//! refusal's `retry_after` has passed, the same or a larger cost is refused without a Redis round
//! trip. Never longer: at `retry_after` the request goes to Redis again, so a client back within
//! its limits is never refused by the cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Decision, NamedWindow, WindowState};

/// Entries kept at most; past it, expired ones are dropped and, if still full, nothing is added.
const CAPACITY: usize = 100_000;

struct Refusal {
    /// Local ms at which the refusal ends.
    until_ms: u64,
    /// The smallest cost refused (a smaller one may fit).
    cost: u32,
    /// The windows' limits and periods refused under: changed limits need a fresh decision.
    shape: Vec<(u32, u64)>,
    /// Local ms of the refusal, to age `reset_after`.
    at_ms: u64,
    windows: Vec<WindowState>,
}

/// Subjects refused recently, by subject.
#[derive(Clone, Default)]
pub(crate) struct OverLimitCache {
    entries: Arc<Mutex<HashMap<String, Refusal>>>,
}

impl OverLimitCache {
    /// A refusal for `subject` at `cost`, still in force at `now_ms`, aged to `now_ms`.
    pub(crate) fn check(
        &self,
        subject: &str,
        cost: u32,
        windows: &[NamedWindow],
        now_ms: u64,
    ) -> Option<Decision> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let refusal = entries.get(subject)?;
        if now_ms >= refusal.until_ms || cost < refusal.cost || !same_shape(&refusal.shape, windows)
        {
            return None;
        }
        let elapsed = Duration::from_millis(now_ms.saturating_sub(refusal.at_ms));
        Some(Decision {
            allowed: false,
            windows: refusal
                .windows
                .iter()
                .map(|w| WindowState {
                    reset_after: w.reset_after.saturating_sub(elapsed),
                    ..w.clone()
                })
                .collect(),
            retry_after: Some(Duration::from_millis(refusal.until_ms - now_ms)),
        })
    }

    /// Remembers a refusal of `cost` decided at `now_ms`.
    pub(crate) fn remember(
        &self,
        subject: &str,
        cost: u32,
        windows: &[NamedWindow],
        now_ms: u64,
        decision: &Decision,
    ) {
        let Some(retry) = decision.retry_after else {
            return;
        };
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CAPACITY {
            entries.retain(|_, r| r.until_ms > now_ms);
            if entries.len() >= CAPACITY {
                return;
            }
        }
        entries.insert(
            subject.to_owned(),
            Refusal {
                until_ms: now_ms + retry.as_millis() as u64,
                cost,
                shape: windows.iter().map(shape_of).collect(),
                at_ms: now_ms,
                windows: decision.windows.clone(),
            },
        );
    }

    /// Forgets `subject` (after an admission, the entry is stale anyway).
    pub(crate) fn forget(&self, subject: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.remove(subject);
    }
}

fn shape_of(w: &NamedWindow) -> (u32, u64) {
    (w.limit.limit(), w.limit.period().as_millis() as u64)
}

fn same_shape(shape: &[(u32, u64)], windows: &[NamedWindow]) -> bool {
    shape.len() == windows.len() && shape.iter().zip(windows).all(|(s, w)| *s == shape_of(w))
}
