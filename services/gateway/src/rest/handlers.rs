//! The REST key API's handlers: each is one KeyRegistry call made with the gateway's own
//! credential for the calling key or session (named in the call), always inside its workspace
//! and as its user — `workspace_id` and `user_id` come
//! from the verified key ([`Caller`]), never from the request. Each handler's `#[utoipa::path]`
//! is its entry in the OpenAPI document, next to the code it describes.

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use stanna_proto::keys::v1 as pb;

use super::errors::{Conflict, KeyErrors, NotFound, TooLarge};
use super::extract::{JsonBody, KeyIdPath, QueryParams, RequestIdHeader};
use super::types::{
    ApiKeyJson, AuditEventJson, AuditListJson, AuditQuery, CreateKeyBody, CreatedKeyJson,
    KeyListJson, ListKeysQuery, MeJson, RotateKeyBody, UpdateKeyBody, UsageJson, UsageManyQuery,
    UsageQuery, WindowJson,
};
use super::{from_registry, json, registry};
use crate::Gateway;
use crate::auth::{Caller, CallerKind, SessionCaller};
use crate::error::ApiError;

/// The tag every key-API operation carries.
const KEYS: &str = "keys";

/// Creates a key for the caller's own user: 201 with `{key, secret}` — the only time the secret
/// is shown. Keys made here get the default rate limits (a caller cannot raise its own).
#[utoipa::path(post, path = "/v1/keys", tag = KEYS, request_body = CreateKeyBody,
    responses((status = 201, description = "The key and its secret, shown once", body = CreatedKeyJson),
        Conflict, TooLarge, KeyErrors))]
pub async fn create_key(
    State(gateway): State<Gateway>,
    Extension(caller): Extension<Caller>,
    RequestIdHeader(request_id): RequestIdHeader,
    JsonBody(body): JsonBody<CreateKeyBody>,
) -> Result<Response, ApiError> {
    let name = body
        .name
        .ok_or_else(|| ApiError::invalid("name", "name: is required"))?;
    let created = registry(&gateway)
        .create_key(acting(
            &caller,
            request_id.as_ref(),
            pb::CreateKeyRequest {
                workspace_id: caller.workspace_id.clone(),
                user_id: caller.user_id.clone(),
                name,
                expires_at: body.expires_at.map(|t| t.0),
                scopes: body.scopes.unwrap_or_default(),
                ..Default::default()
            },
        )?)
        .await
        .map_err(from_registry)?
        .into_inner();
    Ok(json(
        StatusCode::CREATED,
        &created_key(created.key.as_ref(), created.secret),
    ))
}

/// Lists the caller's own keys, newest first, a page at a time; optionally only those whose name
/// contains some text, of one status, or not used for some days (all given must hold).
#[utoipa::path(get, path = "/v1/keys", tag = KEYS, params(ListKeysQuery),
    responses((status = 200, description = "One page of keys", body = KeyListJson), KeyErrors))]
pub async fn list_keys(
    State(gateway): State<Gateway>,
    Extension(caller): Extension<Caller>,
    RequestIdHeader(request_id): RequestIdHeader,
    QueryParams(query): QueryParams<ListKeysQuery>,
) -> Result<Response, ApiError> {
    let page = registry(&gateway)
        .list_keys(acting(
            &caller,
            request_id.as_ref(),
            pb::ListKeysRequest {
                user_id: acting_user(&caller, true),
                workspace_id: caller.workspace_id.clone(),
                page_size: query.page_size.map_or(0, |s| s.0),
                page_token: query.page_token.unwrap_or_default(),
                name_contains: query.name_contains.unwrap_or_default(),
                status: query.status.map_or(0, |s| s.to_proto() as i32),
                unused_for_days: query.unused_for_days.map_or(0, |d| d.0),
            },
        )?)
        .await
        .map_err(from_registry)?
        .into_inner();
    let list = KeyListJson {
        keys: page.keys.iter().map(ApiKeyJson::from).collect(),
        next_page_token: Some(page.next_page_token).filter(|t| !t.is_empty()),
    };
    Ok(json(StatusCode::OK, &list))
}

/// One of the caller's keys.
#[utoipa::path(get, path = "/v1/keys/{id}", tag = KEYS, params(("id" = String, Path, description = "The key id")),
    responses((status = 200, description = "The key", body = ApiKeyJson), NotFound, KeyErrors))]
