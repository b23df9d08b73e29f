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

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // The whole cause chain on one line, never a backtrace (RUST_BACKTRACE is for
            // panics): what an operator reads is what went wrong and which setting to change.
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(exit_code(&err))
        }
    }
}

/// 2 for a setting refused at start (as clap does for a value it refuses), 1 for anything else.
fn exit_code(err: &anyhow::Error) -> u8 {
    let refused = matches!(
        err.downcast_ref::<stanna::BuildError>(),
        Some(stanna::BuildError::Setting(_))
    ) || matches!(
        err.downcast_ref::<stanna_telemetry::TelemetryError>(),
        Some(stanna_telemetry::TelemetryError::Setting(_))
    );
    if refused { 2 } else { 1 }
}

fn run() -> anyhow::Result<()> {
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
    settings.check().map_err(stanna::BuildError::Setting)?;
    let generated = (settings.service.is_none() && settings.registry.admin_token.is_none())
        .then(stanna::admin_token::generate);
    if generated.is_some() {
        settings.registry.admin_token.clone_from(&generated);
    }
    let system = System::build(settings.clone(), Overrides::default()).await?;
    let listeners = Listeners::bind(&settings).await?;
    // Shown only now: a run refused at start (a setting, Redis, the store, a busy port) shows
    // no token nobody could use.
    if let Some(token) = &generated {
        stanna::admin_token::print(token, settings.log_format);
    }
    let (shutdown, hurry) = signals.first_and_second();
    system.serve_until(listeners, shutdown, hurry).await?;
    Ok(())
}
