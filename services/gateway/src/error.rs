//! Every way a public request can fail, and the one table mapping each to an HTTP status, a stable
//! `code`, and the headers the README promises (`WWW-Authenticate` on 401, `Retry-After` on 429 and
//! 503).
//!
//! Handlers and middleware return an [`ApiError`]; it travels to the client as a response whose
//! extensions hold the error and whose body is still empty. [`render_errors`], the one layer just
//! inside the request-id layer, writes the JSON body there, because only it knows the request id
//! and it keeps every error body in one shape: `{"error":{"code","message","field"?,"request_id"}}`.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// Every error answer's body: `{"error": {"code", "message", "field"?, "request_id"}}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    /// What went wrong.
    #[schema(inline)]
    pub error: ErrorDetail<'a>,
}

/// The error itself.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail<'a> {
    /// A stable code (the README's troubleshooting table lists each).
    #[schema(value_type = ErrorCode)]
    pub code: &'a str,
    /// In words: what is wrong and what to do.
    pub message: &'a str,
    /// For `invalid_request`: the body field, parameter or header at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub field: Option<&'a str>,
    /// For `insufficient_scope`: the scope the key lacks (`*`: a key with every permission).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub scope: Option<&'a str>,
    /// This request's id, also in `X-Request-Id`: quote it when reporting a problem.
    pub request_id: &'a str,
}

/// Every error code, for the document (the table of [`ApiError::parts`] produces them).
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum ErrorCode {
    MissingApiKey,
    MalformedApiKey,
    InvalidApiKey,
    InactiveApiKey,
    ExpiredApiKey,
    WorkspaceMismatch,
    InsufficientScope,
    AmbiguousApiKey,
    InvalidSession,
    CsrfFailed,
    RateLimited,
    InvalidRequest,
    PayloadTooLarge,
    NotFound,
    MethodNotAllowed,
    TooManyKeys,
    Conflict,
    BadGateway,
    GatewayTimeout,
    Unavailable,
    Internal,
}

