//! The Verify core: parse → cache → (store → argon2, single flight) → status, expiry, workspace →
//! quota. Plain Rust; the gRPC adapter only converts.
//!
//! Warm path (a key verified before): parse (no allocation), one BLAKE2b digest, one read-locked
//! map lookup, the state checks, one Quota call (one Redis round trip at most), one map insert for
//! last-used. No argon2, no database.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blake2::{Blake2b256, Digest};
use stanna_grpc::Connection;
use stanna_keys::{KeyHasher, KeyId, KeyStatus, PresentedKey, RateLimits, UserId, WorkspaceId};
use stanna_proto::keys::v1 as pb;
use stanna_proto::keys::v1::quota_client::QuotaClient;
use stanna_store::{ChangePosition, KeyChange, KeyRecord, KeyStore, StoreError};
use stanna_telemetry::metrics::metrics;
use tokio::sync::{Semaphore, watch};
use tracing::Instrument as _;

use crate::budget::FailureBudget;
use crate::cache::{CacheEntry, KeyCache};
use crate::last_used::LastUsed;

/// A source of "now", injected so tests control time.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// How far back each change poll reads, before the newest change already seen: a change is
/// stamped before its transaction commits, so one that waited for a pooled connection (5 s at
/// most) or SQLite's write lock (10 s at most) commits after later-stamped ones. Re-reading 20 s
/// of changes every poll costs little and sees it.
pub const CHANGE_OVERLAP: Duration = Duration::from_secs(20);
/// A cached state this old is re-read from the store even if no change was reported: a safety
/// net should a change ever be missed (e.g. a registry clock far behind).
pub const MAX_STATE_AGE: Duration = Duration::from_secs(60);

/// How auth-check reaches the quota: the service in this process (all-in-one: called directly, no
/// protobuf encoding) or a transport (split mode).
pub type QuotaConnection = Connection<dyn stanna_proto::keys::v1::quota_server::Quota>;

/// What auth-check does when the quota service cannot decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailMode {
    /// Allow the request (logged and counted; no rate-limit headers). Envoy's and Kong's default.
    Open,
    /// Answer UNAVAILABLE.
    Closed,
}

/// A key's state as verification needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyState {
    /// The key id.
    pub key_id: KeyId,
    /// Owning workspace.
    pub workspace: WorkspaceId,
    /// Owning user.
    pub user: UserId,
    /// The key's name.
    pub name: String,
    /// Active or inactive.
    pub status: KeyStatus,
    /// Expiry, if any.
    pub expires_at: Option<SystemTime>,
    /// The effective windows, ready for the Quota request.
    pub limits: Vec<pb::RateLimit>,
}

impl KeyState {
    fn from_record(record: &KeyRecord, defaults: RateLimits) -> Self {
        Self {
            key_id: record.key_id,
            workspace: record.workspace.clone(),
            user: record.user.clone(),
            name: record.name.as_str().to_owned(),
            status: record.status,
            expires_at: record.expires_at,
            limits: stanna_proto::convert::rate_limits(record.rate_limits.resolve(defaults)),
        }
    }
}

/// Why a Verify could not be answered with a verdict.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The request is unusable; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// The store (for an uncached key, or past the stale limit) or, in closed fail mode, the quota
    /// service is unreachable.
    #[error("{0}")]
    Unavailable(String),
}

/// Counters for metrics and for tests that count work.
#[derive(Debug, Default)]
pub struct Stats {
    /// argon2 verifications run.
    pub argon2_runs: AtomicU64,
    /// Store lookups of a key by id.
    pub store_lookups: AtomicU64,
    /// Verifications allowed because the quota could not decide (fail-open).
    pub fail_open: AtomicU64,
}

/// The outcome of the cold path, shared by every request waiting on the same single flight.
#[derive(Debug, Clone)]
enum Cold {
    Verified(Arc<KeyState>),
    NotFound,
    Unavailable(String),
}

/// One cold verification in flight: a key id and the digest of the presented key.
type FlightKey = (KeyId, [u8; 32]);

