//! Settings → API Keys: the dashboard page, its sign-in hand-off and its session cookie.
//!
//! - `GET /settings/api-keys`: the page (HTML, one script, one stylesheet, all embedded in the
//!   binary); it calls the key API with the session cookie.
//! - `GET /settings/api-keys/session?token=…`: "Continue as Alice in ws_demo". It does not spend
//!   the login token (link previewers and mail scanners fetch GETs); its button POSTs it.
//! - `POST /settings/api-keys/session`: same-origin only; the registry verifies and spends the
//!   token and creates the session; the cookie is set and the browser sent to the page (303).
//! - `POST /settings/api-keys/sign-out`: ends the session (CSRF-checked like every cookie call).
//!
//! Every path under `/settings/api-keys` is reserved: never proxied. The cookie holds only the
//! opaque session token (HttpOnly, SameSite=Strict, Path=/, `__Host-` and Secure when the public
//! URL is https) and is removed from every request before it goes anywhere else.

mod pages;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use blake2::{Blake2b256, Digest};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use stanna_config::PublicUrl;
use stanna_keys::login::LoginVerifier;
use stanna_proto::keys::v1 as pb;
use subtle::ConstantTimeEq;

use crate::Gateway;
use crate::error::ApiError;

/// Where the dashboard lives; everything under it is the gateway's own.
pub const BASE: &str = "/settings/api-keys";
/// The cookie's name over plain HTTP.
pub const COOKIE: &str = "stanna_session";
/// The cookie's name when the public URL is https: the `__Host-` prefix makes the browser
/// refuse it unless Secure, Path=/ and no Domain, so a sibling subdomain cannot plant one.
pub const HOST_COOKIE: &str = "__Host-stanna_session";
/// The header a cookie call that changes state must carry (not `X-Stanna-*`: those are
/// stripped).
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The largest sign-in form accepted (a JWT is well under 8 KiB).
const MAX_FORM_BYTES: usize = 16 * 1024;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// What signing in needs at the gateway: the login-token verifier (to show who a link is for)
/// and the public URL (links, `Origin`, the cookie's form).
#[derive(Clone)]
pub struct SignIn {
    /// Checks login tokens without spending them.
    pub verifier: Arc<LoginVerifier>,
    /// `STANNA_PUBLIC_URL`.
    pub public_url: PublicUrl,
}

/// The dashboard's settings, built once.
pub struct Dashboard {
    sign_in: SignIn,
    /// `Content-Security-Policy` of every dashboard answer.
    csp: HeaderValue,
    /// Whether `X-Frame-Options: DENY` goes with it (no frame ancestors allowed).
    deny_frames: bool,
}

