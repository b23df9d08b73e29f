//! Dashboard sign-in and sessions over HTTP, as a browser and an attacker would send them: every
//! kind of bad login token refused with its reason, the cookie, CSRF, sign-out and revocation
//! everywhere within a second, who sees whose keys, the headers, the cookie kept from the
//! upstream, and no secret in any answer but create and rotate.

use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use http::Method;
use stanna::settings::TEST_SESSION_SECRET;
use stanna_keys::login::{Claims, DEFAULT_AUDIENCE, claims_now, mint_hs256};
use stanna_proto::keys::v1 as pb;

use crate::stack::{Options, Reply, Stack, Upstream};

const ORIGIN: &str = "http://localhost:8080";

/// Claims for `user` in `workspace` at the stack's "now".
pub(crate) fn claims(stack: &Stack, workspace: &str, user: &str) -> Claims {
    claims_now(
        workspace,
        user,
        DEFAULT_AUDIENCE,
        (stack.clock.as_clock())(),
    )
}

fn mint(claims: &Claims) -> String {
    mint_hs256(TEST_SESSION_SECRET.as_bytes(), claims).unwrap()
}

/// `POST /settings/api-keys/session` as the interstitial's button sends it.
async fn post_token(stack: &Stack, token: &str, origin: &str) -> Reply {
    let body = format!("token={}", url_encode(token));
    stack
        .call(
            Method::POST,
            "/settings/api-keys/session",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("origin", origin),
            ],
            body,
        )
        .await
}

fn url_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Signs in with `claims`; the session token from the cookie.
pub(crate) async fn sign_in(stack: &Stack, claims: &Claims) -> String {
    let reply = post_token(stack, &mint(claims), ORIGIN).await;
    assert_eq!(
        reply.status,
        303,
        "{:?}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.header("location"), "/settings/api-keys");
    let cookie = reply.header("set-cookie");
    for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.contains(part), "{part} missing: {cookie}");
    }
    assert!(reply.body.is_empty(), "the sign-in answer has no body");
    let token = cookie
        .strip_prefix("stanna_session=")
        .and_then(|rest| rest.split(';').next())
        .expect("the session cookie")
        .to_owned();
    assert!(token.starts_with("ss-"), "{token}");
    token
}

