//! The key-registry's settings: flags and `STANNA_*` environment variables (clap), or a plain
//! struct in tests via [`Config::for_tests`].

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use stanna_keys::{HashParams, RateLimits, WindowLimit};

/// Settings of the key-registry service.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Where the KeyRegistry gRPC service listens.
    #[arg(
        long = "registry-addr",
        env = "STANNA_REGISTRY_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    pub addr: SocketAddr,

    /// The key store: a SQLite file (`sqlite://path?mode=rwc`) or `postgres://…`.
    #[arg(
        long,
        env = "STANNA_DATABASE_URL",
        default_value = "sqlite://stanna.db?mode=rwc"
    )]
    pub database_url: String,

    /// Bearer token admins present in the `authorization` metadata (at least 16 characters).
    /// The all-in-one `stanna serve` generates one when unset; a service run alone requires it.
    #[arg(long, env = "STANNA_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<AdminToken>,

    /// Keys one user may hold in one workspace (keys past their expiry do not count).
    #[arg(long, env = "STANNA_MAX_KEYS_PER_USER", default_value_t = 100)]
    pub max_keys_per_user: u32,

    /// Default burst window, `LIMIT/PERIOD`.
    #[arg(long, env = "STANNA_RATE_LIMIT_BURST", default_value = "100/60s")]
    pub rate_limit_burst: WindowLimit,

    /// Default long window, `LIMIT/PERIOD`.
    #[arg(long, env = "STANNA_RATE_LIMIT_HOURLY", default_value = "1000/3600s")]
    pub rate_limit_hourly: WindowLimit,

    /// argon2id memory cost in KiB.
    #[arg(long, env = "STANNA_ARGON2_M_KIB", default_value_t = 19456)]
    pub argon2_m_kib: u32,

    /// argon2id iterations.
    #[arg(long, env = "STANNA_ARGON2_T", default_value_t = 2)]
    pub argon2_t: u32,

    /// argon2id lanes.
    #[arg(long, env = "STANNA_ARGON2_P", default_value_t = 1)]
    pub argon2_p: u32,

    /// argon2 runs at once (default: the number of cores).
    #[arg(long, env = "STANNA_ARGON2_CONCURRENCY")]
    pub argon2_concurrency: Option<usize>,
}

impl Config {
    /// Settings for tests: the given database and token, an ephemeral port, the product's default
    /// limits and the cheapest argon2 parameters (tests are not about hashing cost).
    pub fn for_tests(database_url: impl Into<String>, admin_token: &str) -> Self {
        let fast = HashParams::insecure_fast_for_tests();
        let defaults = RateLimits::product_default();
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: database_url.into(),
            admin_token: Some(admin_token.parse().expect("test token is valid")),
            max_keys_per_user: 100,
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
}

/// The admin bearer token. Its `Debug` is redacted so configuration dumps never print it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// The shortest token accepted: a short token is a guessable token.
    pub const MIN_LEN: usize = 16;

    /// The token's bytes, for the constant-time comparison.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for AdminToken {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.len() < Self::MIN_LEN {
            return Err(format!(
                "the admin token must be at least {} characters",
                Self::MIN_LEN
            ));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the admin token must be printable ASCII without spaces".to_owned());
        }
        Ok(Self(value.to_owned()))
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}
