//! The key queries: create, read, list, update, delete, rotate, the verification lookup and the
//! last-used write-back. Every caller-facing query is scoped inside its SQL ([`Scope`]).

use std::time::SystemTime;

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, ExprTrait, LikeExpr};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseBackend, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait,
};
use stanna_keys::KeyId;

use crate::audit::{self, AuditContext, Subject, key_state};
use crate::entity::{Column, Entity};
use crate::model::{new_row, record_from_model, window_columns};
use crate::page_token::listing_digest;
use crate::{
    ExpiryRefusal, KeyChanges, KeyRecord, KeyStore, NewKey, NewKeySecret, Page, PageRequest,
    PageToken, Scope, StoreError, time,
};

/// The escape character of name-search `LIKE` patterns: `%`, `_` and itself are escaped, so a
/// search for `50%` finds "50% off" and nothing else.
const LIKE_ESCAPE: char = '!';

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// `text` with `LIKE`'s wildcards and [`LIKE_ESCAPE`] escaped.
fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | LIKE_ESCAPE) {
            out.push(LIKE_ESCAPE);
        }
        out.push(c);
    }
    out
}

impl KeyStore {
    /// Stores a new key and its `key.created` audit event. With `max_per_user`, refuses when the
    /// user already holds that many keys that are not past their expiry; the check, the insert
    /// and the event are one serialised transaction, so concurrent creates cannot overshoot.
    ///
    /// # Errors
    /// [`StoreError::TooManyKeys`], [`StoreError::DuplicateKeyId`], or a database error.
    #[tracing::instrument(target = "stanna_span", name = "store.create", skip_all, fields(db.system = self.backend_name()))]
    pub async fn create(
        &self,
        key: NewKey,
        max_per_user: Option<u32>,
        now: SystemTime,
        audit: &AuditContext,
    ) -> Result<KeyRecord, StoreError> {
        let txn = self.begin_serialised_write().await?;
        if let Some(max) = max_per_user {
            self.make_room(&txn, &key.workspace, &key.user, max, now)
                .await?;
        }
        let model = Entity::insert(new_row(&key, now))
            .exec_with_returning(&txn)
            .await?;
        let created = record_from_model(model)?;
        audit::append(
            &txn,
            audit,
            key_subject(&created, None),
            "key.created",
            None,
            Some(key_state(&created)),
            now,
        )
        .await?;
        txn.commit().await?;
        Ok(created)
    }

    /// Refuses one more live key for (`workspace`, `user`) when they hold `max` already, inside
    /// the caller's serialised transaction so concurrent creates cannot overshoot.
    async fn make_room(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        workspace: &stanna_keys::WorkspaceId,
        user: &stanna_keys::UserId,
        max: u32,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        if self.backend() == DatabaseBackend::Postgres {
            // Serialises creates for one (workspace, user) across every process; released at
            // commit or rollback.
            let lock = format!("{workspace}\u{1f}{user}");
            txn.execute_raw(sea_orm::Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                [lock.into()],
            ))
            .await?;
        }
        let live = Entity::find()
            .filter(Column::WorkspaceId.eq(workspace.as_str()))
            .filter(Column::UserId.eq(user.as_str()))
            .filter(Column::DeletedAt.is_null())
            .filter(
                Condition::any()
                    .add(Column::ExpiresAt.is_null())
                    .add(Column::ExpiresAt.gt(time::to_micros(now))),
            )
            .count(txn)
            .await?;
        if live >= u64::from(max) {
            return Err(StoreError::TooManyKeys { max });
        }
        Ok(())
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

