//! The Redis backend: one Lua script (`rolling_log.lua`) per decision, through `EVALSHA` (the
//! redis crate's `Script` loads it once and falls back to `EVAL` on `NOSCRIPT`), over a
//! multiplexed, reconnecting `ConnectionManager`. One round trip per decision; none while the
//! subject is in the local over-limit cache.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::over_limit::OverLimitCache;
use crate::{Decision, Mode, NamedWindow, QuotaError, WindowState, system_now_ms};

/// The script's source, embedded at build time.
pub const SCRIPT: &str = include_str!("rolling_log.lua");

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisBackendConfig {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// A decision not answered within this is `Unavailable` (the caller's fail mode applies).
    pub response_timeout: Duration,
    /// For `rediss://`: the CA certificates (PEM) the server must be signed by; `None`: the
    /// system's roots.
    pub ca_pem: Option<Vec<u8>>,
}

impl RedisBackendConfig {
    /// Defaults for `url`: a 500 ms response timeout, far above a healthy round trip and short
    /// enough that an outage costs a request half a second at most.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            response_timeout: Duration::from_millis(500),
            ca_pem: None,
        }
    }
}

/// Rate limits in Redis, shared by every quota process.
#[derive(Clone)]
pub struct RedisBackend {
    connection: ConnectionManager,
    script: Arc<redis::Script>,
    over_limit: OverLimitCache,
    response_timeout: Duration,
}

impl RedisBackend {
    /// Prepares a connection that is made lazily and remade after failures, so the quota service
    /// starts (and answers `UNAVAILABLE`) while Redis is down and recovers without a restart.
    ///
    /// # Errors
    /// [`QuotaError::InvalidArgument`] for a URL the redis crate cannot read.
    pub fn connect_lazy(config: &RedisBackendConfig) -> Result<Self, QuotaError> {
        let invalid = |e: redis::RedisError| QuotaError::invalid("STANNA_REDIS_URL", e.to_string());
        let client = if config.url.starts_with("rediss://") {
            // The redis crate builds its rustls configuration with the process's provider: ours
            // (ring), unless one is installed already.
            let _ = rustls::crypto::ring::default_provider().install_default();
            redis::Client::build_with_tls(
                config.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: config.ca_pem.clone(),
                },
            )
            .map_err(invalid)?
        } else {
            redis::Client::open(config.url.as_str()).map_err(invalid)?
        };
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.response_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let connection =
            ConnectionManager::new_lazy_with_config(client, manager_config).map_err(invalid)?;
        Ok(Self {
            connection,
            script: Arc::new(redis::Script::new(SCRIPT)),
            over_limit: OverLimitCache::default(),
            response_timeout: config.response_timeout,
        })
    }

    /// `PING` within the response timeout.
    pub(crate) async fn ping(&self) -> Result<(), QuotaError> {
        let mut connection = self.connection.clone();
        let pong: Result<Result<String, _>, _> = tokio::time::timeout(
            self.response_timeout * 2,
            redis::cmd("PING").query_async(&mut connection),
        )
        .await;
        match pong {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(QuotaError::Unavailable(Box::new(e))),
            Err(elapsed) => Err(QuotaError::Unavailable(Box::new(elapsed))),
        }
    }

    pub(crate) async fn decide(
        &self,
        subject: &str,
        cost: u32,
        windows: &[NamedWindow],
        mode: Mode,
        now_ms: Option<u64>,
    ) -> Result<Decision, QuotaError> {
        let local_now = now_ms.unwrap_or_else(system_now_ms);
        if mode == Mode::Consume
            && let Some(refused) = self.over_limit.check(subject, cost, windows, local_now)
        {
            return Ok(refused);
        }
        let mut invocation = self.script.key(format!("q:{{{subject}}}"));
        invocation
            .arg(cost)
            .arg(now_ms.map_or(String::new(), |t| t.to_string()));
        invocation
            .arg(if mode == Mode::Consume { "c" } else { "p" })
            .arg(windows.len());
        for w in windows {
            invocation
                .arg(w.limit.limit())
                .arg(w.limit.period().as_millis() as u64);
        }
        let mut connection = self.connection.clone();
        let span = stanna_telemetry::request_span!(
            "redis.evalsha",
            db.system = "redis",
            otel.kind = "client",
        );
        let reply: Vec<i64> = tokio::time::timeout(
            self.response_timeout * 2,
            tracing::Instrument::instrument(invocation.invoke_async(&mut connection), span),
        )
        .await
        .map_err(|elapsed| QuotaError::Unavailable(Box::new(elapsed)))?
        .map_err(|e| QuotaError::Unavailable(Box::new(e)))?;
        let decision = decision_from_reply(&reply, windows)?;
        if mode == Mode::Consume {
            if decision.allowed {
                self.over_limit.forget(subject);
            } else {
                self.over_limit
                    .remember(subject, cost, windows, local_now, &decision);
            }
        }
        Ok(decision)
    }
}

fn decision_from_reply(reply: &[i64], windows: &[NamedWindow]) -> Result<Decision, QuotaError> {
    if reply.len() != 2 + 2 * windows.len() {
        return Err(QuotaError::Unavailable(
            format!("unexpected script reply of {} values", reply.len()).into(),
        ));
    }
    let ms = |v: i64| Duration::from_millis(v.max(0) as u64);
    Ok(Decision {
        allowed: reply[0] == 1,
        retry_after: (reply[1] >= 0).then(|| ms(reply[1].max(1))),
        windows: windows
            .iter()
            .enumerate()
            .map(|(i, w)| WindowState {
                name: w.name.clone(),
                limit: w.limit.limit(),
                period: w.limit.period(),
                remaining: reply[2 + 2 * i].clamp(0, i64::from(u32::MAX)) as u32,
                reset_after: ms(reply[3 + 2 * i]),
            })
            .collect(),
    })
}
