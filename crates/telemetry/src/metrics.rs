//! Prometheus metrics (prometheus-client), one registry per process, served as text at
//! `STANNA_METRICS_ADDR` + `/metrics`.
//!
//! Label values are bounded by construction: codes, outcomes and status codes only — never a key
//! id, a workspace or a user, which would grow without bound and identify customers.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// `code`: a Verify outcome (`valid`, `malformed`, `not_found`, …, or `unavailable`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// The outcome.
    pub code: &'static str,
}

/// `result`: `hit` or `miss`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabel {
    /// Hit or miss.
    pub result: &'static str,
}

/// `outcome`: `allowed` or `refused`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// Allowed or refused.
    pub outcome: &'static str,
}

/// `status`: an HTTP status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// The status code.
    pub status: u16,
}

/// Every metric a Stanna process may report (a process reports those of the services it runs).
pub struct Metrics {
    /// Verify outcomes by code.
    pub verify_total: Family<CodeLabel, Counter>,
    /// Verify latency, seconds.
    pub verify_duration: Histogram,
    /// Verified-key cache lookups by result.
    pub verify_cache: Family<CacheLabel, Counter>,
    /// argon2 verifications run.
    pub argon2_runs: Counter,
    /// argon2 verification time, seconds.
    pub argon2_duration: Histogram,
    /// Quota decisions by outcome (counted by the quota service).
    pub quota_decisions: Family<OutcomeLabel, Counter>,
    /// Verifications allowed because the quota could not decide (fail-open).
    pub quota_fail_open: Counter,
    /// Gateway responses by status.
    pub gateway_requests: Family<StatusLabel, Counter>,
    /// Time to the upstream's response head, seconds.
    pub upstream_duration: Histogram,
    /// Last-used times written back to the store.
    pub last_used_writes: Counter,
    /// The hot path's series, resolved once: a `Family` lookup takes a lock and a hash.
    cache_hit: Counter,
    cache_miss: Counter,
    quota_allowed: Counter,
    quota_refused: Counter,
    verify_valid: Counter,
    gateway_ok: Counter,
    registry: Registry,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 50 µs … ≈ 3.3 s.
    exponential_buckets(0.000_05, 2.0, 17)
}

impl Metrics {
    fn new() -> Self {
        let mut m = Self {
            verify_total: Family::default(),
            verify_duration: Histogram::new(latency_buckets()),
            verify_cache: Family::default(),
            argon2_runs: Counter::default(),
            argon2_duration: Histogram::new(exponential_buckets(0.001, 2.0, 12)),
            quota_decisions: Family::default(),
            quota_fail_open: Counter::default(),
            gateway_requests: Family::default(),
            upstream_duration: Histogram::new(latency_buckets()),
            last_used_writes: Counter::default(),
            cache_hit: Counter::default(),
            cache_miss: Counter::default(),
            quota_allowed: Counter::default(),
            quota_refused: Counter::default(),
            verify_valid: Counter::default(),
            gateway_ok: Counter::default(),
            registry: Registry::with_prefix("stanna"),
        };
        // Counters share their value with their clone: these are the families' own series.
        fn series<L>(family: &Family<L, Counter>, label: L) -> Counter
        where
            L: Clone + std::hash::Hash + Eq,
        {
            family.get_or_create(&label).clone()
        }
        m.cache_hit = series(&m.verify_cache, CacheLabel { result: "hit" });
        m.cache_miss = series(&m.verify_cache, CacheLabel { result: "miss" });
        m.quota_allowed = series(&m.quota_decisions, OutcomeLabel { outcome: "allowed" });
        m.quota_refused = series(&m.quota_decisions, OutcomeLabel { outcome: "refused" });
        m.verify_valid = series(&m.verify_total, CodeLabel { code: "valid" });
        m.gateway_ok = series(&m.gateway_requests, StatusLabel { status: 200 });
        let r = &mut m.registry;
        r.register("verify", "Verify outcomes by code", m.verify_total.clone());
        r.register(
            "verify_duration_seconds",
            "Verify latency",
            m.verify_duration.clone(),
        );
        r.register(
            "verify_cache",
            "Verified-key cache lookups",
            m.verify_cache.clone(),
        );
        r.register(
            "argon2_runs",
            "argon2 verifications run",
            m.argon2_runs.clone(),
        );
        r.register(
            "argon2_duration_seconds",
            "argon2 verification time",
            m.argon2_duration.clone(),
        );
        r.register(
            "quota_decisions",
            "Quota decisions by outcome",
            m.quota_decisions.clone(),
        );
        r.register(
            "quota_fail_open",
            "Verifications allowed because the quota could not decide",
            m.quota_fail_open.clone(),
        );
        r.register(
            "gateway_requests",
            "Gateway responses by status",
            m.gateway_requests.clone(),
        );
        r.register(
            "upstream_duration_seconds",
            "Time to the upstream's response head",
            m.upstream_duration.clone(),
        );
        r.register(
            "last_used_writes",
            "Last-used times written back to the store",
            m.last_used_writes.clone(),
        );
        m
    }

    /// Counts a Verify outcome and its latency.
    pub fn verified(&self, code: &'static str, took: Duration) {
        if code == "valid" {
            self.verify_valid.inc();
        } else {
            self.verify_total.get_or_create(&CodeLabel { code }).inc();
        }
        self.verify_duration.observe(took.as_secs_f64());
    }

    /// Counts a gateway response.
    pub fn gateway_response(&self, status: u16) {
        if status == 200 {
            self.gateway_ok.inc();
        } else {
            self.gateway_requests
                .get_or_create(&StatusLabel { status })
                .inc();
        }
    }

    /// Counts a verified-key cache lookup.
    pub fn cache_lookup(&self, hit: bool) {
        if hit {
            &self.cache_hit
        } else {
            &self.cache_miss
        }
        .inc();
    }

    /// Counts a quota decision (Consume).
    pub fn quota_decision(&self, allowed: bool) {
        if allowed {
            &self.quota_allowed
        } else {
            &self.quota_refused
        }
        .inc();
    }

    /// The registry as Prometheus / OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// This process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
///
/// # Errors
/// An I/O error from the listener.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(
                    http::header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                metrics().encode(),
            )
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_in_the_text_with_bounded_labels() {
        let m = metrics();
        m.verified("valid", Duration::from_micros(300));
        m.cache_lookup(true);
        let text = m.encode();
        assert!(
            text.contains("stanna_verify_total{code=\"valid\"}"),
            "{text}"
        );
        assert!(
            text.contains("stanna_verify_duration_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains("stanna_verify_cache_total{result=\"hit\"}"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn series_resolved_at_start_are_the_families_own() {
        let m = Metrics::new();
        m.verified("valid", Duration::from_micros(300));
        m.verified("valid", Duration::from_micros(300));
        m.verified("not_found", Duration::from_micros(300));
        m.gateway_response(200);
        m.gateway_response(401);
        m.gateway_response(401);
        m.quota_decision(false);
        let text = m.encode();
        for line in [
            "stanna_verify_total{code=\"valid\"} 2",
            "stanna_verify_total{code=\"not_found\"} 1",
            "stanna_gateway_requests_total{status=\"200\"} 1",
            "stanna_gateway_requests_total{status=\"401\"} 2",
            "stanna_quota_decisions_total{outcome=\"refused\"} 1",
            "stanna_quota_decisions_total{outcome=\"allowed\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
