//! The gRPC plumbing every Stanna service shares.
//!
//! - [`serve`](mod@serve): health (SERVING) and reflection v1 + v1alpha beside a service, served on
//!   a pre-bound listener with the trace layer;
//! - [`transport`]: one client transport for both ways of running (in memory or a channel), a
//!   deadline around it, and [`Connection`] for calling a service object in process;
//! - [`tls`]: TLS and mTLS between the services (`STANNA_GRPC_*`);
//! - [`status`]: the typed error details that cross gRPC (`google.rpc.BadRequest`,
//!   `PreconditionFailure`), so a caller reads the field at fault instead of parsing a message.

pub mod metrics;
pub mod serve;
pub mod status;
pub mod tls;
pub mod transport;

/// A check of something a service needs (its store, Redis, another service): `Ok` while it
/// answers, else why not. Health and readiness are made of these (`services/stanna/src/health.rs`,
/// the gateway's `/readyz`).
pub type Check = std::sync::Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

pub use metrics::GrpcMetrics;
pub use serve::{
    ServeError, add_health_and_reflection, serve, serve_counted, with_health_and_reflection,
};
pub use tls::{GrpcTls, GrpcTlsFiles, TlsError};
pub use transport::{
    Connection, Transport, TransportError, in_memory, lazy_channel, lazy_channel_with, with_timeout,
};
