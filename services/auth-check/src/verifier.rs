//! The Verify core: parse → cache → (store → argon2, single flight) → status, expiry, workspace →
//! quota. Plain Rust on domain types; the gRPC adapter converts at the edge.
//!
//! Warm path (a key verified before): parse (no allocation), one BLAKE2b digest, one read-locked
//! map lookup, the state checks, one quota decision (one Redis round trip at most), one map insert
//! for last-used. No argon2, no database.
//!
//! The parts live beside this file: the cold path (`cold.rs`), the quota call and the fail mode
//! (`quota.rs`), the change poll (`change_poll.rs`), the cache, the failure budget, the single
//! flight and the last-used batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use blake2::{Blake2b256, Digest};
use stanna_keys::time::{from_micros_since_epoch, micros_since_epoch};
use stanna_keys::{Clock, KeyHasher, KeyId, KeyStatus, PresentedKey, WorkspaceId};
use stanna_store::{KeyStore, Outcome, StoreError};
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use crate::budget::FailureBudget;
use crate::cache::{CacheEntry, KeyCache};
use crate::change_poll::ChangeTracker;
use crate::cold::Cold;
use crate::known_ids::{KnownIds, PollGate};
use crate::metrics::VerifyMetrics;
use crate::quota::QuotaConnection;
use crate::settings::{HashCheck, Stats, VerifierSettings};
use crate::single_flight::SingleFlight;
use crate::state::{KeyState, Required, Verdict, VerifyCode, VerifyError};
use crate::usage::Usage;

/// The workspace a Verify asks for: none when empty, else a valid workspace id.
pub(crate) fn asked_workspace(workspace: &str) -> Result<Option<WorkspaceId>, VerifyError> {
    match workspace {
        "" => Ok(None),
        w => WorkspaceId::parse(w)
            .map(Some)
            .map_err(|e| VerifyError::InvalidArgument {
                field: "workspace_id",
                reason: e.to_string(),
            }),
    }
}

/// A cached state this old is re-read from the store even if no change was reported: a safety
/// net should a change ever be missed (e.g. a registry clock far behind).
pub const MAX_STATE_AGE: Duration = Duration::from_secs(60);

/// How long usage per key per hour is kept: the 30 days `GetKeyUsage` can ask for.
pub const USAGE_RETENTION: Duration = Duration::from_secs(30 * 86_400);

/// One cold verification in flight: a key id and the digest of the presented key.
pub(crate) type FlightKey = (KeyId, [u8; 32]);

/// The Verify core. Cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// The primary: every write, and the reads the replica cannot answer.
    pub(crate) store: KeyStore,
    /// A streaming replica for lookups and the change feed (`reads.rs`).
    pub(crate) replica: Option<crate::reads::Replica>,
    pub(crate) quota: QuotaConnection,
    pub(crate) hash_check: Arc<dyn HashCheck>,
    pub(crate) settings: VerifierSettings,
    pub(crate) cache: KeyCache,
    pub(crate) flights: SingleFlight<FlightKey, Cold>,
    pub(crate) changes: ChangeTracker,
    pub(crate) failures: FailureBudget,
    pub(crate) argon2: Semaphore,
    /// Usage and last-used times not yet written (`usage.rs`).
    pub(crate) usage: Usage,
    /// The key ids that exist (`known_ids.rs`).
    pub(crate) known_keys: KnownIds<KeyId>,
    /// The session ids that exist.
    pub(crate) known_sessions: KnownIds<stanna_keys::SessionId>,
    /// One change poll at a time, and the early polls of misses.
    pub(crate) poll_gate: PollGate,
    /// The session cache and feed (`session.rs`).
    pub(crate) sessions: crate::session::Sessions,
    /// Since when the store has failed to answer (a poll or a lookup), µs since the epoch; 0
    /// while it answers. An atomic, not a lock: every warm Verify reads it.
    store_failing_since: AtomicU64,
    /// When usage rows were last purged, µs since the epoch; 0: not yet.
    usage_purged_at: AtomicU64,
    pub(crate) stats: Stats,
    pub(crate) metrics: VerifyMetrics,
    clock: Clock,
}

