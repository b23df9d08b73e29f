//! Observability end to end, in split mode: the four services as separate processes export OTLP
//! to a receiver in this test process; one public request is one trace across them; an incoming
//! `traceparent` reaches the upstream; `/metrics` parses and moves; and no plaintext key appears
//! in any log line, exported span or metric.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use stanna_e2e::{Stanna, free_port};
use stanna_proto::keys::v1 as pb;
use stanna_proto::keys::v1::key_registry_client::KeyRegistryClient;
use stanna_testkit::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "telemetry-admin-token-0123456789";

/// One exported span, flattened.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    /// Everything the span carried, as text (for the secret check).
    text: String,
}

/// An OTLP/gRPC trace receiver.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    AnyValue::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(Span {
                        service: service.clone(),
                        name: span.name.clone(),
                        trace_id: span.trace_id.clone(),
                        span_id: span.span_id.clone(),
                        parent_span_id: span.parent_span_id.clone(),
                        text: format!("{span:?}"),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An upstream that records the head of each request and answers `ok`.
async fn recording_upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let recorded = heads.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let heads = recorded.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
                        buffer.drain(..end + 4);
                        heads.lock().unwrap().push(head);
                        let _ = socket
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                    }
                }
            });
        }
    });
    (addr, heads)
}

/// The port a process said its metrics listen on.
fn metrics_url(process: &Stanna) -> String {
    let output = process.output();
    let addr = output
        .lines()
        .find_map(|l| l.split("metrics listening on ").nth(1))
        .expect("a 'metrics listening on' line");
    // The line may be JSON: the address ends where its characters do.
    let end = addr
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
        .unwrap_or(addr.len());
    let addr = &addr[..end];
    format!("http://{addr}/metrics")
}

struct System {
    gateway: String,
    processes: Vec<Stanna>,
    receiver: Receiver,
    upstream: Arc<Mutex<Vec<String>>>,
    registry_port: u16,
    _dir: TempDir,
    /// Last: the processes stop before their database is dropped.
    _store: stanna_e2e::SharedStore,
}

async fn start_system() -> System {
    start_system_with(&[]).await
}

/// The four processes, the gateway also given `gateway_env`.
async fn start_system_with(gateway_env: &[(&'static str, String)]) -> System {
    let receiver = Receiver::default();
    let otlp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp_addr = otlp.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(otlp)),
    );
    let (upstream_addr, upstream) = recording_upstream().await;
    let dir = TempDir::new();
    let store = stanna_e2e::SharedStore::for_test(&dir, "telemetry");
    let db = store.url();
    let redis = stanna_testkit::redis_url("telemetry (Redis)");
    let [quota, registry, auth, gateway] = [free_port(), free_port(), free_port(), free_port()];
    let common = |extra: &[(&'static str, String)]| {
        let mut env = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp_addr}")),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
            ("STANNA_LOG_FORMAT", "json".to_owned()),
            ("RUST_LOG", "debug".to_owned()),
            ("STANNA_DATABASE_URL", db.clone()),
            ("STANNA_ADMIN_TOKEN", TOKEN.to_owned()),
            ("STANNA_GATEWAY_TOKEN", stanna_e2e::GATEWAY_TOKEN.to_owned()),
            (
                "STANNA_SESSION_SECRET",
                stanna_e2e::SESSION_SECRET.to_owned(),
            ),
        ];
        env.extend_from_slice(extra);
        env
    };
    let mut quota_env = vec![("STANNA_QUOTA_ADDR", format!("127.0.0.1:{quota}"))];
    if let Some(redis) = redis {
        quota_env.push(("STANNA_REDIS_URL", redis));
    }
    let processes = vec![
        Stanna::start(
            dir.path(),
            &["serve", "quota"],
            &common(&quota_env),
            "quota listening on",
        ),
        Stanna::start(
            dir.path(),
            &["serve", "registry"],
            &common(&[("STANNA_REGISTRY_ADDR", format!("127.0.0.1:{registry}"))]),
            "key-registry listening on",
        ),
        Stanna::start(
            dir.path(),
            &["serve", "auth-check"],
            &common(&[
                ("STANNA_AUTH_CHECK_ADDR", format!("127.0.0.1:{auth}")),
                ("STANNA_QUOTA_URL", format!("http://127.0.0.1:{quota}")),
            ]),
            "auth-check listening on",
        ),
        Stanna::start(
            dir.path(),
            &["serve", "gateway"],
            &common(
                &[
                    ("STANNA_GATEWAY_ADDR", format!("127.0.0.1:{gateway}")),
                    ("STANNA_AUTH_CHECK_URL", format!("http://127.0.0.1:{auth}")),
                    (
                        "STANNA_REGISTRY_URL",
                        format!("http://127.0.0.1:{registry}"),
                    ),
                    ("STANNA_UPSTREAM_URL", format!("http://{upstream_addr}")),
                ]
                .iter()
                .chain(gateway_env)
                .cloned()
                .collect::<Vec<_>>(),
            ),
            "gateway listening on",
        ),
    ];
    System {
        gateway: format!("http://127.0.0.1:{gateway}"),
        processes,
        receiver,
        upstream,
        registry_port: registry,
        _dir: dir,
        _store: store,
    }
}

