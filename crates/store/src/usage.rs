//! Usage per key per hour, and the last-used times, written back by auth-check in multi-row
//! statements: never a write per request, and never a row for a key id that does not exist.
//!
//! `key_usage` holds one row per (key, hour) with a counter per outcome. Several auth-checks add
//! to the same rows (`ON CONFLICT … DO UPDATE SET n = n + excluded.n`), so their counts sum. A
//! row is written only where the key exists (`WHERE EXISTS` against `api_keys` in the same
//! statement), so counts for ids nobody created — or a key purged since — are dropped, not kept.

use std::collections::HashMap;
use std::time::SystemTime;

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement, TransactionTrait, Value,
};
use stanna_keys::KeyId;

use crate::{KeyStore, Scope, StoreError, time};

/// The `key_usage` table.
pub mod usage_entity {
    use sea_orm::entity::prelude::*;

    /// One key's requests in one hour, by outcome.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "key_usage")]
    pub struct Model {
        /// The key.
        #[sea_orm(primary_key, auto_increment = false)]
        pub key_id: String,
        /// The hour's start, µs since the epoch (a multiple of 3 600 000 000).
        #[sea_orm(primary_key, auto_increment = false)]
        pub hour: i64,
        /// Admitted.
        pub allowed: i64,
        /// Refused by a rate limit.
        pub rate_limited: i64,
        /// Refused: the key is inactive.
        pub inactive: i64,
        /// Refused: the key has expired (or its rotation grace ended).
        pub expired: i64,
        /// Refused: another workspace, or a scope the key lacks.
        pub forbidden: i64,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use usage_entity as usage;

/// One hour in µs.
pub const HOUR_MICROS: i64 = 3_600_000_000;

/// What happened to a request of a known key. The order is the counters' order in
/// [`UsageCounts::by_outcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted.
    Allowed = 0,
    /// Refused by a rate limit (429).
    RateLimited = 1,
    /// Refused: inactive (401).
    Inactive = 2,
    /// Refused: expired (401).
    Expired = 3,
    /// Refused: another workspace or a missing scope (403).
    Forbidden = 4,
}

/// Requests by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageCounts {
    /// Indexed by `Outcome as usize`.
    pub by_outcome: [u64; 5],
}

impl UsageCounts {
    /// Admitted.
    pub fn allowed(&self) -> u64 {
        self.by_outcome[Outcome::Allowed as usize]
    }
    /// Refused by a limit.
    pub fn rate_limited(&self) -> u64 {
        self.by_outcome[Outcome::RateLimited as usize]
    }
    /// Refused as inactive.
    pub fn inactive(&self) -> u64 {
        self.by_outcome[Outcome::Inactive as usize]
    }
    /// Refused as expired.
    pub fn expired(&self) -> u64 {
        self.by_outcome[Outcome::Expired as usize]
    }
    /// Refused as out of workspace or scope.
    pub fn forbidden(&self) -> u64 {
        self.by_outcome[Outcome::Forbidden as usize]
    }
    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.by_outcome.iter().all(|n| *n == 0)
    }
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Self) {
        for (mine, theirs) in self.by_outcome.iter_mut().zip(other.by_outcome) {
            *mine = mine.saturating_add(theirs);
        }
    }
}

/// One key's counts in one hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageRow {
    /// The key.
    pub key_id: KeyId,
    /// The hour's start, µs since the epoch.
    pub hour: i64,
    /// What happened in it.
    pub counts: UsageCounts,
}

/// A usage write that failed part-way: the chunks before the failure are committed.
#[derive(Debug, thiserror::Error)]
#[error("usage write failed after {rows_written} rows and {last_used_written} last-used times")]
pub struct PartialWrite {
    /// What failed.
    #[source]
    pub error: StoreError,
    /// Leading usage rows committed.
    pub rows_written: usize,
    /// Leading last-used times committed.
    pub last_used_written: usize,
}

/// Rows per statement: 7 bound values each, far under SQLite's 32 766 and PostgreSQL's 65 535
/// per statement, and a statement short enough that no write lock is held for long.
pub const WRITE_CHUNK: usize = 500;

/// The hour `at` falls in, µs since the epoch.
pub fn hour_of(at: SystemTime) -> i64 {
    time::to_micros(at).div_euclid(HOUR_MICROS) * HOUR_MICROS
}

