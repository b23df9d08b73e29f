//! Verify as its callers see it: keys stored in a real store (SQLite; PostgreSQL where a test
//! needs a database that can go away) with real argon2id hashes, the quota decided by the real
//! algorithm in process or in a Redis of the test's own, time injected where a test is about time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use stanna_auth_check::{
    FailMode, HashCheck, QuotaConnection, Verifier, VerifierSettings, VerifyCode, VerifyError,
};
use stanna_keys::{
    GeneratedKey, HashParams, KeyHasher, KeyId, KeyName, KeyStatus, PresentedKey, UserId,
    WindowLimit, WorkspaceId,
};
use stanna_quota::{QuotaBackend, RedisBackend, RedisBackendConfig};
use stanna_store::{KeyChanges, KeyStore, LimitOverrides, NewKey, NewKeySecret, Scope};
use stanna_testkit::{ManualClock, OwnRedis, TcpProxy, TempDir};

mod support;
use support::{LocalQuota, in_memory_quota, settings};

/// A store, a verifier over it, and the test's clock.
struct Fixture {
    store: KeyStore,
    verifier: Verifier,
    clock: ManualClock,
    _dir: Option<TempDir>,
}

/// The actor of the tests' own changes: an admin named `test` (the audit log is tested in
/// `crates/store/tests/audit.rs`).
fn by_admin() -> stanna_store::AuditContext {
    stanna_store::AuditContext::admin("test", "test")
}

async fn fixture() -> Fixture {
    fixture_with(settings(), in_memory_quota()).await
}

async fn fixture_with(settings: VerifierSettings, quota: QuotaConnection) -> Fixture {
    let dir = TempDir::new();
    let store = KeyStore::connect(&dir.sqlite_url()).await.unwrap();
    let mut f = fixture_on(store, settings, quota, None);
    f._dir = Some(dir);
    f
}

fn fixture_on(
    store: KeyStore,
    settings: VerifierSettings,
    quota: QuotaConnection,
    hash_check: Option<Arc<dyn HashCheck>>,
) -> Fixture {
    let clock = ManualClock::new();
    let mut builder = Verifier::builder(store.clone(), quota, settings).clock(clock.as_clock());
    if let Some(check) = hash_check {
        builder = builder.hash_check(check);
    }
    Fixture {
        store,
        verifier: builder.build(),
        clock,
        _dir: None,
    }
}

fn scope() -> Scope {
    Scope::new(WorkspaceId::parse("wsA").unwrap(), None)
}

fn hasher() -> KeyHasher {
    KeyHasher::new(HashParams::insecure_fast_for_tests()).unwrap()
}

impl Fixture {
    /// Stores a new key as the registry does (generated, argon2id-hashed); returns its secret.
    async fn create(
        &self,
        limits: LimitOverrides,
        expires_at: Option<SystemTime>,
    ) -> (String, KeyId) {
        self.create_scoped(limits, expires_at, stanna_keys::Scopes::unscoped())
            .await
    }

    async fn create_scoped(
        &self,
        limits: LimitOverrides,
        expires_at: Option<SystemTime>,
        scopes: stanna_keys::Scopes,
    ) -> (String, KeyId) {
        let generated = GeneratedKey::generate().unwrap();
        let new = NewKey {
            key_id: generated.key().key_id(),
            preview: generated.key().preview(),
            key_hash: hasher().hash(generated.key()).unwrap(),
            workspace: WorkspaceId::parse("wsA").unwrap(),
            user: UserId::parse("alice").unwrap(),
            name: KeyName::parse("Production Dashboard").unwrap(),
            expires_at,
            rate_limits: limits,
            metadata: None,
            scopes,
        };
        let record = self
            .store
            .create(new, None, SystemTime::now(), &by_admin())
            .await
            .unwrap();
        (generated.into_secret(), record.key_id)
    }

    async fn key(&self) -> (String, KeyId) {
        self.create(LimitOverrides::default(), None).await
    }

    async fn set_status(&self, id: &KeyId, status: KeyStatus) {
        let changes = KeyChanges {
            status: Some(status),
            ..KeyChanges::default()
        };
        self.store
            .update(&scope(), id, changes, SystemTime::now(), &by_admin())
            .await
            .unwrap();
    }

    /// Rotates `id` with no grace; returns the replacement's secret.
    async fn rotate(&self, id: &KeyId) -> String {
        let generated = GeneratedKey::generate().unwrap();
        let secret = NewKeySecret {
            key_id: generated.key().key_id(),
            preview: generated.key().preview(),
            key_hash: hasher().hash(generated.key()).unwrap(),
        };
        let now = SystemTime::now();
        self.store
            .rotate(&scope(), id, secret, now, None, now, &by_admin())
            .await
            .unwrap();
        generated.into_secret()
    }

    async fn code(&self, key: &str, workspace: &str) -> VerifyCode {
        self.verifier
            .verify(key, workspace, 1)
            .await
            .expect("a verdict")
            .code
    }

    fn lookups(&self) -> u64 {
        self.verifier.stats().store_lookups.load(Ordering::SeqCst)
    }

    fn argon2_runs(&self) -> u64 {
        self.verifier.stats().argon2_runs.load(Ordering::SeqCst)
    }
}

fn big_limits() -> LimitOverrides {
    LimitOverrides {
        burst: Some(WindowLimit::new(10_000, Duration::from_secs(60)).unwrap()),
        hourly: Some(WindowLimit::new(10_000, Duration::from_secs(3600)).unwrap()),
    }
}

/// Attempts the failure budget allows since `started`: a burst of 5, then one per second (so a
/// slow machine running the test longer is not mistaken for a leak).
fn budget_allowance(started: Instant) -> u64 {
    5 + started.elapsed().as_secs() + 1
}

