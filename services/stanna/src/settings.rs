//! What `stanna serve` is told: which service(s) to run and every service's settings, as clap
//! arguments with their `STANNA_*` variables — or a plain struct in tests
//! ([`Settings::for_tests`]).

use std::net::SocketAddr;
use std::time::Duration;

use clap::ValueEnum;

/// The session secret of [`Settings::for_tests`] (tests mint login tokens with it).
pub const TEST_SESSION_SECRET: &str = "test-session-secret-of-at-least-32-bytes";

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

/// The arguments of `stanna serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Run only this service (split mode); omit to run everything in one process.
    pub service: Option<ServiceName>,

    /// Prometheus `/metrics` listener of this process (port 0: any free port, logged). Default:
    /// 127.0.0.1:9464 for the all-in-one process; alone: gateway 9464, registry 9465,
    /// auth-check 9466, quota 9467.
    #[arg(long, env = "STANNA_METRICS_ADDR", value_parser = stanna_config::listen_addr)]
    pub metrics_addr: Option<SocketAddr>,

    /// How log lines are written: `text` (readable) or `json` (one object per line).
    #[arg(long, env = "STANNA_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: stanna_telemetry::LogFormat,

    /// On SIGTERM or SIGINT, how long in-flight requests may take to finish before the process
    /// exits anyway, 0s to 10m (a second signal exits at once).
    #[arg(long, env = "STANNA_SHUTDOWN_GRACE", default_value = "10s",
        value_parser = stanna_config::duration_in(Duration::ZERO, Duration::from_secs(600)))]
    pub shutdown_grace: stanna_config::DurationArg,

    /// Settings shared by the services (store, default limits, argon2).
    #[command(flatten)]
    pub shared: stanna_config::SharedConfig,

    /// TLS and mTLS between the services.
    #[command(flatten)]
    pub grpc_tls: stanna_config::GrpcTlsConfig,

    /// Dashboard sign-in (shared by the registry and the gateway).
    #[command(flatten)]
    pub session: stanna_config::SessionConfig,

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

impl Settings {
    /// The rules between settings (each value is in range on its own, checked as it is parsed):
    /// today the argon2 memory against its lanes. Checked before anything starts.
    ///
    /// # Errors
    /// What is wrong, naming the variables.
    pub fn check(&self) -> Result<(), String> {
        self.shared.checked_hash_params().map(|_| ())
    }

    /// Settings for an in-process test of the whole system: the store at `database_url`, every
    /// listener on an ephemeral loopback port, `admin_token`, cheap argon2, the shipped timings.
    pub fn for_tests(database_url: impl Into<String>, admin_token: &str) -> Self {
        Self {
            service: None,
            metrics_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            log_format: stanna_telemetry::LogFormat::Text,
            shutdown_grace: stanna_config::DurationArg(Duration::from_secs(10)),
            shared: stanna_config::SharedConfig::for_tests(database_url),
            grpc_tls: stanna_config::GrpcTlsConfig::default(),
            session: stanna_config::SessionConfig::for_tests(TEST_SESSION_SECRET),
            registry: stanna_key_registry::Config::for_tests(admin_token),
            auth_check: stanna_auth_check::Config::for_tests(),
            quota: stanna_quota_service::Config::for_tests(),
            gateway: stanna_gateway::Config::for_tests(),
        }
    }

    /// Whether this process runs `service` (every one in the all-in-one mode).
    pub fn runs(&self, service: ServiceName) -> bool {
        self.service.is_none_or(|only| only == service)
    }

    /// The TLS of this process's gRPC servers and clients, read from the files given.
    ///
    /// # Errors
    /// What is wrong, naming the variable and the file.
    pub fn grpc_tls(&self) -> Result<stanna_grpc::GrpcTls, String> {
        let t = &self.grpc_tls;
        stanna_grpc::GrpcTls::load(&stanna_grpc::GrpcTlsFiles {
            server_cert: t.grpc_tls_cert_file.as_deref(),
            server_key: t.grpc_tls_key_file.as_deref(),
            client_ca: t.grpc_client_ca_file.as_deref(),
            ca: t.grpc_ca_file.as_deref(),
            client_cert: t.grpc_client_cert_file.as_deref(),
            client_key: t.grpc_client_key_file.as_deref(),
        })
        .map_err(|e| e.to_string())
    }

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
    pub fn metrics_addr(&self) -> SocketAddr {
        let port = match self.service {
            None | Some(ServiceName::Gateway) => 9464,
            Some(ServiceName::Registry) => 9465,
            Some(ServiceName::AuthCheck) => 9466,
            Some(ServiceName::Quota) => 9467,
        };
        self.metrics_addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], port)))
    }
}
