//! The Redis backend: one Lua script (`rolling_log.lua`) through `EVALSHA` (falling back to
//! `EVAL`, which caches it, on `NOSCRIPT`), over a multiplexed, reconnecting `ConnectionManager`
//! — or, for a Redis Cluster (a comma-separated seed list), the redis crate's async cluster
//! client, which routes each decision by its key's hash slot (`q2:{subject}`: one API key, one
//! slot) and follows `MOVED` after a failover. One round trip per decision at most; none while the
//! subject is in the local over-limit cache.
//!
//! On one server, decisions that arrive while [`MAX_IN_FLIGHT`] calls are already out go
//! together in the next call (up to [`MAX_BATCH`]): the script's fixed cost per call is shared,
//! and a lone caller never waits for company (its call goes out at once when a slot is free). A
//! cluster's decisions go one per call (a call's keys must share a slot).

use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::over_limit::OverLimitCache;
use crate::{Decision, Mode, NamedWindow, QuotaError, WindowState, system_now_ms};

/// The script's source, embedded at build time.
pub const SCRIPT: &str = include_str!("rolling_log.lua");

/// Calls to one Redis server out at once before decisions start waiting to share one. With
/// [`MAX_BATCH`] this caps one process at 64 decisions per Redis round trip (≈ 64 000 a second at
/// 1 ms), far above what one quota process here sends (≈ 20 000 a second): beyond it, decisions
/// queue until their deadline.
pub const MAX_IN_FLIGHT: usize = 2;

/// The most decisions in one call (a call's script runs alone on the server: a batch of 32 takes
/// about 0.25 ms of its time).
pub const MAX_BATCH: usize = 32;

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
    /// The batching task's queue (one server only), started with the first decision (inside the
    /// runtime that makes it).
    batcher: Arc<OnceLock<mpsc::UnboundedSender<Job>>>,
}

/// One decision waiting for a call: its key, its packed parameters, where its reply goes.
struct Job {
    key: String,
    params: Vec<u8>,
    reply: oneshot::Sender<Result<Vec<i64>, Arc<redis::RedisError>>>,
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
            batcher: Arc::new(OnceLock::new()),
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
        let key = state_key(subject);
        let params = decision_params(cost, mode, windows);
        let call = async {
            // A decision at a given time (tests) goes alone: a call has one time.
            match (&self.connection, now_ms) {
                (Connection::Single(c), None) => self.batched(c, key, params).await,
                (Connection::Single(c), _) => self.alone(&mut c.clone(), key, now_ms, params).await,
                (Connection::Cluster(c), _) => {
                    self.alone(&mut c.clone(), key, now_ms, params).await
                }
            }
        };
        let reply: Vec<i64> = tokio::time::timeout(
            self.response_timeout * 2,
            tracing::Instrument::instrument(call, span),
        )
        .await
        .map_err(|elapsed| QuotaError::Unavailable(Box::new(elapsed)))??;
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
    fn unavailable(&self, e: &redis::RedisError) -> QuotaError {
        // A batch of keys from different slots gets CROSSSLOT there instead of MOVED.
        let moved = matches!(
            e.kind(),
            redis::ErrorKind::Server(
                redis::ServerErrorKind::Moved
                    | redis::ServerErrorKind::Ask
                    | redis::ServerErrorKind::CrossSlot
            )
        );
        if moved && !self.is_cluster() {
            return QuotaError::Unavailable(
                format!(
                    "STANNA_REDIS_URL names one node of a Redis Cluster ({e}): list the cluster's nodes comma-separated (one seed: end it with a comma)"
                )
                .into(),
            );
        }
        QuotaError::Unavailable(e.to_string().into())
    }

    /// One decision in a call of its own.
    async fn alone(
        &self,
        connection: &mut impl redis::aio::ConnectionLike,
        key: String,
        now_ms: Option<u64>,
        params: Vec<u8>,
    ) -> Result<Vec<i64>, QuotaError> {
        run_script(
            connection,
            self.script.get_hash(),
            &[key],
            now_ms,
            &[params],
        )
        .await
        .map_err(|e| self.unavailable(&e))
    }

    /// One decision through the batching task: out at once when a call slot is free, otherwise
    /// with the others that arrive meanwhile.
    async fn batched(
        &self,
        connection: &ConnectionManager,
        key: String,
        params: Vec<u8>,
    ) -> Result<Vec<i64>, QuotaError> {
        let queue = self.batcher.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(batch_calls(
                connection.clone(),
                self.script.get_hash().to_owned(),
                rx,
            ));
            tx
        });
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(job)) = queue.send(Job { key, params, reply }) {
            // The task's runtime is gone (a backend kept past it): decide without it.
            return self
                .alone(&mut connection.clone(), job.key, None, job.params)
                .await;
        }
        match answer.await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(self.unavailable(&e)),
            Err(_) => Err(QuotaError::Unavailable("the batching task stopped".into())),
        }
    }
}

