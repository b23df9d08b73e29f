//! The authentication layer: every request but `/healthz` and `/openapi.json` is verified by
//! auth-check before anything else sees it.
//!
//! In order: remove client-sent `X-Stanna-*` headers (only the gateway may set them), take the key
//! from `Authorization: Bearer …` or `X-API-Key` and remove it (it never travels further), check
//! `X-Workspace-Id`, call `Verify`, and either answer the denial (the README's error table) or
//! put a [`Caller`]
//! into the request's extensions and pass it on. Whatever the inner service answers, a response
//! for which a quota decision was made gets the rate-limit headers.

use std::time::SystemTime;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, header};
use stanna_grpc::Connection;
use stanna_keys::WorkspaceId;
use stanna_proto::keys::v1 as pb;
use stanna_proto::keys::v1::auth_check_client::AuthCheckClient;
use tracing::Instrument as _;

use crate::Gateway;
use crate::error::ApiError;
use crate::rate_limit_headers;

/// The header naming the workspace the caller means to act in (optional).
pub const WORKSPACE_HEADER: HeaderName = HeaderName::from_static("x-workspace-id");
/// The alternative to `Authorization: Bearer`.
pub const API_KEY_HEADER: HeaderName = HeaderName::from_static("x-api-key");

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerKind {
    /// An API key.
    ApiKey,
    /// A dashboard session (the cookie), only ever on the key API (boxed: a key's caller stays
    /// small).
    Session(Box<SessionCaller>),
}

/// Who a session caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCaller {
    /// The session's public id.
    pub session_id: String,
    /// Member or admin.
    pub role: stanna_keys::Role,
    /// The user's display name, if the product gave one.
    pub display_name: String,
    /// The user's email, if the product gave one.
    pub email: String,
    /// The `X-CSRF-Token` this session's state-changing calls must carry.
    pub csrf_token: String,
}

impl CallerKind {
    /// Whether this is a workspace admin's session (sees and manages every member's keys).
    pub fn is_admin(&self) -> bool {
        matches!(self, Self::Session(s) if s.role == stanna_keys::Role::Admin)
    }
}

/// Who is calling: the verified key's (or session's) identity, for the REST layer and the
/// upstream headers.
#[derive(Debug, Clone)]
pub struct Caller {
    /// An API key or a session.
    pub kind: CallerKind,
    /// The key's workspace.
    pub workspace_id: String,
    /// The key's owner.
    pub user_id: String,
    /// The key's public id (empty for a session).
    pub key_id: String,
    /// The key's name (empty for a session).
    pub name: String,
    /// The windows after this request was counted; filled only for `/v1/me`, which shows them.
    pub windows: Vec<pb::Window>,
    /// The key's scopes; empty: its user's full permissions (always so for a session).
    pub scopes: Vec<String>,
}

/// Paths served without a key (the dashboard's own routes check the session themselves).
fn is_public(path: &str) -> bool {
    path == "/healthz"
        || path == "/readyz"
        || path == "/openapi.json"
        || crate::dashboard::is_dashboard_path(path)
}

/// The key API's own routes — `/v1/me`, `/v1/audit`, `/v1/keys`, `/v1/keys/{id}`,
/// `/v1/keys/{id}/rotate`, `/v1/keys/{id}/usage`, `/v1/keys/usage` (the key API takes no path
/// outside `/v1/keys` but exactly `/v1/me` and `/v1/audit`, so an upstream's other `/v1/…`
/// routes stay its own) —
/// the only paths a dashboard session may call. Exact: any other `/v1/keys/…` path is the
/// upstream's, where the cookie must never count.
pub fn is_key_api(path: &str) -> bool {
    if path == "/v1/me" || path == "/v1/keys" || path == "/v1/audit" {
        return true;
    }
    let Some(rest) = path.strip_prefix("/v1/keys/") else {
        return false;
    };
    match rest.split_once('/') {
        None => !rest.is_empty(),
        Some((id, "rotate" | "usage")) => !id.is_empty(),
        Some(_) => false,
    }
}

/// What a request presented.
enum Presented {
    Key(String),
    Session(String),
}

