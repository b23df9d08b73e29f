//! The audit log: one append-only row per change to a key or a session, written inside the
//! change's own transaction, so neither exists without the other.
//!
//! Each event names its actor (a named admin token, an API key acting through the gateway, or a
//! dashboard session), the request id, and the changed fields' values before and after — never
//! a secret: a key's plaintext and hash, a session's token and digest are not key state here.
//!
//! Append-only is the database's rule, not only ours: triggers refuse every `UPDATE` of
//! `audit_events`, and a `DELETE` of any event not older than the bound in the one-row
//! `audit_purge` table, which only the retention purge raises (inside its own transaction, and
//! never to less than a day ago — its own trigger refuses that) and lowers again before commit.
//! PostgreSQL also refuses `TRUNCATE`. What stays possible is what a database owner can always
//! do (drop the triggers); the migration creates them, the application never touches them.

use std::time::SystemTime;

use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement,
};
use serde_json::{Map, Value};
use stanna_keys::{KeyId, SessionId, UserId, WorkspaceId};

use crate::{KeyRecord, KeyStore, StoreError, time};

/// The `audit_events` table.
pub mod audit_entity {
    use sea_orm::entity::prelude::*;

    /// One change to a key or a session.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_events")]
    pub struct Model {
        /// Increasing within one database: the listing's order and cursor.
        #[sea_orm(primary_key)]
        pub event_id: i64,
        /// µs since the epoch.
        pub at: i64,
        /// The workspace of the key or session changed.
        pub workspace_id: String,
        /// The user who owns the key, or whose session it is.
        pub user_id: String,
        /// The key changed; null for a session event.
        pub key_id: Option<String>,
        /// The other key of the change: a rotation's replacement.
        pub related_key_id: Option<String>,
        /// The session changed; null for a key event.
        pub session_id: Option<String>,
        /// `key.created`, `key.updated`, `key.rotated`, `key.deleted`, `session.created`,
        /// `session.revoked`.
        pub action: String,
        /// `admin`, `key` or `session`.
        pub actor_kind: String,
        /// The admin token's name, the acting key's id, or the acting session's id.
        pub actor_id: String,
        /// The acting key's or session's user; null for an admin.
        pub actor_user_id: Option<String>,
        /// The request the change was made in (the gateway's, or one the registry made up).
        pub request_id: String,
        /// The changed fields before, as a JSON object; null for a creation.
        pub before_state: Option<String>,
        /// The changed fields after, as a JSON object; null for a deletion.
        pub after_state: Option<String>,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use audit_entity as events;

/// Who makes a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An admin, by the name of the token presented.
    Admin(String),
    /// An API key, through the gateway's key API.
    Key {
        /// The acting key.
        key_id: KeyId,
        /// Its user.
        user: UserId,
    },
    /// A dashboard session, through the gateway.
    Session {
        /// The acting session.
        session_id: SessionId,
        /// Its user.
        user: UserId,
    },
}

impl Actor {
    /// `admin`, `key` or `session`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Admin(_) => "admin",
            Self::Key { .. } => "key",
            Self::Session { .. } => "session",
        }
    }

    fn id(&self) -> String {
        match self {
            Self::Admin(name) => name.clone(),
            Self::Key { key_id, .. } => key_id.to_string(),
            Self::Session { session_id, .. } => session_id.to_string(),
        }
    }

    fn user(&self) -> Option<String> {
        match self {
            Self::Admin(_) => None,
            Self::Key { user, .. } | Self::Session { user, .. } => Some(user.to_string()),
        }
    }
}

/// Who makes a change and in which request: what every write of the store records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditContext {
    /// Who.
    pub actor: Actor,
    /// The request id (at most 128 plain characters; the registry checks it).
    pub request_id: String,
}

impl AuditContext {
    /// The admin `name` acting in `request_id` (tools, seeding, tests).
    pub fn admin(name: &str, request_id: &str) -> Self {
        Self::new(Actor::Admin(name.to_owned()), request_id)
    }

    /// `actor` acting in `request_id`.
    pub fn new(actor: Actor, request_id: impl Into<String>) -> Self {
        Self {
            actor,
            request_id: request_id.into(),
        }
    }
}

/// A stored event, as the listing returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Its position (increasing).
    pub id: i64,
    /// When.
    pub at: SystemTime,
    /// The workspace.
    pub workspace: String,
    /// The user who owns the key or the session.
    pub user: String,
    /// The key changed, if a key event.
    pub key_id: Option<String>,
    /// A rotation's replacement.
    pub related_key_id: Option<String>,
    /// The session changed, if a session event.
    pub session_id: Option<String>,
    /// What happened (`key.updated`, …).
    pub action: String,
    /// `admin`, `key` or `session`.
    pub actor_kind: String,
    /// The admin token's name, or the key's or session's id.
    pub actor_id: String,
    /// The acting key's or session's user.
    pub actor_user: Option<String>,
    /// The request id.
    pub request_id: String,
    /// The changed fields before (JSON object text).
    pub before: Option<String>,
    /// The changed fields after (JSON object text).
    pub after: Option<String>,
}

