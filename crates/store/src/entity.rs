//! The `api_keys` table as a SeaORM entity.
//!
//! Times are stored as microseconds since the Unix epoch in 64-bit integers: exact, ordered the
//! same way on SQLite and PostgreSQL, and cheap to index (SQLite has no native timestamp type and
//! text timestamps sort correctly only while every writer formats them identically).

use sea_orm::entity::prelude::*;

/// One API key's stored state. Never the key itself: only its argon2id hash and its preview.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    /// The public key id (12 base62 characters), embedded in the key.
    #[sea_orm(primary_key, auto_increment = false)]
    pub key_id: String,
    /// The owning workspace.
    pub workspace_id: String,
    /// The owning user.
    pub user_id: String,
    /// The creator's name for the key.
    pub name: String,
    /// `sk-1234...abcd`.
    pub preview: String,
    /// argon2id PHC string of the whole key.
    pub key_hash: String,
    /// `active` or `inactive`.
    pub status: String,
    /// µs since the epoch.
    pub created_at: i64,
    /// µs since the epoch; changes on rename or status change.
    pub updated_at: i64,
    /// µs since the epoch; null until first use.
    pub last_used_at: Option<i64>,
    /// µs since the epoch; null if the key never expires.
    pub expires_at: Option<i64>,
    /// µs since the epoch when the key was deleted; null while it exists. Deleted rows are kept
    /// (with `updated_at` bumped) so every auth-check's change poll sees the deletion.
    pub deleted_at: Option<i64>,
    /// The key that replaced this one by rotation, if any: a key is rotated at most once.
    pub replaced_by: Option<String>,
    /// Per-key override of the burst window's limit; null follows the configured default.
    pub burst_limit: Option<i32>,
    /// Per-key override of the burst window's period in ms; null follows the default.
    pub burst_period_ms: Option<i64>,
    /// Per-key override of the long window's limit; null follows the default.
    pub hourly_limit: Option<i32>,
    /// Per-key override of the long window's period in ms; null follows the default.
    pub hourly_period_ms: Option<i64>,
    /// The owner's metadata, a compact JSON object of at most 1 KiB; null if none.
    pub metadata: Option<String>,
    /// The key's scopes, sorted and space-separated; null for an unscoped key.
    pub scopes: Option<String>,
    /// `name` folded for case-insensitive search ([`stanna_keys::fold_for_search`]); written
    /// with every name.
    pub name_folded: String,
}

/// No relations: one table.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
