//! Last-used times: recorded in memory on every successful Verify (a map insert), written back in
//! one batch per flush interval, so a key used 10 000 times a second costs one write per interval.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use stanna_keys::KeyId;
use stanna_store::{KeyStore, StoreError};

/// Shards of the pending map: every successful Verify inserts, so one lock would be a point of
/// contention between all the runtime's threads.
const SHARDS: usize = 16;

/// Uses not yet written.
pub(crate) struct LastUsed {
    pending: Vec<Mutex<HashMap<KeyId, SystemTime>>>,
    hasher: RandomState,
    /// Rows written so far (for metrics and tests).
    pub written: AtomicU64,
}

impl Default for LastUsed {
    fn default() -> Self {
        Self {
            pending: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            written: AtomicU64::new(0),
        }
    }
}

impl LastUsed {
    /// Notes a use of `id` at `at`.
    pub fn record(&self, id: KeyId, at: SystemTime) {
        let shard = &self.pending[self.hasher.hash_one(id) as usize % SHARDS];
        let mut pending = shard.lock().unwrap_or_else(|p| p.into_inner());
        let slot = pending.entry(id).or_insert(at);
        if *slot < at {
            *slot = at;
        }
    }

    /// Writes every pending use in one batch; on failure they are kept for the next flush.
    pub async fn flush(&self, store: &KeyStore) -> Result<usize, StoreError> {
        let batch: Vec<(KeyId, SystemTime)> = self
            .pending
            .iter()
            .flat_map(|shard| {
                shard
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .drain()
                    .collect::<Vec<_>>()
            })
            .collect();
        if batch.is_empty() {
            return Ok(0);
        }
        match store.record_last_used(&batch).await {
            Ok(()) => {
                self.written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                Ok(batch.len())
            }
            Err(err) => {
                for (id, at) in batch {
                    self.record(id, at);
                }
                Err(err)
            }
        }
    }
}