impl Dashboard {
    /// The dashboard over `sign_in`; `frame_ancestors` (`STANNA_DASHBOARD_FRAME_ANCESTORS`)
    /// lists the origins that may embed it, `None` for none.
    pub fn new(sign_in: SignIn, frame_ancestors: Option<&str>) -> Self {
        let ancestors = frame_ancestors.unwrap_or("'none'");
        let csp = format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors {ancestors}"
        );
        Self {
            sign_in,
            // Checked when the setting was parsed: only origins and keywords.
            csp: HeaderValue::try_from(csp)
                .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'")),
            deny_frames: frame_ancestors.is_none(),
        }
    }

    /// The cookie's name for this public URL.
    pub fn cookie_name(&self) -> &'static str {
        if self.sign_in.public_url.https {
            HOST_COOKIE
        } else {
            COOKIE
        }
    }

    /// Removes both session cookie names from every `Cookie` header (other cookies stay, for the
    /// upstream, byte for byte) and returns the session token, if one was sent. Costs one lookup
    /// when no `Cookie` header came. Two different values of our cookie (one planted by a
    /// sibling subdomain on a longer path, say) are refused rather than one picked: the answer is
    /// a value that is no session, so the caller gets 401 `invalid_session`.
    pub fn take_session_cookie(&self, headers: &mut HeaderMap) -> Option<String> {
        if !headers.contains_key(header::COOKIE) {
            return None;
        }
        let ours = self.cookie_name().as_bytes();
        let mut found: Option<Vec<u8>> = None;
        let mut ambiguous = false;
        let mut kept = Vec::new();
        let mut changed = false;
        for value in headers.get_all(header::COOKIE) {
            let mut rest: Vec<&[u8]> = Vec::new();
            for pair in value.as_bytes().split(|b| *b == b';') {
                let pair = pair.trim_ascii();
                let (name, cookie) = match pair.iter().position(|b| *b == b'=') {
                    Some(i) => (pair[..i].trim_ascii(), pair[i + 1..].trim_ascii()),
                    None => (pair, &b""[..]),
                };
                if name == ours {
                    let cookie = cookie
                        .strip_prefix(b"\"")
                        .and_then(|c| c.strip_suffix(b"\""))
                        .unwrap_or(cookie);
                    match &found {
                        Some(seen) if seen.as_slice() != cookie => ambiguous = true,
                        Some(_) => {}
                        None => found = Some(cookie.to_vec()),
                    }
                    changed = true;
                } else if name == COOKIE.as_bytes() || name == HOST_COOKIE.as_bytes() {
                    changed = true;
                } else if !pair.is_empty() {
                    rest.push(pair);
                }
            }
            if !rest.is_empty() {
                kept.push(
                    HeaderValue::from_bytes(&rest.join(&b"; "[..]))
                        .unwrap_or_else(|_| value.clone()),
                );
            }
        }
        if changed {
            headers.remove(header::COOKIE);
            for value in kept {
                headers.append(header::COOKIE, value);
            }
        }
        if ambiguous {
            return Some("ambiguous".to_owned());
        }
        found
            .filter(|t| !t.is_empty())
            .map(|t| String::from_utf8_lossy(&t).into_owned())
    }

    /// The cookie checks of a call that changes state: JSON, same origin, the session's CSRF
    /// token. GET and HEAD pass.
    ///
    /// # Errors
    /// Which check failed, for the 403 `csrf_failed`.
    pub fn check_csrf(
        &self,
        method: &Method,
        headers: &HeaderMap,
        session: &str,
    ) -> Result<(), &'static str> {
        if method == Method::GET || method == Method::HEAD {
            return Ok(());
        }
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(
                "a dashboard call that changes something must send Content-Type: application/json",
            );
        }
        self.check_same_origin(headers)?;
        let presented = headers
            .get(CSRF_HEADER)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        if !bool::from(presented.ct_eq(csrf_token(session).as_bytes())) {
            return Err(
                "the X-CSRF-Token header is missing or is not this session's (reload the page)",
            );
        }
        Ok(())
    }

    /// `Origin` must be the public URL's; without one — or with `null`, which browsers send
    /// under our own `Referrer-Policy: no-referrer` — `Sec-Fetch-Site` must be `same-origin`
    /// (a header pages cannot set).
    fn check_same_origin(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        match headers.get(header::ORIGIN).map(HeaderValue::as_bytes) {
            Some(origin) if origin == self.sign_in.public_url.origin.as_bytes() => Ok(()),
            Some(origin) if origin != b"null" => Err(
                "the request comes from another origin than STANNA_PUBLIC_URL: dashboard calls are same-origin only",
            ),
            _ => match headers.get("sec-fetch-site").map(HeaderValue::as_bytes) {
                Some(b"same-origin") => Ok(()),
                _ => Err("the request carries neither a same-origin Origin nor Sec-Fetch-Site"),
            },
        }
    }

    /// The `Set-Cookie` value for `token`, lasting `max_age` seconds (0 removes it).
    fn cookie(&self, token: &str, max_age: u64) -> HeaderValue {
        let secure = if self.sign_in.public_url.https {
            "; Secure"
        } else {
            ""
        };
        let value = format!(
            "{}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}",
            self.cookie_name()
        );
        HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// Adds the headers every dashboard answer carries.
    fn protect(&self, response: &mut Response) {
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_SECURITY_POLICY, self.csp.clone());
        if self.deny_frames {
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        }
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            "cross-origin-opener-policy",
            HeaderValue::from_static("same-origin"),
        );
    }
}

/// The CSRF token of a session: a digest of its token under a context of its own. Bound to the
/// session, useless without the cookie, and never reveals the cookie.
pub fn csrf_token(session: &str) -> String {
    let mut hasher = Blake2b256::new();
    hasher.update(b"stanna csrf v1\0");
    hasher.update(session.as_bytes());
    let digest: [u8; 32] = hasher.finalize().into();
    stanna_keys::to_hex(&digest[..16])
}

