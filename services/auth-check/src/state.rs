//! What a verification decides, in domain types: a key's cached [`KeyState`], the [`Verdict`]
//! with its [`VerifyCode`], and [`VerifyError`] for a request that gets no verdict. The gRPC
//! adapter converts them to the contract at the edge (`grpc.rs`).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use stanna_keys::time::{from_micros_since_epoch, micros_since_epoch};
use stanna_keys::{KeyId, KeyStatus, RateLimits, Scopes, UserId, WorkspaceId};
use stanna_quota::{NamedWindow, WindowState};
use stanna_store::KeyRecord;

/// A key's state as verification needs it, compact: every cached key holds one (72 bytes;
/// measured in docs/auth-check.md, "At a million keys").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyState {
    /// The key id.
    pub key_id: KeyId,
    /// Owning workspace, owning user and the key's name, in one allocation.
    owner: Owner,
    /// Active or inactive.
    pub status: KeyStatus,
    /// Expiry in µs since the epoch; 0: none (8 bytes where `Option<SystemTime>` takes 16).
    expires_at_us: u64,
    /// The effective limits, `burst` then `hourly` ([`KeyState::windows`] names them).
    limits: RateLimits,
    /// What most keys lack — a replacement, metadata, scopes — behind one pointer: 8 bytes for
    /// a key without them instead of 56.
    rare: Option<Box<Rare>>,
}

/// The parts of a key's state most keys do not have.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rare {
    /// The key that replaced this one by rotation, named when it is refused as expired.
    replaced_by: Option<KeyId>,
    /// The key's metadata (returned only when a Verify asks for it).
    metadata: Option<Box<str>>,
    /// What the key may do.
    scopes: Scopes,
}

/// The scopes of a key that has none: its user's full permissions.
static UNSCOPED: Scopes = Scopes::unscoped();

/// Workspace id, user id and key name back to back in one string: one allocation of their
/// length instead of three `String`s (72 bytes of headers and three allocations).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    text: Box<str>,
    /// End of the workspace id in `text`.
    workspace_end: u16,
    /// End of the user id in `text`.
    user_end: u16,
}

impl Owner {
    fn new(workspace: &WorkspaceId, user: &UserId, name: &str) -> Self {
        let (workspace, user) = (workspace.as_str(), user.as_str());
        // Identifiers are at most a few hundred bytes and a name at most a few hundred: the
        // offsets fit a u16 (checked, so a longer input is a panic in tests, never a wrong cut).
        let workspace_end = u16::try_from(workspace.len()).expect("a workspace id is short");
        let user_end =
            u16::try_from(workspace.len() + user.len()).expect("a workspace and user id are short");
        let mut text = String::with_capacity(workspace.len() + user.len() + name.len());
        text.push_str(workspace);
        text.push_str(user);
        text.push_str(name);
        Self {
            text: text.into_boxed_str(),
            workspace_end,
            user_end,
        }
    }
}

impl KeyState {
    /// The state of a stored key; windows without an override take `defaults`.
    pub fn from_record(record: &KeyRecord, defaults: RateLimits) -> Self {
        let rare = (record.replaced_by.is_some()
            || record.metadata.is_some()
            || !record.scopes.is_unscoped())
        .then(|| {
            Box::new(Rare {
                replaced_by: record.replaced_by,
                metadata: record.metadata.as_ref().map(|m| Box::from(m.as_str())),
                scopes: record.scopes.clone(),
            })
        });
        Self {
            key_id: record.key_id,
            owner: Owner::new(&record.workspace, &record.user, record.name.as_str()),
            status: record.status,
            // An expiry at the epoch itself would read as none: a second later is as expired.
            expires_at_us: record
                .expires_at
                .map_or(0, |at| micros_since_epoch(at).max(1)),
            limits: record.rate_limits.resolve(defaults),
            rare,
        }
    }

    /// Expiry, if any.
    pub fn expires_at(&self) -> Option<SystemTime> {
        (self.expires_at_us != 0).then(|| from_micros_since_epoch(self.expires_at_us))
    }