/// Another secret for the same (public) key id, with a valid checksum: what a guesser can build.
fn guessed_secret_for(key: &str, n: usize) -> String {
    let mut body = format!("{}{:0>32}", &key[..15], n);
    body.truncate(47);
    let sum = stanna_keys::format::checksum(body.as_bytes());
    format!("{body}{}", std::str::from_utf8(&sum).unwrap())
}

#[tokio::test]
async fn a_scope_refusal_is_decided_before_the_quota_and_charges_nothing() {
    use stanna_auth_check::Required;
    let f = fixture().await;
    let two = LimitOverrides {
        burst: Some(WindowLimit::new(2, Duration::from_secs(60)).unwrap()),
        hourly: None,
    };
    let scoped = stanna_keys::Scopes::parse(["a", "keys:read"]).unwrap();
    let (key, _) = f.create_scoped(two, None, scoped).await;
    let needs =
        |names: &'static [&'static str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let (lacking, held) = (needs(&["a", "b"]), needs(&["keys:read", "a"]));
    for _ in 0..5 {
        let refused = f
            .verifier
            .verify_with(&key, "", 1, Required::All(&lacking))
            .await
            .unwrap();
        assert_eq!(refused.code, VerifyCode::InsufficientScope);
        assert_eq!(refused.missing_scope, "b");
        assert!(refused.message.contains("\"b\""), "{}", refused.message);
        assert!(refused.windows.is_empty(), "no quota decision was made");
        let unmapped = f
            .verifier
            .verify_with(&key, "", 1, Required::UnscopedOnly)
            .await
            .unwrap();
        assert_eq!(unmapped.code, VerifyCode::InsufficientScope);
        assert_eq!(unmapped.missing_scope, "");
    }
    // None of the ten refusals was charged: the burst of 2 is all still there.
    for _ in 0..2 {
        let held = f
            .verifier
            .verify_with(&key, "", 1, Required::All(&held))
            .await
            .unwrap();
        assert_eq!(held.code, VerifyCode::Valid, "{}", held.message);
    }
    assert_eq!(f.code(&key, "").await, VerifyCode::RateLimited);
    // The workspace is checked first (a key of another workspace is that, whatever it holds).
    let other = f
        .verifier
        .verify_with(&key, "wsB", 1, Required::All(&lacking))
        .await
        .unwrap();
    assert_eq!(other.code, VerifyCode::WorkspaceMismatch);
    // An unscoped key has its user's full permissions: it meets every requirement.
    let (full, _) = f.key().await;
    for need in [
        Required::All(&lacking),
        Required::UnscopedOnly,
        Required::Nothing,
    ] {
        let verdict = f.verifier.verify_with(&full, "", 1, need).await.unwrap();
        assert_eq!(verdict.code, VerifyCode::Valid);
    }
}

#[tokio::test]
async fn every_verify_code_comes_from_a_real_scenario() {
    let f = fixture().await;
    let (key, id) = f.key().await;
    assert_eq!(f.code("", "").await, VerifyCode::Missing);
    assert_eq!(f.code("sk-notakey", "").await, VerifyCode::Malformed);
    assert_eq!(
        f.code(&guessed_secret_for(&key, 1), "").await,
        VerifyCode::NotFound,
        "wrong secret for a real id"
    );
    let unknown = stanna_keys::GeneratedKey::generate().unwrap().into_secret();
    assert_eq!(
        f.code(&unknown, "").await,
        VerifyCode::NotFound,
        "unknown id"
    );
    assert_eq!(f.code(&key, "").await, VerifyCode::Valid);
    assert_eq!(f.code(&key, "wsA").await, VerifyCode::Valid);
    assert_eq!(f.code(&key, "wsB").await, VerifyCode::WorkspaceMismatch);

    let (soon, _) = f
        .create(
            LimitOverrides::default(),
            Some(SystemTime::now() + Duration::from_secs(5)),
        )
        .await;
    assert_eq!(f.code(&soon, "").await, VerifyCode::Valid);
    f.clock.advance(Duration::from_secs(6));
    assert_eq!(f.code(&soon, "").await, VerifyCode::Expired);

    let tiny = LimitOverrides {
        burst: Some(WindowLimit::new(2, Duration::from_secs(60)).unwrap()),
        hourly: None,
    };
    let (limited, _) = f.create(tiny, None).await;
    assert_eq!(f.code(&limited, "").await, VerifyCode::Valid);
    assert_eq!(f.code(&limited, "").await, VerifyCode::Valid);
    let refused = f.verifier.verify(&limited, "", 1).await.unwrap();
    assert_eq!(refused.code, VerifyCode::RateLimited);
    assert!(
        refused
            .retry_after
            .is_some_and(|r| r <= Duration::from_secs(60)),
        "retry_after within the window"
    );
    assert!(refused.key.is_some(), "identity filled on RATE_LIMITED");

    f.set_status(&id, KeyStatus::Inactive).await;
    f.verifier.poll_changes().await.unwrap();
    assert_eq!(f.code(&key, "").await, VerifyCode::Inactive);
}

/// The cache is keyed by key id but a hit needs the digest of the very key that verified: a
/// guessed secret for a cached id is a miss, checked with argon2 and refused, and the real key
/// stays cached.
#[tokio::test]
async fn a_guessed_secret_for_a_cached_key_id_is_refused() {
    let f = fixture().await;
    let (key, _) = f.key().await;
    assert_eq!(f.code(&key, "").await, VerifyCode::Valid);
    let runs = f.argon2_runs();
    assert_eq!(
        f.code(&guessed_secret_for(&key, 3), "").await,
        VerifyCode::NotFound
    );
    assert_eq!(
        f.argon2_runs(),
        runs + 1,
        "the guess was checked, not served from the cache"
    );
    assert_eq!(f.code(&key, "").await, VerifyCode::Valid);
    assert_eq!(f.argon2_runs(), runs + 1, "the real key is still cached");
}

