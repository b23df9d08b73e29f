//! A whole system in the test process, built by the composition root exactly as `stanna serve`
//! builds it (`stanna::System`): a real SQLite store, the registry, auth-check and quota wired in
//! memory, every listener on an ephemeral port; plus a recording upstream and a small HTTP client.
//! Time is injected (the system's clock) so expiry is tested without sleeping.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use stanna::{Listeners, Overrides, Settings, System};
use stanna_auth_check::{FailMode, Verifier};
use stanna_proto::keys::v1 as pb;
use stanna_proto::keys::v1::key_registry_client::KeyRegistryClient;
use stanna_testkit::{ShiftedClock, TempDir};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// What a test may change about the stack.
pub struct Options {
    pub upstream: Option<String>,
    pub verify_timeout: Duration,
    pub upstream_timeout: Duration,
    pub max_keys_per_user: u32,
    pub fail_mode: FailMode,
    /// Replaces the in-process auth-check (e.g. a channel to a port with nothing behind it).
    pub auth_check: Option<stanna_gateway::AuthCheckConnection>,
    /// Replaces the in-process quota.
    pub quota: Option<stanna_auth_check::QuotaConnection>,
    /// Replaces the gateway's in-memory connection to the registry (the admin client keeps the
    /// real one).
    pub registry: Option<stanna_grpc::Transport>,
    /// Any other setting, changed before the system is built.
    pub tune: Option<fn(&mut Settings)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            upstream: None,
            verify_timeout: Duration::from_secs(2),
            upstream_timeout: Duration::from_secs(5),
            max_keys_per_user: 100,
            fail_mode: FailMode::Open,
            auth_check: None,
            quota: None,
            registry: None,
            tune: None,
        }
    }
}

pub type Admin = KeyRegistryClient<
    tonic::service::interceptor::InterceptedService<
        stanna_grpc::Transport,
        fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>,
    >,
>;

/// The running system; stopped on drop.
pub struct Stack {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub clock: ShiftedClock,
    /// The auth-check core (to serve it on a socket of the test's choosing).
    pub verifier: Verifier,
    /// `http://127.0.0.1:PORT/metrics`.
    pub metrics_url: String,
    /// `http://127.0.0.1:PORT` of the registry's gRPC listener.
    pub registry_url: String,
    /// `http://127.0.0.1:PORT` of the dashboard's own listener, when `STANNA_DASHBOARD_ADDR` is
    /// set.
    pub dashboard_url: Option<String>,
    admin: Admin,
    stop: Option<oneshot::Sender<()>>,
    serving: Option<tokio::task::JoinHandle<Result<(), stanna::ServeError>>>,
    _dir: TempDir,
}