/// Which events to list: one workspace's, optionally one user's or one key's, in a time range,
/// newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// Only events of this user's keys and sessions.
    pub user: Option<UserId>,
    /// Only events of this key (its own, and the rotation that made it).
    pub key: Option<KeyId>,
    /// From (inclusive), µs since the epoch.
    pub from: Option<i64>,
    /// Until (exclusive), µs since the epoch.
    pub to: Option<i64>,
    /// Events per page.
    pub size: u32,
    /// Continue after this event id (the previous page's last).
    pub before_id: Option<i64>,
}

/// A page of events, and the id to continue before when there are more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    /// Newest first.
    pub events: Vec<AuditEvent>,
    /// The last event's id when more follow.
    pub next: Option<i64>,
}

/// What an event is about.
pub(crate) enum Subject<'a> {
    /// A key (and, for a rotation, its replacement).
    Key {
        workspace: &'a WorkspaceId,
        user: &'a UserId,
        key_id: &'a KeyId,
        related: Option<&'a KeyId>,
    },
    /// A session.
    Session {
        workspace: &'a WorkspaceId,
        user: &'a UserId,
        session_id: &'a SessionId,
    },
}

/// The audited state of a key: every field a change can touch, never the hash.
pub(crate) fn key_state(key: &KeyRecord) -> Map<String, Value> {
    let window = |w: Option<stanna_keys::WindowLimit>| match w {
        None => Value::Null,
        Some(w) => serde_json::json!({
            "limit": w.limit(),
            "period_ms": u64::try_from(w.period().as_millis()).unwrap_or(u64::MAX),
        }),
    };
    let mut state = Map::new();
    state.insert("name".into(), key.name.as_str().into());
    state.insert("status".into(), key.status.as_str().into());
    state.insert(
        "expires_at".into(),
        key.expires_at
            .map_or(Value::Null, |t| stanna_keys::time::rfc3339_micros(t).into()),
    );
    state.insert("burst_limit".into(), window(key.rate_limits.burst));
    state.insert("hourly_limit".into(), window(key.rate_limits.hourly));
    state.insert(
        "metadata".into(),
        key.metadata
            .as_ref()
            .map_or(Value::Null, |m| m.as_str().into()),
    );
    state.insert(
        "scopes".into(),
        Value::Array(
            key.scopes
                .names()
                .iter()
                .map(|s| Value::from(s.as_str()))
                .collect(),
        ),
    );
    state.insert(
        "replaced_by".into(),
        key.replaced_by
            .map_or(Value::Null, |id| id.to_string().into()),
    );
    state
}

/// The fields that differ between two states: (before, after), each holding only those.
pub(crate) fn diff(
    before: &Map<String, Value>,
    after: &Map<String, Value>,
) -> (Map<String, Value>, Map<String, Value>) {
    let (mut old, mut new) = (Map::new(), Map::new());
    for (field, value) in after {
        let was = before.get(field).unwrap_or(&Value::Null);
        if was != value {
            old.insert(field.clone(), was.clone());
            new.insert(field.clone(), value.clone());
        }
    }
    (old, new)
}

/// Appends one event inside the caller's transaction.
pub(crate) async fn append(
    txn: &impl ConnectionTrait,
    audit: &AuditContext,
    subject: Subject<'_>,
    action: &str,
    before: Option<Map<String, Value>>,
    after: Option<Map<String, Value>>,
    now: SystemTime,
) -> Result<(), StoreError> {
    let (workspace, user, key_id, related, session_id) = match subject {
        Subject::Key {
            workspace,
            user,
            key_id,
            related,
        } => (
            workspace.to_string(),
            user.to_string(),
            Some(key_id.to_string()),
            related.map(ToString::to_string),
            None,
        ),
        Subject::Session {
            workspace,
            user,
            session_id,
        } => (
            workspace.to_string(),
            user.to_string(),
            None,
            None,
            Some(session_id.to_string()),
        ),
    };
    let text = |m: Option<Map<String, Value>>| m.map(|m| Value::Object(m).to_string());
    events::Entity::insert(events::ActiveModel {
        event_id: NotSet,
        at: Set(time::to_micros(now)),
        workspace_id: Set(workspace),
        user_id: Set(user),
        key_id: Set(key_id),
        related_key_id: Set(related),
        session_id: Set(session_id),
        action: Set(action.to_owned()),
        actor_kind: Set(audit.actor.kind().to_owned()),
        actor_id: Set(audit.actor.id()),
        actor_user_id: Set(audit.actor.user()),
        request_id: Set(audit.request_id.clone()),
        before_state: Set(text(before)),
        after_state: Set(text(after)),
    })
    .exec_without_returning(txn)
    .await?;
    Ok(())
}

