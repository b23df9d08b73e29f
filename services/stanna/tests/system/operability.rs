//! What an operator and a newcomer hit on day one (issue 10), in process: a key sent in the
//! wrong shape is named, not "missing"; names that cannot be read are refused; a rotated-out key
//! names its replacement and an expired key can be rotated; a short stale limit never turns a
//! healthy store into 503s; a gateway whose token the registry refuses says so in readiness;
//! every gRPC call is counted by method and code.

use std::time::Duration;

use axum::body::Body;
use base64::Engine as _;
use http::Method;
use stanna_proto::keys::v1 as pb;

use crate::stack::{ADMIN_TOKEN, Options, Stack, eventually, send};

const WS: &str = "ws-ops";
const USER: &str = "operator";

/// The message of an error answer.
fn message(reply: &crate::stack::Reply) -> String {
    reply.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_key_sent_in_the_wrong_shape_is_named_not_missing() {
    let stack = Stack::start().await;
    let (secret, _) = stack.create_key(WS, USER).await;
    let (other, _) = stack.create_key(WS, USER).await;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{secret}:"))
    );
    let token = format!("Token {secret}");
    let quoted = format!("Bearer \"{secret}\"");
    // (headers, status, error code, a phrase of the message)
    type Case<'a> = (&'a [(&'a str, &'a str)], u16, &'a str, &'a str);
    let cases: [Case; 5] = [
        (
            &[("authorization", token.as_str())],
            401,
            "malformed_api_key",
            "scheme must be Bearer",
        ),
        (
            &[("authorization", basic.as_str())],
            401,
            "malformed_api_key",
            "Basic user name",
        ),
        (
            &[("authorization", secret.as_str())],
            401,
            "malformed_api_key",
            "the word Bearer",
        ),
        (
            &[("authorization", quoted.as_str())],
            401,
            "malformed_api_key",
            "in quotes",
        ),
        (
            &[
                ("x-api-key", secret.as_str()),
                ("x-api-key", other.as_str()),
            ],
            400,
            "ambiguous_api_key",
            "two X-API-Key headers",
        ),
    ];
    for (headers, status, code, said) in cases {
        let reply = stack
            .call(Method::GET, "/v1/me", headers, Body::empty())
            .await;
        reply.assert_error(status, code);
        let text = message(&reply);
        assert!(text.contains(said), "{headers:?}: {text}");
        assert!(
            !text.contains(&secret[3..]),
            "the key is never in an error: {text}"
        );
    }
}

#[tokio::test]
async fn names_that_cannot_be_read_are_refused() {
    let stack = Stack::start().await;
    let (caller, _) = stack.create_key(WS, USER).await;
    for (name, said) in [
        ("\u{200b}\u{2060}\u{feff}", "visible character"),
        ("payroll\u{202e}txt.exe", "bidirectional"),
    ] {
        let body = serde_json::json!({ "name": name }).to_string();
        let reply = stack
            .json_with_key(Method::POST, "/v1/keys", &caller, &body)
            .await;
        reply.assert_error(400, "invalid_request");
        assert_eq!(reply.json()["error"]["field"], "name");
        assert!(message(&reply).contains(said), "{}", message(&reply));
    }
}

/// Rotation without grace: the old key stops at once with `expired_api_key` naming its
/// replacement, and is listed with `replacedBy`. Rotation answers 200 (it acts on an existing
/// key, like the other key actions; README §The REST key API says why).
#[tokio::test]
async fn a_rotated_out_key_names_its_replacement() {
    let stack = Stack::start().await;
    let (caller, _) = stack.create_key(WS, USER).await;
    let (old_secret, old) = stack.create_key(WS, USER).await;
    let rotated = stack
        .json_with_key(
            Method::POST,
            &format!("/v1/keys/{}/rotate", old.id),
            &caller,
            "",
        )
        .await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.body);
    let new_id = rotated.json()["key"]["id"].as_str().unwrap().to_owned();
    let refused = stack.get_with_key("/v1/me", &old_secret).await;
    refused.assert_error(401, "expired_api_key");
    assert!(
        message(&refused).contains(&new_id),
        "the message names the replacement: {}",
        message(&refused)
    );
    let listed = stack
        .get_with_key(&format!("/v1/keys/{}", old.id), &caller)
        .await;
    assert_eq!(listed.json()["replacedBy"], new_id.as_str());
}

