//! What the Verify core is built with: its settings, the fail mode, the hash check it runs on the
//! cold path, and the counters tests read.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use stanna_keys::{KeyHasher, PresentedKey, RateLimits};

/// What auth-check does when the quota service cannot decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailMode {
    /// Allow the request (logged and counted; no rate-limit headers). Envoy's and Kong's default.
    Open,
    /// Answer UNAVAILABLE.
    Closed,
}

/// The slow check of a presented key against its stored argon2id hash. [`KeyHasher`] in
/// production; a test may hold runs open to see what happens meanwhile.
pub trait HashCheck: Send + Sync + 'static {
    /// Whether `key` matches `stored`.
    ///
    /// # Errors
    /// [`stanna_keys::HashError`] for an unreadable stored hash.
    fn check(&self, key: &PresentedKey, stored: &str) -> Result<bool, stanna_keys::HashError>;
}

impl HashCheck for KeyHasher {
    fn check(&self, key: &PresentedKey, stored: &str) -> Result<bool, stanna_keys::HashError> {
        self.verify(key, stored)
    }
}

/// Counters for tests that count work (the exported metrics are [`VerifyMetrics`]).
#[derive(Debug, Default)]
pub struct Stats {
    /// argon2 verifications run.
    pub argon2_runs: AtomicU64,
    /// Store lookups of a key or a session by id (the change poll's queries are not counted).
    pub store_lookups: AtomicU64,
    /// Ids refused because they are not in the known set: no lookup.
    pub unknown_ids: AtomicU64,
    /// Change polls run early because an id was not in the known set yet.
    pub early_polls: AtomicU64,
    /// Whole rows the change poll read (changes it had not applied yet; the overlap it re-reads
    /// is read as stamps only).
    pub change_rows_read: AtomicU64,
    /// Change polls that read the replica to the end (it had caught up with the primary).
    pub replica_polls: AtomicU64,
    /// Change polls whose reads failed or stalled on a replica that had caught up, run again on
    /// the primary.
    pub replica_poll_failures: AtomicU64,
    /// Key and session lookups the replica answered.
    pub replica_lookups: AtomicU64,
    /// Lookups the replica had no final answer for: no row (behind the last poll's position, or
    /// a key created a moment ago), or a row other than the version the poll applied.
    pub replica_misses: AtomicU64,
    /// Change polls and lookups that read the primary although a replica is set: it was behind,
    /// did not answer, or had not the row (a miss read from a replica is not final).
    pub replica_fallbacks: AtomicU64,
    /// Verifications allowed because the quota could not decide (fail-open).
    pub fail_open: AtomicU64,
}

/// Settings of the core.
#[derive(Debug, Clone)]
pub struct VerifierSettings {
    /// Limits of keys without overrides.
    pub defaults: RateLimits,
    /// The windows of a user's dashboard sessions (`STANNA_SESSION_RATE_LIMIT_*`).
    pub session_limits: RateLimits,
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
