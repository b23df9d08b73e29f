//! The thin tonic adapter for `AuthCheck.Verify`.

use stanna_proto::keys::v1 as pb;
use stanna_proto::keys::v1::auth_check_server::AuthCheck;
use std::time::Instant;

use stanna_telemetry::metrics::metrics;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::verifier::{Verifier, VerifyError};

/// The AuthCheck gRPC service over a [`Verifier`].
#[derive(Clone)]
pub struct AuthCheckService {
    /// The core.
    verifier: Verifier,
}

impl AuthCheckService {
    /// Serves `verifier`.
    pub fn new(verifier: Verifier) -> Self {
        Self { verifier }
    }
}

#[tonic::async_trait]
impl AuthCheck for AuthCheckService {
    async fn verify(
        &self,
        request: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let r = request.into_inner();
        let started = Instant::now();
        // The key itself is never a field: only its public id, once verified.
        let span = stanna_telemetry::request_span!(
            "verify",
            code = tracing::field::Empty,
            key_id = tracing::field::Empty,
            workspace_id = tracing::field::Empty,
            cache = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let verdict = self
            .verifier
            .verify(&r.key, &r.workspace_id, r.cost)
            .instrument(span.clone())
            .await
            .map_err(|e| {
                let (code, status) = match e {
                    VerifyError::InvalidArgument(message) => {
                        ("invalid_argument", Status::invalid_argument(message))
                    }
                    VerifyError::Unavailable(message) => {
                        ("unavailable", Status::unavailable(message))
                    }
                };
                span.record("code", code);
                span.record("otel.status_code", "ERROR");
                metrics().verified(code, started.elapsed());
                status
            })?;
        let code = code_label(verdict.code);
        span.record("code", code);
        metrics().verified(code, started.elapsed());
        if let Some(key) = &verdict.key {
            span.record("key_id", tracing::field::display(&key.key_id));
            span.record("workspace_id", tracing::field::display(&key.workspace));
        }
        let mut response = pb::VerifyResponse {
            valid: verdict.code == pb::VerifyCode::Valid,
            code: verdict.code as i32,
            message: verdict.message,
            windows: verdict.windows,
            retry_after: verdict
                .retry_after
                .and_then(|d| prost_types::Duration::try_from(d).ok()),
            ..Default::default()
        };
        if let Some(key) = verdict.key {
            response.key_id = key.key_id.to_string();
            response.workspace_id = key.workspace.to_string();
            response.user_id = key.user.to_string();
            response.name.clone_from(&key.name);
        }
        Ok(Response::new(response))
    }
}

/// The metric label and span value of a Verify code.
fn code_label(code: pb::VerifyCode) -> &'static str {
    match code {
        pb::VerifyCode::Unspecified => "unspecified",
        pb::VerifyCode::Valid => "valid",
        pb::VerifyCode::Missing => "missing",
        pb::VerifyCode::Malformed => "malformed",
        pb::VerifyCode::NotFound => "not_found",
        pb::VerifyCode::Inactive => "inactive",
        pb::VerifyCode::Expired => "expired",
        pb::VerifyCode::WorkspaceMismatch => "workspace_mismatch",
        pb::VerifyCode::RateLimited => "rate_limited",
    }
}