fn with_admin_token(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN_TOKEN}").parse().unwrap(),
    );
    Ok(request)
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        let dir = TempDir::new();
        let mut settings = Settings::for_tests(dir.sqlite_url(), ADMIN_TOKEN);
        settings.registry.max_keys_per_user = options.max_keys_per_user;
        settings.auth_check.quota_fail_mode = options.fail_mode;
        settings.gateway.upstream_url = options.upstream.map(|u| u.parse().unwrap());
        settings.gateway.verify_timeout = stanna_config::DurationArg(options.verify_timeout);
        settings.gateway.upstream_timeout = stanna_config::DurationArg(options.upstream_timeout);
        if let Some(tune) = options.tune {
            tune(&mut settings);
        }
        let clock = ShiftedClock::new();
        let overrides = Overrides {
            clock: Some(clock.as_clock()),
            quota: options.quota,
            auth_check: options.auth_check,
            registry: options.registry,
            ..Overrides::default()
        };
        let listeners = Listeners::bind(&settings).await.unwrap();
        let url = format!("http://{}", listeners.gateway_addr().unwrap());
        let metrics_url = format!("http://{}/metrics", listeners.metrics_addr().unwrap());
        let registry_url = format!("http://{}", listeners.registry_addr().unwrap());
        let dashboard_url = listeners.dashboard_addr().map(|a| format!("http://{a}"));
        let system = System::build(settings, overrides).await.unwrap();
        let verifier = system.verifier().unwrap().clone();
        let registry = system.registry_transport().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(system.serve(listeners, async {
            let _ = stopped.await;
        }));
        let admin = KeyRegistryClient::with_interceptor(registry, with_admin_token as fn(_) -> _);
        Self {
            url,
            clock,
            verifier,
            metrics_url,
            registry_url,
            dashboard_url,
            admin,
            stop: Some(stop),
            serving: Some(serving),
            _dir: dir,
        }
    }

    /// Asks the system to stop (what SIGTERM does); [`Stack::stopped`] waits for it.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits until the system stopped; its outcome.
    pub async fn stopped(&mut self) -> Result<(), stanna::ServeError> {
        let serving = self.serving.take().expect("not waited for before");
        serving.await.expect("serve did not panic")
    }

    /// The admin's registry client (what grpcurl would do).
    pub fn admin(&self) -> Admin {
        self.admin.clone()
    }

    /// Creates a key for `user` in `workspace` as an admin; returns (secret, key).
    pub async fn create_key(&self, workspace: &str, user: &str) -> (String, pb::ApiKey) {
        self.create_key_expiring(workspace, user, None).await
    }

    pub async fn create_key_expiring(
        &self,
        workspace: &str,
        user: &str,
        expires_at: Option<SystemTime>,
    ) -> (String, pb::ApiKey) {
        let created = self
            .admin()
            .create_key(pb::CreateKeyRequest {
                workspace_id: workspace.into(),
                user_id: user.into(),
                name: "test key".into(),
                expires_at: expires_at.map(prost_types_timestamp),
                rate_limits: Vec::new(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        (created.secret, created.key.unwrap())
    }

    /// `METHOD url+path` with `headers` and `body`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        send(request.body(body.into()).unwrap()).await
    }

    /// `GET path` with the key as a Bearer token.
    pub async fn get_with_key(&self, path: &str, key: &str) -> Reply {
        let bearer = format!("Bearer {key}");
        self.call(
            Method::GET,
            path,
            &[("authorization", &bearer)],
            Body::empty(),
        )
        .await
    }

    /// `METHOD path` with the key and a JSON body.
    pub async fn json_with_key(&self, method: Method, path: &str, key: &str, body: &str) -> Reply {
        let bearer = format!("Bearer {key}");
        self.call(
            method,
            path,
            &[
                ("authorization", &bearer),
                ("content-type", "application/json"),
            ],
            body.to_owned(),
        )
        .await
    }
}

fn prost_types_timestamp(time: SystemTime) -> prost_types::Timestamp {
    let since = time.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    prost_types::Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
    }
}

/// What came back.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}: {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .unwrap()
    }

    /// Asserts the error shape of the README's table: status, code, the request id in body and
    /// header.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "status for {code}: body {:?}",
            String::from_utf8_lossy(&self.body)
        );
        let json = self.json();
        assert_eq!(json["error"]["code"], code, "{json}");
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{json}"
        );
        assert_eq!(
            json["error"]["request_id"],
            self.header("x-request-id"),
            "the body names the request id of the header"
        );
        assert_eq!(self.header("content-type"), "application/json");
        assert_eq!(
            self.headers.contains_key("www-authenticate"),
            status == 401,
            "WWW-Authenticate exactly on 401"
        );
        assert_eq!(
            self.headers.contains_key("retry-after"),
            status == 429 || status == 503,
            "Retry-After exactly on 429 and 503"
        );
    }

    /// Asserts that not one rate-limit header is present.
    pub fn assert_no_rate_limit_headers(&self) {
        for name in self.headers.keys() {
            let name = name.as_str();
            assert!(
                !(name.starts_with("x-ratelimit") || name.starts_with("ratelimit")),
                "{name} present on a {} answer",
                self.status
            );
        }
    }

    pub fn has_rate_limit_headers(&self) -> bool {
        self.headers.contains_key("x-ratelimit-limit")
            && self.headers.contains_key("ratelimit-policy")
            && self.headers.contains_key("ratelimit")
    }
}

