//! The audit log against SQLite (always) and PostgreSQL (when `DATABASE_URL` is set): every
//! change leaves exactly one event with its actor and what changed, a refused change none, and
//! the database itself refuses to change or delete an event outside the retention purge.

use std::time::{Duration, SystemTime};

use sea_orm::{ConnectionTrait, DatabaseBackend};
use serde_json::{Value, json};
use stanna_keys::{GeneratedKey, KeyName, KeyStatus, NewSession, Role, UserId, WorkspaceId};
use stanna_store::{
    Actor, AuditContext, AuditEvent, AuditQuery, KeyChanges, KeyStore, LimitOverrides, NewKey,
    NewKeySecret, NewSessionRow, Scope, SessionScope, StoreError,
};

mod common;

on_both_backends!(
    every_change_leaves_exactly_one_event_naming_its_actor,
    sessions_leave_one_event_each_created_or_revoked,
    the_database_refuses_to_change_or_delete_an_event,
    events_page_newest_first_and_filter_by_key_user_and_time,
);

/// Real time: the purge's trigger compares with the database's own clock.
fn now() -> SystemTime {
    SystemTime::now()
}

fn ws(id: &str) -> WorkspaceId {
    WorkspaceId::parse(id).unwrap()
}

fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

fn new_key(w: &str, u: &str, name: &str) -> NewKey {
    let generated = GeneratedKey::generate().unwrap();
    NewKey {
        key_id: generated.key().key_id(),
        preview: generated.key().preview(),
        key_hash: "$argon2id$placeholder".to_owned(),
        workspace: ws(w),
        user: user(u),
        name: KeyName::parse(name).unwrap(),
        expires_at: None,
        rate_limits: LimitOverrides::default(),
        metadata: None,
        scopes: stanna_keys::Scopes::unscoped(),
    }
}

fn admin(request: &str) -> AuditContext {
    AuditContext::admin("alice", request)
}

async fn events(store: &KeyStore, w: &str) -> Vec<AuditEvent> {
    store
        .audit_events(&AuditQuery {
            workspace: ws(w),
            user: None,
            key: None,
            from: None,
            to: None,
            size: 100,
            before_id: None,
        })
        .await
        .unwrap()
        .events
}

fn state(text: &Option<String>) -> Value {
    text.as_deref()
        .map_or(Value::Null, |t| serde_json::from_str(t).unwrap())
}

async fn every_change_leaves_exactly_one_event_naming_its_actor(store: KeyStore) {
    let key = store
        .create(new_key("ws1", "bob", "first"), None, now(), &admin("req-1"))
        .await
        .unwrap();
    let all = events(&store, "ws1").await;
    assert_eq!(all.len(), 1);
    let created = &all[0];
    assert_eq!(created.action, "key.created");
    assert_eq!(
        (created.actor_kind.as_str(), created.actor_id.as_str()),
        ("admin", "alice")
    );
    assert_eq!(created.request_id, "req-1");
    assert_eq!(created.key_id.as_deref(), Some(key.key_id.as_str()));
    assert_eq!(created.user, "bob");
    assert_eq!(created.before, None);
    let after = state(&created.after);
    assert_eq!(after["name"], "first");
    assert_eq!(after["status"], "active");
    // Never a secret: the hash and preview are not key state here.
    let text = created.after.clone().unwrap();
    assert!(
        !text.contains("argon2") && !text.contains(&key.preview),
        "{text}"
    );

    // An API key acting: a rename and a deactivation in one call are one event, only the changed
    // fields, before and after.
    let by_key = AuditContext::new(
        Actor::Key {
            key_id: key.key_id,
            user: user("bob"),
        },
        "req-2",
    );
    let scope = Scope::new(ws("ws1"), Some(user("bob")));
    store
        .update(
            &scope,
            &key.key_id,
            KeyChanges {
                name: Some(KeyName::parse("second").unwrap()),
                status: Some(KeyStatus::Inactive),
                ..KeyChanges::default()
            },
            now(),
            &by_key,
        )
        .await
        .unwrap();
    let all = events(&store, "ws1").await;
    assert_eq!(all.len(), 2);
    let updated = &all[0];
    assert_eq!(updated.action, "key.updated");
    assert_eq!(
        (
            updated.actor_kind.as_str(),
            updated.actor_id.as_str(),
            updated.actor_user.as_deref()
        ),
        ("key", key.key_id.as_str(), Some("bob"))
    );
    assert_eq!(
        state(&updated.before),
        json!({"name": "first", "status": "active"})
    );
    assert_eq!(
        state(&updated.after),
        json!({"name": "second", "status": "inactive"})
    );

    // A change to what the key already is leaves no event; refused changes leave none either.
    store
        .update(
            &scope,
            &key.key_id,
            KeyChanges {
                name: Some(KeyName::parse("second").unwrap()),
                ..KeyChanges::default()
            },
            now(),
            &admin("req-3"),
        )
        .await
        .unwrap();
    let elsewhere = Scope::new(ws("ws2"), None);
    let missing = store
        .update(
            &elsewhere,
            &key.key_id,
            KeyChanges {
                name: Some(KeyName::parse("stolen").unwrap()),
                ..KeyChanges::default()
            },
            now(),
            &admin("req-4"),
        )
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
    let scoped = Scope {
        within: stanna_keys::Scopes::parse(["keys:write"]).unwrap(),
        ..scope.clone()
    };
    let escalation = store
        .delete(&scoped, &key.key_id, now(), &admin("req-5"))
        .await;
    assert!(
        matches!(escalation, Err(StoreError::ScopeEscalation { .. })),
        "{escalation:?}"
    );
    assert_eq!(events(&store, "ws1").await.len(), 2);
    assert!(events(&store, "ws2").await.is_empty());

    // A rotation: one event on the old key naming the replacement.
    let generated = GeneratedKey::generate().unwrap();
    let (new, old) = store
        .rotate(
            &scope,
            &key.key_id,
            NewKeySecret {
                key_id: generated.key().key_id(),
                preview: generated.key().preview(),
                key_hash: "$argon2id$placeholder".to_owned(),
            },
            now() + Duration::from_secs(60),
            None,
            now(),
            &admin("req-6"),
        )
        .await
        .unwrap();
    let all = events(&store, "ws1").await;
    assert_eq!(all.len(), 3);
    let rotated = &all[0];
    assert_eq!(rotated.action, "key.rotated");
    assert_eq!(rotated.key_id.as_deref(), Some(old.key_id.as_str()));
    assert_eq!(rotated.related_key_id.as_deref(), Some(new.key_id.as_str()));
    assert_eq!(state(&rotated.after)["replaced_by"], new.key_id.as_str());
    assert_eq!(state(&rotated.before)["replaced_by"], Value::Null);

    // A deletion keeps what the key was.
    store
        .delete(&scope, &new.key_id, now(), &admin("req-7"))
        .await
        .unwrap();
    let all = events(&store, "ws1").await;
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].action, "key.deleted");
    assert_eq!(all[0].after, None);
    assert_eq!(state(&all[0].before)["name"], "second");
    let ids: Vec<i64> = all.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
}

