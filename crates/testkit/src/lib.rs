//! Helpers shared by the test suites: temporary directories, free ports, a fresh database per
//! test, Redis of the test's own, a PostgreSQL primary and replica of the test's own, a TCP proxy to cut a server away, clocks a test moves, and loud
//! skips.
//!
//! Tests find PostgreSQL and Redis through `DATABASE_URL` and `REDIS_URL` (the product itself reads
//! only `STANNA_*` names). Unset — a laptop without those servers — the variants that need them
//! print a `SKIPPED` line and return; `.ci/run` sets both, and sets
//! `STANNA_REQUIRE_ALL_VARIANTS=1`, under which a skip fails the test: a skip CI cannot see
//! (libtest hides a passing test's output) cannot pass unnoticed.

mod clock;
mod dir;
mod pg_replication;
pub mod pki;
mod ports;
mod postgres;
mod redis;
mod tcp_proxy;
mod urls;

pub use clock::{ManualClock, ShiftedClock};
pub use dir::{TempDir, random_suffix};
pub use pg_replication::OwnPostgresReplication;
pub use ports::free_port;
pub use postgres::{
    PostgresDatabase, fresh_postgres_database, fresh_postgres_database_blocking, postgres_url,
};
pub use redis::{OwnRedis, OwnRedisCluster, redis_url};
pub use tcp_proxy::TcpProxy;
pub use urls::{socket_addr_of, with_database, with_host};

/// Polls `check` every 50 ms until it holds; panics after `cap`, naming `what`.
///
/// # Panics
/// When `check` still fails after `cap`.
pub async fn eventually<F, Fut>(cap: std::time::Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < cap,
            "{what} did not happen within {cap:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The URL of a shared server from the environment variable `var`, or `None` after a loud skip
/// line for `test` (the `server` variant did not run).
fn server_url(var: &str, server: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            skip(
                test,
                &format!("{var} is not set, so the {server} variant did not run"),
            );
            None
        }
    }
}

/// Says loudly which test was skipped and why — or, under `STANNA_REQUIRE_ALL_VARIANTS=1` (what
/// CI sets), fails it: there a missing server or tool is a broken machine, not a reason to skip.
///
/// # Panics
/// Under `STANNA_REQUIRE_ALL_VARIANTS=1`.
pub fn skip(test: &str, why: &str) {
    if std::env::var("STANNA_REQUIRE_ALL_VARIANTS").is_ok_and(|v| v == "1") {
        panic!("{test} would be SKIPPED ({why}), and STANNA_REQUIRE_ALL_VARIANTS=1 forbids skips");
    }
    eprintln!("SKIPPED {test}: {why}");
    println!("SKIPPED {test}: {why}");
}
