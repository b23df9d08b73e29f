//! The change feed auth-check polls for revocation: every change bumps `updated_at` (deletion
//! leaves a tombstone), so "what changed after this position" is one indexed query
//! (docs/auth-check.md, "Revocation within a second").

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
