//! The key-registry service: key CRUD for admins (grpcurl) and for the gateway's REST layer.
//!
//! - [`registry::Registry`]: the core, plain Rust on domain types.
//! - [`sessions`]: dashboard sign-in (CreateSession, DeleteSession, RevokeSessions).
//! - [`caller`]: who calls (named admin tokens, the gateway's credential) and the request id.
//! - [`grpc`]: the tonic adapter (validation, proto conversion).
//! - [`build`] and [`serve`]: the core from [`Config`] over an open store, served on a pre-bound
//!   listener until `shutdown`; the composition root (`services/stanna`) wires them.

pub mod caller;
pub mod config;
pub mod error;
pub mod grpc;
pub mod registry;
pub mod sessions;

use std::future::Future;

use stanna_config::SharedConfig;
use stanna_keys::{Clock, HashError, KeyHasher};
use stanna_proto::keys::v1::key_registry_server::KeyRegistryServer;
use stanna_store::KeyStore;
use tokio::net::TcpListener;
use tonic::service::Routes;

pub use caller::Credentials;
pub use config::{AdminToken, Config};
pub use error::RegistryError;
pub use registry::Registry;
pub use sessions::SessionIssuer;

/// Builds the registry core from `config` over an open `store` (the composition root opens the
/// store; the all-in-one process shares one between the registry and auth-check), reading "now"
/// from `clock`.
///
/// # Errors
/// [`HashError`] for out-of-range argon2 settings.
pub fn build(
    config: &Config,
    shared: &SharedConfig,
    store: KeyStore,
    clock: Clock,
) -> Result<Registry, HashError> {
    let hasher = KeyHasher::new(shared.hash_params())?;
    Ok(Registry::with_clock(
        store,
        hasher,
        shared.default_limits(),
        config.max_keys_per_user,
        shared.argon2_concurrency(),
        clock,
    ))
}

/// The gRPC service name health reports this service under.
pub const SERVICE: &str =
    <KeyRegistryServer<grpc::KeyRegistryService> as tonic::server::NamedService>::NAME;

/// The KeyRegistry behind `credentials`, as routes to serve (health and reflection are added
/// beside it by the caller, and need no token).
pub fn routes(registry: Registry, credentials: Credentials) -> Routes {
    Routes::new(grpc::authenticated_service(registry, credentials))
}

/// How often audit events and tombstones past their retention are purged.
pub const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// How long the registry keeps what it purges.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Audit events (`STANNA_AUDIT_RETENTION`).
    pub audit: std::time::Duration,
    /// Deleted keys' rows (`STANNA_TOMBSTONE_RETENTION`).
    pub tombstones: std::time::Duration,
}

/// Purges audit events and tombstones past `retention` now and every [`PURGE_EVERY`] until
/// `shutdown` completes. A failed purge is logged and tried again at the next round.
pub async fn purge_until(
    registry: Registry,
    retention: Retention,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut every = tokio::time::interval(PURGE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = every.tick() => {
                match registry.purge_audit(retention.audit).await {
                    Ok(0) => {}
                    Ok(purged) => tracing::info!(purged, "audit events past the retention purged"),
                    Err(error) => tracing::warn!(%error, "audit purge failed; trying again in an hour"),
                }
                match registry.purge_tombstones(retention.tombstones).await {
                    Ok(0) => {}
                    Ok(purged) => tracing::info!(purged, "deleted keys past the retention purged"),
                    Err(error) => tracing::warn!(%error, "tombstone purge failed; trying again in an hour"),
                }
            }
        }
    }
}

/// Serves `registry` on `listener` behind `credentials` until `shutdown` completes, with health and
/// both reflection versions beside it.
///
/// # Errors
/// [`stanna_grpc::ServeError`] if serving fails.
pub async fn serve(
    registry: Registry,
    credentials: Credentials,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), stanna_grpc::ServeError> {
    let (routes, _health) =
        stanna_grpc::with_health_and_reflection(routes(registry, credentials), SERVICE).await?;
    stanna_grpc::serve(routes, listener, shutdown).await
}
