//! Per-method request counts and latency of a gRPC server: `stanna_grpc_requests_total{method,
//! code}` and `stanna_grpc_request_duration_seconds{method}` (to the response head). Labels come
//! from fixed sets: the methods this project serves (anything else is `unknown`) and the gRPC
//! status codes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use stanna_telemetry::metrics::{Registry, latency_buckets};

/// Every method served here, by path.
pub const METHODS: [&str; 18] = [
    "/stanna.keys.v1.KeyRegistry/CreateKey",
    "/stanna.keys.v1.KeyRegistry/ListKeys",
    "/stanna.keys.v1.KeyRegistry/GetKey",
    "/stanna.keys.v1.KeyRegistry/UpdateKey",
    "/stanna.keys.v1.KeyRegistry/DeleteKey",
    "/stanna.keys.v1.KeyRegistry/RotateKey",
    "/stanna.keys.v1.KeyRegistry/CreateSession",
    "/stanna.keys.v1.KeyRegistry/DeleteSession",
    "/stanna.keys.v1.KeyRegistry/RevokeSessions",
    "/stanna.keys.v1.KeyRegistry/GetKeyUsage",
    "/stanna.keys.v1.KeyRegistry/ListAuditEvents",
    "/stanna.keys.v1.AuthCheck/Verify",
    "/stanna.keys.v1.Quota/Consume",
    "/stanna.keys.v1.Quota/Peek",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The gRPC status codes by number.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Method {
    method: &'static str,
}

/// The counts and latencies of one process's gRPC servers.
#[derive(Clone)]
pub struct GrpcMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    requests: Family<Outcome, Counter>,
    duration: Family<Method, Histogram>,
}

impl GrpcMetrics {
    /// Registers the families in `registry` (once per process: every server of it shares them).
    pub fn register(registry: &mut Registry) -> Self {
        let inner = Inner {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
        };
        registry.register(
            "grpc_requests",
            "gRPC requests by method and status code",
            inner.requests.clone(),
        );
        registry.register(
            "grpc_request_duration_seconds",
            "gRPC time to the response head, by method",
            inner.duration.clone(),
        );
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Metrics counted nowhere visible.
    pub fn unregistered() -> Self {
        Self::register(&mut Registry::default())
    }

    fn record(&self, method: &'static str, code: &'static str, started: Instant) {
        self.inner
            .requests
            .get_or_create(&Outcome { method, code })
            .inc();
        self.inner
            .duration
            .get_or_create(&Method { method })
            .observe(started.elapsed().as_secs_f64());
    }
}

/// The method label of a request path: one of [`METHODS`], or `unknown`.
fn method_of(path: &str) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == path)
        .copied()
        .unwrap_or("unknown")
}

/// The code of a response head: tonic answers an error trailers-only (`grpc-status` among the
/// headers); without one, the call went on to a body, which ends OK for a unary call.
fn code_of<B>(response: &http::Response<B>) -> &'static str {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .and_then(|n| CODES.get(n).copied())
        .unwrap_or("OK")
}

/// The tower layer counting every call of a server.
#[derive(Clone)]
pub struct GrpcMetricsLayer(pub GrpcMetrics);

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Counted {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// A server counted by method and code.
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    metrics: GrpcMetrics,
}

impl<S, B, R> tower::Service<http::Request<B>> for Counted<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = CountedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        CountedFuture {
            method: method_of(request.uri().path()),
            started: Instant::now(),
            metrics: self.metrics.clone(),
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future, counted when the head is ready.
    pub struct CountedFuture<F> {
        method: &'static str,
        started: Instant,
        metrics: GrpcMetrics,
        #[pin]
        inner: F,
    }
}

impl<F, R, E> Future for CountedFuture<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        let code = match &output {
            Ok(response) => code_of(response),
            Err(_) => "UNKNOWN",
        };
        // An unknown path is answered UNIMPLEMENTED: its name is the client's, not ours.
        let method = if code == "UNIMPLEMENTED" {
            "unknown"
        } else {
            this.method
        };
        this.metrics.record(method, code, *this.started);
        Poll::Ready(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every method of the contract's descriptor set is known by name, so none is counted as
    /// `unknown` (and a new RPC cannot be added without this list noticing).
    #[test]
    fn every_method_of_the_contract_is_listed() {
        use prost::Message as _;
        let set =
            prost_types::FileDescriptorSet::decode(stanna_proto::FILE_DESCRIPTOR_SET).unwrap();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    assert_ne!(method_of(&path), "unknown", "{path} is not in METHODS");
                }
            }
        }
        assert_eq!(method_of("/evil.Service/Anything"), "unknown");
    }
}