/// Builds a [`Verifier`]; what is not set takes the production default.
pub struct VerifierBuilder {
    store: KeyStore,
    replica: Option<KeyStore>,
    quota: QuotaConnection,
    settings: VerifierSettings,
    clock: Clock,
    metrics: Option<VerifyMetrics>,
    hash_check: Option<Arc<dyn HashCheck>>,
}

impl VerifierBuilder {
    /// "Now" from `clock` (tests move it by hand).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Counts on `metrics` (registered by the caller); default: counted nowhere visible.
    pub fn metrics(mut self, metrics: VerifyMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Reads lookups and the change feed from `replica`, a streaming replica of the store, while
    /// it is current (`STANNA_DATABASE_READ_URL`; `reads.rs`).
    pub fn replica(mut self, replica: KeyStore) -> Self {
        self.replica = Some(replica);
        self
    }

    /// Checks keys against their hashes with `check` instead of argon2 directly.
    pub fn hash_check(mut self, check: Arc<dyn HashCheck>) -> Self {
        self.hash_check = Some(check);
        self
    }

    /// The verifier.
    pub fn build(self) -> Verifier {
        let now = (self.clock)();
        // Verification reads the cost from each stored hash; these parameters are unused.
        let hash_check = self.hash_check.unwrap_or_else(|| {
            Arc::new(
                KeyHasher::new(stanna_keys::HashParams::insecure_fast_for_tests())
                    .expect("argon2's minimum parameters are valid"),
            )
        });
        Verifier {
            inner: Arc::new(Inner {
                store: self.store,
                replica: self.replica.map(crate::reads::Replica::new),
                quota: self.quota,
                hash_check,
                cache: KeyCache::new(self.settings.cache_size),
                argon2: Semaphore::new(self.settings.argon2_concurrency.max(1)),
                settings: self.settings,
                flights: SingleFlight::default(),
                changes: ChangeTracker::new(now),
                failures: FailureBudget::default(),
                usage: Usage::default(),
                known_keys: KnownIds::new(),
                known_sessions: KnownIds::new(),
                poll_gate: PollGate::new(),
                sessions: crate::session::Sessions::new(now),
                store_failing_since: AtomicU64::new(0),
                usage_purged_at: AtomicU64::new(0),
                stats: Stats::default(),
                metrics: self.metrics.unwrap_or_else(VerifyMetrics::unregistered),
                clock: self.clock,
            }),
        }
    }
}

impl Verifier {
    /// A verifier over `store` asking `quota` for decisions, with the system clock.
    pub fn builder(
        store: KeyStore,
        quota: impl Into<QuotaConnection>,
        settings: VerifierSettings,
    ) -> VerifierBuilder {
        VerifierBuilder {
            store,
            replica: None,
            quota: quota.into(),
            settings,
            clock: stanna_keys::system_clock(),
            metrics: None,
            hash_check: None,
        }
    }

    /// Work counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// The metrics this verifier counts on.
    pub fn metrics(&self) -> &VerifyMetrics {
        &self.inner.metrics
    }

    /// Last-used times written so far.
    pub fn last_used_writes(&self) -> u64 {
        self.inner.usage.last_used_written.load(Ordering::Relaxed)
    }

    /// Usage rows written so far.
    pub fn usage_rows_written(&self) -> u64 {
        self.inner.usage.rows_written.load(Ordering::Relaxed)
    }

    /// Keys in the cache.
    pub fn cached_keys(&self) -> usize {
        self.inner.cache.len()
    }

    pub(crate) fn now(&self) -> SystemTime {
        (self.inner.clock)()
    }

    /// Verifies `key` (for `workspace`, when given) and charges `cost` to its quota.
    ///
    /// # Errors
    /// [`VerifyError::InvalidArgument`] for a bad `workspace_id`, or a cost above the key's
    /// smallest limit (it could never be admitted); [`VerifyError::Unavailable`] when the store or
    /// (fail-closed) the quota cannot answer.
    pub async fn verify(
        &self,
        key: &str,
        workspace: &str,
        cost: u32,
    ) -> Result<Verdict, VerifyError> {
        self.verify_with(key, workspace, cost, Required::Nothing)
            .await
    }

