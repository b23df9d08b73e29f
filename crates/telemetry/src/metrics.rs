//! Prometheus metrics (prometheus-client): the shared plumbing. Each service owns its series — it
//! registers them into the process's [`Registry`] when it is built and counts on its own handles —
//! so a process exports the families of the services it runs, and a test reads the instance it
//! built. This module has the registry, the bounded label types, the `/metrics` listener, and
//! [`series`] to resolve a hot-path series once.
//!
//! Label values are bounded by construction: codes, outcomes and status codes only — never a key
//! id, a workspace or a user, which would grow without bound and identify customers.

use std::future::Future;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
pub use prometheus_client::registry::Registry;
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

/// A process's registry: every family is named `stanna_…`.
pub fn new_registry() -> Registry {
    Registry::with_prefix("stanna")
}

/// The series of `family` for `label`, resolved once: counting on it later costs an atomic add,
/// where a `Family` lookup takes a lock and a hash (this is how the hot path's series are held).
/// The returned counter shares its value with the family's own series.
pub fn series<L>(family: &Family<L, Counter>, label: L) -> Counter
where
    L: Clone + std::hash::Hash + Eq,
{
    family.get_or_create(&label).clone()
}

/// Latency buckets from 50 µs to ≈ 3.3 s.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_05, 2.0, 17)
}

/// The registry as Prometheus / OpenMetrics text.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::with_capacity(4096);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}

/// Serves `GET /metrics` from `registry` on `listener` until `shutdown` completes.
///
/// # Errors
/// An I/O error from the listener.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    encode(&registry),
                )
            }
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
    fn a_resolved_series_is_the_familys_own() {
        let mut registry = new_registry();
        let family = Family::<CodeLabel, Counter>::default();
        registry.register("verify", "Verify outcomes by code", family.clone());
        let valid = series(&family, CodeLabel { code: "valid" });
        valid.inc();
        valid.inc();
        family.get_or_create(&CodeLabel { code: "not_found" }).inc();
        let text = encode(&registry);
        for line in [
            "stanna_verify_total{code=\"valid\"} 2",
            "stanna_verify_total{code=\"not_found\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
