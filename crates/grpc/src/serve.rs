//! Serving a gRPC service: health and both reflection versions beside it, on a pre-bound
//! listener.
//!
//! Each service is served with `grpc.health.v1` and server reflection in **both** versions: grpcurl
//! 1.8.6, which our admins use, speaks only `v1alpha` and otherwise reports that the server does
//! not support reflection. Health and reflection are added beside the service, never behind its
//! authentication, so probes and `grpcurl list` work without a token.

use std::future::Future;

use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic_health::server::HealthReporter;

use crate::metrics::GrpcMetrics;

/// The standard health service's name.
const HEALTH_SERVICE: &str = "grpc.health.v1.Health";
/// The reflection services' names, each advertised by its own version.
const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

/// Why a server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection service could not be built from the descriptor sets (a build bug).
    #[error("building the reflection service failed")]
    Reflection(#[source] tonic_reflection::server::Error),
    /// The transport failed while serving.
    #[error("gRPC transport failed")]
    Transport(#[source] tonic::transport::Error),
    /// A plaintext `http://` service URL while client TLS settings are given: a mistake that
    /// would send calls (and the admin token) in the clear.
    #[error("{0} is http:// but STANNA_GRPC_CA_FILE or a client certificate is set: use https://")]
    PlainUrl(String),
}

/// Adds health (reporting `S` as SERVING) and reflection v1 and v1alpha over the
/// `stanna.keys.v1` and health descriptors to `routes`, which already hold the service `S`.
/// Returns the health reporter so the caller can flip the status (NOT_SERVING while a
/// dependency is unreachable: `services/stanna/src/health.rs`).
///
/// # Errors
/// [`ServeError::Reflection`] if the descriptor sets do not decode.
pub async fn add_health_and_reflection<S: NamedService>(
    routes: Routes,
) -> Result<(Routes, HealthReporter), ServeError> {
    with_health_and_reflection(routes, S::NAME).await
}

/// [`add_health_and_reflection`] for the service named `service` (e.g.
/// `stanna.keys.v1.KeyRegistry`).
///
/// # Errors
/// [`ServeError::Reflection`] if the descriptor sets do not decode.
pub async fn with_health_and_reflection(
    routes: Routes,
    service: &'static str,
) -> Result<(Routes, HealthReporter), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(service, tonic_health::ServingStatus::Serving)
        .await;
    // Advertise only what this port serves: the descriptor set holds every stanna.keys.v1
    // service, and `grpcurl list` must not show services that live on another port.
    let reflection = |own_name: &str| {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(stanna_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(service)
            .with_service_name(HEALTH_SERVICE)
            .with_service_name(own_name)
    };
    let v1 = reflection(REFLECTION_V1)
        .build_v1()
        .map_err(ServeError::Reflection)?;
    let v1alpha = reflection(REFLECTION_V1ALPHA)
        .build_v1alpha()
        .map_err(ServeError::Reflection)?;
    let routes = routes
        .add_service(health)
        .add_service(v1)
        .add_service(v1alpha);
    Ok((routes, reporter))
}

/// Serves `routes` on an already-bound listener (so tests bind port 0 and read the port) until
/// `shutdown` completes, then finishes in-flight calls; counted nowhere visible (see
/// [`serve_counted`]).
///
/// # Errors
/// [`ServeError::Transport`] if serving fails.
pub async fn serve(
    routes: Routes,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_counted(
        routes,
        listener,
        shutdown,
        GrpcMetrics::unregistered(),
        None,
    )
    .await
}

/// [`serve`], counting every call by method and code on `metrics`, over TLS when `tls` is given
/// (client certificates required when it names a client CA).
///
/// # Errors
/// [`ServeError::Transport`] if the TLS settings are unusable or serving fails.
pub async fn serve_counted(
    routes: Routes,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    metrics: GrpcMetrics,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> Result<(), ServeError> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).map_err(ServeError::Transport)?;
    }
    builder
        // The edge limits tonic exposes (docs/gateway.md, "Slow and greedy clients"): bounded
        // header lists and streams per connection, HTTP/2 reset floods cut, dead peers found by
        // keep-alive pings. Streams are generous: the gateway multiplexes every request it has in
        // flight over one connection.
        .http2_max_header_list_size(32 * 1024)
        .max_concurrent_streams(4096)
        .http2_max_pending_accept_reset_streams(Some(20))
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .tcp_keepalive(Some(std::time::Duration::from_secs(60)))
        // A server span per call, child of the caller's `traceparent` (socket path only: in-process
        // calls already run inside the caller's span).
        .layer(stanna_telemetry::propagation::GrpcServerTraceLayer)
        // Inside the span, so the count covers exactly the call the span does.
        .layer(crate::metrics::GrpcMetricsLayer(metrics))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(ServeError::Transport)
}