/// Middleware: verifies the caller or answers the denial.
pub async fn authenticate(
    State(gateway): State<Gateway>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(refused) = request.extensions().get::<PathRefused>() {
        return ApiError::invalid("path", format!("path: {}", refused.0)).into_response();
    }
    if is_public(request.uri().path()) {
        return next.run(request).await;
    }
    remove_stanna_headers(request.headers_mut());
    if gateway.inner.bench_no_auth {
        let path = request.uri().path();
        if is_key_api(path) {
            // The key API acts as the calling key's user; without a verified key there is none.
            return ApiError::NotFound("the key API is off in bench-no-auth mode".into())
                .into_response();
        }
        return next.run(request).await;
    }
    // The session cookie never travels further, whatever the route: it is taken out here.
    let session = gateway
        .dashboard()
        .and_then(|d| d.take_session_cookie(request.headers_mut()))
        // Not a credential on the public listener when the dashboard has one of its own.
        .filter(|_| gateway.dashboard_for(&request).is_some());
    let presented = match take_credential(request.headers_mut()) {
        Ok(key) => Presented::Key(key),
        Err(ApiError::MissingApiKey) if session.is_some() && is_key_api(request.uri().path()) => {
            let (Some(token), Some(dashboard)) = (session, gateway.dashboard()) else {
                return ApiError::MissingApiKey.into_response();
            };
            if let Err(why) = dashboard.check_csrf(request.method(), request.headers(), &token) {
                return ApiError::CsrfFailed(why).into_response();
            }
            Presented::Session(token)
        }
        Err(error) => return error.into_response(),
    };
    let workspace_id = match request.headers().get(&WORKSPACE_HEADER) {
        None => String::new(),
        Some(value) => match workspace_header(value) {
            Ok(id) => id,
            Err(error) => return error.into_response(),
        },
    };
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip());
    if let Some(ip) = peer
        && let Err(retry_after) = gateway.inner.failed_auth.check(ip, std::time::Instant::now)
    {
        return ApiError::RateLimited {
            message: "too many failed authentications from this address; retry later".into(),
            retry_after,
        }
        .into_response();
    }
    let is_session = matches!(presented, Presented::Session(_));
    let csrf = match &presented {
        Presented::Session(token) => crate::dashboard::csrf_token(token),
        Presented::Key(_) => String::new(),
    };
    let need = requirement(
        &gateway,
        request.method(),
        request.uri().path(),
        request.headers(),
    );
    let mut verdict = match verify(&gateway, presented, workspace_id, need).await {
        Ok(verdict) => verdict,
        Err(error) => return error.into_response(),
    };
    let identity = gateway
        .inner
        .access_log
        .then(|| identity_of(&verdict))
        .flatten();
    let mut response = match verdict.code() {
        pb::VerifyCode::Valid => {
            let windows = if request.uri().path() == "/v1/me" {
                verdict.windows.clone()
            } else {
                Vec::new()
            };
            let kind = match verdict.session.take() {
                Some(session) if verdict.credential() == pb::Credential::Session => {
                    CallerKind::Session(Box::new(SessionCaller {
                        session_id: session.id,
                        role: stanna_keys::Role::parse(&session.role).unwrap_or_default(),
                        display_name: session.display_name,
                        email: session.email,
                        csrf_token: csrf,
                    }))
                }
                _ => CallerKind::ApiKey,
            };
            request.extensions_mut().insert(Caller {
                kind,
                workspace_id: verdict.workspace_id,
                user_id: verdict.user_id,
                key_id: verdict.key_id,
                name: verdict.name,
                windows,
                scopes: std::mem::take(&mut verdict.scopes),
            });
            next.run(request).await
        }
        pb::VerifyCode::RateLimited => ApiError::RateLimited {
            message: verdict.message,
            retry_after: rate_limit_headers::duration(&verdict.retry_after),
        }
        .into_response(),
        pb::VerifyCode::NotFound | pb::VerifyCode::Malformed if is_session => {
            ApiError::InvalidSession(
                "your dashboard session has ended or was signed out: sign in again",
            )
            .into_response()
        }
        pb::VerifyCode::Expired if is_session => {
            ApiError::InvalidSession("your dashboard session has expired: sign in again")
                .into_response()
        }
        pb::VerifyCode::Missing => ApiError::MissingApiKey.into_response(),
        pb::VerifyCode::Malformed => ApiError::MalformedApiKey(verdict.message).into_response(),
        pb::VerifyCode::NotFound => ApiError::InvalidApiKey.into_response(),
        pb::VerifyCode::Inactive => ApiError::InactiveApiKey.into_response(),
        pb::VerifyCode::Expired => ApiError::ExpiredApiKey(verdict.message).into_response(),
        pb::VerifyCode::WorkspaceMismatch => ApiError::WorkspaceMismatch.into_response(),
        pb::VerifyCode::InsufficientScope => ApiError::InsufficientScope {
            scope: std::mem::take(&mut verdict.missing_scope),
            message: std::mem::take(&mut verdict.message),
        }
        .into_response(),
        pb::VerifyCode::Unspecified => {
            tracing::error!("auth-check answered VERIFY_CODE_UNSPECIFIED");
            ApiError::Internal.into_response()
        }
    };
    if let Some(ip) = peer
        && response.status() == http::StatusCode::UNAUTHORIZED
    {
        gateway
            .inner
            .failed_auth
            .charge(ip, std::time::Instant::now());
    }
    // Never on a 503 (here: the registry unreachable behind the REST layer): no decision holds.
    if response.status() != http::StatusCode::SERVICE_UNAVAILABLE {
        rate_limit_headers::insert(response.headers_mut(), &verdict.windows, SystemTime::now());
    }
    if let Some(identity) = identity {
        response.extensions_mut().insert(identity);
    }
    response
}

