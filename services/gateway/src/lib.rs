//! The gateway: the public HTTP entry point (HTTP/1.1 and h2c).
//!
//! Every request but `/healthz` and `/openapi.json` is verified by auth-check ([`auth`]); denials
//! are answered with the JSON errors of the README's table ([`error`]); allowed requests go to
//! the REST translation of the key API ([`rest`]) or to the upstream ([`proxy`]), and every
//! response for which a quota decision was made carries the rate-limit headers
//! ([`rate_limit_headers`]). The OpenAPI document is generated from the REST types and routes
//! ([`openapi`]).
//!
//! [`Gateway`] is built over ready connections to auth-check and key-registry (in memory in the
//! all-in-one process, gRPC in split mode): the composition root chooses.

pub mod access_log;
pub mod auth;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod failed_auth;
pub mod metrics;
pub mod openapi;
pub mod path;
pub mod proxy;
pub mod rate_limit_headers;
pub mod readiness;
pub mod rest;
pub mod route_scopes;
pub mod serve;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, Request, header};
use rand::RngExt;
use tokio::net::TcpListener;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use config::{Config, UpstreamUrl};
pub use error::ApiError;
pub use metrics::GatewayMetrics;
pub use readiness::Readiness;

use crate::proxy::Upstream;

/// `X-Request-Id`, on every response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// How long a REST call to the registry may take (it hashes a new key with argon2 on create
/// and rotate) before the client gets 503.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the gateway could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The gateway token cannot travel as gRPC metadata.
    #[error("STANNA_GATEWAY_TOKEN must be printable ASCII")]
    AdminToken,
    /// A TLS file is unusable; the message names the setting and the file.
    #[error("{0}")]
    Tls(String),
}

/// The gateway: cheap to clone (one `Arc`), shared by every request.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

/// How the gateway reaches auth-check: the service in this process (all-in-one) or a transport.
pub type AuthCheckConnection =
    stanna_grpc::Connection<dyn stanna_proto::keys::v1::auth_check_server::AuthCheck>;

struct Inner {
    /// Calls `Verify`.
    auth_check: AuthCheckConnection,
    /// `STANNA_VERIFY_TIMEOUT`.
    verify_timeout: Duration,
    /// Calls KeyRegistry for the REST layer.
    registry: stanna_grpc::Transport,
    /// `authorization: Bearer <gateway token>` for every registry call.
    admin_bearer: AdminBearer,
    /// Where other traffic goes; `None`: 404.
    upstream: Option<Upstream>,
    /// `STANNA_ROUTE_SCOPES` (empty: every proxied route is unmapped).
    route_scopes: Arc<route_scopes::RouteScopes>,
    /// Benchmark-only bare-proxy mode.
    bench_no_auth: bool,
    /// Responses by status, upstream latency.
    metrics: GatewayMetrics,
    /// What `/readyz` checks.
    readiness: Readiness,
    /// Whether each request gets an access-log line.
    access_log: bool,
    /// Settings → API Keys and its sign-in; `None` when sign-in is not configured.
    dashboard: Option<dashboard::Dashboard>,
    /// Whether the dashboard has a listener of its own (`STANNA_DASHBOARD_ADDR`): the public one
    /// then neither serves it nor accepts its cookie.
    dashboard_apart: bool,
    /// Failed authentications per client address.
    failed_auth: failed_auth::FailedAuthLimiter,
    /// Connection and body limits of every listener.
    limits: serve::ServeLimits,
    /// HTTPS on every listener (`STANNA_TLS_CERT_FILE`); `None`: plain HTTP.
    tls: Option<tls::GatewayTls>,
}

/// Which listener a request came in on, when the dashboard has one of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DashboardListener;

