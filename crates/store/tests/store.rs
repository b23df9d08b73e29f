//! The KeyStore behaviour suite, run against SQLite (always) and PostgreSQL (when `DATABASE_URL`
//! is set; CI sets it). Each test gets a database of its own.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use sea_orm::EntityTrait;
use stanna_keys::{
    GeneratedKey, HashParams, KeyHasher, KeyName, KeyStatus, UserId, WindowLimit, WorkspaceId,
};
use stanna_store::{
    ChangePosition, ExpiryRefusal, KeyChange, KeyChanges, KeyFilter, KeyStore, LimitOverrides,
    NewKey, NewKeySecret, PageRequest, Scope, StoreError,
};
use stanna_testkit::TempDir;

mod common;

on_both_backends!(
    created_key_reads_back_in_its_scope,
    listing_is_newest_first_and_pages_cover_every_key_once,
    a_key_is_invisible_from_another_workspace_or_user,
    update_renames_and_deactivates,
    deleting_twice_is_not_found,
    rotation_keeps_owner_name_and_limits_and_expires_the_old_key,
    max_keys_per_user_counts_live_keys_only,
    an_expired_key_rotates_to_a_key_without_expiry_within_the_maximum,
    concurrent_creates_never_overshoot_the_maximum,
    last_used_never_moves_backwards,
    the_database_never_holds_a_plaintext_key,
    migrations_are_idempotent,
    changes_after_reports_updates_and_deletions_in_order,
    deleted_keys_do_not_count_against_the_maximum,
    expiry_changes_never_revive_a_key_or_extend_a_grace_period,
    limit_overrides_and_metadata_are_set_and_cleared_live,
    a_scoped_caller_writes_only_keys_within_its_scopes,
    filtered_listings_find_exactly_the_matching_keys_across_pages,
    the_search_migration_folds_the_names_of_existing_keys,
    change_stamps_list_the_feed_and_changes_of_reads_the_rows,
    a_bulk_load_stores_live_keys_and_tombstones,
    the_tombstone_purge_removes_only_deletions_older_than_the_cutoff,
    the_listing_plan_can_be_explained,
);

async fn change_stamps_list_the_feed_and_changes_of_reads_the_rows(store: KeyStore) {
    let mut ids = Vec::new();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        let (k, _) = new_key("ws1", "alice", name);
        ids.push(
            store
                .create(k, None, t(i as u64), &by_admin())
                .await
                .unwrap()
                .key_id,
        );
    }
    store
        .delete(&scope("ws1", None), &ids[1], t(10), &by_admin())
        .await
        .unwrap();
    let since = |at| ChangePosition {
        updated_at: at,
        key_id: None,
    };
    // Stamps in (updated_at, key_id) order, as changes_after lists the rows.
    let stamps = store.change_stamps_after(since(t(0)), 100).await.unwrap();
    let listed: Vec<_> = stamps.iter().map(|s| (s.key_id, s.updated_at)).collect();
    assert_eq!(listed, [(ids[2], t(2)), (ids[1], t(10))]);
    let rows = store.changes_after(since(t(0)), 100).await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|c| (c.key_id(), c.updated_at()))
            .collect::<Vec<_>>(),
        listed
    );
    // Paging by stamp position visits each once.
    let first = store.change_stamps_after(since(t(0)), 1).await.unwrap();
    let second = store
        .change_stamps_after(first[0].position(), 1)
        .await
        .unwrap();
    assert_eq!((first[0].key_id, second[0].key_id), (ids[2], ids[1]));
    // The rows of named ids: live ones as Updated, the deleted one as Deleted, an id that has
    // no row (never stored, or purged) absent.
    let (never, _) = new_key("ws1", "alice", "never");
    let mut changes = store
        .changes_of(&[ids[0], ids[1], never.key_id])
        .await
        .unwrap();
    changes.sort_by_key(|c| c.updated_at());
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(
        matches!(&changes[0], KeyChange::Updated(r) if r.key_id == ids[0] && r.name.as_str() == "a")
    );
    assert_eq!(
        changes[1],
        KeyChange::Deleted {
            key_id: ids[1],
            updated_at: t(10)
        }
    );
    // More ids than one query takes.
    let many: Vec<_> = (0..stanna_store::CHANGES_OF_MAX + 3)
        .map(|i| {
            if i == 7 {
                ids[2]
            } else {
                new_key("ws1", "x", "x").0.key_id
            }
        })
        .collect();
    let found = store.changes_of(&many).await.unwrap();
    assert_eq!(
        found.iter().map(KeyChange::key_id).collect::<Vec<_>>(),
        [ids[2]]
    );
}

