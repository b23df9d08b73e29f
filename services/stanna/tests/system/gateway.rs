//! The gateway as public clients see it: every row of the README's error table (but `internal`)
//! from a real scenario, the rate-limit headers counting down to the 429, what the upstream
//! receives, bodies streaming both ways, and the upstream and auth-check failing.

use std::time::{Duration, Instant};

use crate::stack::{Options, Stack, Upstream, eventually};
use axum::body::Body;
use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use stanna_auth_check::FailMode;
use stanna_proto::keys::v1 as pb;

const WS: &str = "ws-a";
const USER: &str = "user-1";

#[tokio::test]
async fn no_credential_is_401_missing_api_key() {
    let stack = Stack::start().await;
    let reply = stack.call(Method::GET, "/v1/me", &[], Body::empty()).await;
    reply.assert_error(401, "missing_api_key");
    assert_eq!(reply.header("www-authenticate"), "Bearer realm=\"stanna\"");
    reply.assert_no_rate_limit_headers();
}

#[tokio::test]
async fn a_key_not_of_our_format_is_401_naming_the_part() {
    let stack = Stack::start().await;
    let (secret, _) = stack.create_key(WS, USER).await;
    let cases = [
        ("pk-".to_owned() + &secret[3..], "sk-"),
        (secret[..40].to_owned(), "53"),
        (
            format!("{}!{}", &secret[..10], &secret[11..]),
            "character 11",
        ),
        (
            {
                // The last checksum character changed: a typo.
                let mut s = secret.clone();
                let last = s.pop().unwrap();
                s.push(if last == 'A' { 'B' } else { 'A' });
                s
            },
            "checksum",
        ),
    ];
    for (key, part) in cases {
        let reply = stack.get_with_key("/v1/me", &key).await;
        reply.assert_error(401, "malformed_api_key");
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains(part), "{message:?} should name {part:?}");
        assert!(!message.contains(&key), "the message never repeats the key");
        assert!(
            reply.header("www-authenticate").contains("invalid_token"),
            "a sent key that fails is invalid_token"
        );
    }
}

#[tokio::test]
async fn a_well_formed_unknown_key_is_401_invalid_api_key() {
    let stack = Stack::start().await;
    let made_up = stanna_keys::GeneratedKey::generate().unwrap().into_secret();
    stack
        .get_with_key("/v1/me", &made_up)
        .await
        .assert_error(401, "invalid_api_key");
}

#[tokio::test]
async fn a_deleted_key_is_refused_within_a_second() {
    let stack = Stack::start().await;
    let (secret, key) = stack.create_key(WS, USER).await;
    assert_eq!(stack.get_with_key("/v1/me", &secret).await.status, 200);
    stack
        .admin()
        .delete_key(pb::DeleteKeyRequest {
            workspace_id: WS.into(),
            user_id: String::new(),
            key_id: key.id,
        })
        .await
        .unwrap();
    // The promise at the shipped defaults (a 250 ms change poll): refused within a second. The
    // cap is 1.5 s, not 1 s, for a loaded test machine; the poll loop's cadence and what one poll
    // delivers are tested deterministically in auth-check.
    let deleted_at = Instant::now();
    eventually(
        Duration::from_millis(1500),
        "refusal of the deleted key",
        || async { stack.get_with_key("/v1/me", &secret).await.status == 401 },
    )
    .await;
    println!("deleted key refused after {:?}", deleted_at.elapsed());
    stack
        .get_with_key("/v1/me", &secret)
        .await
        .assert_error(401, "invalid_api_key");
}