    /// [`Verifier::verify`] for a request that needs scopes: a key lacking one is
    /// [`VerifyCode::InsufficientScope`], decided after the key's state and workspace and before
    /// the quota, so it charges nothing.
    ///
    /// # Errors
    /// As [`Verifier::verify`].
    pub async fn verify_with(
        &self,
        key: &str,
        workspace: &str,
        cost: u32,
        required: Required<'_>,
    ) -> Result<Verdict, VerifyError> {
        if key.is_empty() {
            return Ok(Verdict::denied(
                VerifyCode::Missing,
                "no API key was presented",
            ));
        }
        let presented = match PresentedKey::parse(key) {
            Ok(parsed) => parsed,
            Err(e) => return Ok(Verdict::denied(VerifyCode::Malformed, e.to_string())),
        };
        let workspace = asked_workspace(workspace)?;
        let cost = cost.max(1);
        let state = match self.key_state(&presented).await? {
            Ok(state) => state,
            Err(verdict) => return Ok(verdict),
        };
        let now = self.now();
        let id = presented.key_id();
        let count = |outcome| self.inner.usage.record(id, outcome, now);
        if state.status == KeyStatus::Inactive {
            count(Outcome::Inactive);
            return Ok(Verdict::about(
                VerifyCode::Inactive,
                "the API key is inactive",
                state,
            ));
        }
        if state.expires_at().is_some_and(|at| at <= now) {
            let message = match state.replaced_by() {
                Some(replacement) => format!(
                    "the API key was rotated out and its grace period has ended: use its replacement, key {replacement}"
                )
                .into(),
                None => std::borrow::Cow::Borrowed("the API key has expired"),
            };
            count(Outcome::Expired);
            return Ok(Verdict::about(VerifyCode::Expired, message, state));
        }
        if workspace
            .as_ref()
            .is_some_and(|w| w.as_str() != state.workspace())
        {
            count(Outcome::Forbidden);
            return Ok(Verdict::about(
                VerifyCode::WorkspaceMismatch,
                "the API key belongs to another workspace",
                state,
            ));
        }
        if let Some((missing, message)) = required.refusal(state.scopes()) {
            count(Outcome::Forbidden);
            let mut verdict = Verdict::about(VerifyCode::InsufficientScope, message, state);
            verdict.missing_scope = missing;
            return Ok(verdict);
        }
        let smallest = state.smallest_limit();
        if cost > smallest.limit.limit() {
            // Not an outage and not worth a quota round trip: no window could ever admit it.
            return Err(VerifyError::InvalidArgument {
                field: "cost",
                reason: format!(
                    "{cost} exceeds this key's {} limit of {}, so it could never be admitted",
                    smallest.name,
                    smallest.limit.limit()
                ),
            });
        }
        let verdict = self.consume_quota(state, cost).await?;
        match verdict.code {
            VerifyCode::Valid => count(Outcome::Allowed),
            VerifyCode::RateLimited => count(Outcome::RateLimited),
            _ => {}
        }
        Ok(verdict)
    }

