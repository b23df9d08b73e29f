//! The read path that scales out (`STANNA_DATABASE_READ_URL`): auth-check's lookups and change
//! feed read a PostgreSQL streaming replica while it has caught up with the primary. Against a
//! primary and replicas each test makes itself (`initdb`, `pg_basebackup`, free ports, removed
//! after; SKIPPED where PostgreSQL's server programs are missing): revocation stays within a
//! second with the replica paused, a miss read from a replica is asked of the primary, a replica
//! that stops answering costs nothing but primary load.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use stanna_auth_check::{Verifier, VerifyCode, background};
use stanna_keys::{
    GeneratedKey, HashParams, KeyHasher, KeyId, KeyName, KeyStatus, UserId, WorkspaceId,
};
use stanna_store::{KeyChanges, KeyStore, LimitOverrides, NewKey, ReplicaError, Scope};
use stanna_testkit::{OwnPostgresReplication, TcpProxy};

mod support;

/// The primary's store, and a verifier reading the replica at `replica_url`.
struct Fixture {
    primary: KeyStore,
    verifier: Verifier,
}

async fn fixture(primary_url: &str, replica_url: &str) -> Fixture {
    let primary = KeyStore::connect(primary_url).await.unwrap();
    let replica = KeyStore::open_replica(replica_url).await.unwrap();
    replica.check_replica(&primary).await.expect("a replica");
    let verifier = Verifier::builder(
        primary.clone(),
        support::in_memory_quota(),
        support::settings(),
    )
    .replica(replica)
    .build();
    Fixture { primary, verifier }
}

fn scope() -> Scope {
    Scope::new(WorkspaceId::parse("wsA").unwrap(), None)
}

impl Fixture {
    /// Stores a new key on the primary as the registry does; returns its secret and id.
    async fn create(&self) -> (String, KeyId) {
        let generated = GeneratedKey::generate().unwrap();
        let hasher = KeyHasher::new(HashParams::insecure_fast_for_tests()).unwrap();
        let new = NewKey {
            key_id: generated.key().key_id(),
            preview: generated.key().preview(),
            key_hash: hasher.hash(generated.key()).unwrap(),
            workspace: WorkspaceId::parse("wsA").unwrap(),
            user: UserId::parse("alice").unwrap(),
            name: KeyName::parse("Replica").unwrap(),
            expires_at: None,
            rate_limits: LimitOverrides::default(),
            metadata: None,
            scopes: stanna_keys::Scopes::unscoped(),
        };
        let record = self
            .primary
            .create(
                new,
                None,
                SystemTime::now(),
                &stanna_store::AuditContext::admin("test", "test"),
            )
            .await
            .unwrap();
        (generated.into_secret(), record.key_id)
    }

    async fn deactivate(&self, id: &KeyId) {
        let changes = KeyChanges {
            status: Some(KeyStatus::Inactive),
            ..KeyChanges::default()
        };
        self.primary
            .update(
                &scope(),
                id,
                changes,
                SystemTime::now(),
                &stanna_store::AuditContext::admin("test", "test"),
            )
            .await
            .unwrap();
    }

    async fn code(&self, key: &str) -> VerifyCode {
        self.verifier
            .verify(key, "", 1)
            .await
            .expect("a verdict")
            .code
    }

