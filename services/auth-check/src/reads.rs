//! Where auth-check reads: the primary (`STANNA_DATABASE_URL`), or a PostgreSQL streaming replica
//! (`STANNA_DATABASE_READ_URL`) when it is current — the read path that scales out.
//!
//! Revocation within a second rests on the change poll, so the poll decides what "current"
//! means. Each poll first asks the primary for its WAL flush position (every change visible on the
//! primary is at or before it), then waits up to [`REPLICA_WAIT`] for the replica to have replayed
//! past it: from then on the replica shows at least what the primary showed, and the poll reads
//! it. A replica further behind, unreachable or promoted is not read: the poll reads the primary,
//! exactly as without a replica, and key lookups go to the primary until a poll finds the replica
//! current again. So a lagging replica costs the primary load, never a late revocation.
//!
//! A lookup read from the replica is not final when it finds nothing — a key created a moment ago
//! may not have reached it — nor when the row it finds is older than a change the poll already
//! applied: both ask the primary, within the same miss budget (`known_ids::MISS_WAIT`). Key
//! hashes never change (rotation makes a new key), so a row found is checked against the right
//! hash; only its state can be behind, and the poll corrects that as it would a primary read that
//! raced a change. Writes (usage, last-used, purges) always go to the primary.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use stanna_store::{KeyStore, StoreError};

use crate::Verifier;

/// Longest a change poll waits for the replica to replay what the primary had flushed before it
/// reads the primary instead. A healthy replica on the same network replays within milliseconds;
/// with the default 250 ms poll interval this keeps revocation well within a second.
pub const REPLICA_WAIT: Duration = Duration::from_millis(100);

/// Longest a lookup waits for the replica before it asks the primary (a replica that has
/// vanished from the network would otherwise hold each cold lookup for the 5 s connect timeout).
/// A lookup on a healthy replica takes about a millisecond.
pub const REPLICA_LOOKUP_WAIT: Duration = Duration::from_millis(200);

/// The first pause between two looks at the replica's replay position; it doubles up to
/// [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(1);
const MAX_PAUSE: Duration = Duration::from_millis(20);

impl Verifier {
    /// The store the change poll about to start reads: the replica once it has replayed what the
    /// primary had flushed when asked (waiting up to [`REPLICA_WAIT`]), else the primary. Records
    /// the answer for the lookups that follow.
    ///
    /// # Errors
    /// The primary's error when it cannot say its position: the poll fails as it would reading
    /// the primary, and lookups stop reading the replica (whose currency nothing can vouch for
    /// now), so a primary outage is met as without a replica (`STANNA_STALE_IF_ERROR`).
    pub(crate) async fn poll_source(&self) -> Result<KeyStore, StoreError> {
        let Some(replica) = &self.inner.replica else {
            return Ok(self.inner.store.clone());
        };
        let flushed = self.inner.store.wal_flushed().await;
        if flushed.is_err() {
            self.inner.replica_current.store(false, Ordering::Relaxed);
        }
        let current = match flushed? {
            // A replica that has vanished from the network must not hold the poll either.
            Some(target) => {
                tokio::time::timeout(REPLICA_WAIT, self.replica_reaches(replica, target))
                    .await
                    .unwrap_or(false)
            }
            // The primary says it is in recovery itself: nothing to compare with.
            None => false,
        };
        self.inner.replica_current.store(current, Ordering::Relaxed);
        if current {
            self.inner
                .stats
                .replica_polls
                .fetch_add(1, Ordering::Relaxed);
            Ok(replica.clone())
        } else {
            self.inner
                .stats
                .replica_fallbacks
                .fetch_add(1, Ordering::Relaxed);
            self.inner.metrics.replica_fallback();
            Ok(self.inner.store.clone())
        }
    }

    /// Whether `replica` replays past `target` within [`REPLICA_WAIT`].
    async fn replica_reaches(&self, replica: &KeyStore, target: u64) -> bool {
        let started = tokio::time::Instant::now();
        let mut pause = FIRST_PAUSE;
        loop {
            let replayed = match replica.wal_replayed().await {
                Ok(Some(at)) if at >= target => return true,
                Ok(Some(at)) => at,
                Ok(None) => {
                    replica_warning(
                        "the read replica is no longer in recovery (promoted?): reading the primary",
                        None,
                    );
                    return false;
                }
                Err(err) => {
                    replica_warning(
                        "the read replica does not answer: reading the primary",
                        Some(&err),
                    );
                    return false;
                }
            };
            if started.elapsed() + pause > REPLICA_WAIT {
                tracing::debug!(
                    behind_bytes = target.saturating_sub(replayed),
                    "the read replica is behind: this poll reads the primary"
                );
                return false;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// A lookup by id: `read` on the replica while the last poll found it current, and on the
    /// primary when there is none, it is behind, it fails, or its answer is not final — nothing
    /// found, or a row `fresh` says is older than what the poll has applied.
    pub(crate) async fn read_by_id<T, F, Fut>(
        &self,
        read: F,
        fresh: impl Fn(&T) -> bool,
    ) -> Result<Option<T>, StoreError>
    where
        F: Fn(KeyStore) -> Fut,
        Fut: Future<Output = Result<Option<T>, StoreError>>,
    {
        if let Some(replica) = &self.inner.replica
            && self.inner.replica_current.load(Ordering::Relaxed)
        {
            match tokio::time::timeout(REPLICA_LOOKUP_WAIT, read(replica.clone())).await {
                Ok(Ok(Some(found))) if fresh(&found) => {
                    self.inner
                        .stats
                        .replica_lookups
                        .fetch_add(1, Ordering::Relaxed);
                    self.inner.metrics.replica_lookup();
                    return Ok(Some(found));
                }
                // Not final: ask the primary.
                Ok(Ok(_)) => {}
                // Until a poll finds it current again.
                Ok(Err(err)) => {
                    self.inner.replica_current.store(false, Ordering::Relaxed);
                    replica_warning(
                        "the read replica does not answer: reading the primary",
                        Some(&err),
                    );
                }
                Err(_) => {
                    self.inner.replica_current.store(false, Ordering::Relaxed);
                    replica_warning(
                        "the read replica is slow to answer a lookup: reading the primary",
                        None,
                    );
                }
            }
            self.inner
                .stats
                .replica_fallbacks
                .fetch_add(1, Ordering::Relaxed);
            self.inner.metrics.replica_fallback();
        }
        read(self.inner.store.clone()).await
    }
}

/// One warning every 10 s at most about the replica (a replica down would otherwise log on
/// every poll).
fn replica_warning(message: &'static str, err: Option<&StoreError>) {
    static LIMIT: stanna_telemetry::LogLimiter =
        stanna_telemetry::LogLimiter::new(Duration::from_secs(10));
    if let Some(held_back) = LIMIT.allow() {
        match err {
            Some(err) => {
                tracing::warn!(error = %stanna_telemetry::ErrorChain(err), held_back, "{message}");
            }
            None => tracing::warn!(held_back, "{message}"),
        }
    }
}
