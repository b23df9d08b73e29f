//! Dashboard sessions and spent login tokens: two tables beside `api_keys`, behind the registry
//! (the gateway never touches the store).
//!
//! `sessions` holds a session's identity and only the BLAKE2b digest of its token; revocation
//! sets `revoked_at` and bumps `updated_at`, so auth-check's change poll sees it like a key
//! change. `login_tokens` holds each spent `jti` until its token expires: inserting a `jti`
//! twice is a unique-key violation, so a login token works once across every gateway and
//! registry sharing the store.

use std::time::SystemTime;

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, SqlErr};
use stanna_keys::{Role, SessionId, UserId, WorkspaceId};

use crate::audit::{self, Actor, AuditContext, Subject};
use crate::{KeyStore, StoreError, time};

/// The `sessions` table.
pub mod session_entity {
    use sea_orm::entity::prelude::*;

    /// One dashboard session. Never its token: only the token's digest.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sessions")]
    pub struct Model {
        /// The public session id (16 base62 characters).
        #[sea_orm(primary_key, auto_increment = false)]
        pub session_id: String,
        /// BLAKE2b-256 of the whole token, lowercase hex.
        pub token_digest: String,
        /// The signed-in user's workspace.
        pub workspace_id: String,
        /// The signed-in user.
        pub user_id: String,
        /// `member` or `admin`.
        pub role: String,
        /// The login token's `name`, for the page header.
        pub display_name: Option<String>,
        /// The login token's `email`.
        pub email: Option<String>,
        /// µs since the epoch.
        pub created_at: i64,
        /// µs since the epoch: the session ends then.
        pub expires_at: i64,
        /// µs since the epoch when it was signed out or revoked; null while it lives.
        pub revoked_at: Option<i64>,
        /// µs since the epoch; bumped by revocation (the change feed's order).
        pub updated_at: i64,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The `login_tokens` table.
pub mod login_token_entity {
    use sea_orm::entity::prelude::*;

    /// A spent login token's `jti`, kept until the token expires.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "login_tokens")]
    pub struct Model {
        /// The token's `jti`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub jti: String,
        /// µs since the epoch: after this the token is refused as expired anyway.
        pub expires_at: i64,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use login_token_entity as login_tokens;

/// How long a spent `jti` is kept past its token's expiry (leeway included): 10 minutes of clock
/// difference between registries before a replay could verify again.
const JTI_KEPT_AFTER_US: i64 = 10 * 60 * 1_000_000;
use session_entity as sessions;

/// A session to store.
#[derive(Debug, Clone)]
pub struct NewSessionRow {
    /// Its public id.
    pub id: SessionId,
    /// The token's digest.
    pub digest: [u8; 32],
    /// The workspace.
    pub workspace: WorkspaceId,
    /// The user.
    pub user: UserId,
    /// The role.
    pub role: Role,
    /// Display name.
    pub name: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// When it ends.
    pub expires_at: SystemTime,
}

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Its public id.
    pub id: SessionId,
    /// The token's digest.
    pub digest: [u8; 32],
    /// The workspace.
    pub workspace: WorkspaceId,
    /// The user.
    pub user: UserId,
    /// The role.
    pub role: Role,
    /// Display name.
    pub name: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// When it was created.
    pub created_at: SystemTime,
    /// When it ends.
    pub expires_at: SystemTime,
    /// Signed out or revoked.
    pub revoked: bool,
    /// Its last change (the change feed's order).
    pub updated_at: SystemTime,
}

/// Which sessions [`KeyStore::revoke_sessions`] ends.
#[derive(Debug, Clone)]
pub struct SessionScope {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// Only this user's; `None`: the whole workspace's.
    pub user: Option<UserId>,
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn record_of(row: sessions::Model) -> Result<SessionRecord, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        key_id: format!("session {}", row.session_id),
        reason: reason.to_owned(),
    };
    Ok(SessionRecord {
        id: SessionId::parse(&row.session_id).map_err(|_| corrupt("unreadable id"))?,
        digest: unhex(&row.token_digest).ok_or_else(|| corrupt("unreadable digest"))?,
        workspace: WorkspaceId::parse(&row.workspace_id)
            .map_err(|_| corrupt("unreadable workspace"))?,
        user: UserId::parse(&row.user_id).map_err(|_| corrupt("unreadable user"))?,
        role: Role::parse(&row.role).ok_or_else(|| corrupt("unknown role"))?,
        name: row.display_name,
        email: row.email,
        created_at: time::from_micros(row.created_at),
        expires_at: time::from_micros(row.expires_at),
        revoked: row.revoked_at.is_some(),
        updated_at: time::from_micros(row.updated_at),
    })
}

impl KeyStore {
    /// Spends the login token `jti` (kept until `jti_expires_at`) and stores `session`, in one
    /// transaction: neither exists without the other. Spent tokens past their expiry are purged
    /// on the way.
    ///
    /// # Errors
    /// [`StoreError::LoginTokenUsed`] when `jti` was spent before, or a database error.
    #[tracing::instrument(target = "stanna_span", name = "store.create_session", skip_all, fields(db.system = self.backend_name()))]
    pub async fn create_session(
        &self,
        session: &NewSessionRow,
        jti: &str,
        jti_expires_at: SystemTime,
        now: SystemTime,
        request_id: &str,
    ) -> Result<SessionRecord, StoreError> {
        let txn = self.begin_serialised_write().await?;
        let now_us = time::to_micros(now);
        // Purged well after their tokens stop verifying: a registry whose clock runs ahead of
        // another's must not forget a jti the other would still accept.
        login_tokens::Entity::delete_many()
            .filter(login_tokens::Column::ExpiresAt.lt(now_us.saturating_sub(JTI_KEPT_AFTER_US)))
            .exec(&txn)
            .await?;
        let spent = login_tokens::Entity::insert(login_tokens::ActiveModel {
            jti: Set(jti.to_owned()),
            expires_at: Set(time::to_micros(jti_expires_at)),
        })
        .exec_without_returning(&txn)
        .await;
        if let Err(err) = spent {
            if let Some(SqlErr::UniqueConstraintViolation(_)) = err.sql_err() {
                return Err(StoreError::LoginTokenUsed);
            }
            return Err(err.into());
        }
        let row = sessions::ActiveModel {
            session_id: Set(session.id.to_string()),
            token_digest: Set(stanna_keys::to_hex(&session.digest)),
            workspace_id: Set(session.workspace.to_string()),
            user_id: Set(session.user.to_string()),
            role: Set(session.role.as_str().to_owned()),
            display_name: Set(session.name.clone()),
            email: Set(session.email.clone()),
            created_at: Set(now_us),
            expires_at: Set(time::to_micros(session.expires_at)),
            revoked_at: Set(None),
            updated_at: Set(now_us),
        };
        let model = sessions::Entity::insert(row)
            .exec_with_returning(&txn)
            .await?;
        let created = record_of(model)?;
        // A sign-in is the session's own act: it names itself.
        let actor = AuditContext::new(
            Actor::Session {
                session_id: created.id,
                user: created.user.clone(),
            },
            request_id,
        );
        audit::append(
            &txn,
            &actor,
            session_subject(&created),
            "session.created",
            None,
            Some(session_state(&created)),
            now,
        )
        .await?;
        txn.commit().await?;
        Ok(created)
    }