/// Key ids are public: made-up secrets for a real key id are refused, and past the id's failure
/// budget (5 at once) with 429 `rate_limited`, `Retry-After` and no rate-limit headers (no quota
/// window was consulted); the owner's key, already verified, keeps working.
#[tokio::test]
async fn repeated_guesses_for_one_key_id_are_429_and_the_owner_keeps_working() {
    let stack = Stack::start().await;
    let (secret, _) = stack.create_key(WS, USER).await;
    assert_eq!(stack.get_with_key("/v1/me", &secret).await.status, 200);
    let mut limited = None;
    for n in 0..10 {
        let mut body = format!("{}{n:0>32}", &secret[..15]);
        body.truncate(47);
        let sum = stanna_keys::format::checksum(body.as_bytes());
        let guess = format!("{body}{}", std::str::from_utf8(&sum).unwrap());
        let reply = stack.get_with_key("/v1/me", &guess).await;
        if reply.status == 429 {
            limited = Some(reply);
            break;
        }
        reply.assert_error(401, "invalid_api_key");
    }
    let limited = limited.expect("the failure budget ran out within 10 guesses");
    limited.assert_error(429, "rate_limited");
    limited.assert_no_rate_limit_headers();
    assert_eq!(stack.get_with_key("/v1/me", &secret).await.status, 200);
}

#[tokio::test]
async fn a_deactivated_key_is_401_inactive_and_works_again_once_reactivated() {
    let stack = Stack::start().await;
    let (secret, key) = stack.create_key(WS, USER).await;
    let set_status = |status: pb::KeyStatus| {
        let mut admin = stack.admin();
        let id = key.id.clone();
        async move {
            admin
                .update_key(pb::UpdateKeyRequest {
                    workspace_id: WS.into(),
                    user_id: String::new(),
                    key_id: id,
                    name: None,
                    status: status.into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    };
    set_status(pb::KeyStatus::Inactive).await;
    eventually(
        Duration::from_secs(10),
        "refusal of the inactive key",
        || async { stack.get_with_key("/v1/me", &secret).await.status == 401 },
    )
    .await;
    stack
        .get_with_key("/v1/me", &secret)
        .await
        .assert_error(401, "inactive_api_key");
    set_status(pb::KeyStatus::Active).await;
    eventually(
        Duration::from_secs(10),
        "the reactivated key working",
        || async { stack.get_with_key("/v1/me", &secret).await.status == 200 },
    )
    .await;
}

#[tokio::test]
async fn a_key_past_its_expiry_is_401_expired() {
    let stack = Stack::start().await;
    let in_an_hour = std::time::SystemTime::now() + Duration::from_secs(3600);
    let (secret, _) = stack.create_key_expiring(WS, USER, Some(in_an_hour)).await;
    assert_eq!(stack.get_with_key("/v1/me", &secret).await.status, 200);
    stack.clock.advance(Duration::from_secs(3601));
    stack
        .get_with_key("/v1/me", &secret)
        .await
        .assert_error(401, "expired_api_key");
}

#[tokio::test]
async fn another_workspace_in_x_workspace_id_is_403_and_its_own_is_fine() {
    let stack = Stack::start().await;
    let (secret, _) = stack.create_key(WS, USER).await;
    let bearer = format!("Bearer {secret}");
    let stack = &stack;
    let call = |workspace: &'static str| {
        let headers = [
            ("authorization", bearer.clone()),
            ("x-workspace-id", workspace.to_owned()),
        ];
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            stack
                .call(Method::GET, "/v1/me", &headers, Body::empty())
                .await
        }
    };
    let reply = call("ws-b").await;
    reply.assert_error(403, "workspace_mismatch");
    reply.assert_no_rate_limit_headers();
    assert_eq!(call(WS).await.status, 200);
    let reply = call("not a workspace!").await;
    reply.assert_error(400, "invalid_request");
    assert_eq!(reply.json()["error"]["field"], "X-Workspace-Id");
}

#[tokio::test]
async fn two_different_keys_in_the_two_headers_are_400_ambiguous() {
    let stack = Stack::start().await;
    let (a, _) = stack.create_key(WS, USER).await;
    let (b, _) = stack.create_key(WS, USER).await;
    let bearer = format!("Bearer {a}");
    let reply = stack
        .call(
            Method::GET,
            "/v1/me",
            &[("authorization", &bearer), ("x-api-key", &b)],
            Body::empty(),
        )
        .await;
    reply.assert_error(400, "ambiguous_api_key");
    let same = stack
        .call(
            Method::GET,
            "/v1/me",
            &[("authorization", &bearer), ("x-api-key", &a)],
            Body::empty(),
        )
        .await;
    assert_eq!(same.status, 200, "the same key twice is fine");
}

#[tokio::test]
async fn burst_of_101_gets_one_429_and_the_headers_count_down_before_it() {
    let stack = Stack::start().await;
    let (secret, _) = stack.create_key(WS, USER).await;
    for i in 1..=100u32 {
        let reply = stack.get_with_key("/v1/me", &secret).await;
        assert_eq!(reply.status, 200, "request {i}");
        assert_eq!(reply.header("x-ratelimit-limit-burst"), "100");
        assert_eq!(
            reply.header("x-ratelimit-remaining-burst"),
            (100 - i).to_string(),
            "request {i}"
        );
        assert_eq!(reply.header("x-ratelimit-limit-hourly"), "1000");
        assert_eq!(
            reply.header("x-ratelimit-remaining-hourly"),
            (1000 - i).to_string()
        );
        // The burst window binds: it has less left.
        assert_eq!(reply.header("x-ratelimit-limit"), "100");
        assert_eq!(reply.header("x-ratelimit-remaining"), (100 - i).to_string());
        assert_eq!(
            reply.header("ratelimit-policy"),
            "\"burst\";q=100;w=60, \"hourly\";q=1000;w=3600"
        );
        let ratelimit = reply.header("ratelimit");
        assert!(
            ratelimit.starts_with(&format!("\"burst\";r={};t=", 100 - i)),
            "{ratelimit}"
        );
        let reset: u64 = reply.header("x-ratelimit-reset").parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            (now..=now + 61).contains(&reset),
            "reset {reset} is within a minute of {now}"
        );
    }
    let reply = stack.get_with_key("/v1/me", &secret).await;
    reply.assert_error(429, "rate_limited");
    let retry_after: u64 = reply.header("retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(reply.header("x-ratelimit-remaining-burst"), "0");
    assert_eq!(
        reply.header("x-ratelimit-remaining-hourly"),
        "900",
        "a refusal charges neither window"
    );
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("burst")
    );
}

