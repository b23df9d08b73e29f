//! Verify as its callers see it: keys made through the real registry core in a real store (SQLite;
//! PostgreSQL where a test needs a database that can go away), quota in process or in a Redis of
//! the test's own, time injected where a test is about time.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use stanna_auth_check::verifier::VerifyError;
use stanna_auth_check::{FailMode, Verifier, VerifierSettings};
use stanna_key_registry::Registry;
use stanna_key_registry::registry::CreateKey;
use stanna_keys::{
    HashParams, KeyHasher, KeyId, KeyName, KeyStatus, RateLimits, UserId, WindowLimit, WorkspaceId,
};
use stanna_proto::keys::v1::VerifyCode;
use stanna_proto::keys::v1::quota_server::QuotaServer;
use stanna_quota::{MemoryBackend, QuotaBackend, RedisBackend, RedisBackendConfig};
use stanna_quota_service::QuotaService;
use stanna_store::{KeyChanges, KeyStore, LimitOverrides, Scope};
use stanna_testkit::{ManualClock, OwnRedis, TcpProxy, TempDir};

struct Fixture {
    registry: Registry,
    verifier: Verifier,
    clock: ManualClock,
    _dir: Option<TempDir>,
}

fn settings() -> VerifierSettings {
    VerifierSettings {
        defaults: RateLimits::product_default(),
        cache_size: 1000,
        argon2_concurrency: 2,
        fail_mode: FailMode::Open,
        stale_if_error: Duration::from_secs(30),
        quota_timeout: Duration::from_secs(1),
    }
}

fn in_memory_quota() -> stanna_grpc::Transport {
    stanna_grpc::in_memory(QuotaServer::new(QuotaService::new(QuotaBackend::Memory(
        MemoryBackend::new(),
    ))))
}

async fn fixture() -> Fixture {
    fixture_with(settings(), in_memory_quota()).await
}

async fn fixture_with(settings: VerifierSettings, quota: stanna_grpc::Transport) -> Fixture {
    let dir = TempDir::new();
    let store = KeyStore::connect(&dir.sqlite_url()).await.unwrap();
    let mut f = fixture_on(store, settings, quota);
    f._dir = Some(dir);
    f
}

fn fixture_on(
    store: KeyStore,
    settings: VerifierSettings,
    quota: stanna_grpc::Transport,
) -> Fixture {
    let hasher = KeyHasher::new(HashParams::insecure_fast_for_tests()).unwrap();
    let registry = Registry::new(
        store.clone(),
        hasher,
        RateLimits::product_default(),
        1000,
        2,
    );
    let clock = ManualClock::new();
    let verifier = Verifier::new(store, quota, settings, clock.as_clock());
    Fixture {
        registry,
        verifier,
        clock,
        _dir: None,
    }
}

fn scope() -> Scope {
    Scope {
        workspace: WorkspaceId::parse("wsA").unwrap(),
        user: None,
    }
}

impl Fixture {
    async fn create(
        &self,
        limits: LimitOverrides,
        expires_at: Option<SystemTime>,
    ) -> (String, KeyId) {
        let created = self
            .registry
            .create_key(CreateKey {
                workspace: WorkspaceId::parse("wsA").unwrap(),
                user: UserId::parse("alice").unwrap(),
                name: KeyName::parse("Production Dashboard").unwrap(),
                expires_at,
                rate_limits: limits,
            })
            .await
            .unwrap();
        (created.secret, created.key.key_id)
    }

    async fn key(&self) -> (String, KeyId) {
        self.create(LimitOverrides::default(), None).await
    }

    async fn code(&self, key: &str, workspace: &str) -> VerifyCode {
        self.verifier
            .verify(key, workspace, 1)
            .await
            .expect("a verdict")
            .code
    }

