//! Schema migrations, applied at start-up by [`crate::KeyStore::connect`].
//!
//! sea-orm-migration takes no lock of its own, so two processes starting at once could both try
//! to apply the same migration. [`migrate`] serialises them: on PostgreSQL with a transaction-scoped
//! advisory lock, on SQLite with an `IMMEDIATE` transaction (the write lock is taken at `BEGIN`
//! and waits under the busy timeout). Migrations run inside that transaction, so a second process
//! finds them applied and does nothing.

use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};
use sea_orm_migration::prelude::*;

/// An arbitrary constant naming Stanna's migration lock among PostgreSQL advisory locks.
const PG_MIGRATION_LOCK: i64 = 0x5354_414e_4e41; // "STANNA"

/// Applies pending migrations, safely when several processes start at once.
///
/// # Errors
/// Any database error while locking or migrating; nothing is half-applied.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    let txn = db
        .begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        })
        .await?;
    if db.get_database_backend() == DatabaseBackend::Postgres {
        txn.execute_unprepared(&format!(
            "SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK})"
        ))
        .await?;
    }
    Migrator::up(&txn, None).await?;
    txn.commit().await
}

/// Every migration, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateApiKeys),
            Box::new(SoftDeleteAndChangeFeed),
            Box::new(RotationLineage),
            Box::new(SessionsAndWiderUserIds),
            Box::new(KeyMetadata),
            Box::new(KeyScopes),
            Box::new(KeyNameSearch),
            Box::new(KeyUsage),
            Box::new(AuditLog),
            Box::new(ChangeFeedKeyOrder),
        ]
    }
}

/// The initial schema: the `api_keys` table and the indexes its queries use.
struct CreateApiKeys;

impl MigrationName for CreateApiKeys {
    fn name(&self) -> &str {
        "m20261127_000001_create_api_keys"
    }
}

/// Column names of `api_keys`, for the schema builder.
#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    KeyId,
    WorkspaceId,
    UserId,
    Name,
    Preview,
    KeyHash,
    Status,
    CreatedAt,
    UpdatedAt,
    LastUsedAt,
    ExpiresAt,
    BurstLimit,
    BurstPeriodMs,
    HourlyLimit,
    HourlyPeriodMs,
    DeletedAt,
    ReplacedBy,
    Metadata,
    Scopes,
    NameFolded,
}

#[async_trait::async_trait]
impl MigrationTrait for CreateApiKeys {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(ApiKeys::KeyId)
                            .string_len(12)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(ApiKeys::WorkspaceId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(ApiKeys::UserId).string_len(64).not_null())
                    .col(ColumnDef::new(ApiKeys::Name).string_len(400).not_null())
                    .col(ColumnDef::new(ApiKeys::Preview).string_len(16).not_null())
                    .col(ColumnDef::new(ApiKeys::KeyHash).string_len(255).not_null())
                    .col(ColumnDef::new(ApiKeys::Status).string_len(16).not_null())
                    .col(ColumnDef::new(ApiKeys::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(ApiKeys::UpdatedAt).big_integer().not_null())
                    .col(ColumnDef::new(ApiKeys::LastUsedAt).big_integer().null())
                    .col(ColumnDef::new(ApiKeys::ExpiresAt).big_integer().null())
                    .col(ColumnDef::new(ApiKeys::BurstLimit).integer().null())
                    .col(ColumnDef::new(ApiKeys::BurstPeriodMs).big_integer().null())
                    .col(ColumnDef::new(ApiKeys::HourlyLimit).integer().null())
                    .col(ColumnDef::new(ApiKeys::HourlyPeriodMs).big_integer().null())
                    .to_owned(),
            )
            .await?;
        // Listing a workspace (newest first, keyset pagination on created_at, key_id), and counting
        // or listing one user's keys in it. Lookups by key id use the primary key.
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("api_keys_workspace_created")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::WorkspaceId)
                    .col(ApiKeys::CreatedAt)
                    .col(ApiKeys::KeyId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("api_keys_workspace_user_created")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::WorkspaceId)
                    .col(ApiKeys::UserId)
                    .col(ApiKeys::CreatedAt)
                    .col(ApiKeys::KeyId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ApiKeys::Table).to_owned())
            .await
    }
}