    /// Lists keys in `scope` that pass `page.filter`, newest first (ties broken by key id), a
    /// page at a time. The cursor is a position, not an offset, so keys created or deleted
    /// between pages neither repeat nor shift the rest; it names its listing, and carries the
    /// first page's "unused since" cutoff (`now` minus the days), so every page filters by the
    /// same instant.
    ///
    /// # Errors
    /// [`StoreError::PageTokenMismatch`] for a token of another listing; a database error.
    #[tracing::instrument(target = "stanna_span", name = "store.list", skip_all, fields(db.system = self.backend_name()))]
    pub async fn list(
        &self,
        scope: &Scope,
        page: PageRequest,
        now: SystemTime,
    ) -> Result<Page, StoreError> {
        let (query, cutoff) = list_query(scope, &page, now)?;
        let mut rows = query.all(&self.db).await?;
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
                listing: Some(listing_digest(scope, &page.filter)),
                cutoff,
            }),
            _ => None,
        };
        Ok(Page { keys, next })
    }

    /// PostgreSQL's `EXPLAIN (ANALYZE, BUFFERS)` of the query [`KeyStore::list`] runs for
    /// these arguments, one line per plan line: for capacity measurements (the scale bench),
    /// never on a request's path. On SQLite, `EXPLAIN QUERY PLAN`.
    ///
    /// # Errors
    /// As [`KeyStore::list`].
    pub async fn explain_list(
        &self,
        scope: &Scope,
        page: &PageRequest,
        now: SystemTime,
    ) -> Result<Vec<String>, StoreError> {
        let (query, _) = list_query(scope, page, now)?;
        let statement = query.build(self.backend());
        let (explain, column) = match self.backend() {
            DatabaseBackend::Postgres => ("EXPLAIN (ANALYZE, BUFFERS) ", "QUERY PLAN"),
            _ => ("EXPLAIN QUERY PLAN ", "detail"),
        };
        let explained = sea_orm::Statement {
            sql: format!("{explain}{}", statement.sql),
            ..statement
        };
        let rows = self.db.query_all_raw(explained).await?;
        rows.iter()
            .map(|row| Ok(row.try_get::<String>("", column)?))
            .collect()
    }

    /// Reads one key in `scope` inside `txn`, locked until it ends: PostgreSQL takes the row
    /// lock (`FOR UPDATE`); SQLite's serialised transaction holds the database's write lock
    /// already. What the caller checks on the row is then what it writes over.
    async fn locked(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        scope: &Scope,
        key_id: &KeyId,
    ) -> Result<KeyRecord, StoreError> {
        let mut query = Entity::find()
            .filter(scope.condition())
            .filter(Column::KeyId.eq(key_id.as_str()));
        if self.backend() == DatabaseBackend::Postgres {
            query = query.lock_exclusive();
        }
        let model = query.one(txn).await?.ok_or(StoreError::NotFound)?;
        record_from_model(model)
    }

    /// Applies `changes` to one key in `scope` and appends its `key.updated` event (the fields
    /// that changed, before and after; none when nothing did) in one transaction, with the row
    /// locked from the read to the commit. An expiry change carries its rules in the `UPDATE`
    /// itself: an expired key's expiry never changes, a rotated-out key's only moves earlier,
    /// and with `expiry_earlier_only` any key's only moves earlier. A time at or before `now` is
    /// stored as `now` (the key stops at once).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if no such key is visible in `scope`;
    /// [`StoreError::ExpiryRefused`] when the rules refuse the expiry change (nothing changes);
    /// [`StoreError::ScopeEscalation`] when a scoped caller ([`Scope::within`]) targets a key
    /// outside its scopes or would give scopes it lacks.
    #[tracing::instrument(target = "stanna_span", name = "store.update", skip_all, fields(db.system = self.backend_name()))]
    pub async fn update(
        &self,
        scope: &Scope,
        key_id: &KeyId,
        changes: KeyChanges,
        now: SystemTime,
        audit: &AuditContext,
    ) -> Result<KeyRecord, StoreError> {
        if let Some(scopes) = &changes.scopes {
            scope.check_within(scopes)?;
        }
        let txn = self.begin_serialised_write().await?;
        let current = self.locked(&txn, scope, key_id).await?;
        scope.check_within(&current.scopes)?;
        let updated = match self.update_once(&txn, scope, key_id, &changes, now).await? {
            Some(model) => record_from_model(model)?,
            // The row is locked and visible: only the expiry rules refuse. Say which.
            None if changes.expires_at.is_some() => {
                return Err(StoreError::ExpiryRefused(expiry_refusal(&current, now)));
            }
            None => return Err(StoreError::NotFound),
        };
        let (before, after) = audit::diff(&key_state(&current), &key_state(&updated));
        if !after.is_empty() {
            audit::append(
                &txn,
                audit,
                key_subject(&updated, None),
                "key.updated",
                Some(before),
                Some(after),
                now,
            )
            .await?;
        }
        txn.commit().await?;
        Ok(updated)
    }

    async fn update_once(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        scope: &Scope,
        key_id: &KeyId,
        changes: &KeyChanges,
        now: SystemTime,
    ) -> Result<Option<crate::entity::Model>, StoreError> {
        let now_us = time::to_micros(now);
        let mut update = Entity::update_many()
            .col_expr(Column::UpdatedAt, Expr::value(now_us))
            .filter(scope.condition())
            .filter(Column::KeyId.eq(key_id.as_str()));
        if let Some(name) = &changes.name {
            update = update
                .col_expr(Column::Name, Expr::value(name.as_str()))
                .col_expr(Column::NameFolded, Expr::value(name.folded()));
        }
        if let Some(status) = changes.status {
            update = update.col_expr(Column::Status, Expr::value(status.as_str()));
        }
        if let Some(expiry) = changes.expires_at {
            update = update.filter(
                Condition::any()
                    .add(Column::ExpiresAt.is_null())
                    .add(Column::ExpiresAt.gt(now_us)),
            );
            match expiry {
                Some(at) => {
                    let at = time::to_micros(at.max(now));
                    let later_allowed = if changes.expiry_earlier_only {
                        Column::ExpiresAt.is_null()
                    } else {
                        Column::ReplacedBy.is_null()
                    };
                    update = update.col_expr(Column::ExpiresAt, Expr::value(at)).filter(
                        Condition::any()
                            .add(later_allowed)
                            .add(Column::ExpiresAt.gte(at)),
                    );
                }
                None if changes.expiry_earlier_only => {
                    return Err(StoreError::ExpiryRefused(ExpiryRefusal::NotClearable));
                }
                None => {
                    update = update
                        .col_expr(Column::ExpiresAt, Expr::value(Option::<i64>::None))
                        .filter(Column::ReplacedBy.is_null());
                }
            }
        }
        for (window, limit_col, period_col) in [
            (
                changes.rate_limits.burst,
                Column::BurstLimit,
                Column::BurstPeriodMs,
            ),
            (
                changes.rate_limits.hourly,
                Column::HourlyLimit,
                Column::HourlyPeriodMs,
            ),
        ] {
            if let Some(window) = window {
                let (limit, period) = window_columns(window);
                update = update
                    .col_expr(limit_col, Expr::value(limit))
                    .col_expr(period_col, Expr::value(period));
            }
        }
        if let Some(metadata) = &changes.metadata {
            let text = metadata.as_ref().map(|m| m.as_str().to_owned());
            update = update.col_expr(Column::Metadata, Expr::value(text));
        }
        if let Some(scopes) = &changes.scopes {
            update = update.col_expr(Column::Scopes, Expr::value(scopes.to_stored()));
        }
        Ok(update.exec_with_returning(txn).await?.into_iter().next())
    }

    /// Deletes one key in `scope` and appends its `key.deleted` event, in one transaction: it
    /// stops verifying and disappears from every read. The row stays as a tombstone so change
    /// polls (auth-check's revocation) see the deletion.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if no such key is visible in `scope` (so deleting twice is too);
    /// [`StoreError::ScopeEscalation`] for a key outside a scoped caller's scopes.
    #[tracing::instrument(target = "stanna_span", name = "store.delete", skip_all, fields(db.system = self.backend_name()))]
    pub async fn delete(
        &self,
        scope: &Scope,
        key_id: &KeyId,
        now: SystemTime,
        audit: &AuditContext,
    ) -> Result<(), StoreError> {
        let now_us = time::to_micros(now);
        let txn = self.begin_serialised_write().await?;
        let current = self.locked(&txn, scope, key_id).await?;
        scope.check_within(&current.scopes)?;
        let deleted = Entity::update_many()
            .col_expr(Column::DeletedAt, Expr::value(now_us))
            .col_expr(Column::UpdatedAt, Expr::value(now_us))
            .filter(scope.condition())
            .filter(Column::KeyId.eq(key_id.as_str()))
            .exec(&txn)
            .await?;
        if deleted.rows_affected == 0 {
            return Err(StoreError::NotFound);
        }
        audit::append(
            &txn,
            audit,
            key_subject(&current, None),
            "key.deleted",
            Some(key_state(&current)),
            None,
            now,
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Replaces the key `old` in `scope` by `new` in one transaction with its `key.rotated`
    /// event: `new` is stored with the old key's workspace, owner, name and limits (and its
    /// expiry, if still ahead), and the old key expires at `old_expires_at` (or earlier, if it
    /// already did). Returns `(new, old)`.
    ///
    /// An expired key can be rotated (its replacement has no expiry and counts against
    /// `max_per_user`); a key rotated already cannot.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if `old` is not visible in `scope`,
    /// [`StoreError::AlreadyRotated`], [`StoreError::TooManyKeys`] for an expired key of a user
    /// at the maximum, or [`StoreError::ScopeEscalation`] for a key outside a scoped caller's
    /// scopes.
    #[allow(clippy::too_many_arguments)]
    #[tracing::instrument(target = "stanna_span", name = "store.rotate", skip_all, fields(db.system = self.backend_name()))]
    pub async fn rotate(
        &self,
        scope: &Scope,
        old: &KeyId,
        new: NewKeySecret,
        old_expires_at: SystemTime,
        max_per_user: Option<u32>,
        now: SystemTime,
        audit: &AuditContext,
    ) -> Result<(KeyRecord, KeyRecord), StoreError> {
        let txn = self.begin_serialised_write().await?;
        let current = self.locked(&txn, scope, old).await?;
        // One successor per key: rotating a key that is already being retired would make a
        // second successor inheriting the first rotation's grace expiry (a new key that dies).
        // The replacement inherits the scopes: a scoped caller may rotate only a key within its
        // own. Checked on the locked row, and first, so a key outside the caller's scopes tells
        // it nothing (not its successor).
        scope.check_within(&current.scopes)?;
        if let Some(replaced_by) = current.replaced_by {
            return Err(StoreError::AlreadyRotated { replaced_by });
        }
        // An expired key can be rotated: its replacement is a live key more (so it counts against
        // the maximum, as a creation would) and has no expiry (the one that passed is not carried
        // over). A live key's replacement takes the old key's place and its expiry, if any.
        let expired = current.is_expired(now);
        if expired && let Some(max) = max_per_user {
            self.make_room(&txn, &current.workspace, &current.user, max, now)
                .await?;
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
        let retired = record_from_model(retired)?;
        let replacement = NewKey {
            key_id: new.key_id,
            preview: new.preview,
            key_hash: new.key_hash,
            workspace: current.workspace.clone(),
            user: current.user.clone(),
            name: current.name.clone(),
            expires_at: if expired { None } else { current.expires_at },
            rate_limits: current.rate_limits,
            metadata: current.metadata.clone(),
            scopes: current.scopes.clone(),
        };
        let mut row = new_row(&replacement, now);
        row.status = Set(current.status.as_str().to_owned());
        let created = record_from_model(Entity::insert(row).exec_with_returning(&txn).await?)?;
        let (before, after) = audit::diff(&key_state(&current), &key_state(&retired));
        audit::append(
            &txn,
            audit,
            key_subject(&retired, Some(&created.key_id)),
            "key.rotated",
            Some(before),
            Some(after),
            now,
        )
        .await?;
        txn.commit().await?;
        Ok((created, retired))
    }

    /// Looks a key up by id alone, for verification (the workspace comes from the key).
    ///
    /// # Errors
    /// A database error; an unknown id is `Ok(None)`.
    #[tracing::instrument(target = "stanna_span", name = "store.find_by_key_id", skip_all, fields(db.system = self.backend_name()))]
    pub async fn find_by_key_id(&self, key_id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.find_key_where(key_id, sea_orm::Condition::all()).await
    }

    /// [`KeyStore::find_by_key_id`] on a replica, answered only by a server that has replayed
    /// past `replayed` (checked in the same statement, so on the same server as the row): a
    /// server further behind — or not a replica — answers `Ok(None)`, which is not final.
    ///
    /// # Errors
    /// A database error.
    #[tracing::instrument(target = "stanna_span", name = "store.find_by_key_id", skip_all, fields(db.system = self.backend_name(), replica = true))]
    pub async fn find_by_key_id_replayed(
        &self,
        key_id: &KeyId,
        replayed: crate::WalPosition,
    ) -> Result<Option<KeyRecord>, StoreError> {
        self.find_key_where(key_id, crate::replica::replayed_past(replayed))
            .await
    }

    async fn find_key_where(
        &self,
        key_id: &KeyId,
        also: sea_orm::Condition,
    ) -> Result<Option<KeyRecord>, StoreError> {
        Entity::find_by_id(key_id.as_str())
            .filter(Column::DeletedAt.is_null())
            .filter(also)
            .one(&self.db)
            .await?
            .map(record_from_model)
            .transpose()
    }

    /// The ids of live (not deleted) keys after `after`, in id order, at most `limit`: auth-check
    /// loads the set of existing ids with it at start (page through with the last id). Only the
    /// primary-key column is read, along its index.
    ///
    /// # Errors
    /// A database error.
    #[tracing::instrument(target = "stanna_span", name = "store.live_key_ids", skip_all, fields(db.system = self.backend_name()))]
    pub async fn live_key_ids(
        &self,
        after: Option<KeyId>,
        limit: u64,
    ) -> Result<Vec<KeyId>, StoreError> {
        let mut query = Entity::find()
            .select_only()
            .column(Column::KeyId)
            .filter(Column::DeletedAt.is_null());
        if let Some(after) = after {
            query = query.filter(Column::KeyId.gt(after.as_str()));
        }
        let ids: Vec<String> = query
            .order_by_asc(Column::KeyId)
            .limit(limit)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(ids
            .iter()
            .filter_map(|id| match KeyId::parse(id) {
                Ok(id) => Some(id),
                Err(_) => {
                    tracing::error!(key_id = %id, "skipping a stored key with an unreadable id");
                    None
                }
            })
            .collect())
    }

    /// Removes the tombstones of keys deleted before `before`, at most [`PURGE_BATCH`] rows per
    /// statement (each its own short transaction, so writers never wait long), until none is left.
    /// Returns how many were removed. Their `key.deleted` audit events stay.
    ///
    /// A deletion an auth-check never saw in the feed (it was cut off from the store for longer
    /// than the retention, at least [`TOMBSTONE_RETENTION_MIN`]) is still honoured: a cached
    /// state is re-read from the store at least every minute (`MAX_STATE_AGE`), and the re-read
    /// finds no key (docs/auth-check.md, "Tombstones").
    ///
    /// # Errors
    /// A database error; batches before it stay purged.
    #[tracing::instrument(target = "stanna_span", name = "store.purge_deleted_keys", skip_all, fields(db.system = self.backend_name()))]
    pub async fn purge_deleted_keys(&self, before: SystemTime) -> Result<u64, StoreError> {
        let sql = match self.backend() {
            DatabaseBackend::Postgres => {
                "DELETE FROM api_keys WHERE key_id IN \
                 (SELECT key_id FROM api_keys WHERE deleted_at < $1 LIMIT $2)"
            }
            _ => {
                "DELETE FROM api_keys WHERE key_id IN \
                 (SELECT key_id FROM api_keys WHERE deleted_at < ? LIMIT ?)"
            }
        };
        let mut purged = 0;
        loop {
            let done = self
                .db
                .execute_raw(sea_orm::Statement::from_sql_and_values(
                    self.backend(),
                    sql,
                    [time::to_micros(before).into(), (PURGE_BATCH as i64).into()],
                ))
                .await?
                .rows_affected();
            purged += done;
            if done < PURGE_BATCH {
                return Ok(purged);
            }
        }
    }

    /// Records last-used times, never moving a time backwards, in multi-row statements
    /// ([`KeyStore::record_usage`] without usage rows).
    ///
    /// # Errors
    /// A database error; chunks before it are committed.
    pub async fn record_last_used(&self, uses: &[(KeyId, SystemTime)]) -> Result<(), StoreError> {
        self.record_usage(&[], uses).await.map_err(|e| e.error)
    }
}

/// The query of [`KeyStore::list`] (with its order and limit) and the filter's cutoff.
fn list_query(
    scope: &Scope,
    page: &PageRequest,
    now: SystemTime,
) -> Result<(sea_orm::Select<Entity>, Option<i64>), StoreError> {
    let filter = &page.filter;
    if let Some(after) = &page.after
        && !after.belongs_to(scope, filter)
    {
        return Err(StoreError::PageTokenMismatch);
    }
    let mut query = Entity::find().filter(scope.condition());
    if let Some(after) = &page.after {
        // `created_at <= X` is implied by the keyset condition but is what the index can seek
        // on: without it PostgreSQL walks the workspace's index from its newest key and filters
        // every page before this one (the 100th page of 50 read 5 500 rows instead of 51).
        query = query
            .filter(Column::CreatedAt.lte(after.created_at))
            .filter(
                Condition::any()
                    .add(Column::CreatedAt.lt(after.created_at))
                    .add(
                        Condition::all()
                            .add(Column::CreatedAt.eq(after.created_at))
                            .add(Column::KeyId.lt(after.key_id.as_str())),
                    ),
            );
    }
    if let Some(text) = &filter.name_contains {
        let pattern = format!("%{}%", escape_like(&stanna_keys::fold_for_search(text)));
        query = query
            .filter(Expr::col(Column::NameFolded).like(LikeExpr::new(pattern).escape(LIKE_ESCAPE)));
    }
    if let Some(status) = filter.status {
        query = query.filter(Column::Status.eq(status.as_str()));
    }
    let cutoff = filter.unused_for_days.map(|days| {
        page.after.and_then(|a| a.cutoff).unwrap_or_else(|| {
            time::to_micros(now).saturating_sub(i64::from(days) * MICROS_PER_DAY)
        })
    });
    if let Some(cutoff) = cutoff {
        query = query.filter(
            Condition::any().add(Column::LastUsedAt.lt(cutoff)).add(
                Condition::all()
                    .add(Column::LastUsedAt.is_null())
                    .add(Column::CreatedAt.lt(cutoff)),
            ),
        );
    }
    let query = query
        .order_by_desc(Column::CreatedAt)
        .order_by_desc(Column::KeyId)
        .limit(u64::from(page.size) + 1);
    Ok((query, cutoff))
}

/// Tombstones removed per statement by [`KeyStore::purge_deleted_keys`].
pub const PURGE_BATCH: u64 = 1000;

/// The shortest tombstone retention allowed: a day, so every auth-check that is up sees a
/// deletion in its change feed long before its tombstone goes (the feed's overlap is 20 s).
pub const TOMBSTONE_RETENTION_MIN: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A key as an audit event's subject.
fn key_subject<'a>(key: &'a KeyRecord, related: Option<&'a KeyId>) -> Subject<'a> {
    Subject::Key {
        workspace: &key.workspace,
        user: &key.user,
        key_id: &key.key_id,
        related,
    }
}

/// Why the expiry rules refused a change to `current` (read under the row lock).
fn expiry_refusal(current: &KeyRecord, now: SystemTime) -> ExpiryRefusal {
    if current.is_expired(now) {
        return ExpiryRefusal::Expired;
    }
    match (current.replaced_by, current.expires_at) {
        (Some(_), Some(current)) => ExpiryRefusal::RotatedOut { current },
        (None, Some(current)) => ExpiryRefusal::OnlyEarlier { current },
        // Unreachable with a consistent row (a key without an expiry takes any time, and one
        // rotated out has one); "not clearable" is the honest remainder.
        (_, None) => ExpiryRefusal::NotClearable,
    }
}
