//! Serving plumbing shared by every Stanna gRPC service.
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
}

/// Adds health (reporting `S` as SERVING) and reflection v1 and v1alpha over the
/// `stanna.keys.v1` and health descriptors to `routes`, which already hold the service `S`.
/// Returns the health reporter so the caller can flip the status (e.g. to NOT_SERVING while
/// shutting down).
///
/// # Errors
/// [`ServeError::Reflection`] if the descriptor sets do not decode.
pub async fn add_health_and_reflection<S: NamedService>(
    routes: Routes,
) -> Result<(Routes, HealthReporter), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<S>().await;
    // Advertise only what this port serves: the descriptor set holds every stanna.keys.v1
    // service, and `grpcurl list` must not show services that live on another port.
    let reflection = |own_name: &str| {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(stanna_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(S::NAME)
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
/// `shutdown` completes, then finishes in-flight calls.
///
/// # Errors
/// [`ServeError::Transport`] if serving fails.
pub async fn serve(
    routes: Routes,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        // A server span per call, child of the caller's `traceparent` (socket path only: in-process
        // calls already run inside the caller's span).
        .layer(stanna_telemetry::propagation::GrpcServerTraceLayer)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(ServeError::Transport)
}

/// One client transport for both ways of running: a gRPC server wired in memory (all-in-one:
/// protobuf encoding still happens, HTTP/2 and the socket do not) or a lazily connected channel
/// (split mode). Generated clients run on it unchanged: `QuotaClient::new(transport)`.
pub type Transport = tower::util::BoxCloneSyncService<
    tonic::codegen::http::Request<tonic::body::Body>,
    tonic::codegen::http::Response<tonic::body::Body>,
    TransportError,
>;

/// A transport failure (connection refused, reset, …). A newtype rather than the bare boxed error,
/// so client futures stay `Send` in `tokio::spawn`.
#[derive(Debug)]
pub struct TransportError(Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The wrapped error itself: tonic looks for a `Status` along this chain (see
        // `with_timeout`), and callers log the real cause.
        Some(self.0.as_ref())
    }
}

/// A transport calling `server` directly, in memory. `server` may be wrapped (an interceptor
/// changes its response body type); the body is boxed back into tonic's.
pub fn in_memory<S, B>(server: S) -> Transport
where
    S: tonic::codegen::Service<
            tonic::codegen::http::Request<tonic::body::Body>,
            Response = tonic::codegen::http::Response<B>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    tower::util::BoxCloneSyncService::new(
        tower::ServiceBuilder::new()
            .map_response(|response: tonic::codegen::http::Response<B>| {
                response.map(tonic::body::Body::new)
            })
            .map_err(|never: std::convert::Infallible| match never {})
            .service(server),
    )
}

/// A transport to `url` (`http://host:port`) that connects on first use and reconnects after
/// failures, so a service starts before the services it calls and recovers when they return.
///
/// # Errors
/// [`ServeError::Transport`] for a URL tonic cannot use.
pub fn lazy_channel(url: &str) -> Result<Transport, ServeError> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(ServeError::Transport)?
        .connect_timeout(std::time::Duration::from_secs(1))
        .tcp_nodelay(true)
        .connect_lazy();
    Ok(tower::util::BoxCloneSyncService::new(
        tower::ServiceBuilder::new()
            .map_err(|e: tonic::transport::Error| TransportError(Box::new(e)))
            // Every remote call carries the caller's trace context.
            .map_request(
                |mut request: tonic::codegen::http::Request<tonic::body::Body>| {
                    stanna_telemetry::propagation::inject_for_internal_call(request.headers_mut());
                    request
                },
            )
            .service(channel),
    ))
}

/// `transport` with a deadline on every call: a call not answered within `timeout` fails with
/// `DEADLINE_EXCEEDED` instead of hanging.
pub fn with_timeout(transport: Transport, timeout: std::time::Duration) -> Transport {
    tower::util::BoxCloneSyncService::new(
        tower::ServiceBuilder::new()
            .map_err(move |e: tower::BoxError| {
                if e.is::<tower::timeout::error::Elapsed>() {
                    // A Status in the error chain is what generated clients report.
                    TransportError(Box::new(tonic::Status::deadline_exceeded(format!(
                        "no answer within {timeout:?}"
                    ))))
                } else {
                    TransportError(e)
                }
            })
            .timeout(timeout)
            .service(transport),
    )
}

/// How a client reaches a service: the service object itself, in this process (all-in-one: no
/// protobuf encoding, no HTTP/2 framing, one virtual call), or a [`Transport`] (a gRPC channel in
/// split mode, or a server wired in memory). `S` is the service's generated trait object, e.g.
/// `dyn AuthCheck`.
pub enum Connection<S: ?Sized> {
    /// The service in this process, called directly.
    InProcess(std::sync::Arc<S>),
    /// Through a transport.
    Remote(Transport),
}

impl<S: ?Sized> Clone for Connection<S> {
    fn clone(&self) -> Self {
        match self {
            Self::InProcess(service) => Self::InProcess(service.clone()),
            Self::Remote(transport) => Self::Remote(transport.clone()),
        }
    }
}

impl<S: ?Sized> From<Transport> for Connection<S> {
    fn from(transport: Transport) -> Self {
        Self::Remote(transport)
    }
}
