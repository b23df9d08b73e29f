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
use stanna_key_registry::{AdminToken, Credentials, Registry};
use stanna_keys::Clock;
use stanna_quota_service::{QuotaMetrics, QuotaService};
use stanna_store::KeyStore;
use stanna_telemetry::metrics::Registry as MetricsRegistry;

use crate::health::{self, Monitored};
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
    pub(crate) registry: Option<(Registry, Credentials)>,
    /// Purges audit events past `STANNA_AUDIT_RETENTION`, and tombstones past
    /// `STANNA_TOMBSTONE_RETENTION`, while the registry serves.
    pub(crate) retention: stanna_key_registry::Retention,
    pub(crate) verifier: Option<Verifier>,
    pub(crate) quota: Option<QuotaService>,
    pub(crate) gateway: Option<Gateway>,
    pub(crate) metrics: MetricsRegistry,
    /// Each service's health, re-checked while serving (`health.rs`).
    pub(crate) health: Vec<Monitored>,
    /// Calls of this process's gRPC servers, by method and code.
    pub(crate) grpc_metrics: stanna_grpc::GrpcMetrics,
    /// What this process's gRPC servers present and require (`STANNA_GRPC_TLS_*`); `None`:
    /// plaintext.
    pub(crate) grpc_server_tls: Option<tonic::transport::ServerTlsConfig>,
}