#[tokio::test]
async fn without_an_upstream_other_paths_are_404_json_after_authentication() {
    let stack = Stack::start().await;
    let (secret, _) = stack.create_key(WS, USER).await;
    let reply = stack.get_with_key("/orders/42", &secret).await;
    reply.assert_error(404, "not_found");
    assert!(
        reply.has_rate_limit_headers(),
        "a quota decision was made, so the 404 reports it"
    );
    stack
        .call(Method::GET, "/orders/42", &[], Body::empty())
        .await
        .assert_error(401, "missing_api_key");
}

#[tokio::test]
async fn health_and_the_openapi_document_need_no_key() {
    let stack = Stack::start().await;
    let health = stack
        .call(Method::GET, "/healthz", &[], Body::empty())
        .await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    assert!(!health.header("x-request-id").is_empty());
    let doc = stack
        .call(Method::GET, "/openapi.json", &[], Body::empty())
        .await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.json()["openapi"], "3.1.0");
}

#[tokio::test]
async fn a_plain_client_request_id_is_kept_and_a_strange_one_replaced() {
    let stack = Stack::start().await;
    let reply = stack
        .call(
            Method::GET,
            "/v1/me",
            &[("x-request-id", "client-abc.123")],
            Body::empty(),
        )
        .await;
    assert_eq!(reply.header("x-request-id"), "client-abc.123");
    assert_eq!(reply.json()["error"]["request_id"], "client-abc.123");
    let reply = stack
        .call(
            Method::GET,
            "/v1/me",
            &[("x-request-id", "<script>")],
            Body::empty(),
        )
        .await;
    assert_eq!(reply.header("x-request-id").len(), 32);
    // A key pasted as the request id is replaced too: it would be logged and echoed.
    let (secret, _) = stack.create_key(WS, USER).await;
    let reply = stack
        .call(
            Method::GET,
            "/v1/me",
            &[("x-request-id", secret.as_str())],
            Body::empty(),
        )
        .await;
    assert_eq!(reply.header("x-request-id").len(), 32);
    assert!(!String::from_utf8_lossy(&reply.body).contains(&secret));
}

