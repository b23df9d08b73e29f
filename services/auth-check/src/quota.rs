//! The quota decision of a verified key, and the fail mode applied in one place
//! (`STANNA_QUOTA_FAIL_MODE`): when the quota cannot decide, `open` allows (counted, logged, no
//! windows so no rate-limit headers) and `closed` answers `UNAVAILABLE`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use stanna_grpc::Transport;
use stanna_proto::keys::v1::quota_client::QuotaClient;
use stanna_quota::{Decide, Decision, NamedWindow, QuotaError, wire};
use tracing::Instrument as _;

use crate::state::{KeyState, Verdict, VerifyCode, VerifyError};
use crate::{FailMode, Verifier};

/// How auth-check reaches the quota: a decider in this process (the all-in-one wiring: the Quota
/// service object called directly, no protobuf), or the Quota service over a transport (split
/// mode). The composition root chooses; auth-check never builds a quota itself.
#[derive(Clone)]
pub enum QuotaConnection {
    /// In this process.
    InProcess(Arc<dyn Decide>),
    /// Over gRPC (or a server wired in memory).
    Remote(Transport),
}

impl From<Transport> for QuotaConnection {
    fn from(transport: Transport) -> Self {
        Self::Remote(transport)
    }
}

impl QuotaConnection {
    /// One Consume, whichever way the quota is reached.
    async fn consume(
        &self,
        subject: &str,
        cost: u32,
        windows: &[NamedWindow],
    ) -> Result<Decision, QuotaError> {
        match self {
            Self::InProcess(decider) => decider.consume(subject, cost, windows).await,
            Self::Remote(transport) => {
                let span = stanna_telemetry::request_span!("Quota/Consume", otel.kind = "client");
                QuotaClient::new(transport.clone())
                    .consume(wire::consume_request(subject, cost, windows))
                    .instrument(span)
                    .await
                    .map(|response| wire::decision_from_proto(response.into_inner()))
                    .map_err(wire::error_from_status)
            }
        }
    }
}

impl Verifier {
    /// Charges `cost` to `state`'s windows: `VALID` or `RATE_LIMITED` with the windows, or the
    /// fail mode when no decision comes within the quota timeout.
    pub(crate) async fn consume_quota(
        &self,
        state: Arc<KeyState>,
        cost: u32,
    ) -> Result<Verdict, VerifyError> {
        let windows = state.windows();
        match self
            .decide(state.key_id.as_str(), &windows, cost, state.key_id.as_str())
            .await?
        {
            Some(decision) => Ok(verdict_of(decision, state, cost)),
            None => Ok(Verdict::about(
                VerifyCode::Valid,
                "ok (rate limits not checked: quota unavailable)",
                state,
            )),
        }
    }

    /// One quota decision for `subject` with the fail mode applied: `Some(decision)`, or `None`
    /// when the quota could not decide and the fail mode is open (counted and logged, naming
    /// `credential_id`), or `UNAVAILABLE` when it is closed.
    pub(crate) async fn decide(
        &self,
        subject: &str,
        windows: &[NamedWindow],
        cost: u32,
        credential_id: &str,
    ) -> Result<Option<Decision>, VerifyError> {
        let timeout = self.inner.settings.quota_timeout;
        let answer =
            tokio::time::timeout(timeout, self.inner.quota.consume(subject, cost, windows)).await;
        let failure = match answer {
            Ok(Ok(decision)) => return Ok(Some(decision)),
            Ok(Err(QuotaError::InvalidArgument { field, reason })) => {
                // The stored limits were refused (the cost was checked before): a bug or a
                // corrupt row, not the caller's input. Logged here; the caller gets UNAVAILABLE
                // without the internal text.
                tracing::error!(field, reason, credential_id, "quota refused the limits");
                return Err(VerifyError::Unavailable(
                    "the key's rate limits could not be checked",
                ));
            }
            Ok(Err(QuotaError::Unavailable(cause))) => {
                stanna_telemetry::ErrorChain(cause.as_ref()).to_string()
            }
            Err(_) => format!("quota did not answer within {timeout:?}"),
        };
        // Every request fails alike while the quota is away: one line per 10 s, with the count.
        static FAILED: stanna_telemetry::LogLimiter =
            stanna_telemetry::LogLimiter::new(std::time::Duration::from_secs(10));
        match self.inner.settings.fail_mode {
            FailMode::Open => {
                self.inner.stats.fail_open.fetch_add(1, Ordering::Relaxed);
                self.inner.metrics.failed_open();
                if let Some(held_back) = FAILED.allow() {
                    tracing::warn!(reason = %failure, credential_id, held_back, "quota unavailable; allowing WITHOUT rate limits (fail-open)");
                }
                Ok(None)
            }
            FailMode::Closed => {
                if let Some(held_back) = FAILED.allow() {
                    tracing::warn!(reason = %failure, credential_id, held_back, "quota unavailable; refusing (fail-closed)");
                }
                Err(VerifyError::Unavailable("the quota service is unavailable"))
            }
        }
    }
}

/// `VALID` or `RATE_LIMITED` (naming the window that refused), with every window's state.
fn verdict_of(decision: Decision, state: Arc<KeyState>, cost: u32) -> Verdict {
    let mut verdict = if decision.allowed {
        Verdict::about(VerifyCode::Valid, "ok", state)
    } else {
        let binding = decision
            .windows
            .iter()
            .find(|w| w.remaining < cost)
            .map_or("a", |w| w.name.as_ref());
        let message = format!("the {binding} rate limit is exhausted");
        Verdict::about(VerifyCode::RateLimited, message, state)
    };
    verdict.windows = decision.windows;
    verdict.retry_after = decision.retry_after;
    verdict
}