/// The verified key and its workspace, for the access log.
fn identity_of(verdict: &pb::VerifyResponse) -> Option<crate::access_log::Identity> {
    Some(crate::access_log::Identity {
        key_id: stanna_keys::KeyId::parse(&verdict.key_id).ok()?,
        workspace: WorkspaceId::parse(&verdict.workspace_id).ok()?,
    })
}

/// Verifies a session token (for the dashboard's own pages: who is signed in now).
pub(crate) async fn verify_session(
    gateway: &Gateway,
    token: String,
) -> Result<pb::VerifyResponse, ApiError> {
    verify(
        gateway,
        Presented::Session(token),
        String::new(),
        Need::Nothing,
    )
    .await
}

/// The scope the key API's reading routes need of a scoped key.
pub const KEYS_READ: &str = "keys:read";
/// The scope the key API's changing routes need of a scoped key.
pub const KEYS_WRITE: &str = "keys:write";

/// Headers by which some frameworks run another method than the request's: a proxied request
/// carrying one is for unscoped keys only, since the route map cannot know which method runs.
const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// What a request needs of the key's scopes.
enum Need<'a> {
    /// Any key (`/v1/me`: a key may always see itself).
    Nothing,
    /// A key with all of these.
    Scopes(&'a [String]),
    /// One scope of the key API.
    KeyApi(&'static str),
    /// An unmapped proxied route: unscoped keys only.
    Unscoped,
}

/// The scopes `method` on the (normalised) `path` needs: the key API's own, or
/// `STANNA_ROUTE_SCOPES`'s for a proxied route.
fn requirement<'a>(
    gateway: &'a Gateway,
    method: &http::Method,
    path: &str,
    headers: &HeaderMap,
) -> Need<'a> {
    if path == "/v1/me" {
        return Need::Nothing;
    }
    if is_key_api(path) {
        let reads = *method == http::Method::GET || *method == http::Method::HEAD;
        return Need::KeyApi(if reads { KEYS_READ } else { KEYS_WRITE });
    }
    // A pass over the few header names, not a hashed lookup per override name: `contains_key`
    // with a `&str` parses and hashes each name, which measured 0.8 % of a proxied request.
    if headers
        .keys()
        .any(|name| METHOD_OVERRIDES.contains(&name.as_str()))
    {
        // The upstream may run another method than the one the map was asked about.
        return Need::Unscoped;
    }
    match gateway.inner.route_scopes.requirement(method, path) {
        crate::route_scopes::Requirement::Scopes([]) => Need::Nothing,
        crate::route_scopes::Requirement::Scopes(scopes) => Need::Scopes(scopes),
        crate::route_scopes::Requirement::Unmapped => Need::Unscoped,
    }
}

/// A path [`crate::path::normalise`] refused, noted before routing and answered (400) here,
/// where the error body gets its request id.
#[derive(Debug, Clone, Copy)]
pub struct PathRefused(pub crate::path::PathError);

