//! The store's own types: what a caller asks for ([`Scope`], [`NewKey`], [`KeyChanges`],
//! [`PageRequest`]) and what it gets back ([`KeyRecord`], [`Page`]), and their mapping to and from
//! the `api_keys` row.

use std::time::{Duration, SystemTime};

use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, Condition};
use stanna_keys::{
    KeyId, KeyMetadata, KeyName, KeyStatus, RateLimits, Scopes, UserId, WindowLimit, WorkspaceId,
};

use crate::entity::{self, ActiveModel, Column};
use crate::error::StoreError;
use crate::page_token::PageToken;
use crate::time;

/// Which keys a call may see: always one workspace, optionally one user in it; and which of them
/// it may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The workspace every query is confined to.
    pub workspace: WorkspaceId,
    /// When set, only this user's keys.
    pub user: Option<UserId>,
    /// The acting key's scopes. Reads see every key of the scope; writes (update, delete,
    /// rotate) touch only keys whose scopes are within these, and set no scopes outside them
    /// (no escalation). Unscoped (an admin, a session, an unscoped key): no restriction.
    pub within: Scopes,
}

impl Scope {
    /// Every key of `workspace` (of `user`, when given), with no write restriction.
    pub fn new(workspace: WorkspaceId, user: Option<UserId>) -> Self {
        Self {
            workspace,
            user,
            within: Scopes::unscoped(),
        }
    }

    /// Refuses `target` scopes outside [`Scope::within`].
    pub(crate) fn check_within(&self, target: &Scopes) -> Result<(), StoreError> {
        match target.first_outside(&self.within) {
            None => Ok(()),
            Some(scope) => Err(StoreError::ScopeEscalation {
                scope: scope.to_owned(),
            }),
        }
    }

    pub(crate) fn condition(&self) -> Condition {
        let mut condition = Condition::all()
            .add(Column::WorkspaceId.eq(self.workspace.as_str()))
            .add(Column::DeletedAt.is_null());
        if let Some(user) = &self.user {
            condition = condition.add(Column::UserId.eq(user.as_str()));
        }
        condition
    }
}

/// A key to store: its identity and hash (made by the caller, who alone sees the plaintext).
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The public key id from the generated key.
    pub key_id: KeyId,
    /// The generated key's preview.
    pub preview: String,
    /// argon2id PHC string of the whole key.
    pub key_hash: String,
    /// The owning workspace.
    pub workspace: WorkspaceId,
    /// The owning user.
    pub user: UserId,
    /// The key's name.
    pub name: KeyName,
    /// When it stops verifying, if ever.
    pub expires_at: Option<SystemTime>,
    /// Per-window overrides; `None` follows the configured default.
    pub rate_limits: LimitOverrides,
    /// The owner's metadata, if any.
    pub metadata: Option<KeyMetadata>,
    /// What the key may do; unscoped: its user's full permissions.
    pub scopes: Scopes,
}

/// Per-key overrides of the default windows; `None` means "the configured default", so changing
/// the defaults later reaches every key that never had an override.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitOverrides {
    /// Override of the burst window.
    pub burst: Option<WindowLimit>,
    /// Override of the long window.
    pub hourly: Option<WindowLimit>,
}

impl LimitOverrides {
    /// The effective windows given the configured defaults.
    pub fn resolve(&self, defaults: RateLimits) -> RateLimits {
        RateLimits {
            burst: self.burst.unwrap_or(defaults.burst),
            hourly: self.hourly.unwrap_or(defaults.hourly),
        }
    }
}

/// A stored key as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The public key id.
    pub key_id: KeyId,
    /// The owning workspace.
    pub workspace: WorkspaceId,
    /// The owning user.
    pub user: UserId,
    /// The key's name.
    pub name: KeyName,
    /// `sk-1234...abcd`.
    pub preview: String,
    /// argon2id PHC string, for verification.
    pub key_hash: String,
    /// Active or inactive.
    pub status: KeyStatus,
    /// Creation time.
    pub created_at: SystemTime,
    /// Last change of name or status.
    pub updated_at: SystemTime,
    /// Last successful use, if any.
    pub last_used_at: Option<SystemTime>,
    /// When it stops verifying, if ever.
    pub expires_at: Option<SystemTime>,
    /// Per-window overrides.
    pub rate_limits: LimitOverrides,
    /// The key that replaced this one by rotation, if it was rotated.
    pub replaced_by: Option<KeyId>,
    /// The owner's metadata, if any.
    pub metadata: Option<KeyMetadata>,
    /// What the key may do; unscoped: its user's full permissions.
    pub scopes: Scopes,
}

impl KeyRecord {
    /// Whether the key is past its expiry at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// Changes to a key; `None` fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct KeyChanges {
    /// A new name.
    pub name: Option<KeyName>,
    /// A new status.
    pub status: Option<KeyStatus>,
    /// A new expiry: `Some(None)` clears it (the key never expires). Checked against the stored
    /// one in the same statement ([`KeyStore::update`](crate::KeyStore::update)).
    pub expires_at: Option<Option<SystemTime>>,
    /// With an expiry change: it may only move earlier (never later, never cleared).
    pub expiry_earlier_only: bool,
    /// Per-window override changes.
    pub rate_limits: LimitChanges,
    /// New metadata: `Some(None)` clears it.
    pub metadata: Option<Option<KeyMetadata>>,
    /// New scopes: `Some(Scopes::unscoped())` makes the key unscoped.
    pub scopes: Option<Scopes>,
}

impl KeyChanges {
    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.status.is_none()
            && self.expires_at.is_none()
            && self.rate_limits.burst.is_none()
            && self.rate_limits.hourly.is_none()
            && self.metadata.is_none()
            && self.scopes.is_none()
    }
}

