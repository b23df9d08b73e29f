//! Measures Verify against the cheapest RPC on the same server stack, in one run. A measurement,
//! not a test: this machine is shared and noisy, so compare the ratio, not absolute numbers.
//!
//! ```sh
//! cargo run --release -p stanna --example verify_bench             # in-process quota
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release -p stanna --example verify_bench
//! ```
//!
//! Reports: requests/s and p50/p99 latency of warm `Verify` and of `grpc.health.v1.Health/Check`
//! (an almost empty unary RPC) on the same tonic server over loopback, their ratio, the cold Verify
//! time (store lookup + argon2id at the default cost), and with Redis the round trips per Verify and
//! the script's server-side cost against `INCR` (`INFO commandstats`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use stanna_auth_check::{FailMode, QuotaConnection, Verifier, VerifierSettings};
use stanna_key_registry::Registry;
use stanna_key_registry::registry::CreateKey;
use stanna_keys::{HashParams, KeyHasher, KeyName, RateLimits, UserId, WindowLimit, WorkspaceId};
use stanna_proto::keys::v1 as pb;
use stanna_proto::keys::v1::auth_check_client::AuthCheckClient;
use stanna_quota::{MemoryBackend, QuotaBackend, RedisBackend, RedisBackendConfig};
use stanna_quota_service::{QuotaMetrics, QuotaService};
use stanna_store::{KeyStore, LimitOverrides};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Callers at once: `BENCH_CONCURRENCY`, 32 unless set (1 measures a lone caller's latency).
fn concurrency() -> usize {
    std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(32)
}
const PHASE: Duration = Duration::from_secs(3);
/// Enough keys that the product's default limits (100/min each) admit every request of the run.
const KEYS: usize = 3000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = stanna_testkit::TempDir::new();
    let store = KeyStore::connect(&dir.sqlite_url()).await?;
    let redis_url = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty());
    let backend = match &redis_url {
        Some(url) => QuotaBackend::Redis(RedisBackend::connect_lazy(&RedisBackendConfig::new(
            url.clone(),
        ))?),
        None => QuotaBackend::Memory(MemoryBackend::new()),
    };
    // As the all-in-one wires it: the quota service object, called in process.
    let quota = QuotaConnection::InProcess(Arc::new(QuotaService::new(
        backend,
        QuotaMetrics::unregistered(),
    )));
    let settings = VerifierSettings {
        defaults: RateLimits::product_default(),
        session_limits: stanna_keys::RateLimits::product_default(),
        cache_size: 100_000,
        argon2_concurrency: 2,
        fail_mode: FailMode::Closed,
        stale_if_error: Duration::from_secs(30),
        quota_timeout: Duration::from_secs(1),
    };
    let verifier = Verifier::builder(store.clone(), quota, settings).build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(stanna_auth_check::serve(
        verifier.clone(),
        listener,
        std::future::pending(),
    ));

    // The warm set is hashed cheaply (its hashing cost is not measured); the cold set at the
    // default (OWASP) argon2 cost, so the cold time is the real one. BENCH_MAX_LIMITS=1 gives
    // every key the largest limits allowed (10 000 per window), the worst case for the script.
    let limits = if std::env::var("BENCH_MAX_LIMITS").is_ok_and(|v| v == "1") {
        LimitOverrides {
            burst: Some(WindowLimit::new(10_000, Duration::from_secs(60))?),
            hourly: Some(WindowLimit::new(10_000, Duration::from_secs(3600))?),
        }
    } else {
        LimitOverrides::default()
    };
    let cheap = Registry::new(
        store.clone(),
        KeyHasher::new(HashParams::insecure_fast_for_tests())?,
        RateLimits::product_default(),
        100_000,
        2,
    );
    let owasp = Registry::new(
        store,
        KeyHasher::new(HashParams::default())?,
        RateLimits::product_default(),
        100_000,
        2,
    );
    let mut keys = Vec::new();
    let mut cold_keys = Vec::new();
    for i in 0..KEYS + 10 {
        let registry = if i < KEYS { &cheap } else { &owasp };
        let created = registry
            .create_key(
                CreateKey {
                    workspace: WorkspaceId::parse("bench")?,
                    user: UserId::parse(&format!("user{}", i % 100))?,
                    name: KeyName::parse(&format!("bench {i}"))?,
                    expires_at: None,
                    rate_limits: limits,
                    metadata: None,
                    scopes: stanna_keys::Scopes::unscoped(),
                },
                &stanna_keys::Scopes::unscoped(),
                &stanna_store::AuditContext::admin("bench", "verify-bench"),
            )
            .await?;
        if i < KEYS {
            keys.push(created.secret)
        } else {
            cold_keys.push(created.secret)
        }
    }

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let auth = AuthCheckClient::new(channel.clone());
    let health = HealthClient::new(channel);

    let mut cold = Vec::new();
    for key in &cold_keys {
        let start = Instant::now();
        let r = auth
            .clone()
            .verify(pb::VerifyRequest {
                session: String::new(),
                key: key.clone(),
                workspace_id: String::new(),
                cost: 1,
                include_metadata: false,
                ..Default::default()
            })
            .await?;
        cold.push(start.elapsed());
        assert_eq!(r.into_inner().code(), pb::VerifyCode::Valid);
    }
    cold.sort();
    // Warm every bench key once.
    for key in &keys {
        auth.clone()
            .verify(pb::VerifyRequest {
                session: String::new(),
                key: key.clone(),
                workspace_id: String::new(),
                cost: 1,
                include_metadata: false,
                ..Default::default()
            })
            .await?;
    }

    let redis_before = match &redis_url {
        Some(url) => {
            let mut redis = redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await?;
            let _: () = redis::cmd("CONFIG")
                .arg("RESETSTAT")
                .query_async(&mut redis)
                .await?;
            Some(commandstats(url).await?)
        }
        None => None,
    };
    let keys = Arc::new(keys);
    let mut baseline = Vec::new();
    let mut warm = Vec::new();
    for _round in 0..2 {
        let health = health.clone();
        baseline.push(
            run_phase(move |i| {
                let mut health = health.clone();
                async move {
                    let _ = i;
                    health
                        .check(HealthCheckRequest {
                            service: String::new(),
                        })
                        .await
                        .is_ok()
                }
            })
            .await,
        );
        let (auth, keys) = (auth.clone(), keys.clone());
        warm.push(
            run_phase(move |i| {
                let mut auth = auth.clone();
                let keys = keys.clone();
                async move {
                    let request = pb::VerifyRequest {
                        session: String::new(),
                        key: keys[i % keys.len()].clone(),
                        workspace_id: String::new(),
                        cost: 1,
                        include_metadata: false,
                        ..Default::default()
                    };
                    auth.verify(request)
                        .await
                        .is_ok_and(|r| r.into_inner().valid)
                }
            })
            .await,
        );
    }
    let verifies: u64 = warm.iter().map(|p| p.ok).sum();

    println!(
        "auth-check Verify benchmark ({} concurrent callers, {PHASE:?} per phase, 2 rounds, one tonic server on loopback)",
        concurrency()
    );
    println!(
        "quota backend: {}; limits per key: {}",
        if redis_url.is_some() {
            "redis"
        } else {
            "in-process"
        },
        if limits.burst.is_some() {
            "10000/60s + 10000/3600s (BENCH_MAX_LIMITS)"
        } else {
            "100/60s + 1000/3600s (defaults)"
        }
    );
    for (name, phases) in [
        ("Health/Check (baseline)", &baseline),
        ("warm Verify", &warm),
    ] {
        for (round, p) in phases.iter().enumerate() {
            println!(
                "  {name:<24} round {}: {:>8.0} req/s  p50 {:>7.1?}  p99 {:>7.1?}  ({} ok, {} failed)",
                round + 1,
                p.rps,
                p.p50,
                p.p99,
                p.ok,
                p.failed
            );
        }
    }
    let ratios: Vec<f64> = baseline
        .iter()
        .zip(&warm)
        .map(|(b, w)| w.rps / b.rps)
        .collect();
    println!(
        "  warm Verify / baseline throughput: {}",
        ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  cold Verify (store lookup + argon2id m=19456 t=2 p=1): median {:?}, min {:?}, max {:?}",
        cold[cold.len() / 2],
        cold[0],
        cold[cold.len() - 1]
    );
    if let (Some(url), Some(before)) = (&redis_url, redis_before) {
        let after = commandstats(url).await?;
        let calls = |s: &[(String, u64, f64)], name: &str| {
            s.iter().find(|c| c.0 == name).map_or(0, |c| c.1)
        };
        let script_calls = calls(&after, "evalsha") + calls(&after, "eval")
            - calls(&before, "evalsha")
            - calls(&before, "eval");
        println!(
            "  Redis round trips per warm Verify: {:.3} ({script_calls} script calls for {verifies} verifies: {:.2} decisions per call)",
            script_calls as f64 / verifies.max(1) as f64,
            verifies as f64 / script_calls.max(1) as f64
        );
        // The script's own cost, measured alone: sequential decisions with nothing else running
        // (under the load above, Redis shares two cores with client and server, and its
        // per-call times include waiting for a core).
        let backend = RedisBackend::connect_lazy(&RedisBackendConfig::new(url.clone()))?;
        let backend = QuotaBackend::Redis(backend);
        let windows: Vec<stanna_quota::NamedWindow> = limits
            .resolve(RateLimits::product_default())
            .named()
            .into_iter()
            .map(|(name, limit)| stanna_quota::NamedWindow {
                name: name.into(),
                limit,
            })
            .collect();
        let mut redis = redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut redis)
            .await?;
        let run = stanna_testkit::random_suffix();
        // 100 subjects, created first, then 50 decisions each: the steady state (an existing
        // subject within its limits), not the one-off creation of a subject's state.
        for i in 0..100 {
            backend
                .decide(
                    &format!("bench{run}{i}"),
                    1,
                    &windows,
                    stanna_quota::Mode::Consume,
                    None,
                )
                .await?;
        }
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut redis)
            .await?;
        for i in 0..5000 {
            backend
                .decide(
                    &format!("bench{run}{}", i % 100),
                    1,
                    &windows,
                    stanna_quota::Mode::Consume,
                    None,
                )
                .await?;
        }
        incr_baseline(url).await?;
        let stats = commandstats(url).await?;
        let usec = |name: &str| stats.iter().find(|c| c.0 == name).map_or(0.0, |c| c.2);
        println!(
            "  Redis server-side cost, measured alone (INFO commandstats): the script (EVALSHA) {:.2} µs/call; INCR {:.2} µs/call (script = {:.0}× INCR); an empty EVAL {:.2} µs/call (script = {:.1}× empty EVAL)",
            usec("evalsha"),
            usec("incr"),
            usec("evalsha") / usec("incr").max(0.001),
            usec("eval"),
            usec("evalsha") / usec("eval").max(0.001)
        );
    }
    Ok(())
}

