//! The gateway's own accept loop on hyper-util's connection builder (`axum::serve` exposes none of
//! this), so slow and greedy clients change nothing for the others:
//!
//! - **first bytes**: a connection that sends nothing within the header timeout is closed (the
//!   protocol sniffing of hyper-util's auto builder waits for ever otherwise);
//! - **headers**: an HTTP/1 request head not complete within `STANNA_HEADER_TIMEOUT` of its first
//!   byte is closed (hyper's header-read timeout, driven by [`HeadTimer`] so that it starts with
//!   the request's first byte rather than when the connection went idle);
//! - **idle**: a connection with no request in flight for `STANNA_IDLE_TIMEOUT` is closed
//!   gracefully — HTTP/1 keep-alive and HTTP/2 alike;
//! - **sizes**: HTTP/1 heads of at most [`MAX_HEADER_BYTES`] and [`MAX_HEADERS`] fields (431
//!   past them); HTTP/2 at most [`MAX_STREAMS`] concurrent streams, a header list of
//!   [`MAX_HEADER_BYTES`], and reset floods cut (hyper's rapid-reset defences, set explicitly);
//! - **bodies**: a request body that sends nothing for `STANNA_BODY_TIMEOUT` is cut, and one
//!   streaming past `STANNA_MAX_BODY_SIZE` is cut (one declaring more is answered 413 by the
//!   proxy before it forwards anything; the key API caps its own at 64 KiB);
//! - **connections**: at most `STANNA_MAX_CONNECTIONS` at once; past it accepting pauses (the
//!   kernel's backlog holds the rest) while the open ones keep working.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// Largest HTTP/1 request head and HTTP/2 header list, in bytes (nginx's default buffers hold
/// 8 KiB a line; we allow 32 KiB in all, room for large cookies and tokens).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Most header fields in an HTTP/1 request: hyper's default, kept by not setting it (see the
/// builder).
pub const MAX_HEADERS: usize = 100;
/// Concurrent HTTP/2 streams per connection.
pub const MAX_STREAMS: u32 = 256;
/// HTTP/2 streams a client may reset before the server has accepted them (rapid reset,
/// CVE-2023-44487): past it the connection is closed.
const MAX_PENDING_RESETS: usize = 20;
/// HTTP/2 streams the server may reset for a client's errors before closing the connection.
const MAX_ERROR_RESETS: usize = 1024;

/// What one connection and its requests may take.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// First bytes and then each HTTP/1 request head must arrive within this.
    pub header_timeout: Duration,
    /// A connection with no request in flight this long is closed.
    pub idle_timeout: Duration,
    /// A request body that sends nothing for this long is cut.
    pub body_timeout: Duration,
    /// The largest request body, in bytes.
    pub max_body_bytes: u64,
    /// Connections open at once.
    pub max_connections: usize,
}

