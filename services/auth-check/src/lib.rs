//! The auth-check service: `Verify` for the gateway and internal services.
//!
//! - [`Verifier`]: the core, on domain types — the verified-key cache, single-flight argon2 under
//!   a cap, the per-key-id failure budget, the quota with its fail mode, last-used batching, and
//!   the change poll that revokes within a second. Built with [`Verifier::builder`] over a store
//!   and a ready [`QuotaConnection`]: who decides quotas is the composition root's choice.
//! - [`grpc`]: the tonic adapter, converting to the contract at the edge.
//! - [`background`]: the change poll and the last-used write-back, on the caller's task tracker.
//! - [`VerifyMetrics`]: this service's own metrics.

pub mod background;
mod budget;
mod cache;
mod change_poll;
mod cold;
mod config;
pub mod grpc;
mod known_ids;
mod metrics;
mod quota;
mod reads;
mod session;
mod settings;
mod single_flight;
mod state;
mod usage;
mod verifier;

use std::future::Future;

use stanna_proto::keys::v1::auth_check_server::AuthCheckServer;
use tokio::net::TcpListener;
use tonic::service::Routes;

pub use change_poll::CHANGE_OVERLAP;
pub use config::Config;
pub use grpc::AuthCheckService;
pub use metrics::VerifyMetrics;
pub use quota::QuotaConnection;
pub use reads::REPLICA_WAIT;
pub use session::SessionState;
pub use settings::{FailMode, HashCheck, Stats, VerifierSettings};
pub use state::{KeyState, Required, Verdict, VerifyCode, VerifyError};
pub use verifier::{MAX_STATE_AGE, Verifier, VerifierBuilder};

/// The gRPC service name health reports this service under.
pub const SERVICE: &str = <AuthCheckServer<AuthCheckService> as tonic::server::NamedService>::NAME;

/// AuthCheck over `verifier`, as routes to serve (health and reflection are added by the caller).
pub fn routes(verifier: Verifier) -> Routes {
    Routes::new(AuthCheckServer::new(AuthCheckService::new(verifier)))
}

/// Serves `verifier` on `listener` until `shutdown` completes, with health and reflection.
///
/// # Errors
/// [`stanna_grpc::ServeError`] if serving fails.
pub async fn serve(
    verifier: Verifier,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), stanna_grpc::ServeError> {
    let (routes, _health) =
        stanna_grpc::with_health_and_reflection(routes(verifier), SERVICE).await?;
    stanna_grpc::serve(routes, listener, shutdown).await
}