/// What the gateway is wired to: the composition root chooses each connection (in process or
/// gRPC) and what readiness checks.
pub struct Wiring {
    /// How `Verify` is reached.
    pub auth_check: AuthCheckConnection,
    /// How the REST layer reaches KeyRegistry.
    pub registry: stanna_grpc::Transport,
    /// What `/readyz` checks besides the admin token (auth-check's and the registry's health).
    pub readiness: Vec<(&'static str, stanna_grpc::Check)>,
    /// Where this gateway counts.
    pub metrics: GatewayMetrics,
    /// Dashboard sign-in (the login-token verifier and the public URL); `None`: no dashboard.
    pub sign_in: Option<dashboard::SignIn>,
}

impl Gateway {
    /// A gateway over `wiring`, authenticating to the registry with its own `gateway_token`
    /// (which acts only for the key or session of each request, never as an admin).
    ///
    /// # Errors
    /// [`StartError::AdminToken`] for a token that cannot be sent as metadata.
    pub fn new(config: &Config, wiring: Wiring, gateway_token: &str) -> Result<Self, StartError> {
        let Wiring {
            auth_check,
            registry,
            readiness,
            metrics,
            sign_in,
        } = wiring;
        let bearer: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {gateway_token}"))
            .map_err(|_| StartError::AdminToken)?;
        let tls = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => {
                Some(tls::GatewayTls::load(cert, key).map_err(|e| StartError::Tls(e.to_string()))?)
            }
            _ => None,
        };
        let trust = match &config.upstream_ca_file {
            Some(path) => proxy::UpstreamTrust::from_file(path).map_err(StartError::Tls)?,
            None => proxy::UpstreamTrust::WebPki,
        };
        let upstream = config
            .upstream_url
            .clone()
            .map(|url| Upstream::new(url, config.upstream_timeout.0, &trust, tls.is_some()))
            .transpose()
            .map_err(StartError::Tls)?;
        if config.bench_no_auth() {
            tracing::warn!(
                "STANNA_BENCH_NO_AUTH is set: requests are forwarded WITHOUT any authentication or rate limit (benchmarks only)"
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                auth_check,
                verify_timeout: config.verify_timeout.0,
                registry: stanna_grpc::with_timeout(registry, REGISTRY_TIMEOUT),
                admin_bearer: AdminBearer(bearer),
                upstream,
                route_scopes: config.route_scopes.clone().unwrap_or_default(),
                tls,
                bench_no_auth: config.bench_no_auth(),
                metrics,
                readiness: Readiness::new(readiness),
                access_log: config.access_log == config::Toggle::On,
                dashboard_apart: config.dashboard_addr.is_some(),
                failed_auth: failed_auth::FailedAuthLimiter::new(
                    config.unauthenticated_rate_limit.0,
                ),
                limits: config.serve_limits(),
                dashboard: sign_in.map(|sign_in| {
                    dashboard::Dashboard::new(sign_in, config.dashboard_frame_ancestors.as_deref())
                }),
            }),
        })
    }

    /// The dashboard, when sign-in is configured.
    pub fn dashboard(&self) -> Option<&dashboard::Dashboard> {
        self.inner.dashboard.as_ref()
    }

    /// The dashboard for a request that came in on `request`'s listener: `None` on the public
    /// listener when the dashboard has one of its own.
    pub(crate) fn dashboard_for<B>(
        &self,
        request: &http::Request<B>,
    ) -> Option<&dashboard::Dashboard> {
        if self.inner.dashboard_apart && request.extensions().get::<DashboardListener>().is_none() {
            return None;
        }
        self.dashboard()
    }

    /// The service of the dashboard's own listener (`STANNA_DASHBOARD_ADDR`): the dashboard, the
    /// key API and `/healthz`, nothing proxied.
    pub fn dashboard_router(&self) -> Router {
        let (routes, _) = routes().split_for_parts();
        self.with_layers(
            routes
                .merge(dashboard::routes())
                .fallback(|request: axum::extract::Request| async move {
                    ApiError::NotFound(format!(
                        "no route for {} {} on the dashboard listener",
                        request.method(),
                        request.uri().path()
                    ))
                })
                .method_not_allowed_fallback(method_not_allowed),
        )
        .layer(axum::Extension(DashboardListener))
    }

    /// The HTTP service: routes and the layers every request passes through.
    pub fn router(&self) -> Router {
        let (routes, _) = routes().split_for_parts();
        self.with_layers(
            routes
                .merge(dashboard::routes())
                .fallback(proxy::forward)
                .method_not_allowed_fallback(method_not_allowed),
        )
    }

    /// `routes` inside the layers every request passes through.
    fn with_layers(&self, routes: Router<Gateway>) -> Router {
        routes
            .layer(
                ServiceBuilder::new()
                    // Outermost: one line per request with its final status and request id.
                    .option_layer(self.inner.access_log.then_some(access_log::AccessLogLayer))
                    // Around everything else, so the span and the per-status count cover it,
                    // denials included; the span continues the client's `traceparent`.
                    .layer(
                        TraceLayer::new_for_http()
                            .make_span_with(request_span)
                            // tower-http would log every 5xx at ERROR, one line per request
                            // while a dependency is down; the access log has the status, and
                            // the cause is logged once, rate-limited, where it is known.
                            .on_failure(())
                            .on_response({
                                let metrics = self.inner.metrics.clone();
                                move |response: &http::Response<_>,
                                      _: Duration,
                                      span: &tracing::Span| {
                                    record_response(&metrics, response, span)
                                }
                            }),
                    )
                    // A client's own X-Request-Id is kept when it is short and plain (it helps
                    // correlate their logs with ours); anything else is replaced.
                    .layer(axum::middleware::from_fn(drop_unusable_request_id))
                    .layer(SetRequestIdLayer::new(REQUEST_ID, RandomRequestId))
                    .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                    // Inside the request id, so every error body can name it.
                    .layer(axum::middleware::from_fn(error::render_errors))
                    // A panic becomes a logged 500 `internal` instead of a dropped connection.
                    .layer(CatchPanicLayer::custom(|_| {
                        ApiError::Internal.into_response()
                    }))
                    // Last: everything inside it (REST, proxy) sees only verified callers.
                    .layer(axum::middleware::from_fn_with_state(
                        self.clone(),
                        auth::authenticate,
                    )),
            )
            .with_state(self.clone())
    }
}

