//! The key-registry service: key CRUD for admins (grpcurl) and for the gateway's REST layer.
//!
//! - [`registry::Registry`]: the core, plain Rust on domain types.
//! - [`grpc`]: the tonic adapter (validation, proto conversion) and the admin-token interceptor.
//! - [`run`]: the entry point — build from [`Config`], serve on a pre-bound listener until
//!   `shutdown`, with health and both reflection versions beside the service.

pub mod config;
pub mod error;
pub mod grpc;
pub mod registry;

use std::future::Future;

use stanna_config::SharedConfig;
use stanna_keys::KeyHasher;
use stanna_proto::keys::v1::key_registry_server::KeyRegistryServer;
use stanna_store::KeyStore;
use tokio::net::TcpListener;
use tonic::service::Routes;

pub use config::{AdminToken, Config};
pub use error::RegistryError;
pub use registry::Registry;

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No admin token was configured (a service run alone requires `STANNA_ADMIN_TOKEN`).
    #[error("STANNA_ADMIN_TOKEN is required: set it to a random string of at least 16 characters")]
    NoAdminToken,
    /// The argon2 parameters are out of range.
    #[error("invalid argon2 settings")]
    Hash(#[from] stanna_keys::HashError),
    /// The key store could not be opened or migrated.
    #[error("opening the key store failed")]
    Store(#[from] stanna_store::StoreError),
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] stanna_grpc::ServeError),
}

/// Builds the registry core from `config`, opening (and migrating) the store.
///
/// # Errors
/// [`StartError::Hash`] or [`StartError::Store`].
pub async fn build(config: &Config, shared: &SharedConfig) -> Result<Registry, StartError> {
    let store = KeyStore::connect(&shared.database_url).await?;
    build_with_store(config, shared, store)
}

/// Builds the registry core over an already-open store (the all-in-one process shares one).
///
/// # Errors
/// [`StartError::Hash`] for out-of-range argon2 settings.
pub fn build_with_store(
    config: &Config,
    shared: &SharedConfig,
    store: KeyStore,
) -> Result<Registry, StartError> {
    let hasher = KeyHasher::new(shared.hash_params())?;
    Ok(Registry::new(
        store,
        hasher,
        shared.default_limits(),
        config.max_keys_per_user,
        shared.argon2_concurrency(),
    ))
}

/// Serves `registry` on `listener` behind `token` until `shutdown` completes.
///
/// # Errors
/// [`StartError::Serve`] if serving fails.
pub async fn serve(
    registry: Registry,
    token: AdminToken,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StartError> {
    let routes = Routes::new(grpc::authenticated_service(registry, token));
    let (routes, _health) = stanna_grpc::add_health_and_reflection::<
        KeyRegistryServer<grpc::KeyRegistryService>,
    >(routes)
    .await?;
    stanna_grpc::serve(routes, listener, shutdown).await?;
    Ok(())
}

/// Builds from `config` and serves on `listener` until `shutdown` completes.
///
/// # Errors
/// [`StartError`] when the token is missing, the store cannot be opened, or serving fails.
pub async fn run(
    config: Config,
    shared: &SharedConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StartError> {
    let token = config.admin_token.clone().ok_or(StartError::NoAdminToken)?;
    let registry = build(&config, shared).await?;
    serve(registry, token, listener, shutdown).await
}
