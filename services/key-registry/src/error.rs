//! The registry's errors and their one mapping to gRPC status codes. A field-level refusal carries
//! a `google.rpc.BadRequest` and a refused state change a `PreconditionFailure`
//! (`stanna_grpc::status`), so a caller such as the gateway reads the field, never the message.

use stanna_store::StoreError;
use stanna_telemetry::ErrorChain;
use tonic::{Code, Status};

/// The precondition kind of rotating a key that was rotated already.
pub const ALREADY_ROTATED: &str = "ALREADY_ROTATED";

/// The precondition kind of an expiry change the key's state refuses.
pub const EXPIRY_REFUSED: &str = "EXPIRY_REFUSED";

/// The precondition kind of rotating an expired key through the gateway.
pub const EXPIRED_KEY: &str = "EXPIRED_KEY";

/// The precondition kind of a login token spent before.
pub const LOGIN_TOKEN_USED: &str = "LOGIN_TOKEN_USED";

/// Why a KeyRegistry call failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A request field is invalid; the message names the field.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The field as the protocol names it (`workspace_id`, `rate_limits[1].period`, …).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No such key visible to the request (also for another workspace's or user's key).
    #[error("key not found")]
    NotFound,
    /// The key was rotated already: only its replacement can be rotated.
    #[error("key_id: the key was already rotated; rotate its replacement {replaced_by} instead")]
    AlreadyRotated {
        /// The key that replaced it.
        replaced_by: stanna_keys::KeyId,
    },
    /// The key's state refuses the expiry change (expired, rotated out, or earlier-only).
    #[error("expires_at: {0}")]
    ExpiryRefused(stanna_store::ExpiryRefusal),
    /// A scoped caller would manage a key beyond its own scopes (`*`: an unscoped key, which has
    /// every permission) or give a scope it lacks.
    #[error(
        "the acting key lacks the scope {scope:?}: a key limited to scopes manages only keys within its own scopes"
    )]
    ScopeEscalation {
        /// The first scope outside the caller's.
        scope: String,
    },
    /// The key named in `x-stanna-acting-key` is not one of the request's keys (deleted since
    /// it verified, or another user's).
    #[error(
        "the acting key is not one of this user's live keys (deleted, deactivated or expired meanwhile?)"
    )]
    ActingKeyGone,
    /// The session named in `x-stanna-acting-session` is over, or not one of the request's
    /// workspace.
    #[error("the acting session is not a live session of this workspace (signed out meanwhile?)")]
    ActingSessionGone,
    /// The gateway's credential asked for what only an admin may; the message says what.
    #[error("{0}")]
    Forbidden(&'static str),
    /// Through the gateway, an expired key is not rotated (its replacement would revive it).
    #[error(
        "key_id: the key has expired; create a new key instead (an admin can rotate an expired key)"
    )]
    ExpiredKey,
    /// No credential was checked (the service was mounted without its interceptor).
    #[error("no credential")]
    Unauthenticated,
    /// The user holds `STANNA_MAX_KEYS_PER_USER` keys already.
    #[error(
        "the user already has {max} keys, the most allowed (STANNA_MAX_KEYS_PER_USER); delete one first"
    )]
    TooManyKeys {
        /// The configured maximum.
        max: u32,
    },
    /// The login token does not verify; the message says why (never the token).
    #[error("login_token: {0}")]
    LoginRefused(stanna_keys::login::LoginError),
    /// The login token's `jti` was spent before.
    #[error("login_token: this sign-in link was used already; sign in again from the product")]
    LoginTokenUsed,
    /// This registry has no login-token verifier.
    #[error("sign-in is not configured: set STANNA_SESSION_SECRET or STANNA_SESSION_JWKS_FILE")]
    SessionsNotConfigured,
    /// The key store is unreachable.
    #[error("the key store is unavailable")]
    Unavailable(#[source] StoreError),
    /// A bug or an unexpected failure; details are logged, not returned.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl RegistryError {
    /// An invalid field with a reason.
    pub fn invalid(field: impl Into<String>, reason: impl ToString) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.to_string(),
        }
    }
}

impl From<StoreError> for RegistryError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => Self::NotFound,
            StoreError::TooManyKeys { max } => Self::TooManyKeys { max },
            StoreError::AlreadyRotated { replaced_by } => Self::AlreadyRotated { replaced_by },
            StoreError::ExpiryRefused(refusal) => Self::ExpiryRefused(refusal),
            StoreError::ScopeEscalation { scope } => Self::ScopeEscalation { scope },
            StoreError::Unavailable(_) => Self::Unavailable(err),
            StoreError::LoginTokenUsed => Self::LoginTokenUsed,
            StoreError::PageTokenMismatch => Self::invalid("page_token", err),
            StoreError::DuplicateKeyId | StoreError::Database(_) | StoreError::Corrupt { .. } => {
                Self::Internal(Box::new(err))
            }
        }
    }
}

impl From<RegistryError> for Status {
    fn from(err: RegistryError) -> Self {
        match &err {
            RegistryError::InvalidArgument { field, reason } => {
                stanna_grpc::status::invalid_argument(field, reason)
            }
            RegistryError::NotFound => Status::new(Code::NotFound, err.to_string()),
            RegistryError::AlreadyRotated { replaced_by } => {
                stanna_grpc::status::failed_precondition(
                    ALREADY_ROTATED,
                    "key_id",
                    &format!(
                        "the key was already rotated; rotate its replacement {replaced_by} instead"
                    ),
                )
            }
            RegistryError::ExpiryRefused(refusal) => stanna_grpc::status::failed_precondition(
                EXPIRY_REFUSED,
                "expires_at",
                &refusal.to_string(),
            ),
            RegistryError::LoginRefused(error) => {
                stanna_grpc::status::invalid_argument("login_token", &error.to_string())
            }
            RegistryError::LoginTokenUsed => stanna_grpc::status::failed_precondition(
                LOGIN_TOKEN_USED,
                "login_token",
                "this sign-in link was used already; sign in again from the product",
            ),
            RegistryError::ScopeEscalation { scope } => {
                stanna_grpc::status::scope_escalation(scope, &err.to_string())
            }
            RegistryError::ActingKeyGone
            | RegistryError::ActingSessionGone
            | RegistryError::Forbidden(_) => Status::new(Code::PermissionDenied, err.to_string()),
            RegistryError::Unauthenticated => Status::new(Code::Unauthenticated, err.to_string()),
            RegistryError::ExpiredKey => stanna_grpc::status::failed_precondition(
                EXPIRED_KEY,
                "key_id",
                "the key has expired; create a new key instead (an admin can rotate an expired key)",
            ),
            RegistryError::SessionsNotConfigured => {
                Status::new(Code::FailedPrecondition, err.to_string())
            }
            RegistryError::TooManyKeys { .. } => {
                Status::new(Code::ResourceExhausted, err.to_string())
            }
            RegistryError::Unavailable(source) => {
                tracing::warn!(error = %ErrorChain(source), "key store unavailable");
                Status::new(
                    Code::Unavailable,
                    "the key store is unavailable; retry shortly",
                )
            }
            RegistryError::Internal(source) => {
                tracing::error!(error = %ErrorChain(source.as_ref()), "internal error");
                Status::new(Code::Internal, "internal error")
            }
        }
    }
}
