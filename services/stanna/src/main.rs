//! `stanna`: every Stanna Keys service in one binary.
//!
//! `stanna serve` runs the whole system in one process on the embedded defaults (SQLite file,
//! nothing to install); `stanna serve registry` runs one service alone (split mode);
//! `stanna healthcheck ADDR` probes a service's gRPC health (for container health checks).

mod cli;
mod healthcheck;
mod serve;

use clap::Parser;

/// mimalloc instead of glibc malloc: measured in docs/gateway.md ("Allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        cli::Command::Serve(args) => {
            // Inside the runtime: the OTLP exporter's channel lives on it.
            let telemetry =
                runtime.block_on(async { stanna_telemetry::init(args.service_name()) })?;
            let served = runtime.block_on(serve::serve(*args));
            telemetry.shutdown();
            served
        }
        cli::Command::Healthcheck { addr } => runtime.block_on(healthcheck::check(&addr)),
    }
}
