//! Revocation within a second: the change poll. Every `STANNA_CHANGE_POLL_INTERVAL` auth-check
//! asks the store what changed since the newest change it has seen (minus an overlap) and applies
//! it to the cache — deactivations, deletions, rotations, renames (docs/auth-check.md).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use stanna_keys::KeyId;
use stanna_store::{ChangePosition, KeyChange, StoreError};

use crate::Verifier;
use crate::state::KeyState;

/// How far back each change poll reads, before the newest change already seen: a change is
/// stamped before its transaction commits, so one that waited for a pooled connection (5 s at
/// most) or SQLite's write lock (10 s at most) commits after later-stamped ones. Re-reading 20 s
/// of changes every poll costs little and sees it.
pub const CHANGE_OVERLAP: Duration = Duration::from_secs(20);

/// Changes fetched per query; the poll pages through more.
const PAGE: u64 = 1000;

/// What the poll has seen: its watermark, and which keys changed recently (a cold verification
/// whose store read is older than a change re-reads the key before caching it).
pub(crate) struct ChangeTracker {
    /// The newest `updated_at` seen.
    watermark: Mutex<SystemTime>,
    /// Keys changed within twice the overlap, and when.
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
            let changes = match self.inner.store.changes_after(position, PAGE).await {
                Ok(changes) => changes,
                Err(err) => {
                    self.store_failed(now);
                    return Err(err);
                }
            };
            self.store_answered();
            {
                let mut recent = tracker.recent.lock().unwrap_or_else(|p| p.into_inner());
                for change in &changes {
                    recent.insert(change.key_id(), change.updated_at());
                }
            }
            for change in &changes {
                newest = newest.max(change.updated_at());
                match change {
                    KeyChange::Updated(record) => {
                        let state =
                            Arc::new(KeyState::from_record(record, self.inner.settings.defaults));
                        self.inner.cache.update_state(&record.key_id, state, now);
                    }
                    KeyChange::Deleted { key_id, .. } => self.inner.cache.remove(key_id),
                }
            }
            seen += changes.len();
            match changes.last() {
                Some(last) if changes.len() as u64 == PAGE => position = last.position(),
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
        let sessions = match self.poll_session_changes().await {
            Ok(n) => n,
            Err(err) => {
                self.store_failed(now);
                return Err(err);
            }
        };
        Ok(seen + sessions)
    }
}