    fn lookups(&self) -> u64 {
        self.verifier
            .stats()
            .store_lookups
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn argon2_runs(&self) -> u64 {
        self.verifier
            .stats()
            .argon2_runs
            .load(std::sync::atomic::Ordering::SeqCst)
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

    let off = KeyChanges {
        name: None,
        status: Some(KeyStatus::Inactive),
    };
    f.registry.update_key(&scope(), &id, off).await.unwrap();
    f.verifier.poll_changes().await.unwrap();
    assert_eq!(f.code(&key, "").await, VerifyCode::Inactive);
}

#[tokio::test]
async fn a_workspace_mismatch_carries_the_identity() {
    let f = fixture().await;
    let (key, id) = f.key().await;
    let verdict = f.verifier.verify(&key, "wsB", 1).await.unwrap();
    assert_eq!(verdict.code, VerifyCode::WorkspaceMismatch);
    let who = verdict.key.expect("identity filled");
    assert_eq!(
        (
            who.key_id,
            who.workspace.as_str(),
            who.user.as_str(),
            who.name.as_str()
        ),
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
    assert_eq!(f.lookups(), 0, "no store lookups for malformed keys");
}

#[tokio::test]
async fn a_bad_workspace_id_is_invalid_argument() {
    let f = fixture().await;
    let (key, _) = f.key().await;
    let err = f.verifier.verify(&key, "ws/../x", 1).await.unwrap_err();
    assert!(matches!(err, VerifyError::InvalidArgument(m) if m.starts_with("workspace_id:")));
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
    f.registry
        .update_key(
            &scope(),
            &d_id,
            KeyChanges {
                name: None,
                status: Some(KeyStatus::Inactive),
            },
        )
        .await
        .unwrap();
    f.registry.delete_key(&scope(), &x_id).await.unwrap();
    let replacement = f
        .registry
        .rotate_key(&scope(), &r_id, Duration::ZERO)
        .await
        .unwrap();
    // Until the poll, the cache still holds the old states: this is what the poll is for.
    assert_eq!(f.code(&deactivated, "").await, VerifyCode::Valid);
    let seen = f.verifier.poll_changes().await.unwrap();
    assert!(seen >= 4, "the poll saw the changes ({seen})");
    assert_eq!(f.code(&deactivated, "").await, VerifyCode::Inactive);
    assert_eq!(f.code(&deleted, "").await, VerifyCode::NotFound);
    // The registry stamped the old key's expiry with the real clock; move ours past it.
    f.clock.advance(Duration::from_secs(2));
    assert_eq!(f.code(&rotated, "").await, VerifyCode::Expired);
    assert_eq!(f.code(&replacement.secret, "").await, VerifyCode::Valid);
}

/// The promise, end to end with the background poll: a deleted or deactivated key is refused
/// within a second (polled until it holds, with a generous cap; the elapsed time is printed).
#[tokio::test]
async fn deleted_and_deactivated_keys_are_refused_within_a_second() {
    let dir = TempDir::new();
    let store = KeyStore::connect(&dir.sqlite_url()).await.unwrap();
    let hasher = KeyHasher::new(HashParams::insecure_fast_for_tests()).unwrap();
    let registry = Registry::new(
        store.clone(),
        hasher,
        RateLimits::product_default(),
        1000,
        2,
    );
    let verifier = Verifier::new(
        store,
        in_memory_quota(),
        settings(),
        Arc::new(SystemTime::now),
    );
    let _loops = stanna_auth_check::start(
        &verifier,
        &stanna_auth_check::Config::default_for_tests_with_poll(Duration::from_millis(250)),
    );
    let f = Fixture {
        registry,
        verifier,
        clock: ManualClock::new(),
        _dir: Some(dir),
    };
    let (deleted, x_id) = f.key().await;
    let (deactivated, d_id) = f.key().await;
    assert_eq!(f.code(&deleted, "").await, VerifyCode::Valid);
    assert_eq!(f.code(&deactivated, "").await, VerifyCode::Valid);
    let changed = Instant::now();
    f.registry.delete_key(&scope(), &x_id).await.unwrap();
    f.registry
        .update_key(
            &scope(),
            &d_id,
            KeyChanges {
                name: None,
                status: Some(KeyStatus::Inactive),
            },
        )
        .await
        .unwrap();
    let cap = Duration::from_secs(10);
    loop {
        let (a, b) = (f.code(&deleted, "").await, f.code(&deactivated, "").await);
        if a == VerifyCode::NotFound && b == VerifyCode::Inactive {
            println!("revocation took {:?}", changed.elapsed());
            break;
        }
        assert!(changed.elapsed() < cap, "still {a:?}/{b:?} after {cap:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Multi-threaded so the flusher really runs every 100 ms while the verifications go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_used_is_written_in_batches() {
    let f = fixture().await;
    let (key, id) = f.create(big_limits(), None).await;
    let flusher = f.verifier.clone();
    let flushing = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            flusher.flush_last_used().await.unwrap();
        }
    });
    for _ in 0..10_000 {
        assert_eq!(f.code(&key, "").await, VerifyCode::Valid);
    }
    flushing.abort();
    f.verifier.flush_last_used().await.unwrap();
    let writes = f.verifier.last_used_writes();
    println!("10 000 verifies → {writes} last-used writes");
    assert!(
        (1..=100).contains(&writes),
        "{writes} writes for 10 000 verifies: one per key per flush, not per request"
    );
    let stored = f.registry.get_key(&scope(), &id).await.unwrap();
    assert!(
        stored.last_used_at.is_some(),
        "last_used_at shows after a flush"
    );
}

#[tokio::test]
async fn quota_unreachable_fails_open_or_closed_as_configured() {
    let dead = stanna_grpc::lazy_channel("http://127.0.0.1:1").unwrap();
    let open = fixture_with(settings(), dead.clone()).await;
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
        dead,
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
    let quota = stanna_grpc::in_memory(QuotaServer::new(QuotaService::new(backend)));
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

#[tokio::test]
async fn store_unreachable_serves_cached_keys_until_the_stale_limit_and_refuses_uncached_ones() {
    let Some(url) = stanna_testkit::fresh_postgres_database(
        "store_unreachable_serves_cached_keys_until_the_stale_limit_and_refuses_uncached_ones",
    )
    .await
    else {
        return;
    };
    let proxy = TcpProxy::start(stanna_testkit::socket_addr_of(&url)).await;
    let through_proxy = stanna_testkit::with_host(&url, proxy.addr());
    let direct = KeyStore::connect(&url).await.unwrap();
    let proxied = KeyStore::connect(&through_proxy).await.unwrap();
    // The registry writes directly; only auth-check's store goes through the proxy.
    let mut f = fixture_on(proxied, settings(), in_memory_quota());
    let hasher = KeyHasher::new(HashParams::insecure_fast_for_tests()).unwrap();
    f.registry = Registry::new(direct, hasher, RateLimits::product_default(), 1000, 2);
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

/// Callers that give up (a reset connection, a short deadline) cannot free the argon2 permit or
/// the budget token of a guess: the verification runs to its end on its own task.
#[tokio::test]
async fn cancelled_guesses_still_spend_the_failure_budget() {
    let f = fixture().await;
    let (key, _) = f.key().await;
    // The same guess again and again, each caller giving up after a moment: every new flight
    // must spend a token, so at most the budget's worth of argon2 runs happen.
    let guess = guessed_secret_for(&key, 7);
    let started = Instant::now();
    for n in 0..50u64 {
        let (verifier, guess) = (f.verifier.clone(), guess.clone());
        let attempt = tokio::spawn(async move { verifier.verify(&guess, "", 1).await });
        tokio::time::sleep(Duration::from_micros(200 * (n % 10))).await;
        attempt.abort();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let runs = f.argon2_runs();
    let allowance = budget_allowance(started);
    assert!(
        runs <= allowance,
        "50 cancelled guesses ran argon2 {runs} times; the budget allows {allowance}"
    );
}
