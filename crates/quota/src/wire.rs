//! The Quota contract's messages (`stanna.keys.v1.ConsumeRequest` / `ConsumeResponse`) to and from
//! this crate's types, written once for both ends: the Quota service reads requests and writes
//! decisions; auth-check, calling it over gRPC, writes requests and reads decisions.

use stanna_keys::{DomainError, WindowLimit};
use stanna_proto::keys::v1 as pb;
use stanna_proto::prost_types;

use crate::{Decision, NamedWindow, QuotaError, WindowState};

/// The windows of a request, checked: each limit 1–10 000, each period whole milliseconds from
/// 1 s to 24 h.
///
/// # Errors
/// [`QuotaError::InvalidArgument`] naming `limits[i].limit` or `limits[i].period`.
pub fn windows_from_proto(limits: &[pb::RateLimit]) -> Result<Vec<NamedWindow>, QuotaError> {
    limits
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let period = l
                .period
                .and_then(stanna_proto::convert::std_duration)
                .ok_or_else(|| {
                    QuotaError::invalid(
                        format!("limits[{i}].period"),
                        "must be a positive duration",
                    )
                })?;
            let limit = WindowLimit::new(l.limit, period).map_err(|e| {
                let part = if matches!(e, DomainError::WindowLimit { .. }) {
                    "limit"
                } else {
                    "period"
                };
                QuotaError::invalid(format!("limits[{i}].{part}"), e.to_string())
            })?;
            Ok(NamedWindow {
                name: l.name.clone().into(),
                limit,
            })
        })
        .collect()
}

/// The request auth-check sends for `windows`.
pub fn consume_request(subject: &str, cost: u32, windows: &[NamedWindow]) -> pb::ConsumeRequest {
    pb::ConsumeRequest {
        subject: subject.to_owned(),
        cost,
        limits: windows
            .iter()
            .map(|w| pb::RateLimit {
                name: w.name.to_string(),
                limit: w.limit.limit(),
                period: prost_types::Duration::try_from(w.limit.period()).ok(),
            })
            .collect(),
    }
}

/// A window's state as the contract carries it (also inside `VerifyResponse`).
pub fn window_to_proto(w: &WindowState) -> pb::Window {
    pb::Window {
        name: w.name.to_string(),
        limit: w.limit,
        remaining: w.remaining,
        reset_after: prost_types::Duration::try_from(w.reset_after).ok(),
        period: prost_types::Duration::try_from(w.period).ok(),
    }
}

/// A decision as the contract carries it.
pub fn decision_to_proto(d: &Decision) -> pb::ConsumeResponse {
    pb::ConsumeResponse {
        allowed: d.allowed,
        windows: d.windows.iter().map(window_to_proto).collect(),
        retry_after: d
            .retry_after
            .and_then(|r| prost_types::Duration::try_from(r).ok()),
    }
}

/// A decision read back from the contract (a negative or missing duration reads as zero).
pub fn decision_from_proto(r: pb::ConsumeResponse) -> Decision {
    let duration = |d: Option<prost_types::Duration>| {
        d.and_then(stanna_proto::convert::std_duration)
            .unwrap_or_default()
    };
    Decision {
        allowed: r.allowed,
        windows: r
            .windows
            .into_iter()
            .map(|w| WindowState {
                name: w.name.into(),
                limit: w.limit,
                period: duration(w.period),
                remaining: w.remaining,
                reset_after: duration(w.reset_after),
            })
            .collect(),
        retry_after: r.retry_after.and_then(stanna_proto::convert::std_duration),
    }
}

/// A quota error as the Quota service answers it: a bad request names its field in a
/// `google.rpc.BadRequest`; an unreachable store is `UNAVAILABLE`, its cause logged here and kept
/// out of the answer.
pub fn status_from_error(err: QuotaError) -> tonic::Status {
    match err {
        QuotaError::InvalidArgument { field, reason } => {
            stanna_grpc::status::invalid_argument(&field, &reason)
        }
        QuotaError::Unavailable(source) => {
            tracing::warn!(error = %stanna_telemetry::ErrorChain(source.as_ref()), "quota store unavailable");
            tonic::Status::unavailable("the quota store is unavailable")
        }
    }
}

/// What a caller of the Quota service makes of a failed call: `INVALID_ARGUMENT` back as
/// [`QuotaError::InvalidArgument`] (with its field, `request` if it names none — never an
/// outage, which fail-open would let through), anything else (unreachable, `UNAVAILABLE`, a
/// deadline) as [`QuotaError::Unavailable`].
pub fn error_from_status(status: tonic::Status) -> QuotaError {
    if status.code() != tonic::Code::InvalidArgument {
        return QuotaError::Unavailable(Box::new(status));
    }
    let (field, reason) = stanna_grpc::status::field_violation(&status)
        .unwrap_or_else(|| ("request".to_owned(), status.message().to_owned()));
    QuotaError::InvalidArgument { field, reason }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_decision_survives_the_round_trip_through_the_contract() {
        let decision = Decision {
            allowed: false,
            windows: vec![WindowState {
                name: "burst".into(),
                limit: 100,
                period: Duration::from_secs(60),
                remaining: 0,
                reset_after: Duration::from_millis(59_900),
            }],
            retry_after: Some(Duration::from_millis(100)),
        };
        assert_eq!(decision_from_proto(decision_to_proto(&decision)), decision);
    }

    #[test]
    fn a_bad_window_names_its_field() {
        let bad = [pb::RateLimit {
            name: "burst".into(),
            limit: 0,
            period: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
        }];
        let err = windows_from_proto(&bad).unwrap_err();
        assert!(
            matches!(&err, QuotaError::InvalidArgument { field, .. } if field == "limits[0].limit"),
            "{err:?}"
        );
        let status = status_from_error(err);
        assert!(matches!(
            error_from_status(status),
            QuotaError::InvalidArgument { field, .. } if field == "limits[0].limit"
        ));
    }
}
