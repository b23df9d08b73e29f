//! Bulk loads: many keys in few statements, for load tests and capacity measurements
//! (`stanna seed`, `services/stanna/examples/scale_bench.rs`). Not the product's create path: no
//! per-user maximum, no audit event, and the caller chooses the creation and deletion times.

use std::time::SystemTime;

use sea_orm::ActiveValue::Set;
use sea_orm::{EntityTrait, TransactionTrait};

use crate::entity::Entity;
use crate::model::new_row;
use crate::{KeyStore, NewKey, StoreError, time};

/// Rows per `INSERT` of [`KeyStore::load_keys`]: 22 bound values each, 22 000 in all, under
/// SQLite's 32 766 and PostgreSQL's 65 535 per statement.
pub const LOAD_CHUNK: usize = 1000;

/// One key of a bulk load.
#[derive(Debug, Clone)]
pub struct LoadedKey {
    /// The key as [`KeyStore::create`] would store it.
    pub key: NewKey,
    /// Its creation time (its `updated_at` too, unless deleted).
    pub created_at: SystemTime,
    /// Its deletion time: a tombstone, as [`KeyStore::delete`] leaves (`updated_at` is this).
    pub deleted_at: Option<SystemTime>,
}

impl KeyStore {
    /// Stores `keys` in multi-row `INSERT`s of [`LOAD_CHUNK`] rows, each chunk one transaction:
    /// a million keys load in tens of seconds on PostgreSQL, where one create each would take an
    /// hour. Writes no audit event and checks no per-user maximum (see the module).
    ///
    /// # Errors
    /// [`StoreError::DuplicateKeyId`] or a database error; the chunks before it are stored.
    pub async fn load_keys(&self, keys: &[LoadedKey]) -> Result<(), StoreError> {
        for chunk in keys.chunks(LOAD_CHUNK) {
            let rows = chunk.iter().map(|loaded| {
                let mut row = new_row(&loaded.key, loaded.created_at);
                if let Some(deleted) = loaded.deleted_at {
                    let deleted = time::to_micros(deleted);
                    row.deleted_at = Set(Some(deleted));
                    row.updated_at = Set(deleted);
                }
                row
            });
            let txn = self.db.begin().await?;
            Entity::insert_many(rows).exec(&txn).await?;
            txn.commit().await?;
        }
        Ok(())
    }
}
