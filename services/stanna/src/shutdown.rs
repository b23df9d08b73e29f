//! The shutdown signal of a `stanna` process: SIGTERM or SIGINT.

use std::future::Future;

/// Registers SIGTERM and SIGINT handlers now (so a signal during start-up is not lost) and
/// returns a future that completes on either.
///
/// # Errors
/// The handlers could not be installed.
pub fn signal() -> std::io::Result<impl Future<Output = ()> + Send> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
        tracing::info!("shutting down");
    })
}
