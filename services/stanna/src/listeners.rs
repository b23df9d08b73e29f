//! The listeners a process serves on, bound before anything is served: `stanna serve` binds the
//! configured addresses; a test binds port 0 and reads the ports before it starts the system.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::settings::{ServiceName, Settings};

/// One listener per service this process runs, and the metrics listener.
#[derive(Debug, Default)]
pub struct Listeners {
    /// The public HTTP gateway.
    pub gateway: Option<TcpListener>,
    /// The dashboard's own listener (`STANNA_DASHBOARD_ADDR`), when set.
    pub dashboard: Option<TcpListener>,
    /// KeyRegistry gRPC.
    pub registry: Option<TcpListener>,
    /// AuthCheck gRPC.
    pub auth_check: Option<TcpListener>,
    /// Quota gRPC.
    pub quota: Option<TcpListener>,
    /// Prometheus `/metrics`.
    pub metrics: Option<TcpListener>,
}

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("{service} cannot listen on {addr}: {source}")]
pub struct BindError {
    /// Which listener.
    pub service: &'static str,
    /// Where it was asked to listen.
    pub addr: SocketAddr,
    /// Why not.
    #[source]
    pub source: io::Error,
}

impl Listeners {
    /// Binds the listeners of every service `settings` runs, and the metrics listener, at their
    /// configured addresses.
    ///
    /// # Errors
    /// [`BindError`] naming the listener and the address.
    pub async fn bind(settings: &Settings) -> Result<Self, BindError> {
        let mut listeners = Self::default();
        if settings.runs(ServiceName::Gateway) {
            listeners.gateway = Some(bind("gateway", settings.gateway.addr).await?);
            if let Some(addr) = settings.gateway.dashboard_addr {
                listeners.dashboard = Some(bind("dashboard", addr).await?);
            }
        }
        if settings.runs(ServiceName::Registry) {
            listeners.registry = Some(bind("key-registry", settings.registry.addr).await?);
        }
        if settings.runs(ServiceName::AuthCheck) {
            listeners.auth_check = Some(bind("auth-check", settings.auth_check.addr).await?);
        }
        if settings.runs(ServiceName::Quota) {
            listeners.quota = Some(bind("quota", settings.quota.addr).await?);
        }
        listeners.metrics = Some(bind("metrics", settings.metrics_addr()).await?);
        Ok(listeners)
    }

    /// The address the dashboard's own listener is on, if it has one.
    pub fn dashboard_addr(&self) -> Option<SocketAddr> {
        addr(&self.dashboard)
    }

    /// The address the gateway listens on, if it is served.
    pub fn gateway_addr(&self) -> Option<SocketAddr> {
        addr(&self.gateway)
    }

    /// The address KeyRegistry listens on, if it is served.
    pub fn registry_addr(&self) -> Option<SocketAddr> {
        addr(&self.registry)
    }

    /// The address AuthCheck listens on, if it is served.
    pub fn auth_check_addr(&self) -> Option<SocketAddr> {
        addr(&self.auth_check)
    }

    /// The address Quota listens on, if it is served.
    pub fn quota_addr(&self) -> Option<SocketAddr> {
        addr(&self.quota)
    }

    /// The address `/metrics` is served on, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        addr(&self.metrics)
    }
}

fn addr(listener: &Option<TcpListener>) -> Option<SocketAddr> {
    listener.as_ref().and_then(|l| l.local_addr().ok())
}

async fn bind(service: &'static str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| BindError {
        service,
        addr,
        source,
    })
}
