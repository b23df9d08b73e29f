//! The store at a million keys, on PostgreSQL: a measurement, not a test (docs/auth-check.md,
//! "At a million keys"). It makes a database of its own on the server `DATABASE_URL` names and
//! drops it after.
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo run --release -p stanna --example scale_bench            # BENCH_KEYS=1000000
//! ```
//!
//! Reports, in one run: the seeding rate (`stanna seed`'s code); warm Verify with 100 000 cached
//! keys ÷ with 1 000 (two auth-checks on one store, phases interleaved); a cold Verify against
//! one argon2 verification at the default cost; ListKeys' first and 100th page of a workspace of
//! 100 000 keys (10 % deleted) with PostgreSQL's plan; the change poll at 100 changes a second
//! against the previous poll's query (the whole 20 s overlap as rows); RSS per cached key and
//! for the set of existing ids; a last-used and usage flush of 50 000 keys with the longest wait
//! of a concurrent key update; the tombstone purge.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use stanna_auth_check::{FailMode, QuotaConnection, Verifier, VerifierSettings};
use stanna_key_registry::Registry;
use stanna_key_registry::registry::CreateKey;
use stanna_keys::{HashParams, KeyHasher, KeyName, RateLimits, UserId, WindowLimit, WorkspaceId};
use stanna_proto::keys::v1 as pb;
use stanna_proto::keys::v1::auth_check_client::AuthCheckClient;
use stanna_quota::{MemoryBackend, QuotaBackend};
use stanna_quota_service::{QuotaMetrics, QuotaService};
use stanna_store::{
    ChangePosition, KeyFilter, KeyStore, PageRequest, Scope, UsageCounts, UsageRow,
};

/// As the product binary: mimalloc, with the bytes it holds for callers counted (the `cap`
/// crate's wrapper). RSS after the seed's churn says little (mimalloc reuses what the seed
/// freed), so memory is reported as live heap bytes, with RSS beside it.
#[global_allocator]
static ALLOCATOR: cap::Cap<mimalloc::MiMalloc> = cap::Cap::new(mimalloc::MiMalloc, usize::MAX);

/// Heap bytes held now.
fn live() -> i64 {
    ALLOCATOR.allocated() as i64
}

const PHASE: Duration = Duration::from_secs(3);
const CALLERS: usize = 32;
const BIG: usize = 100_000;
const SMALL: usize = 1_000;

