//! Exact rate limits over rolling windows, decided atomically for all of a subject's windows.
//!
//! The guarantee (`docs/quota.md`): for every window of limit `N` and period `P`, never
//! more than `N` admissions in any span of length `P`, and a client that keeps within every window
//! is never refused. A request refused by one window charges none.
//!
//! The algorithm ([`log`]) keeps, per window, a ring of the last `N` admission times: a request of
//! cost `c` is admitted iff the `(N-c+1)`-th most recent admission is at least `P` old — one slot
//! read and `c` slot writes per window, whatever the rate. Two backends run it:
//! [`MemoryBackend`] in process (the all-in-one default) and [`RedisBackend`], one Lua script
//! per decision or per batch of concurrent decisions (one round trip) over one Redis key per
//! subject (`q2:{subject}`, hash-tagged so a Redis Cluster keeps each subject's state, and so its
//! decision, on one node).

pub mod log;
mod memory;
mod over_limit;
mod redis_backend;
pub mod wire;

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use memory::MemoryBackend;
pub use redis_backend::{
    MAX_BATCH as REDIS_MAX_BATCH, RedisBackend, RedisBackendConfig, SCRIPT as REDIS_SCRIPT,
    decision_params as redis_decision_params,
};
use stanna_keys::WindowLimit;

/// At most this many windows per decision.
pub const MAX_WINDOWS: usize = 4;

/// One window to check, with the name reported back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedWindow {
    /// e.g. `burst` or `hourly`: borrowed for a key's own two windows, so the Verify path builds
    /// its windows without allocating.
    pub name: Cow<'static, str>,
    /// Limit and period.
    pub limit: WindowLimit,
}

/// A window's state after a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowState {
    /// The window's name.
    pub name: Cow<'static, str>,
    /// The window's limit.
    pub limit: u32,
    /// The window's length (the `w` of the `RateLimit-Policy` header).
    pub period: Duration,
    /// Requests of cost 1 still admitted now.
    pub remaining: u32,
    /// Time until `remaining` is back to `limit` (the newest counted admission leaves).
    pub reset_after: Duration,
}

/// The outcome of a Consume or Peek.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Every window admitted the cost (and, for Consume, it was charged).
    pub allowed: bool,
    /// Each window's state, in request order.
    pub windows: Vec<WindowState>,
    /// When refused: time until a request of the same cost would be admitted.
    pub retry_after: Option<Duration>,
}

/// Why no decision could be made.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// The request itself is unusable (no windows, cost above a limit, …): the caller's input,
    /// never retried.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The request field at fault, as the proto names it (`cost`, `limits[1].period`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The backing store cannot be reached; the caller applies its fail mode.
    #[error("quota store unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Consume (charge when admitted) or Peek (never charge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Check every window and charge them all if all admit.
    Consume,
    /// Check without charging.
    Peek,
}

/// Where decisions are made: in process or in Redis.
#[derive(Clone)]
pub enum QuotaBackend {
    /// Process memory (one process only).
    Memory(MemoryBackend),
    /// A Redis server shared by every quota process.
    Redis(RedisBackend),
}

impl QuotaBackend {
    /// Decides for `subject`. `now_ms` (milliseconds since the epoch) injects the time for tests;
    /// `None` uses the backend's clock (Redis's own `TIME`, so several quota processes agree).
    ///
    /// # Errors
    /// [`QuotaError::InvalidArgument`] for an unusable request, [`QuotaError::Unavailable`] when
    /// Redis cannot be reached.
    pub async fn decide(
        &self,
        subject: &str,
        cost: u32,
        windows: &[NamedWindow],
        mode: Mode,
        now_ms: Option<u64>,
    ) -> Result<Decision, QuotaError> {
        validate(subject, cost, windows)?;
        match self {
            Self::Memory(m) => Ok(m.decide(subject, cost, windows, mode, now_ms)),
            Self::Redis(r) => r.decide(subject, cost, windows, mode, now_ms).await,
        }
    }

    /// Checks the backend can decide: always for the in-process one; Redis answering `PING`
    /// (on a connection that authenticated and selected its database) for the other.
    ///
    /// # Errors
    /// [`QuotaError::Unavailable`] with Redis's cause.
    pub async fn ping(&self) -> Result<(), QuotaError> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::Redis(r) => r.ping().await,
        }
    }

    /// Which backend this is, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Memory(_) => "in-process",
            Self::Redis(r) if r.is_cluster() => "redis-cluster",
            Self::Redis(_) => "redis",
        }
    }
}

impl QuotaError {
    /// An unusable request field.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A decision with the backend's own clock, as a trait object: how auth-check reaches a quota
/// in its own process (the all-in-one wiring), without the wire format. The Quota service
/// implements it (counting its metrics as for calls over gRPC).
pub trait Decide: Send + Sync {
    /// Checks every window and charges them all if all admit `cost` (Consume).
    fn consume<'a>(
        &'a self,
        subject: &'a str,
        cost: u32,
        windows: &'a [NamedWindow],
    ) -> Pin<Box<dyn Future<Output = Result<Decision, QuotaError>> + Send + 'a>>;
}

fn validate(subject: &str, cost: u32, windows: &[NamedWindow]) -> Result<(), QuotaError> {
    if subject.is_empty() || subject.len() > 128 {
        return Err(QuotaError::invalid("subject", "must be 1 to 128 bytes"));
    }
    if windows.is_empty() || windows.len() > MAX_WINDOWS {
        return Err(QuotaError::invalid(
            "limits",
            format!("must hold 1 to {MAX_WINDOWS} windows"),
        ));
    }
    if let Some(w) = windows.iter().find(|w| cost > w.limit.limit()) {
        return Err(QuotaError::invalid(
            "cost",
            format!(
                "{cost} exceeds the limit {} of window {:?}, so it could never be admitted",
                w.limit.limit(),
                w.name
            ),
        ));
    }
    Ok(())
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn system_now_ms() -> u64 {
    stanna_keys::time::millis_since_epoch(std::time::SystemTime::now())
}
