//! Health that tells the truth: each gRPC service reports SERVING only while what it needs answers
//! — the store for the registry and auth-check, Redis for the quota (and, for auth-check, the
//! quota it calls) — and NOT_SERVING otherwise, for its own name and for the overall `""`
//! service. A monitor re-checks every second; the same statuses feed the gateway's `/readyz`.

use std::sync::Arc;
use std::time::Duration;

use stanna_telemetry::{ErrorChain, LogLimiter};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// How often dependencies are re-checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

pub use stanna_grpc::Check;

/// A service's current status, for the gateway's readiness.
pub type Status = watch::Receiver<Result<(), String>>;

/// One monitored service: its checks, where its status is published, and its gRPC reporter once
/// it is served.
pub struct Monitored {
    /// The gRPC service name (`stanna.keys.v1.KeyRegistry`).
    pub service: &'static str,
    /// What it needs, each named.
    pub checks: Vec<(&'static str, Check)>,
    /// Its status.
    pub status: watch::Sender<Result<(), String>>,
    /// Its gRPC health (set when the service is served; a service that is not served still has
    /// a status, e.g. the in-process quota of an auth-check run alone).
    pub reporter: Option<HealthReporter>,
}

impl Monitored {
    /// A service with `checks`, healthy until checked.
    pub fn new(service: &'static str, checks: Vec<(&'static str, Check)>) -> Self {
        Self {
            service,
            checks,
            status: watch::channel(Ok(())).0,
            reporter: None,
        }
    }

    /// A view of its status.
    pub fn status(&self) -> Status {
        self.status.subscribe()
    }
}

/// A check that is `Ok` while `status` (another service's) is.
pub fn following(status: Status) -> Check {
    Arc::new(move || {
        let now = status.borrow().clone();
        Box::pin(async move { now })
    })
}

/// Re-checks every service every [`CHECK_EVERY`] until `stop`, publishing each status and
/// setting its gRPC health; a failing dependency is logged at most every 10 s. At `stop` (the
/// drain begins) every service reports NOT_SERVING, so load balancers send no new calls.
pub async fn monitor(services: Vec<Monitored>, stop: CancellationToken) {
    static DOWN: LogLimiter = LogLimiter::new(Duration::from_secs(10));
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        for service in &services {
            let mut outcome = Ok(());
            for (name, check) in &service.checks {
                let checked = tokio::time::timeout(CHECK_EVERY, check())
                    .await
                    .unwrap_or_else(|_| Err("did not answer within 1 s".to_owned()));
                if let Err(why) = checked {
                    outcome = Err(format!("{name}: {why}"));
                    break;
                }
            }
            if let Err(why) = &outcome
                && let Some(held_back) = DOWN.allow()
            {
                tracing::warn!(service = service.service, held_back, "not serving: {why}");
            }
            publish(service, outcome).await;
        }
    }
    for service in &services {
        publish(service, Err("shutting down".to_owned())).await;
    }
}

/// Sets `service`'s status and gRPC health (its own name and the overall `""`).
async fn publish(service: &Monitored, outcome: Result<(), String>) {
    let status = if outcome.is_ok() {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    if let Some(reporter) = &service.reporter {
        reporter.set_service_status(service.service, status).await;
        reporter.set_service_status("", status).await;
    }
    service.status.send_if_modified(|current| {
        let changed = *current != outcome;
        *current = outcome;
        changed
    });
}

/// A check of the key store.
pub fn store(store: stanna_store::KeyStore) -> Check {
    Arc::new(move || {
        let store = store.clone();
        Box::pin(async move {
            store
                .ping()
                .await
                .map_err(|e| format!("the key store does not answer: {}", ErrorChain(&e)))
        })
    })
}

/// A check of the quota's backend (Redis, when it decides there).
pub fn quota(service: stanna_quota_service::QuotaService) -> Check {
    Arc::new(move || {
        let service = service.clone();
        Box::pin(async move {
            service
                .ping()
                .await
                .map_err(|e| format!("Redis does not answer: {}", ErrorChain(&e)))
        })
    })
}

/// A check of a service in another process: its gRPC health over `transport`.
pub fn remote(transport: stanna_grpc::Transport, service: &'static str) -> Check {
    Arc::new(move || {
        let mut client = tonic_health::pb::health_client::HealthClient::new(transport.clone());
        Box::pin(async move {
            let answer = client
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.to_owned(),
                })
                .await
                .map_err(|status| format!("{service} is unreachable: {}", status.message()))?;
            match answer.into_inner().status() {
                tonic_health::pb::health_check_response::ServingStatus::Serving => Ok(()),
                other => Err(format!("{service} reports {other:?}")),
            }
        })
    })
}