/// Settings of the core.
#[derive(Clone)]
pub struct VerifierSettings {
    /// Limits of keys without overrides.
    pub defaults: RateLimits,
    /// Keys kept in the cache.
    pub cache_size: usize,
    /// argon2 runs at once.
    pub argon2_concurrency: usize,
    /// Fail-open or fail-closed when the quota cannot decide.
    pub fail_mode: FailMode,
    /// How long cached keys keep verifying while the store is unreachable.
    pub stale_if_error: Duration,
    /// Longest wait for a quota decision before the fail mode applies.
    pub quota_timeout: Duration,
}

/// The Verify core. Cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    store: KeyStore,
    quota: QuotaConnection,
    hasher: KeyHasher,
    settings: VerifierSettings,
    cache: KeyCache,
    inflight: Mutex<HashMap<FlightKey, watch::Receiver<Option<Cold>>>>,
    /// Keys the change poll saw change recently, and when: a cold verification whose store read
    /// is older than a change re-reads the key before caching it.
    recent_changes: Mutex<HashMap<KeyId, SystemTime>>,
    failures: FailureBudget,
    argon2: Semaphore,
    last_used: LastUsed,
    /// The newest `updated_at` the change poll has seen.
    watermark: Mutex<SystemTime>,
    /// When the store last answered (a poll or a lookup).
    /// µs since the epoch; an atomic, not a lock: every warm Verify reads it.
    store_ok_at: AtomicU64,
    stats: Stats,
    clock: Clock,
}

/// A verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Why.
    pub code: pb::VerifyCode,
    /// In words.
    pub message: String,
    /// The key's state when the key itself verified.
    pub key: Option<Arc<KeyState>>,
    /// Windows, when a quota decision was made.
    pub windows: Vec<pb::Window>,
    /// When refused for a limit or the failure budget.
    pub retry_after: Option<Duration>,
}

impl Verdict {
    fn denied(code: pb::VerifyCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            key: None,
            windows: Vec::new(),
            retry_after: None,
        }
    }

    fn about(code: pb::VerifyCode, message: impl Into<String>, key: Arc<KeyState>) -> Self {
        Self {
            key: Some(key),
            ..Self::denied(code, message)
        }
    }
}

impl Verifier {
    /// A verifier over `store`, asking `quota` for decisions; "now" comes from `clock`.
    pub fn new(
        store: KeyStore,
        quota: impl Into<QuotaConnection>,
        settings: VerifierSettings,
        clock: Clock,
    ) -> Self {
        let now = clock();
        Self {
            inner: Arc::new(Inner {
                store,
                quota: quota.into(),
                // Verification reads the cost from each stored hash; these parameters are unused.
                hasher: KeyHasher::new(stanna_keys::HashParams::insecure_fast_for_tests())
                    .expect("argon2's minimum parameters are valid"),
                cache: KeyCache::new(settings.cache_size),
                argon2: Semaphore::new(settings.argon2_concurrency.max(1)),
                settings,
                inflight: Mutex::new(HashMap::new()),
                recent_changes: Mutex::new(HashMap::new()),
                failures: FailureBudget::default(),
                last_used: LastUsed::default(),
                watermark: Mutex::new(now),
                store_ok_at: AtomicU64::new(micros(now)),
                stats: Stats::default(),
                clock,
            }),
        }
    }

    /// Work counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Last-used rows written so far.
    pub fn last_used_writes(&self) -> u64 {
        self.inner.last_used.written.load(Ordering::Relaxed)
    }

    /// Keys in the cache.
    pub fn cached_keys(&self) -> usize {
        self.inner.cache.len()
    }

    fn now(&self) -> SystemTime {
        (self.inner.clock)()
    }