/// Calls `Verify` within `STANNA_VERIFY_TIMEOUT`; a failure to get an answer is 503.
async fn verify(
    gateway: &Gateway,
    presented: Presented,
    workspace_id: String,
    need: Need<'_>,
) -> Result<pb::VerifyResponse, ApiError> {
    let (key, session) = match presented {
        Presented::Key(key) => (key, String::new()),
        Presented::Session(token) => (String::new(), token),
    };
    let (required_scopes, unscoped_only) = match need {
        Need::Nothing => (Vec::new(), false),
        Need::Scopes(scopes) => (scopes.to_vec(), false),
        Need::KeyApi(scope) => (vec![scope.to_owned()], false),
        Need::Unscoped => (Vec::new(), true),
    };
    let request = pb::VerifyRequest {
        key,
        session,
        workspace_id,
        cost: 1,
        // Metadata is the admin's: it does not go upstream, so it is not asked for.
        include_metadata: false,
        required_scopes,
        unscoped_only,
    };
    let call = async {
        match &gateway.inner.auth_check {
            Connection::Remote(transport) => {
                let span =
                    stanna_telemetry::request_span!("AuthCheck/Verify", otel.kind = "client");
                AuthCheckClient::new(transport.clone())
                    .verify(request)
                    .instrument(span)
                    .await
            }
            Connection::InProcess(service) => service.verify(tonic::Request::new(request)).await,
        }
    };
    // One deadline for both connections.
    let answer = tokio::time::timeout(gateway.inner.verify_timeout, call)
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("Verify timed out")));
    match answer {
        Ok(response) => Ok(response.into_inner()),
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            // The field at fault travels as a typed detail: `workspace_id` is our
            // X-Workspace-Id; anything else was in the credential.
            let (field, reason) = stanna_grpc::status::field_violation(&status)
                .unwrap_or_else(|| (String::new(), status.message().to_owned()));
            let header = if field == "workspace_id" {
                "X-Workspace-Id"
            } else {
                "Authorization"
            };
            Err(ApiError::invalid(header, format!("{header}: {reason}")))
        }
        Err(status) => {
            // Under load every request fails alike while auth-check is away: one line per 10 s.
            static FAILED: stanna_telemetry::LogLimiter =
                stanna_telemetry::LogLimiter::new(std::time::Duration::from_secs(10));
            if let Some(held_back) = FAILED.allow() {
                tracing::warn!(code = ?status.code(), error = %stanna_telemetry::ErrorChain(&status), held_back, "Verify failed; answering 503");
            }
            Err(ApiError::Unavailable)
        }
    }
}

/// Removes every `X-Stanna-*` header: only the gateway sets them, for the upstream to trust.
fn remove_stanna_headers(headers: &mut HeaderMap) {
    // Collected first: a HeaderMap cannot be changed while iterated. Nothing is allocated when no
    // such header came in, which is the usual case.
    let found: Vec<_> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-stanna-"))
        .cloned()
        .collect();
    for name in found {
        headers.remove(name);
    }
}

