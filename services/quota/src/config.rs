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

    /// Redis for limits shared by several processes (`redis://host:6379`), or a Redis Cluster's
    /// nodes comma-separated (`redis://h1:6379,redis://h2:6379`); unset: in process.
    #[arg(long, env = "STANNA_REDIS_URL", hide_env_values = true, value_parser = stanna_config::redis_url)]
    pub redis_url: Option<String>,

    /// For a `rediss://` URL: the CA certificate(s) (PEM) Redis's certificate must be signed by
    /// (default: the system's roots).
    #[arg(long, env = "STANNA_REDIS_CA_FILE")]
    pub redis_ca_file: Option<std::path::PathBuf>,
}

impl Config {
    /// Settings for tests: an ephemeral port, decisions in process.
    pub fn for_tests() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            redis_url: None,
            redis_ca_file: None,
        }
    }

    /// The backend this configuration selects.
    ///
    /// # Errors
    /// [`QuotaError::InvalidArgument`] for an unreadable Redis URL or CA file.
    pub fn backend(&self) -> Result<QuotaBackend, QuotaError> {
        match &self.redis_url {
            Some(url) => {
                let mut config = RedisBackendConfig::new(url.clone());
                if let Some(path) = &self.redis_ca_file {
                    let pem = std::fs::read(path).map_err(|e| {
                        QuotaError::invalid(
                            "STANNA_REDIS_CA_FILE",
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })?;
                    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                        return Err(QuotaError::invalid(
                            "STANNA_REDIS_CA_FILE",
                            format!("{} holds no PEM certificate", path.display()),
                        ));
                    }
                    config.ca_pem = Some(pem);
                }
                Ok(QuotaBackend::Redis(RedisBackend::connect_lazy(&config)?))
            }
            None => Ok(QuotaBackend::Memory(MemoryBackend::new())),
        }
    }
}
