//! Serving a built [`System`]: every service on its listener, the background loops, and the one
//! shutdown order.

use std::future::Future;
use std::sync::Arc;

use stanna_telemetry::ErrorChain;
use tokio::task::JoinSet;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

use crate::listeners::Listeners;
use crate::settings::ServiceName;
use crate::system::System;

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A gRPC server failed.
    #[error("{service} failed")]
    Grpc {
        /// Which.
        service: &'static str,
        /// Why.
        #[source]
        source: stanna_grpc::ServeError,
    },
    /// An HTTP listener failed.
    #[error("{service} failed")]
    Http {
        /// Which.
        service: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A listener the system needs was not given.
    #[error("no listener for {0}")]
    NoListener(&'static str),
}

impl System {
    /// Serves every service on its listener until `shutdown` completes (or a server fails), then
    /// stops in one order: stop accepting and let in-flight calls finish, stop the background
    /// loops, write the last-used times once more, close the database (SQLite folds its
    /// write-ahead log back into the file).
    ///
    /// # Errors
    /// [`ServeError`] for a missing listener or a server that failed.
    pub async fn serve(
        mut self,
        mut listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let stop = CancellationToken::new();
        let background = TaskTracker::new();
        let until_stopped = || stop.clone().cancelled_owned();

        // First, so its address is logged before any service says it is listening.
        if let Some(listener) = listeners.metrics.take() {
            log_listening("metrics", &listener);
            let registry = Arc::new(std::mem::take(&mut self.metrics));
            let stopped = until_stopped();
            background.spawn(async move {
                if let Err(err) =
                    stanna_telemetry::metrics::serve(listener, registry, stopped).await
                {
                    tracing::error!(error = %ErrorChain(&err), "the metrics listener failed");
                }
            });
        }

        let mut servers = Servers {
            set: JoinSet::new(),
            stop: &stop,
        };
        if let Some((core, token)) = self.registry.clone() {
            servers.start(
                "key-registry",
                &mut listeners.registry,
                |listener, stopped| async move {
                    stanna_key_registry::serve(core, token, listener, stopped)
                        .await
                        .map_err(grpc_failure("key-registry"))
                },
            )?;
        }
        if let Some(verifier) = self.verifier.clone() {
            stanna_auth_check::background::spawn(
                &verifier,
                &self.settings.auth_check,
                &background,
                &stop,
            );
            servers.start(
                "auth-check",
                &mut listeners.auth_check,
                |listener, stopped| async move {
                    stanna_auth_check::serve(verifier, listener, stopped)
                        .await
                        .map_err(grpc_failure("auth-check"))
                },
            )?;
        }
        if let Some(quota) = self
            .quota
            .clone()
            .filter(|_| self.settings.runs(ServiceName::Quota))
        {
            servers.start(
                "quota",
                &mut listeners.quota,
                |listener, stopped| async move {
                    stanna_quota_service::serve(quota, listener, stopped)
                        .await
                        .map_err(grpc_failure("quota"))
                },
            )?;
        }
        if let Some(gateway) = self.gateway.clone() {
            servers.start(
                "gateway",
                &mut listeners.gateway,
                |listener, stopped| async move {
                    stanna_gateway::serve(gateway, listener, stopped)
                        .await
                        .map_err(|source| ServeError::Http {
                            service: "gateway",
                            source,
                        })
                },
            )?;
        }
        let mut servers = servers.set;
        // Until a shutdown is asked for, or a server stops by itself (it failed).
        let mut result = Ok(());
        tokio::pin!(shutdown);
        tokio::select! {
            () = &mut shutdown => {}
            Some(ended) = servers.join_next() => result = flatten(ended),
        }
        stop.cancel();
        while let Some(ended) = servers.join_next().await {
            if let Err(err) = flatten(ended) {
                tracing::error!(error = %ErrorChain(&err), "a server failed while stopping");
                result = result.and(Err(err));
            }
        }
        background.close();
        background.wait().await;
        if let Some(verifier) = &self.verifier
            && let Err(err) = verifier.flush_last_used().await
        {
            tracing::warn!(error = %ErrorChain(&err), "final last-used flush failed");
        }
        if let Some(store) = &self.store
            && let Err(err) = store.close().await
        {
            tracing::warn!(error = %ErrorChain(&err), "closing the database failed");
        }
        result
    }
}

/// A server task's outcome (a panic is logged and treated as a clean stop of that task).
fn flatten(
    ended: Result<Result<(), ServeError>, tokio::task::JoinError>,
) -> Result<(), ServeError> {
    match ended {
        Ok(result) => result,
        Err(err) => {
            tracing::error!(error = %ErrorChain(&err), "a server task ended abnormally");
            Ok(())
        }
    }
}

/// The servers of this process, each a task stopping when `stop` is cancelled.
struct Servers<'a> {
    set: JoinSet<Result<(), ServeError>>,
    stop: &'a CancellationToken,
}

impl Servers<'_> {
    /// Starts `service` on its listener: `run(listener, stopped)`.
    fn start<F>(
        &mut self,
        service: &'static str,
        listener: &mut Option<tokio::net::TcpListener>,
        run: impl FnOnce(tokio::net::TcpListener, WaitForCancellationFutureOwned) -> F,
    ) -> Result<(), ServeError>
    where
        F: Future<Output = Result<(), ServeError>> + Send + 'static,
    {
        let listener = listener.take().ok_or(ServeError::NoListener(service))?;
        log_listening(service, &listener);
        self.set
            .spawn(run(listener, self.stop.clone().cancelled_owned()));
        Ok(())
    }
}

/// How a gRPC server's failure is reported.
fn grpc_failure(service: &'static str) -> impl FnOnce(stanna_grpc::ServeError) -> ServeError {
    move |source| ServeError::Grpc { service, source }
}

fn log_listening(service: &str, listener: &tokio::net::TcpListener) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("{service} listening on {addr}");
    }
}
