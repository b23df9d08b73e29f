//! The error answers of the key API as the OpenAPI document lists them. The body's shape is
//! [`ErrorBody`](crate::error::ErrorBody), the one type every error answer is serialized from.

use utoipa::IntoResponses;

use crate::error::ErrorBody;

/// The answers every key-API route may give before or around its own work.
#[derive(IntoResponses)]
pub enum KeyErrors {
    /// A body field, parameter or header is invalid; `field` names it.
    #[response(
        status = 400,
        description = "`invalid_request` naming `field`, or `ambiguous_api_key`"
    )]
    BadRequest(ErrorBody<'static>),
    /// No, a malformed, an unknown, an inactive or an expired key.
    #[response(
        status = 401,
        description = "`missing_api_key`, `malformed_api_key`, `invalid_api_key`, `inactive_api_key` or `expired_api_key`",
        headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stanna\"`, with `error=\"invalid_token\"` when a credential was sent"))
    )]
    Unauthorized(ErrorBody<'static>),
    /// The key is of another workspace than `X-Workspace-Id` names.
    #[response(status = 403, description = "`workspace_mismatch`")]
    Forbidden(ErrorBody<'static>),
    /// A window is exhausted (or the key id's failure budget is spent).
    #[response(
        status = 429,
        description = "`rate_limited`",
        headers(("Retry-After" = u64, description = "Whole seconds until a request would be admitted"))
    )]
    RateLimited(ErrorBody<'static>),
    /// Keys cannot be checked, or the registry cannot be reached, right now.
    #[response(
        status = 503,
        description = "`unavailable`",
        headers(("Retry-After" = u64, description = "Always 1"))
    )]
    Unavailable(ErrorBody<'static>),
    /// A bug, logged with the request id.
    #[response(status = 500, description = "`internal`")]
    Internal(ErrorBody<'static>),
}

/// No key with this id among the caller's keys (others' keys are never confirmed).
#[derive(IntoResponses)]
#[response(status = 404, description = "`not_found`")]
pub struct NotFound(pub ErrorBody<'static>);

/// The user holds the most keys allowed, the key was rotated already, or its expiry cannot move
/// that way.
#[derive(IntoResponses)]
#[response(
    status = 409,
    description = "`too_many_keys`, or `conflict`: the key was rotated already (the message names the replacement), or an expiry may only move earlier (the message names the current one)"
)]
pub struct Conflict(pub ErrorBody<'static>);

/// A body over 64 KiB.
#[derive(IntoResponses)]
#[response(status = 413, description = "`payload_too_large`")]
pub struct TooLarge(pub ErrorBody<'static>);