    /// The key that replaced this one by rotation, named when it is refused as expired.
    pub fn replaced_by(&self) -> Option<KeyId> {
        self.rare.as_ref().and_then(|rare| rare.replaced_by)
    }

    /// The key's metadata (returned only when a Verify asks for it).
    pub fn metadata(&self) -> Option<&str> {
        self.rare.as_ref().and_then(|rare| rare.metadata.as_deref())
    }

    /// What the key may do; unscoped (empty): its user's full permissions.
    pub fn scopes(&self) -> &Scopes {
        self.rare.as_ref().map_or(&UNSCOPED, |rare| &rare.scopes)
    }

    /// The owning workspace's id.
    pub fn workspace(&self) -> &str {
        &self.owner.text[..usize::from(self.owner.workspace_end)]
    }

    /// The owning user's id.
    pub fn user(&self) -> &str {
        &self.owner.text[usize::from(self.owner.workspace_end)..usize::from(self.owner.user_end)]
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.owner.text[usize::from(self.owner.user_end)..]
    }

    /// The effective windows, `burst` then `hourly`, ready for the quota: their names are
    /// borrowed, so building them allocates nothing.
    pub fn windows(&self) -> [NamedWindow; 2] {
        self.limits.named().map(|(name, limit)| NamedWindow {
            name: Cow::Borrowed(name),
            limit,
        })
    }

    /// The smallest limit of the key's windows: no cost above it can ever be admitted.
    pub fn smallest_limit(&self) -> NamedWindow {
        let [a, b] = self.windows();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_text_gives_back_each_part() {
        let record = KeyRecord {
            key_id: KeyId::parse("AbCdEfGhIjKl").unwrap(),
            workspace: WorkspaceId::parse("ws_1").unwrap(),
            user: UserId::parse("auth0|123").unwrap(),
            name: stanna_keys::KeyName::parse("Équipe — prod ☕").unwrap(),
            preview: String::new(),
            key_hash: String::new(),
            status: KeyStatus::Active,
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
            last_used_at: None,
            expires_at: None,
            rate_limits: stanna_store::LimitOverrides::default(),
            replaced_by: None,
            metadata: None,
            scopes: Scopes::default(),
        };
        let state = KeyState::from_record(&record, RateLimits::product_default());
        assert_eq!(state.workspace(), "ws_1");
        assert_eq!(state.user(), "auth0|123");
        assert_eq!(state.name(), "Équipe — prod ☕");
        let [burst, hourly] = state.windows();
        assert_eq!((burst.name.as_ref(), burst.limit.limit()), ("burst", 100));
        assert_eq!(
            (hourly.name.as_ref(), hourly.limit.limit()),
            ("hourly", 1000)
        );
        assert_eq!(state.smallest_limit().name, "burst");
        assert_eq!(state.expires_at(), None);
        assert!(state.scopes().is_unscoped());
        assert_eq!((state.replaced_by(), state.metadata()), (None, None));
        assert!(
            state.rare.is_none(),
            "nothing rare is allocated for a plain key"
        );
        assert_eq!(std::mem::size_of::<KeyState>(), 72);

        let expires = SystemTime::UNIX_EPOCH + Duration::from_micros(1_800_000_000_123_456);
        let replacement = KeyId::parse("ZyXwVuTsRqPo").unwrap();
        let rare = KeyRecord {
            expires_at: Some(expires),
            replaced_by: Some(replacement),
            metadata: Some(stanna_keys::KeyMetadata::parse(r#"{"team":"a"}"#).unwrap()),
            scopes: Scopes::parse(&["keys:read".to_owned()]).unwrap(),
            ..record
        };
        let state = KeyState::from_record(&rare, RateLimits::product_default());
        assert_eq!(state.expires_at(), Some(expires));
        assert_eq!(state.replaced_by(), Some(replacement));
        assert_eq!(state.metadata(), Some(r#"{"team":"a"}"#));
        assert_eq!(state.scopes().names(), ["keys:read"]);
    }
}