async fn sessions_leave_one_event_each_created_or_revoked(store: KeyStore) {
    let mut sessions = Vec::new();
    for (i, who) in ["carol", "carol", "dave"].iter().enumerate() {
        let new = NewSession::generate().unwrap();
        let row = NewSessionRow {
            id: new.id,
            digest: new.digest,
            workspace: ws("ws1"),
            user: user(who),
            role: Role::Member,
            name: None,
            email: None,
            expires_at: now() + Duration::from_secs(3600),
        };
        store
            .create_session(
                &row,
                &format!("jti-{i}"),
                now() + Duration::from_secs(60),
                now(),
                &format!("login-{i}"),
            )
            .await
            .unwrap();
        sessions.push((new.id, new.digest));
    }
    let all = events(&store, "ws1").await;
    assert_eq!(all.len(), 3);
    let first = all.last().unwrap();
    assert_eq!(first.action, "session.created");
    assert_eq!(first.actor_kind, "session");
    assert_eq!(first.actor_id, sessions[0].0.to_string());
    assert_eq!(first.session_id.as_deref(), Some(sessions[0].0.as_str()));
    assert_eq!(first.request_id, "login-0");
    assert_eq!(state(&first.after)["role"], "member");
    // Sign-out: the session's own act.
    assert!(
        store
            .revoke_session(&sessions[0].0, &sessions[0].1, now(), "logout-1")
            .await
            .unwrap()
    );
    // A wrong digest ends nothing and leaves nothing.
    assert!(
        !store
            .revoke_session(&sessions[1].0, &[0; 32], now(), "logout-2")
            .await
            .unwrap()
    );
    let all = events(&store, "ws1").await;
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].action, "session.revoked");
    assert_eq!(all[0].actor_id, sessions[0].0.to_string());
    assert_eq!(all[0].request_id, "logout-1");
    // An admin revoking the workspace's: one event per session ended (carol's other, dave's).
    let revoked = store
        .revoke_sessions(
            &SessionScope {
                workspace: ws("ws1"),
                user: None,
            },
            now(),
            &admin("revoke-all"),
        )
        .await
        .unwrap();
    assert_eq!(revoked, 2);
    let all = events(&store, "ws1").await;
    assert_eq!(all.len(), 6);
    let mut ended: Vec<String> = all[..2]
        .iter()
        .map(|e| {
            assert_eq!(
                (
                    e.action.as_str(),
                    e.actor_id.as_str(),
                    e.request_id.as_str()
                ),
                ("session.revoked", "alice", "revoke-all")
            );
            e.session_id.clone().unwrap()
        })
        .collect();
    ended.sort();
    let mut expected: Vec<String> = sessions[1..].iter().map(|(id, _)| id.to_string()).collect();
    expected.sort();
    assert_eq!(ended, expected);
}

