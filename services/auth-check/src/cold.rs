//! The cold path: a key not in the cache is looked up by id and its presented form checked
//! against the stored argon2id hash on the blocking pool, under the argon2 concurrency cap. Runs
//! inside a single flight (`single_flight.rs`), so concurrent requests for one key share it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use stanna_keys::PresentedKey;
use stanna_store::KeyRecord;
use tracing::Instrument as _;

use crate::Verifier;
use crate::cache::CacheEntry;
use crate::state::KeyState;

/// The outcome of the cold path, shared by every request waiting on the same flight.
#[derive(Debug, Clone)]
pub(crate) enum Cold {
    /// The key verified; its state is now cached.
    Verified(Arc<KeyState>),
    /// No such key, or the secret is wrong.
    NotFound,
    /// The store or the argon2 pool could not answer.
    Unavailable(&'static str),
}

impl Verifier {
    /// Looks the key up, checks it with argon2, caches it when it verifies.
    pub(crate) async fn cold_verify(&self, presented: PresentedKey, digest: [u8; 32]) -> Cold {
        let id = presented.key_id();
        let read_at = self.now();
        let record = match self.lookup(&presented).await {
            Ok(Some(record)) => record,
            Ok(None) => return Cold::NotFound,
            Err(cold) => return cold,
        };
        let Ok(_permit) = self.inner.argon2.acquire().await else {
            return Cold::Unavailable("shutting down");
        };
        self.inner.stats.argon2_runs.fetch_add(1, Ordering::Relaxed);
        let check = self.inner.hash_check.clone();
        let stored = record.key_hash.clone();
        let span = stanna_telemetry::request_span!("argon2.verify", key_id = %id);
        let started = std::time::Instant::now();
        let verified = tokio::task::spawn_blocking(move || check.check(&presented, &stored))
            .instrument(span)
            .await;
        self.inner.metrics.argon2_ran(started.elapsed());
        match verified {
            Ok(Ok(true)) => {
                // A change polled while argon2 ran found nothing to update in the cache: read the
                // key again so the cache never starts from a state older than a known change.
                let record = if self.inner.changes.changed_since(&id, read_at) {
                    match self.lookup(&presented).await {
                        Ok(Some(record)) => record,
                        Ok(None) => return Cold::NotFound,
                        Err(cold) => return cold,
                    }
                } else {
                    record
                };
                let state = Arc::new(KeyState::from_record(&record, self.inner.settings.defaults));
                self.inner
                    .cache
                    .insert(id, CacheEntry::new(digest, state.clone(), read_at));
                // A change the poll applied between the check above and the insert found no
                // entry to update: the entry goes, and the next request reads the key again.
                if self
                    .inner
                    .changes
                    .applied_other_than(&id, record.updated_at)
                {
                    self.inner.cache.remove(&id);
                }
                Cold::Verified(state)
            }
            Ok(Ok(false)) => Cold::NotFound,
            Ok(Err(err)) => {
                tracing::error!(error = %stanna_telemetry::ErrorChain(&err), key_id = %id, "stored hash unreadable");
                Cold::NotFound
            }
            Err(err) => {
                tracing::error!(error = %stanna_telemetry::ErrorChain(&err), "argon2 task failed");
                Cold::Unavailable("verification failed; retry")
            }
        }
    }

    /// The stored key of `presented`, counted; `Err` with the outcome when the store is down.
    async fn lookup(&self, presented: &PresentedKey) -> Result<Option<KeyRecord>, Cold> {
        let id = presented.key_id();
        self.inner
            .stats
            .store_lookups
            .fetch_add(1, Ordering::Relaxed);
        match self.read_key(id).await {
            Ok(found) => Ok(found),
            Err(err) => {
                self.store_failed(self.now());
                static UNREACHABLE: stanna_telemetry::LogLimiter =
                    stanna_telemetry::LogLimiter::new(std::time::Duration::from_secs(10));
                if let Some(held_back) = UNREACHABLE.allow() {
                    tracing::warn!(error = %stanna_telemetry::ErrorChain(&err), key_id = %id, held_back, "store unreachable for an uncached key");
                }
                Err(Cold::Unavailable("the key store is unavailable"))
            }
        }
    }
}