/// Sends `request` with a shared pooled client.
pub async fn send(request: Request<Body>) -> Reply {
    static CLIENT: std::sync::OnceLock<Client<HttpConnector, Body>> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(|| Client::builder(TokioExecutor::new()).build_http());
    let response = client.request(request).await.expect("HTTP request");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("response body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub use stanna_testkit::eventually;

/// A port nothing listens on, which nothing else will take ([`stanna_testkit::free_port`]).
pub async fn closed_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], stanna_testkit::free_port()))
}

/// What the test upstream received on `/record…`.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub path_and_query: String,
    pub headers: HeaderMap,
}

/// An upstream that records requests, echoes, streams and stalls on demand.
pub struct Upstream {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Signalled when `/upload` got its first chunk.
    pub upload_started: Arc<tokio::sync::Notify>,
    /// `/download` sends its first chunk, then waits for this before the rest.
    pub download_may_continue: Arc<tokio::sync::Notify>,
    _stop: oneshot::Sender<()>,
}

pub const TEN_MIB: usize = 10 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// The byte at `i` of the test pattern (not periodic in any small power of two).
pub fn pattern(i: usize) -> u8 {
    ((i * 7 + i / 251) % 256) as u8
}

/// FNV-1a over `data`, continuing from `hash`.
pub fn fnv1a(mut hash: u64, data: &[u8]) -> u64 {
    for b in data {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    hash
}
pub const FNV_START: u64 = 0xcbf29ce484222325;

impl Upstream {
    pub async fn start() -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let upload_started = Arc::new(tokio::sync::Notify::new());
        let download_may_continue = Arc::new(tokio::sync::Notify::new());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let state = (
            received.clone(),
            upload_started.clone(),
            download_may_continue.clone(),
        );
        let app = axum::Router::new().fallback(move |request: Request<Body>| {
            let state = state.clone();
            async move { upstream_answer(request, state).await }
        });
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            url,
            received,
            upload_started,
            download_may_continue,
            _stop: stop,
        }
    }

    pub fn last(&self) -> Received {
        self.received
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream received a request")
    }
}

type UpstreamState = (
    Arc<Mutex<Vec<Received>>>,
    Arc<tokio::sync::Notify>,
    Arc<tokio::sync::Notify>,
);

async fn upstream_answer(
    request: Request<axum::body::Body>,
    (received, upload_started, download_may_continue): UpstreamState,
) -> http::Response<Body> {
    let path = request.uri().path().to_owned();
    received.lock().unwrap().push(Received {
        method: request.method().clone(),
        path_and_query: request
            .uri()
            .path_and_query()
            .map_or_else(String::new, |p| p.as_str().to_owned()),
        headers: request.headers().clone(),
    });
    match path.as_str() {
        "/upload" => {
            let mut body = request.into_body();
            let (mut len, mut hash, mut first) = (0usize, FNV_START, true);
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    return http::Response::builder()
                        .status(400)
                        .body(Body::from("broken body"))
                        .unwrap();
                };
                if let Ok(data) = frame.into_data() {
                    len += data.len();
                    hash = fnv1a(hash, &data);
                    if first && !data.is_empty() {
                        first = false;
                        upload_started.notify_one();
                    }
                }
            }
            http::Response::new(Body::from(format!("{len}:{hash:x}")))
        }
        "/download" => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(4);
            tokio::spawn(async move {
                let mut sent = 0;
                while sent < TEN_MIB {
                    let chunk: Vec<u8> = (sent..sent + CHUNK).map(pattern).collect();
                    if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                        return;
                    }
                    if sent == 0 {
                        download_may_continue.notified().await;
                    }
                    sent += CHUNK;
                }
            });
            http::Response::builder()
                .header("content-type", "application/octet-stream")
                .body(Body::from_stream(
                    tokio_stream::wrappers::ReceiverStream::new(rx),
                ))
                .unwrap()
        }
        "/status/413" | "/status/500" => http::Response::builder()
            .status(if path.ends_with("413") { 413 } else { 500 })
            .header("content-type", "text/plain")
            .body(Body::from("the upstream's own answer"))
            .unwrap(),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            http::Response::new(Body::from("too late"))
        }
        _ => http::Response::builder()
            .header("content-type", "text/plain")
            .header("x-upstream", "yes")
            .body(Body::from("hello from upstream"))
            .unwrap(),
    }
}