/// The batching task: takes a decision, waits for a call slot, takes whatever else is queued by
/// then (up to [`MAX_BATCH`]) and sends them as one call.
async fn batch_calls(
    connection: ConnectionManager,
    hash: String,
    mut queue: mpsc::UnboundedReceiver<Job>,
) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let hash: Arc<str> = hash.into();
    while let Some(first) = queue.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // A caller that gave up meanwhile (its deadline passed) is not decided: it has applied
        // its fail mode, and charging it now would count a request that got no answer.
        let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
        if !first.reply.is_closed() {
            jobs.push(first);
        }
        while jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) if job.reply.is_closed() => {}
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        if jobs.is_empty() {
            continue;
        }
        let (mut connection, hash) = (connection.clone(), hash.clone());
        tokio::spawn(async move {
            let keys: Vec<String> = jobs
                .iter_mut()
                .map(|j| std::mem::take(&mut j.key))
                .collect();
            let params: Vec<Vec<u8>> = jobs
                .iter_mut()
                .map(|j| std::mem::take(&mut j.params))
                .collect();
            let result = run_script(&mut connection, &hash, &keys, None, &params).await;
            drop(slot);
            // Each decision's reply is 2 + 2n values: a reply of another length cannot be split
            // with confidence, so none of it is used.
            let expected: usize = params.iter().map(|p| 2 + 2 * usize::from(p[1])).sum();
            let result = result.and_then(|reply| {
                if reply.len() == expected {
                    Ok(reply)
                } else {
                    Err(redis::RedisError::from((
                        redis::ErrorKind::Parse,
                        "script reply of unexpected length",
                    )))
                }
            });
            match result {
                Ok(reply) => {
                    let mut at = 0;
                    for (job, params) in jobs.into_iter().zip(&params) {
                        let len = 2 + 2 * usize::from(params[1]);
                        let _ = job.reply.send(Ok(reply[at..at + len].to_vec()));
                        at += len;
                    }
                }
                Err(e) => {
                    let e = Arc::new(e);
                    for job in jobs {
                        let _ = job.reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

/// A subject's state in Redis, hash-tagged by the subject (one API key, one cluster slot).
fn state_key(subject: &str) -> String {
    format!("q2:{{{subject}}}")
}

/// One decision's parameters as the script reads them: `'<BBI4'` consume 1 | peek 0, the number
/// of windows, the cost, then per window `'<I4I4'` limit, period in ms (numbers in binary: the
/// script would spend more parsing text than deciding).
pub fn decision_params(cost: u32, mode: Mode, windows: &[NamedWindow]) -> Vec<u8> {
    let mut params = Vec::with_capacity(6 + 8 * windows.len());
    params.push(u8::from(mode == Mode::Consume));
    params.push(windows.len() as u8);
    params.extend_from_slice(&cost.to_le_bytes());
    for w in windows {
        params.extend_from_slice(&w.limit.limit().to_le_bytes());
        params.extend_from_slice(&(w.limit.period().as_millis() as u32).to_le_bytes());
    }
    params
}

/// One call: `EVALSHA hash k key… now params…`, and on `NOSCRIPT` (a server restarted or
/// flushed, a replica just promoted) the same as `EVAL` with the source, which caches the script
/// there. Not the redis crate's `Script::invoke_async`: its fallback sends `SCRIPT LOAD` first,
/// which a cluster client sends to every master and which fails while one is down — so a
/// promoted replica could decide nothing during another master's failover. `EVAL` goes to the
/// key's own master.
async fn run_script(
    connection: &mut impl redis::aio::ConnectionLike,
    hash: &str,
    keys: &[String],
    now_ms: Option<u64>,
    params: &[Vec<u8>],
) -> redis::RedisResult<Vec<i64>> {
    let mut evalsha = redis::cmd("EVALSHA");
    evalsha.arg(hash);
    script_args(&mut evalsha, keys, now_ms, params);
    match evalsha.query_async(connection).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            let mut eval = redis::cmd("EVAL");
            eval.arg(SCRIPT);
            script_args(&mut eval, keys, now_ms, params);
            eval.query_async(connection).await
        }
        other => other,
    }
}

/// The script's keys and arguments after its hash or source (see `rolling_log.lua`).
fn script_args(cmd: &mut redis::Cmd, keys: &[String], now_ms: Option<u64>, params: &[Vec<u8>]) {
    cmd.arg(keys.len());
    for key in keys {
        cmd.arg(key);
    }
    match now_ms {
        Some(t) => cmd.arg(t),
        None => cmd.arg(""),
    };
    for p in params {
        cmd.arg(p.as_slice());
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