/// The shortest retention the purge keeps (its trigger refuses less): a day.
pub const MIN_RETENTION: std::time::Duration = std::time::Duration::from_secs(86_400);

impl KeyStore {
    /// One page of audit events, newest first.
    ///
    /// # Errors
    /// A database error.
    #[tracing::instrument(target = "stanna_span", name = "store.audit_events", skip_all, fields(db.system = self.backend_name()))]
    pub async fn audit_events(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        let mut select =
            events::Entity::find().filter(events::Column::WorkspaceId.eq(query.workspace.as_str()));
        if let Some(user) = &query.user {
            select = select.filter(events::Column::UserId.eq(user.as_str()));
        }
        if let Some(key) = &query.key {
            select = select.filter(
                Condition::any()
                    .add(events::Column::KeyId.eq(key.as_str()))
                    .add(events::Column::RelatedKeyId.eq(key.as_str())),
            );
        }
        if let Some(from) = query.from {
            select = select.filter(events::Column::At.gte(from));
        }
        if let Some(to) = query.to {
            select = select.filter(events::Column::At.lt(to));
        }
        if let Some(before) = query.before_id {
            select = select.filter(events::Column::EventId.lt(before));
        }
        let mut rows = select
            .order_by_desc(events::Column::EventId)
            .limit(u64::from(query.size) + 1)
            .all(&self.db)
            .await?;
        let more = rows.len() > query.size as usize;
        rows.truncate(query.size as usize);
        let next = if more {
            rows.last().map(|r| r.event_id)
        } else {
            None
        };
        let events = rows
            .into_iter()
            .map(|r| AuditEvent {
                id: r.event_id,
                at: time::from_micros(r.at),
                workspace: r.workspace_id,
                user: r.user_id,
                key_id: r.key_id,
                related_key_id: r.related_key_id,
                session_id: r.session_id,
                action: r.action,
                actor_kind: r.actor_kind,
                actor_id: r.actor_id,
                actor_user: r.actor_user_id,
                request_id: r.request_id,
                before: r.before_state,
                after: r.after_state,
            })
            .collect();
        Ok(AuditPage { events, next })
    }

    /// Deletes the events older than `retention` before `now` (never less than
    /// [`MIN_RETENTION`]), the one delete the triggers allow: the bound is raised, the rows
    /// deleted and the bound lowered again in one transaction. Returns how many went.
    ///
    /// # Errors
    /// A database error (the triggers refuse a bound less than a day old by the database's own
    /// clock).
    #[tracing::instrument(target = "stanna_span", name = "store.purge_audit", skip_all, fields(db.system = self.backend_name()))]
    pub async fn purge_audit(
        &self,
        retention: std::time::Duration,
        now: SystemTime,
    ) -> Result<u64, StoreError> {
        let cutoff = time::to_micros(now).saturating_sub(
            i64::try_from(retention.max(MIN_RETENTION).as_micros()).unwrap_or(i64::MAX),
        );
        let txn = self.begin_serialised_write().await?;
        let backend = self.backend();
        let bound = |value: i64| {
            let sql = match backend {
                DatabaseBackend::Postgres => "UPDATE audit_purge SET before_at = $1 WHERE id = 1",
                _ => "UPDATE audit_purge SET before_at = ? WHERE id = 1",
            };
            Statement::from_sql_and_values(backend, sql, [value.into()])
        };
        txn.execute_raw(bound(cutoff)).await?;
        let deleted = events::Entity::delete_many()
            .filter(events::Column::At.lt(cutoff))
            .exec(&txn)
            .await?
            .rows_affected;
        txn.execute_raw(bound(0)).await?;
        txn.commit().await?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_holds_only_the_changed_fields() {
        let before: Map<String, Value> =
            serde_json::from_str(r#"{"name":"a","status":"active","scopes":[]}"#).unwrap();
        let after: Map<String, Value> =
            serde_json::from_str(r#"{"name":"b","status":"active","scopes":["x"]}"#).unwrap();
        let (old, new) = diff(&before, &after);
        assert_eq!(
            Value::Object(old).to_string(),
            r#"{"name":"a","scopes":[]}"#
        );
        assert_eq!(
            Value::Object(new).to_string(),
            r#"{"name":"b","scopes":["x"]}"#
        );
        let (old, new) = diff(&after, &after);
        assert!(old.is_empty() && new.is_empty());
    }
}
