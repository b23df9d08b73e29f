//! Unknown keys cost the store nothing: each auth-check keeps the set of ids that exist — key ids
//! and live session ids — loaded by its first change poll and kept current by every poll after
//! it. An id outside the set is refused without I/O.
//!
//! A negative cache could not do this: key ids are public and made-up ones never repeat (≈ 71
//! random bits), so every request of a flood would be a new miss. The set turns the question
//! around: it holds what exists, which the change feed already reports.
//!
//! A key created a moment ago may not be in the set yet. A miss therefore may run one change poll
//! first — an "early" poll: ten at once, then one every [`EARLY_POLL_EVERY`], for the whole
//! process — and answers from the set after it: a key whose creation committed before the request
//! is in the set by then, whichever registry created it. A miss that finds no early poll left
//! (and none running it could join) is answered UNAVAILABLE at once (503, `Retry-After: 1`), never
//! "invalid": a flood of made-up ids costs the store at most ten polls a second and each request
//! no wait, and a key created mid-flood verifies on a retry (by the next regular poll, within a
//! second, at the latest).
//!
//! A deleted id (a key deleted, a session revoked) is remembered as gone — the last
//! [`MAX_GONE`] of them — so a client still using a deleted key is told "invalid" at once, at any
//! rate, without a poll: ids are random and never reused, so gone is final.
//!
//! Memory: a `HashSet` of the 12-byte ids, 13 bytes a bucket at a load of at most 7/8 — 27 MiB
//! at one million keys (2²¹ buckets; computed from the layout, see docs/auth-check.md).

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::state::VerifyError;

/// Early polls (run for misses) at most this often once their burst is spent: with the regular
/// poll's four a second and two queries each (keys, sessions), a flood of made-up ids costs at
/// most 2 × (10 + 4) = 28 store queries a second, whatever its rate (plus the burst, once).
pub const EARLY_POLL_EVERY: Duration = Duration::from_millis(100);

/// Early polls allowed at once (several keys created and used in one go each get theirs).
pub const EARLY_POLL_BURST: f64 = 10.0;

/// What a miss is told when it cannot know whether its id exists (no early poll left, or the one
/// it joined started before the id could have been created).
pub(crate) const NOT_KNOWN_YET: &str =
    "this id is not known here yet; if its key or session was just created, retry in a second";

/// Longest a miss waits for its poll (the store slow) before it is answered UNAVAILABLE.
pub const MISS_WAIT: Duration = Duration::from_secs(2);

/// Deleted ids remembered (oldest forgotten first): about 4 MiB at 100 000 key ids.
pub const MAX_GONE: usize = 100_000;

/// The set of ids that exist, and the ids recently deleted.
pub(crate) struct KnownIds<K> {
    ids: RwLock<HashSet<K>>,
    loaded: AtomicBool,
    /// Ids whose deletion a poll saw, newest last (only misses and deletions touch it).
    gone: Mutex<Gone<K>>,
}

/// Recently deleted ids, bounded.
struct Gone<K> {
    set: HashSet<K>,
    order: VecDeque<K>,
}

impl<K: Hash + Eq + Copy> Gone<K> {
    fn insert(&mut self, id: K) {
        if self.set.insert(id) {
            self.order.push_back(id);
            if self.order.len() > MAX_GONE
                && let Some(oldest) = self.order.pop_front()
            {
                self.set.remove(&oldest);
            }
        }
    }
}

impl<K: Hash + Eq + Copy> KnownIds<K> {
    /// An empty set, not loaded.
    pub(crate) fn new() -> Self {
        Self {
            ids: RwLock::new(HashSet::new()),
            loaded: AtomicBool::new(false),
            gone: Mutex::new(Gone {
                set: HashSet::new(),
                order: VecDeque::new(),
            }),
        }
    }

    /// Whether `id` was deleted (a recent deletion this process saw): final, ids are never
    /// reused.
    pub(crate) fn is_gone(&self, id: &K) -> bool {
        self.gone
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set
            .contains(id)
    }

    /// Whether `id` exists (as far as the last poll knows).
    pub(crate) fn contains(&self, id: &K) -> bool {
        self.ids
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
    }

    /// Applies a page of changes under one write lock: `(id, exists)`.
    pub(crate) fn apply(&self, changes: impl IntoIterator<Item = (K, bool)>) {
        let mut deleted = Vec::new();
        {
            let mut ids = self.ids.write().unwrap_or_else(|p| p.into_inner());
            for (id, exists) in changes {
                if exists {
                    ids.insert(id);
                } else {
                    ids.remove(&id);
                    deleted.push(id);
                }
            }
        }
        if !deleted.is_empty() {
            let mut gone = self.gone.lock().unwrap_or_else(|p| p.into_inner());
            for id in deleted {
                gone.insert(id);
            }
        }
    }

    /// Replaces the whole set (a completed load).
    pub(crate) fn replace(&self, ids: HashSet<K>) {
        *self.ids.write().unwrap_or_else(|p| p.into_inner()) = ids;
    }

    /// Ids in the set.
    pub(crate) fn len(&self) -> usize {
        self.ids.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether the first full load has completed.
    pub(crate) fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Marks the full load complete.
    pub(crate) fn set_loaded(&self) {
        self.loaded.store(true, Ordering::Release);
    }
}

/// The outcome of the latest completed change poll.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PollDone {
    /// Its number: polls are numbered as they start.
    pub(crate) number: u64,
    /// Whether the store answered it.
    pub(crate) ok: bool,
}

