//! What every fuzz target checks, one function per target, each taking the fuzzer's raw bytes.
//! `fuzz/fuzz_targets/*.rs` call these under libFuzzer (`cargo fuzz run NAME`); the stable test
//! `tests/corpora.rs` replays every committed corpus file through them in CI. Each panics on a
//! broken property — a panic anywhere below is a finding.
//!
//! The properties, beyond "never panics":
//! - **key parser**: a key that parses re-parses to itself, has the id it carries, and its
//!   preview never holds more than the prefix, the first 4 and the last 4 characters; a refusal
//!   never repeats the input;
//! - **REST parsing**: a body or query is accepted or refused with a 4xx JSON error naming a
//!   field, never a 5xx, never echoing a secret-shaped run of the input;
//! - **credentials**: reading `Authorization` / `X-API-Key` headers never echoes the key in the
//!   refusal and removes every credential header it read;
//! - **login tokens**: verification answers, and an accepted token satisfies the claim rules;
//! - **page tokens**: what parses prints back to a token that parses to the same position;
//! - **rate-limit headers**: every value is a valid header value and the numbers agree with the
//!   binding window;
//! - **request paths**: the normal form the gateway routes, maps to scopes and forwards has no
//!   empty, `.` or `..` segment, no encoded slash, backslash or NUL, no escape of a plain
//!   character, and is its own normal form.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use stanna_gateway::rest::extract::{QueryParams, parse_body};
use stanna_gateway::rest::types::{CreateKeyBody, ListKeysQuery, RotateKeyBody, UpdateKeyBody};
use stanna_keys::{KeyId, KeyName, PresentedKey};
use stanna_proto::keys::v1 as pb;

/// A target's body: panics on a broken property.
pub type Target = fn(&[u8]);

/// The fuzz targets, by name (the file names under `fuzz/fuzz_targets/` and `fuzz/corpus/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("key_parser", key_parser),
    ("rest_body", rest_body),
    ("rest_query_and_path", rest_query_and_path),
    ("credentials", credentials),
    ("login_token", login_token),
    ("page_token", page_token),
    ("rate_limit_headers", rate_limit_headers),
    ("request_path", request_path),
];

/// Polls a future that never waits (the extractors and full bodies used here complete at once).
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a future that should be ready was pending"),
    }
}

/// The runs of 20 or more base62 characters in `input`: what a secret looks like (32).
fn secret_shaped(input: &str) -> impl Iterator<Item = &str> {
    input
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|run| run.len() >= 20)
}

/// An error answer, checked: a 4xx with a JSON body `{error: {code, message}}` that repeats no
/// secret-shaped run of `input`. Returns the body.
fn checked_refusal(error: stanna_gateway::ApiError, input: &str) -> serde_json::Value {
    let response = error.to_response("fuzz");
    let status = response.status();
    assert!(status.is_client_error(), "a refusal is a 4xx, got {status}");
    let body = ready(http_body_util::BodyExt::collect(response.into_body()))
        .expect("a full body")
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).expect("a JSON error body");
    let text = json.to_string();
    for run in secret_shaped(input) {
        assert!(
            !text.contains(run),
            "the refusal repeats a secret-shaped part of the input: {text}"
        );
    }
    assert!(json["error"]["code"].is_string(), "{text}");
    assert!(json["error"]["message"].is_string(), "{text}");
    json
}

/// The key parser: `sk-` keys as clients paste them.
pub fn key_parser(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    // What every masked listing shows, for any string.
    let preview = stanna_keys::preview_of(input);
    assert!(
        preview.chars().count() <= 14,
        "preview too long: {preview:?}"
    );
    match PresentedKey::parse(input) {
        Ok(key) => {
            assert_eq!(key.expose_bytes(), input.as_bytes());
            assert_eq!(PresentedKey::parse(input), Ok(key));
            let id = key.key_id();
            assert!(input[3..].starts_with(id.as_str()), "the id is the key's");
            assert_eq!(KeyId::parse(id.as_str()).ok().as_ref(), Some(&id));
            let preview = key.preview();
            assert!(
                preview.starts_with(&input[..7]) && preview.ends_with(&input[input.len() - 4..])
            );
            assert!(
                !preview.contains(&input[7..input.len() - 4]),
                "the secret is masked"
            );
            assert!(!format!("{key:?}{key}").contains(&input[7..input.len() - 4]));
        }
        Err(err) => {
            let message = err.to_string();
            for run in secret_shaped(input) {
                assert!(!message.contains(run), "{message}");
            }
        }
    }
}

/// The key API's JSON bodies, and the name rule they are checked by.
pub fn rest_body(data: &[u8]) {
    let input = String::from_utf8_lossy(data);
    match parse_body::<CreateKeyBody>(data) {
        Ok(body) => {
            if let Some(name) = body.name
                && let Ok(parsed) = KeyName::parse(&name)
            {
                let chars = parsed.as_str().chars().count();
                assert!((1..=KeyName::MAX_CHARS).contains(&chars));
                assert!(!parsed.as_str().chars().any(char::is_control));
            }
        }
        Err(err) => {
            checked_refusal(err, &input);
        }
    }
    if let Err(err) = parse_body::<UpdateKeyBody>(data) {
        checked_refusal(err, &input);
    }
    if let Err(err) = parse_body::<RotateKeyBody>(data) {
        checked_refusal(err, &input);
    }
}

