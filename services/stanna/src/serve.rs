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
    /// A server task panicked (the panic's message).
    #[error("a server task ended abnormally: {0}")]
    Panicked(String),
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
    /// stops in one order: report NOT_SERVING (gRPC health and `/readyz`), stop accepting and let
    /// in-flight calls finish — for at most `STANNA_SHUTDOWN_GRACE`, or until `hurry` (a second
    /// signal) — and only then stop the background loops and `/metrics` (so change polls and
    /// last-used flushes keep running while calls drain), write the last-used times once more,
    /// and close the database (SQLite folds its write-ahead log back into the file).
    ///
    /// # Errors
    /// [`ServeError`] for a missing listener (checked before anything starts), a server that
    /// failed or panicked.
    pub async fn serve_until(
        mut self,
        mut listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send,
        hurry: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        // Every listener first: a missing one refuses before any task exists.
        let registry = self
            .registry
            .clone()
            .map(|core| needed(&mut listeners.registry, "key-registry").map(|l| (core, l)))
            .transpose()?;
        let auth_check = self
            .verifier
            .clone()
            .map(|verifier| needed(&mut listeners.auth_check, "auth-check").map(|l| (verifier, l)))
            .transpose()?;
        let quota = self
            .quota
            .clone()
            .filter(|_| self.settings.runs(ServiceName::Quota))
            .map(|quota| needed(&mut listeners.quota, "quota").map(|l| (quota, l)))
            .transpose()?;
        let gateway = self
            .gateway
            .clone()
            .map(|gateway| needed(&mut listeners.gateway, "gateway").map(|l| (gateway, l)))
            .transpose()?;

        // Two stops: the servers (and their health) first, the background work after they drained.
        let stop_servers = CancellationToken::new();
        let stop_background = CancellationToken::new();
        let background = TaskTracker::new();

        // First, so its address is logged before any service says it is listening.
        if let Some(listener) = listeners.metrics.take() {
            log_listening("metrics", &listener);
            let registry = Arc::new(std::mem::take(&mut self.metrics));
            let stopped = stop_background.clone().cancelled_owned();
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
            stop: &stop_servers,
            health: &mut self.health,
            metrics: self.grpc_metrics.clone(),
            tls: self.grpc_server_tls.clone(),
        };
        let started = async {
            if let Some(((core, token), listener)) = registry {
                background.spawn(stanna_key_registry::purge_until(
                    core.clone(),
                    self.retention,
                    stop_background.clone().cancelled_owned(),
                ));
                let routes = stanna_key_registry::routes(core, token);
                servers
                    .start_grpc(
                        stanna_key_registry::SERVICE,
                        "key-registry",
                        routes,
                        listener,
                    )
                    .await?;
            }
            if let Some((verifier, listener)) = auth_check {
                stanna_auth_check::background::spawn(
                    &verifier,
                    &self.settings.auth_check,
                    &background,
                    &stop_background,
                );
                let routes = stanna_auth_check::routes(verifier);
                servers
                    .start_grpc(stanna_auth_check::SERVICE, "auth-check", routes, listener)
                    .await?;
            }
            if let Some((quota, listener)) = quota {
                let routes = stanna_quota_service::routes(quota);
                servers
                    .start_grpc(stanna_quota_service::SERVICE, "quota", routes, listener)
                    .await?;
            }
            if let (Some((gateway, _)), Some(listener)) = (&gateway, listeners.dashboard.take()) {
                log_listening("dashboard", &listener);
                let stopped = stop_servers.clone().cancelled_owned();
                let gateway = gateway.clone();
                servers.set.spawn(async move {
                    stanna_gateway::serve_dashboard(gateway, listener, stopped)
                        .await
                        .map_err(|source| ServeError::Http {
                            service: "dashboard",
                            source,
                        })
                });
            }
            if let Some((gateway, listener)) = gateway {
                log_listening("gateway", &listener);
                let stopped = stop_servers.clone().cancelled_owned();
                servers.set.spawn(async move {
                    stanna_gateway::serve(gateway, listener, stopped)
                        .await
                        .map_err(|source| ServeError::Http {
                            service: "gateway",
                            source,
                        })
                });
            }
            Ok(())
        }
        .await;
        let mut servers = servers.set;
        // The monitor stops with the servers: it reports NOT_SERVING as the drain begins.
        let health = tokio::spawn(crate::health::monitor(
            std::mem::take(&mut self.health),
            stop_servers.clone(),
        ));

        // Until a shutdown is asked for, or a server stops by itself (it failed). A server that
        // could not start goes straight to the stop, so nothing already running is left behind.
        let mut result = started;
        if result.is_ok() {
            tokio::pin!(shutdown);
            tokio::select! {
                () = &mut shutdown => {}
                Some(ended) = servers.join_next() => result = flatten(ended),
            }
        }
        stop_servers.cancel();
        let grace = self.settings.shutdown_grace.0;
        let drained = async {
            let mut failed = None;
            while let Some(ended) = servers.join_next().await {
                if let Err(err) = flatten(ended) {
                    tracing::error!(error = %ErrorChain(&err), "a server failed while stopping");
                    failed = Some(err);
                }
            }
            failed
        };
        tokio::select! {
            failed = drained => {
                if let Some(err) = failed {
                    result = result.and(Err(err));
                }
            }
            () = tokio::time::sleep(grace) => {
                tracing::warn!("requests still in flight after STANNA_SHUTDOWN_GRACE ({grace:?}): closing them");
                // Closed now, not when this function returns: their handlers would otherwise
                // hold store connections through the flush and the close below.
                servers.abort_all();
                while servers.join_next().await.is_some() {}
            }
            () = hurry => {
                tracing::warn!("a second signal: exiting now");
                return result;
            }
        }
        let _ = health.await;
        stop_background.cancel();
        background.close();
        background.wait().await;
        if let Some(verifier) = &self.verifier
            && let Err(err) = verifier.flush_usage().await
        {
            tracing::warn!(error = %ErrorChain(&err), "final usage and last-used flush failed");
        }
        if let Some(store) = &self.store
            && let Err(err) = store.close().await
        {
            tracing::warn!(error = %ErrorChain(&err), "closing the database failed");
        }
        result
    }
}

/// The listener of a service this process runs.
fn needed(
    listener: &mut Option<tokio::net::TcpListener>,
    service: &'static str,
) -> Result<tokio::net::TcpListener, ServeError> {
    listener.take().ok_or(ServeError::NoListener(service))
}

/// A server task's outcome; a panic is a failure of that server (a supervisor restarting on
/// failure must see it).
fn flatten(
    ended: Result<Result<(), ServeError>, tokio::task::JoinError>,
) -> Result<(), ServeError> {
    match ended {
        Ok(result) => result,
        Err(err) => Err(ServeError::Panicked(err.to_string())),
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
    /// TLS of the gRPC servers; `None`: plaintext.
    tls: Option<tonic::transport::ServerTlsConfig>,
}

impl Servers<'_> {
    /// Serves the gRPC `routes` of `service` with health and reflection on its listener.
    async fn start_grpc(
        &mut self,
        service: &'static str,
        label: &'static str,
        routes: tonic::service::Routes,
        listener: tokio::net::TcpListener,
    ) -> Result<(), ServeError> {
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
        let tls = self.tls.clone();
        self.set.spawn(async move {
            stanna_grpc::serve_counted(routes, listener, stopped, metrics, tls)
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