/// Serialises change polls (one at a time, so the watermark only moves forward) and gives misses
/// their early polls.
pub(crate) struct PollGate {
    /// Held for the whole of a poll.
    pub(crate) lock: tokio::sync::Mutex<()>,
    /// Polls started so far.
    started: AtomicU64,
    /// The latest completed poll.
    done: watch::Sender<PollDone>,
    /// The number of the early poll under way (0: none).
    early_running: AtomicU64,
    /// The early-poll token bucket: tokens, and when they were counted (paused-time tests move
    /// tokio's clock).
    last_early: Mutex<Option<(f64, tokio::time::Instant)>>,
}

impl PollGate {
    pub(crate) fn new() -> Self {
        Self {
            lock: tokio::sync::Mutex::new(()),
            started: AtomicU64::new(0),
            done: watch::channel(PollDone::default()).0,
            early_running: AtomicU64::new(0),
            last_early: Mutex::new(None),
        }
    }

    /// Takes one of the early-poll tokens: [`EARLY_POLL_BURST`] at once, one more every
    /// [`EARLY_POLL_EVERY`].
    fn take_early_token(&self, now: tokio::time::Instant) -> bool {
        let mut bucket = self.last_early.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, at) = bucket.unwrap_or((EARLY_POLL_BURST, now));
        let refilled = (tokens
            + now.saturating_duration_since(at).as_secs_f64() / EARLY_POLL_EVERY.as_secs_f64())
        .min(EARLY_POLL_BURST);
        if refilled >= 1.0 {
            *bucket = Some((refilled - 1.0, now));
            true
        } else {
            *bucket = Some((refilled, now));
            false
        }
    }

    /// Numbers a poll that starts now (call with the lock held, before the first query).
    pub(crate) fn start(&self) -> u64 {
        self.started.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Publishes the outcome of poll `number`.
    pub(crate) fn finish(&self, number: u64, ok: bool) {
        self.done.send_replace(PollDone { number, ok });
    }

    /// For a miss: takes an early-poll token (see [`EARLY_POLL_BURST`]) and waits for a poll
    /// that starts after this call — running it here unless the regular poll does so first —
    /// so a key created before the request is in the set when this returns `Ok(true)`
    /// (authoritative: an id still missing does not exist). With no token left but an early poll
    /// still running (a burst of first requests for a new key), waits for that poll and returns
    /// `Ok(false)`: an id it brought is known, one still missing may be newer than it.
    ///
    /// # Errors
    /// [`VerifyError::Unavailable`] at once when no token is left and no early poll is running
    /// (a flood of unknown ids is answered without waiting
    /// and without I/O; a key created a moment ago verifies on a retry, by the next regular poll
    /// at the latest); when the poll failed; or when none completed within [`MISS_WAIT`].
    pub(crate) async fn poll_for_miss<'a, F, Fut>(&'a self, poll: F) -> Result<bool, VerifyError>
    where
        F: FnOnce(tokio::sync::MutexGuard<'a, ()>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let slot_taken = !self.take_early_token(tokio::time::Instant::now());
        if slot_taken {
            let running = self.early_running.load(Ordering::SeqCst);
            if running == 0 {
                return Err(VerifyError::Unavailable(NOT_KNOWN_YET));
            }
            let mut done = self.done.subscribe();
            let wait = async {
                loop {
                    let latest = *done.borrow_and_update();
                    if latest.number >= running {
                        return if latest.ok {
                            Ok(false)
                        } else {
                            Err(VerifyError::Unavailable("the key store is unavailable"))
                        };
                    }
                    if done.changed().await.is_err() {
                        return Err(VerifyError::Unavailable("shutting down"));
                    }
                }
            };
            return tokio::time::timeout(MISS_WAIT, wait).await.unwrap_or(Err(
                VerifyError::Unavailable("the key store is slow to answer; retry"),
            ));
        }
        let need = self.started.load(Ordering::SeqCst) + 1;
        let wait = async {
            let guard = self.lock.lock().await;
            if self.done.borrow().number < need {
                // The number `start` will give it (no poll starts while the lock is held): misses
                // arriving meanwhile wait for it.
                self.early_running
                    .store(self.started.load(Ordering::SeqCst) + 1, Ordering::SeqCst);
                poll(guard).await;
                self.early_running.store(0, Ordering::SeqCst);
            }
            let latest = *self.done.borrow();
            if latest.number >= need && latest.ok {
                Ok(true)
            } else {
                Err(VerifyError::Unavailable("the key store is unavailable"))
            }
        };
        tokio::time::timeout(MISS_WAIT, wait)
            .await
            .unwrap_or(Err(VerifyError::Unavailable(
                "the key store is slow to answer; retry",
            )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_follows_inserts_removals_and_pages_of_changes() {
        let ids = KnownIds::<u32>::new();
        assert!(!ids.loaded());
        ids.replace(HashSet::from([1, 4]));
        ids.apply([(2, true), (3, true), (1, false)]);
        assert!(!ids.contains(&1));
        assert!(ids.contains(&2) && ids.contains(&3) && ids.contains(&4));
        ids.apply([(2, false), (2, false)]);
        assert_eq!(ids.len(), 2);
        ids.set_loaded();
        assert!(ids.loaded());
    }
}