    /// The verified state of `presented`, from the cache or the cold path; `Err(verdict)` for a
    /// key that does not verify.
    async fn key_state(
        &self,
        presented: &PresentedKey,
    ) -> Result<Result<Arc<KeyState>, Verdict>, VerifyError> {
        let id = presented.key_id();
        let digest: [u8; 32] = Blake2b256::digest(presented.expose_bytes()).into();
        let now = self.now();
        let cache = |hit: bool| {
            tracing::Span::current().record("cache", if hit { "hit" } else { "miss" });
            self.inner.metrics.cache_lookup(hit);
        };
        if let Some(entry) = self.inner.cache.get(&id, &digest) {
            cache(true);
            return self.fresh_state(id, entry, now).await;
        }
        cache(false);
        // An id that does not exist costs no lookup (`known_ids.rs`); one not known yet may be a
        // key created a moment ago, so the miss runs one early change poll first (or is told to
        // retry when none is left).
        if !self.inner.known_keys.contains(&id) {
            // Deleted: invalid at once, without a poll, however often it is tried.
            if self.inner.known_keys.is_gone(&id) {
                self.unknown_id();
                return Ok(Err(Verdict::not_found()));
            }
            let authoritative = self.poll_for_miss().await?;
            if !self.inner.known_keys.contains(&id) {
                if !authoritative {
                    return Err(VerifyError::Unavailable(crate::known_ids::NOT_KNOWN_YET));
                }
                self.unknown_id();
                return Ok(Err(Verdict::not_found()));
            }
            // Misses of one new key wake together; the first may have verified and cached it.
            if let Some(entry) = self.inner.cache.get(&id, &digest) {
                return self.fresh_state(id, entry, now).await;
            }
        }
        // Requests for the same presented key join one flight; only a new flight (a distinct
        // presented key) spends a token of the key id's failure budget. The flight runs on a task
        // of its own (`single_flight.rs`), so its argon2 permit and its token stay spent until
        // the argon2 run really ends, whoever gives up waiting.
        let admitted = self.inner.flights.join_or_start(
            (id, digest),
            || self.inner.failures.take(id, now),
            || {
                let verifier = self.clone();
                let presented = *presented;
                async move {
                    let outcome = verifier.cold_verify(presented, digest).await;
                    if matches!(outcome, Cold::Verified(_)) {
                        verifier.inner.failures.refund(id);
                    }
                    outcome
                }
                // The flight's store query and argon2 run belong to the trace of the request that
                // started it.
                .instrument(tracing::Span::current())
            },
        );
        let waiter = match admitted {
            Ok(waiter) => waiter,
            Err(retry_after) => {
                let mut verdict = Verdict::denied(
                    VerifyCode::RateLimited,
                    "too many failed verifications for this key id; retry later",
                );
                verdict.retry_after = Some(retry_after);
                return Ok(Err(verdict));
            }
        };
        match waiter
            .wait()
            .await
            .unwrap_or(Cold::Unavailable("verification failed; retry"))
        {
            Cold::Verified(state) => Ok(Ok(state)),
            Cold::NotFound => Ok(Err(Verdict::not_found())),
            Cold::Unavailable(message) => Err(VerifyError::Unavailable(message)),
        }
    }

    /// A cached state, trusted while the store answers (the change poll keeps it current, so this
    /// costs no store round trip); past [`MAX_STATE_AGE`] it is re-read; once the store fails to
    /// answer it is served for at most `stale_if_error` after that first failure.
    async fn fresh_state(
        &self,
        id: KeyId,
        entry: CacheEntry,
        now: SystemTime,
    ) -> Result<Result<Arc<KeyState>, Verdict>, VerifyError> {
        let within_stale_limit = self.within_stale_limit(now);
        let age = now.duration_since(entry.fetched_at()).unwrap_or_default();
        if age <= MAX_STATE_AGE {
            // The change poll keeps cached states current while the store answers; once it has
            // been failing past the stale limit, cached keys stop verifying.
            if within_stale_limit {
                return Ok(Ok(entry.state));
            }
            return Err(VerifyError::Unavailable("the key store is unavailable"));
        }
        self.inner
            .stats
            .store_lookups
            .fetch_add(1, Ordering::Relaxed);
        match self.read_key(id).await {
            Ok(Some(record)) => {
                let state = Arc::new(KeyState::from_record(&record, self.inner.settings.defaults));
                self.inner.cache.update_state(&id, state.clone(), now);
                // A change the poll applied while this read was in flight may have been
                // overwritten by it: the entry goes, and the next request reads the key again.
                if self
                    .inner
                    .changes
                    .applied_other_than(&id, record.updated_at)
                {
                    self.inner.cache.remove(&id);
                }
                Ok(Ok(state))
            }
            Ok(None) => {
                self.inner.cache.remove(&id);
                Ok(Err(Verdict::not_found()))
            }
            Err(err) if within_stale_limit => {
                self.store_failed(now);
                tracing::debug!(error = %stanna_telemetry::ErrorChain(&err), key_id = %id, "store unreachable; serving the cached key state");
                Ok(Ok(entry.state))
            }
            Err(err) => {
                self.store_failed(now);
                static PAST_STALE: stanna_telemetry::LogLimiter =
                    stanna_telemetry::LogLimiter::new(Duration::from_secs(10));
                if let Some(held_back) = PAST_STALE.allow() {
                    tracing::warn!(error = %stanna_telemetry::ErrorChain(&err), key_id = %id, held_back, "store unreachable past the stale limit");
                }
                Err(VerifyError::Unavailable("the key store is unavailable"))
            }
        }
    }