/// Whether `path` is the dashboard's (reserved, never proxied).
pub fn is_dashboard_path(path: &str) -> bool {
    path.strip_prefix(BASE)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The dashboard's routes. Without sign-in configured they answer 404 like any reserved path.
pub fn routes() -> Router<Gateway> {
    Router::new()
        .route(BASE, get(page))
        .route(&format!("{BASE}/"), get(page))
        .route(&format!("{BASE}/app.js"), get(script))
        .route(&format!("{BASE}/app.css"), get(stylesheet))
        .route(
            &format!("{BASE}/session"),
            get(pages::hand_off).post(pages::sign_in),
        )
        .route(&format!("{BASE}/sign-out"), post(sign_out))
        .route(&format!("{BASE}/{{*rest}}"), axum::routing::any(reserved))
}

/// The 404 of a listener that does not serve the dashboard.
pub(crate) fn not_here() -> Response {
    ApiError::NotFound("the dashboard is not served on this listener".into()).into_response()
}

/// Adds the dashboard's headers to `response` (or answers 404 when no sign-in is configured).
fn answer(
    gateway: &Gateway,
    request: &Request,
    content_type: &'static str,
    body: &'static str,
) -> Response {
    let Some(dashboard) = gateway.dashboard_for(request) else {
        return not_here();
    };
    let mut response = Response::new(Body::from(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    dashboard.protect(&mut response);
    response
}

async fn page(State(gateway): State<Gateway>, request: Request) -> Response {
    answer(&gateway, &request, "text/html; charset=utf-8", INDEX_HTML)
}

async fn script(State(gateway): State<Gateway>, request: Request) -> Response {
    answer(&gateway, &request, "text/javascript; charset=utf-8", APP_JS)
}

async fn stylesheet(State(gateway): State<Gateway>, request: Request) -> Response {
    answer(&gateway, &request, "text/css; charset=utf-8", APP_CSS)
}

async fn reserved(request: Request) -> ApiError {
    ApiError::NotFound(format!(
        "no dashboard route {} {}",
        request.method(),
        request.uri().path()
    ))
}

/// Ends the session of the cookie (CSRF-checked) and removes the cookie: 204.
async fn sign_out(State(gateway): State<Gateway>, mut request: Request) -> Response {
    let Some(dashboard) = gateway.dashboard_for(&request) else {
        return not_here();
    };
    let Some(token) = dashboard.take_session_cookie(request.headers_mut()) else {
        let mut response = StatusCode::NO_CONTENT.into_response();
        response
            .headers_mut()
            .insert(header::SET_COOKIE, dashboard.cookie("", 0));
        return response;
    };
    if let Err(why) = dashboard.check_csrf(request.method(), request.headers(), &token) {
        return ApiError::CsrfFailed(why).into_response();
    }
    match crate::rest::registry(&gateway)
        .delete_session(crate::rest::with_request_id(
            pb::DeleteSessionRequest {
                session_token: token,
            },
            request.headers().get(&crate::REQUEST_ID),
        ))
        .await
    {
        Ok(_) => {}
        // Already over: signing out again is still signing out.
        Err(status)
            if matches!(
                status.code(),
                tonic::Code::NotFound | tonic::Code::InvalidArgument
            ) => {}
        Err(status) => return crate::rest::from_registry(status).into_response(),
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, dashboard.cookie("", 0));
    dashboard.protect(&mut response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dashboard(url: &str) -> Dashboard {
        let verifier = LoginVerifier::with_secret(
            b"0123456789abcdef0123456789abcdef",
            "stanna-dashboard",
            None,
            stanna_keys::system_clock(),
        )
        .unwrap();
        Dashboard::new(
            SignIn {
                verifier: Arc::new(verifier),
                public_url: stanna_config::public_url(url).unwrap(),
            },
            None,
        )
    }

    #[test]
    fn the_session_cookie_is_taken_and_other_cookies_stay() {
        let d = dashboard("http://localhost:8080");
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; stanna_session=ss-abc; lang=en"),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-stanna_session=planted"),
        );
        assert_eq!(
            d.take_session_cookie(&mut headers).as_deref(),
            Some("ss-abc")
        );
        let left: Vec<_> = headers.get_all(header::COOKIE).iter().collect();
        assert_eq!(left, ["theme=dark; lang=en"]);
        let mut none = HeaderMap::new();
        assert_eq!(d.take_session_cookie(&mut none), None);
        // Bytes outside ASCII in another cookie: ours is still found and removed.
        let mut utf8 = HeaderMap::new();
        utf8.append(
            header::COOKIE,
            HeaderValue::from_bytes("lang=café; stanna_session=ss-abc".as_bytes()).unwrap(),
        );
        assert_eq!(d.take_session_cookie(&mut utf8).as_deref(), Some("ss-abc"));
        assert_eq!(utf8[header::COOKIE].as_bytes(), "lang=café".as_bytes());
        // Two different values of our cookie: neither is taken.
        let mut two = HeaderMap::new();
        two.append(
            header::COOKIE,
            HeaderValue::from_static("stanna_session=ss-planted; stanna_session=ss-mine"),
        );
        assert_eq!(
            d.take_session_cookie(&mut two).as_deref(),
            Some("ambiguous")
        );
        assert!(two.get(header::COOKIE).is_none());
    }

    #[test]
    fn an_https_public_url_makes_a_host_prefixed_secure_cookie() {
        let d = dashboard("https://keys.example.com");
        let cookie = d.cookie("ss-x", 60);
        let cookie = cookie.to_str().unwrap();
        assert!(
            cookie.starts_with("__Host-stanna_session=ss-x; Path=/; HttpOnly; SameSite=Strict")
        );
        assert!(cookie.ends_with("; Secure"), "{cookie}");
        let plain = dashboard("http://localhost:8080").cookie("ss-x", 60);
        assert!(!plain.to_str().unwrap().contains("Secure"));
    }

    #[test]
    fn state_changing_cookie_calls_need_json_same_origin_and_the_token() {
        let d = dashboard("http://localhost:8080");
        let token = "ss-session";
        let good = || {
            let mut h = HeaderMap::new();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(
                header::ORIGIN,
                HeaderValue::from_static("http://localhost:8080"),
            );
            h.insert(
                CSRF_HEADER,
                HeaderValue::try_from(csrf_token(token)).unwrap(),
            );
            h
        };
        assert_eq!(d.check_csrf(&Method::POST, &good(), token), Ok(()));
        assert_eq!(d.check_csrf(&Method::GET, &HeaderMap::new(), token), Ok(()));
        let mut form = good();
        form.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        assert!(
            d.check_csrf(&Method::POST, &form, token)
                .unwrap_err()
                .contains("Content-Type")
        );
        let mut cross = good();
        cross.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(
            d.check_csrf(&Method::DELETE, &cross, token)
                .unwrap_err()
                .contains("origin")
        );
        let mut no_origin = good();
        no_origin.remove(header::ORIGIN);
        assert!(d.check_csrf(&Method::PATCH, &no_origin, token).is_err());
        no_origin.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert_eq!(d.check_csrf(&Method::PATCH, &no_origin, token), Ok(()));
        let mut null = good();
        null.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(d.check_csrf(&Method::PATCH, &null, token).is_err());
        null.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(d.check_csrf(&Method::PATCH, &null, token).is_err());
        null.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert_eq!(d.check_csrf(&Method::PATCH, &null, token), Ok(()));
        let mut wrong = good();
        wrong.insert(CSRF_HEADER, HeaderValue::from_static("00"));
        assert!(
            d.check_csrf(&Method::POST, &wrong, token)
                .unwrap_err()
                .contains("X-CSRF-Token")
        );
        assert!(d.check_csrf(&Method::POST, &good(), "ss-other").is_err());
    }

    #[test]
    fn the_script_never_writes_to_the_console_or_browser_storage() {
        for forbidden in [
            "console.",
            "localStorage",
            "sessionStorage",
            "document.cookie",
            "indexedDB",
        ] {
            assert!(!APP_JS.contains(forbidden), "app.js uses {forbidden}");
        }
        assert!(!INDEX_HTML.contains("<script>") && !INDEX_HTML.contains("style="));
    }

    #[test]
    fn only_the_base_and_below_are_dashboard_paths() {
        assert!(is_dashboard_path("/settings/api-keys"));
        assert!(is_dashboard_path("/settings/api-keys/session"));
        assert!(!is_dashboard_path("/settings/api-keysx"));
        assert!(!is_dashboard_path("/settings"));
    }
}
