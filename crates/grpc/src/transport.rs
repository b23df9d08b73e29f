//! How a client reaches a service: [`Transport`] (a server wired in memory or a lazily connected
//! channel), a deadline around it, and [`Connection`], which also allows calling the service
//! object in this process.

use crate::ServeError;

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

/// A transport to `url` (`http://host:port`, or `https://` trusting the system's roots) that
/// connects on first use and reconnects after failures, so a service starts before the services
/// it calls and recovers when they return.
///
/// # Errors
/// [`ServeError::Transport`] for a URL tonic cannot use.
pub fn lazy_channel(url: &str) -> Result<Transport, ServeError> {
    lazy_channel_with(url, &crate::tls::GrpcTls::default())
}

/// [`lazy_channel`] with this process's TLS settings: an `https://` URL is called over TLS,
/// trusting and presenting what `tls` says.
///
/// # Errors
/// [`ServeError::PlainUrl`] for an `http://` URL while client TLS settings are given;
/// [`ServeError::Transport`] for a URL or TLS settings tonic cannot use.
pub fn lazy_channel_with(url: &str, tls: &crate::tls::GrpcTls) -> Result<Transport, ServeError> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(ServeError::Transport)?
        .connect_timeout(std::time::Duration::from_secs(1))
        .tcp_nodelay(true);
    if url.starts_with("https://") {
        endpoint = endpoint
            .tls_config(tls.client().clone())
            .map_err(ServeError::Transport)?;
    } else if tls.client_configured() {
        return Err(ServeError::PlainUrl(url.to_owned()));
    }
    let channel = endpoint.connect_lazy();
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