// ---------------------------------------------------------------- the upstream

#[tokio::test]
async fn the_upstream_gets_the_identity_and_never_the_credential() {
    let upstream = Upstream::start().await;
    let stack = Stack::start_with(Options {
        upstream: Some(upstream.url.clone()),
        ..Options::default()
    })
    .await;
    let (secret, key) = stack.create_key(WS, USER).await;
    let bearer = format!("Bearer {secret}");
    for credential in [("authorization", bearer.as_str()), ("x-api-key", &secret)] {
        let reply = stack
            .call(
                Method::POST,
                "/orders/42?expand=items",
                &[
                    credential,
                    ("x-stanna-user-id", "someone-else"),
                    ("X-Stanna-Workspace-Id", "ws-evil"),
                    ("x-stanna-admin", "true"),
                    ("x-forwarded-for", "203.0.113.9"),
                    ("x-forwarded-for", "198.51.100.7"),
                    ("forwarded", "for=203.0.113.9"),
                    ("x-real-ip", "10.9.9.9"),
                    ("connection", "keep-alive, x-drop-me"),
                    ("x-drop-me", "hop"),
                    ("x-custom", "kept"),
                ],
                "payload",
            )
            .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(reply.body, "hello from upstream");
        assert_eq!(reply.header("x-upstream"), "yes");
        assert!(
            reply.has_rate_limit_headers(),
            "upstream answers carry the headers"
        );
        let got = upstream.last();
        assert_eq!(got.method, Method::POST);
        assert_eq!(got.path_and_query, "/orders/42?expand=items");
        let h = &got.headers;
        assert!(h.get("authorization").is_none(), "credential forwarded");
        assert!(h.get("x-api-key").is_none(), "credential forwarded");
        for value in h.values() {
            assert!(
                !value
                    .as_bytes()
                    .windows(secret.len())
                    .any(|w| w == secret.as_bytes()),
                "the key reached the upstream in {h:?}"
            );
        }
        assert_eq!(h["x-stanna-workspace-id"], WS);
        assert_eq!(h["x-stanna-user-id"], USER);
        assert_eq!(h["x-stanna-key-id"], key.id.as_str());
        assert!(
            h.get("x-stanna-admin").is_none(),
            "client X-Stanna-* dropped"
        );
        assert_eq!(
            h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
            ["203.0.113.9, 198.51.100.7, 127.0.0.1"],
            "every line kept, the peer appended, one line"
        );
        let forwarded = h.get_all("forwarded").iter().collect::<Vec<_>>();
        assert_eq!(forwarded.len(), 1, "one Forwarded line: {forwarded:?}");
        let forwarded = forwarded[0].to_str().unwrap();
        assert!(
            forwarded.starts_with("for=203.0.113.9, for=127.0.0.1;proto=http;host=\"127.0.0.1:")
                && forwarded.ends_with('"'),
            "the client's RFC 7239 element kept, ours appended with the original host: {forwarded}"
        );
        assert_eq!(h["x-real-ip"], "127.0.0.1", "a client's X-Real-IP replaced");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert!(h.get("x-forwarded-host").is_some());
        assert!(h.get("x-drop-me").is_none(), "hop-by-hop header forwarded");
        assert_eq!(h["x-custom"], "kept");
    }
}