/// Puts the request's path in normal form ([`path`]) *before routing* (`serve.rs` calls it on
/// every request ahead of the router), so the routes, the route-scope map and the upstream see
/// one spelling of it. A path with no safe normal form is left as it came and marked
/// [`auth::PathRefused`]; the authentication layer answers it 400 inside the layers that give
/// errors their body. Done on the request head rather than as an outer router, which cost 5 %
/// more instructions per proxied request (an extra routing step and a boxed service clone).
pub(crate) fn normalise_path(parts: &mut http::request::Parts) {
    let normal = match path::normalise(parts.uri.path()) {
        Ok(std::borrow::Cow::Borrowed(_)) => return,
        Ok(std::borrow::Cow::Owned(normal)) => normal,
        Err(refused) => {
            parts.extensions.insert(auth::PathRefused(refused));
            return;
        }
    };
    let path_and_query = match parts.uri.query() {
        Some(query) => format!("{normal}?{query}"),
        None => normal,
    };
    let mut uri_parts = parts.uri.clone().into_parts();
    let uri = http::uri::PathAndQuery::try_from(path_and_query)
        .ok()
        .and_then(|pq| {
            uri_parts.path_and_query = Some(pq);
            http::Uri::from_parts(uri_parts).ok()
        });
    match uri {
        Some(uri) => parts.uri = uri,
        // Unreachable: the normal form of a valid path is valid. Refused rather than forwarded
        // as it came, should it ever happen.
        None => {
            parts
                .extensions
                .insert(auth::PathRefused(path::PathError::BadEscape));
        }
    }
}