#[tokio::test]
async fn a_workspace_mismatch_carries_the_identity() {
    let f = fixture().await;
    let (key, id) = f.key().await;
    let verdict = f.verifier.verify(&key, "wsB", 1).await.unwrap();
    assert_eq!(verdict.code, VerifyCode::WorkspaceMismatch);
    let who = verdict.key.expect("identity filled");
    assert_eq!(
        (who.key_id, who.workspace(), who.user(), who.name()),
        (id, "wsA", "alice", "Production Dashboard")
    );
    assert!(
        verdict.windows.is_empty(),
        "no quota charged for a mismatch"
    );
}

#[tokio::test]
async fn a_malformed_key_makes_no_store_call() {
    let f = fixture().await;
    let (key, _) = f.key().await;
    let mut typo = key.clone().into_bytes();
    typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
    for bad in [
        String::from_utf8(typo).unwrap(),
        key[..52].to_owned(),
        format!("{key} "),
        "Bearer sk-x".to_owned(),
    ] {
        let verdict = f.verifier.verify(&bad, "", 1).await.unwrap();
        assert_eq!(verdict.code, VerifyCode::Malformed, "{}", verdict.message);
    }
    // A pasted key with a leading space or quotes is told so, not "wrong prefix".
    for (bad, says) in [
        (format!(" {key}"), "character 1 of the key is whitespace"),
        (format!("\"{key}\""), "quote"),
    ] {
        let verdict = f.verifier.verify(&bad, "", 1).await.unwrap();
        assert_eq!(verdict.code, VerifyCode::Malformed, "{}", verdict.message);
        assert!(
            verdict.message.contains(says),
            "{says:?} in {:?}",
            verdict.message
        );
    }
    assert_eq!(f.lookups(), 0, "no store lookups for malformed keys");
}

