//! Settings shared by several services. Each service's own `Config` holds only what is its own;
//! these are given once, so `stanna serve` (every service in one process) has one
//! `--database-url`, not one per service.

use std::str::FromStr;
use std::time::Duration;

use stanna_keys::{HashParams, RateLimits, WindowLimit};

/// The store, the default limits and the argon2 cost.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "shared_config")]
#[command(next_help_heading = "shared")]
pub struct SharedConfig {
    /// The key store: a SQLite file (`sqlite://path?mode=rwc`) or `postgres://…`.
    #[arg(
        long,
        env = "STANNA_DATABASE_URL",
        default_value = "sqlite://stanna.db?mode=rwc"
    )]
    pub database_url: String,

    /// Default burst window, `LIMIT/PERIOD`.
    #[arg(long, env = "STANNA_RATE_LIMIT_BURST", default_value = "100/60s")]
    pub rate_limit_burst: WindowLimit,

    /// Default long window, `LIMIT/PERIOD`.
    #[arg(long, env = "STANNA_RATE_LIMIT_HOURLY", default_value = "1000/3600s")]
    pub rate_limit_hourly: WindowLimit,

    /// argon2id memory cost in KiB (for new keys; stored hashes carry their own).
    #[arg(long, env = "STANNA_ARGON2_M_KIB", default_value_t = 19456)]
    pub argon2_m_kib: u32,

    /// argon2id iterations.
    #[arg(long, env = "STANNA_ARGON2_T", default_value_t = 2)]
    pub argon2_t: u32,

    /// argon2id lanes.
    #[arg(long, env = "STANNA_ARGON2_P", default_value_t = 1)]
    pub argon2_p: u32,

    /// argon2 runs at once per process (default: the number of cores).
    #[arg(long, env = "STANNA_ARGON2_CONCURRENCY")]
    pub argon2_concurrency: Option<usize>,
}

impl SharedConfig {
    /// Settings for tests: `database_url`, the product's default limits and the cheapest argon2
    /// parameters (tests are not about hashing cost).
    pub fn for_tests(database_url: impl Into<String>) -> Self {
        let fast = HashParams::insecure_fast_for_tests();
        let defaults = RateLimits::product_default();
        Self {
            database_url: database_url.into(),
            rate_limit_burst: defaults.burst,
            rate_limit_hourly: defaults.hourly,
            argon2_m_kib: fast.m_kib,
            argon2_t: fast.t,
            argon2_p: fast.p,
            argon2_concurrency: Some(2),
        }
    }

    /// The configured default windows.
    pub fn default_limits(&self) -> RateLimits {
        RateLimits {
            burst: self.rate_limit_burst,
            hourly: self.rate_limit_hourly,
        }
    }

    /// The configured argon2id cost.
    pub fn hash_params(&self) -> HashParams {
        HashParams {
            m_kib: self.argon2_m_kib,
            t: self.argon2_t,
            p: self.argon2_p,
        }
    }

    /// argon2 runs allowed at once.
    pub fn argon2_concurrency(&self) -> usize {
        self.argon2_concurrency
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }
}

/// A duration written as a number and a unit: `250ms`, `5s`, `2m`, `1h` (the one parser,
/// [`stanna_keys::parse_duration`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationArg(pub Duration);

impl FromStr for DurationArg {
    type Err = stanna_keys::DurationSyntax;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        stanna_keys::parse_duration(value).map(Self)
    }
}
