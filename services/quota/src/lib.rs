//! The Quota service: `Consume` and `Peek` over gRPC, deciding with the in-process backend (the
//! all-in-one default) or Redis (`STANNA_REDIS_URL`, shared by every quota process).
//!
//! While Redis is unreachable it answers `UNAVAILABLE`; auth-check applies the fail mode
//! (`STANNA_QUOTA_FAIL_MODE`) in one place. The Redis connection is lazy and reconnects by itself,
//! so the service starts, and recovers, without Redis.
//!
//! [`QuotaService`] is also what auth-check calls directly in the all-in-one process
//! ([`stanna_quota::Decide`]): the same decisions and metrics without the wire format.

mod config;
mod metrics;

use std::future::Future;
use std::pin::Pin;

use stanna_proto::keys::v1 as pb;
use stanna_proto::keys::v1::quota_server::{Quota, QuotaServer};
use stanna_quota::{Decide, Decision, Mode, NamedWindow, QuotaBackend, QuotaError, wire};
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

pub use config::Config;
pub use metrics::QuotaMetrics;

/// The Quota gRPC service over a backend. Cheap to clone.
#[derive(Clone)]
pub struct QuotaService {
    /// Where decisions are made.
    backend: QuotaBackend,
    /// Decisions counted by outcome.
    metrics: QuotaMetrics,
}

impl QuotaService {
    /// A service deciding with `backend`, counting on `metrics`.
    pub fn new(backend: QuotaBackend, metrics: QuotaMetrics) -> Self {
        Self { backend, metrics }
    }

    /// Whether decisions can be made now (Redis reachable, when it decides).
    ///
    /// # Errors
    /// [`QuotaError::Unavailable`] with the cause.
    pub async fn ping(&self) -> Result<(), QuotaError> {
        self.backend.ping().await
    }

    /// Which backend decides (`in-process` or `redis`), for logs.
    pub fn backend_kind(&self) -> &'static str {
        self.backend.kind()
    }

    /// One decision, traced and counted.
    async fn decide(
        &self,
        subject: &str,
        cost: u32,
        windows: &[NamedWindow],
        mode: Mode,
    ) -> Result<Decision, QuotaError> {
        let span = stanna_telemetry::request_span!(
            "quota.decide",
            allowed = tracing::field::Empty,
            binding = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let decision = self
            .backend
            .decide(subject, cost.max(1), windows, mode, None)
            .instrument(span.clone())
            .await
            .inspect_err(|_| {
                span.record("otel.status_code", "ERROR");
            })?;
        if !span.is_disabled() {
            span.record("allowed", decision.allowed);
            if let Some(binding) = decision.windows.iter().min_by_key(|w| w.remaining) {
                span.record("binding", binding.name.as_ref());
            }
        }
        if mode == Mode::Consume {
            self.metrics.decision(decision.allowed);
        }
        Ok(decision)
    }

    /// A decision for a request off the wire.
    async fn answer(
        &self,
        subject: &str,
        cost: u32,
        limits: &[pb::RateLimit],
        mode: Mode,
    ) -> Result<pb::ConsumeResponse, Status> {
        let windows = wire::windows_from_proto(limits).map_err(wire::status_from_error)?;
        let decision = self
            .decide(subject, cost, &windows, mode)
            .await
            .map_err(wire::status_from_error)?;
        Ok(wire::decision_to_proto(&decision))
    }
}

impl Decide for QuotaService {
    fn consume<'a>(
        &'a self,
        subject: &'a str,
        cost: u32,
        windows: &'a [NamedWindow],
    ) -> Pin<Box<dyn Future<Output = Result<Decision, QuotaError>> + Send + 'a>> {
        Box::pin(self.decide(subject, cost, windows, Mode::Consume))
    }
}

#[tonic::async_trait]
impl Quota for QuotaService {
    async fn consume(
        &self,
        request: Request<pb::ConsumeRequest>,
    ) -> Result<Response<pb::ConsumeResponse>, Status> {
        let r = request.into_inner();
        self.answer(&r.subject, r.cost, &r.limits, Mode::Consume)
            .await
            .map(Response::new)
    }

    async fn peek(
        &self,
        request: Request<pb::PeekRequest>,
    ) -> Result<Response<pb::ConsumeResponse>, Status> {
        let r = request.into_inner();
        self.answer(&r.subject, 1, &r.limits, Mode::Peek)
            .await
            .map(Response::new)
    }
}

/// The gRPC service name health reports this service under.
pub const SERVICE: &str = <QuotaServer<QuotaService> as tonic::server::NamedService>::NAME;

/// The Quota service as routes to serve (health and reflection are added by the caller).
pub fn routes(service: QuotaService) -> Routes {
    Routes::new(QuotaServer::new(service))
}

/// Serves `service` on `listener` until `shutdown` completes, with health and reflection.
///
/// # Errors
/// [`stanna_grpc::ServeError`] if serving fails.
pub async fn serve(
    service: QuotaService,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), stanna_grpc::ServeError> {
    let (routes, _health) =
        stanna_grpc::with_health_and_reflection(routes(service), SERVICE).await?;
    stanna_grpc::serve(routes, listener, shutdown).await
}