/// A cookie call: GET, or a state-changing call with JSON, the origin and the CSRF token.
pub(crate) async fn with_session(
    stack: &Stack,
    session: &str,
    method: Method,
    path: &str,
    body: Option<&str>,
) -> Reply {
    let cookie = format!("theme=dark; stanna_session={session}");
    if method == Method::GET {
        return stack
            .call(method, path, &[("cookie", &cookie)], Body::empty())
            .await;
    }
    let me = stack
        .call(Method::GET, "/v1/me", &[("cookie", &cookie)], Body::empty())
        .await;
    let csrf = me.json()["csrfToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    stack
        .call(
            method,
            path,
            &[
                ("cookie", &cookie),
                ("content-type", "application/json"),
                ("origin", ORIGIN),
                ("x-csrf-token", &csrf),
            ],
            body.unwrap_or("{}").to_owned(),
        )
        .await
}

/// Polls `/v1/me` with `session` until it is `status`, at most `cap`; how long it took.
async fn session_becomes(stack: &Stack, session: &str, status: u16, cap: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let reply = with_session(stack, session, Method::GET, "/v1/me", None).await;
        if reply.status == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < cap,
            "still {} after {cap:?}: {:?}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_bad_login_token_is_refused_with_its_reason() {
    let stack = Stack::start().await;
    let good = claims(&stack, "ws_a", "auth0|alice");
    let now = (stack.clock.as_clock())();
    let epoch = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let none_alg = {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&serde_json::to_string(&good).unwrap())
        )
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", none_alg, "algorithm (none) is not accepted"),
        (
            "another secret",
            mint_hs256(b"another-secret-of-at-least-32-bytes!", &good).unwrap(),
            "signature is wrong",
        ),
        (
            "expired",
            mint(&Claims {
                iat: Some(epoch(now) - 600),
                exp: Some(epoch(now) - 300),
                ..good.clone()
            }),
            "has expired",
        ),
        (
            "too long-lived",
            mint(&Claims {
                exp: Some(epoch(now) + 3600),
                ..good.clone()
            }),
            "at most 300 seconds",
        ),
        (
            "another audience",
            mint(&Claims {
                aud: Some("another-app".into()),
                ..good.clone()
            }),
            "another audience",
        ),
        (
            "no jti",
            mint(&Claims {
                jti: None,
                ..good.clone()
            }),
            "lacks the jti claim",
        ),
        (
            "no workspace",
            mint(&Claims {
                workspace_id: None,
                ..good.clone()
            }),
            "lacks the workspace_id claim",
        ),
        (
            "a user id with a space",
            mint(&Claims {
                sub: Some("alice smith".into()),
                ..good.clone()
            }),
            "sub claim must be 1 to 255 printable ASCII",
        ),
        ("not a JWT", "hello".to_owned(), "not a JWT"),
    ];
    for (what, token, says) in cases {
        for reply in [
            stack
                .call(
                    Method::GET,
                    &format!("/settings/api-keys/session?token={}", url_encode(&token)),
                    &[],
                    Body::empty(),
                )
                .await,
            post_token(&stack, &token, ORIGIN).await,
        ] {
            let page = String::from_utf8_lossy(&reply.body).into_owned();
            assert_eq!(reply.status, 400, "{what}: {page}");
            assert!(page.contains(says), "{what}: {page}");
            assert!(
                reply.headers.get("set-cookie").is_none(),
                "{what}: no cookie"
            );
            if token.len() > 10 {
                assert!(!page.contains(&token), "{what}: the token is echoed");
            }
        }
    }

    // A good token works once: the interstitial does not spend it, the POST does.
    let token = mint(&good);
    for _ in 0..2 {
        let interstitial = stack
            .call(
                Method::GET,
                &format!("/settings/api-keys/session?token={}", url_encode(&token)),
                &[],
                Body::empty(),
            )
            .await;
        assert_eq!(interstitial.status, 200);
        let page = String::from_utf8_lossy(&interstitial.body).into_owned();
        assert!(page.contains("Continue as auth0|alice in ws_a"), "{page}");
        assert!(page.contains("method=\"post\""), "{page}");
    }
    assert_eq!(post_token(&stack, &token, ORIGIN).await.status, 303);
    let replay = post_token(&stack, &token, ORIGIN).await;
    assert_eq!(replay.status, 409);
    assert!(String::from_utf8_lossy(&replay.body).contains("used already"));
    // From another site: refused before the token is even looked at (and not spent).
    let fresh = mint(&claims(&stack, "ws_a", "auth0|alice"));
    assert_eq!(
        post_token(&stack, &fresh, "http://127.0.0.1:8080")
            .await
            .status,
        403
    );
    assert_eq!(post_token(&stack, &fresh, ORIGIN).await.status, 303);
}

#[tokio::test]
async fn an_issuer_is_checked_when_configured() {
    let stack = Stack::start_with(Options {
        tune: Some(|s| s.session.session_issuer = Some("https://product.example".into())),
        ..Options::default()
    })
    .await;
    let mut wrong = claims(&stack, "ws_a", "u1");
    wrong.iss = Some("https://evil.example".into());
    let reply = post_token(&stack, &mint(&wrong), ORIGIN).await;
    assert_eq!(reply.status, 400);
    assert!(String::from_utf8_lossy(&reply.body).contains("another issuer"));
    let mut right = claims(&stack, "ws_a", "u1");
    right.iss = Some("https://product.example".into());
    sign_in(&stack, &right).await;
}