async fn a_bulk_load_stores_live_keys_and_tombstones(store: KeyStore) {
    let keys: Vec<_> = (0..2500u64)
        .map(|i| stanna_store::LoadedKey {
            key: new_key("ws_load", "alice", &format!("k{i}")).0,
            created_at: t(i),
            deleted_at: (i % 10 == 0).then(|| t(5000 + i)),
        })
        .collect();
    store.load_keys(&keys).await.unwrap();
    let s = scope("ws_load", None);
    let mut listed = 0;
    let mut after = None;
    loop {
        let page = store
            .list(
                &s,
                PageRequest {
                    size: 100,
                    after,
                    filter: KeyFilter::default(),
                },
                t(10_000),
            )
            .await
            .unwrap();
        listed += page.keys.len();
        if listed == 100 {
            assert_eq!(
                page.keys[0].created_at,
                t(2499),
                "newest first, at its own time"
            );
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(listed, 2250, "every live key, no tombstone");
    // A tombstone is stamped at its deletion, as delete leaves it.
    let deleted = store.changes_of(&[keys[10].key.key_id]).await.unwrap();
    assert_eq!(
        deleted,
        [KeyChange::Deleted {
            key_id: keys[10].key.key_id,
            updated_at: t(5010)
        }]
    );
    assert!(
        store
            .find_by_key_id(&keys[11].key.key_id)
            .await
            .unwrap()
            .is_some()
    );
    // Loading an id twice is refused, not stored twice.
    assert!(store.load_keys(&keys[..1]).await.is_err());
}

async fn the_tombstone_purge_removes_only_deletions_older_than_the_cutoff(store: KeyStore) {
    let keys: Vec<_> = (0..2300u64)
        .map(|i| stanna_store::LoadedKey {
            key: new_key("ws_purge", "alice", "k").0,
            created_at: t(i),
            // 2 100 deleted at t(100 + i % 3 * 1000) (0, 1000, 2000 later), 200 live.
            deleted_at: (i < 2100).then(|| t(100 + (i % 3) * 1000)),
        })
        .collect();
    store.load_keys(&keys).await.unwrap();
    // Strictly before the cutoff: t(1100) keeps those deleted at t(1100) and t(2100).
    assert_eq!(store.purge_deleted_keys(t(1100)).await.unwrap(), 700);
    assert_eq!(
        store.purge_deleted_keys(t(1100)).await.unwrap(),
        0,
        "nothing left to purge"
    );
    // More than one batch at once.
    assert_eq!(store.purge_deleted_keys(t(3000)).await.unwrap(), 1400);
    let left = store
        .changes_of(&keys.iter().map(|k| k.key.key_id).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(left.len(), 200);
    assert!(
        left.iter().all(|c| matches!(c, KeyChange::Updated(_))),
        "live keys stay"
    );
}

async fn the_listing_plan_can_be_explained(store: KeyStore) {
    let (k, _) = new_key("ws1", "alice", "a");
    store.create(k, None, t(0), &by_admin()).await.unwrap();
    let plan = store
        .explain_list(
            &scope("ws1", None),
            &PageRequest {
                size: 50,
                after: None,
                filter: KeyFilter::default(),
            },
            t(1),
        )
        .await
        .unwrap();
    let text = plan.join("\n");
    assert!(
        text.contains("api_keys_workspace_created"),
        "the listing walks its index: {text}"
    );
}

async fn expiry_changes_never_revive_a_key_or_extend_a_grace_period(store: KeyStore) {
    let s = scope("ws1", None);
    let expiry = |at: Option<SystemTime>, earlier_only: bool| KeyChanges {
        expires_at: Some(at),
        expiry_earlier_only: earlier_only,
        ..KeyChanges::default()
    };
    let refusal = |r: Result<stanna_store::KeyRecord, StoreError>| match r {
        Err(StoreError::ExpiryRefused(refusal)) => refusal,
        other => panic!("expected a refused expiry, got {other:?}"),
    };
    let (k, _) = new_key("ws1", "alice", "k");
    let id = store
        .create(k, None, t(0), &by_admin())
        .await
        .unwrap()
        .key_id;

    // No expiry yet: earlier-only may set any time, but not clear.
    let set = store
        .update(&s, &id, expiry(Some(t(1000)), true), t(10), &by_admin())
        .await
        .unwrap();
    assert_eq!(set.expires_at, Some(t(1000)));
    assert_eq!(
        refusal(
            store
                .update(&s, &id, expiry(None, true), t(10), &by_admin())
                .await
        ),
        ExpiryRefusal::NotClearable
    );
    // Earlier-only: later is refused and leaves the row as it was; earlier is taken.
    assert_eq!(
        refusal(
            store
                .update(&s, &id, expiry(Some(t(2000)), true), t(10), &by_admin())
                .await
        ),
        ExpiryRefusal::OnlyEarlier { current: t(1000) }
    );
    assert_eq!(store.get(&s, &id).await.unwrap().updated_at, t(10));
    let earlier = store
        .update(&s, &id, expiry(Some(t(500)), true), t(20), &by_admin())
        .await
        .unwrap();
    assert_eq!(earlier.expires_at, Some(t(500)));
    // An admin (not earlier-only) may extend a live key, and clear its expiry.
    let later = store
        .update(&s, &id, expiry(Some(t(3000)), false), t(30), &by_admin())
        .await
        .unwrap();
    assert_eq!(later.expires_at, Some(t(3000)));
    let cleared = store
        .update(&s, &id, expiry(None, false), t(40), &by_admin())
        .await
        .unwrap();
    assert_eq!(cleared.expires_at, None);
    // A time already past stops the key at once, stored as "now".
    let stopped = store
        .update(&s, &id, expiry(Some(t(1)), true), t(50), &by_admin())
        .await
        .unwrap();
    assert_eq!(stopped.expires_at, Some(t(50)));
    assert!(stopped.is_expired(t(50)));
    // Expired: nobody moves it, either way; other fields still change.
    for (at, earlier_only) in [(Some(t(5000)), false), (None, false), (Some(t(60)), true)] {
        assert_eq!(
            refusal(
                store
                    .update(&s, &id, expiry(at, earlier_only), t(60), &by_admin())
                    .await
            ),
            ExpiryRefusal::Expired
        );
    }
    let renamed = KeyChanges {
        name: Some(KeyName::parse("still renamable").unwrap()),
        ..KeyChanges::default()
    };
    store
        .update(&s, &id, renamed, t(61), &by_admin())
        .await
        .unwrap();

    // A rotated-out key's grace only shortens, even for an admin.
    let (k, _) = new_key("ws1", "alice", "rotated");
    let old = store
        .create(k, None, t(0), &by_admin())
        .await
        .unwrap()
        .key_id;
    let (_, fresh) = new_key("ws1", "alice", "x");
    let secret = NewKeySecret {
        key_id: fresh.key().key_id(),
        preview: fresh.key().preview(),
        key_hash: "$argon2id$placeholder".to_owned(),
    };
    store
        .rotate(&s, &old, secret, t(3700), None, t(100), &by_admin())
        .await
        .unwrap();
    for at in [Some(t(3701)), None] {
        assert_eq!(
            refusal(
                store
                    .update(&s, &old, expiry(at, false), t(110), &by_admin())
                    .await
            ),
            ExpiryRefusal::RotatedOut { current: t(3700) }
        );
    }
    let shorter = store
        .update(&s, &old, expiry(Some(t(200)), false), t(120), &by_admin())
        .await
        .unwrap();
    assert_eq!(shorter.expires_at, Some(t(200)));
    // Another workspace's key is not found, never "refused".
    assert!(matches!(
        store
            .update(
                &scope("ws2", None),
                &old,
                expiry(Some(t(150)), true),
                t(130),
                &by_admin()
            )
            .await,
        Err(StoreError::NotFound)
    ));
}

async fn limit_overrides_and_metadata_are_set_and_cleared_live(store: KeyStore) {
    let s = scope("ws1", None);
    let (mut k, _) = new_key("ws1", "alice", "k");
    k.rate_limits.hourly = Some("500/1h".parse().unwrap());
    k.metadata = Some(stanna_keys::KeyMetadata::parse(r#"{"plan":"free"}"#).unwrap());
    let id = store
        .create(k, None, t(0), &by_admin())
        .await
        .unwrap()
        .key_id;
    let burst: WindowLimit = "3/60s".parse().unwrap();
    let changed = store
        .update(
            &s,
            &id,
            KeyChanges {
                rate_limits: stanna_store::LimitChanges {
                    burst: Some(Some(burst)),
                    hourly: None,
                },
                metadata: Some(Some(
                    stanna_keys::KeyMetadata::parse(r#"{"plan":"pro"}"#).unwrap(),
                )),
                ..KeyChanges::default()
            },
            t(10),
            &by_admin(),
        )
        .await
        .unwrap();
    assert_eq!(changed.rate_limits.burst, Some(burst));
    assert_eq!(
        changed.rate_limits.hourly,
        Some("500/1h".parse().unwrap()),
        "kept"
    );
    assert_eq!(
        changed.metadata.as_ref().map(|m| m.as_str()),
        Some(r#"{"plan":"pro"}"#)
    );
    // The change feed carries it (what every auth-check applies).
    let fed = store
        .changes_after(
            ChangePosition {
                updated_at: t(5),
                key_id: None,
            },
            10,
        )
        .await
        .unwrap();
    assert!(matches!(&fed[..], [KeyChange::Updated(r)] if r.rate_limits.burst == Some(burst)));
    let cleared = store
        .update(
            &s,
            &id,
            KeyChanges {
                rate_limits: stanna_store::LimitChanges {
                    burst: Some(None),
                    hourly: Some(None),
                },
                metadata: Some(None),
                ..KeyChanges::default()
            },
            t(20),
            &by_admin(),
        )
        .await
        .unwrap();
    assert_eq!(cleared.rate_limits, LimitOverrides::default());
    assert_eq!(cleared.metadata, None);
    // A rotation carries the metadata to the replacement.
    let with_meta = KeyChanges {
        metadata: Some(Some(stanna_keys::KeyMetadata::parse(r#"{"a":1}"#).unwrap())),
        ..KeyChanges::default()
    };
    store
        .update(&s, &id, with_meta, t(30), &by_admin())
        .await
        .unwrap();
    let (_, fresh) = new_key("ws1", "alice", "x");
    let secret = NewKeySecret {
        key_id: fresh.key().key_id(),
        preview: fresh.key().preview(),
        key_hash: "$argon2id$placeholder".to_owned(),
    };
    let (new, _) = store
        .rotate(&s, &id, secret, t(40), None, t(40), &by_admin())
        .await
        .unwrap();
    assert_eq!(
        new.metadata.as_ref().map(|m| m.as_str()),
        Some(r#"{"a":1}"#)
    );
}

async fn changes_after_reports_updates_and_deletions_in_order(store: KeyStore) {
    let (a, _) = new_key("ws1", "alice", "a");
    let (b, _) = new_key("ws1", "alice", "b");
    let a = store
        .create(a, None, t(0), &by_admin())
        .await
        .unwrap()
        .key_id;
    let b = store
        .create(b, None, t(1), &by_admin())
        .await
        .unwrap()
        .key_id;
    let since = |at| ChangePosition {
        updated_at: at,
        key_id: None,
    };
    assert_eq!(
        store.changes_after(since(t(0)), 100).await.unwrap().len(),
        1,
        "only b is newer than t(0)"
    );
    let off = KeyChanges {
        status: Some(KeyStatus::Inactive),
        ..KeyChanges::default()
    };
    store
        .update(&scope("ws1", None), &a, off, t(5), &by_admin())
        .await
        .unwrap();
    store
        .delete(&scope("ws1", None), &b, t(6), &by_admin())
        .await
        .unwrap();
    let changes = store.changes_after(since(t(4)), 100).await.unwrap();
    assert_eq!(changes.len(), 2);
    assert!(
        matches!(&changes[0], KeyChange::Updated(r) if r.key_id == a && r.status == KeyStatus::Inactive)
    );
    assert_eq!(
        changes[1],
        KeyChange::Deleted {
            key_id: b,
            updated_at: t(6)
        }
    );
    assert!(
        store
            .changes_after(since(t(6)), 100)
            .await
            .unwrap()
            .is_empty()
    );
    // Paging one change at a time visits both, in order.
    let first = store.changes_after(since(t(4)), 1).await.unwrap();
    let second = store.changes_after(first[0].position(), 1).await.unwrap();
    assert_eq!((first[0].key_id(), second[0].key_id()), (a, b));
    assert!(
        store
            .changes_after(second[0].position(), 1)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn deleted_keys_do_not_count_against_the_maximum(store: KeyStore) {
    let (k, _) = new_key("ws1", "alice", "first");
    let id = store
        .create(k, Some(1), t(0), &by_admin())
        .await
        .unwrap()
        .key_id;
    store
        .delete(&scope("ws1", None), &id, t(1), &by_admin())
        .await
        .unwrap();
    let (k, _) = new_key("ws1", "alice", "second");
    store
        .create(k, Some(1), t(2), &by_admin())
        .await
        .expect("room again after the delete");
}

/// The actor of the tests' own changes: an admin named `test` (the audit log is tested in
/// `crates/store/tests/audit.rs`).
fn by_admin() -> stanna_store::AuditContext {
    stanna_store::AuditContext::admin("test", "test")
}

fn ws(id: &str) -> WorkspaceId {
    WorkspaceId::parse(id).unwrap()
}
fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}
fn scope(w: &str, u: Option<&str>) -> Scope {
    Scope::new(ws(w), u.map(user))
}
fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000 + secs)
}

/// A new key with a throwaway hash (hashing is not what these tests are about).
fn new_key(w: &str, u: &str, name: &str) -> (NewKey, GeneratedKey) {
    let generated = GeneratedKey::generate().unwrap();
    let key = NewKey {
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
    };
    (key, generated)
}

async fn created_key_reads_back_in_its_scope(store: KeyStore) {
    let (mut key, generated) = new_key("ws1", "alice", "Production Dashboard");
    key.rate_limits.burst = Some("5/1s".parse().unwrap());
    let created = store.create(key, None, t(0), &by_admin()).await.unwrap();
    assert_eq!(created.key_id, generated.key().key_id());
    assert_eq!(created.status, KeyStatus::Active);
    assert_eq!(created.created_at, t(0));
    assert_eq!(created.last_used_at, None);
    assert_eq!(
        created.rate_limits.burst,
        Some(WindowLimit::new(5, Duration::from_secs(1)).unwrap())
    );
    assert_eq!(created.rate_limits.hourly, None);
    let read = store
        .get(&scope("ws1", Some("alice")), &created.key_id)
        .await
        .unwrap();
    assert_eq!(read, created);
    assert_eq!(
        store.find_by_key_id(&created.key_id).await.unwrap(),
        Some(created)
    );
}

async fn listing_is_newest_first_and_pages_cover_every_key_once(store: KeyStore) {
    let mut ids = Vec::new();
    for i in 0..250u64 {
        // Several keys share a creation time, so the key-id tie-breaker is exercised too.
        let (key, _) = new_key(
            "ws1",
            if i % 2 == 0 { "alice" } else { "bob" },
            &format!("key {i}"),
        );
        ids.push(
            store
                .create(key, None, t(i / 3), &by_admin())
                .await
                .unwrap()
                .key_id,
        );
    }
    let (other, _) = new_key("ws2", "alice", "elsewhere");
    store.create(other, None, t(0), &by_admin()).await.unwrap();

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(
                &scope("ws1", None),
                PageRequest {
                    size: 7,
                    after,
                    ..PageRequest::default()
                },
                t(1000),
            )
            .await
            .unwrap();
        assert!(page.keys.len() <= 7);
        seen.extend(page.keys.iter().map(|k| (k.created_at, k.key_id)));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(
        seen.len(),
        250,
        "every key of the workspace, and only those"
    );
    let unique: HashSet<_> = seen.iter().map(|(_, id)| *id).collect();
    assert_eq!(unique.len(), 250, "no key listed twice");
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first, ties by key id"
    );
    let alice = store
        .list(
            &scope("ws1", Some("alice")),
            PageRequest {
                size: 100,
                ..PageRequest::default()
            },
            t(1000),
        )
        .await
        .unwrap();
    assert_eq!(alice.keys.len(), 100);
    assert!(alice.keys.iter().all(|k| k.user.as_str() == "alice"));
}

async fn a_key_is_invisible_from_another_workspace_or_user(store: KeyStore) {
    let (key, _) = new_key("wsA", "alice", "mine");
    let id = store
        .create(key, None, t(0), &by_admin())
        .await
        .unwrap()
        .key_id;
    let secret = || NewKeySecret {
        key_id: GeneratedKey::generate().unwrap().key().key_id(),
        preview: "p".into(),
        key_hash: "h".into(),
    };
    for outsider in [
        scope("wsB", None),
        scope("wsB", Some("alice")),
        scope("wsA", Some("bob")),
    ] {
        assert!(
            matches!(store.get(&outsider, &id).await, Err(StoreError::NotFound)),
            "get from {outsider:?}"
        );
        let rename = KeyChanges {
            name: Some(KeyName::parse("stolen").unwrap()),
            status: None,
            ..KeyChanges::default()
        };
        assert!(matches!(
            store
                .update(&outsider, &id, rename, t(1), &by_admin())
                .await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.delete(&outsider, &id, t(1), &by_admin()).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store
                .rotate(&outsider, &id, secret(), t(1), None, t(1), &by_admin())
                .await,
            Err(StoreError::NotFound)
        ));
        let page = store
            .list(
                &outsider,
                PageRequest {
                    size: 100,
                    ..PageRequest::default()
                },
                t(1000),
            )
            .await
            .unwrap();
        assert!(page.keys.is_empty(), "listed from {outsider:?}");
    }
    let untouched = store.get(&scope("wsA", Some("alice")), &id).await.unwrap();
    assert_eq!(untouched.name.as_str(), "mine");
}

async fn update_renames_and_deactivates(store: KeyStore) {
    let (key, _) = new_key("ws1", "alice", "old name");
    let id = store
        .create(key, None, t(0), &by_admin())
        .await
        .unwrap()
        .key_id;
    let changes = KeyChanges {
        name: Some(KeyName::parse("new name").unwrap()),
        status: Some(KeyStatus::Inactive),
        ..KeyChanges::default()
    };
    let updated = store
        .update(&scope("ws1", None), &id, changes, t(5), &by_admin())
        .await
        .unwrap();
    assert_eq!(
        (updated.name.as_str(), updated.status),
        ("new name", KeyStatus::Inactive)
    );
    assert_eq!((updated.created_at, updated.updated_at), (t(0), t(5)));
    let only_status = KeyChanges {
        name: None,
        status: Some(KeyStatus::Active),
        ..KeyChanges::default()
    };
    let updated = store
        .update(
            &scope("ws1", Some("alice")),
            &id,
            only_status,
            t(6),
            &by_admin(),
        )
        .await
        .unwrap();
    assert_eq!(
        (updated.name.as_str(), updated.status),
        ("new name", KeyStatus::Active),
        "merge semantics"
    );
}

async fn deleting_twice_is_not_found(store: KeyStore) {
    let (key, _) = new_key("ws1", "alice", "doomed");
    let id = store
        .create(key, None, t(0), &by_admin())
        .await
        .unwrap()
        .key_id;
    store
        .delete(&scope("ws1", Some("alice")), &id, t(1), &by_admin())
        .await
        .unwrap();
    assert!(matches!(
        store
            .delete(&scope("ws1", None), &id, t(2), &by_admin())
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.get(&scope("ws1", None), &id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.find_by_key_id(&id).await.unwrap(), None);
}

async fn rotation_keeps_owner_name_and_limits_and_expires_the_old_key(store: KeyStore) {
    let (mut key, _) = new_key("ws1", "alice", "rotating");
    key.rate_limits.hourly = Some("50/1h".parse().unwrap());
    let old = store.create(key, None, t(0), &by_admin()).await.unwrap();
    let next = GeneratedKey::generate().unwrap();
    let secret = NewKeySecret {
        key_id: next.key().key_id(),
        preview: next.key().preview(),
        key_hash: "h2".into(),
    };
    let (new, retired) = store
        .rotate(
            &scope("ws1", None),
            &old.key_id,
            secret,
            t(70),
            None,
            t(10),
            &by_admin(),
        )
        .await
        .unwrap();
    assert_eq!(new.key_id, next.key().key_id());
    assert_eq!(
        (&new.workspace, &new.user, &new.name),
        (&old.workspace, &old.user, &old.name)
    );
    assert_eq!(new.rate_limits, old.rate_limits);
    assert_eq!(new.expires_at, None);
    assert_eq!(retired.expires_at, Some(t(70)));
    let listed = store
        .list(
            &scope("ws1", None),
            PageRequest {
                size: 10,
                ..PageRequest::default()
            },
            t(1000),
        )
        .await
        .unwrap();
    assert_eq!(
        listed.keys.len(),
        2,
        "the old key is still listed, with its expiry"
    );
    // While it is being retired it cannot be rotated again: one successor per key.
    let twice = NewKeySecret {
        key_id: GeneratedKey::generate().unwrap().key().key_id(),
        preview: "p".into(),
        key_hash: "h".into(),
    };
    let again_result = store
        .rotate(
            &scope("ws1", None),
            &old.key_id,
            twice,
            t(80),
            None,
            t(20),
            &by_admin(),
        )
        .await;
    assert!(
        matches!(again_result, Err(StoreError::AlreadyRotated { replaced_by }) if replaced_by == new.key_id)
    );
    // Once its grace has passed it is still the rotated-out key: only its replacement rotates.
    let again = NewKeySecret {
        key_id: GeneratedKey::generate().unwrap().key().key_id(),
        preview: "p".into(),
        key_hash: "h".into(),
    };
    assert!(matches!(
        store
            .rotate(&scope("ws1", None), &old.key_id, again, t(80), None, t(75), &by_admin())
            .await,
        Err(StoreError::AlreadyRotated { replaced_by }) if replaced_by == new.key_id
    ));
}

/// A key past its own expiry (never rotated) can be rotated: its replacement has no expiry, and
/// since it is one live key more, it counts against the maximum like a creation.
async fn an_expired_key_rotates_to_a_key_without_expiry_within_the_maximum(store: KeyStore) {
    let (mut key, _) = new_key("ws1", "alice", "lapsed");
    key.expires_at = Some(t(50));
    let lapsed = store.create(key, Some(2), t(0), &by_admin()).await.unwrap();
    let secret = || NewKeySecret {
        key_id: GeneratedKey::generate().unwrap().key().key_id(),
        preview: "p".into(),
        key_hash: "h".into(),
    };
    let (replacement, old) = store
        .rotate(
            &scope("ws1", None),
            &lapsed.key_id,
            secret(),
            t(60),
            Some(2),
            t(60),
            &by_admin(),
        )
        .await
        .unwrap();
    assert_eq!(
        replacement.expires_at, None,
        "the passed expiry is not carried over"
    );
    assert_eq!(replacement.name, lapsed.name);
    assert_eq!(old.replaced_by, Some(replacement.key_id));
    // At the maximum, an expired key's rotation is refused like a creation.
    let (mut key, _) = new_key("ws1", "alice", "second");
    key.expires_at = Some(t(70));
    let second = store
        .create(key, Some(2), t(61), &by_admin())
        .await
        .unwrap();
    let (key, _) = new_key("ws1", "alice", "third");
    store
        .create(key, Some(2), t(62), &by_admin())
        .await
        .unwrap_err();
    assert!(matches!(
        store
            .rotate(
                &scope("ws1", None),
                &second.key_id,
                secret(),
                t(80),
                Some(1),
                t(80),
                &by_admin()
            )
            .await,
        Err(StoreError::TooManyKeys { max: 1 })
    ));
}

async fn max_keys_per_user_counts_live_keys_only(store: KeyStore) {
    for i in 0..3 {
        let (mut key, _) = new_key("ws1", "alice", &format!("k{i}"));
        if i == 0 {
            key.expires_at = Some(t(100));
        }
        store.create(key, Some(3), t(0), &by_admin()).await.unwrap();
    }
    let (key, _) = new_key("ws1", "alice", "one too many");
    assert!(matches!(
        store.create(key, Some(3), t(1), &by_admin()).await,
        Err(StoreError::TooManyKeys { max: 3 })
    ));
    let (key, _) = new_key("ws1", "bob", "bob is fine");
    store.create(key, Some(3), t(1), &by_admin()).await.unwrap();
    // Once the first key has expired, there is room again.
    let (key, _) = new_key("ws1", "alice", "after expiry");
    store
        .create(key, Some(3), t(101), &by_admin())
        .await
        .unwrap();
}

async fn concurrent_creates_never_overshoot_the_maximum(store: KeyStore) {
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let (key, _) = new_key("ws1", "alice", &format!("race {i}"));
            store.create(key, Some(5), t(0), &by_admin()).await
        }));
    }
    let mut created = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => created += 1,
            Err(StoreError::TooManyKeys { .. }) => {}
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!(
        created, 5,
        "exactly the maximum is created under concurrency"
    );
}

async fn last_used_never_moves_backwards(store: KeyStore) {
    let (key, _) = new_key("ws1", "alice", "used");
    let id = store
        .create(key, None, t(0), &by_admin())
        .await
        .unwrap()
        .key_id;
    store.record_last_used(&[(id, t(50))]).await.unwrap();
    store.record_last_used(&[(id, t(40))]).await.unwrap();
    assert_eq!(
        store
            .find_by_key_id(&id)
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        Some(t(50))
    );
}

async fn the_database_never_holds_a_plaintext_key(store: KeyStore) {
    let hasher = KeyHasher::new(HashParams::insecure_fast_for_tests()).unwrap();
    let mut secrets = Vec::new();
    for i in 0..5 {
        let (mut key, generated) = new_key("ws1", "alice", &format!("k{i}"));
        key.key_hash = hasher.hash(generated.key()).unwrap();
        store.create(key, None, t(0), &by_admin()).await.unwrap();
        secrets.push(generated.into_secret());
    }
    let rows = stanna_store::entity::Entity::find()
        .all(store.connection())
        .await
        .unwrap();
    assert_eq!(rows.len(), 5);
    for row in rows {
        // Debug prints every column of the row.
        let dump = format!("{row:?}");
        for secret in &secrets {
            // Neither the whole key nor its secret part appears anywhere.
            assert!(
                !dump.contains(secret.as_str()) && !dump.contains(&secret[15..47]),
                "plaintext stored: {dump}"
            );
        }
    }
}

/// The names of the applied migrations, in order.
async fn applied_migrations(store: &KeyStore) -> Vec<String> {
    use sea_orm::{ConnectionTrait, Statement};
    let rows = store
        .connection()
        .query_all_raw(Statement::from_string(
            store.backend(),
            "SELECT version FROM seaql_migrations ORDER BY version",
        ))
        .await
        .expect("the migrations table exists");
    rows.iter()
        .map(|row| row.try_get::<String>("", "version").unwrap())
        .collect()
}

const MIGRATIONS: [&str; 10] = [
    "m20261127_000001_create_api_keys",
    "m20261127_000002_soft_delete_and_change_feed",
    "m20261127_000003_rotation_lineage",
    "m20261202_000004_sessions_and_wider_user_ids",
    "m20261202_000005_key_metadata",
    "m20261203_000006_key_scopes",
    "m20261204_000007_key_name_search",
    "m20261204_000008_key_usage",
    "m20261205_000009_audit_log",
    "m20261207_000010_change_feed_key_order",
];

async fn migrations_are_idempotent(store: KeyStore) {
    let (key, _) = new_key("ws1", "alice", "kept");
    let kept = store.create(key, None, t(0), &by_admin()).await.unwrap();
    for _ in 0..2 {
        stanna_store::migration::migrate(store.connection())
            .await
            .unwrap();
    }
    assert_eq!(
        applied_migrations(&store).await,
        MIGRATIONS,
        "each applied once"
    );
    let read = store
        .get(&scope("ws1", None), &kept.key_id)
        .await
        .expect("a key survives migrating again");
    assert_eq!(read, kept);
}

/// Several processes starting at once must all come up with one schema: eight pools migrate the
/// same fresh database concurrently, each is usable afterwards, and each migration is applied
/// exactly once.
async fn concurrent_start_up(url: String) {
    let starts = (0..8).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { KeyStore::connect(&url).await })
    });
    let mut stores = Vec::new();
    for start in starts.collect::<Vec<_>>() {
        stores.push(
            start
                .await
                .unwrap()
                .expect("every concurrent start-up succeeds"),
        );
    }
    for (i, store) in stores.iter().enumerate() {
        let (key, _) = new_key("ws1", &format!("user-{i}"), "from each pool");
        let made = store
            .create(key, None, t(i as u64), &by_admin())
            .await
            .unwrap();
        let seen = stores[(i + 1) % stores.len()]
            .get(&scope("ws1", None), &made.key_id)
            .await
            .expect("every pool works on the one schema");
        assert_eq!(seen.key_id, made.key_id);
    }
    assert_eq!(applied_migrations(&stores[0]).await, MIGRATIONS);
    for store in stores {
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn sqlite_concurrent_start_up_migrates_once() {
    // Several rounds on fresh files: the race (one start-up switching the file to WAL while
    // another opens it) is rare, so one round would rarely meet it.
    for _ in 0..5 {
        let dir = TempDir::new();
        concurrent_start_up(dir.sqlite_url()).await;
    }
}

#[tokio::test]
async fn postgres_concurrent_start_up_migrates_once() {
    if let Some(database) =
        stanna_testkit::fresh_postgres_database("postgres_concurrent_start_up_migrates_once").await
    {
        concurrent_start_up(database.url().to_owned()).await;
    }
}

fn scopes(names: &[&str]) -> stanna_keys::Scopes {
    stanna_keys::Scopes::parse(names).unwrap()
}

async fn a_scoped_caller_writes_only_keys_within_its_scopes(store: KeyStore) {
    let make = |name: &str, scoped: &[&str]| {
        let (mut key, _) = new_key("ws1", "alice", name);
        key.scopes = scopes(scoped);
        key
    };
    let unscoped = store
        .create(make("full", &[]), None, t(0), &by_admin())
        .await
        .unwrap();
    let inside = store
        .create(make("in", &["a"]), None, t(1), &by_admin())
        .await
        .unwrap();
    let wider = store
        .create(make("wide", &["a", "c"]), None, t(2), &by_admin())
        .await
        .unwrap();
    assert_eq!(inside.scopes, scopes(&["a"]));
    let caller = Scope {
        within: scopes(&["a", "b"]),
        ..scope("ws1", Some("alice"))
    };
    let rename = || KeyChanges {
        name: Some(KeyName::parse("renamed").unwrap()),
        ..KeyChanges::default()
    };
    let escalation = |scope: &str| StoreError::ScopeEscalation {
        scope: scope.to_owned(),
    };
    // Keys beyond the caller: refused, unchanged.
    for (key, outside) in [(&unscoped, "*"), (&wider, "c")] {
        let refused = store
            .update(&caller, &key.key_id, rename(), t(5), &by_admin())
            .await;
        assert!(
            matches!(&refused, Err(e) if e.to_string() == escalation(outside).to_string()),
            "{refused:?}"
        );
        assert!(matches!(
            store.delete(&caller, &key.key_id, t(5), &by_admin()).await,
            Err(StoreError::ScopeEscalation { .. })
        ));
        let (_, fresh) = new_key("ws1", "alice", "x");
        let secret = NewKeySecret {
            key_id: fresh.key().key_id(),
            preview: fresh.key().preview(),
            key_hash: "$argon2id$placeholder".to_owned(),
        };
        assert!(matches!(
            store
                .rotate(&caller, &key.key_id, secret, t(6), None, t(6), &by_admin())
                .await,
            Err(StoreError::ScopeEscalation { .. })
        ));
        let read = store.get(&caller, &key.key_id).await.unwrap();
        assert_eq!(
            (read.name.as_str(), read.replaced_by),
            (key.name.as_str(), None)
        );
    }
    // Giving scopes beyond the caller, or none at all (everything), is refused too.
    for given in [scopes(&["a", "z"]), stanna_keys::Scopes::unscoped()] {
        let change = KeyChanges {
            scopes: Some(given),
            ..KeyChanges::default()
        };
        assert!(matches!(
            store
                .update(&caller, &inside.key_id, change, t(7), &by_admin())
                .await,
            Err(StoreError::ScopeEscalation { .. })
        ));
    }
    // Within: changed, rotated (the replacement keeps the scopes), deleted.
    let widened = KeyChanges {
        scopes: Some(scopes(&["a", "b"])),
        ..KeyChanges::default()
    };
    let changed = store
        .update(&caller, &inside.key_id, widened, t(8), &by_admin())
        .await
        .unwrap();
    assert_eq!(changed.scopes, scopes(&["a", "b"]));
    let (_, fresh) = new_key("ws1", "alice", "x");
    let secret = NewKeySecret {
        key_id: fresh.key().key_id(),
        preview: fresh.key().preview(),
        key_hash: "$argon2id$placeholder".to_owned(),
    };
    let (replacement, _) = store
        .rotate(
            &caller,
            &inside.key_id,
            secret,
            t(9),
            None,
            t(9),
            &by_admin(),
        )
        .await
        .unwrap();
    assert_eq!(replacement.scopes, scopes(&["a", "b"]));
    store
        .delete(&caller, &replacement.key_id, t(10), &by_admin())
        .await
        .unwrap();
    // An unscoped caller (an admin) is held to nothing.
    let admin = scope("ws1", None);
    let freed = KeyChanges {
        scopes: Some(stanna_keys::Scopes::unscoped()),
        ..KeyChanges::default()
    };
    let freed = store
        .update(&admin, &wider.key_id, freed, t(11), &by_admin())
        .await
        .unwrap();
    assert!(freed.scopes.is_unscoped());
    store
        .delete(&admin, &unscoped.key_id, t(12), &by_admin())
        .await
        .unwrap();
}

/// Every page of a listing under `filter`, in order.
async fn list_all(
    store: &KeyStore,
    s: &Scope,
    filter: &KeyFilter,
    size: u32,
    now: SystemTime,
) -> Vec<stanna_store::KeyRecord> {
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(
                s,
                PageRequest {
                    size,
                    after,
                    filter: filter.clone(),
                },
                now,
            )
            .await
            .unwrap();
        assert!(page.keys.len() <= size as usize);
        seen.extend(page.keys);
        match page.next {
            Some(next) => after = Some(next),
            None => return seen,
        }
    }
}

async fn filtered_listings_find_exactly_the_matching_keys_across_pages(store: KeyStore) {
    let names = [
        "Production Dashboard",
        "PRODUCTION backup",
        "staging",
        "50% off campaign",
        "5000 offers",
        "under_score",
        "underXscore",
        "Été à Paris",
        "ÉTÉ À PARIS",
        "été",
    ];
    let s = scope("ws1", None);
    let mut keys = Vec::new();
    for i in 0..120u64 {
        let name = format!("{} {i}", names[i as usize % names.len()]);
        let (key, _) = new_key("ws1", if i % 3 == 0 { "bob" } else { "alice" }, &name);
        keys.push(
            store
                .create(key, None, t(i / 4), &by_admin())
                .await
                .unwrap(),
        );
    }
    // A deleted key and another workspace's key never show up, whatever matches.
    let (gone, _) = new_key("ws1", "alice", "production gone");
    let gone = store.create(gone, None, t(1), &by_admin()).await.unwrap();
    store
        .delete(&s, &gone.key_id, t(2), &by_admin())
        .await
        .unwrap();
    let (other, _) = new_key("ws2", "alice", "production elsewhere");
    store.create(other, None, t(1), &by_admin()).await.unwrap();
    // Every fifth key is inactive; key i of the first 60 was last used on day 40 + i.
    for key in keys.iter().step_by(5) {
        let off = KeyChanges {
            status: Some(KeyStatus::Inactive),
            ..KeyChanges::default()
        };
        store
            .update(&s, &key.key_id, off, t(200), &by_admin())
            .await
            .unwrap();
    }
    let day = 86_400;
    let uses: Vec<_> = keys[..60]
        .iter()
        .enumerate()
        .map(|(i, k)| (k.key_id, t((40 + i as u64) * day)))
        .collect();
    store.record_last_used(&uses).await.unwrap();
    let keys: Vec<_> = {
        let mut fresh = Vec::new();
        for k in &keys {
            fresh.push(store.get(&s, &k.key_id).await.unwrap());
        }
        fresh
    };
    let now = t(100 * day);

    let check = |filter: KeyFilter, expected: Vec<&stanna_store::KeyRecord>| {
        let store = store.clone();
        let s = s.clone();
        let mut expected: Vec<_> = expected.iter().map(|k| (k.created_at, k.key_id)).collect();
        expected.sort_by(|a, b| b.cmp(a));
        async move {
            for size in [1, 7, 100] {
                let got: Vec<_> = list_all(&store, &s, &filter, size, now)
                    .await
                    .iter()
                    .map(|k| (k.created_at, k.key_id))
                    .collect();
                assert_eq!(got, expected, "{filter:?} in pages of {size}");
            }
        }
    };
    let named = |text: &str| KeyFilter {
        name_contains: Some(text.to_owned()),
        ..KeyFilter::default()
    };
    let with_name = |needle: &str| -> Vec<&stanna_store::KeyRecord> {
        keys.iter()
            .filter(|k| k.name.as_str().to_lowercase().contains(needle))
            .collect()
    };
    check(named("production"), with_name("production")).await;
    assert_eq!(with_name("production").len(), 24);
    check(named("PrOdUcTiOn DASH"), with_name("production dash")).await;
    // `%` and `_` are plain characters, not wildcards.
    check(named("50%"), with_name("50%")).await;
    assert_eq!(with_name("50%").len(), 12);
    check(named("under_"), with_name("under_")).await;
    assert_eq!(with_name("under_").len(), 12);
    // Case folds beyond ASCII, on both databases.
    check(named("ÉTÉ"), with_name("été")).await;
    assert_eq!(with_name("été").len(), 36);
    check(named("nothing like it"), Vec::new()).await;

    let inactive = KeyFilter {
        status: Some(KeyStatus::Inactive),
        ..KeyFilter::default()
    };
    check(
        inactive.clone(),
        keys.iter()
            .filter(|k| k.status == KeyStatus::Inactive)
            .collect(),
    )
    .await;
    // Not used for 30 days on day 100: last used before day 70 (30 keys), or never used and
    // created before it (the other 60, all created in the first minute).
    let cutoff = now - Duration::from_secs(30 * day);
    let unused = |k: &&stanna_store::KeyRecord| k.last_used_at.unwrap_or(k.created_at) < cutoff;
    let stale = KeyFilter {
        unused_for_days: Some(30),
        ..KeyFilter::default()
    };
    check(stale.clone(), keys.iter().filter(unused).collect()).await;
    assert_eq!(keys.iter().filter(unused).count(), 90);
    // Every filter at once, one user.
    let all = KeyFilter {
        name_contains: Some("production".to_owned()),
        status: Some(KeyStatus::Active),
        unused_for_days: Some(30),
    };
    let alice = scope("ws1", Some("alice"));
    let mut expected: Vec<_> = keys
        .iter()
        .filter(|k| k.user.as_str() == "alice")
        .filter(|k| k.status == KeyStatus::Active)
        .filter(|k| k.name.as_str().to_lowercase().contains("production"))
        .filter(unused)
        .map(|k| k.key_id)
        .collect();
    expected.sort();
    let mut got: Vec<_> = list_all(&store, &alice, &all, 3, now)
        .await
        .iter()
        .map(|k| k.key_id)
        .collect();
    got.sort();
    assert!(!expected.is_empty());
    assert_eq!(got, expected);

    // The cutoff is the first page's: a later page asked for 60 days later still means "not used
    // since day 70" (recomputed, it would take in all 120 keys).
    let first = store
        .list(
            &s,
            PageRequest {
                size: 10,
                after: None,
                filter: stale.clone(),
            },
            now,
        )
        .await
        .unwrap();
    let later = store
        .list(
            &s,
            PageRequest {
                size: 200,
                after: first.next,
                filter: stale.clone(),
            },
            now + Duration::from_secs(60 * day),
        )
        .await
        .unwrap();
    assert_eq!(first.keys.len() + later.keys.len(), 90);

    // A token continues only its own listing.
    for (other_scope, other_filter) in [
        (s.clone(), KeyFilter::default()),
        (s.clone(), named("productio")),
        (scope("ws2", None), stale.clone()),
        (scope("ws1", Some("alice")), stale.clone()),
        (s.clone(), inactive.clone()),
    ] {
        let refused = store
            .list(
                &other_scope,
                PageRequest {
                    size: 10,
                    after: first.next,
                    filter: other_filter.clone(),
                },
                now,
            )
            .await;
        assert!(
            matches!(refused, Err(StoreError::PageTokenMismatch)),
            "{other_scope:?} {other_filter:?}: {refused:?}"
        );
    }
}

/// Keys stored before name search (migration 7) are found by it once it is applied: the
/// migration folds every existing name, across several of its batches.
async fn the_search_migration_folds_the_names_of_existing_keys(store: KeyStore) {
    use sea_orm::ConnectionTrait;
    use sea_orm_migration::MigratorTrait;
    let db = store.connection();
    // Back to before migration 7 (the change feed index's 10, the audit log's 9 and usage's 8
    // go first).
    stanna_store::migration::Migrator::down(db, Some(4))
        .await
        .unwrap();
    // 2 500 keys written by the previous schema (no `name_folded`), in one statement.
    let rows: Vec<String> = (0..2500)
        .map(|i| {
            let name = if i % 5 == 0 { "ÉTÉ Équipe" } else { "Other key" };
            format!(
                "('{i:0>12}', 'ws1', 'alice', '{name} {i}', 'sk-0000...0000', 'h', 'active', {i}, {i})"
            )
        })
        .collect();
    db.execute_unprepared(&format!(
        "INSERT INTO api_keys (key_id, workspace_id, user_id, name, preview, key_hash, status, \
         created_at, updated_at) VALUES {}",
        rows.join(", ")
    ))
    .await
    .unwrap();
    stanna_store::migration::migrate(db).await.unwrap();
    assert_eq!(applied_migrations(&store).await, MIGRATIONS);
    let found = list_all(
        &store,
        &scope("ws1", None),
        &KeyFilter {
            name_contains: Some("été équipe".to_owned()),
            ..KeyFilter::default()
        },
        100,
        t(0),
    )
    .await;
    assert_eq!(found.len(), 500);
    assert!(
        found
            .iter()
            .all(|k| k.name.as_str().starts_with("ÉTÉ Équipe"))
    );
}
