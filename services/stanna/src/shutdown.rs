//! The shutdown signals of a `stanna` process: SIGTERM or SIGINT starts a graceful stop; another
//! one during it exits at once.

use std::future::Future;

/// SIGTERM and SIGINT, registered when made (so a signal during start-up is not lost).
pub struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    /// Registers the handlers.
    ///
    /// # Errors
    /// The handlers could not be installed.
    pub fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// The first signal (a graceful stop) and the next one (exit now).
    ///
    /// One task watches both signals from now on, so the second is seen while the first one's
    /// graceful stop is still running (a future polled only after the stop began would miss it).
    /// Must be called inside the runtime.
    pub fn first_and_second(
        mut self,
    ) -> (
        impl Future<Output = ()> + Send,
        impl Future<Output = ()> + Send,
    ) {
        let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
        let (second_tx, second_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            self.next().await;
            tracing::info!("shutting down (a second signal exits at once)");
            let _ = first_tx.send(());
            self.next().await;
            let _ = second_tx.send(());
        });
        // A dropped sender (the task ended without sending) must not read as a signal.
        let first = async move {
            if first_rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let second = async move {
            if second_rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        (first, second)
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {},
            _ = self.interrupt.recv() => {},
        }
    }
}
