//! The one place the services are wired together: settings → the services this process runs
//! (served by `serve.rs`).
//!
//! The all-in-one process shares one store between the registry and auth-check, wires auth-check
//! to the quota service object and the gateway to auth-check and the registry in memory (each
//! gRPC service still listens on its port, so grpcurl works against each); a service run alone
//! reaches the others over gRPC at their `STANNA_*_URL`. Tests build the same graph with
//! [`Overrides`] for what they replace (the clock, a connection, the hash check).

use std::sync::Arc;

use stanna_auth_check::{AuthCheckService, HashCheck, QuotaConnection, Verifier};
use stanna_gateway::{AuthCheckConnection, Gateway, GatewayMetrics};
use stanna_key_registry::{AdminToken, Registry};
use stanna_keys::Clock;
use stanna_quota_service::{QuotaMetrics, QuotaService};
use stanna_store::KeyStore;
use stanna_telemetry::metrics::Registry as MetricsRegistry;

use crate::settings::{ServiceName, Settings};

/// What a test replaces in the graph; everything unset is built from the settings.
#[derive(Default)]
pub struct Overrides {
    /// "Now" for the registry and auth-check (a `ManualClock` in tests).
    pub clock: Option<Clock>,
    /// How auth-check reaches the quota (e.g. a channel to a port with nothing behind it).
    pub quota: Option<QuotaConnection>,
    /// How the gateway reaches auth-check.
    pub auth_check: Option<AuthCheckConnection>,
    /// How the gateway reaches the registry.
    pub registry: Option<stanna_grpc::Transport>,
    /// auth-check's check of a key against its stored hash.
    pub hash_check: Option<Arc<dyn HashCheck>>,
}

