//! auth-check's settings: its listener, where the quota is, the fail mode, and the timings of the
//! cache, the change poll and the last-used write-back.

use std::net::SocketAddr;
use std::time::Duration;

use stanna_config::{DurationArg, SharedConfig};

use crate::{FailMode, VerifierSettings};

/// Settings of the auth-check service.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "auth_check_config")]
#[command(next_help_heading = "auth-check")]
pub struct Config {
    /// Where the AuthCheck gRPC service listens (internal network only: no token).
    #[arg(
        id = "auth_check_addr",
        long = "auth-check-addr",
        env = "STANNA_AUTH_CHECK_ADDR",
        default_value = "127.0.0.1:50052",
        value_parser = stanna_config::listen_addr
    )]
    pub addr: SocketAddr,

    /// A PostgreSQL streaming replica of `STANNA_DATABASE_URL` for key lookups and the change
    /// feed, read while it has caught up with the primary (writes, and what it cannot answer, go
    /// to the primary); unset: everything reads the primary.
    #[arg(
        long,
        env = "STANNA_DATABASE_READ_URL",
        hide_env_values = true,
        value_parser = stanna_config::replica_url
    )]
    pub database_read_url: Option<String>,

    /// The Quota service (`http://host:50053`); unset: decide in this process.
    #[arg(long, env = "STANNA_QUOTA_URL", value_parser = stanna_config::service_url)]
    pub quota_url: Option<String>,

    /// When the quota cannot decide: `open` allows (no rate-limit headers), `closed` refuses (503).
    #[arg(
        long,
        env = "STANNA_QUOTA_FAIL_MODE",
        value_enum,
        default_value = "open"
    )]
    pub quota_fail_mode: FailMode,

    /// How often last-used times are written back (at most one write per key per interval),
    /// 100ms to 1h.
    #[arg(long, env = "STANNA_LAST_USED_FLUSH", default_value = "5s",
        value_parser = stanna_config::duration_in(Duration::from_millis(100), Duration::from_secs(3600)))]
    pub last_used_flush: DurationArg,

    /// How long cached keys keep verifying once the store stops answering, 0s (not at all) to
    /// 1h.
    #[arg(long, env = "STANNA_STALE_IF_ERROR", default_value = "30s",
        value_parser = stanna_config::duration_in(Duration::ZERO, Duration::from_secs(3600)))]
    pub stale_if_error: DurationArg,

    /// Verified keys kept in memory, 1 to 10 000 000.
    #[arg(long, env = "STANNA_VERIFY_CACHE_SIZE", default_value_t = 100_000,
        value_parser = stanna_config::count_in(1usize, 10_000_000))]
    pub verify_cache_size: usize,

    /// How often the store is asked what changed, 10ms to 30s (revocations reach this process
    /// within about this interval plus a query: above 1s the one-second promise no longer holds).
    #[arg(long, env = "STANNA_CHANGE_POLL_INTERVAL", default_value = "250ms",
        value_parser = stanna_config::duration_in(Duration::from_millis(10), Duration::from_secs(30)))]
    pub change_poll_interval: DurationArg,

    /// A dashboard user's burst window across their sessions, `LIMIT/PERIOD` (generous: a page
    /// makes a few calls per action).
    #[arg(
        long,
        env = "STANNA_SESSION_RATE_LIMIT_BURST",
        default_value = "600/60s"
    )]
    pub session_rate_limit_burst: stanna_keys::WindowLimit,

    /// A dashboard user's long window across their sessions, `LIMIT/PERIOD`.
    #[arg(
        long,
        env = "STANNA_SESSION_RATE_LIMIT_HOURLY",
        default_value = "10000/3600s"
    )]
    pub session_rate_limit_hourly: stanna_keys::WindowLimit,
}

impl Config {
    /// Settings for tests: an ephemeral port, in-process quota, fail-open, and the shipped
    /// timings (250 ms polls, 5 s flushes), so tests check what users get.
    pub fn for_tests() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_read_url: None,
            quota_url: None,
            quota_fail_mode: FailMode::Open,
            last_used_flush: DurationArg(Duration::from_secs(5)),
            stale_if_error: DurationArg(Duration::from_secs(30)),
            verify_cache_size: 100_000,
            change_poll_interval: DurationArg(Duration::from_millis(250)),
            session_rate_limit_burst: "600/60s".parse().expect("valid"),
            session_rate_limit_hourly: "10000/3600s".parse().expect("valid"),
        }
    }

    /// The core's settings.
    pub fn verifier_settings(&self, shared: &SharedConfig) -> VerifierSettings {
        VerifierSettings {
            defaults: shared.default_limits(),
            session_limits: stanna_keys::RateLimits {
                burst: self.session_rate_limit_burst,
                hourly: self.session_rate_limit_hourly,
            },
            cache_size: self.verify_cache_size,
            argon2_concurrency: shared.argon2_concurrency(),
            fail_mode: self.quota_fail_mode,
            stale_if_error: self.stale_if_error.0,
            quota_timeout: Duration::from_secs(1),
        }
    }
}
