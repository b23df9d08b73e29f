//! `stanna`: every Stanna Keys service in one binary.
//!
//! `stanna serve` runs the whole system in one process on the embedded defaults (SQLite file,
//! nothing to install); `stanna serve registry` runs one service alone (split mode);
//! `stanna healthcheck ADDR` probes a service's gRPC health (for container health checks). The
//! wiring is the `stanna` library's (`lib.rs`).

mod cli;
mod healthcheck;

use stanna::{Listeners, Overrides, System};

/// mimalloc instead of glibc malloc: measured in docs/gateway.md ("Allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        cli::Command::Serve(settings) => {
            // Inside the runtime: the OTLP exporter's channel lives on it.
            let telemetry = runtime.block_on(async {
                stanna_telemetry::init(settings.service_name(), settings.log_format)
            })?;
            let served = runtime.block_on(serve(*settings));
            telemetry.shutdown();
            served
        }
        cli::Command::Healthcheck { addr, ready } => {
            runtime.block_on(healthcheck::check(&addr, ready))
        }
    }
}

async fn serve(mut settings: stanna::Settings) -> anyhow::Result<()> {
    // Signal handlers first, so a SIGTERM during start-up still shuts down cleanly.
    let signals = stanna::shutdown::Signals::new()?;
    if settings.service.is_none() && settings.registry.admin_token.is_none() {
        settings.registry.admin_token =
            Some(stanna::admin_token::generate_and_print(settings.log_format));
    }
    let listeners = Listeners::bind(&settings).await?;
    let system = System::build(settings, Overrides::default()).await?;
    let (shutdown, hurry) = signals.first_and_second();
    system.serve_until(listeners, shutdown, hurry).await?;
    Ok(())
}