/// Takes the key out of `Authorization: Bearer …` (scheme case-insensitive) or `X-API-Key`, and
/// removes it from the headers so it never reaches the REST layer or the upstream. An
/// `Authorization` header with another scheme is left alone (it belongs to the upstream).
///
/// # Errors
/// [`ApiError::MissingApiKey`], [`ApiError::AmbiguousApiKey`], or [`ApiError::MalformedApiKey`]
/// for a value that is not even text.
pub fn take_credential(headers: &mut HeaderMap) -> Result<String, ApiError> {
    // Every line of both headers counts: a second `Authorization: Bearer` line must neither slip
    // through to the upstream nor go unnoticed.
    let mut found: Option<(Vec<u8>, Source)> = None;
    let mut ambiguous = None;
    let mut note = |key: &[u8], source: Source| match &found {
        Some((seen, first)) if seen.as_slice() != key => {
            ambiguous = Some(match (first, source) {
                (Source::Bearer, Source::Bearer) => {
                    "two Authorization: Bearer lines carry different keys; send one"
                }
                (Source::Header, Source::Header) => {
                    "two X-API-Key headers carry different keys; send one"
                }
                _ => "Authorization and X-API-Key carry different keys; send one",
            });
        }
        Some(_) => {}
        None => found = Some((key.to_vec(), source)),
    };
    let mut other_schemes = Vec::new();
    let had_authorization = headers.contains_key(header::AUTHORIZATION);
    for value in headers.get_all(header::AUTHORIZATION) {
        match bearer_token(value.as_bytes()) {
            Some(token) => note(token, Source::Bearer),
            None => other_schemes.push(value.clone()),
        }
    }
    for value in headers.get_all(&API_KEY_HEADER) {
        note(trim(value.as_bytes()), Source::Header);
    }
    if had_authorization {
        // Only the Bearer lines are ours; other schemes stay for the upstream.
        headers.remove(header::AUTHORIZATION);
        for value in other_schemes {
            headers.append(header::AUTHORIZATION, value);
        }
    }
    headers.remove(&API_KEY_HEADER);
    if let Some(why) = ambiguous {
        return Err(ApiError::AmbiguousApiKey(why));
    }
    let Some((key, _)) = found else {
        // A key in the Authorization header, but not as a Bearer token: say how to send it
        // rather than "missing".
        let hint = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .find_map(|v| misplaced_key_hint(trim(v.as_bytes())));
        return Err(match hint {
            Some(hint) => ApiError::MalformedApiKey(hint.into()),
            None => ApiError::MissingApiKey,
        });
    };
    if key.is_empty() {
        return Err(ApiError::MissingApiKey);
    }
    String::from_utf8(key).map_err(|_| {
        ApiError::MalformedApiKey("the key contains a character outside 0-9, A-Z and a-z".into())
    })
}

/// Which header a key came from.
#[derive(Clone, Copy)]
enum Source {
    Bearer,
    Header,
}

/// What to say of an `Authorization` value that holds a key without being `Bearer sk-…`: the
/// key alone, another scheme (`Token sk-…`), or Basic with the key as the user name.
fn misplaced_key_hint(value: &[u8]) -> Option<&'static str> {
    use base64::Engine as _;
    if value.starts_with(b"sk-") {
        return Some(
            "the Authorization header must be \"Bearer sk-…\": the word Bearer and a space are missing",
        );
    }
    let (scheme, credential) = value.split_at(value.iter().position(|b| *b == b' ')?);
    let credential = trim(credential);
    if scheme.eq_ignore_ascii_case(b"basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credential)
            .ok()?;
        return decoded.starts_with(b"sk-").then_some(
            "the key was sent as a Basic user name: send \"Authorization: Bearer sk-…\" or \"X-API-Key: sk-…\"",
        );
    }
    credential
        .starts_with(b"sk-")
        .then_some("the Authorization scheme must be Bearer: send \"Authorization: Bearer sk-…\"")
}

/// The token of a `Bearer` credential, or `None` for another scheme.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer";
    let value = trim(value);
    if value.len() < SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let rest = &value[SCHEME.len()..];
    match rest.first() {
        None => Some(rest),
        Some(b' ' | b'\t') => Some(trim(rest)),
        Some(_) => None,
    }
}

fn trim(value: &[u8]) -> &[u8] {
    value.trim_ascii()
}