    fn stat(&self, pick: fn(&stanna_auth_check::Stats) -> &std::sync::atomic::AtomicU64) -> u64 {
        pick(self.verifier.stats()).load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_and_the_change_feed_read_a_replica_that_has_caught_up() {
    let Some(pg) = OwnPostgresReplication::start(
        "lookups_and_the_change_feed_read_a_replica_that_has_caught_up",
        1,
    ) else {
        return;
    };
    let f = fixture(&pg.primary_url(), &pg.replica_url(0)).await;
    let (secret, _) = f.create().await;
    f.verifier.poll_changes().await.unwrap();
    assert_eq!(f.stat(|s| &s.replica_polls), 1, "the poll read the replica");
    assert_eq!(f.stat(|s| &s.replica_fallbacks), 0);
    assert_eq!(f.verifier.known_key_ids(), 1, "the ids were loaded from it");
    assert_eq!(f.code(&secret).await, VerifyCode::Valid);
    // Two lookups: a key changed within the poll's overlap is read again after argon2.
    assert!(f.stat(|s| &s.store_lookups) >= 1);
    assert_eq!(
        f.stat(|s| &s.replica_lookups),
        f.stat(|s| &s.store_lookups),
        "every lookup read the replica"
    );
    assert_eq!(f.stat(|s| &s.replica_fallbacks), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_replica_costs_the_primary_load_never_a_late_revocation() {
    let Some(pg) = OwnPostgresReplication::start(
        "a_paused_replica_costs_the_primary_load_never_a_late_revocation",
        1,
    ) else {
        return;
    };
    let f = fixture(&pg.primary_url(), &pg.replica_url(0)).await;
    let (old, old_id) = f.create().await;
    let (other, other_id) = f.create().await;
    f.verifier.poll_changes().await.unwrap();
    assert_eq!(f.code(&old).await, VerifyCode::Valid);
    assert_eq!(f.code(&other).await, VerifyCode::Valid);

    pg.pause_replay(0).await;
    // The mechanism, deterministically: the one poll after a deactivation the replica cannot
    // show delivers it (read from the primary).
    f.deactivate(&other_id).await;
    f.verifier.poll_changes().await.unwrap();
    assert_eq!(f.code(&other).await, VerifyCode::Inactive);

    // A key created while the replica is stuck: known through a poll of the primary, read from
    // the primary.
    let (new, _) = f.create().await;
    assert_eq!(
        f.code(&new).await,
        VerifyCode::Valid,
        "a new key verifies at once"
    );
    let fallbacks = f.stat(|s| &s.replica_fallbacks);
    assert!(fallbacks >= 1, "the early poll read the primary");

    // A deactivation the replica cannot show: the background poll (the shipped 250 ms) reads it
    // from the primary.
    let tasks = tokio_util::task::TaskTracker::new();
    let stop = tokio_util::sync::CancellationToken::new();
    background::spawn(
        &f.verifier,
        &stanna_auth_check::Config::for_tests(),
        &tasks,
        &stop,
    );
    f.deactivate(&old_id).await;
    let deactivated = Instant::now();
    while f.code(&old).await != VerifyCode::Inactive {
        assert!(
            deactivated.elapsed() < Duration::from_secs(5),
            "the deactivation did not reach the cache within 5 s with the replica paused"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = deactivated.elapsed();
    println!("revoked in {took:?} with the replica paused (the promise: 1 s)");
    assert!(
        f.stat(|s| &s.replica_polls) <= 1,
        "no poll read the stuck replica"
    );

    // Once it replays again, polls read it again.
    pg.resume_replay(0).await;
    let polls = f.stat(|s| &s.replica_polls);
    stanna_testkit::eventually(Duration::from_secs(10), "a poll of the replica", || async {
        f.stat(|s| &s.replica_polls) > polls
    })
    .await;
    stop.cancel();
    tasks.close();
    tasks.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_read_from_a_replica_is_asked_of_the_primary() {
    let Some(pg) =
        OwnPostgresReplication::start("a_miss_read_from_a_replica_is_asked_of_the_primary", 2)
    else {
        return;
    };
    // A read endpoint balancing over two replicas (a proxy in front of them): one current, one
    // stuck since before the key was made.
    let balancer = TcpProxy::start(pg.replica_addr(0)).await;
    let read_url = format!("postgres://postgres@{}/postgres", balancer.addr());
    let f = fixture(&pg.primary_url(), &read_url).await;
    // Replica 1 has the schema the fixture just migrated, then stops there.
    pg.wait_caught_up(1).await;
    pg.pause_replay(1).await;
    let (secret, _) = f.create().await;
    f.verifier.poll_changes().await.unwrap();
    assert_eq!(f.stat(|s| &s.replica_polls), 1, "replica 0 had caught up");

    balancer.retarget(pg.replica_addr(1)).await;
    assert_eq!(
        f.code(&secret).await,
        VerifyCode::Valid,
        "the stuck replica's miss is not final"
    );
    assert!(
        f.stat(|s| &s.replica_misses) >= 1,
        "a miss (the stuck replica is behind the poll's position), not an error"
    );
    assert_eq!(f.stat(|s| &s.replica_lookups), 0);
    assert!(f.stat(|s| &s.store_lookups) >= 1);
    assert_eq!(
        f.stat(|s| &s.replica_fallbacks),
        f.stat(|s| &s.store_lookups),
        "the primary answered every lookup"
    );
    pg.resume_replay(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stops_answering_is_read_around() {
    let Some(pg) =
        OwnPostgresReplication::start("a_replica_that_stops_answering_is_read_around", 1)
    else {
        return;
    };
    let f = fixture(&pg.primary_url(), &pg.replica_url(0)).await;
    let (first, _) = f.create().await;
    let (second, _) = f.create().await;
    f.verifier.poll_changes().await.unwrap();
    assert_eq!(f.code(&first).await, VerifyCode::Valid);

    pg.stop_replica(0);
    assert_eq!(
        f.code(&second).await,
        VerifyCode::Valid,
        "a lookup the replica cannot answer is read from the primary"
    );
    let polled = Instant::now();
    f.verifier
        .poll_changes()
        .await
        .expect("the poll reads the primary");
    println!("a poll with the replica down took {:?}", polled.elapsed());
    let (third, _) = f.create().await;
    assert_eq!(f.code(&third).await, VerifyCode::Valid);
    assert!(f.stat(|s| &s.replica_fallbacks) >= 3);

    pg.start_replica(0);
    let polls = f.stat(|s| &s.replica_polls);
    stanna_testkit::eventually(
        Duration::from_secs(20),
        "a poll of the restarted replica",
        || async {
            f.verifier.poll_changes().await.unwrap();
            f.stat(|s| &s.replica_polls) > polls
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_the_replica_fails_is_run_again_on_the_primary() {
    let Some(pg) =
        OwnPostgresReplication::start("a_poll_the_replica_fails_is_run_again_on_the_primary", 1)
    else {
        return;
    };
    // A role that may ask the replica its position but not read the keys: the replica looks
    // current, then every read of the poll fails on it.
    KeyStore::connect(&pg.primary_url()).await.unwrap();
    pg.primary_sql("CREATE ROLE blind LOGIN; REVOKE ALL ON ALL TABLES IN SCHEMA public FROM blind")
        .await;
    pg.wait_caught_up(0).await;
    let read_url = pg.replica_url(0).replacen("postgres@", "blind@", 1);
    let f = fixture(&pg.primary_url(), &read_url).await;
    let (secret, _) = f.create().await;
    f.verifier
        .poll_changes()
        .await
        .expect("the poll ran again on the primary");
    assert_eq!(
        f.stat(|s| &s.replica_poll_failures),
        1,
        "the replica looked current, then failed the poll's reads"
    );
    assert_eq!(f.stat(|s| &s.replica_polls), 0);
    assert_eq!(
        f.verifier.known_key_ids(),
        1,
        "the primary's poll loaded the ids"
    );
    assert_eq!(
        f.code(&secret).await,
        VerifyCode::Valid,
        "and lookups went to the primary"
    );
    assert_eq!(f.stat(|s| &s.replica_lookups), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_url_that_is_not_a_replica_is_refused() {
    let Some(pg) = OwnPostgresReplication::start("a_read_url_that_is_not_a_replica_is_refused", 1)
    else {
        return;
    };
    let primary = KeyStore::connect(&pg.primary_url()).await.unwrap();
    let the_primary_itself = KeyStore::open_replica(&pg.primary_url()).await.unwrap();
    let refused = the_primary_itself
        .check_replica(&primary)
        .await
        .unwrap_err();
    assert!(matches!(refused, ReplicaError::NotInRecovery), "{refused}");
    assert!(refused.to_string().contains("not a streaming replica"));
    assert!(
        KeyStore::open_replica(&pg.replica_url(0))
            .await
            .unwrap()
            .check_replica(&primary)
            .await
            .is_ok(),
        "its own replica is accepted"
    );
    // A replica of another cluster (a second primary of the test's own).
    let Some(other) =
        OwnPostgresReplication::start("a_read_url_that_is_not_a_replica_is_refused", 1)
    else {
        return;
    };
    let foreign = KeyStore::open_replica(&other.replica_url(0)).await.unwrap();
    let refused = foreign.check_replica(&primary).await.unwrap_err();
    assert!(matches!(refused, ReplicaError::OtherCluster), "{refused}");

    // The read endpoint moved to the other cluster's replica after start: the next poll sees
    // it and nothing reads it.
    let endpoint = TcpProxy::start(pg.replica_addr(0)).await;
    let f = fixture(
        &pg.primary_url(),
        &format!("postgres://postgres@{}/postgres", endpoint.addr()),
    )
    .await;
    let (secret, _) = f.create().await;
    f.verifier.poll_changes().await.unwrap();
    assert_eq!(f.stat(|s| &s.replica_polls), 1);
    endpoint.retarget(other.replica_addr(0)).await;
    f.verifier.poll_changes().await.unwrap();
    assert_eq!(
        f.stat(|s| &s.replica_polls),
        1,
        "the foreign replica is not polled"
    );
    assert_eq!(f.code(&secret).await, VerifyCode::Valid);
    assert_eq!(f.stat(|s| &s.replica_lookups), 0, "nor looked up in");
    assert!(matches!(
        KeyStore::open_replica("sqlite://stanna.db").await,
        Err(ReplicaError::NotPostgres)
    ));
}