impl System {
    /// Builds what `settings` asks for: every service (all-in-one) or one (split mode).
    ///
    /// # Errors
    /// [`BuildError`] for a missing setting (the admin token of a registry or gateway, the URLs
    /// of a gateway run alone), a store that cannot be opened, or an unusable setting.
    pub async fn build(settings: Settings, overrides: Overrides) -> Result<Self, BuildError> {
        let mut metrics = stanna_telemetry::metrics::new_registry();
        let grpc_metrics = stanna_grpc::GrpcMetrics::register(&mut metrics);
        // Checked together, with the variables named (each is in range on its own).
        settings.check().map_err(BuildError::Setting)?;
        let grpc_tls = settings.grpc_tls().map_err(BuildError::Setting)?;
        // A URL of another service: over TLS when it is https://.
        let channel = |variable: &str, url: &str| {
            stanna_grpc::lazy_channel_with(url, &grpc_tls).map_err(|e| match e {
                stanna_grpc::ServeError::PlainUrl(_) => BuildError::Setting(format!(
                    "{variable} ({url}) is http:// but STANNA_GRPC_CA_FILE or STANNA_GRPC_CLIENT_CERT_FILE is set: write https://"
                )),
                other => BuildError::Grpc(other),
            })
        };
        let needs_store =
            settings.runs(ServiceName::Registry) || settings.runs(ServiceName::AuthCheck);
        let store = if needs_store {
            let store = KeyStore::connect(&settings.shared.database_url).await?;
            tracing::info!(
                database = %crate::redact::url(&settings.shared.database_url),
                "store opened"
            );
            Some(store)
        } else {
            None
        };
        let clock = overrides
            .clock
            .clone()
            .unwrap_or_else(stanna_keys::system_clock);
        let mut health = Vec::new();
        // One login-token verifier for the registry (which spends tokens) and the gateway
        // (which shows who a link is for).
        let login = settings
            .session
            .login_verifier(clock.clone())
            .map_err(BuildError::Setting)?
            .map(Arc::new);
        // Checked after the admin token (the older requirement, said first).
        let require_login = || {
            match &login {
            Some(verifier) => Ok(verifier.clone()),
            None => Err(BuildError::Setting(
                "STANNA_SESSION_SECRET (or STANNA_SESSION_SECRET_FILE, or STANNA_SESSION_JWKS_FILE) is required when the registry or the gateway runs alone: give every registry and gateway the same one (the all-in-one `stanna serve` generates one)".to_owned(),
            )),
        }
        };

        // The gateway's own credential: given, or — when the registry and the gateway share this
        // process — made up here (it never leaves the process, so nothing keeps it).
        let gateway_token = match &settings.registry.gateway_token {
            Some(token) => Some(token.clone()),
            None if settings.runs(ServiceName::Registry) && settings.runs(ServiceName::Gateway) => {
                Some(
                    crate::state::random(32)
                        .parse::<AdminToken>()
                        .map_err(BuildError::Setting)?,
                )
            }
            None => None,
        };
        let registry = match &store {
            Some(store) if settings.runs(ServiceName::Registry) => {
                let admins = settings.registry.named_admin_tokens();
                if admins.is_empty() {
                    return Err(BuildError::Setting(format!(
                        "STANNA_ADMIN_TOKEN (or STANNA_ADMIN_TOKEN_FILE, or STANNA_ADMIN_TOKENS_FILE) is required when a service runs alone: set it to a random string of at least {} characters",
                        AdminToken::MIN_LEN
                    )));
                }
                if gateway_token.is_none() {
                    tracing::warn!(
                        "STANNA_GATEWAY_TOKEN is not set: this registry serves admins only, and refuses every gateway"
                    );
                }
                let token = Credentials::new(&admins, gateway_token.as_ref());
                let mut core = stanna_key_registry::build(
                    &settings.registry,
                    &settings.shared,
                    store.clone(),
                    clock.clone(),
                )?;
                core = core.with_sessions(stanna_key_registry::SessionIssuer {
                    verifier: require_login()?,
                    ttl: settings.session.session_ttl.0,
                });
                health.push(Monitored::new(
                    stanna_key_registry::SERVICE,
                    vec![("store", health::store(store.clone()))],
                ));
                Some((core, token))
            }
            _ => None,
        };

        let quota = if settings.runs(ServiceName::Quota)
            || (settings.runs(ServiceName::AuthCheck) && settings.auth_check.quota_url.is_none())
        {
            let backend = settings.quota.backend().map_err(|e| match e {
                // A setting named by the error (STANNA_REDIS_URL, STANNA_REDIS_CA_FILE).
                stanna_quota::QuotaError::InvalidArgument { field, reason } => {
                    BuildError::Setting(format!("{field}: {reason}"))
                }
                other => BuildError::Quota(other),
            })?;
            let service = QuotaService::new(backend, QuotaMetrics::register(&mut metrics));
            check_redis(&settings, &service).await?;
            match &settings.quota.redis_url {
                Some(url) => {
                    tracing::info!(redis = %crate::redact::url(url), "quota decides in Redis")
                }
                None => tracing::info!(
                    "quota decides in this process (limits are not shared with other processes; set STANNA_REDIS_URL to share them)"
                ),
            }
            let checks = if settings.quota.redis_url.is_some() {
                vec![("redis", health::quota(service.clone()))]
            } else {
                Vec::new()
            };
            health.push(Monitored::new(stanna_quota_service::SERVICE, checks));
            Some(service)
        } else {
            None
        };

        let verifier = match &store {
            Some(store) if settings.runs(ServiceName::AuthCheck) => {
                let mut checks = vec![("store", health::store(store.clone()))];
                let connection = match (overrides.quota, &settings.auth_check.quota_url, &quota) {
                    (Some(connection), _, _) => connection,
                    (None, Some(url), _) => {
                        let channel = channel("STANNA_QUOTA_URL", url)?;
                        checks.push((
                            "quota",
                            health::remote(channel.clone(), stanna_quota_service::SERVICE),
                        ));
                        channel.into()
                    }
                    (None, None, Some(local)) => {
                        checks.push((
                            "quota",
                            health::following(status_of(&health, stanna_quota_service::SERVICE)),
                        ));
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
                if settings.auth_check.change_poll_interval.0 > std::time::Duration::from_secs(1) {
                    tracing::warn!(
                        "STANNA_CHANGE_POLL_INTERVAL is over 1s: deleted and deactivated keys may keep working for that long"
                    );
                }
                if let Some(url) = &settings.auth_check.database_read_url {
                    builder = builder
                        .replica(open_replica(url, &settings.shared.database_url, store).await?);
                }
                let verifier = builder.build();
                // Load the ids that exist before serving: until then every uncached key costs a
                // load attempt (or is told to retry). A store not answering yet is left to
                // readiness and the poll's retries.
                if let Err(err) = verifier.poll_changes().await {
                    tracing::warn!(error = %stanna_telemetry::ErrorChain(&err), "could not load the key ids yet; retrying on every change poll");
                }
                checks.push(("key ids", known_ids_loaded(verifier.clone())));
                health.push(Monitored::new(stanna_auth_check::SERVICE, checks));
                Some(verifier)
            }
            _ => None,
        };

        let gateway = if settings.runs(ServiceName::Gateway) {
            let token = gateway_token.clone().ok_or_else(|| {
                BuildError::Setting(format!(
                    "STANNA_GATEWAY_TOKEN (or STANNA_GATEWAY_TOKEN_FILE) is required when the gateway runs alone: give the gateway and every registry the same random string of at least {} characters (not an admin token: the gateway acts only for the key or session of each request)",
                    AdminToken::MIN_LEN
                ))
            })?;
            let login = require_login()?;
            let mut readiness = Vec::new();
            let auth_check = match (
                overrides.auth_check,
                &settings.gateway.auth_check_url,
                &verifier,
            ) {
                (Some(connection), _, _) => connection,
                (None, Some(url), _) => {
                    let channel = channel("STANNA_AUTH_CHECK_URL", url)?;
                    readiness.push((
                        "auth-check",
                        health::remote(channel.clone(), stanna_auth_check::SERVICE),
                    ));
                    channel.into()
                }
                (None, None, Some(verifier)) => {
                    readiness.push((
                        "auth-check",
                        health::following(status_of(&health, stanna_auth_check::SERVICE)),
                    ));
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
                (None, Some(url), _) => {
                    let channel = channel("STANNA_REGISTRY_URL", url)?;
                    readiness.push((
                        "key-registry",
                        health::remote(channel.clone(), stanna_key_registry::SERVICE),
                    ));
                    channel
                }
                (None, None, Some((core, token))) => {
                    readiness.push((
                        "key-registry",
                        health::following(status_of(&health, stanna_key_registry::SERVICE)),
                    ));
                    in_memory_registry(core, token)
                }
                (None, None, None) => return Err(missing_url("STANNA_REGISTRY_URL", 50051)),
            };
            let wiring = stanna_gateway::Wiring {
                auth_check,
                registry: registry_transport,
                readiness,
                metrics: GatewayMetrics::register(&mut metrics),
                sign_in: Some(stanna_gateway::dashboard::SignIn {
                    verifier: login,
                    public_url: settings.session.public_url.clone(),
                }),
            };
            let gateway =
                Gateway::new(&settings.gateway, wiring, token.expose()).map_err(|e| match e {
                    stanna_gateway::StartError::Tls(message) => BuildError::Setting(message),
                    other => BuildError::Gateway(other),
                })?;
            if settings.gateway.registry_url.is_some() {
                check_registry_token(&gateway).await?;
            }
            Some(gateway)
        } else {
            None
        };
        Ok(Self {
            grpc_server_tls: grpc_tls.server,
            retention: stanna_key_registry::Retention {
                audit: settings.registry.audit_retention.0,
                tombstones: settings.registry.tombstone_retention.0,
            },
            settings,
            store,
            registry,
            verifier,
            quota,
            gateway,
            metrics,
            health,
            grpc_metrics,
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

/// The registry behind its credential check, wired in memory.
fn in_memory_registry(core: &Registry, token: &Credentials) -> stanna_grpc::Transport {
    stanna_grpc::in_memory(stanna_key_registry::grpc::authenticated_service(
        core.clone(),
        token.clone(),
    ))
}

fn missing_url(name: &str, port: u16) -> BuildError {
    BuildError::Setting(format!(
        "{name} is required when the gateway runs alone (e.g. http://127.0.0.1:{port})"
    ))
}

/// The status of the monitored `service` (built earlier in [`System::build`]).
fn status_of(health: &[Monitored], service: &str) -> health::Status {
    health
        .iter()
        .find(|m| m.service == service)
        .map(Monitored::status)
        .expect("the service is built before what depends on it")
}

/// Redis reached (PING, on a connection that authenticated and selected its database) before
/// serving: a wrong host, port or password would otherwise turn every request into "allowed, no
/// limits". Unreachable, the process starts only in fail-open mode, saying so loudly (the health
/// monitor repeats it while it lasts, and readiness reports it).
async fn check_redis(settings: &Settings, quota: &QuotaService) -> Result<(), BuildError> {
    let Some(url) = &settings.quota.redis_url else {
        return Ok(());
    };
    let Err(err) = quota.ping().await else {
        return Ok(());
    };
    let cause = stanna_telemetry::ErrorChain(&err).to_string();
    let at = crate::redact::url(url);
    match settings.auth_check.quota_fail_mode {
        stanna_auth_check::FailMode::Closed => Err(BuildError::Setting(format!(
            "STANNA_REDIS_URL ({at}) cannot be reached: {cause}; with STANNA_QUOTA_FAIL_MODE=closed nothing could be admitted, so this process does not start"
        ))),
        stanna_auth_check::FailMode::Open => {
            tracing::warn!(
                redis = %at,
                error = %cause,
                "Redis cannot be reached: starting anyway because STANNA_QUOTA_FAIL_MODE=open — every request is ALLOWED WITHOUT RATE LIMITS until it answers; readiness reports not ready meanwhile"
            );
            Ok(())
        }
    }
}

/// A gateway run alone refuses to start when the registry refuses its admin token (it would
/// answer every REST call 503); a registry not reachable yet is left to readiness.
async fn check_registry_token(gateway: &Gateway) -> Result<(), BuildError> {
    match gateway.registry_accepts_token().await {
        Err(why) if why.contains("STANNA_GATEWAY_TOKEN") => {
            Err(BuildError::Setting(format!("STANNA_REGISTRY_URL: {why}")))
        }
        Err(why) => {
            tracing::warn!(
                "{why}; starting anyway (readiness reports it until the registry answers)"
            );
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// Ready once auth-check has loaded the set of existing key ids: before that, no uncached key can
/// be answered from it (`known_ids.rs`).
fn known_ids_loaded(verifier: Verifier) -> health::Check {
    Arc::new(move || {
        let loaded = verifier.known_ids_loaded();
        Box::pin(async move {
            if loaded {
                Ok(())
            } else {
                Err("the key ids are still loading".to_owned())
            }
        })
    })
}

/// The read replica of `STANNA_DATABASE_READ_URL`: refused when the primary is SQLite or the
/// server is not a replica of `primary_store`'s cluster; one that does not answer yet is used
/// once it does (meanwhile everything reads the primary), with a warning.
async fn open_replica(
    url: &str,
    primary: &str,
    primary_store: &KeyStore,
) -> Result<KeyStore, BuildError> {
    let redacted = crate::redact::url(url);
    if primary.starts_with("sqlite") {
        return Err(BuildError::Setting(
            "STANNA_DATABASE_READ_URL is set but STANNA_DATABASE_URL is SQLite, which has no replicas: unset it, or use PostgreSQL".to_owned(),
        ));
    }
    let replica = KeyStore::open_replica(url)
        .await
        .map_err(|e| BuildError::Setting(format!("STANNA_DATABASE_READ_URL ({redacted}) {e}")))?;
    match replica.check_replica(primary_store).await {
        Ok(()) => tracing::info!(replica = %redacted, "read replica opened"),
        Err(stanna_store::ReplicaError::Store(err)) => tracing::warn!(
            replica = %redacted,
            error = %stanna_telemetry::ErrorChain(&err),
            "the read replica does not answer yet: reading the primary until it does"
        ),
        Err(e) => {
            return Err(BuildError::Setting(format!(
                "STANNA_DATABASE_READ_URL ({redacted}) {e}"
            )));
        }
    }
    Ok(replica)
}