#[tokio::test]
async fn another_authorization_scheme_reaches_the_upstream_untouched() {
    let upstream = Upstream::start().await;
    let stack = Stack::start_with(Options {
        upstream: Some(upstream.url.clone()),
        ..Options::default()
    })
    .await;
    let (secret, _) = stack.create_key(WS, USER).await;
    let reply = stack
        .call(
            Method::GET,
            "/basic",
            &[("x-api-key", &secret), ("authorization", "Basic dTpw")],
            Body::empty(),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(upstream.last().headers["authorization"], "Basic dTpw");
}

#[tokio::test]
async fn the_upstreams_own_errors_pass_through_untouched() {
    let upstream = Upstream::start().await;
    let stack = Stack::start_with(Options {
        upstream: Some(upstream.url.clone()),
        ..Options::default()
    })
    .await;
    let (secret, _) = stack.create_key(WS, USER).await;
    for status in [413u16, 500] {
        let reply = stack
            .get_with_key(&format!("/status/{status}"), &secret)
            .await;
        assert_eq!(reply.status.as_u16(), status);
        assert_eq!(reply.body, "the upstream's own answer", "body intact");
        assert_eq!(reply.header("content-type"), "text/plain");
        assert!(reply.has_rate_limit_headers(), "a decision was made");
    }
}

#[tokio::test]
async fn two_different_keys_on_two_lines_of_one_header_are_ambiguous() {
    let stack = Stack::start().await;
    let (a, _) = stack.create_key(WS, USER).await;
    let (b, _) = stack.create_key(WS, USER).await;
    stack
        .call(
            Method::GET,
            "/v1/me",
            &[("x-api-key", &a), ("x-api-key", &b)],
            Body::empty(),
        )
        .await
        .assert_error(400, "ambiguous_api_key");
}

#[tokio::test]
async fn a_10_mib_upload_streams_through_intact() {
    let upstream = Upstream::start().await;
    let stack = Stack::start_with(Options {
        upstream: Some(upstream.url.clone()),
        ..Options::default()
    })
    .await;
    let (secret, _) = stack.create_key(WS, USER).await;
    let data: Vec<u8> = (0..crate::stack::TEN_MIB)
        .map(crate::stack::pattern)
        .collect();
    let expected = format!(
        "{}:{:x}",
        data.len(),
        crate::stack::fnv1a(crate::stack::FNV_START, &data)
    );
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(2);
    let started = upstream.upload_started.clone();
    let sender = tokio::spawn(async move {
        let mut chunks = data.chunks(256 * 1024);
        tx.send(Ok(Bytes::copy_from_slice(chunks.next().unwrap())))
            .await
            .unwrap();
        // The rest is sent only once the upstream holds the first chunk: a gateway that
        // buffered whole bodies would wait here forever.
        tokio::time::timeout(Duration::from_secs(20), started.notified())
            .await
            .expect("the upstream got the first chunk before the body was complete");
        for chunk in chunks {
            tx.send(Ok(Bytes::copy_from_slice(chunk))).await.unwrap();
        }
    });
    let bearer = format!("Bearer {secret}");
    let reply = stack
        .call(
            Method::POST,
            "/upload",
            &[("authorization", &bearer)],
            Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
        .await;
    sender.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(String::from_utf8_lossy(&reply.body), expected);
}

#[tokio::test]
async fn a_10_mib_download_streams_through_intact() {
    let upstream = Upstream::start().await;
    let stack = Stack::start_with(Options {
        upstream: Some(upstream.url.clone()),
        ..Options::default()
    })
    .await;
    let (secret, _) = stack.create_key(WS, USER).await;
    let request = http::Request::get(format!("{}/download", stack.url))
        .header("authorization", format!("Bearer {secret}"))
        .body(Body::empty())
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Body>();
    // The upstream holds back everything after its first chunk until we have read it: a
    // gateway that buffered whole responses would never answer.
    let response = tokio::time::timeout(Duration::from_secs(20), client.request(request))
        .await
        .expect("the response head arrived before the body was complete")
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let (mut len, mut hash) = (0usize, crate::stack::FNV_START);
    let mut continued = false;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            len += data.len();
            hash = crate::stack::fnv1a(hash, &data);
        }
        if !continued && len > 0 {
            continued = true;
            upstream.download_may_continue.notify_one();
        }
    }
    let data: Vec<u8> = (0..crate::stack::TEN_MIB)
        .map(crate::stack::pattern)
        .collect();
    assert_eq!(len, crate::stack::TEN_MIB);
    assert_eq!(hash, crate::stack::fnv1a(crate::stack::FNV_START, &data));
}