pub async fn get_key(
    State(gateway): State<Gateway>,
    Extension(caller): Extension<Caller>,
    RequestIdHeader(request_id): RequestIdHeader,
    KeyIdPath(id): KeyIdPath,
) -> Result<Response, ApiError> {
    let key = registry(&gateway)
        .get_key(acting(
            &caller,
            request_id.as_ref(),
            pb::GetKeyRequest {
                user_id: acting_user(&caller, true),
                workspace_id: caller.workspace_id.clone(),
                key_id: id,
            },
        )?)
        .await
        .map_err(from_registry)?
        .into_inner();
    Ok(json(StatusCode::OK, &ApiKeyJson::from(&key)))
}

/// One of the caller's keys' requests per hour over the last `days` (default 7), by outcome:
/// admitted, rate-limited, inactive, expired, forbidden. Counted by auth-check and written every
/// few seconds, so the newest requests may take that long to show.
#[utoipa::path(get, path = "/v1/keys/{id}/usage", tag = KEYS,
    params(("id" = String, Path, description = "The key id"), UsageQuery),
    responses((status = 200, description = "The key's usage (`keys` holds it alone)", body = UsageJson), NotFound, KeyErrors))]
pub async fn key_usage(
    State(gateway): State<Gateway>,
    Extension(caller): Extension<Caller>,
    RequestIdHeader(request_id): RequestIdHeader,
    KeyIdPath(id): KeyIdPath,
    QueryParams(query): QueryParams<UsageQuery>,
) -> Result<Response, ApiError> {
    // Checked here so a bad id is named `id`, as in the other `/v1/keys/{id}` routes (the
    // registry would name `key_ids[0]`).
    if stanna_keys::KeyId::parse(&id).is_err() {
        return Err(ApiError::invalid(
            "id",
            "id: must be a key id (12 characters of 0-9, A-Z, a-z)",
        ));
    }
    let usage = usage_of(
        &gateway,
        &caller,
        request_id.as_ref(),
        vec![id],
        query.days.map_or(7, |d| d.0),
    )
    .await?;
    if usage.keys.is_empty() {
        return Err(ApiError::NotFound("key not found".into()));
    }
    Ok(json(StatusCode::OK, &UsageJson::from(&usage)))
}

/// The usage of several of the caller's keys at once — a page of `GET /v1/keys`, as the
/// dashboard's sparklines ask for it in one request. Ids that are not the caller's are left out.
#[utoipa::path(get, path = "/v1/keys/usage", tag = KEYS, params(UsageManyQuery),
    responses((status = 200, description = "The keys' usage", body = UsageJson), KeyErrors))]
pub async fn keys_usage(
    State(gateway): State<Gateway>,
    Extension(caller): Extension<Caller>,
    RequestIdHeader(request_id): RequestIdHeader,
    QueryParams(query): QueryParams<UsageManyQuery>,
) -> Result<Response, ApiError> {
    let ids: Vec<String> = query
        .key_ids
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .collect();
    if ids.is_empty() || ids.len() > 100 {
        return Err(ApiError::invalid(
            "keyIds",
            format!(
                "keyIds: must list 1 to 100 key ids, comma-separated, got {}",
                ids.len()
            ),
        ));
    }
    let usage = usage_of(
        &gateway,
        &caller,
        request_id.as_ref(),
        ids,
        query.days.map_or(7, |d| d.0),
    )
    .await?;
    Ok(json(StatusCode::OK, &UsageJson::from(&usage)))
}

async fn usage_of(
    gateway: &Gateway,
    caller: &Caller,
    request_id: Option<&http::HeaderValue>,
    key_ids: Vec<String>,
    days: u32,
) -> Result<pb::GetKeyUsageResponse, ApiError> {
    let end = std::time::SystemTime::now();
    let start = end - std::time::Duration::from_secs(u64::from(days) * 86_400);
    Ok(registry(gateway)
        .get_key_usage(acting(
            caller,
            request_id,
            pb::GetKeyUsageRequest {
                user_id: acting_user(caller, true),
                workspace_id: caller.workspace_id.clone(),
                key_ids,
                start_time: Some(start.into()),
                end_time: Some(end.into()),
            },
        )?)
        .await
        .map_err(from_registry)?
        .into_inner())
}

/// Renames, deactivates or reactivates one of the caller's keys, or moves its expiry earlier
/// (merge semantics: absent fields are kept).
#[utoipa::path(patch, path = "/v1/keys/{id}", tag = KEYS, request_body = UpdateKeyBody,
    params(("id" = String, Path, description = "The key id")),
    responses((status = 200, description = "The key as changed", body = ApiKeyJson), NotFound, Conflict, TooLarge, KeyErrors))]
