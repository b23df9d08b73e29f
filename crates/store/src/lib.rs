//! The key store: SeaORM over SQLite (the embedded default) or PostgreSQL, behind [`KeyStore`].
//!
//! Every query that reads or changes a key on behalf of a caller is scoped by workspace and, when
//! the caller names one, by user, inside the SQL itself (`WHERE workspace_id = ? AND user_id = ? AND
//! key_id = ?`), never by reading a row and checking it afterwards. The one unscoped lookup,
//! [`KeyStore::find_by_key_id`], is for verification, which learns the workspace from the key.
//!
//! Only the argon2id hash and the preview of a key are stored, never the key.
//!
//! - [`error`]: [`StoreError`] and the classification of the driver's errors;
//! - [`model`]: the types callers pass and get back;
//! - `keys`: the queries; `change_feed`: what changed since a position ([`KeyChange`]);
//!   `load`: bulk loads for load tests ([`KeyStore::load_keys`]);
//! - `replica`: a streaming replica as a read-only store, and the WAL positions that say
//!   whether it has caught up ([`KeyStore::open_replica`]);
//! - [`sessions`]: dashboard sessions and spent login tokens;
//! - [`usage`]: usage per key per hour, and the last-used write-back;
//! - [`audit`]: the append-only log of every key and session change, written with the change;
//! - [`entity`], [`migration`]: the tables and their migrations.

pub mod audit;
mod change_feed;
pub mod entity;
pub mod error;
mod keys;
mod load;
pub mod migration;
pub mod model;
mod page_token;
mod replica;
pub mod sessions;
mod time;
pub mod usage;

use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, Database, DatabaseBackend, DatabaseConnection, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};

pub use audit::{Actor, AuditContext, AuditEvent, AuditPage, AuditQuery};
pub use change_feed::{CHANGES_OF_MAX, ChangePosition, ChangeStamp, KeyChange};
pub use error::{ExpiryRefusal, StoreError};
pub use keys::{PURGE_BATCH, TOMBSTONE_RETENTION_MIN};
pub use load::LoadedKey;
pub use model::{
    KeyChanges, KeyFilter, KeyRecord, LimitChanges, LimitOverrides, NewKey, NewKeySecret, Page,
    PageRequest, Scope,
};
pub use page_token::{InvalidPageToken, PageToken};
pub use replica::{ReplayPosition, ReplicaError, WalPosition};
pub use sessions::{NewSessionRow, SessionRecord, SessionScope};
pub use usage::{Outcome, PartialWrite, UsageCounts, UsageRow, hour_of};

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
                    if attempt < 30 && error::is_sqlite_busy(&e) =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50 * attempt.min(10))).await;
                }
                other => return other,
            }
        }
    }

    async fn connect_once(url: &str) -> Result<Self, StoreError> {
        // `sqlite://stanna.db` creates the file as `?mode=rwc` does; a URL that says `mode=`
        // (e.g. `ro`) is taken at its word.
        let create = !url
            .split_once('?')
            .is_some_and(|(_, query)| query.split('&').any(|pair| pair.starts_with("mode=")));
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .sqlx_logging(false)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(5))
            .map_sqlx_sqlite_opts(move |o| {
                let o = o
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10));
                if create { o.create_if_missing(true) } else { o }
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
    pub(crate) fn backend_name(&self) -> &'static str {
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

    /// Checks the database answers (for health checks).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when it does not.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await.map_err(StoreError::Unavailable)
    }

    /// A write transaction that holds SQLite's write lock from its first statement (so a read
    /// followed by a write cannot fail with `SQLITE_BUSY` half-way); a plain transaction elsewhere.
    pub(crate) async fn begin_serialised_write(
        &self,
    ) -> Result<sea_orm::DatabaseTransaction, StoreError> {
        Ok(self
            .db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await?)
    }
}