#[tokio::test]
async fn an_upstream_that_is_down_is_502() {
    let down = crate::stack::closed_port().await;
    let stack = Stack::start_with(Options {
        upstream: Some(format!("http://{down}")),
        ..Options::default()
    })
    .await;
    let (secret, _) = stack.create_key(WS, USER).await;
    let reply = stack.get_with_key("/anything", &secret).await;
    reply.assert_error(502, "bad_gateway");
    assert!(reply.has_rate_limit_headers());
}

#[tokio::test]
async fn a_slow_upstream_is_504_after_the_upstream_timeout() {
    let upstream = Upstream::start().await;
    let stack = Stack::start_with(Options {
        upstream: Some(upstream.url.clone()),
        upstream_timeout: Duration::from_millis(300),
        ..Options::default()
    })
    .await;
    let (secret, _) = stack.create_key(WS, USER).await;
    let start = Instant::now();
    let reply = stack.get_with_key("/slow", &secret).await;
    reply.assert_error(504, "gateway_timeout");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "504 before the upstream timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(10), "504 took {took:?}");
}

// ---------------------------------------------------------------- auth-check failing

#[tokio::test]
async fn unreachable_auth_check_is_503_at_once_and_recovers_without_a_restart() {
    let port = crate::stack::closed_port().await;
    // A verify timeout far above "at once": the 503 must come from the refused connection, not
    // from waiting out the deadline.
    let stack = Stack::start_with(Options {
        auth_check: Some(
            stanna_grpc::lazy_channel(&format!("http://{port}"))
                .unwrap()
                .into(),
        ),
        verify_timeout: Duration::from_secs(30),
        ..Options::default()
    })
    .await;
    let (secret, _) = stack.create_key(WS, USER).await;
    let start = Instant::now();
    let reply = stack.get_with_key("/v1/me", &secret).await;
    reply.assert_error(503, "unavailable");
    assert_eq!(reply.header("retry-after"), "1");
    reply.assert_no_rate_limit_headers();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "503 took {:?}",
        start.elapsed()
    );
    // auth-check comes up on that port: the same gateway recovers.
    let listener = tokio::net::TcpListener::bind(port).await.unwrap();
    tokio::spawn(stanna_auth_check::serve(
        stack.verifier.clone(),
        listener,
        std::future::pending(),
    ));
    eventually(Duration::from_secs(20), "recovery", || async {
        stack.get_with_key("/v1/me", &secret).await.status == 200
    })
    .await;
}

/// An AuthCheck that never answers in time.
struct SlowAuthCheck;

#[tonic::async_trait]
impl pb::auth_check_server::AuthCheck for SlowAuthCheck {
    async fn verify(
        &self,
        _: tonic::Request<pb::VerifyRequest>,
    ) -> Result<tonic::Response<pb::VerifyResponse>, tonic::Status> {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Err(tonic::Status::unavailable("too late"))
    }
}