/// A cost above the key's smallest limit (burst, 100) can never be admitted: a bad request
/// naming `cost`, answered without a quota call (not UNAVAILABLE, which fail-open would then
/// have ignored), and charging nothing — the whole burst is still there after it.
#[tokio::test]
async fn a_cost_no_window_could_admit_is_invalid_argument_and_charges_nothing() {
    let f = fixture().await;
    let (key, _) = f.key().await;
    let err = f.verifier.verify(&key, "", 101).await.unwrap_err();
    match &err {
        VerifyError::InvalidArgument { field, reason } => {
            assert_eq!(*field, "cost");
            assert!(reason.contains("burst limit of 100"), "{reason}");
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    let verdict = f.verifier.verify(&key, "", 100).await.unwrap();
    assert_eq!(verdict.code, VerifyCode::Valid, "{}", verdict.message);
    let verdict = f.verifier.verify(&key, "", 1).await.unwrap();
    assert_eq!(verdict.code, VerifyCode::RateLimited, "{}", verdict.message);
}

#[tokio::test]
async fn a_bad_workspace_id_is_invalid_argument() {
    let f = fixture().await;
    let (key, _) = f.key().await;
    let err = f.verifier.verify(&key, "ws/../x", 1).await.unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::InvalidArgument {
                field: "workspace_id",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_thousand_wrong_secrets_for_a_real_key_id_run_argon2_only_within_the_failure_budget() {
    let f = fixture().await;
    let (key, _) = f.key().await;
    let started = Instant::now();
    let tasks: Vec<_> = (0..1000)
        .map(|n| {
            let (verifier, guess) = (f.verifier.clone(), guessed_secret_for(&key, n));
            tokio::spawn(async move { verifier.verify(&guess, "", 1).await.unwrap().code })
        })
        .collect();
    let mut limited = 0;
    for task in tasks {
        match task.await.unwrap() {
            VerifyCode::NotFound => {}
            VerifyCode::RateLimited => limited += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    let runs = f.argon2_runs();
    let allowance = budget_allowance(started);
    assert!(
        runs <= allowance,
        "argon2 ran {runs} times for 1000 guesses; the budget allows {allowance}"
    );
    assert!(
        limited >= 1000 - allowance,
        "the rest are refused without argon2 ({limited} refused)"
    );
}

#[tokio::test]
async fn a_thousand_concurrent_verifies_of_a_new_key_run_argon2_exactly_once() {
    let f = fixture().await;
    let (key, _) = f.create(big_limits(), None).await;
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (verifier, key) = (f.verifier.clone(), key.clone());
            tokio::spawn(async move { verifier.verify(&key, "", 1).await.unwrap().code })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), VerifyCode::Valid);
    }
    assert_eq!(
        f.argon2_runs(),
        1,
        "one argon2 run shared by every concurrent request"
    );
}

#[tokio::test]
async fn a_warm_verify_makes_no_store_call_and_no_argon2_run() {
    let f = fixture().await;
    let (key, _) = f.create(big_limits(), None).await;
    assert_eq!(f.code(&key, "").await, VerifyCode::Valid);
    let (lookups, runs) = (f.lookups(), f.argon2_runs());
    for _ in 0..200 {
        assert_eq!(f.code(&key, "").await, VerifyCode::Valid);
    }
    assert_eq!(
        (f.lookups(), f.argon2_runs()),
        (lookups, runs),
        "the warm path touched the store or argon2"
    );
}

/// Made-up ids cost the store nothing: 10 000 random well-formed keys (valid checksums, ids no
/// store holds — what anyone can build, ids being public) make no store lookup and no argon2
/// run. The first ones take the early polls' burst (ten) and are refused as not found after
/// theirs; the rest, finding no early poll left (or joining a running one), are UNAVAILABLE —
/// "retry", never "invalid", since a key created a moment ago could be among them.
#[tokio::test]
async fn random_well_formed_ids_make_no_store_lookup() {
    let f = fixture().await;
    let (key, _) = f.key().await;
    assert_eq!(f.code(&key, "").await, VerifyCode::Valid);
    let (lookups, runs) = (f.lookups(), f.argon2_runs());
    let stats = f.verifier.stats();
    let early = stats.early_polls.load(Ordering::SeqCst);
    let tasks: Vec<_> = (0..10_000)
        .map(|_| {
            let verifier = f.verifier.clone();
            let made_up = GeneratedKey::generate().unwrap().into_secret();
            tokio::spawn(async move { verifier.verify(&made_up, "", 1).await })
        })
        .collect();
    let (mut not_found, mut unavailable) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(verdict) if verdict.code == VerifyCode::NotFound => not_found += 1,
            Err(VerifyError::Unavailable(_)) => unavailable += 1,
            other => panic!("a made-up key answered {other:?}"),
        }
    }
    assert_eq!(f.lookups(), lookups, "no store lookup for a made-up id");
    assert_eq!(f.argon2_runs(), runs, "no argon2 run for a made-up id");
    let polls = stats.early_polls.load(Ordering::SeqCst) - early;
    assert!(
        (1..=10).contains(&polls),
        "the early polls' burst at most: {polls}"
    );
    assert!(
        not_found >= 1,
        "those that polled are told the key does not exist"
    );
    assert_eq!(not_found + unavailable, 10_000);
    assert_eq!(stats.unknown_ids.load(Ordering::SeqCst), not_found);
    // A key of the set is still verified as before.
    assert_eq!(f.code(&key, "").await, VerifyCode::Valid);
}

/// A key created after an auth-check loaded its set (by any registry: here straight in the
/// shared store, behind two auth-checks' backs) verifies at both on its first request: the miss
/// waits for a poll that started after it arrived, so it is never called invalid on the way.
#[tokio::test]
async fn a_key_created_after_the_load_verifies_at_every_auth_check_on_its_first_request() {
    let f = fixture().await;
    let other = fixture_on(f.store.clone(), settings(), in_memory_quota(), None);
    f.verifier.poll_changes().await.unwrap();
    other.verifier.poll_changes().await.unwrap();
    assert_eq!(f.verifier.known_key_ids(), 0);
    let (key, _) = f.key().await;
    assert_eq!(f.code(&key, "").await, VerifyCode::Valid);
    assert_eq!(other.code(&key, "").await, VerifyCode::Valid);
    assert_eq!(f.verifier.known_key_ids(), 1);
    // Deleted, it leaves the set with the next poll: refused without a lookup from then on.
    f.store
        .delete(
            &scope(),
            &KeyId::parse(&key[3..15]).unwrap(),
            SystemTime::now(),
            &by_admin(),
        )
        .await
        .unwrap();
    f.verifier.poll_changes().await.unwrap();
    assert_eq!(f.verifier.known_key_ids(), 0);
    let lookups = f.lookups();
    assert_eq!(f.code(&key, "").await, VerifyCode::NotFound);
    assert_eq!(f.lookups(), lookups);
}

/// A deleted key used again and again — a client never told, or a tester replaying it — is
/// invalid every time, at any rate: its deletion is remembered, so no early poll is spent on it
/// and it never turns into "retry" (found by schemathesis, which replays keys it saw deleted).
#[tokio::test]
async fn a_deleted_key_tried_a_thousand_times_at_once_is_invalid_every_time_without_a_poll() {
    let f = fixture().await;
    let (key, _) = f.key().await;
    assert_eq!(f.code(&key, "").await, VerifyCode::Valid);
    f.store
        .delete(
            &scope(),
            &KeyId::parse(&key[3..15]).unwrap(),
            SystemTime::now(),
            &by_admin(),
        )
        .await
        .unwrap();
    f.verifier.poll_changes().await.unwrap();
    let stats = f.verifier.stats();
    let (early, lookups) = (stats.early_polls.load(Ordering::SeqCst), f.lookups());
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (verifier, key) = (f.verifier.clone(), key.clone());
            tokio::spawn(async move { verifier.verify(&key, "", 1).await })
        })
        .collect();
    for task in tasks {
        match task.await.unwrap() {
            Ok(verdict) => assert_eq!(verdict.code, VerifyCode::NotFound),
            Err(err) => panic!("a deleted key answered {err:?}"),
        }
    }
    assert_eq!(
        stats.early_polls.load(Ordering::SeqCst),
        early,
        "no early poll"
    );
    assert_eq!(f.lookups(), lookups, "no store lookup");
}

/// The mechanism, deterministically: a change reaches the cache by the next poll, not before.
#[tokio::test]
async fn a_change_poll_delivers_deactivation_deletion_and_rotation() {
    let f = fixture().await;
    let (deactivated, d_id) = f.key().await;
    let (deleted, x_id) = f.key().await;
    let (rotated, r_id) = f.key().await;
    for key in [&deactivated, &deleted, &rotated] {
        assert_eq!(f.code(key, "").await, VerifyCode::Valid);
    }
    // The poll reads from 20 s before the newest change it has seen, so it also sees the three
    // creations: 3 created + 1 deactivated + 1 deleted + 1 rotated out + 1 replacement = 7
    // changes, each key once at its newest state (the feed holds one row per key): 4 rows.
    f.set_status(&d_id, KeyStatus::Inactive).await;
    f.store
        .delete(&scope(), &x_id, SystemTime::now(), &by_admin())
        .await
        .unwrap();
    let replacement = f.rotate(&r_id).await;
    // Until the poll, the cache still holds the old states: this is what the poll is for.
    assert_eq!(f.code(&deactivated, "").await, VerifyCode::Valid);
    let seen = f.verifier.poll_changes().await.unwrap();
    assert_eq!(seen, 4, "the three keys and the replacement, each once");
    assert_eq!(f.code(&deactivated, "").await, VerifyCode::Inactive);
    assert_eq!(f.code(&deleted, "").await, VerifyCode::NotFound);
    // The registry stamped the old key's expiry with the real clock; move ours past it.
    f.clock.advance(Duration::from_secs(2));
    assert_eq!(f.code(&rotated, "").await, VerifyCode::Expired);
    assert_eq!(f.code(&replacement, "").await, VerifyCode::Valid);
}