/// Why the system could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A setting is missing or unusable; the message names the variable.
    #[error("{0}")]
    Setting(String),
    /// The key store could not be opened or migrated.
    #[error("opening the key store failed")]
    Store(#[from] stanna_store::StoreError),
    /// The argon2 settings are out of range.
    #[error("invalid argon2 settings")]
    Hash(#[from] stanna_keys::HashError),
    /// The quota backend could not be set up.
    #[error("setting up the quota failed")]
    Quota(#[from] stanna_quota::QuotaError),
    /// A gRPC client could not be set up.
    #[error("setting up a gRPC client failed")]
    Grpc(#[from] stanna_grpc::ServeError),
    /// The gateway could not be built.
    #[error(transparent)]
    Gateway(#[from] stanna_gateway::StartError),
}

/// The services this process runs, built and ready to serve.
pub struct System {
    pub(crate) settings: Settings,
    pub(crate) store: Option<KeyStore>,
    pub(crate) registry: Option<(Registry, AdminToken)>,
    pub(crate) verifier: Option<Verifier>,
    pub(crate) quota: Option<QuotaService>,
    pub(crate) gateway: Option<Gateway>,
    pub(crate) metrics: MetricsRegistry,
}

impl System {
    /// Builds what `settings` asks for: every service (all-in-one) or one (split mode).
    ///
    /// # Errors
    /// [`BuildError`] for a missing setting (the admin token of a registry or gateway, the URLs
    /// of a gateway run alone), a store that cannot be opened, or an unusable setting.
    pub async fn build(settings: Settings, overrides: Overrides) -> Result<Self, BuildError> {
        let mut metrics = stanna_telemetry::metrics::new_registry();
        let all_in_one = settings.service.is_none();
        let needs_store =
            settings.runs(ServiceName::Registry) || settings.runs(ServiceName::AuthCheck);
        let store = if needs_store {
            Some(KeyStore::connect(&settings.shared.database_url).await?)
        } else {
            None
        };
        let clock = overrides
            .clock
            .clone()
            .unwrap_or_else(stanna_keys::system_clock);

        let registry = match &store {
            Some(store) if settings.runs(ServiceName::Registry) => {
                let token = admin_token(&settings)?;
                let core = stanna_key_registry::build(
                    &settings.registry,
                    &settings.shared,
                    store.clone(),
                    clock.clone(),
                )?;
                Some((core, token))
            }
            _ => None,
        };

        let quota = if settings.runs(ServiceName::Quota)
            || (settings.runs(ServiceName::AuthCheck) && settings.auth_check.quota_url.is_none())
        {
            Some(QuotaService::new(
                settings.quota.backend()?,
                QuotaMetrics::register(&mut metrics),
            ))
        } else {
            None
        };

        let verifier = match &store {
            Some(store) if settings.runs(ServiceName::AuthCheck) => {
                let connection = match (overrides.quota, &settings.auth_check.quota_url, &quota) {
                    (Some(connection), _, _) => connection,
                    (None, Some(url), _) => stanna_grpc::lazy_channel(url)?.into(),
                    (None, None, Some(local)) => {
                        QuotaConnection::InProcess(Arc::new(local.clone()))
                    }
                    (None, None, None) => unreachable!("a local quota is built when no URL is set"),
                };
                let mut builder = Verifier::builder(
                    store.clone(),
                    connection,
                    settings.auth_check.verifier_settings(&settings.shared),
                )
                .clock(clock.clone())
                .metrics(stanna_auth_check::VerifyMetrics::register(&mut metrics));
                if let Some(check) = overrides.hash_check {
                    builder = builder.hash_check(check);
                }
                Some(builder.build())
            }
            _ => None,
        };

        let gateway = if settings.runs(ServiceName::Gateway) {
            let token = admin_token(&settings)?;
            let auth_check = match (
                overrides.auth_check,
                &settings.gateway.auth_check_url,
                &verifier,
            ) {
                (Some(connection), _, _) => connection,
                (None, Some(url), _) => stanna_grpc::lazy_channel(url)?.into(),
                (None, None, Some(verifier)) => {
                    let service: Arc<dyn stanna_proto::keys::v1::auth_check_server::AuthCheck> =
                        Arc::new(AuthCheckService::new(verifier.clone()));
                    stanna_grpc::Connection::InProcess(service)
                }
                (None, None, None) => return Err(missing_url("STANNA_AUTH_CHECK_URL", 50052)),
            };
            let registry_transport = match (
                overrides.registry,
                &settings.gateway.registry_url,
                &registry,
            ) {
                (Some(transport), _, _) => transport,
                (None, Some(url), _) => stanna_grpc::lazy_channel(url)?,
                (None, None, Some((core, token))) => in_memory_registry(core, token),
                (None, None, None) => return Err(missing_url("STANNA_REGISTRY_URL", 50051)),
            };
            Some(Gateway::new(
                &settings.gateway,
                auth_check,
                registry_transport,
                token.expose(),
                GatewayMetrics::register(&mut metrics),
            )?)
        } else {
            None
        };
        if all_in_one
            || settings.runs(ServiceName::Registry)
            || settings.runs(ServiceName::AuthCheck)
        {
            tracing::info!(
                database = %crate::redact::url(&settings.shared.database_url),
                quota = quota.as_ref().map_or("remote", QuotaService::backend_kind),
                "store opened"
            );
        }
        Ok(Self {
            settings,
            store,
            registry,
            verifier,
            quota,
            gateway,
            metrics,
        })
    }

    /// The Verify core, when this process runs auth-check.
    pub fn verifier(&self) -> Option<&Verifier> {
        self.verifier.as_ref()
    }

    /// The KeyRegistry service wired in memory behind its admin token (what grpcurl reaches on
    /// its port), when this process runs the registry.
    pub fn registry_transport(&self) -> Option<stanna_grpc::Transport> {
        self.registry
            .as_ref()
            .map(|(core, token)| in_memory_registry(core, token))
    }
}

/// The registry behind its admin-token check, wired in memory.
fn in_memory_registry(core: &Registry, token: &AdminToken) -> stanna_grpc::Transport {
    stanna_grpc::in_memory(stanna_key_registry::grpc::authenticated_service(
        core.clone(),
        token.clone(),
    ))
}

/// The admin token a registry or gateway needs.
fn admin_token(settings: &Settings) -> Result<AdminToken, BuildError> {
    settings.registry.admin_token.clone().ok_or_else(|| {
        BuildError::Setting(format!(
            "STANNA_ADMIN_TOKEN is required when a service runs alone: set it to a random string of at least {} characters",
            AdminToken::MIN_LEN
        ))
    })
}

fn missing_url(name: &str, port: u16) -> BuildError {
    BuildError::Setting(format!(
        "{name} is required when the gateway runs alone (e.g. http://127.0.0.1:{port})"
    ))
}