/// What went wrong, in the terms of the public HTTP contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// No credential (`missing_api_key`, 401).
    MissingApiKey,
    /// Not a key of our format; the message says which part (`malformed_api_key`, 401).
    MalformedApiKey(String),
    /// Unknown or deleted key (`invalid_api_key`, 401).
    InvalidApiKey,
    /// The key is deactivated (`inactive_api_key`, 401).
    InactiveApiKey,
    /// The key is past its `expires_at`, or was rotated out; the message says which and names
    /// the replacement (`expired_api_key`, 401).
    ExpiredApiKey(String),
    /// `X-Workspace-Id` names another workspace (`workspace_mismatch`, 403).
    WorkspaceMismatch,
    /// The key lacks a scope the route requires, is scoped on a route mapped to none, or would
    /// manage a key beyond its own scopes (`insufficient_scope`, 403; `scope` names it, `*` for
    /// "every permission").
    InsufficientScope {
        /// The scope missing; empty when the route is mapped to none.
        scope: String,
        /// What the client is told.
        message: String,
    },
    /// Two different keys were sent (`ambiguous_api_key`, 400); the message says where.
    AmbiguousApiKey(&'static str),
    /// The dashboard session cookie is unknown, signed out, revoked or past its end
    /// (`invalid_session`, 401): sign in again.
    InvalidSession(&'static str),
    /// A state-changing call made with the session cookie lacks `Content-Type:
    /// application/json`, a same-origin `Origin` / `Sec-Fetch-Site`, or the session's
    /// `X-CSRF-Token` (`csrf_failed`, 403); the message says which.
    CsrfFailed(&'static str),
    /// A window is exhausted, or the key id's failure budget is spent (`rate_limited`, 429).
    RateLimited {
        /// What the client is told.
        message: String,
        /// When the next request of the same cost would be admitted.
        retry_after: Duration,
    },
    /// A body, parameter or header is invalid (`invalid_request`, 400).
    InvalidRequest {
        /// The offending field, as the client spelled it (`name`, `pageSize`, `X-Workspace-Id`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The body is larger than the REST layer accepts (`payload_too_large`, 413).
    PayloadTooLarge,
    /// Unknown route, or a key id the caller cannot see (`not_found`, 404).
    NotFound(String),
    /// The route exists but not with this method (`method_not_allowed`, 405).
    MethodNotAllowed,
    /// The user holds `STANNA_MAX_KEYS_PER_USER` keys already (`too_many_keys`, 409).
    TooManyKeys(String),
    /// The request conflicts with the key's state, e.g. rotating a key twice (`conflict`, 409).
    Conflict(String),
    /// The upstream could not be reached or broke the exchange (`bad_gateway`, 502).
    BadGateway,
    /// The upstream did not answer within `STANNA_UPSTREAM_TIMEOUT` (`gateway_timeout`, 504).
    GatewayTimeout,
    /// auth-check (or the registry) is unreachable, too slow, or answered `UNAVAILABLE`
    /// (`unavailable`, 503).
    Unavailable,
    /// A bug; details are logged with the request id, never sent (`internal`, 500).
    Internal,
}

impl ApiError {
    /// The HTTP status, the stable code and the client-facing message: the one table.
    pub fn parts(&self) -> (StatusCode, &'static str, &str) {
        match self {
            Self::MissingApiKey => (
                StatusCode::UNAUTHORIZED,
                "missing_api_key",
                "no API key: send \"Authorization: Bearer sk-…\" or \"X-API-Key: sk-…\"",
            ),
            Self::MalformedApiKey(message) => {
                (StatusCode::UNAUTHORIZED, "malformed_api_key", message)
            }
            Self::InvalidApiKey => (
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "this API key does not exist or was deleted",
            ),
            Self::InactiveApiKey => (
                StatusCode::UNAUTHORIZED,
                "inactive_api_key",
                "this API key is deactivated; reactivate it or use another key",
            ),
            Self::ExpiredApiKey(message) => (StatusCode::UNAUTHORIZED, "expired_api_key", message),
            Self::WorkspaceMismatch => (
                StatusCode::FORBIDDEN,
                "workspace_mismatch",
                "this API key belongs to another workspace than X-Workspace-Id names",
            ),
            Self::InsufficientScope { message, .. } => {
                (StatusCode::FORBIDDEN, "insufficient_scope", message)
            }
            Self::AmbiguousApiKey(message) => {
                (StatusCode::BAD_REQUEST, "ambiguous_api_key", message)
            }
            Self::InvalidSession(message) => (StatusCode::UNAUTHORIZED, "invalid_session", message),
            Self::CsrfFailed(message) => (StatusCode::FORBIDDEN, "csrf_failed", message),
            Self::RateLimited { message, .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
            }
            Self::InvalidRequest { message, .. } => {
                (StatusCode::BAD_REQUEST, "invalid_request", message)
            }
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than this endpoint accepts",
            ),
            Self::NotFound(message) => (StatusCode::NOT_FOUND, "not_found", message),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept this method",
            ),
            Self::TooManyKeys(message) => (StatusCode::CONFLICT, "too_many_keys", message),
            Self::Conflict(message) => (StatusCode::CONFLICT, "conflict", message),
            Self::BadGateway => (
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "the upstream service could not be reached",
            ),
            Self::GatewayTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "gateway_timeout",
                "the upstream service did not answer in time",
            ),
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "API keys cannot be checked right now; retry shortly",
            ),
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; report the request id",
            ),
        }
    }

    /// The field a 400 names.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::InvalidRequest { field, .. } => Some(field),
            _ => None,
        }
    }

    /// The `Retry-After` a 429 or 503 carries: whole seconds, rounded up, at least 1.
    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after, .. } => Some(whole_seconds_at_least_one(*retry_after)),
            Self::Unavailable => Some(1),
            _ => None,
        }
    }

    /// A 400 naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The complete response: status, headers and the JSON body with `request_id`.
    pub fn to_response(&self, request_id: &str) -> Response {
        let (status, code, message) = self.parts();
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message,
                field: self.field(),
                scope: match self {
                    Self::InsufficientScope { scope, .. } if !scope.is_empty() => Some(scope),
                    _ => None,
                },
                request_id,
            },
        };
        // Plain strings into a Vec: serializing cannot fail.
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3.1: no error attribute when the request carried no credential at all.
            let challenge = if matches!(self, Self::MissingApiKey | Self::InvalidSession(_)) {
                "Bearer realm=\"stanna\""
            } else {
                "Bearer realm=\"stanna\", error=\"invalid_token\""
            };
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let Self::InsufficientScope { scope, .. } = self {
            // RFC 6750 §3.1; scope names need no escaping inside the quoted string.
            let challenge = if scope.is_empty() {
                "Bearer realm=\"stanna\", error=\"insufficient_scope\"".to_owned()
            } else {
                format!("Bearer realm=\"stanna\", error=\"insufficient_scope\", scope=\"{scope}\"")
            };
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                headers.insert(header::WWW_AUTHENTICATE, value);
            }
        }
        if let Some(seconds) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl IntoResponse for ApiError {
    /// An empty response carrying the error; [`render_errors`] writes the body.
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = self.parts().0;
        response.extensions_mut().insert(self);
        response
    }
}