/// Last-used times are batched: however many verifies, one write per key per flush, stamped with
/// the time of the newest use; a flush with nothing pending writes nothing.
#[tokio::test]
async fn last_used_is_written_once_per_key_per_flush() {
    let f = fixture().await;
    let (key, id) = f.create(big_limits(), None).await;
    for _ in 0..500 {
        assert_eq!(f.code(&key, "").await, VerifyCode::Valid);
    }
    let used_at = (f.clock.as_clock())();
    assert_eq!(f.verifier.flush_usage().await.unwrap().1, 1, "one row");
    assert_eq!(f.verifier.last_used_writes(), 1);
    let stored = f.store.get(&scope(), &id).await.unwrap();
    assert_eq!(
        stored.last_used_at.map(micros),
        Some(micros(used_at)),
        "last_used_at is the test clock's time of the last use"
    );
    assert_eq!(
        f.verifier.flush_usage().await.unwrap(),
        (0, 0),
        "an empty flush writes nothing"
    );
    f.clock.advance(Duration::from_secs(7));
    for _ in 0..500 {
        assert_eq!(f.code(&key, "").await, VerifyCode::Valid);
    }
    assert_eq!(f.verifier.flush_usage().await.unwrap().1, 1);
    assert_eq!(f.verifier.last_used_writes(), 2, "two flushes, two writes");
    let stored = f.store.get(&scope(), &id).await.unwrap();
    assert_eq!(
        stored.last_used_at.map(micros),
        Some(micros((f.clock.as_clock())()))
    );
}

/// Usage counts what each request of a known key came to — admitted, rate-limited, inactive,
/// expired, out of workspace — one row per key and hour, written in one flush; ids that do not
/// exist leave nothing; rows past the 30-day retention are purged.
#[tokio::test]
async fn usage_counts_each_outcome_per_key_and_hour_and_is_purged_after_30_days() {
    let f = fixture().await;
    let limited = LimitOverrides {
        burst: Some(WindowLimit::new(5, Duration::from_secs(60)).unwrap()),
        hourly: None,
    };
    let (a, a_id) = f.create(limited, None).await;
    let soon = (f.clock.as_clock())() + Duration::from_secs(10);
    let (b, b_id) = f.create(big_limits(), Some(soon)).await;
    for _ in 0..8 {
        f.code(&a, "").await;
    }
    assert_eq!(f.code(&a, "wsB").await, VerifyCode::WorkspaceMismatch);
    assert_eq!(f.code(&a, "wsB").await, VerifyCode::WorkspaceMismatch);
    assert_eq!(f.code(&b, "").await, VerifyCode::Valid);
    f.clock.advance(Duration::from_secs(20));
    assert_eq!(f.code(&b, "").await, VerifyCode::Expired);
    assert_eq!(f.code(&b, "").await, VerifyCode::Expired);
    f.set_status(&a_id, KeyStatus::Inactive).await;
    f.verifier.poll_changes().await.unwrap();
    assert_eq!(f.code(&a, "").await, VerifyCode::Inactive);
    // Not keys of ours: nothing to count.
    let stranger = GeneratedKey::generate().unwrap().into_secret();
    assert_eq!(f.code(&stranger, "").await, VerifyCode::NotFound);
    assert_eq!(f.code("sk-nonsense", "").await, VerifyCode::Malformed);

    let (rows, uses) = f.verifier.flush_usage().await.unwrap();
    assert_eq!(
        (rows, uses),
        (2, 2),
        "one row per key and hour; two keys used"
    );
    let usage = f
        .store
        .usage(&scope(), &[a_id, b_id], 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(usage.len(), 2);
    let counts = |i: usize| {
        usage[i]
            .1
            .iter()
            .fold(stanna_store::UsageCounts::default(), |mut t, r| {
                t.add(&r.counts);
                t
            })
    };
    assert_eq!(usage[0].0, a_id);
    assert_eq!(
        counts(0).by_outcome,
        [5, 3, 1, 0, 2],
        "a: allowed, limited, inactive, expired, forbidden"
    );
    assert_eq!(usage[1].0, b_id);
    assert_eq!(counts(1).by_outcome, [1, 0, 0, 2, 0]);
    // Another workspace sees none of it.
    let other = Scope::new(WorkspaceId::parse("wsB").unwrap(), None);
    assert!(
        f.store
            .usage(&other, &[a_id], 0, i64::MAX)
            .await
            .unwrap()
            .is_empty()
    );
    // A second flush adds to the same row (a refusal that spends no quota).
    assert_eq!(f.code(&a, "wsB").await, VerifyCode::Inactive);
    f.set_status(&a_id, KeyStatus::Active).await;
    f.verifier.poll_changes().await.unwrap();
    assert_eq!(f.code(&a, "wsB").await, VerifyCode::WorkspaceMismatch);
    f.verifier.flush_usage().await.unwrap();
    let usage = f.store.usage(&scope(), &[a_id], 0, i64::MAX).await.unwrap();
    assert_eq!(usage[0].1.len(), 1, "one hour, one row");
    assert_eq!(usage[0].1[0].counts.by_outcome, [5, 3, 2, 0, 3]);

    // 31 days on, the next flush purges them.
    f.clock.advance(Duration::from_secs(31 * 86_400));
    f.verifier.flush_usage().await.unwrap();
    let usage = f
        .store
        .usage(&scope(), &[a_id, b_id], 0, i64::MAX)
        .await
        .unwrap();
    assert!(usage.iter().all(|(_, rows)| rows.is_empty()), "{usage:?}");
}

fn micros(t: SystemTime) -> u64 {
    stanna_keys::time::micros_since_epoch(t)
}

#[tokio::test]
async fn quota_unreachable_fails_open_or_closed_as_configured() {
    let dead = || QuotaConnection::from(stanna_grpc::lazy_channel("http://127.0.0.1:1").unwrap());
    let open = fixture_with(settings(), dead()).await;
    let (key, _) = open.key().await;
    let verdict = open.verifier.verify(&key, "", 1).await.unwrap();
    assert_eq!(verdict.code, VerifyCode::Valid, "fail-open allows");
    assert!(
        verdict.windows.is_empty(),
        "and reports no windows (no decision was made)"
    );
    assert_eq!(
        open.verifier
            .stats()
            .fail_open
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "counted"
    );

    let closed = fixture_with(
        VerifierSettings {
            fail_mode: FailMode::Closed,
            ..settings()
        },
        dead(),
    )
    .await;
    let (key, _) = closed.key().await;
    assert!(
        matches!(
            closed.verifier.verify(&key, "", 1).await,
            Err(VerifyError::Unavailable(_))
        ),
        "fail-closed refuses"
    );
}

#[tokio::test]
async fn redis_stopped_mid_test_honours_the_fail_mode_and_recovers_without_a_restart() {
    let Some(mut redis) = OwnRedis::start(
        "redis_stopped_mid_test_honours_the_fail_mode_and_recovers_without_a_restart",
    ) else {
        return;
    };
    let backend = QuotaBackend::Redis(
        RedisBackend::connect_lazy(&RedisBackendConfig::new(redis.url())).unwrap(),
    );
    let quota = QuotaConnection::InProcess(Arc::new(LocalQuota(backend)));
    let f = fixture_with(
        VerifierSettings {
            fail_mode: FailMode::Closed,
            ..settings()
        },
        quota,
    )
    .await;
    let (key, _) = f.key().await;
    let before = f.verifier.verify(&key, "", 1).await.unwrap();
    assert_eq!(before.code, VerifyCode::Valid);
    assert_eq!(before.windows[0].remaining, 99);
    redis.stop();
    assert!(
        matches!(
            f.verifier.verify(&key, "", 1).await,
            Err(VerifyError::Unavailable(_))
        ),
        "closed: refused while Redis is down"
    );
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match f.verifier.verify(&key, "", 1).await {
            Ok(v) if v.code == VerifyCode::Valid && !v.windows.is_empty() => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("decisions did not resume: {other:?}"),
        }
    }
}