/// An expired key can be rotated (README: "create or rotate"), as `GetKey` still shows it: the
/// replacement has no expiry and verifies.
#[tokio::test]
async fn an_expired_key_can_be_rotated() {
    let stack = Stack::start().await;
    let soon = std::time::SystemTime::now() + Duration::from_secs(60);
    let (old_secret, old) = stack.create_key_expiring(WS, USER, Some(soon)).await;
    stack.clock.advance(Duration::from_secs(120));
    stack
        .get_with_key("/v1/me", &old_secret)
        .await
        .assert_error(401, "expired_api_key");
    let rotated = stack
        .admin()
        .rotate_key(pb::RotateKeyRequest {
            workspace_id: WS.into(),
            key_id: old.id.clone(),
            ..Default::default()
        })
        .await
        .expect("an expired key is rotated")
        .into_inner();
    assert_eq!(rotated.key.as_ref().unwrap().expires_at, None);
    assert_eq!(
        stack.get_with_key("/v1/me", &rotated.secret).await.status,
        200
    );
}

/// A stale limit at or under the poll interval (here 0 s, polls every 10 ms) must never refuse a
/// cached key while the store answers: the limit counts from the first failed poll, not from the
/// last success.
#[tokio::test]
async fn a_zero_stale_limit_never_refuses_while_the_store_is_healthy() {
    let stack = Stack::start_with(Options {
        tune: Some(|settings| {
            settings.auth_check.stale_if_error = stanna_config::DurationArg(Duration::ZERO);
            settings.auth_check.change_poll_interval =
                stanna_config::DurationArg(Duration::from_millis(10));
        }),
        ..Options::default()
    })
    .await;
    let (secret, _) = stack.create_key(WS, USER).await;
    for n in 0..60 {
        let reply = stack.get_with_key("/v1/me", &secret).await;
        assert_eq!(reply.status, 200, "request {n}: {:?}", reply.body);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A registry that refuses the gateway's token (restarted with another one): REST calls
/// are 503, not 500, and `/readyz` says why; the public path still works.
#[tokio::test]
async fn a_refused_gateway_token_is_503_and_readiness_says_why() {
    let dir = stanna_testkit::TempDir::new();
    let mut settings = stanna::Settings::for_tests(dir.sqlite_url(), "another-token-0123456789");
    settings.service = Some(stanna::ServiceName::Registry);
    let listeners = stanna::Listeners::bind(&settings).await.unwrap();
    let other = format!("http://{}", listeners.registry_addr().unwrap());
    let registry = stanna::System::build(settings, stanna::Overrides::default())
        .await
        .unwrap();
    tokio::spawn(registry.serve(listeners, std::future::pending()));
    let stack = Stack::start_with(Options {
        registry: Some(stanna_grpc::lazy_channel(&other).unwrap()),
        ..Options::default()
    })
    .await;
    let (secret, _) = stack.create_key(WS, USER).await;
    stack
        .get_with_key("/v1/keys", &secret)
        .await
        .assert_error(503, "unavailable");
    assert_eq!(stack.get_with_key("/v1/me", &secret).await.status, 200);
    let ready = stack.call(Method::GET, "/readyz", &[], Body::empty()).await;
    assert_eq!(ready.status, 503, "{:?}", ready.body);
    let reasons = ready.json()["reasons"].to_string();
    assert!(reasons.contains("STANNA_GATEWAY_TOKEN"), "{reasons}");
    assert!(!reasons.contains(ADMIN_TOKEN), "no token in the answer");
}

#[tokio::test]
async fn a_healthy_stack_is_ready() {
    let stack = Stack::start().await;
    eventually(Duration::from_secs(5), "readiness", || async {
        let ready = stack.call(Method::GET, "/readyz", &[], Body::empty()).await;
        ready.status == 200 && ready.json()["status"] == "ready"
    })
    .await;
}

/// Every gRPC call served on a socket is counted by method and status code.
#[tokio::test]
async fn grpc_calls_are_counted_by_method_and_code() {
    let stack = Stack::start().await;
    let mut admin = pb::key_registry_client::KeyRegistryClient::new(
        stanna_grpc::lazy_channel(&stack.registry_url).unwrap(),
    );
    let mut list = tonic::Request::new(pb::ListKeysRequest {
        workspace_id: WS.into(),
        ..Default::default()
    });
    list.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN_TOKEN}").parse().unwrap(),
    );
    admin.list_keys(list).await.unwrap();
    let refused = admin
        .list_keys(pb::ListKeysRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let scraped = send(
        http::Request::get(&stack.metrics_url)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let text = String::from_utf8_lossy(&scraped.body).into_owned();
    for line in [
        r#"stanna_grpc_requests_total{method="/stanna.keys.v1.KeyRegistry/ListKeys",code="OK"} 1"#,
        r#"stanna_grpc_requests_total{method="/stanna.keys.v1.KeyRegistry/ListKeys",code="UNAUTHENTICATED"} 1"#,
        r#"stanna_grpc_request_duration_seconds_count{method="/stanna.keys.v1.KeyRegistry/ListKeys"} 2"#,
    ] {
        assert!(text.contains(line), "{line} not in:\n{text}");
    }
}
