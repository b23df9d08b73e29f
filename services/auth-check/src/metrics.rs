//! auth-check's own metrics, registered when the verifier is built. The hot path's series are
//! resolved once (a `Family` lookup takes a lock and a hash); labels come from fixed sets only.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use stanna_telemetry::metrics::{
    CacheLabel, CodeLabel, Registry, exponential_buckets, latency_buckets, series,
};

/// Verify outcomes, latency, the cache, argon2, fail-open events and last-used writes.
#[derive(Clone)]
pub struct VerifyMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    verify_total: Family<CodeLabel, Counter>,
    verify_valid: Counter,
    verify_duration: Histogram,
    cache_hit: Counter,
    cache_miss: Counter,
    argon2_runs: Counter,
    argon2_duration: Histogram,
    quota_fail_open: Counter,
    last_used_writes: Counter,
    usage_rows: Counter,
    unknown_ids: Counter,
    early_polls: Counter,
    replica_lookups: Counter,
    replica_fallbacks: Counter,
}

impl VerifyMetrics {
    /// Registers auth-check's families in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let verify_total = Family::<CodeLabel, Counter>::default();
        let verify_cache = Family::<CacheLabel, Counter>::default();
        let inner = Inner {
            verify_valid: series(&verify_total, CodeLabel { code: "valid" }),
            cache_hit: series(&verify_cache, CacheLabel { result: "hit" }),
            cache_miss: series(&verify_cache, CacheLabel { result: "miss" }),
            verify_total,
            verify_duration: Histogram::new(latency_buckets()),
            argon2_runs: Counter::default(),
            argon2_duration: Histogram::new(exponential_buckets(0.001, 2.0, 12)),
            quota_fail_open: Counter::default(),
            last_used_writes: Counter::default(),
            usage_rows: Counter::default(),
            unknown_ids: Counter::default(),
            early_polls: Counter::default(),
            replica_lookups: Counter::default(),
            replica_fallbacks: Counter::default(),
        };
        registry.register(
            "verify",
            "Verify outcomes by code",
            inner.verify_total.clone(),
        );
        registry.register(
            "verify_duration_seconds",
            "Verify latency",
            inner.verify_duration.clone(),
        );
        registry.register("verify_cache", "Verified-key cache lookups", verify_cache);
        registry.register(
            "argon2_runs",
            "argon2 verifications run",
            inner.argon2_runs.clone(),
        );
        registry.register(
            "argon2_duration_seconds",
            "argon2 verification time",
            inner.argon2_duration.clone(),
        );
        registry.register(
            "quota_fail_open",
            "Verifications allowed because the quota could not decide",
            inner.quota_fail_open.clone(),
        );
        registry.register(
            "last_used_writes",
            "Last-used times written back to the store",
            inner.last_used_writes.clone(),
        );
        registry.register(
            "usage_rows_written",
            "Usage rows (one key, one hour) added to in the store",
            inner.usage_rows.clone(),
        );
        registry.register(
            "unknown_ids",
            "Key and session ids refused because they do not exist, without a store lookup",
            inner.unknown_ids.clone(),
        );
        registry.register(
            "early_change_polls",
            "Change polls run early because an id was not in the known set yet",
            inner.early_polls.clone(),
        );
        registry.register(
            "replica_lookups",
            "Key and session lookups answered by the read replica (STANNA_DATABASE_READ_URL)",
            inner.replica_lookups.clone(),
        );
        registry.register(
            "replica_fallbacks",
            "Change polls and lookups sent to the primary although a read replica is set (it was behind, did not answer, or had not the row)",
            inner.replica_fallbacks.clone(),
        );
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Metrics counted nowhere visible (tests that count through [`crate::Stats`]).
    pub fn unregistered() -> Self {
        Self::register(&mut Registry::default())
    }

    /// A Verify outcome (`code` from a fixed set) and its latency.
    pub fn verified(&self, code: &'static str, took: Duration) {
        if code == "valid" {
            self.inner.verify_valid.inc();
        } else {
            self.inner
                .verify_total
                .get_or_create(&CodeLabel { code })
                .inc();
        }
        self.inner.verify_duration.observe(took.as_secs_f64());
    }

    /// A verified-key cache lookup.
    pub fn cache_lookup(&self, hit: bool) {
        if hit {
            &self.inner.cache_hit
        } else {
            &self.inner.cache_miss
        }
        .inc();
    }

    /// An argon2 verification and how long it took.
    pub fn argon2_ran(&self, took: Duration) {
        self.inner.argon2_runs.inc();
        self.inner.argon2_duration.observe(took.as_secs_f64());
    }

    /// A request allowed because the quota could not decide.
    pub fn failed_open(&self) {
        self.inner.quota_fail_open.inc();
    }

    /// An id refused because it is not in the known set.
    pub fn unknown_id(&self) {
        self.inner.unknown_ids.inc();
    }

    /// A change poll run early for a miss.
    pub fn early_poll(&self) {
        self.inner.early_polls.inc();
    }

    /// A lookup the read replica answered.
    pub fn replica_lookup(&self) {
        self.inner.replica_lookups.inc();
    }

    /// A poll or a lookup that read the primary although a replica is set.
    pub fn replica_fallback(&self) {
        self.inner.replica_fallbacks.inc();
    }

    /// A flush wrote `rows` usage rows and `last_used` last-used times.
    pub fn usage_written(&self, rows: u64, last_used: u64) {
        self.inner.usage_rows.inc_by(rows);
        self.inner.last_used_writes.inc_by(last_used);
    }
}