#[tokio::test]
async fn a_session_is_the_key_api_as_its_user_and_nothing_else() {
    let upstream = Upstream::start().await;
    let stack = Stack::start_with(Options {
        upstream: Some(upstream.url.clone()),
        ..Options::default()
    })
    .await;
    let mut alice_claims = claims(&stack, "ws_a", "auth0|alice");
    alice_claims.name = Some("Alice".into());
    alice_claims.email = Some("alice@example.com".into());
    let alice = sign_in(&stack, &alice_claims).await;

    let me = with_session(&stack, &alice, Method::GET, "/v1/me", None).await;
    assert_eq!(me.status, 200);
    let json = me.json();
    assert_eq!(json["credential"], "session");
    assert_eq!(json["userId"], "auth0|alice");
    assert_eq!(json["workspaceId"], "ws_a");
    assert_eq!(json["role"], "member");
    assert_eq!(json["displayName"], "Alice");
    assert_eq!(json["email"], "alice@example.com");
    assert!(json.get("keyId").is_none());
    assert!(
        me.has_rate_limit_headers(),
        "sessions are rate limited like keys"
    );
    assert!(
        !String::from_utf8_lossy(&me.body).contains(&alice),
        "no session token in /v1/me"
    );
    assert_eq!(me.header("cache-control"), "no-store");

    // Create through the session: the secret only in that answer.
    let created = with_session(
        &stack,
        &alice,
        Method::POST,
        "/v1/keys",
        Some(r#"{"name":"From the dashboard"}"#),
    )
    .await;
    assert_eq!(created.status, 201, "{:?}", created.json());
    let secret = created.json()["secret"].as_str().unwrap().to_owned();
    let id = created.json()["key"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created.json()["key"]["userId"], "auth0|alice");
    for path in [
        "/v1/keys".to_owned(),
        format!("/v1/keys/{id}"),
        "/v1/me".to_owned(),
    ] {
        let reply = with_session(&stack, &alice, Method::GET, &path, None).await;
        assert_eq!(reply.status, 200, "{path}");
        let text = String::from_utf8_lossy(&reply.body);
        assert!(!text.contains(&secret[15..]), "{path} holds the secret");
    }

    // The proxied upstream: never through a session, and the cookie never reaches it.
    let proxied = stack
        .call(
            Method::GET,
            "/anything",
            &[(
                "cookie",
                &format!("theme=dark; stanna_session={alice}; lang=en"),
            )],
            Body::empty(),
        )
        .await;
    proxied.assert_error(401, "missing_api_key");
    let with_key = stack
        .call(
            Method::GET,
            "/record/me",
            &[
                ("authorization", &format!("Bearer {secret}")),
                (
                    "cookie",
                    &format!("theme=dark; stanna_session={alice}; lang=en"),
                ),
            ],
            Body::empty(),
        )
        .await;
    assert_eq!(with_key.status, 200);
    let received = upstream.last();
    let cookies: Vec<_> = received.headers.get_all("cookie").iter().collect();
    assert_eq!(
        cookies,
        ["theme=dark; lang=en"],
        "only the other cookies travel"
    );
    // Paths under /v1/keys that are no route of the key API are the upstream's: the cookie
    // counts there no more than anywhere else.
    let before = upstream.received.lock().unwrap().len();
    for path in ["/v1/keys/", "/v1/keys/AbC/x", "/v1/keys/AbC/rotate/x"] {
        let reply = with_session(&stack, &alice, Method::GET, path, None).await;
        reply.assert_error(401, "missing_api_key");
    }
    assert_eq!(
        upstream.received.lock().unwrap().len(),
        before,
        "nothing reached the upstream"
    );

    // Bob (same workspace, member) and Carol (another workspace) see 404 for Alice's key.
    let bob = sign_in(&stack, &claims(&stack, "ws_a", "bob")).await;
    let carol = sign_in(&stack, &claims(&stack, "ws_b", "auth0|alice")).await;
    for (who, session) in [("bob", &bob), ("carol", &carol)] {
        let path = format!("/v1/keys/{id}");
        with_session(&stack, session, Method::GET, &path, None)
            .await
            .assert_error(404, "not_found");
        with_session(&stack, session, Method::DELETE, &path, None)
            .await
            .assert_error(404, "not_found");
        with_session(
            &stack,
            session,
            Method::PATCH,
            &path,
            Some(r#"{"status":"KEY_STATUS_INACTIVE"}"#),
        )
        .await
        .assert_error(404, "not_found");
        let list = with_session(&stack, session, Method::GET, "/v1/keys", None).await;
        assert_eq!(list.json()["keys"].as_array().unwrap().len(), 0, "{who}");
    }

    // A workspace admin sees Alice's key, deactivates and deletes it; cannot rename it.
    let mut admin_claims = claims(&stack, "ws_a", "admin@example.com");
    admin_claims.role = Some("admin".into());
    let admin = sign_in(&stack, &admin_claims).await;
    let list = with_session(&stack, &admin, Method::GET, "/v1/keys", None).await;
    let keys = list.json()["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["userId"], "auth0|alice");
    let path = format!("/v1/keys/{id}");
    with_session(
        &stack,
        &admin,
        Method::PATCH,
        &path,
        Some(r#"{"name":"mine now"}"#),
    )
    .await
    .assert_error(404, "not_found");
    let off = with_session(
        &stack,
        &admin,
        Method::PATCH,
        &path,
        Some(r#"{"status":"KEY_STATUS_INACTIVE"}"#),
    )
    .await;
    assert_eq!(off.status, 200);
    assert_eq!(off.json()["status"], "KEY_STATUS_INACTIVE");
    // Turning it back on is the owner's call, not the admin's.
    with_session(
        &stack,
        &admin,
        Method::PATCH,
        &path,
        Some(r#"{"status":"KEY_STATUS_ACTIVE"}"#),
    )
    .await
    .assert_error(404, "not_found");
    assert_eq!(
        with_session(&stack, &admin, Method::DELETE, &path, None)
            .await
            .status,
        204
    );
}

#[tokio::test]
async fn cookie_calls_that_change_state_need_json_same_origin_and_the_csrf_token() {
    let stack = Stack::start().await;
    let session = sign_in(&stack, &claims(&stack, "ws_a", "u1")).await;
    let cookie = format!("stanna_session={session}");
    let me = stack
        .call(Method::GET, "/v1/me", &[("cookie", &cookie)], Body::empty())
        .await;
    let csrf = me.json()["csrfToken"].as_str().unwrap().to_owned();
    let body = r#"{"name":"k"}"#;
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: [Case; 5] = [
        (
            "a cross-site form",
            vec![
                ("content-type", "application/x-www-form-urlencoded"),
                ("origin", "https://evil.example"),
            ],
            "Content-Type",
        ),
        (
            "JSON from another origin",
            vec![
                ("content-type", "application/json"),
                ("origin", "https://evil.example"),
                ("x-csrf-token", &csrf),
            ],
            "another origin",
        ),
        (
            "no origin at all",
            vec![
                ("content-type", "application/json"),
                ("x-csrf-token", &csrf),
            ],
            "neither a same-origin Origin",
        ),
        (
            "no CSRF token",
            vec![("content-type", "application/json"), ("origin", ORIGIN)],
            "X-CSRF-Token",
        ),
        (
            "another session's token",
            vec![
                ("content-type", "application/json"),
                ("origin", ORIGIN),
                ("x-csrf-token", "00112233445566778899aabbccddeeff"),
            ],
            "X-CSRF-Token",
        ),
    ];
    for (what, headers, says) in cases {
        let mut headers = headers.clone();
        headers.push(("cookie", &cookie));
        let reply = stack
            .call(Method::POST, "/v1/keys", &headers, body.to_owned())
            .await;
        reply.assert_error(403, "csrf_failed");
        assert!(
            reply.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains(says),
            "{what}: {:?}",
            reply.json()
        );
    }
    let list = with_session(&stack, &session, Method::GET, "/v1/keys", None).await;
    assert_eq!(
        list.json()["keys"].as_array().unwrap().len(),
        0,
        "nothing was created"
    );
    // Sec-Fetch-Site: same-origin stands in for an Origin of "null" (our no-referrer policy).
    let reply = stack
        .call(
            Method::POST,
            "/v1/keys",
            &[
                ("cookie", &cookie),
                ("content-type", "application/json"),
                ("origin", "null"),
                ("sec-fetch-site", "same-origin"),
                ("x-csrf-token", &csrf),
            ],
            body.to_owned(),
        )
        .await;
    assert_eq!(reply.status, 201);
    // An API key needs none of it (it is not ambient authority).
    let (key, _) = stack.create_key("ws_a", "u1").await;
    let reply = stack
        .json_with_key(Method::POST, "/v1/keys", &key, body)
        .await;
    assert_eq!(reply.status, 201);
}

#[tokio::test]
async fn sign_out_and_revocation_end_sessions_within_a_second() {
    let stack = Stack::start().await;
    let first = sign_in(&stack, &claims(&stack, "ws_a", "u1")).await;
    let second = sign_in(&stack, &claims(&stack, "ws_a", "u1")).await;
    let other = sign_in(&stack, &claims(&stack, "ws_a", "u2")).await;
    for session in [&first, &second, &other] {
        assert_eq!(
            with_session(&stack, session, Method::GET, "/v1/me", None)
                .await
                .status,
            200
        );
    }
    // Sign-out: CSRF-checked like any cookie call, then the cookie is removed.
    let forged = stack
        .call(
            Method::POST,
            "/settings/api-keys/sign-out",
            &[("cookie", &format!("stanna_session={first}"))],
            Body::empty(),
        )
        .await;
    forged.assert_error(403, "csrf_failed");
    let out = with_session(
        &stack,
        &first,
        Method::POST,
        "/settings/api-keys/sign-out",
        None,
    )
    .await;
    assert_eq!(out.status, 204);
    assert!(out.header("set-cookie").contains("Max-Age=0"));
    let took = session_becomes(&stack, &first, 401, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(1), "signed out after {took:?}");
    with_session(&stack, &first, Method::GET, "/v1/me", None)
        .await
        .assert_error(401, "invalid_session");
    assert_eq!(
        with_session(&stack, &second, Method::GET, "/v1/me", None)
            .await
            .status,
        200,
        "the user's other session is untouched"
    );

    // RevokeSessions (admin, grpc): every session of the user, within a second.
    let revoked = stack
        .admin()
        .revoke_sessions(pb::RevokeSessionsRequest {
            workspace_id: "ws_a".into(),
            user_id: "u1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.revoked, 1);
    let took = session_becomes(&stack, &second, 401, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(1), "revoked after {took:?}");
    assert_eq!(
        with_session(&stack, &other, Method::GET, "/v1/me", None)
            .await
            .status,
        200
    );
    // A whole workspace.
    stack
        .admin()
        .revoke_sessions(pb::RevokeSessionsRequest {
            workspace_id: "ws_a".into(),
            user_id: String::new(),
        })
        .await
        .unwrap();
    session_becomes(&stack, &other, 401, Duration::from_secs(5)).await;

    // Past STANNA_SESSION_TTL a session ends by itself.
    let late = sign_in(&stack, &claims(&stack, "ws_a", "u3")).await;
    stack.clock.advance(Duration::from_secs(12 * 3600 + 1));
    let reply = with_session(&stack, &late, Method::GET, "/v1/me", None).await;
    reply.assert_error(401, "invalid_session");
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
}

#[tokio::test]
async fn sessions_are_rate_limited_per_user_with_the_same_headers() {
    let stack = Stack::start_with(Options {
        tune: Some(|s| s.auth_check.session_rate_limit_burst = "3/60s".parse().unwrap()),
        ..Options::default()
    })
    .await;
    let one = sign_in(&stack, &claims(&stack, "ws_a", "u1")).await;
    let two = sign_in(&stack, &claims(&stack, "ws_a", "u1")).await;
    for session in [&one, &two, &one] {
        let reply = with_session(&stack, session, Method::GET, "/v1/keys", None).await;
        assert_eq!(reply.status, 200);
    }
    let limited = with_session(&stack, &two, Method::GET, "/v1/keys", None).await;
    limited.assert_error(429, "rate_limited");
    assert!(limited.has_rate_limit_headers());
    assert!(!limited.header("retry-after").is_empty());
    let other_user = sign_in(&stack, &claims(&stack, "ws_a", "u2")).await;
    assert_eq!(
        with_session(&stack, &other_user, Method::GET, "/v1/keys", None)
            .await
            .status,
        200,
        "per user"
    );
}

#[tokio::test]
async fn the_dashboard_answers_with_its_protective_headers_and_is_never_proxied() {
    let upstream = Upstream::start().await;
    let stack = Stack::start_with(Options {
        upstream: Some(upstream.url.clone()),
        ..Options::default()
    })
    .await;
    for (path, kind) in [
        ("/settings/api-keys", "text/html"),
        ("/settings/api-keys/app.js", "text/javascript"),
        ("/settings/api-keys/app.css", "text/css"),
    ] {
        let reply = stack.call(Method::GET, path, &[], Body::empty()).await;
        assert_eq!(reply.status, 200, "{path}");
        assert!(reply.header("content-type").starts_with(kind), "{path}");
        let csp = reply.header("content-security-policy");
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(reply.header("x-content-type-options"), "nosniff");
        assert_eq!(reply.header("referrer-policy"), "no-referrer");
        assert_eq!(reply.header("cache-control"), "no-store");
        assert_eq!(reply.header("x-frame-options"), "DENY");
    }
    let page = stack
        .call(Method::GET, "/settings/api-keys", &[], Body::empty())
        .await;
    let html = String::from_utf8_lossy(&page.body);
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "no inline script or style"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing external"
    );
    // Reserved: an unknown dashboard path is ours (404), never the upstream's.
    let before = upstream.received.lock().unwrap().len();
    let reply = stack
        .call(
            Method::GET,
            "/settings/api-keys/whatever",
            &[],
            Body::empty(),
        )
        .await;
    reply.assert_error(404, "not_found");
    assert_eq!(upstream.received.lock().unwrap().len(), before);
}

#[tokio::test]
async fn product_user_ids_work_everywhere() {
    let stack = Stack::start().await;
    for user in ["auth0|123", "alice@example.com", "google-oauth2|1077{x}:y"] {
        let (secret, key) = stack.create_key("ws_a", user).await;
        assert_eq!(key.user_id, user);
        let me = stack.get_with_key("/v1/me", &secret).await;
        assert_eq!(me.json()["userId"], user);
        let session = sign_in(&stack, &claims(&stack, "ws_a", user)).await;
        let list = with_session(&stack, &session, Method::GET, "/v1/keys", None).await;
        assert_eq!(list.json()["keys"][0]["id"], key.id.as_str(), "{user}");
    }
    let refused = stack
        .admin()
        .create_key(pb::CreateKeyRequest {
            workspace_id: "ws_a".into(),
            user_id: "has space".into(),
            name: "n".into(),
            expires_at: None,
            rate_limits: Vec::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("255 printable ASCII"),
        "{}",
        refused.message()
    );
}

#[tokio::test]
async fn a_dashboard_listener_of_its_own_keeps_the_cookie_off_the_public_one() {
    let upstream = Upstream::start().await;
    let stack = Stack::start_with(Options {
        upstream: Some(upstream.url.clone()),
        tune: Some(|s| s.gateway.dashboard_addr = Some("127.0.0.1:0".parse().unwrap())),
        ..Options::default()
    })
    .await;
    let dashboard = stack.dashboard_url.clone().expect("a dashboard listener");
    let at = |base: &str, path: &str| format!("{base}{path}");
    let get = |url: String, headers: Vec<(&'static str, String)>| async move {
        let mut request = http::Request::get(url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        crate::stack::send(request.body(Body::empty()).unwrap()).await
    };
    // The public listener: no dashboard, and the cookie is no credential there.
    get(at(&stack.url, "/settings/api-keys"), vec![])
        .await
        .assert_error(404, "not_found");
    // Sign in on the dashboard's listener.
    let token = mint(&claims(&stack, "ws_a", "u1"));
    let form = format!("token={}", url_encode(&token));
    let signed_in = crate::stack::send(
        http::Request::post(at(&dashboard, "/settings/api-keys/session"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", ORIGIN)
            .body(Body::from(form))
            .unwrap(),
    )
    .await;
    assert_eq!(signed_in.status, 303);
    let cookie = signed_in
        .header("set-cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let me = get(at(&dashboard, "/v1/me"), vec![("cookie", cookie.clone())]).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["credential"], "session");
    get(at(&stack.url, "/v1/me"), vec![("cookie", cookie.clone())])
        .await
        .assert_error(401, "missing_api_key");
    // The dashboard's listener proxies nothing; API keys work on both.
    let (key, _) = stack.create_key("ws_a", "u1").await;
    let bearer = format!("Bearer {key}");
    get(
        at(&dashboard, "/anything"),
        vec![("authorization", bearer.clone())],
    )
    .await
    .assert_error(404, "not_found");
    assert_eq!(
        get(
            at(&dashboard, "/v1/me"),
            vec![("authorization", bearer.clone())]
        )
        .await
        .status,
        200
    );
    assert_eq!(
        get(at(&stack.url, "/record/x"), vec![("authorization", bearer)])
            .await
            .status,
        200
    );
}
