//! The key store: SeaORM over SQLite (the embedded default) or PostgreSQL, behind [`KeyStore`].
//!
//! Every query that reads or changes a key on behalf of a caller is scoped by workspace and, when
//! the caller names one, by user, inside the SQL itself (`WHERE workspace_id = ? AND user_id = ? AND
//! key_id = ?`), never by reading a row and checking it afterwards (DESIGN §4). The one unscoped
//! lookup, [`KeyStore::find_by_key_id`], is for verification, which learns the workspace from the
//! key.
//!
//! Only the argon2id hash and the preview of a key are stored, never the key.

pub mod entity;
pub mod migration;
mod page_token;
mod time;

use std::time::{Duration, SystemTime};

use sea_orm::sea_query::Expr;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectOptions, ConnectionTrait, Database,
    DatabaseBackend, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, RuntimeErr, SqlErr, SqliteTransactionMode, TransactionOptions,
    TransactionTrait,
};
use stanna_keys::{KeyId, KeyName, KeyStatus, RateLimits, UserId, WindowLimit, WorkspaceId};

use entity::{ActiveModel, Column, Entity};
pub use page_token::{InvalidPageToken, PageToken};

/// What went wrong in the store. Database text stays inside ([`StoreError::Database`]) for the
/// service boundary to log; it is never sent to a client.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No key with that id is visible in the given scope.
    #[error("key not found")]
    NotFound,
    /// The user already holds the maximum number of live keys.
    #[error("the user already has {max} keys")]
    TooManyKeys {
        /// The configured maximum.
        max: u32,
    },
    /// The key was rotated already; only its replacement can be rotated.
    #[error("the key was already rotated; its replacement is {replaced_by}")]
    AlreadyRotated {
        /// The key that replaced it.
        replaced_by: KeyId,
    },
    /// A generated key id collided with an existing one (≈2⁻⁷¹ per pair; retry with a new key).
    #[error("key id already exists")]
    DuplicateKeyId,
    /// The database cannot be reached (connection refused, pool timed out, …).
    #[error("database unavailable")]
    Unavailable(#[source] DbErr),
    /// Any other database failure.
    #[error("database error")]
    Database(#[source] DbErr),
    /// A stored row breaks an invariant (e.g. an unknown status); it is reported, not guessed at.
    #[error("stored key {key_id} is corrupt: {reason}")]
    Corrupt {
        /// The row's key id.
        key_id: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        if is_unavailable(&err) {
            return Self::Unavailable(err);
        }
        if let Some(SqlErr::UniqueConstraintViolation(_)) = err.sql_err() {
            return Self::DuplicateKeyId;
        }
        Self::Database(err)
    }
}

/// Whether `err` means "the database is not reachable" rather than "the query failed".
fn is_unavailable(err: &DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    match err {
        DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            matches!(
                **e,
                Sqlx::Io(_) | Sqlx::PoolTimedOut | Sqlx::PoolClosed | Sqlx::Tls(_)
            )
        }
        _ => false,
    }
}

/// Which keys a call may see: always one workspace, optionally one user in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The workspace every query is confined to.
    pub workspace: WorkspaceId,
    /// When set, only this user's keys.
    pub user: Option<UserId>,
}

impl Scope {
    fn condition(&self) -> Condition {
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
}

/// How many keys a list call returns at most, and where to continue.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// 1-100; the caller validates and applies the default.
    pub size: u32,
    /// Continue after this position (from a previous page's [`Page::next`]).
    pub after: Option<PageToken>,
}

/// One page of keys, newest first.
#[derive(Debug, Clone)]
pub struct Page {
    /// The keys.
    pub keys: Vec<KeyRecord>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<PageToken>,
}

/// The key repository. Cheap to clone (a pooled connection handle).
#[derive(Debug, Clone)]
pub struct KeyStore {
    /// The connection pool.
    db: DatabaseConnection,
}