/// A Redis Cluster (three masters, three replicas, the test's own) loses the master holding a
/// key's quota state while two verifiers — one fail-closed, one fail-open, on the same key and
/// quota connection — keep verifying it every 10 ms: each honours its fail mode while the slot has
/// no master (closed refuses with `UNAVAILABLE`, open allows without windows), nothing panics, and
/// decisions resume by themselves once the replica is promoted, with no restart. Replication is
/// asynchronous, so the promoted replica may lack the newest admissions: the test measures how
/// many (the figure in docs/quota.md) and requires the count after failover to be consistent
/// with what the windows report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_master_killed_mid_load_honours_the_fail_mode_and_decisions_resume_after_failover()
 {
    let test = "a_cluster_master_killed_mid_load_honours_the_fail_mode_and_decisions_resume_after_failover";
    let Some(mut cluster) = stanna_testkit::OwnRedisCluster::start(test) else {
        return;
    };
    let backend = QuotaBackend::Redis(
        RedisBackend::connect_lazy(&RedisBackendConfig::new(cluster.seeds())).unwrap(),
    );
    let quota = || QuotaConnection::InProcess(Arc::new(LocalQuota(backend.clone())));
    let closed = fixture_with(
        VerifierSettings {
            fail_mode: FailMode::Closed,
            ..settings()
        },
        quota(),
    )
    .await;
    let open = fixture_on(closed.store.clone(), settings(), quota(), None);
    let (key, id) = closed.key().await;
    const BEFORE: u32 = 40;
    for i in 0..BEFORE {
        let v = closed.verifier.verify(&key, "", 1).await.unwrap();
        assert_eq!(
            (v.code, v.windows[0].remaining),
            (VerifyCode::Valid, 99 - i)
        );
    }
    let master = cluster.master_of(&format!("q2:{{{}}}", id.as_str()));
    let killed = Instant::now();
    cluster.kill(master);
    let (mut refused_closed, mut open_without_windows, mut open_charged) = (0, 0, 0i64);
    let resumed = loop {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "decisions did not resume within 30 s of the master's death"
        );
        match closed.verifier.verify(&key, "", 1).await {
            Err(VerifyError::Unavailable(_)) => refused_closed += 1,
            Ok(v) if v.code == VerifyCode::Valid && !v.windows.is_empty() => break v,
            other => panic!("fail-closed during a failover: {other:?}"),
        }
        let v = open.verifier.verify(&key, "", 1).await.unwrap();
        assert_eq!(v.code, VerifyCode::Valid, "fail-open allows");
        if v.windows.is_empty() {
            open_without_windows += 1;
        } else {
            // The slot's new master took over between the two calls: this one was charged.
            open_charged += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = killed.elapsed();
    assert!(
        refused_closed > 0 && open_without_windows > 0,
        "the slot had no master for a while: closed refused {refused_closed}, open allowed {open_without_windows} without windows"
    );
    // Every admission before the kill, plus the one that just resumed, unless the replica lost
    // some: then the windows report more room, by exactly what was lost.
    let lost = resumed.windows[0].remaining as i64 - (99 - BEFORE as i64) + open_charged;
    // Below zero only if a call reported as failed (its answer later than the timeout) was
    // charged on the new master after all: at most one per such call.
    assert!(
        (-(refused_closed as i64)..=i64::from(BEFORE)).contains(&lost),
        "remaining {} after {BEFORE} admissions before the failover",
        resumed.windows[0].remaining
    );
    // The rest of the minute's burst is admitted exactly, then refused.
    let mut admitted = 1;
    loop {
        let v = closed.verifier.verify(&key, "", 1).await.unwrap();
        if v.code != VerifyCode::Valid {
            assert_eq!(v.code, VerifyCode::RateLimited);
            break;
        }
        admitted += 1;
    }
    assert_eq!(
        admitted + BEFORE as i64 + open_charged,
        100 + lost,
        "after the failover the burst window admits exactly its limit plus what the replica lost"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while backend.ping().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "readiness (PING every master) did not come back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "FAILOVER: decisions resumed {} ms after the master was killed (cluster-node-timeout 1000 ms); \
         fail-closed refused {refused_closed}, fail-open allowed {open_without_windows} without windows meanwhile; \
         the promoted replica lacked {lost} of {BEFORE} admissions",
        took.as_millis()
    );
}

/// In the default fail-open mode a stopped Redis lets requests through, counted, with no windows
/// (so no rate-limit headers): there is no decision to report.
#[tokio::test]
async fn redis_stopped_in_fail_open_mode_allows_without_windows() {
    let Some(mut redis) = OwnRedis::start("redis_stopped_in_fail_open_mode_allows_without_windows")
    else {
        return;
    };
    let backend = QuotaBackend::Redis(
        RedisBackend::connect_lazy(&RedisBackendConfig::new(redis.url())).unwrap(),
    );
    let f = fixture_with(
        settings(),
        QuotaConnection::InProcess(Arc::new(LocalQuota(backend))),
    )
    .await;
    let (key, _) = f.key().await;
    assert_eq!(
        f.verifier.verify(&key, "", 1).await.unwrap().windows.len(),
        2
    );
    redis.stop();
    let verdict = f.verifier.verify(&key, "", 1).await.unwrap();
    assert_eq!(verdict.code, VerifyCode::Valid, "fail-open allows");
    assert!(verdict.windows.is_empty(), "and reports no windows");
    assert_eq!(f.verifier.stats().fail_open.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn store_unreachable_serves_cached_keys_until_the_stale_limit_and_refuses_uncached_ones() {
    let Some(database) = stanna_testkit::fresh_postgres_database(
        "store_unreachable_serves_cached_keys_until_the_stale_limit_and_refuses_uncached_ones",
    )
    .await
    else {
        return;
    };
    let url = database.url().to_owned();
    let proxy = TcpProxy::start(stanna_testkit::socket_addr_of(&url)).await;
    let through_proxy = stanna_testkit::with_host(&url, proxy.addr());
    let direct = KeyStore::connect(&url).await.unwrap();
    let proxied = KeyStore::connect(&through_proxy).await.unwrap();
    // Keys are written directly; only auth-check's store goes through the proxy.
    let mut f = fixture_on(proxied, settings(), in_memory_quota(), None);
    f.store = direct;
    let (cached, _) = f.key().await;
    let (uncached, _) = f.key().await;
    assert_eq!(f.code(&cached, "").await, VerifyCode::Valid);

    proxy.cut().await;
    assert!(
        f.verifier.poll_changes().await.is_err(),
        "the store is unreachable"
    );
    f.clock.advance(Duration::from_secs(20));
    assert_eq!(
        f.code(&cached, "").await,
        VerifyCode::Valid,
        "cached key verifies within the stale limit"
    );
    let uncached_verdict = f.verifier.verify(&uncached, "", 1).await;
    assert!(
        matches!(uncached_verdict, Err(VerifyError::Unavailable(_))),
        "uncached key: UNAVAILABLE at once, got {uncached_verdict:?}"
    );
    f.clock.advance(Duration::from_secs(11));
    assert!(
        matches!(
            f.verifier.verify(&cached, "", 1).await,
            Err(VerifyError::Unavailable(_))
        ),
        "past the stale limit: UNAVAILABLE"
    );

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(15);
    while f.verifier.poll_changes().await.is_err() {
        assert!(Instant::now() < deadline, "the store did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        f.code(&cached, "").await,
        VerifyCode::Valid,
        "recovered without a restart"
    );
    assert_eq!(f.code(&uncached, "").await, VerifyCode::Valid);
}

/// A hash check that holds every run at a gate until the test opens it, and counts how many run
/// at once: so a test can abandon callers while their argon2 run is really in progress.
struct GatedCheck {
    inner: KeyHasher,
    open: Mutex<bool>,
    opened: Condvar,
    running: AtomicUsize,
    most_at_once: AtomicUsize,
}

impl GatedCheck {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: hasher(),
            open: Mutex::new(false),
            opened: Condvar::new(),
            running: AtomicUsize::new(0),
            most_at_once: AtomicUsize::new(0),
        })
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

impl HashCheck for GatedCheck {
    fn check(&self, key: &PresentedKey, stored: &str) -> Result<bool, stanna_keys::HashError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
        drop(open);
        let result = self.inner.check(key, stored);
        self.running.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

/// Callers that give up (a reset connection, a short deadline) cannot free the argon2 permit or
/// the failure-budget token of a guess: each guess's verification runs to its end on its own
/// task. With one argon2 permit and the runs held at a gate, every caller is abandoned while its
/// run is in progress or queued for the permit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_guesses_still_spend_the_failure_budget() {
    let gate = GatedCheck::new();
    let dir = TempDir::new();
    let store = KeyStore::connect(&dir.sqlite_url()).await.unwrap();
    let settings = VerifierSettings {
        argon2_concurrency: 1,
        ..settings()
    };
    let mut f = fixture_on(store, settings, in_memory_quota(), Some(gate.clone()));
    f._dir = Some(dir);
    let (key, _) = f.key().await;
    // The owner's key is verified (and cached) before the guessing starts.
    let owner = {
        let (verifier, key) = (f.verifier.clone(), key.clone());
        tokio::spawn(async move { verifier.verify(&key, "", 1).await })
    };
    wait_until(|| gate.running.load(Ordering::SeqCst) == 1).await;
    gate.open();
    assert_eq!(owner.await.unwrap().unwrap().code, VerifyCode::Valid);
    *gate.open.lock().unwrap() = false;
    let runs_before = f.argon2_runs();

    let started = Instant::now();
    for n in 0..20 {
        let (verifier, guess) = (f.verifier.clone(), guessed_secret_for(&key, n));
        let attempt = tokio::spawn(async move { verifier.verify(&guess, "", 1).await });
        if n == 0 {
            // The first guess holds the one permit, inside argon2, when its caller gives up.
            wait_until(|| gate.running.load(Ordering::SeqCst) == 1).await;
        } else {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        attempt.abort();
    }
    let fresh = f
        .verifier
        .verify(&guessed_secret_for(&key, 99), "", 1)
        .await;
    assert_eq!(
        fresh.unwrap().code,
        VerifyCode::RateLimited,
        "the abandoned guesses spent the budget"
    );
    gate.open();
    wait_until(|| gate.running.load(Ordering::SeqCst) == 0).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let runs = f.argon2_runs() - runs_before;
    let allowance = budget_allowance(started);
    assert!(
        runs <= allowance,
        "20 abandoned guesses ran argon2 {runs} times; the budget allows {allowance}"
    );
    // The budget (5) is spent — `fresh` was refused — so five flights took a token; each must
    // have run argon2 to its end, also the four queued behind the permit when abandoned.
    assert!(
        runs >= 5,
        "the abandoned flights that spent the budget ran to their end: {runs} argon2 runs"
    );
    assert_eq!(
        gate.most_at_once.load(Ordering::SeqCst),
        1,
        "never more argon2 runs at once than STANNA_ARGON2_CONCURRENCY"
    );
    assert_eq!(
        f.code(&key, "").await,
        VerifyCode::Valid,
        "the owner's key still verifies"
    );
}

/// Polls `done` every millisecond, for at most 10 s.
async fn wait_until(done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The overlap each poll re-reads costs stamps, not rows: a change is read whole once, however
/// many polls see its stamp; the key's next change is read again.
#[tokio::test]
async fn a_change_is_read_whole_once_however_many_polls_overlap_it() {
    let f = fixture().await;
    let (key, id) = f.key().await;
    assert_eq!(f.code(&key, "").await, VerifyCode::Valid);
    f.verifier.poll_changes().await.unwrap();
    let rows = || f.verifier.stats().change_rows_read.load(Ordering::SeqCst);
    f.set_status(&id, KeyStatus::Inactive).await;
    let before = rows();
    assert_eq!(f.verifier.poll_changes().await.unwrap(), 1);
    assert_eq!(rows() - before, 1, "the change, read whole");
    assert_eq!(f.code(&key, "").await, VerifyCode::Inactive);
    for _ in 0..5 {
        assert_eq!(
            f.verifier.poll_changes().await.unwrap(),
            0,
            "applied already"
        );
    }
    assert_eq!(rows() - before, 1, "the overlap is re-read as stamps only");
    f.set_status(&id, KeyStatus::Active).await;
    assert_eq!(f.verifier.poll_changes().await.unwrap(), 1);
    assert_eq!(rows() - before, 2);
    assert_eq!(f.code(&key, "").await, VerifyCode::Valid);
}

/// A tombstone purged before this auth-check saw the deletion (it was cut off from the store for
/// longer than the retention) cannot keep the key alive: the feed then holds nothing about it,
/// but a cached state older than MAX_STATE_AGE is re-read, and the re-read finds no key.
#[tokio::test]
async fn a_deletion_whose_tombstone_was_purged_unseen_still_stops_the_key() {
    let f = fixture().await;
    let (deleted, deleted_id) = f.key().await;
    let (kept, _) = f.key().await;
    for key in [&deleted, &kept] {
        assert_eq!(f.code(key, "").await, VerifyCode::Valid);
    }
    f.verifier.poll_changes().await.unwrap();
    f.store
        .delete(&scope(), &deleted_id, SystemTime::now(), &by_admin())
        .await
        .unwrap();
    let purged = f
        .store
        .purge_deleted_keys(SystemTime::now() + Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(purged, 1);
    f.verifier.poll_changes().await.unwrap();
    assert_eq!(
        f.code(&deleted, "").await,
        VerifyCode::Valid,
        "the feed no longer holds the deletion: the cache still has the key"
    );
    f.clock
        .advance(stanna_auth_check::MAX_STATE_AGE + Duration::from_secs(1));
    assert_eq!(f.code(&deleted, "").await, VerifyCode::NotFound);
    assert_eq!(f.code(&kept, "").await, VerifyCode::Valid);
    assert_eq!(
        f.code(&deleted, "").await,
        VerifyCode::NotFound,
        "and stays so"
    );
}