/// Checks `X-Workspace-Id` before any I/O.
fn workspace_header(value: &HeaderValue) -> Result<String, ApiError> {
    let text = value.to_str().map_err(|_| {
        ApiError::invalid("X-Workspace-Id", "X-Workspace-Id: must be printable ASCII")
    })?;
    WorkspaceId::parse(text)
        .map(|id| id.as_str().to_owned())
        .map_err(|e| ApiError::invalid("X-Workspace-Id", format!("X-Workspace-Id: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn the_key_comes_from_bearer_with_any_scheme_case_and_is_removed() {
        for value in ["Bearer sk-abc", "bearer sk-abc", "BEARER   sk-abc  "] {
            let mut h = headers(&[("authorization", value)]);
            assert_eq!(take_credential(&mut h).unwrap(), "sk-abc", "{value}");
            assert!(h.get("authorization").is_none());
        }
    }

    #[test]
    fn the_key_comes_from_x_api_key_and_is_removed() {
        let mut h = headers(&[("x-api-key", "sk-abc")]);
        assert_eq!(take_credential(&mut h).unwrap(), "sk-abc");
        assert!(h.get("x-api-key").is_none());
    }

    #[test]
    fn two_different_keys_are_ambiguous_and_two_equal_ones_are_fine() {
        let mut h = headers(&[("authorization", "Bearer sk-a"), ("x-api-key", "sk-b")]);
        assert!(matches!(
            take_credential(&mut h),
            Err(ApiError::AmbiguousApiKey(m)) if m.starts_with("Authorization and X-API-Key")
        ));
        let mut h = headers(&[("authorization", "Bearer sk-a"), ("x-api-key", "sk-a")]);
        assert_eq!(take_credential(&mut h).unwrap(), "sk-a");
    }

    #[test]
    fn every_header_line_is_read_and_removed() {
        let mut h = headers(&[
            ("authorization", "Basic dTpw"),
            ("authorization", "Bearer sk-a"),
            ("x-api-key", "sk-a"),
        ]);
        assert_eq!(take_credential(&mut h).unwrap(), "sk-a");
        let left: Vec<_> = h.get_all("authorization").iter().collect();
        assert_eq!(left, ["Basic dTpw"], "only the other scheme stays");
        assert!(h.get("x-api-key").is_none());
        let mut h = headers(&[("x-api-key", "sk-a"), ("x-api-key", "sk-b")]);
        assert!(matches!(
            take_credential(&mut h),
            Err(ApiError::AmbiguousApiKey(m)) if m.starts_with("two X-API-Key headers")
        ));
        let mut h = headers(&[
            ("authorization", "Bearer sk-a"),
            ("authorization", "Bearer sk-b"),
        ]);
        assert!(matches!(
            take_credential(&mut h),
            Err(ApiError::AmbiguousApiKey(m)) if m.starts_with("two Authorization: Bearer")
        ));
        assert!(
            h.get("authorization").is_none(),
            "no key travels on after a refusal"
        );
    }

    #[test]
    fn another_scheme_is_not_our_credential_and_stays() {
        let mut h = headers(&[("authorization", "Basic dXNlcjpwdw==")]);
        assert_eq!(take_credential(&mut h), Err(ApiError::MissingApiKey));
        assert!(h.get("authorization").is_some());
        let mut h = headers(&[("authorization", "Bearersk-abc")]);
        assert_eq!(take_credential(&mut h), Err(ApiError::MissingApiKey));
    }

    #[test]
    fn a_key_sent_any_other_way_in_authorization_is_malformed_with_a_hint() {
        // `sk-abc` as a Basic user name, base64("sk-abc:").
        for (value, says) in [
            ("sk-abc", "the word Bearer and a space are missing"),
            ("Token sk-abc", "scheme must be Bearer"),
            ("ApiKey sk-abc", "scheme must be Bearer"),
            ("Basic c2stYWJjOg==", "Basic user name"),
        ] {
            let mut h = headers(&[("authorization", value)]);
            match take_credential(&mut h) {
                Err(ApiError::MalformedApiKey(message)) => {
                    assert!(message.contains(says), "{value}: {message}")
                }
                other => panic!("{value}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_empty_bearer_is_missing() {
        let mut h = headers(&[("authorization", "Bearer ")]);
        assert_eq!(take_credential(&mut h), Err(ApiError::MissingApiKey));
        let mut h = headers(&[("authorization", "Bearer")]);
        assert_eq!(take_credential(&mut h), Err(ApiError::MissingApiKey));
    }

    #[test]
    fn only_the_key_apis_own_routes_take_a_session() {
        for path in [
            "/v1/me",
            "/v1/keys",
            "/v1/keys/AbC",
            "/v1/keys/AbC/rotate",
            "/v1/keys/AbC/usage",
            "/v1/keys/usage",
        ] {
            assert!(is_key_api(path), "{path}");
        }
        for path in [
            "/v1/keys/",
            "/v1/keys//rotate",
            "/v1/keys/AbC/x",
            "/v1/keys/AbC/rotate/x",
            "/v1/keysx",
            "/v1/me/x",
            "/v1/keys//usage",
            "/v1/usage",
            "/anything",
        ] {
            assert!(!is_key_api(path), "{path}");
        }
    }

    #[test]
    fn client_sent_stanna_headers_are_removed() {
        let mut h = headers(&[
            ("x-stanna-user-id", "admin"),
            ("X-Stanna-Workspace-Id", "other"),
            ("x-stannaish", "kept"),
        ]);
        remove_stanna_headers(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-stannaish"));
    }
}
