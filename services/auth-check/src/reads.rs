//! Where auth-check reads: the primary (`STANNA_DATABASE_URL`), or a PostgreSQL streaming replica
//! (`STANNA_DATABASE_READ_URL`) when it is current — the read path that scales out.
//!
//! Revocation within a second rests on the change poll, so the poll decides what "current"
//! means. Each poll first asks the primary for its WAL flush position (every change visible on the
//! primary is at or before it), then waits up to [`REPLICA_WAIT`] for the replica to have replayed
//! past it: from then on the replica shows at least what the primary showed, and the poll reads
//! it. A replica further behind, unreachable or promoted is not read: the poll reads the primary,
//! exactly as without a replica. A replica that fails or stalls in the middle of a poll has that
//! poll run again on the primary. So a lagging replica costs the primary load, never a late
//! revocation: a poll spends at most [`REPLICA_WAIT`] + [`REPLICA_POLL_WAIT`] (250 ms) on the
//! replica before it reads the primary, so a change committed just after one poll's reads is
//! applied, at the 250 ms interval, within about 250 + 250 + 250 ms and a primary read.
//! Every poll also checks the replica is of the primary's cluster (its system identifier), so a
//! standby replaced under the same address by one of another cluster is never read.
//!
//! Lookups (the cold path, the 60 s re-read, sessions) read the replica only with the position
//! the last poll checked, for [`TARGET_VALID_FOR`] after it, and only from a server that has
//! replayed past that position — checked in the lookup's own statement, so on the server that
//! answers. A lookup the replica cannot answer for — nothing found (behind the position, or a
//! key created a moment ago), a row of another version than the one the poll applied to that key, an
//! error, [`REPLICA_LOOKUP_WAIT`] without an answer — is asked of the primary. Key hashes never
//! change (rotation makes a new key), so a row found is checked against the right hash; only its
//! state can be behind, and the poll corrects that as it would a primary read that raced a
//! change. Writes (usage, last-used, purges) always go to the primary, and only the primary's
//! answers count as "the store answered" for `STANNA_STALE_IF_ERROR`.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use stanna_store::{KeyStore, StoreError, WalPosition};

use crate::Verifier;

/// Longest a change poll waits for the replica to replay what the primary had flushed before it
/// reads the primary instead. A healthy replica on the same network replays within milliseconds;
/// with the default 250 ms poll interval this keeps revocation well within a second.
pub const REPLICA_WAIT: Duration = Duration::from_millis(100);

/// Longest a poll's reads on the replica may take before the poll is run on the primary instead
/// (they take a few milliseconds; a replica that stalls must not hold revocations back). The
/// first poll, which loads every existing id, is given [`REPLICA_LOAD_WAIT`].
pub const REPLICA_POLL_WAIT: Duration = Duration::from_millis(150);

/// Longest the first poll (the load of every existing id: about a second at 1 000 000 keys) may
/// take on the replica before it is run on the primary.
pub const REPLICA_LOAD_WAIT: Duration = Duration::from_secs(30);

/// Longest a lookup waits for the replica before it asks the primary (a replica that has
/// vanished from the network would otherwise hold each cold lookup for the 5 s connect timeout).
/// A lookup on a healthy replica takes about a millisecond.
pub const REPLICA_LOOKUP_WAIT: Duration = Duration::from_millis(200);

/// How long after the poll that checked it lookups may use the replica's position: while polls
/// fail (the primary down), lookups go to the primary — which fails too — rather than to a
/// replica nothing vouches for. Well inside the 20 s by which a cold verification's read may be
/// older than the changes the poll applies after it (`change_poll.rs`).
pub const TARGET_VALID_FOR: Duration = Duration::from_secs(5);

/// The first pause between two looks at the replica's replay position; it doubles up to
/// [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(1);
const MAX_PAUSE: Duration = Duration::from_millis(20);

/// The replica, and the position the last poll found it past.
pub(crate) struct Replica {
    pub(crate) store: KeyStore,
    /// The primary's flush position the last poll found the replica past, and when; `None`:
    /// the last poll read the primary.
    target: Mutex<Option<(WalPosition, SystemTime)>>,
    /// The primary's system identifier, once asked (it never changes, not even across a
    /// failover).
    primary_cluster: std::sync::OnceLock<i64>,
}

impl Replica {
    pub(crate) fn new(store: KeyStore) -> Self {
        Self {
            store,
            target: Mutex::new(None),
            primary_cluster: std::sync::OnceLock::new(),
        }
    }

    fn set_target(&self, target: Option<(WalPosition, SystemTime)>) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = target;
    }

    /// The position lookups may ask the replica for at `now`, if any.
    fn target(&self, now: SystemTime) -> Option<WalPosition> {
        let target = *self.target.lock().unwrap_or_else(|p| p.into_inner());
        target
            .filter(|(_, at)| now.duration_since(*at).unwrap_or_default() <= TARGET_VALID_FOR)
            .map(|(position, _)| position)
    }
}

/// Where a change poll reads.
pub(crate) enum PollSource {
    /// The primary.
    Primary,
    /// The replica, which has replayed past the primary's flush position of this poll.
    Replica(KeyStore),
}

