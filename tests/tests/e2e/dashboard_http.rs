//! Dashboard sign-in across split-mode processes, over HTTP: the README's PyJWT example run as
//! written mints the token; a login token works once across two gateways (each with its own
//! registry and auth-check on one store); sign-out and `RevokeSessions` end a session at every
//! gateway within a second.

use std::time::{Duration, Instant};

use http::Method;
use stanna_e2e::{SESSION_SECRET, free_port, grpcurl, grpcurl_json};
use stanna_testkit::TempDir;

use crate::gateway_split::{start_auth_check, start_gateway, start_quota, start_registry};
use crate::http::request;

const TEST: &str = "a_login_token_works_once_and_sessions_end_everywhere";
const TOKEN: &str = "split-gateway-token-0123456789";

/// The README's Python block under "Signing your users in", run as written with the secret and
/// public URL in the environment; the link it prints.
pub(crate) fn readme_python_link(public_url: &str) -> String {
    let section = stanna_e2e::readme_section("### Signing your users in");
    let script = section
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a python block");
    let output = std::process::Command::new("python3")
        .args(["-c", script])
        .env("STANNA_SESSION_SECRET", SESSION_SECRET)
        .env("STANNA_PUBLIC_URL", public_url)
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "the README's Python example failed (is PyJWT installed?): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn url_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Posts the login token to a gateway as the interstitial's button does.
pub(crate) async fn post_token(gateway: u16, token: &str) -> (u16, String) {
    let origin = format!("http://localhost:{gateway}");
    let (status, headers, _) = request(
        Method::POST,
        &format!("http://127.0.0.1:{gateway}/settings/api-keys/session"),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", &origin),
        ],
        &format!("token={}", url_encode(token)),
    )
    .await;
    let cookie = headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .to_owned();
    (status, cookie)
}

async fn me(gateway: u16, cookie: &str) -> u16 {
    request(
        Method::GET,
        &format!("http://127.0.0.1:{gateway}/v1/me"),
        &[("cookie", cookie)],
        "",
    )
    .await
    .0
}

/// Waits until `cookie` is refused at every gateway; how long that took.
async fn refused_everywhere(gateways: &[u16], cookie: &str) -> Duration {
    let started = Instant::now();
    for gateway in gateways {
        while me(*gateway, cookie).await != 401 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the session still works at gateway {gateway}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_token_works_once_and_sessions_end_everywhere() {
    let Some(grpcurl) = grpcurl(TEST) else {
        return;
    };
    let dir = TempDir::new();
    let store = stanna_e2e::SharedStore::for_test(&dir, TEST);
    let db = store.url();
    let quota = free_port();
    let [registry_a, registry_b, auth_a, auth_b, gateway_a, gateway_b] =
        [(); 6].map(|()| free_port());
    let _quota = start_quota(&dir, quota, None);
    let _ra = start_registry(&dir, registry_a, &db);
    let _rb = start_registry(&dir, registry_b, &db);
    let _aa = start_auth_check(&dir, auth_a, &db, quota);
    let _ab = start_auth_check(&dir, auth_b, &db, quota);
    let _ga = start_gateway(&dir, gateway_a, auth_a, registry_a);
    let _gb = start_gateway(&dir, gateway_b, auth_b, registry_b);
    let gateways = [gateway_a, gateway_b];

    // The product's link (the README's Python), opened at gateway A.
    let link = readme_python_link(&format!("http://localhost:{gateway_a}"));
    let token = link
        .split_once("token=")
        .map(|(_, t)| t.to_owned())
        .expect("a token in the link");
    let (status, _, page) = request(
        Method::GET,
        &link.replace("localhost", "127.0.0.1"),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200);
    let page = String::from_utf8_lossy(&page);
    assert!(page.contains("Continue as Alice in ws_demo"), "{page}");

    // Spent at gateway A; refused at gateway B (another registry, the same store).
    let (status, cookie) = post_token(gateway_a, &token).await;
    assert_eq!(status, 303);
    assert!(cookie.starts_with("stanna_session=ss-"), "{cookie}");
    let (replay, none) = post_token(gateway_b, &token).await;
    assert_eq!(replay, 409, "a replay at another gateway");
    assert!(none.is_empty());

    // The session works at both gateways; sign-out at A ends it at both within a second.
    for gateway in gateways {
        assert_eq!(me(gateway, &cookie).await, 200);
    }
    let (_, _, me_body) = request(
        Method::GET,
        &format!("http://127.0.0.1:{gateway_a}/v1/me"),
        &[("cookie", &cookie)],
        "",
    )
    .await;
    let me_json: serde_json::Value = serde_json::from_slice(&me_body).unwrap();
    let csrf = me_json["csrfToken"].as_str().unwrap().to_owned();
    let origin = format!("http://localhost:{gateway_a}");
    let (out, _, _) = request(
        Method::POST,
        &format!("http://127.0.0.1:{gateway_a}/settings/api-keys/sign-out"),
        &[
            ("cookie", &cookie),
            ("content-type", "application/json"),
            ("origin", &origin),
            ("x-csrf-token", &csrf),
        ],
        "{}",
    )
    .await;
    assert_eq!(out, 204);
    let took = refused_everywhere(&gateways, &cookie).await;
    assert!(
        took < Duration::from_secs(1),
        "signed out everywhere after {took:?}"
    );

    // RevokeSessions at registry B ends a session made at gateway A, at both, within a second.
    let link = readme_python_link(&format!("http://localhost:{gateway_a}"));
    let (_, cookie) = post_token(gateway_a, link.split_once("token=").unwrap().1).await;
    for gateway in gateways {
        assert_eq!(me(gateway, &cookie).await, 200);
    }
    let revoked = grpcurl_json(
        &grpcurl,
        &format!("127.0.0.1:{registry_b}"),
        "stanna.keys.v1.KeyRegistry/RevokeSessions",
        r#"{"workspace_id": "ws_demo", "user_id": "alice"}"#,
        Some(TOKEN),
    );
    assert_eq!(revoked["revoked"], 1, "{revoked}");
    let took = refused_everywhere(&gateways, &cookie).await;
    assert!(
        took < Duration::from_secs(1),
        "revoked everywhere after {took:?}"
    );
}