impl KeyStore {
    /// Connects to `url` (`sqlite://path?mode=rwc` or `postgres://…`) and applies migrations.
    ///
    /// SQLite runs in WAL mode with a busy timeout, so readers never block the writer and two
    /// processes sharing a file wait for each other instead of failing.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the database cannot be reached, or a migration error.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        // Several processes opening one new SQLite file at once can meet "database is locked"
        // while one of them switches it to WAL (that step does not wait on the busy timeout):
        // retry briefly instead of failing the start-up.
        let mut attempt = 0;
        loop {
            match Self::connect_once(url).await {
                Err(StoreError::Unavailable(e) | StoreError::Database(e))
                    if attempt < 30 && e.to_string().contains("database is locked") =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50 * attempt.min(10))).await;
                }
                other => return other,
            }
        }
    }

    async fn connect_once(url: &str) -> Result<Self, StoreError> {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .sqlx_logging(false)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(5))
            .map_sqlx_sqlite_opts(|o| {
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
            });
        let db = Database::connect(options).await?;
        migration::migrate(&db).await?;
        Ok(Self { db })
    }

    /// The backend in use (for logs and tests).
    pub fn backend(&self) -> DatabaseBackend {
        self.db.get_database_backend()
    }

    /// The OpenTelemetry `db.system` of the backend, for spans.
    fn backend_name(&self) -> &'static str {
        match self.backend() {
            DatabaseBackend::Postgres => "postgresql",
            DatabaseBackend::Sqlite => "sqlite",
            _ => "other",
        }
    }

    /// Closes the pool, waiting for connections in use. SQLite checkpoints its write-ahead log and
    /// removes the `-wal`/`-shm` files when the last connection closes. Every clone shares the
    /// pool: none can query afterwards.
    ///
    /// # Errors
    /// [`StoreError`] when closing fails.
    pub async fn close(&self) -> Result<(), StoreError> {
        self.db.close_by_ref().await.map_err(StoreError::from)
    }

    /// The raw connection, for tests that inspect the stored rows.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Stores a new key. With `max_per_user`, refuses when the user already holds that many keys
    /// that are not past their expiry; the check and the insert are one serialised transaction,
    /// so concurrent creates cannot overshoot.
    ///
    /// # Errors
    /// [`StoreError::TooManyKeys`], [`StoreError::DuplicateKeyId`], or a database error.
    #[tracing::instrument(target = "stanna_span", name = "store.create", skip_all, fields(db.system = self.backend_name()))]
    pub async fn create(
        &self,
        key: NewKey,
        max_per_user: Option<u32>,
        now: SystemTime,
    ) -> Result<KeyRecord, StoreError> {
        let txn = self.begin_serialised_write().await?;
        if let Some(max) = max_per_user {
            if self.backend() == DatabaseBackend::Postgres {
                // Serialises creates for one (workspace, user) across every process; released at
                // commit or rollback.
                let lock = format!("{}\u{1f}{}", key.workspace, key.user);
                txn.execute_raw(sea_orm::Statement::from_sql_and_values(
                    DatabaseBackend::Postgres,
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                    [lock.into()],
                ))
                .await?;
            }
            let live = Entity::find()
                .filter(Column::WorkspaceId.eq(key.workspace.as_str()))
                .filter(Column::UserId.eq(key.user.as_str()))
                .filter(Column::DeletedAt.is_null())
                .filter(
                    Condition::any()
                        .add(Column::ExpiresAt.is_null())
                        .add(Column::ExpiresAt.gt(time::to_micros(now))),
                )
                .count(&txn)
                .await?;
            if live >= u64::from(max) {
                return Err(StoreError::TooManyKeys { max });
            }
        }
        let model = Entity::insert(new_row(&key, now))
            .exec_with_returning(&txn)
            .await?;
        txn.commit().await?;
        record_from_model(model)
    }

    /// Reads one key in `scope`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if no such key is visible in `scope`.
    #[tracing::instrument(target = "stanna_span", name = "store.get", skip_all, fields(db.system = self.backend_name()))]
    pub async fn get(&self, scope: &Scope, key_id: &KeyId) -> Result<KeyRecord, StoreError> {
        let model = Entity::find()
            .filter(scope.condition())
            .filter(Column::KeyId.eq(key_id.as_str()))
            .one(&self.db)
            .await?
            .ok_or(StoreError::NotFound)?;
        record_from_model(model)
    }

    /// Lists keys in `scope`, newest first (ties broken by key id), a page at a time. The cursor
    /// is a position, not an offset, so keys created or deleted between pages neither repeat nor
    /// shift the rest.
    ///
    /// # Errors
    /// A database error.
    #[tracing::instrument(target = "stanna_span", name = "store.list", skip_all, fields(db.system = self.backend_name()))]
    pub async fn list(&self, scope: &Scope, page: PageRequest) -> Result<Page, StoreError> {
        let mut query = Entity::find().filter(scope.condition());
        if let Some(after) = &page.after {
            query = query.filter(
                Condition::any()
                    .add(Column::CreatedAt.lt(after.created_at))
                    .add(
                        Condition::all()
                            .add(Column::CreatedAt.eq(after.created_at))
                            .add(Column::KeyId.lt(after.key_id.as_str())),
                    ),
            );
        }
        let mut rows = query
            .order_by_desc(Column::CreatedAt)
            .order_by_desc(Column::KeyId)
            .limit(u64::from(page.size) + 1)
            .all(&self.db)
            .await?;
        let more = rows.len() > page.size as usize;
        rows.truncate(page.size as usize);
        let keys = rows
            .into_iter()
            .map(record_from_model)
            .collect::<Result<Vec<_>, _>>()?;
        let next = match keys.last() {
            Some(last) if more => Some(PageToken {
                created_at: time::to_micros(last.created_at),
                key_id: last.key_id,
            }),
            _ => None,
        };
        Ok(Page { keys, next })
    }

    /// Applies `changes` to one key in `scope` in a single scoped `UPDATE … RETURNING`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if no such key is visible in `scope`.
    #[tracing::instrument(target = "stanna_span", name = "store.update", skip_all, fields(db.system = self.backend_name()))]
    pub async fn update(
        &self,
        scope: &Scope,
        key_id: &KeyId,
        changes: KeyChanges,
        now: SystemTime,
    ) -> Result<KeyRecord, StoreError> {
        let mut update = Entity::update_many()
            .col_expr(Column::UpdatedAt, Expr::value(time::to_micros(now)))
            .filter(scope.condition())
            .filter(Column::KeyId.eq(key_id.as_str()));
        if let Some(name) = &changes.name {
            update = update.col_expr(Column::Name, Expr::value(name.as_str()));
        }
        if let Some(status) = changes.status {
            update = update.col_expr(Column::Status, Expr::value(status.as_str()));
        }
        let model = update
            .exec_with_returning(&self.db)
            .await?
            .into_iter()
            .next()
            .ok_or(StoreError::NotFound)?;
        record_from_model(model)
    }

    /// Deletes one key in `scope`: it stops verifying and disappears from every read. The row
    /// stays as a tombstone so change polls (auth-check's revocation) see the deletion.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if no such key is visible in `scope` (so deleting twice is too).
    #[tracing::instrument(target = "stanna_span", name = "store.delete", skip_all, fields(db.system = self.backend_name()))]
    pub async fn delete(
        &self,
        scope: &Scope,
        key_id: &KeyId,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let now = time::to_micros(now);
        let result = Entity::update_many()
            .col_expr(Column::DeletedAt, Expr::value(now))
            .col_expr(Column::UpdatedAt, Expr::value(now))
            .filter(scope.condition())
            .filter(Column::KeyId.eq(key_id.as_str()))
            .exec(&self.db)
            .await?;
        if result.rows_affected == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Replaces the key `old` in `scope` by `new` in one transaction: `new` is stored with the old
    /// key's workspace, owner, name and limits (and its expiry, if still ahead), and the old key
    /// expires at `old_expires_at` (or earlier, if it already did). Returns `(new, old)`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if `old` is not visible in `scope` or has already expired.
    #[tracing::instrument(target = "stanna_span", name = "store.rotate", skip_all, fields(db.system = self.backend_name()))]
    pub async fn rotate(
        &self,
        scope: &Scope,
        old: &KeyId,
        new: NewKeySecret,
        old_expires_at: SystemTime,
        now: SystemTime,
    ) -> Result<(KeyRecord, KeyRecord), StoreError> {
        let txn = self.begin_serialised_write().await?;
        let current = Entity::find()
            .filter(scope.condition())
            .filter(Column::KeyId.eq(old.as_str()))
            .one(&txn)
            .await?
            .ok_or(StoreError::NotFound)?;
        let successor = current
            .replaced_by
            .as_deref()
            .and_then(|id| KeyId::parse(id).ok());
        let current = record_from_model(current)?;
        if current.is_expired(now) {
            return Err(StoreError::NotFound);
        }
        // One successor per key: rotating a key that is already being retired would make a
        // second successor inheriting the first rotation's grace expiry (a new key that dies).
        if let Some(replaced_by) = successor {
            return Err(StoreError::AlreadyRotated { replaced_by });
        }
        let retire_at = current
            .expires_at
            .map_or(old_expires_at, |at| at.min(old_expires_at));
        let retired = Entity::update_many()
            .col_expr(Column::ExpiresAt, Expr::value(time::to_micros(retire_at)))
            .col_expr(Column::ReplacedBy, Expr::value(new.key_id.as_str()))
            .col_expr(Column::UpdatedAt, Expr::value(time::to_micros(now)))
            .filter(scope.condition())
            .filter(Column::KeyId.eq(old.as_str()))
            .exec_with_returning(&txn)
            .await?
            .into_iter()
            .next()
            .ok_or(StoreError::NotFound)?;
        let replacement = NewKey {
            key_id: new.key_id,
            preview: new.preview,
            key_hash: new.key_hash,
            workspace: current.workspace.clone(),
            user: current.user.clone(),
            name: current.name.clone(),
            expires_at: current.expires_at,
            rate_limits: current.rate_limits,
        };
        let mut row = new_row(&replacement, now);
        row.status = Set(current.status.as_str().to_owned());
        let created = Entity::insert(row).exec_with_returning(&txn).await?;
        txn.commit().await?;
        Ok((record_from_model(created)?, record_from_model(retired)?))
    }

    /// Looks a key up by id alone, for verification (the workspace comes from the key).
    ///
    /// # Errors
    /// A database error; an unknown id is `Ok(None)`.
    #[tracing::instrument(target = "stanna_span", name = "store.find_by_key_id", skip_all, fields(db.system = self.backend_name()))]
    pub async fn find_by_key_id(&self, key_id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        Entity::find_by_id(key_id.as_str())
            .filter(Column::DeletedAt.is_null())
            .one(&self.db)
            .await?
            .map(record_from_model)
            .transpose()
    }

    /// Keys changed (created, renamed, status set, rotated out, deleted) after `after`, in
    /// `(updated_at, key_id)` order, at most `limit`: page through with the last change's
    /// [`KeyChange::position`]. Deleted keys, and rows that cannot be read (logged), come back as
    /// [`KeyChange::Deleted`], so a corrupt row revokes its key instead of stalling the feed.
    ///
    /// # Errors
    /// A database error.
    pub async fn changes_after(
        &self,
        after: ChangePosition,
        limit: u64,
    ) -> Result<Vec<KeyChange>, StoreError> {
        let at = time::to_micros(after.updated_at);
        let mut condition = Condition::any().add(Column::UpdatedAt.gt(at));
        if let Some(key_id) = after.key_id {
            condition = condition.add(
                Condition::all()
                    .add(Column::UpdatedAt.eq(at))
                    .add(Column::KeyId.gt(key_id.as_str())),
            );
        }
        let rows = Entity::find()
            .filter(condition)
            .order_by_asc(Column::UpdatedAt)
            .order_by_asc(Column::KeyId)
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let updated_at = time::from_micros(row.updated_at);
                let Ok(key_id) = KeyId::parse(&row.key_id) else {
                    tracing::error!(key_id = %row.key_id, "skipping a stored key with an unreadable id");
                    return None;
                };
                if row.deleted_at.is_some() {
                    return Some(KeyChange::Deleted { key_id, updated_at });
                }
                match record_from_model(row) {
                    Ok(record) => Some(KeyChange::Updated(Box::new(record))),
                    Err(err) => {
                        tracing::error!(error = %err, "a changed key cannot be read; treating it as revoked");
                        Some(KeyChange::Deleted { key_id, updated_at })
                    }
                }
            })
            .collect())
    }

    /// Records last-used times in one statement per key, never moving a time backwards.
    ///
    /// # Errors
    /// A database error; nothing is partially applied (one transaction).
    #[tracing::instrument(target = "stanna_span", name = "store.record_last_used", skip_all, fields(db.system = self.backend_name()))]
    pub async fn record_last_used(&self, uses: &[(KeyId, SystemTime)]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin().await?;
        for (key_id, at) in uses {
            let at = time::to_micros(*at);
            Entity::update_many()
                .col_expr(Column::LastUsedAt, Expr::value(at))
                .filter(Column::KeyId.eq(key_id.as_str()))
                .filter(
                    Condition::any()
                        .add(Column::LastUsedAt.is_null())
                        .add(Column::LastUsedAt.lt(at)),
                )
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Checks the database answers (for health checks).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when it does not.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await.map_err(StoreError::Unavailable)
    }

    /// A write transaction that holds SQLite's write lock from its first statement (so a read
    /// followed by a write cannot fail with `SQLITE_BUSY` half-way); a plain transaction elsewhere.
    async fn begin_serialised_write(&self) -> Result<sea_orm::DatabaseTransaction, StoreError> {
        Ok(self
            .db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await?)
    }
}

