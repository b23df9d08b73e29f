//! The Quota service: `Consume` and `Peek` over gRPC, deciding with the in-process backend (the
//! all-in-one default) or Redis (`STANNA_REDIS_URL`, shared by every quota process).
//!
//! While Redis is unreachable it answers `UNAVAILABLE`; auth-check applies the fail mode
//! (`STANNA_QUOTA_FAIL_MODE`) in one place. The Redis connection is lazy and reconnects by itself,
//! so the service starts, and recovers, without Redis.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use stanna_keys::{DomainError, WindowLimit};
use stanna_proto::keys::v1 as pb;
use stanna_proto::keys::v1::quota_server::{Quota, QuotaServer};
use stanna_quota::{
    Decision, MemoryBackend, Mode, NamedWindow, QuotaBackend, QuotaError, RedisBackend,
    RedisBackendConfig,
};
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

/// Settings of the quota service.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "quota_config")]
#[command(next_help_heading = "quota")]
pub struct Config {
    /// Where the Quota gRPC service listens.
    #[arg(
        id = "quota_addr",
        long = "quota-addr",
        env = "STANNA_QUOTA_ADDR",
        default_value = "127.0.0.1:50053"
    )]
    pub addr: SocketAddr,

    /// Redis for limits shared by several processes (`redis://host:6379`); unset: in process.
    #[arg(long, env = "STANNA_REDIS_URL")]
    pub redis_url: Option<String>,
}

impl Config {
    /// The backend this configuration selects.
    ///
    /// # Errors
    /// [`QuotaError::InvalidArgument`] for an unreadable Redis URL.
    pub fn backend(&self) -> Result<QuotaBackend, QuotaError> {
        match &self.redis_url {
            Some(url) => Ok(QuotaBackend::Redis(RedisBackend::connect_lazy(
                &RedisBackendConfig::new(url.clone()),
            )?)),
            None => Ok(QuotaBackend::Memory(MemoryBackend::new())),
        }
    }
}

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The backend could not be set up.
    #[error("quota backend")]
    Backend(#[from] QuotaError),
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] stanna_grpc::ServeError),
}

/// The Quota gRPC service over a backend.
#[derive(Clone)]
pub struct QuotaService {
    /// Where decisions are made.
    backend: QuotaBackend,
}

impl QuotaService {
    /// A service deciding with `backend`.
    pub fn new(backend: QuotaBackend) -> Self {
        Self { backend }
    }

    async fn decide(
        &self,
        subject: &str,
        cost: u32,
        limits: &[pb::RateLimit],
        mode: Mode,
    ) -> Result<pb::ConsumeResponse, Status> {
        let windows = windows_from_proto(limits)?;
        let span = stanna_telemetry::request_span!(
            "quota.decide",
            allowed = tracing::field::Empty,
            binding = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let decision = self
            .backend
            .decide(subject, cost.max(1), &windows, mode, None)
            .instrument(span.clone())
            .await
            .map_err(|e| {
                span.record("otel.status_code", "ERROR");
                status_from_error(e)
            })?;
        if !span.is_disabled() {
            span.record("allowed", decision.allowed);
            if let Some(binding) = decision.windows.iter().min_by_key(|w| w.remaining) {
                span.record("binding", binding.name.as_str());
            }
        }
        if mode == Mode::Consume {
            stanna_telemetry::metrics::metrics().quota_decision(decision.allowed);
        }
        Ok(decision_to_proto(decision))
    }
}

#[tonic::async_trait]
impl Quota for QuotaService {
    async fn consume(
        &self,
        request: Request<pb::ConsumeRequest>,
    ) -> Result<Response<pb::ConsumeResponse>, Status> {
        let r = request.into_inner();
        self.decide(&r.subject, r.cost, &r.limits, Mode::Consume)
            .await
            .map(Response::new)
    }

    async fn peek(
        &self,
        request: Request<pb::PeekRequest>,
    ) -> Result<Response<pb::ConsumeResponse>, Status> {
        let r = request.into_inner();
        self.decide(&r.subject, 1, &r.limits, Mode::Peek)
            .await
            .map(Response::new)
    }
}

fn windows_from_proto(limits: &[pb::RateLimit]) -> Result<Vec<NamedWindow>, Status> {
    limits
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let period = l
                .period
                .and_then(|p| Duration::try_from(p).ok())
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "limits[{i}].period: must be a positive duration"
                    ))
                })?;
            let limit = WindowLimit::new(l.limit, period).map_err(|e| {
                let part = if matches!(e, DomainError::WindowLimit { .. }) {
                    "limit"
                } else {
                    "period"
                };
                Status::invalid_argument(format!("limits[{i}].{part}: {e}"))
            })?;
            Ok(NamedWindow {
                name: l.name.clone(),
                limit,
            })
        })
        .collect()
}

/// The one mapping from quota errors to gRPC statuses.
pub fn status_from_error(err: QuotaError) -> Status {
    match err {
        QuotaError::InvalidArgument(message) => Status::invalid_argument(message),
        QuotaError::Unavailable(source) => {
            tracing::warn!(error = %source, "quota store unavailable");
            Status::unavailable("the quota store is unavailable")
        }
    }
}

/// A decision as the proto carries it.
pub fn decision_to_proto(d: Decision) -> pb::ConsumeResponse {
    pb::ConsumeResponse {
        allowed: d.allowed,
        windows: d
            .windows
            .into_iter()
            .map(|w| pb::Window {
                name: w.name,
                limit: w.limit,
                remaining: w.remaining,
                reset_after: prost_types::Duration::try_from(w.reset_after).ok(),
                period: prost_types::Duration::try_from(w.period).ok(),
            })
            .collect(),
        retry_after: d
            .retry_after
            .and_then(|r| prost_types::Duration::try_from(r).ok()),
    }
}

/// Serves `service` on `listener` until `shutdown` completes, with health and reflection.
///
/// # Errors
/// [`StartError::Serve`] if serving fails.
pub async fn serve(
    service: QuotaService,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StartError> {
    let routes = Routes::new(QuotaServer::new(service));
    let (routes, _health) =
        stanna_grpc::add_health_and_reflection::<QuotaServer<QuotaService>>(routes).await?;
    stanna_grpc::serve(routes, listener, shutdown).await?;
    Ok(())
}

/// Builds from `config` and serves on `listener` until `shutdown` completes.
///
/// # Errors
/// [`StartError`] for a bad Redis URL or a serving failure.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StartError> {
    serve(QuotaService::new(config.backend()?), listener, shutdown).await
}
