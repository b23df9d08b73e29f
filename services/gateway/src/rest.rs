//! The REST translation of the key API (DESIGN §5): each route is one KeyRegistry call made with
//! the gateway's admin token, always inside the calling key's workspace and as its user — the
//! `workspace_id` and `user_id` come from the verified key, never from the request, so a key sees
//! and changes only its own user's keys.
//!
//! Bodies are proto3 JSON, parsed field by field so that every refusal names its field; unknown
//! fields are refused, and so are fields that would name a workspace, a user or rate limits (keys
//! made here get the default limits: a caller cannot raise its own).

use axum::Extension;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};
use stanna_proto::keys::v1 as pb;
use stanna_proto::keys::v1::key_registry_client::KeyRegistryClient;
use tower_http::limit::RequestBodyLimitLayer;

use crate::Gateway;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::json;

/// The largest REST body accepted (a key's name and expiry fit many times over).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The REST routes, with the body limit that applies to them only (proxied bodies stream and
/// are not limited here).
pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/v1/keys", post(create_key).get(list_keys))
        .route(
            "/v1/keys/{id}",
            get(get_key).patch(update_key).delete(delete_key),
        )
        .route("/v1/keys/{id}/rotate", post(rotate_key))
        .route("/v1/me", get(me))
        // Bodies over the limit are refused before they are read (Content-Length: tower-http's
        // bare 413, tagged here so the error layer writes our JSON) or while being read
        // (`read_object`). Only the REST routes: the upstream's own 413s pass through untouched.
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        // Outside the limit (axum's last `.layer` is the outermost), so it sees the limit's 413.
        .layer(axum::middleware::map_response(tag_body_limit))
}

/// Marks tower-http's bare 413 as [`ApiError::PayloadTooLarge`].
async fn tag_body_limit(response: Response) -> Response {
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE
        && response.extensions().get::<ApiError>().is_none()
    {
        return ApiError::PayloadTooLarge.into_response();
    }
    response
}

/// The key id of a REST path; a path that does not even decode is a 400 naming `id`.
fn key_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id).map_err(|_| {
        ApiError::invalid(
            "id",
            "id: must be a key id (12 characters of 0-9, A-Z, a-z)",
        )
    })
}

