//! One access-log line per request: method, path (never the query: it may carry anything),
//! status, latency, request id, and the key id and workspace once the key verified — at `info`,
//! target `stanna::access`, JSON under `STANNA_LOG_FORMAT=json`. A client quoting the request id
//! of a 401 finds its line. `STANNA_ACCESS_LOG=off` leaves the layer out altogether.
//!
//! A tower layer of its own rather than `axum::middleware::from_fn` (which boxes every request's
//! future): it keeps the method and the path (a cheap `Uri` clone) and the start time, and logs
//! when the response head is ready.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Method, Request, Response, Uri};
use stanna_keys::{KeyId, WorkspaceId};

/// Who the request was, once its key verified (put into the response's extensions by the auth
/// layer, for this log only).
#[derive(Debug, Clone)]
pub struct Identity {
    /// The verified key.
    pub key_id: KeyId,
    /// Its workspace.
    pub workspace: WorkspaceId,
}

/// The layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLogLayer;

impl<S> tower::Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLog { inner }
    }
}

/// The service: logs each request's line when its response head is ready.
#[derive(Debug, Clone)]
pub struct AccessLog<S> {
    inner: S,
}

impl<S, B, R> tower::Service<Request<B>> for AccessLog<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Logged<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        Logged {
            method: request.method().clone(),
            uri: request.uri().clone(),
            started: Instant::now(),
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future, logging when it completes.
    pub struct Logged<F> {
        method: Method,
        uri: Uri,
        started: Instant,
        #[pin]
        inner: F,
    }
}

impl<F, R, E> Future for Logged<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &output {
            let identity = response.extensions().get::<Identity>();
            let request_id = response
                .headers()
                .get(crate::REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info!(
                target: "stanna::access",
                method = %this.method,
                path = this.uri.path(),
                status = response.status().as_u16(),
                // Whole microseconds, as milliseconds: `0.409`, not `0.40927800000000003`.
                latency_ms = this.started.elapsed().as_micros() as f64 / 1000.0,
                request_id,
                key_id = identity.map(|i| tracing::field::display(i.key_id)),
                workspace_id = identity.map(|i| tracing::field::display(&i.workspace)),
                "request"
            );
        }
        Poll::Ready(output)
    }
}