impl Verifier {
    /// Where the change poll about to start reads: the replica once it has replayed what the
    /// primary had flushed when asked (waiting up to [`REPLICA_WAIT`]), else the primary.
    /// Records the answer for the lookups that follow.
    ///
    /// # Errors
    /// The primary's error when it cannot say its position: the poll fails as it would reading
    /// the primary, and lookups stop reading the replica, so a primary outage is met as without
    /// a replica (`STANNA_STALE_IF_ERROR`).
    pub(crate) async fn poll_source(&self) -> Result<PollSource, StoreError> {
        let Some(replica) = &self.inner.replica else {
            return Ok(PollSource::Primary);
        };
        let asked_at = self.now();
        let flushed = match self.inner.store.wal_flushed().await {
            Ok(flushed) => flushed,
            Err(err) => {
                replica.set_target(None);
                return Err(err);
            }
        };
        let cluster = match replica.primary_cluster.get() {
            Some(cluster) => *cluster,
            None => {
                let cluster = self.inner.store.system_identifier().await?;
                *replica.primary_cluster.get_or_init(|| cluster)
            }
        };
        let current = match flushed {
            // A replica that has vanished from the network must not hold the poll either.
            Some(target) => tokio::time::timeout(
                REPLICA_WAIT,
                replica_reaches(&replica.store, target, cluster),
            )
            .await
            .unwrap_or(false)
            .then_some(target),
            // The primary says it is in recovery itself: nothing to compare with.
            None => None,
        };
        replica.set_target(current.map(|target| (target, asked_at)));
        if current.is_some() {
            Ok(PollSource::Replica(replica.store.clone()))
        } else {
            self.replica_fallback();
            Ok(PollSource::Primary)
        }
    }

    /// After a poll's reads on the replica failed or stalled: lookups stop reading it until a
    /// poll finds it current again, and the poll runs again on the primary.
    pub(crate) fn replica_poll_failed(&self, err: Option<&StoreError>) {
        if let Some(replica) = &self.inner.replica {
            replica.set_target(None);
        }
        self.inner
            .stats
            .replica_poll_failures
            .fetch_add(1, Ordering::Relaxed);
        self.replica_fallback();
        replica_warning(
            match err {
                Some(_) => "the read replica failed during a change poll: polling the primary",
                None => "the read replica was too slow for a change poll: polling the primary",
            },
            err,
        );
    }

    /// A poll that read the replica to the end.
    pub(crate) fn replica_polled(&self) {
        self.inner
            .stats
            .replica_polls
            .fetch_add(1, Ordering::Relaxed);
    }

    fn replica_fallback(&self) {
        self.inner
            .stats
            .replica_fallbacks
            .fetch_add(1, Ordering::Relaxed);
        self.inner.metrics.replica_fallback();
    }

    /// A lookup by id: `on_replica` with the last poll's position while it is valid, and
    /// `on_primary` when there is no replica, no valid position, or the replica's answer is not
    /// final — nothing found, a row `fresh` refuses, an error, no answer within
    /// [`REPLICA_LOOKUP_WAIT`]. Only the primary's answers count as the store answering; its
    /// errors are the caller's to count.
    pub(crate) async fn read_by_id<T, R, RFut, P, PFut>(
        &self,
        on_replica: R,
        on_primary: P,
        fresh: impl Fn(&T) -> bool,
    ) -> Result<Option<T>, StoreError>
    where
        R: FnOnce(KeyStore, WalPosition) -> RFut,
        RFut: Future<Output = Result<Option<T>, StoreError>>,
        P: FnOnce(KeyStore) -> PFut,
        PFut: Future<Output = Result<Option<T>, StoreError>>,
    {
        if let Some(replica) = &self.inner.replica
            && let Some(target) = replica.target(self.now())
        {
            let answer = tokio::time::timeout(
                REPLICA_LOOKUP_WAIT,
                on_replica(replica.store.clone(), target),
            )
            .await;
            match answer {
                Ok(Ok(Some(found))) if fresh(&found) => {
                    self.inner
                        .stats
                        .replica_lookups
                        .fetch_add(1, Ordering::Relaxed);
                    self.inner.metrics.replica_lookup();
                    return Ok(Some(found));
                }
                // Not final: ask the primary.
                Ok(Ok(_)) => {
                    self.inner
                        .stats
                        .replica_misses
                        .fetch_add(1, Ordering::Relaxed);
                }
                // Until a poll finds it current again.
                Ok(Err(err)) => {
                    replica.set_target(None);
                    replica_warning(
                        "the read replica does not answer: reading the primary",
                        Some(&err),
                    );
                }
                Err(_) => {
                    replica.set_target(None);
                    replica_warning(
                        "the read replica is slow to answer a lookup: reading the primary",
                        None,
                    );
                }
            }
            self.replica_fallback();
        }
        let found = on_primary(self.inner.store.clone()).await?;
        self.store_answered();
        Ok(found)
    }
}

/// Whether `replica`, of the primary's `cluster`, replays past `target` (looking again after
/// growing pauses).
async fn replica_reaches(replica: &KeyStore, target: WalPosition, cluster: i64) -> bool {
    let mut pause = FIRST_PAUSE;
    loop {
        match replica.replay_position().await {
            Ok(position) if position.system_identifier != cluster => {
                static OTHER: stanna_telemetry::LogLimiter =
                    stanna_telemetry::LogLimiter::new(Duration::from_secs(10));
                if let Some(held_back) = OTHER.allow() {
                    tracing::error!(
                        held_back,
                        "STANNA_DATABASE_READ_URL now reaches a replica of another PostgreSQL cluster than STANNA_DATABASE_URL's: it is not read"
                    );
                }
                return false;
            }
            Ok(position) => match position.replayed {
                Some(at) if at >= target => return true,
                Some(at) => {
                    tracing::trace!(behind_bytes = target - at, "the read replica is behind");
                }
                None => {
                    replica_warning(
                        "the read replica is no longer in recovery (promoted?): reading the primary",
                        None,
                    );
                    return false;
                }
            },
            Err(err) => {
                replica_warning(
                    "the read replica does not answer: reading the primary",
                    Some(&err),
                );
                return false;
            }
        }
        // The caller's timeout ends the wait.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
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
