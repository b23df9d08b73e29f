//! The read replica (`STANNA_DATABASE_READ_URL`) under load: a measurement, not a test
//! (docs/auth-check.md, "A read replica"). It makes its own primary and streaming replica
//! (`initdb`, `pg_basebackup`, as the `postgres` user when run as root; removed after).
//!
//! ```sh
//! cargo run --release -p stanna --example replica_bench
//! ```
//!
//! One auth-check core verifies a stream of keys not cached (a store lookup and a cheap argon2
//! each: the load a replica takes off the primary), polls changes every 250 ms, while a writer
//! changes 100 keys a second on the primary. Phases alternate without and with the replica, and
//! each reports: cold verifications a second; statements a second on the primary and on the
//! replica (from `pg_stat_database`, the writer's own subtracted); the change poll's duration,
//! and how many polls could read the replica (the rest read the primary: it had not replayed
//! the primary's flush position within 100 ms).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use sea_orm::ConnectionTrait;
use stanna_auth_check::{FailMode, QuotaConnection, Verifier, VerifierSettings};
use stanna_keys::RateLimits;
use stanna_quota::{MemoryBackend, QuotaBackend};
use stanna_quota_service::{QuotaMetrics, QuotaService};
use stanna_store::KeyStore;

const KEYS: usize = 50_000;
const PHASE: Duration = Duration::from_secs(8);
const ROUNDS: usize = 2;
const CALLERS: usize = 16;
/// The writer's changes a second.
const CHANGES: u64 = 100;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(pg) = stanna_testkit::OwnPostgresReplication::start("replica_bench", 1) else {
        return Err("PostgreSQL's server programs are required (initdb, pg_basebackup)".into());
    };
    let primary = KeyStore::connect(&pg.primary_url()).await?;
    let mut secrets = Vec::with_capacity(KEYS);
    let plan = stanna::seed::SeedPlan {
        keys: KEYS,
        workspace_keys: KEYS,
        deleted_percent: 0,
        span: Duration::from_secs(86_400),
    };
    stanna::seed::seed(&primary, plan, SystemTime::now(), |s| {
        secrets.push(s.to_owned())
    })
    .await?;
    primary
        .connection()
        .execute_unprepared("VACUUM ANALYZE api_keys")
        .await?;
    pg.wait_caught_up(0).await;
    let replica = KeyStore::open_replica(&pg.replica_url(0)).await?;
    replica.check_replica(&primary).await?;
    let secrets = Arc::new(secrets);
    println!(
        "replica bench: {KEYS} keys, {CALLERS} callers verifying keys not cached, a writer at {CHANGES} changes/s, {PHASE:?} phases, {ROUNDS} rounds"
    );
    for round in 1..=ROUNDS {
        for with_replica in [false, true] {
            let report = phase(&primary, with_replica.then_some(&replica), &secrets).await?;
            println!(
                "round {round} {:<16} {:>6.0} cold verifies/s | primary {:>6.0} transactions/s, replica {:>6.0}/s | poll p50 {:.2} ms p99 {:.2} ms, {}/{} polls read the replica",
                if with_replica {
                    "with a replica:"
                } else {
                    "primary only:"
                },
                report.verifies,
                report.primary,
                report.replica,
                report.poll_p50,
                report.poll_p99,
                report.replica_polls,
                report.polls,
            );
        }
    }
    Ok(())
}

struct Report {
    verifies: f64,
    primary: f64,
    replica: f64,
    poll_p50: f64,
    poll_p99: f64,
    polls: usize,
    replica_polls: u64,
}

