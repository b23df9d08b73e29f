//! A PostgreSQL streaming replica as a second, read-only [`KeyStore`], and the two WAL positions
//! that say whether it has caught up with its primary.
//!
//! auth-check reads its lookups and its change feed from the replica only when the replica has
//! replayed everything the primary had flushed a moment before (`services/auth-check/src/reads.rs`):
//! a change committed on the primary is flushed before it is visible there (the default
//! `synchronous_commit = on`), so a replica that has replayed past the primary's flush position
//! shows at least what the primary showed when that position was read.

use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseBackend, Statement};

use crate::{KeyStore, StoreError};

/// Why a read URL was refused at start.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The read URL is not `postgres://` (SQLite has no replicas).
    #[error("is not a postgres:// URL (a read replica is a PostgreSQL streaming replica)")]
    NotPostgres,
    /// The server is a replica of another cluster than the primary's.
    #[error(
        "points at a replica of another PostgreSQL cluster than STANNA_DATABASE_URL's (their pg_control_system() system identifiers differ)"
    )]
    OtherCluster,
    /// The server answers but is not in recovery: a primary, not a replica of one.
    #[error(
        "points at a server that is not a streaming replica (pg_is_in_recovery() is false): give the URL of a hot standby of STANNA_DATABASE_URL, or unset it"
    )]
    NotInRecovery,
    /// The server could not be reached or asked.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A WAL position (an LSN as the byte offset PostgreSQL counts from `0/0`).
pub type WalPosition = u64;

/// What [`KeyStore::replay_position`] says of a replica (PostgreSQL only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayPosition {
    /// How far it has replayed; `None` when it is not in recovery (a primary, or promoted).
    pub replayed: Option<WalPosition>,
    /// Its cluster's system identifier.
    pub system_identifier: i64,
}

impl KeyStore {
    /// A store over the streaming replica at `url`, connecting on first use (a replica down at
    /// start does not stop auth-check: it reads the primary meanwhile), never migrating (a replica
    /// cannot be written: it follows the primary's schema). Its pool is as large as the
    /// primary's (10).
    ///
    /// # Errors
    /// [`ReplicaError::NotPostgres`] for another kind of URL; [`ReplicaError::Store`] for a URL
    /// the driver cannot use.
    pub async fn open_replica(url: &str) -> Result<Self, ReplicaError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ReplicaError::NotPostgres);
        }
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .sqlx_logging(false)
            .connect_lazy(true)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(5));
        let db = Database::connect(options).await.map_err(StoreError::from)?;
        Ok(Self { db })
    }

    /// Checks this store is a server in recovery — a replica, not a primary — of `primary`'s
    /// cluster (a physical replica shares its primary's system identifier).
    ///
    /// # Errors
    /// [`ReplicaError::NotInRecovery`] for a primary; [`ReplicaError::OtherCluster`] for a
    /// replica of another cluster; [`ReplicaError::Store`] when either does not answer.
    pub async fn check_replica(&self, primary: &KeyStore) -> Result<(), ReplicaError> {
        let position = self.replay_position().await?;
        if position.replayed.is_none() {
            return Err(ReplicaError::NotInRecovery);
        }
        if position.system_identifier != primary.system_identifier().await? {
            return Err(ReplicaError::OtherCluster);
        }
        Ok(())
    }

    /// The cluster's system identifier (`pg_control_system()`, callable by any role): the same
    /// on a primary and its physical replicas, and across a failover.
    ///
    /// # Errors
    /// [`StoreError`] when the database does not answer.
    pub async fn system_identifier(&self) -> Result<i64, StoreError> {
        let row = self
            .db
            .query_one_raw(Statement::from_string(
                DatabaseBackend::Postgres,
                "SELECT system_identifier AS id FROM pg_control_system()",
            ))
            .await?;
        Ok(match row {
            Some(row) => row.try_get("", "id")?,
            None => 0,
        })
    }

    /// The primary's WAL flush position: every change visible on it now is at or before it.
    /// `None` on SQLite, and on a server in recovery (a replica has no flush position of its
    /// own).
    ///
    /// # Errors
    /// [`StoreError`] when the database does not answer.
    pub async fn wal_flushed(&self) -> Result<Option<WalPosition>, StoreError> {
        self.wal_position(
            "SELECT CASE WHEN pg_is_in_recovery() THEN NULL \
             ELSE (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint END AS lsn",
        )
        .await
    }

    /// How far this replica has replayed its primary's WAL (what it shows includes every change
    /// at or before it; `None` on a server not in recovery: a primary, or a replica promoted
    /// since), and which cluster it belongs to, in one query (each change poll asks it, so a
    /// standby replaced under the same address is checked again).
    ///
    /// # Errors
    /// [`StoreError`] when the database does not answer.
    pub async fn replay_position(&self) -> Result<ReplayPosition, StoreError> {
        let row = self
            .db
            .query_one_raw(Statement::from_string(
                DatabaseBackend::Postgres,
                "SELECT CASE WHEN pg_is_in_recovery() \
                 THEN (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint END AS lsn, \
                 system_identifier AS id FROM pg_control_system()",
            ))
            .await?;
        let (lsn, id): (Option<i64>, i64) = match row {
            Some(row) => (row.try_get("", "lsn")?, row.try_get("", "id")?),
            None => (None, 0),
        };
        Ok(ReplayPosition {
            replayed: lsn.and_then(|lsn| u64::try_from(lsn).ok()),
            system_identifier: id,
        })
    }

    async fn wal_position(&self, sql: &str) -> Result<Option<WalPosition>, StoreError> {
        if self.backend() != DatabaseBackend::Postgres {
            return Ok(None);
        }
        let row = self
            .db
            .query_one_raw(Statement::from_string(DatabaseBackend::Postgres, sql))
            .await?;
        let lsn: Option<i64> = match row {
            Some(row) => row.try_get("", "lsn")?,
            None => None,
        };
        // An LSN is below 2⁶³ for the next few million years of WAL.
        Ok(lsn.and_then(|lsn| u64::try_from(lsn).ok()))
    }
}

/// A condition true only on a server in recovery that has replayed past `replayed`: evaluated
/// with the row it guards, so on the same server (a pool may hold connections to several). A
/// promoted server keeps its last replay position, hence `pg_is_in_recovery()` too.
pub(crate) fn replayed_past(replayed: WalPosition) -> sea_orm::Condition {
    let replayed = i64::try_from(replayed).unwrap_or(i64::MAX);
    sea_orm::Condition::all().add(sea_orm::sea_query::Expr::cust_with_values(
        "pg_is_in_recovery() AND (pg_last_wal_replay_lsn() - '0/0'::pg_lsn) >= $1",
        [replayed],
    ))
}
