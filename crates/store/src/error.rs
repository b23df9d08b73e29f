//! What can go wrong in the store, and the one classification of the driver's errors: typed
//! variants of sqlx's and SQLite's errors, never their text.

use sea_orm::{DbErr, RuntimeErr, SqlErr};
use stanna_keys::KeyId;

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
    /// An expiry change was refused by the key's state; nothing changed.
    #[error("{0}")]
    ExpiryRefused(ExpiryRefusal),
    /// A scoped caller tried to change a key with a scope it lacks (`*`: an unscoped key, which
    /// has every permission), or to give one; nothing changed.
    #[error("the acting key lacks the scope {scope:?} of the key it would change")]
    ScopeEscalation {
        /// The first scope outside the caller's.
        scope: String,
    },
    /// The page token was issued for a different listing (another workspace, user or filter).
    #[error(
        "was issued for a different listing (the workspace, user or filters changed); start again \
         without a page token"
    )]
    PageTokenMismatch,
    /// A generated key id collided with an existing one (≈2⁻⁷¹ per pair; retry with a new key).
    #[error("key id already exists")]
    DuplicateKeyId,
    /// The login token's `jti` was spent already: a login token works once.
    #[error("this sign-in link was used already")]
    LoginTokenUsed,
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

/// Why an expiry change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryRefusal {
    /// The key has expired: no expiry change revives it.
    #[error("the key has expired, so its expiry cannot change; rotate it for a new key")]
    Expired,
    /// The key was rotated out: its grace period can only shorten.
    #[error(
        "the key was rotated out, so its expiry can only move earlier than {current}",
        current = stanna_keys::time::rfc3339(*current)
    )]
    RotatedOut {
        /// The current expiry.
        current: std::time::SystemTime,
    },
    /// The caller may only move the expiry earlier than `current`.
    #[error(
        "can only move earlier than the key's current expiry, {current}",
        current = stanna_keys::time::rfc3339(*current)
    )]
    OnlyEarlier {
        /// The current expiry.
        current: std::time::SystemTime,
    },
    /// The caller may only move the expiry earlier, so it cannot clear it (never expiring is
    /// later than any time).
    #[error("can only move earlier, so it cannot be cleared")]
    NotClearable,
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
        DbErr::Exec(_) | DbErr::Query(_) => sqlx_error(err).is_some_and(|e| {
            matches!(
                e,
                Sqlx::Io(_) | Sqlx::PoolTimedOut | Sqlx::PoolClosed | Sqlx::Tls(_)
            )
        }),
        _ => false,
    }
}

/// The sqlx error inside a SeaORM error, if one is there.
fn sqlx_error(err: &DbErr) -> Option<&sea_orm::sqlx::Error> {
    match err {
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => Some(e),
        _ => None,
    }
}

/// Whether SQLite answered `SQLITE_BUSY` or `SQLITE_LOCKED` (another connection holds the lock
/// longer than the busy timeout, or a step that does not wait on it, such as switching a new file
/// to WAL). Read from SQLite's result code, of which the primary code is the low byte.
pub(crate) fn is_sqlite_busy(err: &DbErr) -> bool {
    const SQLITE_BUSY: i32 = 5;
    const SQLITE_LOCKED: i32 = 6;
    sqlx_error(err)
        .and_then(|e| e.as_database_error())
        .and_then(|e| e.try_downcast_ref::<sea_orm::sqlx::sqlite::SqliteError>())
        .and_then(sea_orm::sqlx::error::DatabaseError::code)
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED))
}
