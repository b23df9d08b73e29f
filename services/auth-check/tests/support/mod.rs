//! What the Verify tests share: the settings they start from, and the quota deciding with the
//! real algorithm in this process.

use std::sync::Arc;
use std::time::Duration;

use stanna_auth_check::{FailMode, QuotaConnection, VerifierSettings};
use stanna_keys::RateLimits;
use stanna_quota::{MemoryBackend, QuotaBackend};

/// The product's default limits, a small cache, fail-open, the shipped stale limit.
pub fn settings() -> VerifierSettings {
    VerifierSettings {
        defaults: RateLimits::product_default(),
        session_limits: RateLimits::product_default(),
        cache_size: 1000,
        argon2_concurrency: 2,
        fail_mode: FailMode::Open,
        stale_if_error: Duration::from_secs(30),
        quota_timeout: Duration::from_secs(1),
    }
}

/// A quota deciding with the real algorithm (the Quota service's core) in this process, as the
/// all-in-one wires the Quota service.
pub struct LocalQuota(pub QuotaBackend);

impl stanna_quota::Decide for LocalQuota {
    fn consume<'a>(
        &'a self,
        subject: &'a str,
        cost: u32,
        windows: &'a [stanna_quota::NamedWindow],
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<stanna_quota::Decision, stanna_quota::QuotaError>,
                > + Send
                + 'a,
        >,
    > {
        Box::pin(
            self.0
                .decide(subject, cost, windows, stanna_quota::Mode::Consume, None),
        )
    }
}

/// [`LocalQuota`] over a fresh in-memory backend.
pub fn in_memory_quota() -> QuotaConnection {
    QuotaConnection::InProcess(Arc::new(LocalQuota(QuotaBackend::Memory(
        MemoryBackend::new(),
    ))))
}
