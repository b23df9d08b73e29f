//! Command-line interface: subcommands, flags and their `STANNA_*` environment variables.

use clap::{Parser, Subcommand, ValueEnum};

/// Stanna Keys: API keys for a workspace product — create, verify, rate-limit.
#[derive(Debug, Parser)]
#[command(name = "stanna", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole system in one process (default), or one service alone.
    Serve(ServeArgs),
    /// Check that the gRPC service at ADDR (host:port) reports SERVING; exit 0 if so, 1 if not.
    Healthcheck {
        /// host:port of a Stanna gRPC service.
        addr: String,
    },
}

/// Which service `stanna serve` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServiceName {
    /// The KeyRegistry gRPC service alone (requires STANNA_ADMIN_TOKEN).
    Registry,
}

/// Arguments of `stanna serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Run only this service (split mode); omit to run everything in one process.
    pub service: Option<ServiceName>,

    /// Settings shared by the services (store, default limits, argon2).
    #[command(flatten)]
    pub shared: stanna_config::SharedConfig,

    /// Settings of the key-registry.
    #[command(flatten)]
    pub registry: stanna_key_registry::Config,
}