/// The span of one public request (exported only when tracing is on; see `stanna_telemetry`).
fn request_span(request: &Request<axum::body::Body>) -> tracing::Span {
    // The public edge: the sampling rule decides, not the client's flag.
    if !stanna_telemetry::sampling::sampled_at_edge() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: stanna_telemetry::SPAN_TARGET,
        "HTTP request",
        otel.name = format_args!("{} {}", request.method(), request.uri().path()),
        otel.kind = "server",
        http.request.method = %request.method(),
        url.path = request.uri().path(),
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    stanna_telemetry::propagation::set_parent_from(&span, request.headers());
    span
}

/// Every route the gateway serves itself, with its documentation (the rest is the proxy).
pub(crate) fn routes() -> OpenApiRouter<Gateway> {
    use utoipa::OpenApi as _;
    OpenApiRouter::with_openapi(openapi::PublicApi::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readiness::readyz))
        .routes(routes!(openapi_json))
        .merge(rest::routes())
}

/// Records the status on the span and counts the response.
fn record_response<B>(
    metrics: &GatewayMetrics,
    response: &http::Response<B>,
    span: &tracing::Span,
) {
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    metrics.response(status);
}

/// The admin token as metadata, added to every KeyRegistry call the REST layer makes.
#[derive(Clone)]
pub struct AdminBearer(AsciiMetadataValue);

impl tonic::service::Interceptor for AdminBearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// Request ids: 128 random bits in hex.
#[derive(Clone, Copy)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let id = format!("{:032x}", rand::rng().random::<u128>());
        HeaderValue::try_from(id).ok().map(RequestId::new)
    }
}

/// Removes a client-sent `X-Request-Id` that is empty, longer than 128 characters or holds
/// anything but letters, digits and `-_.:`, so what we log and echo stays plain — or that holds
/// `sk-` or `ss-`: a key or session token pasted into the wrong header must not reach the access
/// log or the audit log.
async fn drop_unusable_request_id(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let usable = request.headers().get(&REQUEST_ID).is_none_or(|v| {
        let b = v.as_bytes();
        !b.is_empty()
            && b.len() <= 128
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
            && !b
                .windows(3)
                .any(|w| w.eq_ignore_ascii_case(b"sk-") || w.eq_ignore_ascii_case(b"ss-"))
    });
    if !usable {
        request.headers_mut().remove(&REQUEST_ID);
    }
    next.run(request).await
}

/// The gateway process answers (liveness; no key needed).
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The gateway runs", content_type = "application/json", body = inline(Object), example = json!({"status": "ok"}))))]
pub(crate) async fn healthz() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        "{\"status\":\"ok\"}",
    )
        .into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "health",
    responses((status = 200, description = "The OpenAPI document of this API", content_type = "application/json", body = inline(Object))))]
pub(crate) async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi::document(),
    )
        .into_response()
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Serves the dashboard's own listener (`STANNA_DASHBOARD_ADDR`) like [`serve`].
///
/// # Errors
/// An I/O error if serving fails.
pub async fn serve_dashboard(
    gateway: Gateway,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = gateway.inner.limits;
    let tls = gateway.inner.tls.clone();
    serve::serve_router(gateway.dashboard_router(), listener, limits, tls, shutdown).await
}

/// Serves `gateway` on `listener` (HTTP/1.1 and h2c, or HTTPS with h2 by ALPN when
/// `STANNA_TLS_CERT_FILE` is set, its certificate watched for changes) until `shutdown`
/// completes, then lets in-flight requests finish.
///
/// # Errors
/// An I/O error if serving fails.
pub async fn serve(
    gateway: Gateway,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = gateway.inner.limits;
    let tls = gateway.inner.tls.clone();
    // One watcher for the certificate both listeners share, for as long as this one serves.
    let watching = tokio_util::sync::CancellationToken::new();
    if let Some(tls) = &tls {
        tls.watch(watching.clone());
    }
    let _stop_watching = watching.drop_guard();
    serve::serve_router(gateway.router(), listener, limits, tls, shutdown).await
}
