//! W3C trace context (`traceparent`, `tracestate`) across process boundaries: extracted from
//! incoming HTTP requests and gRPC metadata, injected into outgoing gRPC calls and into the request
//! the gateway forwards upstream. Written once here, applied as tower layers by `stanna_grpc` (every
//! gRPC server and every remote client) and by the gateway.
//!
//! In the all-in-one process, calls between services are plain function calls inside the caller's
//! span, so the context carries over without headers.

use std::task::{Context, Poll};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::global;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::SPAN_TARGET;

/// Installs the W3C trace-context propagator (idempotent).
pub fn install_propagator() {
    global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
}

/// Reads trace context from HTTP headers (gRPC metadata are HTTP/2 headers).
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Writes trace context into HTTP headers.
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// Makes `span` a child of the trace context in `headers`, if any (no-op for a disabled span).
pub fn set_parent_from(span: &tracing::Span, headers: &HeaderMap) {
    if span.is_disabled() || !headers.contains_key("traceparent") {
        return;
    }
    let parent = global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    let _ = span.set_parent(parent);
}

/// Writes the current span's trace context into `headers`; returns whether it did. Outside a
/// traced request it writes nothing, so a client's own `traceparent` passes through the proxy
/// untouched.
pub fn inject_current(headers: &mut HeaderMap) -> bool {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return false;
    }
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return false;
    }
    global::get_text_map_propagator(|p| p.inject_context(&context, &mut HeaderInjector(headers)));
    true
}

/// For calls between Stanna's own services: [`inject_current`], and outside a traced request
/// (when tracing is on) a not-sampled `traceparent`, so the next process's parent-based rule does
/// not start a trace of its own for a request this one chose not to trace.
pub fn inject_for_internal_call(headers: &mut HeaderMap) {
    if !inject_current(headers)
        && crate::sampling::tracing_on()
        && !headers.contains_key("traceparent")
        && let Ok(value) = HeaderValue::try_from(crate::sampling::unsampled_traceparent())
    {
        headers.insert("traceparent", value);
    }
}

/// For the request the gateway forwards to the product's upstream: [`inject_current`] when this
/// request is traced. When tracing is on but the edge chose not to trace it, a client's
/// `traceparent` travels on with its sampled flag cleared (its trace id and parent kept): the edge
/// decides sampling, so a client cannot make the upstream trace what the gateway did not. With
/// tracing off, the client's header passes through untouched.
pub fn inject_for_upstream(headers: &mut HeaderMap) {
    if inject_current(headers) || !crate::sampling::tracing_on() {
        return;
    }
    let Some(cleared) = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(clear_sampled_flag)
    else {
        return;
    };
    if let Ok(value) = HeaderValue::try_from(cleared) {
        headers.insert("traceparent", value);
    }
}

/// `00-<trace id>-<parent id>-<flags>` with the sampled bit of the flags cleared; `None` for a
/// value that is not a version-00 `traceparent` or is not sampled.
fn clear_sampled_flag(traceparent: &str) -> Option<String> {
    let (rest, flags) = traceparent.trim().rsplit_once('-')?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let well_formed = rest.len() == 2 + 1 + 32 + 1 + 16 && rest.starts_with("00-");
    (well_formed && flags & 1 == 1).then(|| format!("{rest}-{:02x}", flags & !1))
}

/// Tower layer for gRPC servers: one `server` span per call, named after the method, child of
/// the caller's context.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcServerTraceLayer;

impl<S> tower::Layer<S> for GrpcServerTraceLayer {
    type Service = GrpcServerTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerTrace { inner }
    }
}

/// The service [`GrpcServerTraceLayer`] makes.
#[derive(Debug, Clone)]
pub struct GrpcServerTrace<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for GrpcServerTrace<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tracing::instrument::Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if !crate::sampling::sampled(request.headers()) {
            return self.inner.call(request).instrument(tracing::Span::none());
        }
        let path = request.uri().path();
        let span = tracing::info_span!(
            target: SPAN_TARGET,
            "grpc.server",
            otel.name = path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
        );
        set_parent_from(&span, request.headers());
        self.inner.call(request).instrument(span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_sampled_version_00_traceparent_has_its_flag_cleared() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7";
        assert_eq!(
            clear_sampled_flag(&format!("00-{id}-01")),
            Some(format!("00-{id}-00"))
        );
        assert_eq!(
            clear_sampled_flag(&format!("00-{id}-03")),
            Some(format!("00-{id}-02"))
        );
        assert_eq!(clear_sampled_flag(&format!("00-{id}-00")), None);
        assert_eq!(clear_sampled_flag(&format!("01-{id}-01")), None);
        assert_eq!(clear_sampled_flag("garbage"), None);
    }

    #[test]
    fn nothing_is_injected_when_nothing_is_traced() {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static("00-abc-def-01"));
        assert!(!inject_current(&mut headers));
        assert_eq!(
            headers["traceparent"], "00-abc-def-01",
            "passed through untouched"
        );
    }

    #[test]
    fn the_extractor_reads_and_the_injector_writes_headers() {
        let mut headers = HeaderMap::new();
        HeaderInjector(&mut headers).set("traceparent", "00-1-2-01".into());
        let extractor = HeaderExtractor(&headers);
        assert_eq!(extractor.get("traceparent"), Some("00-1-2-01"));
        assert_eq!(extractor.keys(), ["traceparent"]);
    }
}
