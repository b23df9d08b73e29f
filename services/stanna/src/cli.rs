//! Command-line interface: subcommands, flags and their `STANNA_*` environment variables.

use clap::{Parser, Subcommand, ValueEnum};

/// Stanna Keys: API keys for a workspace product — create, verify, rate-limit.
#[derive(Debug, Parser)]
#[command(name = "stanna", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole system in one process (default), or one service alone.
    Serve(Box<ServeArgs>),
    /// Check a service: gRPC health at host:port, or GET http://host:port/healthz for the gateway;
    /// exit 0 when it answers SERVING / 200 within 3 s, 1 otherwise.
    Healthcheck {
        /// host:port of a Stanna gRPC service, or an http:// URL of the gateway.
        addr: String,
    },
}

/// Which service `stanna serve` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServiceName {
    /// The KeyRegistry gRPC service alone (requires STANNA_ADMIN_TOKEN).
    Registry,
    /// The AuthCheck gRPC service alone (Verify); set STANNA_QUOTA_URL to use a quota service.
    AuthCheck,
    /// The Quota gRPC service alone; set STANNA_REDIS_URL to share limits between processes.
    Quota,
    /// The public HTTP gateway alone (requires STANNA_AUTH_CHECK_URL, STANNA_REGISTRY_URL and
    /// STANNA_ADMIN_TOKEN).
    Gateway,
}

/// Arguments of `stanna serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Run only this service (split mode); omit to run everything in one process.
    pub service: Option<ServiceName>,

    /// Prometheus `/metrics` listener of this process (port 0: any free port, logged). Default:
    /// 127.0.0.1:9464 for the all-in-one process; alone: gateway 9464, registry 9465,
    /// auth-check 9466, quota 9467.
    #[arg(long, env = "STANNA_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Settings shared by the services (store, default limits, argon2).
    #[command(flatten)]
    pub shared: stanna_config::SharedConfig,

    /// Settings of the key-registry.
    #[command(flatten)]
    pub registry: stanna_key_registry::Config,

    /// Settings of auth-check.
    #[command(flatten)]
    pub auth_check: stanna_auth_check::Config,

    /// Settings of the quota service.
    #[command(flatten)]
    pub quota: stanna_quota_service::Config,

    /// Settings of the gateway.
    #[command(flatten)]
    pub gateway: stanna_gateway::Config,
}

impl ServeArgs {
    /// The name this process reports in traces (unless `OTEL_SERVICE_NAME` says otherwise).
    pub fn service_name(&self) -> &'static str {
        match self.service {
            None => "stanna",
            Some(ServiceName::Registry) => "stanna-key-registry",
            Some(ServiceName::AuthCheck) => "stanna-auth-check",
            Some(ServiceName::Quota) => "stanna-quota",
            Some(ServiceName::Gateway) => "stanna-gateway",
        }
    }

    /// Where this process serves `/metrics`.
    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        let port = match self.service {
            None | Some(ServiceName::Gateway) => 9464,
            Some(ServiceName::Registry) => 9465,
            Some(ServiceName::AuthCheck) => 9466,
            Some(ServiceName::Quota) => 9467,
        };
        self.metrics_addr
            .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_flag_and_variable_is_unique() {
        super::Cli::command().debug_assert();
    }
}