    /// The session `id`, revoked or not (the caller checks the digest, expiry and revocation).
    ///
    /// # Errors
    /// A database error, or [`StoreError::Corrupt`].
    #[tracing::instrument(target = "stanna_span", name = "store.find_session", skip_all, fields(db.system = self.backend_name()))]
    pub async fn find_session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        self.find_session_where(id, Condition::all()).await
    }

    /// [`KeyStore::find_session`] on a replica, answered only by a server that has replayed past
    /// `replayed` (as [`KeyStore::find_by_key_id_replayed`]).
    ///
    /// # Errors
    /// A database error, or [`StoreError::Corrupt`].
    #[tracing::instrument(target = "stanna_span", name = "store.find_session", skip_all, fields(db.system = self.backend_name(), replica = true))]
    pub async fn find_session_replayed(
        &self,
        id: &SessionId,
        replayed: crate::WalPosition,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.find_session_where(id, crate::replica::replayed_past(replayed))
            .await
    }

    async fn find_session_where(
        &self,
        id: &SessionId,
        also: Condition,
    ) -> Result<Option<SessionRecord>, StoreError> {
        sessions::Entity::find_by_id(id.to_string())
            .filter(also)
            .one(&self.db)
            .await?
            .map(record_of)
            .transpose()
    }

    /// Ends the session `id` whose token has `digest` (sign-out: only the holder of the token
    /// may), with its `session.revoked` event — the session's own act — in the same
    /// transaction. Returns whether a live session was ended.
    ///
    /// # Errors
    /// A database error.
    pub async fn revoke_session(
        &self,
        id: &SessionId,
        digest: &[u8; 32],
        now: SystemTime,
        request_id: &str,
    ) -> Result<bool, StoreError> {
        let now_us = time::to_micros(now);
        let update = sessions::Entity::update_many()
            .col_expr(sessions::Column::RevokedAt, Expr::value(now_us))
            .col_expr(sessions::Column::UpdatedAt, Expr::value(now_us))
            .filter(sessions::Column::SessionId.eq(id.to_string()))
            .filter(sessions::Column::TokenDigest.eq(stanna_keys::to_hex(digest)))
            .filter(sessions::Column::RevokedAt.is_null());
        Ok(self.revoke_audited(update, now, Err(request_id)).await? > 0)
    }