    /// Verifies `key` (for `workspace`, when given) and charges `cost` to its quota.
    ///
    /// # Errors
    /// [`VerifyError::InvalidArgument`] for a bad `workspace_id` or cost;
    /// [`VerifyError::Unavailable`] when the store or (fail-closed) the quota cannot answer.
    pub async fn verify(
        &self,
        key: &str,
        workspace: &str,
        cost: u32,
    ) -> Result<Verdict, VerifyError> {
        if key.is_empty() {
            return Ok(Verdict::denied(
                pb::VerifyCode::Missing,
                "no API key was presented",
            ));
        }
        let presented = match PresentedKey::parse(key) {
            Ok(parsed) => parsed,
            Err(e) => return Ok(Verdict::denied(pb::VerifyCode::Malformed, e.to_string())),
        };
        let workspace = match workspace {
            "" => None,
            w => Some(
                WorkspaceId::parse(w)
                    .map_err(|e| VerifyError::InvalidArgument(format!("workspace_id: {e}")))?,
            ),
        };
        let cost = cost.max(1);
        let state = match self.key_state(&presented).await? {
            Ok(state) => state,
            Err(verdict) => return Ok(verdict),
        };
        let now = self.now();
        if state.status == KeyStatus::Inactive {
            return Ok(Verdict::about(
                pb::VerifyCode::Inactive,
                "the API key is inactive",
                state,
            ));
        }
        if state.expires_at.is_some_and(|at| at <= now) {
            return Ok(Verdict::about(
                pb::VerifyCode::Expired,
                "the API key has expired",
                state,
            ));
        }
        if workspace.as_ref().is_some_and(|w| *w != state.workspace) {
            return Ok(Verdict::about(
                pb::VerifyCode::WorkspaceMismatch,
                "the API key belongs to another workspace",
                state,
            ));
        }
        let verdict = self.consume_quota(state, cost).await?;
        if verdict.code == pb::VerifyCode::Valid {
            self.inner.last_used.record(presented.key_id(), now);
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
            metrics().cache_lookup(hit);
        };
        if let Some(entry) = self.inner.cache.get(&id, &digest) {
            cache(true);
            return self.fresh_state(id, entry, now).await;
        }
        cache(false);
        // Requests for the same presented key join one flight; only a new flight (a distinct
        // presented key) spends a token of the key id's failure budget. The flight is a task of
        // its own: a caller that gives up (a reset connection, a deadline) cannot cancel it, so
        // its argon2 permit and its token stay spent until the argon2 run really ends.
        let mut flight = {
            let mut inflight = self
                .inner
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match inflight.get(&(id, digest)) {
                Some(flight) => flight.clone(),
                None => {
                    if let Err(retry_after) = self.inner.failures.take(id, now) {
                        let mut verdict = Verdict::denied(
                            pb::VerifyCode::RateLimited,
                            "too many failed verifications for this key id; retry later",
                        );
                        verdict.retry_after = Some(retry_after);
                        return Ok(Err(verdict));
                    }
                    let (done, flight) = watch::channel(None);
                    inflight.insert((id, digest), flight.clone());
                    let verifier = self.clone();
                    let presented = *presented;
                    tokio::spawn(
                        async move {
                            let outcome = verifier.cold_verify(presented, digest).await;
                            if matches!(outcome, Cold::Verified(_)) {
                                verifier.inner.failures.refund(id);
                            }
                            done.send_replace(Some(outcome));
                            let mut inflight = verifier
                                .inner
                                .inflight
                                .lock()
                                .unwrap_or_else(|p| p.into_inner());
                            inflight.remove(&(id, digest));
                        }
                        // The flight's store query and argon2 run belong to the trace of the request
                        // that started it.
                        .instrument(tracing::Span::current()),
                    );
                    flight
                }
            }
        };
        let outcome = match flight.wait_for(Option::is_some).await {
            Ok(outcome) => outcome
                .clone()
                .unwrap_or_else(|| Cold::Unavailable("verification failed; retry".to_owned())),
            Err(_) => Cold::Unavailable("verification failed; retry".to_owned()),
        };
        match outcome {
            Cold::Verified(state) => Ok(Ok(state)),
            Cold::NotFound => Ok(Err(Verdict::denied(
                pb::VerifyCode::NotFound,
                "unknown or deleted API key",
            ))),
            Cold::Unavailable(message) => Err(VerifyError::Unavailable(message)),
        }
    }

