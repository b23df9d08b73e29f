//! The gateway's own metrics, registered when it is built.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use stanna_telemetry::metrics::{Registry, StatusLabel, latency_buckets, series};

/// Responses by status and the upstream's latency.
#[derive(Clone)]
pub struct GatewayMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    responses: Family<StatusLabel, Counter>,
    /// The 200 series, resolved once: most responses are 200s.
    ok: Counter,
    upstream_duration: Histogram,
}

impl GatewayMetrics {
    /// Registers the gateway's families in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let responses = Family::<StatusLabel, Counter>::default();
        let upstream_duration = Histogram::new(latency_buckets());
        registry.register(
            "gateway_requests",
            "Gateway responses by status",
            responses.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time to the upstream's response head",
            upstream_duration.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                ok: series(&responses, StatusLabel { status: 200 }),
                responses,
                upstream_duration,
            }),
        }
    }

    /// Metrics counted nowhere visible.
    pub fn unregistered() -> Self {
        Self::register(&mut Registry::default())
    }

    /// Counts a response.
    pub fn response(&self, status: u16) {
        if status == 200 {
            self.inner.ok.inc();
        } else {
            self.inner
                .responses
                .get_or_create(&StatusLabel { status })
                .inc();
        }
    }

    /// The upstream's time to its response head.
    pub fn upstream(&self, took: std::time::Duration) {
        self.inner.upstream_duration.observe(took.as_secs_f64());
    }
}