struct Phase {
    rps: f64,
    p50: Duration,
    p99: Duration,
    ok: u64,
    failed: u64,
}

async fn run_phase<F, Fut>(call: F) -> Phase
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let start = Instant::now();
    let concurrency = concurrency();
    let tasks: Vec<_> = (0..concurrency)
        .map(|worker| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(100_000);
                let (mut ok, mut failed, mut i) = (0u64, 0u64, worker);
                while start.elapsed() < PHASE {
                    let t = Instant::now();
                    if call(i).await {
                        ok += 1
                    } else {
                        failed += 1
                    }
                    latencies.push(t.elapsed());
                    i += concurrency;
                }
                (latencies, ok, failed)
            })
        })
        .collect();
    let (mut all, mut ok, mut failed) = (Vec::new(), 0, 0);
    for task in tasks {
        let (l, o, f) = task.await.expect("bench task");
        all.extend(l);
        ok += o;
        failed += f;
    }
    let elapsed = start.elapsed();
    all.sort();
    Phase {
        rps: (ok + failed) as f64 / elapsed.as_secs_f64(),
        p50: all[all.len() / 2],
        p99: all[all.len() * 99 / 100],
        ok,
        failed,
    }
}

/// (command, calls, usec_per_call) from `INFO commandstats`.
async fn commandstats(url: &str) -> Result<Vec<(String, u64, f64)>, Box<dyn std::error::Error>> {
    let mut redis = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut redis)
        .await?;
    Ok(info
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            };
            Some((
                name.to_owned(),
                field("calls")?.parse().ok()?,
                field("usec_per_call")?.parse().ok()?,
            ))
        })
        .collect())
}

/// 20 000 INCRs and 20 000 empty EVALs, pipelined, so `INFO commandstats` has baseline costs
/// beside the script's.
async fn incr_baseline(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut redis = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    for _ in 0..20 {
        let mut pipe = redis::pipe();
        for _ in 0..1000 {
            pipe.cmd("INCR").arg("stanna:bench:incr").ignore();
            pipe.cmd("EVAL").arg("return 1").arg(0).ignore();
        }
        let _: () = pipe.query_async(&mut redis).await?;
    }
    Ok(())
}
