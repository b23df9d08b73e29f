//! The in-process backend: the rolling log in a sharded map, for the all-in-one default.
//!
//! Exact within one process. Shards keep contention low: a decision locks one shard for a few
//! hundred nanoseconds. Idle subjects (no admission within their longest window) are dropped by a
//! sweep that runs every few thousand decisions per shard, so memory follows the active keys.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use crate::log::Log;
use crate::{Decision, Mode, NamedWindow, system_now_ms};

const SHARDS: usize = 64;
const SWEEP_EVERY: u32 = 4096;

#[derive(Default)]
struct Shard {
    logs: HashMap<String, Log>,
    /// Longest period seen in this shard, bounding how long an idle log matters.
    longest_period_ms: u64,
    decisions_since_sweep: u32,
}

/// Rate limits kept in this process.
#[derive(Clone)]
pub struct MemoryBackend {
    shards: Arc<[Mutex<Shard>]>,
    hasher: RandomState,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
        }
    }

    pub(crate) fn decide(
        &self,
        subject: &str,
        cost: u32,
        windows: &[NamedWindow],
        mode: Mode,
        now_ms: Option<u64>,
    ) -> Decision {
        let now = now_ms.unwrap_or_else(system_now_ms);
        let shard = &self.shards[self.hasher.hash_one(subject) as usize % SHARDS];
        // A poisoned lock means a panic mid-decision elsewhere; the data is still a valid log.
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        let longest = windows
            .iter()
            .map(|w| w.limit.period().as_millis() as u64)
            .max()
            .unwrap_or(0);
        shard.longest_period_ms = shard.longest_period_ms.max(longest);
        shard.decisions_since_sweep += 1;
        if shard.decisions_since_sweep >= SWEEP_EVERY {
            shard.decisions_since_sweep = 0;
            let horizon = shard.longest_period_ms;
            shard
                .logs
                .retain(|_, log| log.last_admission() + horizon > now);
        }
        match shard.logs.get_mut(subject) {
            Some(log) => log.decide(cost, windows, mode, now),
            None => {
                let mut log = Log::default();
                let decision = log.decide(cost, windows, mode, now);
                if mode == Mode::Consume && decision.allowed {
                    shard.logs.insert(subject.to_owned(), log);
                }
                decision
            }
        }
    }

    /// Subjects currently held (for tests of idle expiry).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).logs.len())
            .sum()
    }

    /// Whether no subject is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
