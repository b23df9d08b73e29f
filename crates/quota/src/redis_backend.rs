//! The Redis backend: one Lua script (`rolling_log.lua`) per decision, through `EVALSHA` (falling
//! back to `EVAL`, which caches it, on `NOSCRIPT`), over a
//! multiplexed, reconnecting `ConnectionManager` — or, for a Redis Cluster (a comma-separated
//! seed list), the redis crate's async cluster client, which routes each decision by its key's
//! hash slot (`q:{subject}`: one API key, one slot) and follows `MOVED` after a failover. One round
//! trip per decision either way; none while the subject is in the local over-limit cache.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;

use crate::over_limit::OverLimitCache;
use crate::{Decision, Mode, NamedWindow, QuotaError, WindowState, system_now_ms};

/// The script's source, embedded at build time.
pub const SCRIPT: &str = include_str!("rolling_log.lua");

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisBackendConfig {
    /// `redis://host:port[/db]`, or a Redis Cluster's seed nodes, comma-separated
    /// (`redis://h1:6379,redis://h2:6379`; one seed with a trailing comma).
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

/// A connection to one Redis server or to a Redis Cluster.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Rate limits in Redis, shared by every quota process.
#[derive(Clone)]
pub struct RedisBackend {
    connection: Connection,
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
        let connection = if config.url.contains(',') {
            Connection::Cluster(connect_cluster(config)?)
        } else {
            Connection::Single(connect_single(config)?)
        };
        Ok(Self {
            connection,
            script: Arc::new(redis::Script::new(SCRIPT)),
            over_limit: OverLimitCache::default(),
            response_timeout: config.response_timeout,
        })
    }

    /// Whether this backend talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.connection, Connection::Cluster(_))
    }

    /// `PING` within the response timeout.
    pub(crate) async fn ping(&self) -> Result<(), QuotaError> {
        let ping = redis::cmd("PING");
        // A cluster client sends PING to the masters it is connected to: ready while the cluster
        // answers, also while one master fails over (its keys get the fail mode meanwhile, the
        // others are decided, and every quota process sees the same, so none is taken out).
        let pong: Result<Result<String, _>, _> = match &self.connection {
            Connection::Single(c) => {
                tokio::time::timeout(self.response_timeout * 2, ping.query_async(&mut c.clone()))
                    .await
            }
            Connection::Cluster(c) => {
                tokio::time::timeout(self.response_timeout * 2, ping.query_async(&mut c.clone()))
                    .await
            }
        };
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
        let span = stanna_telemetry::request_span!(
            "redis.evalsha",
            db.system = "redis",
            otel.kind = "client",
        );
        let hash = self.script.get_hash();
        let call = async {
            match &self.connection {
                Connection::Single(c) => {
                    run_script(&mut c.clone(), hash, subject, cost, now_ms, mode, windows).await
                }
                Connection::Cluster(c) => {
                    run_script(&mut c.clone(), hash, subject, cost, now_ms, mode, windows).await
                }
            }
        };
        let reply: Vec<i64> = tokio::time::timeout(
            self.response_timeout * 2,
            tracing::Instrument::instrument(call, span),
        )
        .await
        .map_err(|elapsed| QuotaError::Unavailable(Box::new(elapsed)))?
        .map_err(|e| self.unavailable(e))?;
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

impl RedisBackend {
    /// A failed decision. A single server answering `MOVED` is a node of a Redis Cluster named as
    /// if it were a server: every decision would fail, so the cause says what to write instead.
    fn unavailable(&self, e: redis::RedisError) -> QuotaError {
        let moved = matches!(
            e.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::Moved | redis::ServerErrorKind::Ask)
        );
        if moved && !self.is_cluster() {
            return QuotaError::Unavailable(
                format!(
                    "STANNA_REDIS_URL names one node of a Redis Cluster ({e}): list the cluster's nodes comma-separated (one seed: end it with a comma)"
                )
                .into(),
            );
        }
        QuotaError::Unavailable(Box::new(e))
    }
}