/// `POST /v1/keys`: 201 with `{key, secret}`; the only time the secret is shown.
async fn create_key(
    State(gateway): State<Gateway>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> Result<Response, ApiError> {
    let body = read_object(request, true).await?;
    let mut name = None;
    let mut expires_at = None;
    for (field, value) in body {
        match field.as_str() {
            "name" => name = Some(string_field("name", value)?),
            "expiresAt" | "expires_at" => {
                expires_at = optional_string("expiresAt", value)?
                    .map(|text| json::parse_timestamp(&text))
                    .transpose()
                    .map_err(|e| ApiError::invalid("expiresAt", format!("expiresAt: {e}")))?;
            }
            other => return Err(refused_field(other)),
        }
    }
    let name = name.ok_or_else(|| ApiError::invalid("name", "name: is required"))?;
    let created = registry(&gateway)
        .create_key(pb::CreateKeyRequest {
            workspace_id: caller.workspace_id,
            user_id: caller.user_id,
            name,
            expires_at,
            rate_limits: Vec::new(),
        })
        .await
        .map_err(from_registry)?
        .into_inner();
    Ok(json_response(
        StatusCode::CREATED,
        &key_and_secret(created.key.as_ref(), &created.secret),
    ))
}

/// `GET /v1/keys?pageSize=&pageToken=`: newest first.
async fn list_keys(
    State(gateway): State<Gateway>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> Result<Response, ApiError> {
    let mut page_size = 0;
    let mut page_token = String::new();
    for (name, value) in request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
    {
        match name {
            "pageSize" | "page_size" => {
                page_size = value.parse().map_err(|_| {
                    ApiError::invalid(
                        "pageSize",
                        format!("pageSize: must be a whole number from 0 to 100, got {value:?}"),
                    )
                })?;
            }
            "pageToken" | "page_token" => value.clone_into(&mut page_token),
            other => {
                return Err(ApiError::invalid(
                    other,
                    format!("{other}: unknown query parameter (known: pageSize, pageToken)"),
                ));
            }
        }
    }
    let page = registry(&gateway)
        .list_keys(pb::ListKeysRequest {
            workspace_id: caller.workspace_id,
            user_id: caller.user_id,
            page_size,
            page_token,
        })
        .await
        .map_err(from_registry)?
        .into_inner();
    let mut object = Map::new();
    object.insert(
        "keys".into(),
        page.keys
            .iter()
            .map(json::api_key)
            .collect::<Vec<_>>()
            .into(),
    );
    if !page.next_page_token.is_empty() {
        object.insert("nextPageToken".into(), page.next_page_token.into());
    }
    Ok(json_response(StatusCode::OK, &Value::Object(object)))
}

/// `GET /v1/keys/{id}`.
async fn get_key(
    State(gateway): State<Gateway>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = key_id(id)?;
    let key = registry(&gateway)
        .get_key(pb::GetKeyRequest {
            workspace_id: caller.workspace_id,
            user_id: caller.user_id,
            key_id: id,
        })
        .await
        .map_err(from_registry)?
        .into_inner();
    Ok(json_response(StatusCode::OK, &json::api_key(&key)))
}

/// `PATCH /v1/keys/{id}` with `{name?, status?}`: merge semantics (absent fields are kept).
async fn update_key(
    State(gateway): State<Gateway>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let id = key_id(id)?;
    let body = read_object(request, true).await?;
    let mut name = None;
    let mut status = pb::KeyStatus::Unspecified;
    for (field, value) in body {
        match field.as_str() {
            "name" => name = optional_string("name", value)?,
            "status" => status = key_status(value)?,
            other => return Err(refused_field(other)),
        }
    }
    let key = registry(&gateway)
        .update_key(pb::UpdateKeyRequest {
            workspace_id: caller.workspace_id,
            user_id: caller.user_id,
            key_id: id,
            name,
            status: status.into(),
        })
        .await
        .map_err(from_registry)?
        .into_inner();
    Ok(json_response(StatusCode::OK, &json::api_key(&key)))
}

/// `DELETE /v1/keys/{id}`: 204; deleting twice is 404.
async fn delete_key(
    State(gateway): State<Gateway>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = key_id(id)?;
    registry(&gateway)
        .delete_key(pb::DeleteKeyRequest {
            workspace_id: caller.workspace_id,
            user_id: caller.user_id,
            key_id: id,
        })
        .await
        .map_err(from_registry)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/keys/{id}/rotate` with an optional `{gracePeriod}`: 200 with `{key, secret}`.
async fn rotate_key(
    State(gateway): State<Gateway>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let id = key_id(id)?;
    let body = read_object(request, false).await?;
    let mut grace_period = None;
    for (field, value) in body {
        match field.as_str() {
            "gracePeriod" | "grace_period" => {
                grace_period = optional_string("gracePeriod", value)?
                    .map(|text| json::parse_duration(&text))
                    .transpose()
                    .map_err(|e| ApiError::invalid("gracePeriod", format!("gracePeriod: {e}")))?;
            }
            other => return Err(refused_field(other)),
        }
    }
    let rotated = registry(&gateway)
        .rotate_key(pb::RotateKeyRequest {
            workspace_id: caller.workspace_id,
            user_id: caller.user_id,
            key_id: id,
            grace_period,
        })
        .await
        .map_err(from_registry)?
        .into_inner();
    Ok(json_response(
        StatusCode::OK,
        &key_and_secret(rotated.key.as_ref(), &rotated.secret),
    ))
}

/// `GET /v1/me`: who the caller is and its windows after this request.
async fn me(Extension(caller): Extension<Caller>) -> Response {
    let windows: Vec<Value> = caller.windows.iter().map(json::window).collect();
    json_response(
        StatusCode::OK,
        &json!({
            "workspaceId": caller.workspace_id,
            "userId": caller.user_id,
            "keyId": caller.key_id,
            "name": caller.name,
            "windows": windows,
        }),
    )
}

/// A client for the registry with the admin token on every call.
fn registry(
    gateway: &Gateway,
) -> KeyRegistryClient<
    tonic::service::interceptor::InterceptedService<stanna_grpc::Transport, crate::AdminBearer>,
> {
    KeyRegistryClient::with_interceptor(
        gateway.inner.registry.clone(),
        gateway.inner.admin_bearer.clone(),
    )
}

fn key_and_secret(key: Option<&pb::ApiKey>, secret: &str) -> Value {
    json!({
        "key": key.map(json::api_key),
        "secret": secret,
    })
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    let mut response = Response::new(Body::from(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Reads the body as one JSON object; an empty body is `{}` unless `required`.
async fn read_object(request: Request, required: bool) -> Result<Map<String, Value>, ApiError> {
    let bytes: Bytes = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            let too_large = std::error::Error::source(&err)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || err.to_string().contains("length limit");
            return Err(if too_large {
                ApiError::PayloadTooLarge
            } else {
                ApiError::invalid("body", "body: could not be read")
            });
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return if required {
            Err(ApiError::invalid("body", "body: a JSON object is required"))
        } else {
            Ok(Map::new())
        };
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ApiError::invalid("body", "body: must be a JSON object")),
        Err(e) => Err(ApiError::invalid(
            "body",
            format!(
                "body: not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        )),
    }
}

/// A field this route does not take: named, with why.
fn refused_field(field: &str) -> ApiError {
    let why = match field {
        "rateLimits" | "rate_limits" => {
            "keys made over the API get the default rate limits; an admin sets others"
        }
        "workspaceId" | "workspace_id" | "userId" | "user_id" => {
            "the workspace and user are those of the API key making the request"
        }
        _ => "unknown field",
    };
    ApiError::invalid(field, format!("{field}: {why}"))
}

fn string_field(field: &str, value: Value) -> Result<String, ApiError> {
    optional_string(field, value)?
        .ok_or_else(|| ApiError::invalid(field, format!("{field}: is required")))
}

/// A string, or `None` for JSON `null` (proto3 JSON: null means unset).
fn optional_string(field: &str, value: Value) -> Result<Option<String>, ApiError> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) => Ok(Some(text)),
        other => Err(ApiError::invalid(
            field,
            format!("{field}: must be a string, got {}", json_kind(&other)),
        )),
    }
}

/// A key status by name (or number, as proto3 JSON allows).
fn key_status(value: Value) -> Result<pb::KeyStatus, ApiError> {
    let status = match &value {
        Value::Null => Some(pb::KeyStatus::Unspecified),
        Value::String(name) => pb::KeyStatus::from_str_name(name),
        Value::Number(n) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .and_then(|n| pb::KeyStatus::try_from(n).ok()),
        _ => None,
    };
    match status {
        Some(pb::KeyStatus::Unspecified) if !value.is_null() => None,
        other => other,
    }
    .ok_or_else(|| {
        ApiError::invalid(
            "status",
            "status: must be \"KEY_STATUS_ACTIVE\" or \"KEY_STATUS_INACTIVE\"",
        )
    })
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The one mapping from a registry answer to the REST contract.
fn from_registry(status: tonic::Status) -> ApiError {
    match status.code() {
        tonic::Code::InvalidArgument => {
            let message = status.message();
            let (field, rest) = message.split_once(':').unwrap_or(("body", message));
            let field = rest_field_name(field.trim());
            ApiError::invalid(field.clone(), format!("{field}:{rest}"))
        }
        tonic::Code::NotFound => {
            ApiError::NotFound("no key with this id among your keys".to_owned())
        }
        tonic::Code::ResourceExhausted => ApiError::TooManyKeys(status.message().to_owned()),
        tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists => {
            // The registry names its field first (`key_id: …`); say it the REST way.
            let message = status.message();
            ApiError::Conflict(match message.split_once(':') {
                Some((field, rest)) if !field.contains(' ') => {
                    format!("{}:{rest}", rest_field_name(field))
                }
                _ => message.to_owned(),
            })
        }
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            tracing::warn!(code = ?status.code(), message = status.message(), "key-registry unavailable");
            ApiError::Unavailable
        }
        code => {
            // UNAUTHENTICATED here means the gateway's admin token differs from the registry's.
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
    let mut out = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
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
    fn invalid_argument_from_the_registry_names_the_rest_field() {
        let error = from_registry(tonic::Status::invalid_argument(
            "expires_at: must be in the future",
        ));
        assert_eq!(
            error,
            ApiError::invalid("expiresAt", "expiresAt: must be in the future")
        );
    }

    #[test]
    fn statuses_parse_by_name_or_number_and_unspecified_is_refused() {
        assert_eq!(
            key_status(json!("KEY_STATUS_INACTIVE")).unwrap(),
            pb::KeyStatus::Inactive
        );
        assert_eq!(key_status(json!(1)).unwrap(), pb::KeyStatus::Active);
        assert_eq!(key_status(Value::Null).unwrap(), pb::KeyStatus::Unspecified);
        for bad in [
            json!("KEY_STATUS_UNSPECIFIED"),
            json!("active"),
            json!(7),
            json!(true),
        ] {
            assert!(key_status(bad.clone()).is_err(), "{bad}");
        }
    }
}
