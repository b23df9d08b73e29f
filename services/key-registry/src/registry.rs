//! The registry's core, in plain Rust on domain types: what CreateKey, ListKeys, GetKey,
//! UpdateKey, DeleteKey and RotateKey do, independent of gRPC.
//!
//! New keys are generated and argon2-hashed on the blocking pool under a concurrency cap, so a burst
//! of creations cannot starve the async runtime or exhaust memory (19 MiB per running hash).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use stanna_keys::{
    Clock, GeneratedKey, KeyHasher, KeyId, KeyMetadata, KeyName, KeyStatus, RateLimits, Role,
    Scopes, UserId, WorkspaceId,
};
use stanna_store::{
    Actor, AuditContext, AuditPage, AuditQuery, KeyChanges, KeyRecord, KeyStore, LimitOverrides,
    NewKey, NewKeySecret, Page, PageRequest, Scope, StoreError,
};
use tokio::sync::Semaphore;

use crate::caller::{Acting, Call, Principal};
use crate::error::RegistryError;

/// The longest grace period a rotation accepts.
pub const MAX_GRACE_PERIOD: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often a colliding key id is redrawn before giving up (a collision is ≈2⁻⁷¹ per pair).
const KEY_ID_ATTEMPTS: usize = 3;

/// A CreateKey request, validated.
#[derive(Debug, Clone)]
pub struct CreateKey {
    /// The key's workspace.
    pub workspace: WorkspaceId,
    /// The key's owner.
    pub user: UserId,
    /// The key's name.
    pub name: KeyName,
    /// When it stops verifying, if ever (must be in the future).
    pub expires_at: Option<SystemTime>,
    /// Per-key limits; unset windows follow the configured defaults.
    pub rate_limits: LimitOverrides,
    /// The owner's metadata, if any.
    pub metadata: Option<KeyMetadata>,
    /// What the key may do; unscoped: its user's full permissions (or, made by a scoped key, that
    /// key's scopes).
    pub scopes: Scopes,
}

/// A key just made, with its plaintext: the one moment it exists.
pub struct CreatedKey {
    /// The stored key.
    pub key: KeyRecord,
    /// The plaintext, for the response only.
    pub secret: String,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The key registry. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
    /// Dashboard sign-in, when configured (`sessions.rs`).
    sessions: Option<Arc<crate::sessions::SessionIssuer>>,
}

struct Inner {
    /// Where keys live.
    store: KeyStore,
    /// Hashes new keys (argon2id).
    hasher: KeyHasher,
    /// Limits of keys without overrides; also shown as their effective limits.
    defaults: RateLimits,
    /// Live keys one user may hold in one workspace.
    max_keys_per_user: u32,
    /// Caps concurrent argon2 runs.
    argon2_permits: Semaphore,
    /// "Now".
    clock: Clock,
}

impl Registry {
    /// A registry over `store`.
    pub fn new(
        store: KeyStore,
        hasher: KeyHasher,
        defaults: RateLimits,
        max_keys_per_user: u32,
        argon2_concurrency: usize,
    ) -> Self {
        Self::with_clock(
            store,
            hasher,
            defaults,
            max_keys_per_user,
            argon2_concurrency,
            stanna_keys::system_clock(),
        )
    }