#[tokio::test]
async fn a_verify_slower_than_the_verify_timeout_is_503_over_grpc_and_in_process() {
    let connections: [stanna_gateway::AuthCheckConnection; 2] = [
        // The gateway's one deadline (STANNA_VERIFY_TIMEOUT) covers both connections: over a
        // gRPC transport, as a split deployment calls auth-check ...
        stanna_grpc::in_memory(pb::auth_check_server::AuthCheckServer::new(SlowAuthCheck)).into(),
        // ... and called in process, as `stanna serve` does.
        stanna_grpc::Connection::InProcess(std::sync::Arc::new(SlowAuthCheck)),
    ];
    for connection in connections {
        let stack = Stack::start_with(Options {
            auth_check: Some(connection),
            verify_timeout: Duration::from_millis(300),
            ..Options::default()
        })
        .await;
        let (secret, _) = stack.create_key(WS, USER).await;
        let start = Instant::now();
        stack
            .get_with_key("/v1/me", &secret)
            .await
            .assert_error(503, "unavailable");
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}

/// A stack whose auth-check reaches for a quota service on a port with nothing behind it.
async fn stack_with_unreachable_quota(fail_mode: FailMode) -> Stack {
    let quota_port = crate::stack::closed_port().await;
    Stack::start_with(Options {
        quota: Some(
            stanna_grpc::lazy_channel(&format!("http://{quota_port}"))
                .unwrap()
                .into(),
        ),
        fail_mode,
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn verify_answering_unavailable_is_503_in_fail_closed_mode() {
    let stack = stack_with_unreachable_quota(FailMode::Closed).await;
    let (secret, _) = stack.create_key(WS, USER).await;
    let reply = stack.get_with_key("/v1/me", &secret).await;
    reply.assert_error(503, "unavailable");
    reply.assert_no_rate_limit_headers();
}

#[tokio::test]
async fn fail_open_allows_without_rate_limit_headers() {
    let stack = stack_with_unreachable_quota(FailMode::Open).await;
    let (secret, _) = stack.create_key(WS, USER).await;
    let reply = stack.get_with_key("/v1/me", &secret).await;
    assert_eq!(reply.status, 200);
    reply.assert_no_rate_limit_headers();
}

#[tokio::test]
async fn http2_without_tls_is_served() {
    let stack = Stack::start().await;
    let (secret, _) = stack.create_key(WS, USER).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Body>();
    let response = client
        .request(
            http::Request::get(format!("{}/v1/me", stack.url))
                .header("authorization", format!("Bearer {secret}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
}

/// The shutdown order: in-flight calls drain first, and while they do the background work goes
/// on — a key deleted during the drain is refused by the change poll, and `/metrics` answers —
/// then the system stops cleanly. (One stop for everything would end the poll and `/metrics` at
/// the signal, and the deleted key would keep verifying from the cache.)
#[tokio::test]
async fn during_the_drain_the_change_poll_and_metrics_keep_running() {
    let upstream = Upstream::start().await;
    let mut stack = Stack::start_with(Options {
        upstream: Some(upstream.url.clone()),
        ..Options::default()
    })
    .await;
    let (secret, key) = stack.create_key(WS, USER).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Body>();
    let request = http::Request::get(format!("{}/download", stack.url))
        .header("authorization", format!("Bearer {secret}"))
        .body(Body::empty())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(
        first.is_data(),
        "the first chunk arrived: the call is in flight"
    );

    stack.begin_stop();
    stack
        .admin()
        .delete_key(pb::DeleteKeyRequest {
            workspace_id: WS.into(),
            user_id: String::new(),
            key_id: key.id,
        })
        .await
        .unwrap();
    let verifier = stack.verifier.clone();
    eventually(
        Duration::from_secs(5),
        "the change poll refusing the key deleted during the drain",
        || async {
            let verdict = verifier.verify(&secret, "", 1).await.unwrap();
            verdict.code != stanna_auth_check::VerifyCode::Valid
        },
    )
    .await;
    let metrics = client
        .request(
            http::Request::get(&stack.metrics_url)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .expect("/metrics answers during the drain");
    assert_eq!(metrics.status(), 200);

    upstream.download_may_continue.notify_one();
    let mut len = first.into_data().unwrap().len();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame
            .expect("the in-flight download is not cut")
            .into_data()
        {
            len += data.len();
        }
    }
    assert_eq!(len, crate::stack::TEN_MIB, "the drained call completed");
    tokio::time::timeout(Duration::from_secs(10), stack.stopped())
        .await
        .expect("the system stops once the call drained")
        .expect("and stops cleanly");
}