    /// Key `id` as stored (not deleted), from the replica when it can answer for it (`reads.rs`):
    /// a row other than the version the poll last applied (when it applied one in the last 40 s)
    /// is read again from the primary.
    pub(crate) async fn read_key(
        &self,
        id: KeyId,
    ) -> Result<Option<stanna_store::KeyRecord>, StoreError> {
        self.read_by_id(
            |replica, replayed| async move { replica.find_by_key_id_replayed(&id, replayed).await },
            |primary| async move { primary.find_by_key_id(&id).await },
            |record| {
                !self
                    .inner
                    .changes
                    .applied_other_than(&id, record.updated_at)
            },
        )
        .await
    }

    /// Counts an id refused because it does not exist.
    pub(crate) fn unknown_id(&self) {
        self.inner.stats.unknown_ids.fetch_add(1, Ordering::Relaxed);
        self.inner.metrics.unknown_id();
    }

    /// Key ids known to exist.
    pub fn known_key_ids(&self) -> usize {
        self.inner.known_keys.len()
    }

    /// Whether the set of existing ids has been loaded (readiness waits for it).
    pub fn known_ids_loaded(&self) -> bool {
        self.inner.known_keys.loaded()
    }

    /// Notes that the store answered: it is not failing.
    pub(crate) fn store_answered(&self) {
        self.inner.store_failing_since.store(0, Ordering::Relaxed);
    }

    /// Notes that the store failed to answer at `at` (only the first failure of an outage
    /// counts: the stale limit runs from it).
    pub(crate) fn store_failed(&self, at: SystemTime) {
        let at = micros_since_epoch(at).max(1);
        let _ = self.inner.store_failing_since.compare_exchange(
            0,
            at,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Whether cached keys may still verify at `now`: the store answers, or has been failing for
    /// no longer than `stale_if_error`. A healthy store never makes a cached key wait, whatever
    /// the stale limit and the poll interval.
    fn within_stale_limit(&self, now: SystemTime) -> bool {
        match self.inner.store_failing_since.load(Ordering::Relaxed) {
            0 => true,
            since => {
                let failing_for = now
                    .duration_since(from_micros_since_epoch(since))
                    .unwrap_or_default();
                failing_for <= self.inner.settings.stale_if_error
            }
        }
    }

    /// Writes pending usage counts and last-used times, and once an hour purges usage rows
    /// older than [`USAGE_RETENTION`]. Returns (usage rows, last-used times) written.
    ///
    /// # Errors
    /// The store's error; what was not written is kept for the next flush.
    pub async fn flush_usage(&self) -> Result<(usize, usize), StoreError> {
        let result = self.inner.usage.flush(&self.inner.store).await;
        let (rows, uses) = match &result {
            Ok(done) => *done,
            Err(partial) => (partial.rows_written, partial.last_used_written),
        };
        self.inner.metrics.usage_written(rows as u64, uses as u64);
        let written = result.map_err(|partial| partial.error)?;
        self.purge_usage_hourly().await?;
        Ok(written)
    }

    /// Deletes usage rows past the retention, at most once an hour per process (several
    /// auth-checks purging the same hour is harmless: the second deletes nothing).
    async fn purge_usage_hourly(&self) -> Result<(), StoreError> {
        let now = self.now();
        let now_us = micros_since_epoch(now);
        let last = self.inner.usage_purged_at.load(Ordering::Relaxed);
        if last != 0 && now_us.saturating_sub(last) < 3_600_000_000 {
            return Ok(());
        }
        self.inner
            .usage_purged_at
            .store(now_us.max(1), Ordering::Relaxed);
        let purged = self.inner.store.purge_usage(now - USAGE_RETENTION).await?;
        if purged > 0 {
            tracing::info!(rows = purged, "purged usage rows past the retention");
        }
        Ok(())
    }
}