impl System {
    async fn create_key(&self) -> (String, String) {
        let channel = tonic::transport::Endpoint::from_shared(format!(
            "http://127.0.0.1:{}",
            self.registry_port
        ))
        .unwrap()
        .connect()
        .await
        .unwrap();
        let mut registry =
            KeyRegistryClient::with_interceptor(channel, |mut r: tonic::Request<()>| {
                r.metadata_mut()
                    .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
                Ok(r)
            });
        let created = registry
            .create_key(pb::CreateKeyRequest {
                workspace_id: "ws_otel".into(),
                user_id: "alice".into(),
                name: "Traced".into(),
                expires_at: None,
                rate_limits: Vec::new(),
                metadata: String::new(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        (created.secret, created.key.unwrap().id)
    }

    /// Polls until the spans of the trace `trace_id` include all of `wanted` names (generous cap).
    async fn trace(&self, trace_id: &[u8], wanted: &[&str]) -> Vec<Span> {
        let start = Instant::now();
        loop {
            let spans: Vec<Span> = self
                .receiver
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .cloned()
                .collect();
            let names: HashSet<&str> = spans.iter().map(|s| s.name.as_str()).collect();
            if wanted.iter().all(|w| names.contains(w)) {
                return spans;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "spans {wanted:?} never all arrived; have {names:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

async fn get(url: &str, headers: &[(&str, &str)]) -> (u16, Bytes) {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut request = http::Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_is_one_trace_across_gateway_auth_check_quota_and_the_store() {
    let system = start_system().await;
    let (secret, _) = system.create_key().await;
    // A traceparent we choose, so the trace is easy to find and its root's parent is known.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{client_span}-01");
    let bearer = format!("Bearer {secret}");
    let (status, body) = get(
        &format!("{}/v1/me", system.gateway),
        &[("authorization", &bearer), ("traceparent", &traceparent)],
    )
    .await;
    assert_eq!(status, 200, "{body:?}");

    let wanted = [
        "GET /v1/me",
        "AuthCheck/Verify",
        "stanna.keys.v1.AuthCheck/Verify",
        "stanna.keys.v1.Quota/Consume",
        "verify",
        "store.find_by_key_id",
        "argon2.verify",
        "Quota/Consume",
        "quota.decide",
    ];
    let trace_bytes: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let spans = system.trace(&trace_bytes, &wanted).await;
    let services: HashSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    for service in ["stanna-gateway", "stanna-auth-check", "stanna-quota"] {
        assert!(
            services.contains(service),
            "no span from {service}: {services:?}"
        );
    }
    // Parent links: the gateway's request span continues the client's span; every other span's
    // parent is a span of this trace.
    let ids: HashMap<Vec<u8>, &Span> = spans.iter().map(|s| (s.span_id.clone(), s)).collect();
    for span in &spans {
        if span.name == "GET /v1/me" {
            assert_eq!(
                hex(&span.parent_span_id),
                client_span,
                "the root continues the caller"
            );
        } else {
            let parent = ids.get(&span.parent_span_id).unwrap_or_else(|| {
                panic!(
                    "{} ({}) has a parent outside the trace",
                    span.name, span.service
                )
            });
            let expected_parent = match span.name.as_str() {
                "AuthCheck/Verify" => "GET /v1/me",
                "stanna.keys.v1.AuthCheck/Verify" => "AuthCheck/Verify",
                "verify" => "stanna.keys.v1.AuthCheck/Verify",
                "store.find_by_key_id" | "argon2.verify" | "Quota/Consume" => "verify",
                "stanna.keys.v1.Quota/Consume" => "Quota/Consume",
                "quota.decide" => "stanna.keys.v1.Quota/Consume",
                "redis.evalsha" => "quota.decide",
                _ => continue,
            };
            assert_eq!(parent.name, expected_parent, "parent of {}", span.name);
        }
    }
    let service_of = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.service.as_str())
    };
    assert_eq!(service_of("GET /v1/me"), Some("stanna-gateway"));
    assert_eq!(
        service_of("stanna.keys.v1.AuthCheck/Verify"),
        Some("stanna-auth-check")
    );
    assert_eq!(
        service_of("store.find_by_key_id"),
        Some("stanna-auth-check")
    );
    assert_eq!(
        service_of("stanna.keys.v1.Quota/Consume"),
        Some("stanna-quota")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_gets_a_traceparent_of_the_callers_trace() {
    let system = start_system().await;
    let (secret, _) = system.create_key().await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let traceparent = format!("00-{trace_id}-b7ad6b7169203331-01");
    let bearer = format!("Bearer {secret}");
    let (status, _) = get(
        &format!("{}/orders", system.gateway),
        &[("authorization", &bearer), ("traceparent", &traceparent)],
    )
    .await;
    assert_eq!(status, 200);
    let head = system.upstream.lock().unwrap().last().cloned().unwrap();
    let forwarded = head
        .lines()
        .find_map(|l| l.strip_prefix("traceparent: "))
        .unwrap_or_else(|| panic!("no traceparent upstream: {head}"));
    let parts: Vec<&str> = forwarded.split('-').collect();
    assert_eq!(parts[1], trace_id, "same trace: {forwarded}");
    assert_ne!(
        parts[2], "b7ad6b7169203331",
        "a child of the gateway's span, not the caller's"
    );
}

/// The public edge decides sampling by its own rule: under a ratio of 0 a client's `traceparent`
/// asking for a sampled trace (flag `01`) is not followed — the trace id is kept, and the
/// upstream is told the request is not sampled (flag `00`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_sampled_flag_is_ignored_under_a_ratio_of_zero() {
    let system = start_system_with(&[
        ("OTEL_TRACES_SAMPLER", "traceidratio".to_owned()),
        ("OTEL_TRACES_SAMPLER_ARG", "0".to_owned()),
    ])
    .await;
    let (secret, _) = system.create_key().await;
    let trace_id = "1af7651916cd43dd8448eb211c80319d";
    let traceparent = format!("00-{trace_id}-b7ad6b7169203331-01");
    let bearer = format!("Bearer {secret}");
    let (status, _) = get(
        &format!("{}/orders", system.gateway),
        &[("authorization", &bearer), ("traceparent", &traceparent)],
    )
    .await;
    assert_eq!(status, 200);
    let head = system.upstream.lock().unwrap().last().cloned().unwrap();
    let forwarded = head
        .lines()
        .find_map(|l| l.strip_prefix("traceparent: "))
        .unwrap_or_else(|| panic!("no traceparent upstream: {head}"));
    let parts: Vec<&str> = forwarded.split('-').collect();
    assert_eq!(
        parts[1], trace_id,
        "the trace id is the client's: {forwarded}"
    );
    assert_eq!(
        parts[3], "00",
        "not sampled, whatever the client asked: {forwarded}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_key_in_logs_spans_or_metrics_and_metrics_move() {
    let system = start_system().await;
    let gateway_metrics = metrics_url(&system.processes[3]);
    let scrape = |url: String| async move {
        let (status, body) = get(&url, &[]).await;
        assert_eq!(status, 200);
        String::from_utf8(body.to_vec()).unwrap()
    };
    let before = scrape(gateway_metrics.clone()).await;
    assert_prometheus_text(&before);

    let (secret, key_id) = system.create_key().await;
    let bearer = format!("Bearer {secret}");
    for _ in 0..3 {
        assert_eq!(
            get(
                &format!("{}/v1/me", system.gateway),
                &[("authorization", &bearer)]
            )
            .await
            .0,
            200
        );
    }
    // A denial with a near miss of the real key (one character changed).
    let mut wrong = secret.clone();
    wrong.replace_range(20..21, if &secret[20..21] == "A" { "B" } else { "A" });
    assert_eq!(
        get(
            &format!("{}/v1/me", system.gateway),
            &[("authorization", &format!("Bearer {wrong}"))]
        )
        .await
        .0,
        401
    );
    // Delete it through the REST API and see it refused.
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let delete = http::Request::delete(format!("{}/v1/keys/{key_id}", system.gateway))
        .header("authorization", &bearer)
        .body(Empty::new())
        .unwrap();
    assert_eq!(client.request(delete).await.unwrap().status(), 204);
    let me = format!("{}/v1/me", system.gateway);
    stanna_testkit::eventually(
        Duration::from_secs(10),
        "refusal of the deleted key",
        || async { get(&me, &[("authorization", &bearer)]).await.0 == 401 },
    )
    .await;

    let after = scrape(gateway_metrics).await;
    assert_prometheus_text(&after);
    let count = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let ok = "stanna_gateway_requests_total{status=\"200\"}";
    assert!(
        count(&after, ok) >= count(&before, ok) + 3.0,
        "200s counted:\n{after}"
    );
    let auth_metrics = scrape(metrics_url(&system.processes[2])).await;
    assert_prometheus_text(&auth_metrics);
    for series in [
        "stanna_verify_total{code=\"valid\"}",
        "stanna_verify_total{code=\"not_found\"}",
        "stanna_argon2_runs_total",
        "stanna_verify_cache_total{result=\"hit\"}",
    ] {
        assert!(
            count(&auth_metrics, series) >= 1.0,
            "{series} in:\n{auth_metrics}"
        );
    }
    let quota_metrics = scrape(metrics_url(&system.processes[0])).await;
    assert!(
        count(
            &quota_metrics,
            "stanna_quota_decisions_total{outcome=\"allowed\"}"
        ) >= 3.0
    );
    // Each process exports its own families only, and its gRPC server's calls by method.
    let has = |text: &str, family: &str| text.lines().any(|l| l.starts_with(family));
    for family in [
        "stanna_gateway_requests_total",
        "stanna_verify_total",
        "stanna_argon2",
    ] {
        assert!(
            !has(&quota_metrics, family),
            "{family} at the quota:\n{quota_metrics}"
        );
    }
    for family in [
        "stanna_gateway_requests_total",
        "stanna_quota_decisions_total",
    ] {
        assert!(
            !has(&auth_metrics, family),
            "{family} at auth-check:\n{auth_metrics}"
        );
    }
    for family in [
        "stanna_verify_total",
        "stanna_quota_decisions_total",
        "stanna_grpc_",
    ] {
        assert!(!has(&after, family), "{family} at the gateway:\n{after}");
    }
    assert!(
        count(
            &quota_metrics,
            "stanna_grpc_requests_total{method=\"/stanna.keys.v1.Quota/Consume\",code=\"OK\"}"
        ) >= 3.0,
        "{quota_metrics}"
    );

    // One last request with a trace id of our choosing; once its spans from the gateway and
    // auth-check have arrived, everything exported before it has too (each exporter sends in
    // order), so the search below sees every span of this test.
    let last_trace = "5cf92f3577b34da6a3ce929d0e0e4737";
    let traceparent = format!("00-{last_trace}-00f067aa0ba902b7-01");
    assert_eq!(
        get(
            &me,
            &[("authorization", &bearer), ("traceparent", &traceparent)]
        )
        .await
        .0,
        401
    );
    let last_trace: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&last_trace[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    system.trace(&last_trace, &["GET /v1/me", "verify"]).await;
    // README: metric labels are bounded — never a key, workspace or user id.
    for (place, text) in [
        ("gateway", &after),
        ("auth-check", &auth_metrics),
        ("quota", &quota_metrics),
    ] {
        for id in [key_id.as_str(), "ws_otel", "alice"] {
            assert!(
                !text.contains(id),
                "{id} appears in the {place} metrics:\n{text}"
            );
        }
    }
    let secret_body = &secret[15..47];
    let spans = system.receiver.spans.lock().unwrap().clone();
    assert!(!spans.is_empty(), "spans were exported");
    let mut haystacks: Vec<(String, String)> = spans
        .iter()
        .map(|s| (format!("span {} of {}", s.name, s.service), s.text.clone()))
        .collect();
    for (i, process) in system.processes.iter().enumerate() {
        haystacks.push((format!("logs of process {i}"), process.output()));
    }
    haystacks.push(("gateway metrics".into(), after));
    haystacks.push(("auth-check metrics".into(), auth_metrics));
    haystacks.push(("quota metrics".into(), quota_metrics));
    for (place, text) in haystacks {
        for needle in [secret.as_str(), wrong.as_str(), secret_body, TOKEN] {
            assert!(
                !text.contains(needle),
                "a key or the admin token appeared in {place}"
            );
        }
    }
    let logs = system.processes[3].output();
    assert!(
        logs.lines().any(|l| l.starts_with('{')),
        "the gateway logged JSON lines"
    );
}

/// Every line is a comment (`# HELP`, `# TYPE`, `# UNIT`, `# EOF`) or `name{labels} value`.
fn assert_prometheus_text(text: &str) {
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    for line in text.lines() {
        if line.starts_with("# ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
        assert!(value.parse::<f64>().is_ok(), "bad value in {line:?}");
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unclosed labels in {line:?}");
        }
    }
}
