//! The quota service's settings: its listener and where decisions are kept.

use std::net::SocketAddr;

use stanna_quota::{MemoryBackend, QuotaBackend, QuotaError, RedisBackend, RedisBackendConfig};

/// Settings of the quota service.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "quota_config")]
#[command(next_help_heading = "quota")]
pub struct Config {
    /// Where the Quota gRPC service listens.
    #[arg(
        id = "quota_addr",
        long = "quota-addr",
        env = "STANNA_QUOTA_ADDR",
        default_value = "127.0.0.1:50053",
        value_parser = stanna_config::listen_addr
    )]
    pub addr: SocketAddr,

    /// Redis for limits shared by several processes (`redis://host:6379`); unset: in process.
    #[arg(long, env = "STANNA_REDIS_URL", hide_env_values = true, value_parser = stanna_config::redis_url)]
    pub redis_url: Option<String>,
}

impl Config {
    /// Settings for tests: an ephemeral port, decisions in process.
    pub fn for_tests() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            redis_url: None,
        }
    }

    /// The backend this configuration selects.
    ///
    /// # Errors
    /// [`QuotaError::InvalidArgument`] for an unreadable Redis URL.
    pub fn backend(&self) -> Result<QuotaBackend, QuotaError> {
        match &self.redis_url {
            Some(url) => Ok(QuotaBackend::Redis(RedisBackend::connect_lazy(
                &RedisBackendConfig::new(url.clone()),
            )?)),
            None => Ok(QuotaBackend::Memory(MemoryBackend::new())),
        }
    }
}