/// Whole seconds, rounded up, at least 1 (`Retry-After`, the `t` of `RateLimit`).
pub fn whole_seconds_at_least_one(duration: Duration) -> u64 {
    let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    seconds.max(1)
}

/// Middleware: turns a response carrying an [`ApiError`] into the full JSON error, with the
/// request id the request-id layer set. Every other response (the upstream's included, whatever
/// its status) passes untouched.
pub async fn render_errors(request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(crate::REQUEST_ID)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("-"));
    let mut response = next.run(request).await;
    let Some(error) = response.extensions_mut().remove::<ApiError>() else {
        return response;
    };
    let request_id = request_id.to_str().unwrap_or("-");
    if matches!(error, ApiError::Internal) {
        tracing::error!(request_id, "request failed with an internal error");
    }
    let mut rendered = error.to_response(request_id);
    // Keep what inner layers added (rate-limit headers on a 429 or a REST 4xx), never a framing
    // header that described another body.
    for (name, value) in response.headers() {
        let framing = name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING;
        if !framing && !rendered.headers().contains_key(name) {
            rendered.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rendered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_at_least_one() {
        assert_eq!(whole_seconds_at_least_one(Duration::ZERO), 1);
        assert_eq!(whole_seconds_at_least_one(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds_at_least_one(Duration::from_millis(1000)), 1);
        assert_eq!(whole_seconds_at_least_one(Duration::from_millis(1001)), 2);
        assert_eq!(whole_seconds_at_least_one(Duration::from_secs(59)), 59);
    }

    #[tokio::test]
    async fn the_body_names_code_message_field_and_request_id() {
        use http_body_util::BodyExt as _;
        let response = ApiError::invalid("name", "name: must not be empty").to_response("req-1");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": {
                "code": "invalid_request",
                "message": "name: must not be empty",
                "field": "name",
                "request_id": "req-1",
            }})
        );
    }

    #[test]
    fn only_401s_carry_www_authenticate_and_only_429_and_503_retry_after() {
        let all = [
            ApiError::MissingApiKey,
            ApiError::InvalidApiKey,
            ApiError::WorkspaceMismatch,
            ApiError::RateLimited {
                message: "slow down".into(),
                retry_after: Duration::from_millis(1500),
            },
            ApiError::Unavailable,
            ApiError::BadGateway,
        ];
        for error in all {
            let response = error.to_response("r");
            let status = response.status();
            assert_eq!(
                response.headers().contains_key(header::WWW_AUTHENTICATE),
                status == StatusCode::UNAUTHORIZED,
                "{error:?}"
            );
            assert_eq!(
                response.headers().contains_key(header::RETRY_AFTER),
                status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::SERVICE_UNAVAILABLE,
                "{error:?}"
            );
        }
        let limited = ApiError::RateLimited {
            message: "m".into(),
            retry_after: Duration::from_millis(1500),
        }
        .to_response("r");
        assert_eq!(limited.headers()[header::RETRY_AFTER], "2");
    }
}
