//! The command line: `stanna serve [SERVICE]` and `stanna healthcheck ADDR`.

use clap::{Parser, Subcommand};
use stanna::Settings;

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
    Serve(Box<Settings>),
    /// Check a service: gRPC health at host:port, or GET http://host:port/healthz for the gateway;
    /// exit 0 when it answers SERVING / 200 within 3 s, 1 otherwise.
    Healthcheck {
        /// host:port of a Stanna gRPC service, or an http:// URL of the gateway.
        addr: String,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_flag_and_variable_is_unique() {
        super::Cli::command().debug_assert();
    }
}
