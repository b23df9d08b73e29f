//! The composition root of Stanna Keys: the one place the services are built and wired.
//!
//! [`Settings`] (the flags and `STANNA_*` variables of `stanna serve`) → [`System::build`] (every
//! service in one process, or one alone, with [`Overrides`] for what tests replace) →
//! [`System::serve`] on [`Listeners`] bound beforehand, until a shutdown, with the one shutdown
//! order. `main.rs` and every full-stack test go through it; nothing else wires the graph
//! (docs/architecture.md).

pub mod admin_token;
pub mod health;
pub mod listeners;
pub mod redact;
pub mod seed;
mod serve;
pub mod settings;
pub mod shutdown;
pub mod state;
pub mod system;

pub use listeners::{BindError, Listeners};
pub use serve::ServeError;
pub use settings::{ServiceName, Settings};
pub use system::{BuildError, Overrides, System};