/// One decision: `EVALSHA hash 1 q:{subject} cost now mode n limit period …`, and on `NOSCRIPT`
/// (a server restarted or flushed, a replica just promoted) the same as `EVAL` with the source,
/// which caches the script there. Not the redis crate's `Script::invoke_async`: its fallback
/// sends `SCRIPT LOAD` first, which a cluster client sends to every master and which fails while
/// one is down — so a promoted replica could decide nothing during another master's failover.
/// `EVAL` goes to the key's own master.
async fn run_script(
    connection: &mut impl redis::aio::ConnectionLike,
    hash: &str,
    subject: &str,
    cost: u32,
    now_ms: Option<u64>,
    mode: Mode,
    windows: &[NamedWindow],
) -> redis::RedisResult<Vec<i64>> {
    let mut evalsha = redis::cmd("EVALSHA");
    evalsha.arg(hash);
    script_args(&mut evalsha, subject, cost, now_ms, mode, windows);
    match evalsha.query_async(connection).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            let mut eval = redis::cmd("EVAL");
            eval.arg(SCRIPT);
            script_args(&mut eval, subject, cost, now_ms, mode, windows);
            eval.query_async(connection).await
        }
        other => other,
    }
}

/// The script's keys and arguments after its hash or source (see `rolling_log.lua`).
fn script_args(
    cmd: &mut redis::Cmd,
    subject: &str,
    cost: u32,
    now_ms: Option<u64>,
    mode: Mode,
    windows: &[NamedWindow],
) {
    cmd.arg(1)
        .arg(format!("q:{{{subject}}}"))
        .arg(cost)
        .arg(now_ms.map_or(String::new(), |t| t.to_string()))
        .arg(if mode == Mode::Consume { "c" } else { "p" })
        .arg(windows.len());
    for w in windows {
        cmd.arg(w.limit.limit())
            .arg(w.limit.period().as_millis() as u64);
    }
}

fn invalid_url(e: &redis::RedisError) -> QuotaError {
    QuotaError::invalid("STANNA_REDIS_URL", e.to_string())
}

fn connect_single(config: &RedisBackendConfig) -> Result<ConnectionManager, QuotaError> {
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
        .map_err(|e| invalid_url(&e))?
    } else {
        redis::Client::open(config.url.as_str()).map_err(|e| invalid_url(&e))?
    };
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.response_timeout))
        .set_response_timeout(Some(config.response_timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(200));
    ConnectionManager::new_lazy_with_config(client, manager_config).map_err(|e| invalid_url(&e))
}

/// The cluster client, connecting in the background: like the single server's, the quota
/// service starts (answering `UNAVAILABLE`) while no seed answers and recovers by itself.
///
/// A decision for a slot whose master just died fails within the response timeout (the caller's
/// fail mode applies); the client retries twice, 50–200 ms apart, which rides out a `MOVED` or a
/// reconnect but never holds a request for the whole failover (the cluster's node timeout plus an
/// election: seconds). Once a replica is promoted, the next `MOVED` or failed call refreshes the
/// slot map and decisions resume, with no restart.
fn connect_cluster(config: &RedisBackendConfig) -> Result<ClusterConnection, QuotaError> {
    let seeds: Vec<&str> = config.url.split(',').filter(|s| !s.is_empty()).collect();
    let mut builder = ClusterClientBuilder::new(seeds)
        .connection_timeout(config.response_timeout)
        .response_timeout(config.response_timeout)
        .retries(2)
        .min_retry_wait(50)
        .max_retry_wait(200);
    if config.url.starts_with("rediss://") {
        let _ = rustls::crypto::ring::default_provider().install_default();
        builder = builder.certs(redis::TlsCertificates {
            client_tls: None,
            root_cert: config.ca_pem.clone(),
        });
    }
    let client = builder.build().map_err(|e| invalid_url(&e))?;
    // The per-connection config replaces the builder's timeouts (a plain `ClusterConfig::new()`
    // would leave the response timeout unset): give both again.
    let timeouts = redis::cluster::ClusterConfig::new()
        .set_connection_timeout(config.response_timeout)
        .set_response_timeout(config.response_timeout);
    Ok(client.get_pending_async_connection_with_config(timeouts))
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
