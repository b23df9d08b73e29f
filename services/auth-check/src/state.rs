//! What a verification decides, in domain types: a key's cached [`KeyState`], the [`Verdict`]
//! with its [`VerifyCode`], and [`VerifyError`] for a request that gets no verdict. The gRPC
//! adapter converts them to the contract at the edge (`grpc.rs`).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use stanna_keys::{KeyId, KeyStatus, RateLimits, Scopes, UserId, WorkspaceId};
use stanna_quota::{NamedWindow, WindowState};
use stanna_store::KeyRecord;

/// A key's state as verification needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyState {
    /// The key id.
    pub key_id: KeyId,
    /// Owning workspace.
    pub workspace: WorkspaceId,
    /// Owning user.
    pub user: UserId,
    /// The key's name.
    pub name: String,
    /// Active or inactive.
    pub status: KeyStatus,
    /// Expiry, if any.
    pub expires_at: Option<SystemTime>,
    /// The effective windows, `burst` then `hourly`, ready for the quota (their names are
    /// borrowed, so a decision builds nothing for them).
    pub windows: [NamedWindow; 2],
    /// The key that replaced this one by rotation, named when it is refused as expired.
    pub replaced_by: Option<KeyId>,
    /// The key's metadata, shared (returned only when a Verify asks for it).
    pub metadata: Option<Arc<str>>,
    /// What the key may do; unscoped (empty, nothing allocated): its user's full permissions.
    pub scopes: Scopes,
}

impl KeyState {
    /// The state of a stored key; windows without an override take `defaults`.
    pub fn from_record(record: &KeyRecord, defaults: RateLimits) -> Self {
        let limits = record.rate_limits.resolve(defaults);
        Self {
            key_id: record.key_id,
            workspace: record.workspace.clone(),
            user: record.user.clone(),
            name: record.name.as_str().to_owned(),
            status: record.status,
            expires_at: record.expires_at,
            windows: limits.named().map(|(name, limit)| NamedWindow {
                name: Cow::Borrowed(name),
                limit,
            }),
            replaced_by: record.replaced_by,
            metadata: record.metadata.as_ref().map(|m| Arc::from(m.as_str())),
            scopes: record.scopes.clone(),
        }
    }

    /// The smallest limit of the key's windows: no cost above it can ever be admitted.
    pub fn smallest_limit(&self) -> &NamedWindow {
        let [a, b] = &self.windows;
        if b.limit.limit() < a.limit.limit() {
            b
        } else {
            a
        }
    }
}

/// The outcome of a verification (the contract's `VerifyCode`, without its zero value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerifyCode {
    /// The key is good and within its limits.
    Valid,
    /// No key was presented.
    Missing,
    /// Not a key of our format.
    Malformed,
    /// Unknown or deleted, or the secret is wrong.
    NotFound,
    /// Deactivated.
    Inactive,
    /// Past its expiry.
    Expired,
    /// Good, but of another workspace than the one asked for.
    WorkspaceMismatch,
    /// A window is exhausted, or the key id's failure budget is spent.
    RateLimited,
    /// Good, but lacking a scope the request requires (or scoped, where only unscoped keys may
    /// go).
    InsufficientScope,
}

/// What a request needs of the key's scopes (`VerifyRequest.required_scopes` and
/// `unscoped_only`). A key without scopes, or a session, meets every requirement.
#[derive(Debug, Clone, Copy, Default)]
pub enum Required<'a> {
    /// Any key.
    #[default]
    Nothing,
    /// A key holding all of these (validated scope names).
    All(&'a [String]),
    /// An unscoped key only: the route is mapped to no scopes.
    UnscopedOnly,
}

impl Required<'_> {
    /// Why `scopes` fall short, as (missing scope, message); `None` when they suffice.
    pub fn refusal(&self, scopes: &Scopes) -> Option<(String, String)> {
        if scopes.is_unscoped() {
            return None;
        }
        match self {
            Self::Nothing => None,
            Self::All(required) => scopes.first_missing(required).map(|missing| {
                (
                    missing.to_owned(),
                    format!("the API key lacks the scope \"{missing}\" this request requires"),
                )
            }),
            Self::UnscopedOnly => Some((
                String::new(),
                "the API key is limited to scopes and this request is not mapped to any: only a key with its user's full permissions may make it".to_owned(),
            )),
        }
    }
}

impl VerifyCode {
    /// The metric label and span value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::NotFound => "not_found",
            Self::Inactive => "inactive",
            Self::Expired => "expired",
            Self::WorkspaceMismatch => "workspace_mismatch",
            Self::RateLimited => "rate_limited",
            Self::InsufficientScope => "insufficient_scope",
        }
    }
}

/// A verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Why.
    pub code: VerifyCode,
    /// In words (never the key).
    pub message: Cow<'static, str>,
    /// The key's state when the key itself verified.
    pub key: Option<Arc<KeyState>>,
    /// The session's state when a session verified (instead of a key).
    pub session: Option<Arc<crate::session::SessionState>>,
    /// Windows, when a quota decision was made.
    pub windows: Vec<WindowState>,
    /// When refused for a limit or the failure budget.
    pub retry_after: Option<Duration>,
    /// For [`VerifyCode::InsufficientScope`]: the first required scope the key lacks (empty when
    /// refused for being scoped at all).
    pub missing_scope: String,
}

impl Verdict {
    /// A denial before the key itself verified.
    pub(crate) fn denied(code: VerifyCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            key: None,
            session: None,
            windows: Vec::new(),
            retry_after: None,
            missing_scope: String::new(),
        }
    }

    /// A verdict about a verified key.
    pub(crate) fn about(
        code: VerifyCode,
        message: impl Into<Cow<'static, str>>,
        key: Arc<KeyState>,
    ) -> Self {
        Self {
            key: Some(key),
            ..Self::denied(code, message)
        }
    }

    /// The denial of a key that does not exist (or whose secret is wrong).
    pub(crate) fn not_found() -> Self {
        Self::denied(VerifyCode::NotFound, "unknown or deleted API key")
    }
}

/// Why a Verify could not be answered with a verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The request is unusable; `field` names the request field at fault.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// `workspace_id` or `cost`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The store (for an uncached key, or past the stale limit) or, in closed fail mode, the quota
    /// service is unreachable.
    #[error("{0}")]
    Unavailable(&'static str),
}
