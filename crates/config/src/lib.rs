//! Settings shared by several services. Each service's own `Config` holds only what is its own;
//! these are given once, so `stanna serve` (every service in one process) has one
//! `--database-url`, not one per service.

mod parse;
pub mod session;
pub mod tls;

use stanna_keys::{HashParams, RateLimits, WindowLimit};

pub use parse::{
    DurationArg, count_in, database_url, duration_in, listen_addr, redis_url, replica_url,
    service_url,
};
pub use session::{PublicUrl, SessionConfig, SessionSecret, public_url};
pub use tls::GrpcTlsConfig;

/// The store, the default limits and the argon2 cost.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "shared_config")]
#[command(next_help_heading = "shared")]
pub struct SharedConfig {
    /// The key store: a SQLite file (`sqlite://stanna.db`, created if missing) or
    /// `postgres://user@host:5432/db`.
    #[arg(
        long,
        env = "STANNA_DATABASE_URL",
        default_value = "sqlite://stanna.db?mode=rwc",
        hide_env_values = true,
        value_parser = database_url
    )]
    pub database_url: String,

    /// Default burst window, `LIMIT/PERIOD`.
    #[arg(long, env = "STANNA_RATE_LIMIT_BURST", default_value = "100/60s")]
    pub rate_limit_burst: WindowLimit,

    /// Default long window, `LIMIT/PERIOD`.
    #[arg(long, env = "STANNA_RATE_LIMIT_HOURLY", default_value = "1000/3600s")]
    pub rate_limit_hourly: WindowLimit,

    /// argon2id memory cost in KiB, 8 × lanes to 4 GiB (for new keys; stored hashes carry their
    /// own).
    #[arg(long, env = "STANNA_ARGON2_M_KIB", default_value_t = 19456, value_parser = count_in(8u32, 4 * 1024 * 1024))]
    pub argon2_m_kib: u32,

    /// argon2id iterations, 1 to 64.
    #[arg(long, env = "STANNA_ARGON2_T", default_value_t = 2, value_parser = count_in(1u32, 64))]
    pub argon2_t: u32,

    /// argon2id lanes, 1 to 64.
    #[arg(long, env = "STANNA_ARGON2_P", default_value_t = 1, value_parser = count_in(1u32, 64))]
    pub argon2_p: u32,

    /// argon2 runs at once per process, 1 to 1024 (default: the number of cores).
    #[arg(long, env = "STANNA_ARGON2_CONCURRENCY", value_parser = count_in(1usize, 1024))]
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

    /// The configured argon2id cost, checked together: argon2 needs at least 8 KiB per lane.
    ///
    /// # Errors
    /// A message naming the variables.
    pub fn checked_hash_params(&self) -> Result<HashParams, String> {
        if self.argon2_m_kib < 8 * self.argon2_p {
            return Err(format!(
                "STANNA_ARGON2_M_KIB ({}) must be at least 8 × STANNA_ARGON2_P ({} lanes) = {} KiB",
                self.argon2_m_kib,
                self.argon2_p,
                8 * self.argon2_p
            ));
        }
        Ok(self.hash_params())
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
