//! The auth-check service: `Verify` for the gateway and internal services.
//!
//! - [`verifier::Verifier`]: the core — verified-key cache, single-flight argon2 under a cap, the
//!   per-key-id failure budget, quota with the fail mode, last-used batching, and the change poll
//!   that revokes within a second.
//! - [`grpc`]: the tonic adapter.
//! - [`start`]: spawns the background loops (change poll, last-used flush) for a verifier.

mod budget;
mod cache;
pub mod grpc;
mod last_used;
pub mod verifier;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use stanna_config::{DurationArg, SharedConfig};
use stanna_proto::keys::v1::auth_check_server::AuthCheckServer;
use stanna_quota_service::QuotaService;
use stanna_store::KeyStore;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::service::Routes;

pub use grpc::AuthCheckService;
pub use verifier::{Clock, FailMode, QuotaConnection, Verifier, VerifierSettings};

/// Settings of the auth-check service.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "auth_check_config")]
#[command(next_help_heading = "auth-check")]
pub struct Config {
    /// Where the AuthCheck gRPC service listens (internal network only: no token).
    #[arg(
        id = "auth_check_addr",
        long = "auth-check-addr",
        env = "STANNA_AUTH_CHECK_ADDR",
        default_value = "127.0.0.1:50052"
    )]
    pub addr: SocketAddr,

    /// The Quota service (`http://host:50053`); unset: decide in this process.
    #[arg(long, env = "STANNA_QUOTA_URL")]
    pub quota_url: Option<String>,

    /// When the quota cannot decide: `open` allows (no rate-limit headers), `closed` refuses (503).
    #[arg(
        long,
        env = "STANNA_QUOTA_FAIL_MODE",
        value_enum,
        default_value = "open"
    )]
    pub quota_fail_mode: FailMode,

    /// How often last-used times are written back (at most one write per key per interval).
    #[arg(long, env = "STANNA_LAST_USED_FLUSH", default_value = "5s")]
    pub last_used_flush: DurationArg,

    /// How long cached keys keep verifying while the store is unreachable.
    #[arg(long, env = "STANNA_STALE_IF_ERROR", default_value = "30s")]
    pub stale_if_error: DurationArg,

    /// Verified keys kept in memory.
    #[arg(long, env = "STANNA_VERIFY_CACHE_SIZE", default_value_t = 100_000)]
    pub verify_cache_size: usize,

    /// How often the store is asked what changed (revocations reach this process within about
    /// this interval plus a query).
    #[arg(long, env = "STANNA_CHANGE_POLL_INTERVAL", default_value = "250ms")]
    pub change_poll_interval: DurationArg,
}

impl Config {
    /// Settings for tests: an ephemeral port, in-process quota, fail-open, 100 ms polls and flushes.
    pub fn for_tests() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            quota_url: None,
            quota_fail_mode: FailMode::Open,
            last_used_flush: DurationArg(Duration::from_millis(100)),
            stale_if_error: DurationArg(Duration::from_secs(30)),
            verify_cache_size: 100_000,
            change_poll_interval: DurationArg(Duration::from_millis(100)),
        }
    }

    /// [`Config::for_tests`] with a change poll every `poll`.
    pub fn default_for_tests_with_poll(poll: Duration) -> Self {
        Self {
            change_poll_interval: DurationArg(poll),
            ..Self::for_tests()
        }
    }

    /// The core's settings.
    pub fn verifier_settings(&self, shared: &SharedConfig) -> VerifierSettings {
        VerifierSettings {
            defaults: shared.default_limits(),
            cache_size: self.verify_cache_size,
            argon2_concurrency: shared.argon2_concurrency(),
            fail_mode: self.quota_fail_mode,
            stale_if_error: self.stale_if_error.0,
            quota_timeout: Duration::from_secs(1),
        }
    }
}

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The key store could not be opened.
    #[error("opening the key store failed")]
    Store(#[from] stanna_store::StoreError),
    /// The quota backend could not be set up.
    #[error("quota backend")]
    Quota(#[from] stanna_quota::QuotaError),
    /// Serving failed, or a URL is unusable.
    #[error(transparent)]
    Serve(#[from] stanna_grpc::ServeError),
}

/// The background loops of a verifier; aborted on drop.
pub struct Background {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Spawns the change poll and the last-used flush for `verifier`.
pub fn start(verifier: &Verifier, config: &Config) -> Background {
    let poller = verifier.clone();
    let poll_every = config.change_poll_interval.0;
    let poll = tokio::spawn(async move {
        let mut tick = tokio::time::interval(poll_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(err) = poller.poll_changes().await {
                tracing::warn!(error = %err, "change poll failed; cached keys verify until the stale limit");
            }
        }
    });
    let flusher = verifier.clone();
    let flush_every = config.last_used_flush.0;
    let flush = tokio::spawn(async move {
        let mut tick = tokio::time::interval(flush_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(err) = flusher.flush_last_used().await {
                tracing::warn!(error = %err, "last-used flush failed; retrying next interval");
            }
        }
    });
    Background {
        tasks: vec![poll, flush],
    }
}

/// The quota transport `config` selects: the Quota service at `STANNA_QUOTA_URL`, or the
/// in-process one `local` makes (called only then).
///
/// # Errors
/// A bad URL, or what `local` returns.
pub fn quota_transport(
    config: &Config,
    local: impl FnOnce() -> Result<QuotaService, StartError>,
) -> Result<QuotaConnection, StartError> {
    match &config.quota_url {
        Some(url) => Ok(stanna_grpc::lazy_channel(url)?.into()),
        None => Ok(stanna_grpc::Connection::InProcess(std::sync::Arc::new(
            local()?,
        ))),
    }
}

/// Serves `verifier` on `listener` until `shutdown` completes, with health and reflection.
///
/// # Errors
/// [`StartError::Serve`] if serving fails.
pub async fn serve(
    verifier: Verifier,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StartError> {
    let routes = Routes::new(AuthCheckServer::new(AuthCheckService::new(verifier)));
    let (routes, _health) =
        stanna_grpc::add_health_and_reflection::<AuthCheckServer<AuthCheckService>>(routes).await?;
    stanna_grpc::serve(routes, listener, shutdown).await?;
    Ok(())
}

/// Opens the store, builds the verifier, starts its loops and serves until `shutdown`; flushes
/// last-used times on the way out.
///
/// # Errors
/// [`StartError`] when the store cannot be opened or serving fails.
pub async fn run(
    config: Config,
    shared: &SharedConfig,
    quota: &stanna_quota_service::Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StartError> {
    let store = KeyStore::connect(&shared.database_url).await?;
    let pool = store.clone();
    let transport = quota_transport(&config, || Ok(QuotaService::new(quota.backend()?)))?;
    let verifier = Verifier::new(
        store,
        transport,
        config.verifier_settings(shared),
        std::sync::Arc::new(std::time::SystemTime::now),
    );
    let background = start(&verifier, &config);
    let served = serve(verifier.clone(), listener, shutdown).await;
    drop(background);
    if let Err(err) = verifier.flush_last_used().await {
        tracing::warn!(error = %err, "final last-used flush failed");
    }
    if let Err(err) = pool.close().await {
        tracing::warn!(error = %err, "closing the database failed");
    }
    served
}