/// `GET /v1/keys?…` query strings and `/v1/keys/{id}` path ids (percent-decoded as axum does,
/// then the key id rule).
pub fn rest_query_and_path(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (query, path) = input.split_once('\n').unwrap_or((input, ""));
    if let Ok(uri) = format!("/v1/keys?{query}").parse::<http::Uri>() {
        let (mut parts, ()) = http::Request::get(uri)
            .body(())
            .expect("a request")
            .into_parts();
        match ready(
            <QueryParams<ListKeysQuery> as axum::extract::FromRequestParts<()>>::from_request_parts(
                &mut parts,
                &(),
            ),
        ) {
            Ok(QueryParams(query)) => {
                if let Some(size) = query.page_size {
                    assert!(size.0 <= 100, "page sizes past 100 are refused");
                }
            }
            Err(err) => {
                checked_refusal(err, query);
            }
        }
    }
    let decoded = url::form_urlencoded::parse(format!("id={path}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if let Ok(id) = KeyId::parse(&decoded) {
        assert_eq!(id.as_str(), decoded);
        assert_eq!(id.as_str().len(), 12);
        assert!(id.as_str().bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}

/// `Authorization` / `X-API-Key` header lines: `name: value` per line.
pub fn credentials(data: &[u8]) {
    let mut headers = HeaderMap::new();
    let mut values = String::new();
    for line in data.split(|b| *b == b'\n').take(8) {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = match line[..colon].first() {
            Some(b'a') => HeaderName::from_static("authorization"),
            Some(b'x') => HeaderName::from_static("x-api-key"),
            _ => continue,
        };
        let value = &line[colon + 1..];
        if let Ok(value) = HeaderValue::from_bytes(value) {
            values.push_str(&String::from_utf8_lossy(value.as_bytes()));
            values.push('\n');
            headers.append(name, value);
        }
    }
    match stanna_gateway::auth::take_credential(&mut headers) {
        Ok(credential) => {
            assert!(!credential.is_empty());
            // What goes on to the REST layer or the upstream carries no key: no X-API-Key, no
            // Bearer line (another scheme's Authorization is the upstream's own).
            assert!(!headers.contains_key("x-api-key"), "X-API-Key is removed");
            assert!(
                !headers
                    .get_all(http::header::AUTHORIZATION)
                    .iter()
                    .any(|v| {
                        let v = v.as_bytes().trim_ascii_start();
                        v.len() >= 7 && v[..7].eq_ignore_ascii_case(b"bearer ")
                    }),
                "every Bearer line is removed"
            );
        }
        Err(err) => {
            checked_refusal(err, &values);
        }
    }
}

/// The login verifier's secret here.
const SESSION_SECRET: &[u8] = b"fuzz-session-secret-of-at-least-32-bytes";

/// A fixed verifier: HS256 with a test secret, at a fixed time.
fn login_verifier() -> &'static stanna_keys::login::LoginVerifier {
    static VERIFIER: std::sync::OnceLock<stanna_keys::login::LoginVerifier> =
        std::sync::OnceLock::new();
    VERIFIER.get_or_init(|| {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        stanna_keys::login::LoginVerifier::with_secret(
            SESSION_SECRET,
            "stanna-dashboard",
            None,
            std::sync::Arc::new(move || now),
        )
        .expect("a verifier")
    })
}

/// Login tokens (JWT) as the sign-in link carries them. Inputs starting with `{` are taken as
/// claims and signed with the verifier's secret, so the claim checks are reached too.
pub fn login_token(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let verifier = login_verifier();
    let token = if input.starts_with('{') {
        // Claims the product might write, signed as it would sign them.
        let Ok(claims) = serde_json::from_str::<stanna_keys::login::Claims>(input) else {
            return;
        };
        let Ok(token) = stanna_keys::login::mint_hs256(SESSION_SECRET, &claims) else {
            return;
        };
        token
    } else {
        input.to_owned()
    };
    if let Ok(login) = verifier.verify(&token) {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert!(!login.jti.is_empty() && login.jti.len() <= 128);
        assert!(
            login.expires_at + Duration::from_secs(30) >= now,
            "not expired"
        );
        assert!(
            login.expires_at <= now + Duration::from_secs(300 + 30),
            "a short-lived token"
        );
        assert!(login.name.as_ref().is_none_or(|n| n.chars().count() <= 100));
        assert!(
            login
                .email
                .as_ref()
                .is_none_or(|e| e.chars().count() <= 254)
        );
    }
}

/// ListKeys page tokens as clients pass them back.
pub fn page_token(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = stanna_store::PageToken::parse(input) {
        let printed = token.to_string();
        assert_eq!(stanna_store::PageToken::parse(&printed), Ok(token));
        assert!(printed.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}

/// Windows made from the bytes: per window a name (one of burst, hourly, or a few raw bytes), a
/// limit, a remaining count, a reset and a period.
fn windows_of(data: &[u8]) -> Vec<pb::Window> {
    let mut windows = Vec::new();
    let mut bytes = data;
    let mut take = |n: usize| -> Option<&[u8]> {
        if bytes.len() < n {
            return None;
        }
        let (head, rest) = bytes.split_at(n);
        bytes = rest;
        Some(head)
    };
    while windows.len() < 4 {
        let Some(kind) = take(1) else { break };
        let name = match kind[0] % 4 {
            0 => "burst".to_owned(),
            1 => "hourly".to_owned(),
            _ => {
                let Some(len) = take(1) else { break };
                let Some(raw) = take(usize::from(len[0] % 8)) else {
                    break;
                };
                String::from_utf8_lossy(raw).into_owned()
            }
        };
        let Some(n) = take(4 + 4 + 8 + 4 + 8) else {
            break;
        };
        let u32_at = |i: usize| u32::from_le_bytes(n[i..i + 4].try_into().unwrap_or([0; 4]));
        let i64_at = |i: usize| i64::from_le_bytes(n[i..i + 8].try_into().unwrap_or([0; 8]));
        windows.push(pb::Window {
            name,
            limit: u32_at(0),
            remaining: u32_at(4),
            reset_after: Some(prost_types::Duration {
                seconds: i64_at(8),
                nanos: u32_at(16) as i32,
            }),
            period: Some(prost_types::Duration {
                seconds: i64_at(20),
                nanos: 0,
            }),
        });
    }
    windows
}

/// The rate-limit headers of any windows.
pub fn rate_limit_headers(data: &[u8]) {
    let windows = windows_of(data);
    let mut headers = HeaderMap::new();
    let now = UNIX_EPOCH + Duration::from_millis(1_800_000_000_250);
    stanna_gateway::rate_limit_headers::insert(&mut headers, &windows, now);
    let Some(binding) = stanna_gateway::rate_limit_headers::binding_window(&windows) else {
        assert!(headers.is_empty(), "no windows, no headers");
        return;
    };
    let number = |name: &str| -> Option<u64> {
        headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII").parse().expect("a number"))
    };
    assert_eq!(number("x-ratelimit-limit"), Some(u64::from(binding.limit)));
    assert_eq!(
        number("x-ratelimit-remaining"),
        Some(u64::from(binding.remaining))
    );
    let reset = number("x-ratelimit-reset").expect("a reset time");
    let reset_after = stanna_gateway::rate_limit_headers::duration(&binding.reset_after);
    let now_s = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    // Rounded up: the fractions of now and of the reset may carry one second, and the rest one.
    assert!(reset >= now_s && reset <= now_s + reset_after.as_secs() + 2);
    assert!(
        windows.iter().all(|w| w.remaining >= binding.remaining),
        "the binding window has the least remaining"
    );
    // A window name that is not header-safe leaves the policy out; when it is sent, it has one
    // item per window.
    if let Some(Ok(policy)) = headers.get("ratelimit-policy").map(|p| p.to_str()) {
        assert!(
            policy.matches(";q=").count() >= windows.len(),
            "one policy item per window"
        );
    }
}

/// A request path through the gateway's normalisation (`stanna_gateway::path`).
pub fn request_path(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    // Only what hyper would accept as a request target reaches the gateway.
    let Ok(uri) = input.parse::<http::Uri>() else {
        return;
    };
    let path = uri.path();
    let Ok(normal) = stanna_gateway::path::normalise(path) else {
        return;
    };
    let borrowed = matches!(normal, std::borrow::Cow::Borrowed(_));
    let normal = normal.into_owned();
    if borrowed {
        assert_eq!(normal, path, "a borrowed normal form is the path itself");
    }
    assert!(normal.starts_with('/'), "{normal:?}");
    let segments: Vec<&str> = normal[1..].split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        assert!(
            !segment.is_empty() || last,
            "an empty segment in {normal:?}"
        );
        assert!(
            *segment != "." && *segment != "..",
            "a dot segment in {normal:?}"
        );
    }
    assert!(
        !normal.contains('\\') && !normal.contains(';'),
        "a backslash or ';' in {normal:?}"
    );
    let bytes = normal.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b != b'%' {
            continue;
        }
        let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("two hex digits");
        assert_eq!(
            hex,
            hex.to_ascii_uppercase(),
            "escapes are upper case: {normal:?}"
        );
        let byte = u8::from_str_radix(hex, 16).expect("two hex digits");
        assert!(
            !(byte.is_ascii_alphanumeric()
                || matches!(
                    byte,
                    b'-' | b'.' | b'_' | b'~' | b'/' | b'\\' | b';' | b'%' | 0
                )),
            "%{hex} survives in {normal:?}"
        );
    }
    match stanna_gateway::path::normalise(&normal) {
        Ok(std::borrow::Cow::Borrowed(again)) => assert_eq!(again, normal),
        other => panic!("{normal:?} is not its own normal form: {other:?}"),
    }
    assert!(
        normal.parse::<http::uri::PathAndQuery>().is_ok(),
        "{normal:?} is a valid path"
    );
}
