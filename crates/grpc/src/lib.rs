//! The gRPC plumbing every Stanna service shares.
//!
//! - [`serve`](mod@serve): health (SERVING) and reflection v1 + v1alpha beside a service, served on
//!   a pre-bound listener with the trace layer;
//! - [`transport`]: one client transport for both ways of running (in memory or a channel), a
//!   deadline around it, and [`Connection`] for calling a service object in process;
//! - [`status`]: the typed error details that cross gRPC (`google.rpc.BadRequest`,
//!   `PreconditionFailure`), so a caller reads the field at fault instead of parsing a message.

pub mod serve;
pub mod status;
pub mod transport;

pub use serve::{ServeError, add_health_and_reflection, serve};
pub use transport::{Connection, Transport, TransportError, in_memory, lazy_channel, with_timeout};