    /// A registry whose notion of "now" comes from `clock`.
    pub fn with_clock(
        store: KeyStore,
        hasher: KeyHasher,
        defaults: RateLimits,
        max_keys_per_user: u32,
        argon2_concurrency: usize,
        clock: Clock,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                hasher,
                defaults,
                max_keys_per_user,
                argon2_permits: Semaphore::new(argon2_concurrency.max(1)),
                clock,
            }),
            sessions: None,
        }
    }

    /// This registry, also signing users in to the dashboard with `issuer`.
    pub fn with_sessions(mut self, issuer: crate::sessions::SessionIssuer) -> Self {
        self.sessions = Some(Arc::new(issuer));
        self
    }

    /// Dashboard sign-in, when configured.
    pub fn session_issuer(&self) -> Option<&crate::sessions::SessionIssuer> {
        self.sessions.as_deref()
    }

    /// The configured default windows.
    pub fn default_limits(&self) -> RateLimits {
        self.inner.defaults
    }

    /// The store this registry writes to.
    pub fn store(&self) -> &KeyStore {
        &self.inner.store
    }

    pub(crate) fn now(&self) -> SystemTime {
        (self.inner.clock)()
    }

    /// What `call` may do in `workspace` (as `user`, or workspace-wide when `None`): the scope
    /// its reads and writes are confined to, and the actor its changes are audited under.
    ///
    /// An admin acts as named. The gateway acts only for the API key or session it names, and
    /// only as that key's or session's user — workspace-wide only for a workspace admin's
    /// session; a scoped key's calls are held to its scopes ([`Scope::within`]).
    ///
    /// # Errors
    /// `Forbidden` for a gateway call naming nobody or another user; `ActingKeyGone` /
    /// `ActingSessionGone` when the key or session named is not live in `workspace`; a store
    /// error.
    pub async fn authorize(
        &self,
        call: &Call,
        workspace: WorkspaceId,
        user: Option<UserId>,
    ) -> Result<(Scope, AuditContext), RegistryError> {
        let audit = |actor| AuditContext::new(actor, call.request_id.clone());
        match (&call.principal, &call.acting) {
            (Principal::Admin(name), _) => Ok((
                Scope::new(workspace, user),
                audit(Actor::Admin(name.to_string())),
            )),
            (Principal::Gateway, Acting::Nobody) => Err(RegistryError::Forbidden(
                "the gateway's credential acts only for the API key or session it names (x-stanna-acting-key or x-stanna-acting-session)",
            )),
            (Principal::Gateway, Acting::Key(key_id)) => {
                let key = self
                    .inner
                    .store
                    .find_by_key_id(key_id)
                    .await?
                    .filter(|k| {
                        k.workspace == workspace
                            && k.status == KeyStatus::Active
                            && !k.is_expired(self.now())
                    })
                    .ok_or(RegistryError::ActingKeyGone)?;
                if user.as_ref() != Some(&key.user) {
                    return Err(RegistryError::Forbidden(
                        "an API key acts only as its own user",
                    ));
                }
                let actor = Actor::Key {
                    key_id: *key_id,
                    user: key.user,
                };
                Ok((
                    Scope {
                        within: key.scopes,
                        ..Scope::new(workspace, user)
                    },
                    audit(actor),
                ))
            }
            (Principal::Gateway, Acting::Session(session_id)) => {
                let now = self.now();
                let session = self
                    .inner
                    .store
                    .find_session(session_id)
                    .await?
                    .filter(|s| !s.revoked && s.expires_at > now && s.workspace == workspace)
                    .ok_or(RegistryError::ActingSessionGone)?;
                let allowed = match &user {
                    Some(user) => *user == session.user,
                    None => session.role == Role::Admin,
                };
                if !allowed {
                    return Err(RegistryError::Forbidden(
                        "a session acts as its own user, and workspace-wide only for a workspace admin",
                    ));
                }
                let actor = Actor::Session {
                    session_id: *session_id,
                    user: session.user,
                };
                Ok((Scope::new(workspace, user), audit(actor)))
            }
        }
    }

    /// Creates a key and returns it with its plaintext. For a caller held to scopes
    /// (`within`, a scoped acting key's), the new key's scopes must be within them, and a key
    /// asked for without scopes gets them.
    ///
    /// # Errors
    /// `InvalidArgument` for an `expires_at` not in the future, `ScopeEscalation`,
    /// `TooManyKeys`, or a store error.
    pub async fn create_key(
        &self,
        mut request: CreateKey,
        within: &Scopes,
        audit: &AuditContext,
    ) -> Result<CreatedKey, RegistryError> {
        if !within.is_unscoped() {
            if request.scopes.is_unscoped() {
                request.scopes = within.clone();
            } else if let Some(scope) = request.scopes.first_outside(within) {
                return Err(RegistryError::ScopeEscalation {
                    scope: scope.to_owned(),
                });
            }
        }
        let now = self.now();
        if request.expires_at.is_some_and(|at| at <= now) {
            return Err(RegistryError::invalid(
                "expires_at",
                "must be in the future",
            ));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (generated, key_hash) = self.generate_and_hash().await?;
            let new = NewKey {
                key_id: generated.key().key_id(),
                preview: generated.key().preview(),
                key_hash,
                workspace: request.workspace.clone(),
                user: request.user.clone(),
                name: request.name.clone(),
                expires_at: request.expires_at,
                rate_limits: request.rate_limits,
                metadata: request.metadata.clone(),
                scopes: request.scopes.clone(),
            };
            match self
                .inner
                .store
                .create(new, Some(self.inner.max_keys_per_user), now, audit)
                .await
            {
                Ok(key) => {
                    tracing::info!(key_id = %key.key_id, workspace = %key.workspace, user = %key.user, actor = audit.actor.kind(), request_id = %audit.request_id, "key created");
                    return Ok(CreatedKey {
                        key,
                        secret: generated.into_secret(),
                    });
                }
                Err(StoreError::DuplicateKeyId) if attempt < KEY_ID_ATTEMPTS => continue,
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// Lists keys in `scope` that pass the page's filter, newest first.
    ///
    /// # Errors
    /// `InvalidArgument` (`page_token`) for a token of another listing; a store error.
    pub async fn list_keys(&self, scope: &Scope, page: PageRequest) -> Result<Page, RegistryError> {
        Ok(self.inner.store.list(scope, page, self.now()).await?)
    }

    /// The usage of the keys among `ids` visible in `scope`, hours in `[from, to)` (µs since
    /// the epoch).
    ///
    /// # Errors
    /// A store error.
    pub async fn key_usage(
        &self,
        scope: &Scope,
        ids: &[KeyId],
        from: i64,
        to: i64,
    ) -> Result<Vec<(KeyId, Vec<stanna_store::UsageRow>)>, RegistryError> {
        Ok(self.inner.store.usage(scope, ids, from, to).await?)
    }

    /// Reads one key.
    ///
    /// # Errors
    /// `NotFound` if it is not visible in `scope`.
    pub async fn get_key(&self, scope: &Scope, key_id: &KeyId) -> Result<KeyRecord, RegistryError> {
        Ok(self.inner.store.get(scope, key_id).await?)
    }

    /// Changes a key (name, status, expiry, limit overrides, metadata); with no change, returns
    /// it as it is. Every auth-check applies the change at its next change poll.
    ///
    /// # Errors
    /// `NotFound` if it is not visible in `scope`; `ExpiryRefused` when the key's state refuses
    /// the expiry change.
    pub async fn update_key(
        &self,
        scope: &Scope,
        key_id: &KeyId,
        changes: KeyChanges,
        audit: &AuditContext,
    ) -> Result<KeyRecord, RegistryError> {
        if changes.is_empty() {
            return self.get_key(scope, key_id).await;
        }
        let changed = changed_fields(&changes);
        let key = self
            .inner
            .store
            .update(scope, key_id, changes, self.now(), audit)
            .await?;
        tracing::info!(key_id = %key.key_id, workspace = %key.workspace, changed = %changed, status = key.status.as_str(), actor = audit.actor.kind(), request_id = %audit.request_id, "key updated");
        Ok(key)
    }

    /// Deletes a key for good.
    ///
    /// # Errors
    /// `NotFound` if it is not visible in `scope` (also when deleted already).
    pub async fn delete_key(
        &self,
        scope: &Scope,
        key_id: &KeyId,
        audit: &AuditContext,
    ) -> Result<(), RegistryError> {
        self.inner
            .store
            .delete(scope, key_id, self.now(), audit)
            .await?;
        tracing::info!(key_id = %key_id, workspace = %scope.workspace, actor = audit.actor.kind(), request_id = %audit.request_id, "key deleted");
        Ok(())
    }

    /// Replaces a key by a new one (same name, owner, limits and status); the old one keeps
    /// working for `grace` (zero: it stops at once) and stays listed with its expiry. An expired
    /// key can be rotated too: its replacement has no expiry.
    ///
    /// # Errors
    /// `InvalidArgument` for a grace period over 30 days; `NotFound` if the key is not visible in
    /// `scope`; `AlreadyRotated`; `TooManyKeys` for an expired key of a user at the maximum.
    pub async fn rotate_key(
        &self,
        scope: &Scope,
        key_id: &KeyId,
        grace: Duration,
        audit: &AuditContext,
    ) -> Result<CreatedKey, RegistryError> {
        if grace > MAX_GRACE_PERIOD {
            return Err(RegistryError::invalid(
                "grace_period",
                "must be at most 30 days",
            ));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (generated, key_hash) = self.generate_and_hash().await?;
            let secret = NewKeySecret {
                key_id: generated.key().key_id(),
                preview: generated.key().preview(),
                key_hash,
            };
            let now = self.now();
            match self
                .inner
                .store
                .rotate(
                    scope,
                    key_id,
                    secret,
                    now + grace,
                    Some(self.inner.max_keys_per_user),
                    now,
                    audit,
                )
                .await
            {
                Ok((key, old)) => {
                    tracing::info!(key_id = %key.key_id, old_key_id = %old.key_id, workspace = %key.workspace, grace_ms = grace.as_millis() as u64, actor = audit.actor.kind(), request_id = %audit.request_id, "key rotated");
                    return Ok(CreatedKey {
                        key,
                        secret: generated.into_secret(),
                    });
                }
                Err(StoreError::DuplicateKeyId) if attempt < KEY_ID_ATTEMPTS => continue,
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// One page of audit events (the query is already confined by [`Registry::authorize`]).
    ///
    /// # Errors
    /// A store error.
    pub async fn audit_events(&self, query: &AuditQuery) -> Result<AuditPage, RegistryError> {
        Ok(self.inner.store.audit_events(query).await?)
    }

    /// Deletes audit events older than `retention`; returns how many.
    ///
    /// # Errors
    /// A store error.
    pub async fn purge_audit(&self, retention: Duration) -> Result<u64, RegistryError> {
        Ok(self.inner.store.purge_audit(retention, self.now()).await?)
    }

    /// Removes the rows of keys deleted longer than `retention` ago; returns how many.
    ///
    /// # Errors
    /// A store error (batches before it stay purged).
    pub async fn purge_tombstones(&self, retention: Duration) -> Result<u64, RegistryError> {
        let before = self
            .now()
            .checked_sub(retention)
            .unwrap_or(std::time::UNIX_EPOCH);
        Ok(self.inner.store.purge_deleted_keys(before).await?)
    }

    /// Draws a key and hashes it on the blocking pool, under the argon2 concurrency cap.
    async fn generate_and_hash(&self) -> Result<(GeneratedKey, String), RegistryError> {
        let _permit = self
            .inner
            .argon2_permits
            .acquire()
            .await
            .map_err(|e| RegistryError::Internal(Box::new(e)))?;
        let hasher = self.inner.hasher.clone();
        tokio::task::spawn_blocking(move || {
            let generated =
                GeneratedKey::generate().map_err(|e| RegistryError::Internal(Box::new(e)))?;
            let hash = hasher
                .hash(generated.key())
                .map_err(|e| RegistryError::Internal(Box::new(e)))?;
            Ok((generated, hash))
        })
        .await
        .map_err(|e| RegistryError::Internal(Box::new(e)))?
    }
}

/// The names of the fields `changes` sets, for the log line (never their values: a name or
/// metadata is the customer's text).
fn changed_fields(changes: &KeyChanges) -> String {
    [
        ("name", changes.name.is_some()),
        ("status", changes.status.is_some()),
        ("expires_at", changes.expires_at.is_some()),
        (
            "rate_limits",
            changes.rate_limits.burst.is_some() || changes.rate_limits.hourly.is_some(),
        ),
        ("metadata", changes.metadata.is_some()),
        ("scopes", changes.scopes.is_some()),
    ]
    .iter()
    .filter(|(_, set)| *set)
    .map(|(name, _)| *name)
    .collect::<Vec<_>>()
    .join(",")
}