impl ServeLimits {
    /// The shipped defaults (`STANNA_HEADER_TIMEOUT` and the others).
    pub fn defaults() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            max_body_bytes: 10 * 1024 * 1024,
            max_connections: 10_000,
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes; then stops
/// accepting, asks every connection to finish what it is doing, and returns once they have.
///
/// # Errors
/// None today (accept errors such as running out of file descriptors are logged and retried);
/// the `Result` keeps the signature of a server.
pub async fn serve_router(
    router: Router,
    listener: TcpListener,
    limits: ServeLimits,
    tls: Option<crate::tls::GatewayTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // No `max_headers`: hyper's default is our MAX_HEADERS already (100), and setting it
        // makes hyper build a heap vector of that many slots for every request head it parses
        // (callgrind: ~1 800 instructions a request).
        // hyper-util's builder has no head-size setting of its own: the read buffer's cap is the
        // head's (431 past it; hyper's minimum is 8 KiB).
        .max_buf_size(MAX_HEADER_BYTES)
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        .max_local_error_reset_streams(MAX_ERROR_RESETS)
        .timer(hyper_util::rt::TokioTimer::new());
    tokio::pin!(shutdown);
    loop {
        // Past the cap, wait for a connection to end before accepting: the open ones keep
        // working, new ones wait in the kernel's backlog.
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning; the connection that
                    // failed is the client's to retry.
                    static FAILED: stanna_telemetry::LogLimiter =
                        stanna_telemetry::LogLimiter::new(Duration::from_secs(10));
                    if let Some(held_back) = FAILED.allow() {
                        tracing::warn!(error = %err, held_back, "accepting a connection failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let builder = builder.clone();
        let stop = stop.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            serve_connection(stream, peer, router, builder, limits, tls, stop).await;
            drop(permit);
        });
    }
    stop.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// One connection, from its first bytes (and TLS handshake) to its close.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    builder: hyper_util::server::conn::auto::Builder<TokioExecutor>,
    limits: ServeLimits,
    tls: Option<crate::tls::GatewayTls>,
    stop: CancellationToken,
) {
    // First bytes: sniffing h1 or h2 waits for them without a deadline of its own.
    let mut probe = [0u8; 1];
    let first = tokio::select! {
        () = stop.cancelled() => return,
        first = tokio::time::timeout(limits.header_timeout, stream.peek(&mut probe)) => first,
    };
    if !matches!(first, Ok(Ok(n)) if n > 0) {
        return;
    }
    let Some(tls) = tls else {
        return run_connection(stream, peer, router, builder, limits, stop).await;
    };
    // The handshake within the header timeout too: a client that starts one and stalls holds
    // nothing for longer than one that stalls in its headers.
    let handshake = tokio::select! {
        () = stop.cancelled() => return,
        done = tokio::time::timeout(limits.header_timeout, tls.acceptor().accept(stream)) => done,
    };
    match handshake {
        Ok(Ok(stream)) => run_connection(stream, peer, router, builder, limits, stop).await,
        Ok(Err(err)) => tracing::debug!(error = %err, %peer, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake not done within the header timeout"),
    }
}

/// HTTP on an established connection (TCP, or TLS over it), until it closes.
async fn run_connection<S>(
    stream: S,
    peer: SocketAddr,
    router: Router,
    mut builder: hyper_util::server::conn::auto::Builder<TokioExecutor>,
    limits: ServeLimits,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = Arc::new(ConnState::new());
    builder.http1().timer(HeadTimer {
        state: state.clone(),
    });
    let io = TokioIo::new(CountingStream {
        inner: stream,
        state: state.clone(),
    });
    let service_state = state.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let router = router.clone();
        let in_flight = InFlight::new(service_state.clone());
        async move { Ok::<_, Infallible>(handle(router, request, peer, limits, in_flight).await) }
    });
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        let idle_deadline = state.idle_deadline(limits.idle_timeout);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, %peer, "connection ended with an error");
                }
                return;
            }
            () = stop.cancelled(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep_until(idle_deadline.into()), if !closing => {
                if state.idle_for() >= limits.idle_timeout {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// One request: the body limits, the client's address, the router.
async fn handle(
    router: Router,
    request: Request<Incoming>,
    peer: SocketAddr,
    limits: ServeLimits,
    in_flight: InFlight,
) -> Response<TrackedBody> {
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(ConnectInfo(peer));
    // Before the router: routing must already see the normal path.
    crate::normalise_path(&mut parts);
    let body = Body::new(LimitedBody {
        inner: body,
        timeout: limits.body_timeout,
        idle: None,
        left: limits.max_body_bytes,
        cap: limits.max_body_bytes,
    });
    let response = match router.oneshot(Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    // hyper sends any body type: wrapped in place, not boxed again.
    response.map(|body| TrackedBody {
        inner: body,
        _in_flight: in_flight,
    })
}

/// Why a request body was cut.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Nothing arrived for the body timeout.
    #[error("the request body stalled: nothing arrived for {0:?} (STANNA_BODY_TIMEOUT)")]
    Stalled(Duration),
    /// More than the cap arrived.
    #[error("the request body is larger than {0} bytes (STANNA_MAX_BODY_SIZE)")]
    TooLarge(u64),
    /// The connection failed.
    #[error("reading the request body failed")]
    Read(#[source] hyper::Error),
}

/// A request body with a read timeout between frames and a size cap.
struct LimitedBody {
    inner: Incoming,
    timeout: Duration,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Bytes still allowed.
    left: u64,
    /// `STANNA_MAX_BODY_SIZE`, for the error.
    cap: u64,
}

impl HttpBody for LimitedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.idle = None;
                Poll::Ready(match frame {
                    Some(Ok(frame)) => {
                        let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                        match this.left.checked_sub(len) {
                            Some(left) => {
                                this.left = left;
                                Some(Ok(frame))
                            }
                            None => Some(Err(BodyError::TooLarge(this.cap))),
                        }
                    }
                    Some(Err(err)) => Some(Err(BodyError::Read(err))),
                    None => None,
                })
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(idle.as_mut().poll(cx));
                this.idle = None;
                Poll::Ready(Some(Err(BodyError::Stalled(timeout))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that counts its request as in flight until hyper has sent it all.
struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the connection's parts share: bytes read (the head timer starts with a request's first
/// byte), requests in flight and since when none has been (the idle timeout).
struct ConnState {
    bytes_read: AtomicU64,
    in_flight: AtomicUsize,
    /// When the last request ended (or the connection began), µs after `epoch`.
    idle_since: AtomicU64,
    epoch: Instant,
}

impl ConnState {
    fn new() -> Self {
        Self {
            bytes_read: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn mark_idle(&self) {
        let now = self.epoch.elapsed().as_micros() as u64;
        self.idle_since.store(now, Ordering::Relaxed);
    }

    /// How long no request has been in flight (zero while one is).
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let since = Duration::from_micros(self.idle_since.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(since)
    }

    /// When the connection will have been idle for `timeout`; with requests in flight, one
    /// timeout from now (looked at again then: a request ending wakes nothing).
    fn idle_deadline(&self, timeout: Duration) -> Instant {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Instant::now() + timeout;
        }
        let since = Duration::from_micros(self.idle_since.load(Ordering::Relaxed));
        self.epoch + since + timeout
    }
}

/// A request in flight on its connection, until dropped (with its response body).
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn new(state: Arc<ConnState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.mark_idle();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connection's stream (TCP, or TLS over it), counting the bytes read.
struct CountingStream<S> {
    inner: S,
    state: Arc<ConnState>,
}

impl<S: AsyncRead + Unpin> AsyncRead for CountingStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.state
                .bytes_read
                .fetch_add(read as u64, Ordering::Relaxed);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountingStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// hyper's HTTP/1 header-read timer, started by the request's first byte. hyper arms it as soon
/// as a connection waits for a request head — right after the previous response — so by itself
/// it would close every idle keep-alive connection after the header timeout; here it waits for
/// the head's first byte, and idle connections are the idle timeout's.
#[derive(Clone)]
struct HeadTimer {
    state: Arc<ConnState>,
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HeadSleep {
            state: self.state.clone(),
            timeout: duration,
            bytes_at_start: self.state.bytes_read.load(Ordering::Relaxed),
            running: None,
        })
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep(deadline.saturating_duration_since(Instant::now()))
    }

    /// hyper re-arms the timer before every request head of a kept-alive connection: reset in
    /// place rather than allocate a new one each time.
    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<HeadSleep>() {
            Some(head) => {
                let head = head.get_mut();
                head.timeout = new_deadline.saturating_duration_since(Instant::now());
                head.bytes_at_start = self.state.bytes_read.load(Ordering::Relaxed);
                head.running = None;
            }
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// A head timeout that runs from the first byte read after it was armed.
struct HeadSleep {
    state: Arc<ConnState>,
    timeout: Duration,
    bytes_at_start: u64,
    running: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.running.is_none() {
            if self.state.bytes_read.load(Ordering::Relaxed) == self.bytes_at_start {
                // hyper polls this again after every read that leaves the head incomplete.
                return Poll::Pending;
            }
            let timeout = self.timeout;
            self.running = Some(Box::pin(tokio::time::sleep(timeout)));
        }
        match self.running.as_mut() {
            Some(running) => running.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

impl hyper::rt::Sleep for HeadSleep {}