/// One change seen by [`KeyStore::changes_after`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChange {
    /// The key exists with this state (new or changed).
    Updated(Box<KeyRecord>),
    /// The key was deleted.
    Deleted {
        /// The deleted key.
        key_id: KeyId,
        /// When.
        updated_at: SystemTime,
    },
}

impl KeyChange {
    /// The key that changed.
    pub fn key_id(&self) -> KeyId {
        match self {
            Self::Updated(record) => record.key_id,
            Self::Deleted { key_id, .. } => *key_id,
        }
    }

    /// When the change was made.
    pub fn updated_at(&self) -> SystemTime {
        match self {
            Self::Updated(record) => record.updated_at,
            Self::Deleted { updated_at, .. } => *updated_at,
        }
    }

    /// Where the change sits in the feed, to continue after it.
    pub fn position(&self) -> ChangePosition {
        ChangePosition {
            updated_at: self.updated_at(),
            key_id: Some(self.key_id()),
        }
    }
}

/// A position in the change feed: after this time (and, at equal times, after this key id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangePosition {
    /// Changes stamped after this time (or at it, with a larger key id).
    pub updated_at: SystemTime,
    /// The tie-breaker; `None` takes every change stamped at `updated_at` as already seen.
    pub key_id: Option<KeyId>,
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

