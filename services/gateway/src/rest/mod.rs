//! The REST translation of the key API: each route is one KeyRegistry call made with the
//! gateway's own credential for the calling key or session, inside its workspace and as its
//! user (`handlers.rs`).
//!
//! - `types.rs`: the bodies (serde, proto3's JSON mapping) with their derived schemas;
//! - `extract.rs`: body, query and path extractors whose refusals name the field;
//! - `json.rs`: timestamps (`…Z`) and durations (`"3600s"`) with their hand-written schemas;
//! - `errors.rs`: the error answers as the document lists them.
//!
//! The routes are registered through utoipa-axum's [`OpenApiRouter`], so the router and the
//! OpenAPI document are built from the same `#[utoipa::path]` of each handler: a route cannot be
//! served undocumented or documented unserved.

pub mod errors;
pub mod extract;
pub mod handlers;
pub mod json;
pub mod types;

use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::response::Response;
use http::{StatusCode, header};
use serde::Serialize;
use stanna_proto::keys::v1::key_registry_client::KeyRegistryClient;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Gateway;
use crate::error::ApiError;

/// The largest REST body accepted (a key's name and expiry fit many times over).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The REST routes with their documentation, and the body limit that applies to them only
/// (proxied bodies stream and are not limited here).
pub fn routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new()
        .routes(routes!(handlers::create_key, handlers::list_keys))
        .routes(routes!(
            handlers::get_key,
            handlers::update_key,
            handlers::delete_key
        ))
        .routes(routes!(handlers::rotate_key))
        .routes(routes!(handlers::key_usage))
        .routes(routes!(handlers::keys_usage))
        .routes(routes!(handlers::me))
        .routes(routes!(handlers::audit))
        // Read by the body extractor: a body over it is 413 while it is read.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Every REST route, also those that read no body: a Content-Length over the limit is
        // refused before anything runs (tower-http's bare 413, tagged so the error layer writes
        // our JSON). Only the REST routes: the upstream's own 413s pass through untouched.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            MAX_BODY_BYTES,
        ))
        // Outside the limit (the last `.layer` is the outermost), so it sees the limit's 413.
        .layer(axum::middleware::map_response(tag_body_limit))
}

/// Marks tower-http's bare 413 as [`ApiError::PayloadTooLarge`].
async fn tag_body_limit(response: axum::response::Response) -> axum::response::Response {
    if response.status() == http::StatusCode::PAYLOAD_TOO_LARGE
        && response.extensions().get::<ApiError>().is_none()
    {
        return axum::response::IntoResponse::into_response(ApiError::PayloadTooLarge);
    }
    response
}

/// A client for the registry with the gateway's credential on every call.
pub(crate) fn registry(
    gateway: &Gateway,
) -> KeyRegistryClient<
    tonic::service::interceptor::InterceptedService<stanna_grpc::Transport, crate::AdminBearer>,
> {
    KeyRegistryClient::with_interceptor(
        gateway.inner.registry.clone(),
        gateway.inner.admin_bearer.clone(),
    )
}

/// `message` as a registry request carrying the HTTP request's id (`x-request-id`), which the
/// registry records with the change it makes.
pub(crate) fn with_request_id<T>(
    message: T,
    request_id: Option<&http::HeaderValue>,
) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = request_id
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
    {
        request.metadata_mut().insert("x-request-id", value);
    }
    request
}

/// `value` as a JSON answer with `status`.
fn json(status: StatusCode, value: &impl Serialize) -> Response {
    // Serializing these types into a Vec cannot fail (string keys, no maps of other keys).
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    // Keys and their metadata are user data: no cache keeps them, no browser sniffs them.
    headers.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    response
}

/// The one mapping from a registry answer to the REST contract. The field at fault comes from
/// the status's typed details (`google.rpc.BadRequest`, `PreconditionFailure`), never its text.
pub(crate) fn from_registry(status: tonic::Status) -> ApiError {
    match status.code() {
        tonic::Code::InvalidArgument => match stanna_grpc::status::field_violation(&status) {
            Some((field, reason)) => {
                let field = rest_field_name(&field);
                ApiError::invalid(field.clone(), format!("{field}: {reason}"))
            }
            None => ApiError::invalid("body", format!("body: {}", status.message())),
        },
        tonic::Code::NotFound => {
            ApiError::NotFound("no key with this id among your keys".to_owned())
        }
        tonic::Code::ResourceExhausted => ApiError::TooManyKeys(status.message().to_owned()),
        tonic::Code::PermissionDenied => ApiError::InsufficientScope {
            scope: stanna_grpc::status::escalated_scope(&status).unwrap_or_default(),
            message: status.message().to_owned(),
        },
        tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists => {
            ApiError::Conflict(match stanna_grpc::status::precondition_violation(&status) {
                Some((_, subject, reason)) => format!("{}: {reason}", rest_field_name(&subject)),
                None => status.message().to_owned(),
            })
        }
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            static UNAVAILABLE: stanna_telemetry::LogLimiter =
                stanna_telemetry::LogLimiter::new(std::time::Duration::from_secs(10));
            if let Some(held_back) = UNAVAILABLE.allow() {
                tracing::warn!(code = ?status.code(), error = %stanna_telemetry::ErrorChain(&status), held_back, "key-registry unavailable");
            }
            ApiError::Unavailable
        }
        tonic::Code::Unauthenticated => {
            // The gateway's token differs from the registry's: a misconfiguration of this
            // deployment, not the caller's fault, and it ends when the tokens agree (`/readyz`
            // says so meanwhile).
            static REFUSED: stanna_telemetry::LogLimiter =
                stanna_telemetry::LogLimiter::new(std::time::Duration::from_secs(10));
            if let Some(held_back) = REFUSED.allow() {
                tracing::error!(
                    held_back,
                    "the key-registry refuses this gateway's credential: give both the same STANNA_GATEWAY_TOKEN"
                );
            }
            ApiError::Unavailable
        }
        code => {
            tracing::error!(
                ?code,
                message = status.message(),
                "key-registry call failed"
            );
            ApiError::Internal
        }
    }
}

/// A registry field name (`expires_at`, `key_id`) as the REST client spells it.
fn rest_field_name(field: &str) -> String {
    if field == "key_id" {
        return "id".to_owned();
    }
    extract::lower_camel_case(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_field_names_become_rest_names() {
        assert_eq!(rest_field_name("expires_at"), "expiresAt");
        assert_eq!(rest_field_name("page_token"), "pageToken");
        assert_eq!(rest_field_name("key_id"), "id");
        assert_eq!(rest_field_name("name"), "name");
    }

    #[test]
    fn the_field_comes_from_the_details_not_the_message() {
        let error = from_registry(stanna_grpc::status::invalid_argument(
            "expires_at",
            "must be in the future",
        ));
        assert_eq!(
            error,
            ApiError::invalid("expiresAt", "expiresAt: must be in the future")
        );
        let rotated = from_registry(stanna_grpc::status::failed_precondition(
            "ALREADY_ROTATED",
            "key_id",
            "rotate AbC instead",
        ));
        assert_eq!(rotated, ApiError::Conflict("id: rotate AbC instead".into()));
    }

    #[test]
    fn a_registry_of_the_previous_release_still_names_the_field() {
        // No BadRequest detail (a rolling upgrade): the message's leading field path.
        let error = from_registry(tonic::Status::invalid_argument(
            "expires_at: must be in the future",
        ));
        assert_eq!(
            error,
            ApiError::invalid("expiresAt", "expiresAt: must be in the future")
        );
    }
}