    /// Ends every live session in `scope` (a user's, or a workspace's), each with its
    /// `session.revoked` event, in one transaction. Returns how many.
    ///
    /// # Errors
    /// A database error.
    pub async fn revoke_sessions(
        &self,
        scope: &SessionScope,
        now: SystemTime,
        audit: &AuditContext,
    ) -> Result<u64, StoreError> {
        let now_us = time::to_micros(now);
        let mut update = sessions::Entity::update_many()
            .col_expr(sessions::Column::RevokedAt, Expr::value(now_us))
            .col_expr(sessions::Column::UpdatedAt, Expr::value(now_us))
            .filter(sessions::Column::WorkspaceId.eq(scope.workspace.as_str()))
            .filter(sessions::Column::RevokedAt.is_null())
            .filter(sessions::Column::ExpiresAt.gt(now_us));
        if let Some(user) = &scope.user {
            update = update.filter(sessions::Column::UserId.eq(user.as_str()));
        }
        self.revoke_audited(update, now, Ok(audit)).await
    }

    /// Runs a revoking `update` and appends one event per session it ended, in one transaction:
    /// made by `audit`'s actor, or (`Err(request_id)`) by each session itself.
    async fn revoke_audited(
        &self,
        update: sea_orm::UpdateMany<sessions::Entity>,
        now: SystemTime,
        audit: Result<&AuditContext, &str>,
    ) -> Result<u64, StoreError> {
        let txn = self.begin_serialised_write().await?;
        let revoked = update.exec_with_returning(&txn).await?;
        let at = serde_json::Value::from(stanna_keys::time::rfc3339(now));
        for model in &revoked {
            let session = record_of(model.clone())?;
            let mut after = serde_json::Map::new();
            after.insert("revoked_at".into(), at.clone());
            let mut before = serde_json::Map::new();
            before.insert("revoked_at".into(), serde_json::Value::Null);
            let own;
            let audit = match audit {
                Ok(audit) => audit,
                Err(request_id) => {
                    own = AuditContext::new(
                        Actor::Session {
                            session_id: session.id,
                            user: session.user.clone(),
                        },
                        request_id,
                    );
                    &own
                }
            };
            audit::append(
                &txn,
                audit,
                session_subject(&session),
                "session.revoked",
                Some(before),
                Some(after),
                now,
            )
            .await?;
        }
        txn.commit().await?;
        Ok(revoked.len() as u64)
    }

    /// The ids of sessions neither revoked nor ended at `now`, after `after` in id order, at most
    /// `limit`: auth-check loads the set of live session ids with it at start.
    ///
    /// # Errors
    /// A database error.
    pub async fn live_session_ids(
        &self,
        now: SystemTime,
        after: Option<SessionId>,
        limit: u64,
    ) -> Result<Vec<SessionId>, StoreError> {
        let mut query = sessions::Entity::find()
            .select_only()
            .column(sessions::Column::SessionId)
            .filter(sessions::Column::RevokedAt.is_null())
            .filter(sessions::Column::ExpiresAt.gt(time::to_micros(now)));
        if let Some(after) = after {
            query = query.filter(sessions::Column::SessionId.gt(after.as_str()));
        }
        let ids: Vec<String> = query
            .order_by_asc(sessions::Column::SessionId)
            .limit(limit)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(ids
            .iter()
            .filter_map(|id| SessionId::parse(id).ok())
            .collect())
    }

    /// Sessions changed (created or revoked) after `after` (and, at equal times, with a larger
    /// id), in that order, at most `limit`: auth-check's session change feed. Unreadable rows are
    /// skipped and logged (auth-check then never caches them: it re-reads a missing session).
    ///
    /// # Errors
    /// A database error.
    pub async fn session_changes_after(
        &self,
        after: SystemTime,
        after_id: Option<SessionId>,
        limit: u64,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let at = time::to_micros(after);
        let mut condition = Condition::any().add(sessions::Column::UpdatedAt.gt(at));
        if let Some(id) = after_id {
            condition = condition.add(
                Condition::all()
                    .add(sessions::Column::UpdatedAt.eq(at))
                    .add(sessions::Column::SessionId.gt(id.to_string())),
            );
        }
        let rows = sessions::Entity::find()
            .filter(condition)
            .order_by_asc(sessions::Column::UpdatedAt)
            .order_by_asc(sessions::Column::SessionId)
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| match record_of(row) {
                Ok(record) => Some(record),
                Err(err) => {
                    tracing::error!(error = %err, "skipping an unreadable session row");
                    None
                }
            })
            .collect())
    }
}

/// A session as an audit event's subject.
fn session_subject(session: &SessionRecord) -> Subject<'_> {
    Subject::Session {
        workspace: &session.workspace,
        user: &session.user,
        session_id: &session.id,
    }
}

/// A session's audited state: its role and end, never its token or digest.
fn session_state(session: &SessionRecord) -> serde_json::Map<String, serde_json::Value> {
    let mut state = serde_json::Map::new();
    state.insert("role".into(), session.role.as_str().into());
    state.insert(
        "expires_at".into(),
        stanna_keys::time::rfc3339(session.expires_at).into(),
    );
    state
}