    /// A cached state, trusted while the store answers (the change poll keeps it current, so this
    /// costs no store round trip); past [`MAX_STATE_AGE`] it is re-read; while the store is
    /// unreachable it is served for at most `stale_if_error` after the store last answered.
    async fn fresh_state(
        &self,
        id: KeyId,
        entry: CacheEntry,
        now: SystemTime,
    ) -> Result<Result<Arc<KeyState>, Verdict>, VerifyError> {
        let store_ok_at =
            UNIX_EPOCH + Duration::from_micros(self.inner.store_ok_at.load(Ordering::Relaxed));
        let store_silent_for = now.duration_since(store_ok_at).unwrap_or_default();
        let age = now.duration_since(entry.fetched_at).unwrap_or_default();
        if age <= MAX_STATE_AGE {
            // The change poll keeps cached states current while the store answers; once it has
            // been silent past the stale limit, cached keys stop verifying.
            if store_silent_for <= self.inner.settings.stale_if_error {
                return Ok(Ok(entry.state));
            }
            return Err(VerifyError::Unavailable(
                "the key store is unavailable".to_owned(),
            ));
        }
        self.inner
            .stats
            .store_lookups
            .fetch_add(1, Ordering::Relaxed);
        match self.inner.store.find_by_key_id(&id).await {
            Ok(Some(record)) => {
                self.store_answered(now);
                let state = Arc::new(KeyState::from_record(&record, self.inner.settings.defaults));
                self.inner.cache.update_state(&id, state.clone(), now);
                Ok(Ok(state))
            }
            Ok(None) => {
                self.store_answered(now);
                self.inner.cache.remove(&id);
                Ok(Err(Verdict::denied(
                    pb::VerifyCode::NotFound,
                    "unknown or deleted API key",
                )))
            }
            Err(err) if store_silent_for <= self.inner.settings.stale_if_error => {
                tracing::debug!(error = %err, key_id = %id, "store unreachable; serving the cached key state");
                Ok(Ok(entry.state))
            }
            Err(err) => {
                tracing::warn!(error = %err, key_id = %id, "store unreachable past the stale limit");
                Err(VerifyError::Unavailable(
                    "the key store is unavailable".to_owned(),
                ))
            }
        }
    }