/// Deletion becomes a tombstone (`deleted_at`) and `updated_at` gets an index, so auth-check can
/// poll "what changed since T" — deletions included — in one indexed query.
struct SoftDeleteAndChangeFeed;

impl MigrationName for SoftDeleteAndChangeFeed {
    fn name(&self) -> &str {
        "m20261127_000002_soft_delete_and_change_feed"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for SoftDeleteAndChangeFeed {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .add_column(ColumnDef::new(ApiKeys::DeletedAt).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("api_keys_updated")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::UpdatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("api_keys_updated")
                    .table(ApiKeys::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .drop_column(ApiKeys::DeletedAt)
                    .to_owned(),
            )
            .await
    }
}

/// `replaced_by`: the key a rotation made, so a key is rotated once and its successor never
/// inherits the grace period's expiry.
struct RotationLineage;

impl MigrationName for RotationLineage {
    fn name(&self) -> &str {
        "m20261127_000003_rotation_lineage"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for RotationLineage {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .add_column(ColumnDef::new(ApiKeys::ReplacedBy).string_len(12).null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .drop_column(ApiKeys::ReplacedBy)
                    .to_owned(),
            )
            .await
    }
}

/// Dashboard sessions and spent login tokens (`sessions.rs`), and user ids widened to 255
/// characters (the product's own subjects, e.g. `auth0|123`). SQLite ignores declared lengths,
/// so only PostgreSQL's `varchar(64)` is altered.
struct SessionsAndWiderUserIds;

impl MigrationName for SessionsAndWiderUserIds {
    fn name(&self) -> &str {
        "m20261202_000004_sessions_and_wider_user_ids"
    }
}

/// Column names of `sessions`.
#[derive(DeriveIden)]
enum Sessions {
    Table,
    SessionId,
    TokenDigest,
    WorkspaceId,
    UserId,
    Role,
    DisplayName,
    Email,
    CreatedAt,
    ExpiresAt,
    RevokedAt,
    UpdatedAt,
}

/// Column names of `login_tokens`.
#[derive(DeriveIden)]
enum LoginTokens {
    Table,
    Jti,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for SessionsAndWiderUserIds {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            manager
                .alter_table(
                    Table::alter()
                        .table(ApiKeys::Table)
                        .modify_column(ColumnDef::new(ApiKeys::UserId).string_len(255).not_null())
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(Sessions::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Sessions::SessionId)
                            .string_len(16)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Sessions::TokenDigest)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Sessions::WorkspaceId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Sessions::UserId).string_len(255).not_null())
                    .col(ColumnDef::new(Sessions::Role).string_len(16).not_null())
                    .col(ColumnDef::new(Sessions::DisplayName).string_len(400).null())
                    .col(ColumnDef::new(Sessions::Email).string_len(1024).null())
                    .col(ColumnDef::new(Sessions::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Sessions::ExpiresAt).big_integer().not_null())
                    .col(ColumnDef::new(Sessions::RevokedAt).big_integer().null())
                    .col(ColumnDef::new(Sessions::UpdatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        // The change feed's order, and revoking a user's or a workspace's sessions.
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("sessions_updated")
                    .table(Sessions::Table)
                    .col(Sessions::UpdatedAt)
                    .col(Sessions::SessionId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("sessions_workspace_user")
                    .table(Sessions::Table)
                    .col(Sessions::WorkspaceId)
                    .col(Sessions::UserId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(LoginTokens::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(LoginTokens::Jti)
                            .string_len(128)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(LoginTokens::ExpiresAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("login_tokens_expires")
                    .table(LoginTokens::Table)
                    .col(LoginTokens::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(LoginTokens::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Sessions::Table).to_owned())
            .await
    }
}

/// `metadata`: a JSON object of the key's owner (≤ 1 KiB, validated by the registry), kept as
/// text so both databases store it the same way and nothing queries inside it.
struct KeyMetadata;

impl MigrationName for KeyMetadata {
    fn name(&self) -> &str {
        "m20261202_000005_key_metadata"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for KeyMetadata {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .add_column(ColumnDef::new(ApiKeys::Metadata).text().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .drop_column(ApiKeys::Metadata)
                    .to_owned(),
            )
            .await
    }
}

/// `scopes`: what a key may do, its names sorted and joined by single spaces (validated by the
/// registry); null for an unscoped key (its user's full permissions), so every existing key keeps
/// what it could do. Text, not an array: both databases store it alike, and scope checks run in
/// auth-check's memory, never in SQL.
struct KeyScopes;

impl MigrationName for KeyScopes {
    fn name(&self) -> &str {
        "m20261203_000006_key_scopes"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for KeyScopes {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .add_column(ColumnDef::new(ApiKeys::Scopes).text().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .drop_column(ApiKeys::Scopes)
                    .to_owned(),
            )
            .await
    }
}

/// `name_folded`: the name as case-insensitive search compares it, folded by Rust
/// ([`stanna_keys::fold_for_search`]) because neither database lowercases the same way (SQLite's
/// `LOWER` is ASCII-only; PostgreSQL's follows the server's locale). Existing rows are filled here,
/// in batches of [`BACKFILL_BATCH`] by key id, inside the migration's transaction.
///
/// No index: a substring match cannot use a B-tree, and the trigram index that could is an
/// extension (pg_trgm) not every managed database lets a non-superuser create. Filtered listings
/// walk the workspace's `(workspace_id, created_at, key_id)` index instead; docs/keys.md measures
/// that at 100 000 keys.
struct KeyNameSearch;

/// Rows folded per statement by [`KeyNameSearch`]: two bound values each, far under SQLite's
/// limit of 32 766 per statement.
const BACKFILL_BATCH: u64 = 1000;

impl MigrationName for KeyNameSearch {
    fn name(&self) -> &str {
        "m20261204_000007_key_name_search"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for KeyNameSearch {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .add_column(
                        ColumnDef::new(ApiKeys::NameFolded)
                            .string_len(400)
                            .not_null()
                            .default(""),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        let mut after = String::new();
        loop {
            let select = Query::select()
                .columns([ApiKeys::KeyId, ApiKeys::Name])
                .from(ApiKeys::Table)
                .and_where(Expr::col(ApiKeys::KeyId).gt(after.as_str()))
                .order_by(ApiKeys::KeyId, Order::Asc)
                .limit(BACKFILL_BATCH)
                .to_owned();
            let rows = db.query_all(&select).await?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            after = last.try_get("", "key_id")?;
            let mut case = CaseStatement::new();
            let mut ids = Vec::with_capacity(rows.len());
            for row in &rows {
                let id: String = row.try_get("", "key_id")?;
                let name: String = row.try_get("", "name")?;
                case = case.case(
                    Expr::col(ApiKeys::KeyId).eq(id.as_str()),
                    Expr::val(stanna_keys::fold_for_search(&name)),
                );
                ids.push(id);
            }
            let update = Query::update()
                .table(ApiKeys::Table)
                .value(
                    ApiKeys::NameFolded,
                    case.finally(Expr::col(ApiKeys::NameFolded)),
                )
                .and_where(Expr::col(ApiKeys::KeyId).is_in(ids))
                .to_owned();
            db.execute(&update).await?;
        }
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .drop_column(ApiKeys::NameFolded)
                    .to_owned(),
            )
            .await
    }
}

/// `key_usage`: requests per key per hour by outcome, written by auth-check's flush (added to,
/// never overwritten, so several auth-checks sum) and purged past the retention. The primary key
/// `(key_id, hour)` serves one key's range; `key_usage_hour` serves the purge.
struct KeyUsage;

#[derive(DeriveIden)]
enum KeyUsageTable {
    #[sea_orm(iden = "key_usage")]
    Table,
    KeyId,
    Hour,
    Allowed,
    RateLimited,
    Inactive,
    Expired,
    Forbidden,
}

impl MigrationName for KeyUsage {
    fn name(&self) -> &str {
        "m20261204_000008_key_usage"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for KeyUsage {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let counter = |c: KeyUsageTable| {
            ColumnDef::new(c)
                .big_integer()
                .not_null()
                .default(0)
                .to_owned()
        };
        manager
            .create_table(
                Table::create()
                    .table(KeyUsageTable::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(KeyUsageTable::KeyId)
                            .string_len(12)
                            .not_null(),
                    )
                    .col(ColumnDef::new(KeyUsageTable::Hour).big_integer().not_null())
                    .col(counter(KeyUsageTable::Allowed))
                    .col(counter(KeyUsageTable::RateLimited))
                    .col(counter(KeyUsageTable::Inactive))
                    .col(counter(KeyUsageTable::Expired))
                    .col(counter(KeyUsageTable::Forbidden))
                    .primary_key(
                        Index::create()
                            .col(KeyUsageTable::KeyId)
                            .col(KeyUsageTable::Hour),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("key_usage_hour")
                    .table(KeyUsageTable::Table)
                    .col(KeyUsageTable::Hour)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(KeyUsageTable::Table).to_owned())
            .await
    }
}

/// `audit_events`: one row per change to a key or session, append-only by trigger (see
/// [`crate::audit`]); `audit_purge` holds the one bound below which the retention purge may
/// delete. Indexes: the workspace's events newest first, a user's, a key's (and the rotations
/// that made a key), and `at` for the purge.
struct AuditLog;

impl MigrationName for AuditLog {
    fn name(&self) -> &str {
        "m20261205_000009_audit_log"
    }
}

/// Statements both databases take as they are.
const AUDIT_INDEXES: [&str; 5] = [
    "CREATE INDEX audit_events_workspace ON audit_events (workspace_id, event_id)",
    "CREATE INDEX audit_events_user ON audit_events (workspace_id, user_id, event_id)",
    "CREATE INDEX audit_events_key ON audit_events (key_id, event_id)",
    "CREATE INDEX audit_events_related_key ON audit_events (related_key_id, event_id)",
    "CREATE INDEX audit_events_at ON audit_events (at)",
];

const AUDIT_COLUMNS: &str = "at BIGINT NOT NULL, workspace_id TEXT NOT NULL, user_id TEXT NOT NULL, \
    key_id TEXT, related_key_id TEXT, session_id TEXT, action TEXT NOT NULL, \
    actor_kind TEXT NOT NULL, actor_id TEXT NOT NULL, actor_user_id TEXT, request_id TEXT NOT NULL, \
    before_state TEXT, after_state TEXT";

const AUDIT_SQLITE: [&str; 8] = [
    "CREATE TABLE audit_purge (id INTEGER PRIMARY KEY CHECK (id = 1), before_at BIGINT NOT NULL)",
    "INSERT INTO audit_purge (id, before_at) VALUES (1, 0)",
    "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events \
     BEGIN SELECT RAISE(ABORT, 'audit events are append-only: UPDATE refused'); END",
    "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events \
     WHEN OLD.at >= (SELECT before_at FROM audit_purge WHERE id = 1) \
     BEGIN SELECT RAISE(ABORT, 'audit events are append-only: DELETE refused outside the retention purge'); END",
    "CREATE TRIGGER audit_purge_bound BEFORE UPDATE ON audit_purge \
     WHEN NEW.before_at > (CAST(strftime('%s', 'now') AS INTEGER) - 82800) * 1000000 \
     BEGIN SELECT RAISE(ABORT, 'the audit purge deletes only events older than a day'); END",
    "CREATE TRIGGER audit_purge_kept BEFORE DELETE ON audit_purge \
     BEGIN SELECT RAISE(ABORT, 'the audit purge bound is kept'); END",
    // `INSERT OR REPLACE` deletes the row it replaces without firing delete triggers (SQLite
    // fires them only with recursive_triggers on): refuse the insert itself.
    "CREATE TRIGGER audit_purge_no_insert BEFORE INSERT ON audit_purge \
     BEGIN SELECT RAISE(ABORT, 'the audit purge bound is kept'); END",
    "CREATE TRIGGER audit_events_no_replace BEFORE INSERT ON audit_events \
     WHEN EXISTS (SELECT 1 FROM audit_events WHERE event_id = NEW.event_id) \
     BEGIN SELECT RAISE(ABORT, 'audit events are append-only: REPLACE refused'); END",
];

const AUDIT_POSTGRES: [&str; 8] = [
    "CREATE TABLE audit_purge (id SMALLINT PRIMARY KEY CHECK (id = 1), before_at BIGINT NOT NULL)",
    "INSERT INTO audit_purge (id, before_at) VALUES (1, 0)",
    "CREATE FUNCTION stanna_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ \
     BEGIN \
       IF TG_OP = 'DELETE' AND OLD.at < (SELECT before_at FROM audit_purge WHERE id = 1) THEN \
         RETURN OLD; \
       END IF; \
       RAISE EXCEPTION 'audit events are append-only: % refused outside the retention purge', TG_OP \
         USING ERRCODE = 'insufficient_privilege'; \
     END $$",
    "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events \
     FOR EACH ROW EXECUTE FUNCTION stanna_audit_append_only()",
    "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events \
     FOR EACH STATEMENT EXECUTE FUNCTION stanna_audit_append_only()",
    "CREATE FUNCTION stanna_audit_purge_bound() RETURNS trigger LANGUAGE plpgsql AS $$ \
     BEGIN \
       IF TG_OP = 'UPDATE' AND NEW.before_at <= (extract(epoch FROM now())::bigint - 82800) * 1000000 THEN \
         RETURN NEW; \
       END IF; \
       RAISE EXCEPTION 'the audit purge deletes only events older than a day' \
         USING ERRCODE = 'insufficient_privilege'; \
     END $$",
    "CREATE TRIGGER audit_purge_bound BEFORE UPDATE OR DELETE ON audit_purge \
     FOR EACH ROW EXECUTE FUNCTION stanna_audit_purge_bound()",
    "CREATE TRIGGER audit_purge_no_truncate BEFORE TRUNCATE ON audit_purge \
     FOR EACH STATEMENT EXECUTE FUNCTION stanna_audit_purge_bound()",
];

#[async_trait::async_trait]
impl MigrationTrait for AuditLog {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let backend = manager.get_database_backend();
        let (table, rest): (String, &[&str]) = match backend {
            DatabaseBackend::Postgres => (
                format!(
                    "CREATE TABLE audit_events (event_id BIGSERIAL PRIMARY KEY, {AUDIT_COLUMNS})"
                ),
                &AUDIT_POSTGRES,
            ),
            _ => (
                format!(
                    "CREATE TABLE audit_events (event_id INTEGER PRIMARY KEY AUTOINCREMENT, {AUDIT_COLUMNS})"
                ),
                &AUDIT_SQLITE,
            ),
        };
        db.execute_unprepared(&table).await?;
        for sql in AUDIT_INDEXES.iter().chain(rest) {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP TABLE IF EXISTS audit_events")
            .await?;
        db.execute_unprepared("DROP TABLE IF EXISTS audit_purge")
            .await?;
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            db.execute_unprepared("DROP FUNCTION IF EXISTS stanna_audit_append_only()")
                .await?;
            db.execute_unprepared("DROP FUNCTION IF EXISTS stanna_audit_purge_bound()")
                .await?;
        }
        Ok(())
    }
}

/// The change feed's index covers its order, `(updated_at, key_id)`: the poll's overlap re-read
/// lists stamps from the index alone ([`crate::KeyStore::change_stamps_after`]) instead of
/// reading whole rows, and the tie-break on `key_id` needs no sort. It replaces
/// `api_keys_updated` (a prefix of it). `api_keys_tombstones` (partial: deleted rows only) finds
/// what the tombstone purge deletes ([`crate::KeyStore::purge_deleted_keys`]) without reading
/// live keys. Building them reads the table once: seconds at a million keys, inside the
/// migration's transaction (writers to `api_keys` wait for it).
struct ChangeFeedKeyOrder;

impl MigrationName for ChangeFeedKeyOrder {
    fn name(&self) -> &str {
        "m20261207_000010_change_feed_key_order"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for ChangeFeedKeyOrder {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS api_keys_updated_key ON api_keys (updated_at, key_id)",
        )
        .await?;
        db.execute_unprepared("DROP INDEX IF EXISTS api_keys_updated")
            .await?;
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS api_keys_tombstones ON api_keys (deleted_at) \
             WHERE deleted_at IS NOT NULL",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS api_keys_updated ON api_keys (updated_at)",
        )
        .await?;
        db.execute_unprepared("DROP INDEX IF EXISTS api_keys_updated_key")
            .await?;
        db.execute_unprepared("DROP INDEX IF EXISTS api_keys_tombstones")
            .await?;
        Ok(())
    }
}