fn new_row(key: &NewKey, now: SystemTime) -> ActiveModel {
    let now = time::to_micros(now);
    let (burst_limit, burst_period_ms) = window_columns(key.rate_limits.burst);
    let (hourly_limit, hourly_period_ms) = window_columns(key.rate_limits.hourly);
    ActiveModel {
        key_id: Set(key.key_id.as_str().to_owned()),
        workspace_id: Set(key.workspace.as_str().to_owned()),
        user_id: Set(key.user.as_str().to_owned()),
        name: Set(key.name.as_str().to_owned()),
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
    }
}

fn window_columns(window: Option<WindowLimit>) -> (Option<i32>, Option<i64>) {
    match window {
        // Limits are at most 10 000 and periods at most 24 h, so both conversions are exact.
        Some(w) => (Some(w.limit() as i32), Some(w.period().as_millis() as i64)),
        None => (None, None),
    }
}

fn record_from_model(m: entity::Model) -> Result<KeyRecord, StoreError> {
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
        created_at: time::from_micros(m.created_at),
        updated_at: time::from_micros(m.updated_at),
        last_used_at: m.last_used_at.map(time::from_micros),
        expires_at: m.expires_at.map(time::from_micros),
        preview: m.preview,
        key_hash: m.key_hash,
    })
}