fn keys_total() -> usize {
    std::env::var("BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n >= 2 * BIG)
        .unwrap_or(1_000_000)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(db) = stanna_testkit::fresh_postgres_database("scale_bench").await else {
        return Err("DATABASE_URL is required (a PostgreSQL server)".into());
    };
    let store = KeyStore::connect(db.url()).await?;
    let total = keys_total();
    println!("scale bench: {total} keys on PostgreSQL, {CALLERS} callers, {PHASE:?} phases");

    // Seeding, with `stanna seed`'s code.
    let plan = stanna::seed::SeedPlan {
        keys: total,
        workspace_keys: BIG,
        deleted_percent: 10,
        span: Duration::from_secs(365 * 86_400),
    };
    let started = Instant::now();
    let mut secrets = Vec::with_capacity(BIG);
    let seeded = stanna::seed::seed(&store, plan, SystemTime::now(), |s| {
        if secrets.len() < BIG {
            secrets.push(s.to_owned());
        }
    })
    .await?;
    let took = started.elapsed();
    println!(
        "seed: {} keys ({} deleted) in {:.1} s = {:.0} keys/s",
        seeded.live + seeded.deleted,
        seeded.deleted,
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64()
    );
    sql(&store, "VACUUM ANALYZE api_keys").await?;

    // The set of existing ids, and RSS per cached key.
    let (rss_before_ids, live_before_ids) = (rss(), live());
    let big = verifier(&store, 2 * BIG);
    big.poll_changes().await?;
    let ids_rss = rss().saturating_sub(rss_before_ids);
    let ids_live = live() - live_before_ids;
    println!(
        "existing-id set: {} ids, heap +{:.1} MiB ({:.1} B per id), RSS +{:.1} MiB",
        big.known_key_ids(),
        ids_live as f64 / 1048576.0,
        ids_live as f64 / big.known_key_ids() as f64,
        ids_rss as f64 / 1048576.0,
    );
    let (rss_before_cache, live_before_cache) = (rss(), live());
    let started = Instant::now();
    warm(&big, &secrets).await;
    let warmed = started.elapsed();
    // What is pending for the next usage flush is not the cache's: written out first.
    big.flush_usage().await?;
    let cache_rss = rss().saturating_sub(rss_before_cache);
    let cache_live = live() - live_before_cache;
    // The in-process quota's share of that: the same decisions on a quota of its own.
    let (rss_before_quota, live_before_quota) = (rss(), live());
    let quota = QuotaBackend::Memory(MemoryBackend::new());
    let windows = roomy()
        .named()
        .map(|(name, limit)| stanna_quota::NamedWindow {
            name: std::borrow::Cow::Borrowed(name),
            limit,
        });
    for s in &secrets {
        let id = stanna_keys::PresentedKey::parse(s)?.key_id();
        quota
            .decide(id.as_str(), 1, &windows, stanna_quota::Mode::Consume, None)
            .await?;
    }
    let quota_rss = rss().saturating_sub(rss_before_quota);
    let quota_live = live() - live_before_quota;
    let n = secrets.len() as f64;
    println!(
        "cache: {} keys warmed in {:.1} s; heap +{:.0} B per key, of which the in-process quota {:.0} B: auth-check's own {:.0} B per cached key (RSS: +{:.0} B, quota {:.0} B)",
        secrets.len(),
        warmed.as_secs_f64(),
        cache_live as f64 / n,
        quota_live as f64 / n,
        (cache_live - quota_live) as f64 / n,
        cache_rss as f64 / n,
        quota_rss as f64 / n,
    );
    drop(quota);

    // Warm Verify with 1 000 cached keys against 100 000, interleaved.
    let small = verifier(&store, 2 * BIG);
    small.poll_changes().await?;
    let few: Vec<String> = secrets[..SMALL].to_vec();
    warm(&small, &few).await;
    let small_client = serve(&small).await?;
    let big_client = serve(&big).await?;
    let (few, many) = (Arc::new(few), Arc::new(secrets.clone()));
    let (mut at_small, mut at_big) = (Vec::new(), Vec::new());
    // Five rounds, the order alternating: this machine's noise moves one round by 10 %.
    for round in 0..5 {
        if round % 2 == 0 {
            at_small.push(phase(small_client.clone(), few.clone()).await);
            at_big.push(phase(big_client.clone(), many.clone()).await);
        } else {
            at_big.push(phase(big_client.clone(), many.clone()).await);
            at_small.push(phase(small_client.clone(), few.clone()).await);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (s, b) = (median(&mut at_small), median(&mut at_big));
    println!(
        "warm Verify: {s:.0}/s with {SMALL} cached keys, {b:.0}/s with {} ({:?} vs {:?} per round): ratio {:.3}",
        many.len(),
        at_small.iter().map(|r| *r as u64).collect::<Vec<_>>(),
        at_big.iter().map(|r| *r as u64).collect::<Vec<_>>(),
        b / s
    );

    // A cold Verify at this size against argon2 alone, at the default cost.
    let owasp = Registry::new(
        store.clone(),
        KeyHasher::new(HashParams::default())?,
        RateLimits::product_default(),
        100_000,
        2,
    );
    let mut cold_keys = Vec::new();
    for i in 0..15 {
        let created = owasp
            .create_key(
                CreateKey {
                    workspace: WorkspaceId::parse("ws_cold")?,
                    user: UserId::parse("cold")?,
                    name: KeyName::parse(&format!("cold {i}"))?,
                    expires_at: None,
                    rate_limits: Default::default(),
                    metadata: None,
                    scopes: stanna_keys::Scopes::unscoped(),
                },
                &stanna_keys::Scopes::unscoped(),
                &stanna_store::AuditContext::admin("bench", "scale-bench"),
            )
            .await?;
        cold_keys.push((created.secret, created.key.key_id));
    }
    big.poll_changes().await?;
    let (mut cold, mut argon, mut extra) = (Vec::new(), Vec::new(), Vec::new());
    let hasher = KeyHasher::new(HashParams::default())?;
    for (secret, id) in &cold_keys {
        let t = Instant::now();
        let verdict = big.verify(secret, "", 1).await?;
        cold.push(t.elapsed());
        assert!(verdict.code == stanna_auth_check::VerifyCode::Valid);
        let stored = store.find_by_key_id(id).await?.expect("created").key_hash;
        let key = stanna_keys::PresentedKey::parse(secret)?;
        let h = hasher.clone();
        let t = Instant::now();
        tokio::task::spawn_blocking(move || h.verify(&key, &stored)).await??;
        argon.push(t.elapsed());
        // argon2 itself varies by milliseconds: each cold Verify against the run right after it.
        extra.push(ms(cold[cold.len() - 1]) - ms(argon[argon.len() - 1]));
    }
    cold.sort();
    argon.sort();
    extra.sort_by(f64::total_cmp);
    println!(
        "cold Verify: p50 {:.2} ms, argon2 alone p50 {:.2} ms; cold − argon2 per pair: p50 {:.2} ms (min {:.2}, max {:.2}, {} pairs)",
        ms(cold[cold.len() / 2]),
        ms(argon[argon.len() / 2]),
        extra[extra.len() / 2],
        extra[0],
        extra[extra.len() - 1],
        extra.len()
    );

    // ListKeys: the first and the 100th page of the big workspace (50 a page).
    let scope = Scope::new(WorkspaceId::parse(stanna::seed::BIG_WORKSPACE)?, None);
    let request = |after| PageRequest {
        size: 50,
        after,
        filter: KeyFilter::default(),
    };
    let now = SystemTime::now();
    let t = Instant::now();
    let mut page = store.list(&scope, request(None), now).await?;
    let first = t.elapsed();
    let first_plan = store.explain_list(&scope, &request(None), now).await?;
    let mut hundredth = Duration::ZERO;
    let mut hundredth_plan = Vec::new();
    for n in 2..=100 {
        let after = page.next.expect("100 pages of 50");
        if n == 100 {
            hundredth_plan = store
                .explain_list(&scope, &request(Some(after)), now)
                .await?;
        }
        let t = Instant::now();
        page = store.list(&scope, request(Some(after)), now).await?;
        if n == 100 {
            hundredth = t.elapsed();
        }
    }
    println!(
        "ListKeys ({} keys, 10 % deleted): page 1 {:.2} ms, page 100 {:.2} ms",
        BIG,
        ms(first),
        ms(hundredth)
    );
    for line in first_plan.iter().chain(&hundredth_plan) {
        println!("    {line}");
    }

    // The change poll at 100 changes a second, after the overlap has filled (25 s).
    let writer = {
        let store = store.clone();
        let ids: Vec<String> = secrets
            .iter()
            .take(5000)
            .map(|s| stanna_keys::PresentedKey::parse(s).map(|k| k.key_id().as_str().to_owned()))
            .collect::<Result<_, _>>()?;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            for (i, id) in ids.iter().cycle().enumerate() {
                tick.tick().await;
                let now = stanna_keys::time::micros_since_epoch(SystemTime::now()) as i64;
                let statement = sea_orm::Statement::from_sql_and_values(
                    sea_orm::DatabaseBackend::Postgres,
                    "UPDATE api_keys SET name = $1, name_folded = $1, updated_at = $2 WHERE key_id = $3",
                    [format!("renamed {i}").into(), now.into(), id.clone().into()],
                );
                use sea_orm::ConnectionTrait;
                if store.connection().execute_raw(statement).await.is_err() {
                    return;
                }
            }
        })
    };
    // Polled as the product polls while the overlap fills, so the measured polls are the
    // steady state (the first after a gap reads every row of its overlap).
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        big.poll_changes().await?;
    }
    let (mut new_poll, mut old_poll, mut stamps_alone) = (Vec::new(), Vec::new(), Vec::new());
    let rows_before = big.stats().change_rows_read.load(Ordering::Relaxed);
    let mut old_rows = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let t = Instant::now();
        big.poll_changes().await?;
        new_poll.push(t.elapsed());
        // The previous poll: every row of the 20 s overlap, whole, paged by 1 000.
        let t = Instant::now();
        let mut position = ChangePosition {
            updated_at: SystemTime::now() - Duration::from_secs(20),
            key_id: None,
        };
        loop {
            let changes = store.changes_after(position, 1000).await?;
            old_rows += changes.len();
            match changes.last() {
                Some(last) if changes.len() == 1000 => position = last.position(),
                _ => break,
            }
        }
        old_poll.push(t.elapsed());
        // The stamps alone: the new poll's one query that grows with the change rate.
        let t = Instant::now();
        let after = ChangePosition {
            updated_at: SystemTime::now() - Duration::from_secs(20),
            key_id: None,
        };
        std::hint::black_box(store.change_stamps_after(after, 100_000).await?);
        stamps_alone.push(t.elapsed());
    }
    stamps_alone.sort();
    writer.abort();
    new_poll.sort();
    old_poll.sort();
    let new_rows = big.stats().change_rows_read.load(Ordering::Relaxed) - rows_before;
    println!(
        "change poll at 100 changes/s: p50 {:.2} ms (its stamps query {:.2} ms), {:.0} whole rows a poll; the previous poll's query p50 {:.2} ms, {:.0} rows a poll: ratio {:.3}",
        ms(new_poll[10]),
        ms(stamps_alone[10]),
        new_rows as f64 / 20.0,
        ms(old_poll[10]),
        old_rows as f64 / 20.0,
        new_poll[10].as_secs_f64() / old_poll[10].as_secs_f64()
    );

    // A flush of 50 000 keys' last-used times and usage, with a key update beside it.
    let flushed: Vec<_> = secrets
        .iter()
        .take(50_000)
        .map(|s| stanna_keys::PresentedKey::parse(s).map(|k| k.key_id()))
        .collect::<Result<_, _>>()?;
    let hour = stanna_store::hour_of(SystemTime::now());
    let rows: Vec<UsageRow> = flushed
        .iter()
        .map(|id| UsageRow {
            key_id: *id,
            hour,
            counts: UsageCounts {
                by_outcome: [3, 1, 0, 0, 0],
            },
        })
        .collect();
    let uses: Vec<_> = flushed.iter().map(|id| (*id, SystemTime::now())).collect();
    // Another key's update, every 5 ms during the flush: its longest wait is the longest a
    // writer waited on the flush.
    let probe_id = secrets[60_000..]
        .first()
        .map(|s| stanna_keys::PresentedKey::parse(s).map(|k| k.key_id().as_str().to_owned()))
        .transpose()?
        .unwrap_or_default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            use sea_orm::ConnectionTrait;
            let mut worst = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let statement = sea_orm::Statement::from_sql_and_values(
                    sea_orm::DatabaseBackend::Postgres,
                    "UPDATE api_keys SET last_used_at = last_used_at WHERE key_id = $1",
                    [probe_id.clone().into()],
                );
                let _ = store.connection().execute_raw(statement).await;
                worst = worst.max(t.elapsed());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            worst
        })
    };
    let t = Instant::now();
    store
        .record_usage(&rows, &uses)
        .await
        .map_err(|e| e.error)?;
    let flush = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let worst = probe.await?;
    println!(
        "flush of {} keys (usage + last used): {:.2} s in chunks of {}; a concurrent key update waited {:.1} ms at most",
        flushed.len(),
        flush.as_secs_f64(),
        stanna_store::usage::WRITE_CHUNK,
        ms(worst)
    );

    // The tombstone purge: every seeded deletion is within the last 7 days.
    let t = Instant::now();
    let purged = store
        .purge_deleted_keys(SystemTime::now() + Duration::from_secs(60))
        .await?;
    println!(
        "tombstone purge: {purged} rows in {:.2} s ({} per statement)",
        t.elapsed().as_secs_f64(),
        stanna_store::PURGE_BATCH
    );
    store.close().await?;
    Ok(())
}

