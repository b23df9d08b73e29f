//! Revocation within a second: the change poll. Every `STANNA_CHANGE_POLL_INTERVAL` auth-check
//! asks the store what changed since the newest change it has seen (minus an overlap) and applies
//! it to the cache — deactivations, deletions, rotations, renames (docs/auth-check.md).
//!
//! The overlap is read as stamps (key id, `updated_at`) from the change feed's index; whole rows
//! are read only for stamps not applied yet. At 100 changes a second the 20 s overlap is 2 000
//! stamps a poll and about 25 rows, where it used to be 2 000 whole rows.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use stanna_keys::KeyId;
use stanna_store::{ChangePosition, KeyChange, KeyStore, StoreError};

use crate::Verifier;
use crate::reads::{PollSource, REPLICA_LOAD_WAIT, REPLICA_POLL_WAIT};
use crate::state::KeyState;

/// How far back each change poll reads, before the newest change already seen: a change is
/// stamped before its transaction commits, so one that waited for a pooled connection (5 s at
/// most) or SQLite's write lock (10 s at most) commits after later-stamped ones. Re-reading 20 s
/// of changes every poll costs little and sees it.
pub const CHANGE_OVERLAP: Duration = Duration::from_secs(20);

/// Changes fetched per query; the poll pages through more.
const PAGE: u64 = 1000;

/// Ids read per query when the known set is loaded.
const LOAD_PAGE: u64 = 10_000;

/// What the poll has seen: its watermark, and which keys changed recently (a cold verification
/// whose store read is older than a change re-reads the key before caching it).
pub(crate) struct ChangeTracker {
    /// The newest `updated_at` seen.
    watermark: Mutex<SystemTime>,
    /// Keys changed within twice the overlap, and the `updated_at` last applied: a stamp equal
    /// to it needs no read.
    recent: Mutex<HashMap<KeyId, SystemTime>>,
}