impl KeyStore {
    /// Adds `rows` to the usage table and moves last-used times forward (never backwards), in
    /// multi-row statements of at most [`WRITE_CHUNK`] rows, each chunk one transaction: a flush
    /// of 50 000 keys holds no lock for long. Rows of key ids that do not exist are dropped.
    ///
    /// Each `(key, hour)` and each key of `last_used` must appear once (the caller merges).
    ///
    /// # Errors
    /// [`PartialWrite`]: the database error, and how much of each list was committed before it
    /// (the chunks before the failing one), so the caller keeps only the rest for its retry and
    /// nothing is counted twice.
    #[tracing::instrument(target = "stanna_span", name = "store.record_usage", skip_all, fields(db.system = self.backend_name(), rows = rows.len(), last_used = last_used.len()))]
    pub async fn record_usage(
        &self,
        rows: &[UsageRow],
        last_used: &[(KeyId, SystemTime)],
    ) -> Result<(), PartialWrite> {
        let backend = self.backend();
        let (mut done_rows, mut done_uses) = (0, 0);
        let chunks = rows
            .len()
            .div_ceil(WRITE_CHUNK)
            .max(last_used.len().div_ceil(WRITE_CHUNK));
        for i in 0..chunks {
            let rows = chunk(rows, i);
            let uses = chunk(last_used, i);
            let write = async {
                let txn = self.db.begin().await?;
                if !rows.is_empty() {
                    txn.execute_raw(upsert_usage(backend, rows)).await?;
                }
                if !uses.is_empty() {
                    txn.execute_raw(update_last_used(backend, uses)).await?;
                }
                txn.commit().await
            };
            if let Err(err) = write.await {
                return Err(PartialWrite {
                    error: err.into(),
                    rows_written: done_rows,
                    last_used_written: done_uses,
                });
            }
            done_rows += rows.len();
            done_uses += uses.len();
        }
        Ok(())
    }

    /// The usage of the keys among `key_ids` that are visible in `scope`, hours in
    /// `[from, to)` (µs since the epoch), oldest first. Keys not visible (another workspace or
    /// user, deleted, never created) are left out, so nothing tells them apart.
    ///
    /// # Errors
    /// A database error.
    #[tracing::instrument(target = "stanna_span", name = "store.usage", skip_all, fields(db.system = self.backend_name()))]
    pub async fn usage(
        &self,
        scope: &Scope,
        key_ids: &[KeyId],
        from: i64,
        to: i64,
    ) -> Result<Vec<(KeyId, Vec<UsageRow>)>, StoreError> {
        use crate::entity::{Column, Entity};
        let visible: Vec<String> = Entity::find()
            .select_only()
            .column(Column::KeyId)
            .filter(scope.condition())
            .filter(Column::KeyId.is_in(key_ids.iter().map(|k| k.as_str())))
            .into_tuple()
            .all(&self.db)
            .await?;
        let rows = usage::Entity::find()
            .filter(usage::Column::KeyId.is_in(visible.iter().map(String::as_str)))
            .filter(usage::Column::Hour.gte(from))
            .filter(usage::Column::Hour.lt(to))
            .order_by_asc(usage::Column::Hour)
            .all(&self.db)
            .await?;
        let mut by_key: HashMap<String, Vec<UsageRow>> =
            visible.iter().map(|id| (id.clone(), Vec::new())).collect();
        for row in rows {
            let key_id = KeyId::parse(&row.key_id).map_err(|_| StoreError::Corrupt {
                key_id: row.key_id.clone(),
                reason: "unreadable key id in key_usage".to_owned(),
            })?;
            let count = |n: i64| u64::try_from(n).unwrap_or(0);
            let counts = UsageCounts {
                by_outcome: [
                    count(row.allowed),
                    count(row.rate_limited),
                    count(row.inactive),
                    count(row.expired),
                    count(row.forbidden),
                ],
            };
            if let Some(list) = by_key.get_mut(&row.key_id) {
                list.push(UsageRow {
                    key_id,
                    hour: row.hour,
                    counts,
                });
            }
        }
        // In the order asked for.
        Ok(key_ids
            .iter()
            .filter_map(|id| by_key.remove(id.as_str()).map(|rows| (*id, rows)))
            .collect())
    }