/// Limits no phase of the run reaches.
fn roomy() -> RateLimits {
    RateLimits {
        burst: WindowLimit::new(10_000, Duration::from_secs(60)).expect("valid"),
        hourly: WindowLimit::new(10_000, Duration::from_secs(3600)).expect("valid"),
    }
}

fn verifier(store: &KeyStore, cache_size: usize) -> Verifier {
    let quota = QuotaConnection::InProcess(Arc::new(QuotaService::new(
        QuotaBackend::Memory(MemoryBackend::new()),
        QuotaMetrics::unregistered(),
    )));
    Verifier::builder(
        store.clone(),
        quota,
        VerifierSettings {
            defaults: roomy(),
            session_limits: RateLimits::product_default(),
            cache_size,
            argon2_concurrency: 2,
            fail_mode: FailMode::Closed,
            stale_if_error: Duration::from_secs(30),
            quota_timeout: Duration::from_secs(1),
        },
    )
    .build()
}

/// Verifies every key once (cold: store lookup and argon2 at the filler's cheap cost).
async fn warm(verifier: &Verifier, keys: &[String]) {
    let chunks: Vec<Vec<String>> = keys
        .chunks(keys.len().div_ceil(16))
        .map(<[_]>::to_vec)
        .collect();
    let tasks: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let verifier = verifier.clone();
            tokio::spawn(async move {
                for key in chunk {
                    let verdict = verifier.verify(&key, "", 1).await.expect("verifies");
                    assert!(verdict.code == stanna_auth_check::VerifyCode::Valid);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("warm task");
    }
}

async fn serve(
    verifier: &Verifier,
) -> Result<AuthCheckClient<tonic::transport::Channel>, Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(stanna_auth_check::serve(
        verifier.clone(),
        listener,
        std::future::pending(),
    ));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok(AuthCheckClient::new(channel))
}

/// Warm Verify calls a second over `keys`, from [`CALLERS`] callers.
async fn phase(client: AuthCheckClient<tonic::transport::Channel>, keys: Arc<Vec<String>>) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..CALLERS)
        .map(|worker| {
            let (mut client, keys) = (client.clone(), keys.clone());
            tokio::spawn(async move {
                let (mut n, mut i) = (0u64, worker * 7919);
                while start.elapsed() < PHASE {
                    let request = pb::VerifyRequest {
                        key: keys[i % keys.len()].clone(),
                        cost: 1,
                        ..Default::default()
                    };
                    let valid = client
                        .verify(request)
                        .await
                        .is_ok_and(|r| r.into_inner().valid);
                    assert!(valid, "a warm key verifies");
                    n += 1;
                    i += CALLERS;
                }
                n
            })
        })
        .collect();
    let mut n = 0;
    for task in tasks {
        n += task.await.expect("bench task");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn sql(store: &KeyStore, text: &str) -> Result<(), sea_orm::DbErr> {
    use sea_orm::ConnectionTrait;
    store
        .connection()
        .execute_unprepared(text)
        .await
        .map(|_| ())
}

fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