impl ChangeTracker {
    /// A tracker whose first poll reads from `now` minus the overlap.
    pub(crate) fn new(now: SystemTime) -> Self {
        Self {
            watermark: Mutex::new(now),
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the poll applied a version of `id` other than the one stamped `updated_at` in
    /// the last 40 s: a row read meanwhile may be older than what the cache was given (stamps
    /// are the writers' clocks, so "other", not "older").
    pub(crate) fn applied_other_than(&self, id: &KeyId, updated_at: SystemTime) -> bool {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .is_some_and(|at| *at != updated_at)
    }

    /// Whether a change to `id` was seen that may be newer than a read made at `read_at`.
    pub(crate) fn changed_since(&self, id: &KeyId, read_at: SystemTime) -> bool {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .is_some_and(|at| *at >= read_at - CHANGE_OVERLAP)
    }
}

impl Verifier {
    /// Applies what changed in the store since the last poll to the cache (deactivations,
    /// deletions, rotations, renames): the revocation mechanism. Returns the changes seen.
    ///
    /// # Errors
    /// The store's error; the cache is left as it was and the stale clock keeps running.
    pub async fn poll_changes(&self) -> Result<usize, StoreError> {
        let guard = self.inner.poll_gate.lock.lock().await;
        self.poll_locked(guard).await
    }

    /// One poll, with the gate's lock held (`known_ids.rs`): numbered, and its outcome published
    /// for the miss that asked for it.
    pub(crate) async fn poll_locked(
        &self,
        _guard: tokio::sync::MutexGuard<'_, ()>,
    ) -> Result<usize, StoreError> {
        let gate = &self.inner.poll_gate;
        let number = gate.start();
        let result = self.poll_once().await;
        gate.finish(number, result.is_ok());
        result
    }

    /// For an id not in the known set: one early change poll (at most one every
    /// [`crate::known_ids::EARLY_POLL_EVERY`]), so a key created a moment ago is known after it;
    /// whether its answer is authoritative (`PollGate::poll_for_miss`).
    pub(crate) async fn poll_for_miss(&self) -> Result<bool, crate::VerifyError> {
        self.inner
            .poll_gate
            .poll_for_miss(|guard| async move {
                self.inner.stats.early_polls.fetch_add(1, Ordering::Relaxed);
                self.inner.metrics.early_poll();
                if let Err(err) = self.poll_locked(guard).await {
                    static FAILED: stanna_telemetry::LogLimiter =
                        stanna_telemetry::LogLimiter::new(Duration::from_secs(10));
                    if let Some(held_back) = FAILED.allow() {
                        tracing::warn!(error = %stanna_telemetry::ErrorChain(&err), held_back, "early change poll failed");
                    }
                }
            })
            .await
    }

    /// Loads the set of existing key and session ids, page by page into a new set that replaces
    /// the old one only once complete (a load cut short leaves the set as it was). The poll that
    /// follows in the same step re-reads the changes since before the load began, so a key
    /// created or deleted while the pages were read is applied too.
    async fn load_known_ids(&self, store: &KeyStore) -> Result<(), StoreError> {
        let keys = all_pages(|after| store.live_key_ids(after, LOAD_PAGE)).await?;
        let now = self.now();
        let sessions = all_pages(|after| store.live_session_ids(now, after, LOAD_PAGE)).await?;
        tracing::info!(
            keys = keys.len(),
            sessions = sessions.len(),
            "loaded the ids that exist"
        );
        self.inner.known_keys.replace(keys);
        self.inner.known_sessions.replace(sessions);
        self.inner.known_keys.set_loaded();
        Ok(())
    }

    async fn poll_once(&self) -> Result<usize, StoreError> {
        // The primary, or the replica once it has caught up with it (`reads.rs`).
        let result = match self.poll_source().await {
            Err(err) => Err(err),
            Ok(PollSource::Primary) => self.poll_from(&self.inner.store).await,
            Ok(PollSource::Replica(replica)) => {
                // What a cut-short poll applied stays applied (changes are applied whole and
                // idempotently; the watermark moves only at the end): the primary's run starts
                // from the same watermark.
                let wait = if self.inner.known_keys.loaded() {
                    REPLICA_POLL_WAIT
                } else {
                    REPLICA_LOAD_WAIT
                };
                match tokio::time::timeout(wait, self.poll_from(&replica)).await {
                    Ok(Ok(seen)) => {
                        self.replica_polled();
                        Ok(seen)
                    }
                    Ok(Err(err)) => {
                        self.replica_poll_failed(Some(&err));
                        self.poll_from(&self.inner.store).await
                    }
                    Err(_) => {
                        self.replica_poll_failed(None);
                        self.poll_from(&self.inner.store).await
                    }
                }
            }
        };
        if result.is_err() {
            self.store_failed(self.now());
        }
        result
    }

    /// One poll's reads on `source`: the existing ids until loaded, the key changes since the
    /// watermark (minus the overlap), the session changes.
    async fn poll_from(&self, source: &KeyStore) -> Result<usize, StoreError> {
        if !self.inner.known_keys.loaded() {
            self.load_known_ids(source).await?;
        }
        let tracker = &self.inner.changes;
        let now = self.now();
        let watermark = *tracker.watermark.lock().unwrap_or_else(|p| p.into_inner());
        let mut position = ChangePosition {
            updated_at: watermark - CHANGE_OVERLAP,
            key_id: None,
        };
        let mut newest = watermark;
        let mut seen = 0;
        loop {
            let stamps = source.change_stamps_after(position, PAGE).await?;
            let unapplied: Vec<KeyId> = {
                let recent = tracker.recent.lock().unwrap_or_else(|p| p.into_inner());
                stamps
                    .iter()
                    .filter(|stamp| recent.get(&stamp.key_id) != Some(&stamp.updated_at))
                    .map(|stamp| stamp.key_id)
                    .collect()
            };
            let changes = if unapplied.is_empty() {
                Vec::new()
            } else {
                source.changes_of(&unapplied).await?
            };
            self.inner
                .stats
                .change_rows_read
                .fetch_add(changes.len() as u64, Ordering::Relaxed);
            self.apply_changes(&unapplied, &changes, now);
            if let Some(last) = stamps.last() {
                newest = newest.max(last.updated_at);
            }
            seen += changes.len();
            match stamps.last() {
                Some(last) if stamps.len() as u64 == PAGE => position = last.position(),
                _ => break,
            }
        }
        *tracker.watermark.lock().unwrap_or_else(|p| p.into_inner()) = newest;
        let horizon = now - 2 * CHANGE_OVERLAP;
        tracker
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, at| *at >= horizon);
        // Sessions: sign-outs and revocations, on the same interval.
        let sessions = self.poll_session_changes(source).await?;
        // Without a replica the primary answered every query; with one, the primary answered
        // its position query (`poll_source`).
        self.store_answered();
        Ok(seen + sessions)
    }

    /// Applies the rows read for the `unapplied` stamps to the cache and the known ids. An id
    /// with no row left was purged, which only a deleted key is: it is applied as deleted.
    fn apply_changes(&self, unapplied: &[KeyId], changes: &[KeyChange], now: SystemTime) {
        let tracker = &self.inner.changes;
        let purged: Vec<KeyId> = if changes.len() < unapplied.len() {
            let read: std::collections::HashSet<KeyId> =
                changes.iter().map(KeyChange::key_id).collect();
            unapplied
                .iter()
                .filter(|id| !read.contains(id))
                .copied()
                .collect()
        } else {
            Vec::new()
        };
        {
            let mut recent = tracker.recent.lock().unwrap_or_else(|p| p.into_inner());
            for change in changes {
                recent.insert(change.key_id(), change.updated_at());
            }
            for id in &purged {
                recent.insert(*id, now);
            }
        }
        self.inner.known_keys.apply(
            changes
                .iter()
                .map(|change| (change.key_id(), matches!(change, KeyChange::Updated(_))))
                .chain(purged.iter().map(|id| (*id, false))),
        );
        for change in changes {
            match change {
                KeyChange::Updated(record) => {
                    let state =
                        Arc::new(KeyState::from_record(record, self.inner.settings.defaults));
                    self.inner.cache.update_state(&record.key_id, state, now);
                }
                KeyChange::Deleted { key_id, .. } => self.inner.cache.remove(key_id),
            }
        }
        for id in &purged {
            self.inner.cache.remove(id);
        }
    }
}

/// Every id `page` returns, asking for the next page after the last id of a full one.
async fn all_pages<K, F, Fut>(mut page: F) -> Result<std::collections::HashSet<K>, StoreError>
where
    K: Copy + Eq + std::hash::Hash,
    F: FnMut(Option<K>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<K>, StoreError>>,
{
    let mut ids = std::collections::HashSet::new();
    let mut after = None;
    loop {
        let ids_of_page = page(after).await?;
        ids.extend(ids_of_page.iter().copied());
        match ids_of_page.last() {
            Some(last) if ids_of_page.len() as u64 == LOAD_PAGE => after = Some(*last),
            _ => return Ok(ids),
        }
    }
}