    async fn cold_verify(&self, presented: PresentedKey, digest: [u8; 32]) -> Cold {
        let id = presented.key_id();
        let read_at = self.now();
        self.inner
            .stats
            .store_lookups
            .fetch_add(1, Ordering::Relaxed);
        let record = match self.inner.store.find_by_key_id(&id).await {
            Ok(Some(record)) => record,
            Ok(None) => {
                self.store_answered(self.now());
                return Cold::NotFound;
            }
            Err(err) => {
                tracing::warn!(error = %err, key_id = %id, "store unreachable for an uncached key");
                return Cold::Unavailable("the key store is unavailable".to_owned());
            }
        };
        self.store_answered(self.now());
        let Ok(_permit) = self.inner.argon2.acquire().await else {
            return Cold::Unavailable("shutting down".to_owned());
        };
        self.inner.stats.argon2_runs.fetch_add(1, Ordering::Relaxed);
        metrics().argon2_runs.inc();
        let hasher = self.inner.hasher.clone();
        let stored = record.key_hash.clone();
        let span = stanna_telemetry::request_span!("argon2.verify", key_id = %id);
        let started = std::time::Instant::now();
        let verified = tokio::task::spawn_blocking(move || hasher.verify(&presented, &stored))
            .instrument(span)
            .await;
        metrics()
            .argon2_duration
            .observe(started.elapsed().as_secs_f64());
        match verified {
            Ok(Ok(true)) => {
                // A change polled while argon2 ran found nothing to update in the cache: read the
                // key again so the cache never starts from a state older than a known change.
                let changed_since_read = self
                    .inner
                    .recent_changes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&id)
                    .is_some_and(|at| *at >= read_at - CHANGE_OVERLAP);
                let record = if changed_since_read {
                    match self.inner.store.find_by_key_id(&id).await {
                        Ok(Some(record)) => record,
                        Ok(None) => return Cold::NotFound,
                        Err(_) => {
                            return Cold::Unavailable("the key store is unavailable".to_owned());
                        }
                    }
                } else {
                    record
                };
                let state = Arc::new(KeyState::from_record(&record, self.inner.settings.defaults));
                self.inner.cache.insert(
                    id,
                    CacheEntry {
                        digest,
                        state: state.clone(),
                        fetched_at: read_at,
                    },
                );
                Cold::Verified(state)
            }
            Ok(Ok(false)) => Cold::NotFound,
            Ok(Err(err)) => {
                tracing::error!(error = %err, key_id = %id, "stored hash unreadable");
                Cold::NotFound
            }
            Err(err) => {
                tracing::error!(error = %err, "argon2 task failed");
                Cold::Unavailable("verification failed; retry".to_owned())
            }
        }
    }

    async fn consume_quota(&self, state: Arc<KeyState>, cost: u32) -> Result<Verdict, VerifyError> {
        let request = pb::ConsumeRequest {
            subject: state.key_id.to_string(),
            cost,
            limits: state.limits.clone(),
        };
        let timeout = self.inner.settings.quota_timeout;
        let answer = match &self.inner.quota {
            Connection::Remote(transport) => {
                let span = stanna_telemetry::request_span!("Quota/Consume", otel.kind = "client");
                let mut client = QuotaClient::new(transport.clone());
                tokio::time::timeout(timeout, client.consume(request).instrument(span)).await
            }
            Connection::InProcess(service) => {
                let call = service.consume(tonic::Request::new(request));
                tokio::time::timeout(timeout, call).await
            }
        };
        let failure = match answer {
            Ok(Ok(response)) => {
                let decision = response.into_inner();
                let mut verdict = if decision.allowed {
                    Verdict::about(pb::VerifyCode::Valid, "ok", state)
                } else {
                    let binding = decision
                        .windows
                        .iter()
                        .find(|w| w.remaining < cost)
                        .map_or("a", |w| w.name.as_str());
                    let message = format!("the {binding} rate limit is exhausted");
                    Verdict::about(pb::VerifyCode::RateLimited, message, state)
                };
                verdict.windows = decision.windows;
                verdict.retry_after = decision
                    .retry_after
                    .and_then(|d| Duration::try_from(d).ok());
                return Ok(verdict);
            }
            Ok(Err(status)) if status.code() == tonic::Code::InvalidArgument => {
                // The key's stored limits were refused: a bug or a corrupt row, not the caller's
                // input. Logged here; the caller gets UNAVAILABLE without the internal text.
                tracing::error!(message = status.message(), key_id = %state.key_id, "quota refused the key's limits");
                return Err(VerifyError::Unavailable(
                    "the key's rate limits could not be checked".to_owned(),
                ));
            }
            Ok(Err(status)) => format!("quota answered {:?}: {}", status.code(), status.message()),
            Err(_) => format!(
                "quota did not answer within {:?}",
                self.inner.settings.quota_timeout
            ),
        };
        match self.inner.settings.fail_mode {
            FailMode::Open => {
                self.inner.stats.fail_open.fetch_add(1, Ordering::Relaxed);
                metrics().quota_fail_open.inc();
                tracing::warn!(reason = %failure, key_id = %state.key_id, "quota unavailable; allowing (fail-open)");
                Ok(Verdict::about(
                    pb::VerifyCode::Valid,
                    "ok (rate limits not checked: quota unavailable)",
                    state,
                ))
            }
            FailMode::Closed => {
                tracing::warn!(reason = %failure, key_id = %state.key_id, "quota unavailable; refusing (fail-closed)");
                Err(VerifyError::Unavailable(
                    "the quota service is unavailable".to_owned(),
                ))
            }
        }
    }

    fn store_answered(&self, at: SystemTime) {
        self.inner
            .store_ok_at
            .fetch_max(micros(at), Ordering::Relaxed);
    }

    /// Applies what changed in the store since the last poll to the cache (deactivations,
    /// deletions, rotations, renames): the revocation mechanism. Returns the changes seen.
    ///
    /// # Errors
    /// The store's error; the cache is left as it was and the stale clock keeps running.
    pub async fn poll_changes(&self) -> Result<usize, StoreError> {
        const PAGE: u64 = 1000;
        let now = self.now();
        let watermark = *self
            .inner
            .watermark
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut position = ChangePosition {
            updated_at: watermark - CHANGE_OVERLAP,
            key_id: None,
        };
        let mut newest = watermark;
        let mut seen = 0;
        loop {
            let changes = self.inner.store.changes_after(position, PAGE).await?;
            self.store_answered(now);
            {
                let mut recent = self
                    .inner
                    .recent_changes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
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
        *self
            .inner
            .watermark
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = newest;
        let horizon = now - 2 * CHANGE_OVERLAP;
        self.inner
            .recent_changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, at| *at >= horizon);
        Ok(seen)
    }

    /// Writes pending last-used times.
    ///
    /// # Errors
    /// The store's error; the times are kept for the next flush.
    pub async fn flush_last_used(&self) -> Result<usize, StoreError> {
        let written = self.inner.last_used.flush(&self.inner.store).await?;
        metrics().last_used_writes.inc_by(written as u64);
        Ok(written)
    }
}

/// µs since the epoch (0 before it).
fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