/// Changes to a key's per-window overrides: per window, `None` keeps it, `Some(None)` returns it
/// to the configured default, `Some(Some(w))` sets it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitChanges {
    /// The burst window.
    pub burst: Option<Option<WindowLimit>>,
    /// The long window.
    pub hourly: Option<Option<WindowLimit>>,
}

/// How many keys a list call returns at most, which, and where to continue.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// 1-100; the caller validates and applies the default.
    pub size: u32,
    /// Continue after this position (from a previous page's [`Page::next`] of the same scope
    /// and filter).
    pub after: Option<PageToken>,
    /// Which keys to list; every filter given must hold.
    pub filter: KeyFilter,
}

/// A listing's filters; the default lists every key of the scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFilter {
    /// Keys whose name contains this text, ignoring case ([`stanna_keys::fold_for_search`]);
    /// the caller validates it (non-empty, at most a name's length).
    pub name_contains: Option<String>,
    /// Keys with this stored status (an active key past its expiry is still `Active`).
    pub status: Option<KeyStatus>,
    /// Keys not used for at least this many days before the first page was asked for; a key
    /// never used counts from its creation. The caller validates the range.
    pub unused_for_days: Option<u32>,
}

impl KeyFilter {
    /// Whether nothing is filtered.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One page of keys, newest first.
#[derive(Debug, Clone)]
pub struct Page {
    /// The keys.
    pub keys: Vec<KeyRecord>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<PageToken>,
}

/// The secret-derived parts of a replacement key, for [`KeyStore::rotate`].
#[derive(Debug, Clone)]
pub struct NewKeySecret {
    /// The new key's id.
    pub key_id: KeyId,
    /// The new key's preview.
    pub preview: String,
    /// argon2id PHC string of the new key.
    pub key_hash: String,
}

pub(crate) fn new_row(key: &NewKey, now: SystemTime) -> ActiveModel {
    let now = time::to_micros(now);
    let (burst_limit, burst_period_ms) = window_columns(key.rate_limits.burst);
    let (hourly_limit, hourly_period_ms) = window_columns(key.rate_limits.hourly);
    ActiveModel {
        key_id: Set(key.key_id.as_str().to_owned()),
        workspace_id: Set(key.workspace.as_str().to_owned()),
        user_id: Set(key.user.as_str().to_owned()),
        name: Set(key.name.as_str().to_owned()),
        name_folded: Set(key.name.folded()),
        preview: Set(key.preview.clone()),
        key_hash: Set(key.key_hash.clone()),
        status: Set(KeyStatus::Active.as_str().to_owned()),
        created_at: Set(now),
        updated_at: Set(now),
        last_used_at: Set(None),
        expires_at: Set(key.expires_at.map(time::to_micros)),
        deleted_at: Set(None),
        replaced_by: Set(None),
        burst_limit: Set(burst_limit),
        burst_period_ms: Set(burst_period_ms),
        hourly_limit: Set(hourly_limit),
        hourly_period_ms: Set(hourly_period_ms),
        metadata: Set(key.metadata.as_ref().map(|m| m.as_str().to_owned())),
        scopes: Set(key.scopes.to_stored()),
    }
}

pub(crate) fn window_columns(window: Option<WindowLimit>) -> (Option<i32>, Option<i64>) {
    match window {
        // Limits are at most 10 000 and periods at most 24 h, so both conversions are exact.
        Some(w) => (Some(w.limit() as i32), Some(w.period().as_millis() as i64)),
        None => (None, None),
    }
}

pub(crate) fn record_from_model(m: entity::Model) -> Result<KeyRecord, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        key_id: m.key_id.clone(),
        reason: reason.to_owned(),
    };
    let window =
        |limit: Option<i32>, period: Option<i64>| -> Result<Option<WindowLimit>, StoreError> {
            match (limit, period) {
                (None, None) => Ok(None),
                (Some(limit), Some(ms)) => {
                    let limit = u32::try_from(limit).map_err(|_| corrupt("negative limit"))?;
                    let ms = u64::try_from(ms).map_err(|_| corrupt("negative period"))?;
                    WindowLimit::new(limit, Duration::from_millis(ms))
                        .map(Some)
                        .map_err(|e| corrupt(&e.to_string()))
                }
                _ => Err(corrupt("half-set rate limit")),
            }
        };
    Ok(KeyRecord {
        key_id: KeyId::parse(&m.key_id).map_err(|_| corrupt("bad key id"))?,
        workspace: WorkspaceId::parse(&m.workspace_id).map_err(|_| corrupt("bad workspace id"))?,
        user: UserId::parse(&m.user_id).map_err(|_| corrupt("bad user id"))?,
        name: KeyName::parse(&m.name).map_err(|_| corrupt("bad name"))?,
        status: KeyStatus::from_stored(&m.status).ok_or_else(|| corrupt("unknown status"))?,
        rate_limits: LimitOverrides {
            burst: window(m.burst_limit, m.burst_period_ms)?,
            hourly: window(m.hourly_limit, m.hourly_period_ms)?,
        },
        replaced_by: m
            .replaced_by
            .as_deref()
            .map(|id| KeyId::parse(id).map_err(|_| corrupt("bad replaced_by")))
            .transpose()?,
        created_at: time::from_micros(m.created_at),
        updated_at: time::from_micros(m.updated_at),
        last_used_at: m.last_used_at.map(time::from_micros),
        expires_at: m.expires_at.map(time::from_micros),
        metadata: m.metadata.map(KeyMetadata::from_stored),
        scopes: Scopes::from_stored(m.scopes.as_deref()).map_err(|_| corrupt("bad scopes"))?,
        preview: m.preview,
        key_hash: m.key_hash,
    })
}