/// Runs `sql` and says whether the database refused it.
async fn refused(store: &KeyStore, sql: &str) -> bool {
    store.connection().execute_unprepared(sql).await.is_err()
}

async fn the_database_refuses_to_change_or_delete_an_event(store: KeyStore) {
    let day = Duration::from_secs(86_400);
    // One event 100 days old (its change was made then), one of now.
    store
        .create(
            new_key("ws1", "bob", "old"),
            None,
            now() - 100 * day,
            &admin("old"),
        )
        .await
        .unwrap();
    store
        .create(new_key("ws1", "bob", "new"), None, now(), &admin("new"))
        .await
        .unwrap();
    for sql in [
        "UPDATE audit_events SET actor_id = 'mallory'",
        "UPDATE audit_events SET after_state = NULL WHERE request_id = 'new'",
        "DELETE FROM audit_events WHERE request_id = 'new'",
        "DELETE FROM audit_events",
        // The purge's bound cannot be raised to cover recent events, nor the bound removed.
        "UPDATE audit_purge SET before_at = 9000000000000000",
        "DELETE FROM audit_purge",
        "INSERT INTO audit_purge (id, before_at) VALUES (2, 9000000000000000)",
        // SQLite's REPLACE deletes without delete triggers: refused at the insert.
        "INSERT OR REPLACE INTO audit_purge (id, before_at) VALUES (1, 9000000000000000)",
        "REPLACE INTO audit_events (event_id, at, workspace_id, user_id, action, actor_kind, \
         actor_id, request_id) SELECT event_id, at, workspace_id, user_id, action, actor_kind, \
         'mallory', request_id FROM audit_events",
    ] {
        assert!(refused(&store, sql).await, "the database took {sql:?}");
    }
    if store.backend() == DatabaseBackend::Postgres {
        assert!(refused(&store, "TRUNCATE audit_events").await);
        assert!(refused(&store, "TRUNCATE audit_purge").await);
    }
    let all = events(&store, "ws1").await;
    assert_eq!(all.len(), 2, "every event is still there");
    assert!(all.iter().all(|e| e.actor_id == "alice"));
    // The retention purge deletes what is older than the retention, and only that.
    assert_eq!(store.purge_audit(90 * day, now()).await.unwrap(), 1);
    let left = events(&store, "ws1").await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].request_id, "new");
    // Asked for less than a day, the purge keeps a day.
    assert_eq!(
        store
            .purge_audit(Duration::from_secs(1), now())
            .await
            .unwrap(),
        0
    );
    // And the bound is back down: the recent event still cannot be deleted.
    assert!(refused(&store, "DELETE FROM audit_events").await);
}

async fn events_page_newest_first_and_filter_by_key_user_and_time(store: KeyStore) {
    let start = now() - Duration::from_secs(1000);
    let mut keys = Vec::new();
    for i in 0..5u64 {
        let owner = if i % 2 == 0 { "bob" } else { "erin" };
        let key = store
            .create(
                new_key("ws1", owner, &format!("k{i}")),
                None,
                start + Duration::from_secs(i * 10),
                &admin(&format!("c{i}")),
            )
            .await
            .unwrap();
        keys.push(key);
    }
    let query = |size: u32, before_id: Option<i64>| AuditQuery {
        workspace: ws("ws1"),
        user: None,
        key: None,
        from: None,
        to: None,
        size,
        before_id,
    };
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store.audit_events(&query(2, before)).await.unwrap();
        assert!(page.events.len() <= 2);
        seen.extend(page.events.iter().map(|e| e.request_id.clone()));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["c4", "c3", "c2", "c1", "c0"]);
    let bobs = store
        .audit_events(&AuditQuery {
            user: Some(user("bob")),
            ..query(100, None)
        })
        .await
        .unwrap();
    let got: Vec<_> = bobs.events.iter().map(|e| e.request_id.as_str()).collect();
    assert_eq!(got, ["c4", "c2", "c0"]);
    let one = store
        .audit_events(&AuditQuery {
            key: Some(keys[3].key_id),
            ..query(100, None)
        })
        .await
        .unwrap();
    assert_eq!(one.events.len(), 1);
    assert_eq!(one.events[0].request_id, "c3");
    let micros = |t: SystemTime| i64::try_from(stanna_keys::time::micros_since_epoch(t)).unwrap();
    let window = store
        .audit_events(&AuditQuery {
            from: Some(micros(start + Duration::from_secs(10))),
            to: Some(micros(start + Duration::from_secs(30))),
            ..query(100, None)
        })
        .await
        .unwrap();
    let got: Vec<_> = window
        .events
        .iter()
        .map(|e| e.request_id.as_str())
        .collect();
    assert_eq!(got, ["c2", "c1"]);
    assert!(events(&store, "ws2").await.is_empty());
}