pub async fn update_key(
    State(gateway): State<Gateway>,
    Extension(caller): Extension<Caller>,
    RequestIdHeader(request_id): RequestIdHeader,
    KeyIdPath(id): KeyIdPath,
    JsonBody(body): JsonBody<UpdateKeyBody>,
) -> Result<Response, ApiError> {
    // An admin may deactivate any member's key, or make it expire sooner; renaming and
    // reactivating stay the owner's (a key its owner turned off, say after a leak, is not the
    // admin's to revive). Both only ever restrict a key.
    let restricts_only = body.name.is_none()
        && body.scopes.is_none()
        && body
            .status
            .is_none_or(|s| s.to_proto() == pb::KeyStatus::Inactive)
        && (body.status.is_some() || body.expires_at.is_some());
    // Scopes need a mask: `[]` (make the key unscoped) is otherwise "no change". The mask then
    // names every field the body sets.
    let update_mask = body.scopes.is_some().then(|| {
        let paths = [
            ("name", body.name.is_some()),
            ("status", body.status.is_some()),
            ("expires_at", body.expires_at.is_some()),
            ("scopes", true),
        ];
        stanna_proto::prost_types::FieldMask {
            paths: paths
                .iter()
                .filter(|(_, set)| *set)
                .map(|(path, _)| (*path).to_owned())
                .collect(),
        }
    });
    let key = registry(&gateway)
        .update_key(acting(
            &caller,
            request_id.as_ref(),
            pb::UpdateKeyRequest {
                user_id: acting_user(&caller, restricts_only),
                workspace_id: caller.workspace_id.clone(),
                key_id: id,
                name: body.name,
                status: body
                    .status
                    .map_or(pb::KeyStatus::Unspecified, |s| s.to_proto())
                    .into(),
                expires_at: body.expires_at.map(|t| t.0),
                // The key API acts for the key's owner: it may shorten a key's life, never
                // extend it.
                expiry_earlier_only: true,
                scopes: body.scopes.unwrap_or_default(),
                update_mask,
                ..Default::default()
            },
        )?)
        .await
        .map_err(from_registry)?
        .into_inner();
    Ok(json(StatusCode::OK, &ApiKeyJson::from(&key)))
}

/// Deletes one of the caller's keys: it is refused everywhere within a second. Deleting twice is
/// 404.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = KEYS, params(("id" = String, Path, description = "The key id")),
    responses((status = 204, description = "Deleted"), NotFound, KeyErrors))]
pub async fn delete_key(
    State(gateway): State<Gateway>,
    Extension(caller): Extension<Caller>,
    RequestIdHeader(request_id): RequestIdHeader,
    KeyIdPath(id): KeyIdPath,
) -> Result<Response, ApiError> {
    registry(&gateway)
        .delete_key(acting(
            &caller,
            request_id.as_ref(),
            pb::DeleteKeyRequest {
                user_id: acting_user(&caller, true),
                workspace_id: caller.workspace_id.clone(),
                key_id: id,
            },
        )?)
        .await
        .map_err(from_registry)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Replaces one of the caller's keys by a new one with the same name, limits and status; the old
/// one keeps working for `gracePeriod` (default: it stops at once) and is listed with its expiry.
/// A key is rotated once: rotating it again is 409, naming its replacement.
#[utoipa::path(post, path = "/v1/keys/{id}/rotate", tag = KEYS, request_body = RotateKeyBody,
    params(("id" = String, Path, description = "The key to replace")),
    responses((status = 200, description = "The replacement and its secret, shown once", body = CreatedKeyJson),
        NotFound, Conflict, TooLarge, KeyErrors))]
pub async fn rotate_key(
    State(gateway): State<Gateway>,
    Extension(caller): Extension<Caller>,
    RequestIdHeader(request_id): RequestIdHeader,
    KeyIdPath(id): KeyIdPath,
    JsonBody(body): JsonBody<RotateKeyBody>,
) -> Result<Response, ApiError> {
    let rotated = registry(&gateway)
        .rotate_key(acting(
            &caller,
            request_id.as_ref(),
            pb::RotateKeyRequest {
                workspace_id: caller.workspace_id.clone(),
                user_id: caller.user_id.clone(),
                key_id: id,
                grace_period: body.grace_period.map(|d| d.0),
            },
        )?)
        .await
        .map_err(from_registry)?
        .into_inner();
    Ok(json(
        StatusCode::OK,
        &created_key(rotated.key.as_ref(), rotated.secret),
    ))
}

/// Who the caller is, and what is left of its limits after this request.
#[utoipa::path(get, path = "/v1/me", tag = KEYS,
    responses((status = 200, description = "The calling key and its windows", body = MeJson), KeyErrors))]