async fn phase(
    primary: &KeyStore,
    replica: Option<&KeyStore>,
    secrets: &Arc<Vec<String>>,
) -> Result<Report, Box<dyn std::error::Error>> {
    let verifier = verifier(primary, replica);
    verifier.poll_changes().await?;
    let replica_polls_before = verifier.stats().replica_polls.load(Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let verified = Arc::new(AtomicU64::new(0));
    let writes = Arc::new(AtomicU64::new(0));
    let before = (
        transactions(primary).await?,
        match replica {
            Some(r) => transactions(r).await?,
            None => 0,
        },
    );
    let started = Instant::now();
    let writer = tokio::spawn(write_changes(
        primary.clone(),
        secrets.clone(),
        stop.clone(),
        writes.clone(),
    ));
    let callers: Vec<_> = (0..CALLERS)
        .map(|c| {
            let (verifier, secrets, stop, verified) = (
                verifier.clone(),
                secrets.clone(),
                stop.clone(),
                verified.clone(),
            );
            tokio::spawn(async move {
                // Each caller its own stride through the keys: none is cached when it comes round
                // (the cache holds 100 of 50 000).
                let mut i = c * 7_919;
                while !stop.load(Ordering::Relaxed) {
                    let key = &secrets[i % secrets.len()];
                    if verifier.verify(key, "", 1).await.is_ok() {
                        verified.fetch_add(1, Ordering::Relaxed);
                    }
                    i += CALLERS * 13;
                }
            })
        })
        .collect();
    let mut polls = Vec::new();
    while started.elapsed() < PHASE {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let t = Instant::now();
        verifier.poll_changes().await?;
        polls.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await?;
    }
    writer.await?;
    let took = started.elapsed().as_secs_f64();
    verifier.flush_usage().await?;
    // Backends report their counts to pg_stat_database within a second of going idle.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = (
        transactions(primary).await?,
        match replica {
            Some(r) => transactions(r).await?,
            None => 0,
        },
    );
    polls.sort_by(f64::total_cmp);
    // The writer's own statements and the two counting queries are not auth-check's.
    let writer_statements = writes.load(Ordering::Relaxed) as f64;
    Ok(Report {
        verifies: verified.load(Ordering::Relaxed) as f64 / took,
        primary: ((after.0 - before.0) as f64 - writer_statements - 1.0).max(0.0) / took,
        replica: ((after.1 - before.1) as f64 - 1.0).max(0.0) / took,
        poll_p50: polls[polls.len() / 2],
        poll_p99: polls[(polls.len() * 99 / 100).min(polls.len() - 1)],
        polls: polls.len(),
        replica_polls: verifier.stats().replica_polls.load(Ordering::Relaxed)
            - replica_polls_before,
    })
}

/// Transactions committed in the connected database so far (each of auth-check's reads is one).
async fn transactions(store: &KeyStore) -> Result<i64, sea_orm::DbErr> {
    let row = store
        .connection()
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT xact_commit AS n FROM pg_stat_database WHERE datname = current_database()",
        ))
        .await?
        .expect("a row");
    row.try_get("", "n")
}

/// Renames keys on the primary, `CHANGES` a second, until `stop`.
async fn write_changes(
    store: KeyStore,
    secrets: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicU64>,
) {
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / CHANGES));
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let Ok(key) = stanna_keys::PresentedKey::parse(&secrets[(i * 104_729) % secrets.len()])
        else {
            return;
        };
        let now = stanna_keys::time::micros_since_epoch(SystemTime::now()) as i64;
        let statement = sea_orm::Statement::from_sql_and_values(
            sea_orm::DatabaseBackend::Postgres,
            "UPDATE api_keys SET name = $1, name_folded = $1, updated_at = $2 WHERE key_id = $3",
            [
                format!("renamed {i}").into(),
                now.into(),
                key.key_id().as_str().to_owned().into(),
            ],
        );
        if store.connection().execute_raw(statement).await.is_err() {
            return;
        }
        writes.fetch_add(1, Ordering::Relaxed);
        i += 1;
    }
}

fn verifier(primary: &KeyStore, replica: Option<&KeyStore>) -> Verifier {
    let quota = QuotaConnection::InProcess(Arc::new(QuotaService::new(
        QuotaBackend::Memory(MemoryBackend::new()),
        QuotaMetrics::unregistered(),
    )));
    let roomy = stanna_keys::WindowLimit::new(10_000, Duration::from_secs(60)).expect("valid");
    let mut builder = Verifier::builder(
        primary.clone(),
        quota,
        VerifierSettings {
            defaults: RateLimits {
                burst: roomy,
                hourly: roomy,
            },
            session_limits: RateLimits::product_default(),
            cache_size: 100,
            argon2_concurrency: 2,
            fail_mode: FailMode::Closed,
            stale_if_error: Duration::from_secs(30),
            quota_timeout: Duration::from_secs(1),
        },
    );
    if let Some(replica) = replica {
        builder = builder.replica(replica.clone());
    }
    builder.build()
}
