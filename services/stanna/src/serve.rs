//! Serving a built [`System`]: every service on its listener, the background loops, and the one
//! shutdown order.

use std::future::Future;
use std::sync::Arc;

use stanna_telemetry::ErrorChain;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::health::Monitored;
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
    /// [`System::serve_until`] with no second signal: stops after `shutdown`, within the grace.
    ///
    /// # Errors
    /// [`ServeError`] for a missing listener or a server that failed.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        self.serve_until(listeners, shutdown, std::future::pending())
            .await
    }

    /// Serves every service on its listener until `shutdown` completes (or a server fails), then
    /// stops in one order: stop accepting and let in-flight calls finish — for at most
    /// `STANNA_SHUTDOWN_GRACE`, or until `hurry` (a second signal) — stop the background loops,
    /// write the last-used times once more, close the database (SQLite folds its write-ahead log
    /// back into the file).
    ///
    /// # Errors
    /// [`ServeError`] for a missing listener or a server that failed.
    pub async fn serve_until(
        mut self,
        mut listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send,
        hurry: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let stop = CancellationToken::new();
        let background = TaskTracker::new();

        // First, so its address is logged before any service says it is listening.
        if let Some(listener) = listeners.metrics.take() {
            log_listening("metrics", &listener);
            let registry = Arc::new(std::mem::take(&mut self.metrics));
            let stopped = stop.clone().cancelled_owned();
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
            health: &mut self.health,
            metrics: self.grpc_metrics.clone(),
        };
        if let Some((core, token)) = self.registry.clone() {
            let routes = stanna_key_registry::routes(core, token);
            servers
                .start_grpc(
                    stanna_key_registry::SERVICE,
                    "key-registry",
                    routes,
                    &mut listeners.registry,
                )
                .await?;
        }
        if let Some(verifier) = self.verifier.clone() {
            stanna_auth_check::background::spawn(
                &verifier,
                &self.settings.auth_check,
                &background,
                &stop,
            );
            let routes = stanna_auth_check::routes(verifier);
            servers
                .start_grpc(
                    stanna_auth_check::SERVICE,
                    "auth-check",
                    routes,
                    &mut listeners.auth_check,
                )
                .await?;
        }
        if let Some(quota) = self
            .quota
            .clone()
            .filter(|_| self.settings.runs(ServiceName::Quota))
        {
            let routes = stanna_quota_service::routes(quota);
            servers
                .start_grpc(
                    stanna_quota_service::SERVICE,
                    "quota",
                    routes,
                    &mut listeners.quota,
                )
                .await?;
        }
        if let Some(gateway) = self.gateway.clone() {
            let listener = listeners
                .gateway
                .take()
                .ok_or(ServeError::NoListener("gateway"))?;
            log_listening("gateway", &listener);
            let stopped = stop.clone().cancelled_owned();
            servers.set.spawn(async move {
                stanna_gateway::serve(gateway, listener, stopped)
                    .await
                    .map_err(|source| ServeError::Http {
                        service: "gateway",
                        source,
                    })
            });
        }
        let mut servers = servers.set;
        background.spawn(crate::health::monitor(
            std::mem::take(&mut self.health),
            stop.clone(),
        ));

        // Until a shutdown is asked for, or a server stops by itself (it failed).
        let mut result = Ok(());
        tokio::pin!(shutdown);
        tokio::select! {
            () = &mut shutdown => {}
            Some(ended) = servers.join_next() => result = flatten(ended),
        }
        stop.cancel();
        let grace = self.settings.shutdown_grace.0;
        let drained = async {
            while let Some(ended) = servers.join_next().await {
                if let Err(err) = flatten(ended) {
                    tracing::error!(error = %ErrorChain(&err), "a server failed while stopping");
                    result = Err(err);
                }
            }
        };
        tokio::select! {
            () = drained => {}
            () = tokio::time::sleep(grace) => {
                tracing::warn!("requests still in flight after STANNA_SHUTDOWN_GRACE ({grace:?}): closing them");
            }
            () = hurry => {
                tracing::warn!("a second signal: exiting now");
                return result;
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
    /// Where each gRPC service's health reporter goes, for the monitor.
    health: &'a mut Vec<Monitored>,
    /// Where the gRPC servers count their calls.
    metrics: stanna_grpc::GrpcMetrics,
}

impl Servers<'_> {
    /// Serves the gRPC `routes` of `service` with health and reflection on its listener.
    async fn start_grpc(
        &mut self,
        service: &'static str,
        label: &'static str,
        routes: tonic::service::Routes,
        listener: &mut Option<tokio::net::TcpListener>,
    ) -> Result<(), ServeError> {
        let listener = listener.take().ok_or(ServeError::NoListener(label))?;
        let failed = |source| ServeError::Grpc {
            service: label,
            source,
        };
        let (routes, reporter) = stanna_grpc::with_health_and_reflection(routes, service)
            .await
            .map_err(failed)?;
        if let Some(monitored) = self.health.iter_mut().find(|m| m.service == service) {
            monitored.reporter = Some(reporter);
        }
        log_listening(label, &listener);
        let stopped = self.stop.clone().cancelled_owned();
        let metrics = self.metrics.clone();
        self.set.spawn(async move {
            stanna_grpc::serve_counted(routes, listener, stopped, metrics)
                .await
                .map_err(failed)
        });
        Ok(())
    }
}

fn log_listening(service: &str, listener: &tokio::net::TcpListener) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("{service} listening on {addr}");
    }
}