pub async fn me(Extension(caller): Extension<Caller>) -> Response {
    let nonempty = |s: String| Some(s).filter(|s| !s.is_empty());
    let mut me = MeJson {
        credential: "apiKey",
        windows: caller.windows.iter().map(WindowJson::from).collect(),
        workspace_id: caller.workspace_id,
        user_id: caller.user_id,
        key_id: nonempty(caller.key_id),
        name: nonempty(caller.name),
        role: None,
        display_name: None,
        email: None,
        csrf_token: None,
    };
    if let CallerKind::Session(session) = caller.kind {
        let SessionCaller {
            role,
            display_name,
            email,
            csrf_token,
            ..
        } = *session;
        me.credential = "session";
        me.role = Some(role.as_str());
        me.display_name = nonempty(display_name);
        me.email = nonempty(email);
        me.csrf_token = Some(csrf_token);
    }
    json(StatusCode::OK, &me)
}

/// The user a call acts as: the caller's own, or — for a workspace admin's session, on the
/// calls an admin may make across members (list, get, deactivate, delete) — any user of the
/// workspace (empty: the registry then scopes by workspace only).
fn acting_user(caller: &Caller, across_members: bool) -> String {
    if across_members && caller.kind.is_admin() {
        String::new()
    } else {
        caller.user_id.clone()
    }
}

/// `message` as a registry request made for `caller` in the request `request_id`: the API key
/// or session acting is named (`x-stanna-acting-key` / `x-stanna-acting-session`) — the
/// gateway's credential acts for nobody else, so the registry holds the call to that key's
/// scopes and user, and audits it under that key or session — and the request id travels with
/// it, so the audit event names the request the client saw.
fn acting<T>(
    caller: &Caller,
    request_id: Option<&http::HeaderValue>,
    message: T,
) -> Result<tonic::Request<T>, ApiError> {
    let mut request = super::with_request_id(message, request_id);
    let (name, id) = match &caller.kind {
        CallerKind::ApiKey => (ACTING_KEY, caller.key_id.as_str()),
        CallerKind::Session(session) => (ACTING_SESSION, session.session_id.as_str()),
    };
    // Ids are base62, so this cannot fail; if it ever did, the call must not go out at all.
    let value = id.parse().map_err(|_| {
        tracing::error!("a verified key or session id is not valid metadata");
        ApiError::Internal
    })?;
    request.metadata_mut().insert(name, value);
    Ok(request)
}

/// The registry metadata naming the API key a call is made for.
pub const ACTING_KEY: &str = "x-stanna-acting-key";
/// The registry metadata naming the dashboard session a call is made for.
pub const ACTING_SESSION: &str = "x-stanna-acting-session";

/// The audit log of the caller's own keys and sessions, newest first; for a workspace admin's
/// session, the whole workspace's. Each event names who made the change (an admin by their
/// token's name, an API key, or a session), the request, and the changed fields before and
/// after.
#[utoipa::path(get, path = "/v1/audit", tag = KEYS, params(AuditQuery),
    responses((status = 200, description = "One page of events", body = AuditListJson), KeyErrors))]
pub async fn audit(
    State(gateway): State<Gateway>,
    Extension(caller): Extension<Caller>,
    RequestIdHeader(request_id): RequestIdHeader,
    QueryParams(query): QueryParams<AuditQuery>,
) -> Result<Response, ApiError> {
    if let Some(id) = &query.key_id
        && stanna_keys::KeyId::parse(id).is_err()
    {
        return Err(ApiError::invalid(
            "keyId",
            "keyId: must be a key id (12 characters of 0-9, A-Z, a-z)",
        ));
    }
    let start = query.days.map(|d| {
        let now = std::time::SystemTime::now();
        (now - std::time::Duration::from_secs(u64::from(d.0) * 86_400)).into()
    });
    let page = registry(&gateway)
        .list_audit_events(acting(
            &caller,
            request_id.as_ref(),
            pb::ListAuditEventsRequest {
                user_id: acting_user(&caller, true),
                workspace_id: caller.workspace_id.clone(),
                key_id: query.key_id.unwrap_or_default(),
                start_time: start,
                end_time: None,
                page_size: query.page_size.map_or(0, |s| s.0),
                page_token: query.page_token.unwrap_or_default(),
            },
        )?)
        .await
        .map_err(from_registry)?
        .into_inner();
    Ok(json(
        StatusCode::OK,
        &AuditListJson {
            events: page.events.iter().map(AuditEventJson::from).collect(),
            next_page_token: Some(page.next_page_token).filter(|t| !t.is_empty()),
        },
    ))
}

fn created_key(key: Option<&pb::ApiKey>, secret: String) -> CreatedKeyJson {
    CreatedKeyJson {
        key: key
            .map(ApiKeyJson::from)
            .unwrap_or_else(|| ApiKeyJson::from(&pb::ApiKey::default())),
        secret,
    }
}
