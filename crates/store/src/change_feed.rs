//! The change feed auth-check polls for revocation: every change bumps `updated_at` (deletion
//! leaves a tombstone), so "what changed after this position" is one indexed query
//! (docs/auth-check.md, "Revocation within a second").
//!
//! A poll re-reads an overlap of changes it has applied already (a change can commit after
//! later-stamped ones), so it reads in two steps: [`KeyStore::change_stamps_after`] lists
//! `(key id, updated_at)` pairs from the `(updated_at, key_id)` index alone, and
//! [`KeyStore::changes_of`] reads whole rows only for the stamps the poll has not applied.

use std::time::SystemTime;

use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use stanna_keys::KeyId;

use crate::entity::{Column, Entity};
use crate::model::record_from_model;
use crate::{KeyRecord, KeyStore, StoreError, time};

impl KeyStore {
    /// Keys changed (created, renamed, status set, rotated out, deleted) after `after`, in
    /// `(updated_at, key_id)` order, at most `limit`: page through with the last change's
    /// [`KeyChange::position`]. Deleted keys, and rows that cannot be read (logged), come back as
    /// [`KeyChange::Deleted`], so a corrupt row revokes its key instead of stalling the feed.
    ///
    /// The change poll reads [`KeyStore::change_stamps_after`] and [`KeyStore::changes_of`]
    /// instead; this whole-row form is the previous poll's query, which the scale bench measures
    /// the poll against.
    ///
    /// # Errors
    /// A database error.
    pub async fn changes_after(
        &self,
        after: ChangePosition,
        limit: u64,
    ) -> Result<Vec<KeyChange>, StoreError> {
        let rows = Entity::find()
            .filter(after_condition(after))
            .order_by_asc(Column::UpdatedAt)
            .order_by_asc(Column::KeyId)
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().filter_map(change_of_row).collect())
    }

    /// The stamps of keys changed after `after`, in `(updated_at, key_id)` order, at most
    /// `limit`: only the two columns of the `api_keys_updated_key` index, so PostgreSQL answers
    /// it from the index (an index-only scan once the table is vacuumed). Rows with an unreadable
    /// id are skipped (logged), as [`KeyStore::changes_after`] does.
    ///
    /// # Errors
    /// A database error.
    pub async fn change_stamps_after(
        &self,
        after: ChangePosition,
        limit: u64,
    ) -> Result<Vec<ChangeStamp>, StoreError> {
        let rows: Vec<(String, i64)> = Entity::find()
            .select_only()
            .column(Column::KeyId)
            .column(Column::UpdatedAt)
            .filter(after_condition(after))
            .order_by_asc(Column::UpdatedAt)
            .order_by_asc(Column::KeyId)
            .limit(limit)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(key_id, updated_at)| match KeyId::parse(&key_id) {
                Ok(key_id) => Some(ChangeStamp {
                    key_id,
                    updated_at: time::from_micros(updated_at),
                }),
                Err(_) => {
                    tracing::error!(key_id = %key_id, "skipping a stored key with an unreadable id");
                    None
                }
            })
            .collect())
    }

    /// The current state of each key in `ids` that has a row (deleted ones as
    /// [`KeyChange::Deleted`], unreadable ones too, logged), in no particular order. An id
    /// without a row (purged) is simply absent. Queries take [`CHANGES_OF_MAX`] ids at a time.
    ///
    /// # Errors
    /// A database error.
    pub async fn changes_of(&self, ids: &[KeyId]) -> Result<Vec<KeyChange>, StoreError> {
        let mut changes = Vec::with_capacity(ids.len());
        for part in ids.chunks(CHANGES_OF_MAX) {
            let rows = Entity::find()
                .filter(Column::KeyId.is_in(part.iter().map(KeyId::as_str)))
                .all(&self.db)
                .await?;
            changes.extend(rows.into_iter().filter_map(change_of_row));
        }
        Ok(changes)
    }
}

/// Ids per query of [`KeyStore::changes_of`]: well under SQLite's 32 766 bound parameters.
pub const CHANGES_OF_MAX: usize = 500;

/// `(updated_at, key_id)` strictly after `after`. With a key id, `updated_at >= X` comes first:
/// implied by the rest, it is what the index seeks on (an `OR` alone is a filter over the scan).
fn after_condition(after: ChangePosition) -> Condition {
    let at = time::to_micros(after.updated_at);
    match after.key_id {
        None => Condition::all().add(Column::UpdatedAt.gt(at)),
        Some(key_id) => Condition::all().add(Column::UpdatedAt.gte(at)).add(
            Condition::any().add(Column::UpdatedAt.gt(at)).add(
                Condition::all()
                    .add(Column::UpdatedAt.eq(at))
                    .add(Column::KeyId.gt(key_id.as_str())),
            ),
        ),
    }
}

/// A row as a change: deleted or unreadable rows revoke their key.
fn change_of_row(row: crate::entity::Model) -> Option<KeyChange> {
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
}

/// A key changed at a time, without its state: what [`KeyStore::change_stamps_after`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeStamp {
    /// The key.
    pub key_id: KeyId,
    /// Its `updated_at`.
    pub updated_at: SystemTime,
}

impl ChangeStamp {
    /// Where the stamp sits in the feed, to continue after it.
    pub fn position(&self) -> ChangePosition {
        ChangePosition {
            updated_at: self.updated_at,
            key_id: Some(self.key_id),
        }
    }
}

/// One change seen by [`KeyStore::changes_after`] or [`KeyStore::changes_of`].
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