    /// Deletes usage rows of hours before `before`; returns how many.
    ///
    /// # Errors
    /// A database error.
    #[tracing::instrument(target = "stanna_span", name = "store.purge_usage", skip_all, fields(db.system = self.backend_name()))]
    pub async fn purge_usage(&self, before: SystemTime) -> Result<u64, StoreError> {
        let before = time::to_micros(before);
        let done = usage::Entity::delete_many()
            .filter(usage::Column::Hour.lt(before))
            .exec(&self.db)
            .await?;
        Ok(done.rows_affected)
    }
}

fn chunk<T>(all: &[T], i: usize) -> &[T] {
    let start = (i * WRITE_CHUNK).min(all.len());
    &all[start..(start + WRITE_CHUNK).min(all.len())]
}

/// `$n` on PostgreSQL, `?` on SQLite.
fn placeholder(backend: DatabaseBackend, n: usize, cast: &str) -> String {
    match backend {
        DatabaseBackend::Postgres => format!("${n}::{cast}"),
        _ => "?".to_owned(),
    }
}

/// `(v1, v2, …), (…)` for `rows` of `width` values, with PostgreSQL's casts per column.
fn values_list(backend: DatabaseBackend, rows: usize, casts: &[&str]) -> String {
    let mut out = String::new();
    let mut n = 0;
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for (c, cast) in casts.iter().enumerate() {
            if c > 0 {
                out.push_str(", ");
            }
            n += 1;
            out.push_str(&placeholder(backend, n, cast));
        }
        out.push(')');
    }
    out
}

/// The multi-row usage upsert. SQLite names a `VALUES` list's columns `column1`…, PostgreSQL
/// takes names in the alias; both need the `WHERE` before `ON CONFLICT` (on SQLite it also
/// resolves the `INSERT … SELECT … ON CONFLICT` parsing ambiguity).
fn upsert_usage(backend: DatabaseBackend, rows: &[UsageRow]) -> Statement {
    let values = values_list(
        backend,
        rows.len(),
        &[
            "text", "bigint", "bigint", "bigint", "bigint", "bigint", "bigint",
        ],
    );
    let source = match backend {
        DatabaseBackend::Postgres => {
            format!("(VALUES {values}) AS v(key_id, hour, a, r, i, e, f)")
        }
        _ => format!(
            "(SELECT column1 AS key_id, column2 AS hour, column3 AS a, column4 AS r, \
             column5 AS i, column6 AS e, column7 AS f FROM (VALUES {values})) AS v"
        ),
    };
    let sql = format!(
        "INSERT INTO key_usage (key_id, hour, allowed, rate_limited, inactive, expired, forbidden) \
         SELECT v.key_id, v.hour, v.a, v.r, v.i, v.e, v.f FROM {source} \
         WHERE EXISTS (SELECT 1 FROM api_keys k WHERE k.key_id = v.key_id) \
         ON CONFLICT (key_id, hour) DO UPDATE SET \
         allowed = key_usage.allowed + excluded.allowed, \
         rate_limited = key_usage.rate_limited + excluded.rate_limited, \
         inactive = key_usage.inactive + excluded.inactive, \
         expired = key_usage.expired + excluded.expired, \
         forbidden = key_usage.forbidden + excluded.forbidden"
    );
    let mut params: Vec<Value> = Vec::with_capacity(rows.len() * 7);
    for row in rows {
        params.push(row.key_id.as_str().into());
        params.push(row.hour.into());
        for n in row.counts.by_outcome {
            params.push(i64::try_from(n).unwrap_or(i64::MAX).into());
        }
    }
    Statement::from_sql_and_values(backend, sql, params)
}

/// The multi-row last-used update: `UPDATE … FROM (VALUES …)`, never moving a time backwards.
fn update_last_used(backend: DatabaseBackend, uses: &[(KeyId, SystemTime)]) -> Statement {
    let values = values_list(backend, uses.len(), &["text", "bigint"]);
    let source = match backend {
        DatabaseBackend::Postgres => format!("(VALUES {values}) AS v(key_id, at)"),
        _ => format!("(SELECT column1 AS key_id, column2 AS at FROM (VALUES {values})) AS v"),
    };
    let sql = format!(
        "UPDATE api_keys SET last_used_at = v.at FROM {source} \
         WHERE api_keys.key_id = v.key_id \
         AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at < v.at)"
    );
    let mut params: Vec<Value> = Vec::with_capacity(uses.len() * 2);
    for (id, at) in uses {
        params.push(id.as_str().into());
        params.push(time::to_micros(*at).into());
    }
    Statement::from_sql_and_values(backend, sql, params)
}
