//! The quota service's own metrics, registered when it is built.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use stanna_telemetry::metrics::{OutcomeLabel, Registry, series};

/// Quota decisions by outcome (Consume only: a Peek decides nothing).
#[derive(Clone)]
pub struct QuotaMetrics {
    /// Allowed, resolved once (the hot path counts here).
    allowed: Counter,
    /// Refused, resolved once.
    refused: Counter,
}

impl QuotaMetrics {
    /// Registers `stanna_quota_decisions_total{outcome}` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let decisions = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "quota_decisions",
            "Quota decisions by outcome",
            decisions.clone(),
        );
        Self {
            allowed: series(&decisions, OutcomeLabel { outcome: "allowed" }),
            refused: series(&decisions, OutcomeLabel { outcome: "refused" }),
        }
    }

    /// Counts nowhere visible (tests that do not read metrics).
    pub fn unregistered() -> Self {
        Self::register(&mut Registry::default())
    }

    /// Counts a Consume decision.
    pub fn decision(&self, allowed: bool) {
        if allowed {
            &self.allowed
        } else {
            &self.refused
        }
        .inc();
    }
}
