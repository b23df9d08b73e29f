//! The thin tonic adapter for `AuthCheck.Verify`: the contract's messages to and from the core's
//! domain types, the span, and the outcome metrics.

use std::time::Instant;

use stanna_proto::keys::v1 as pb;
use stanna_proto::keys::v1::auth_check_server::AuthCheck;
use stanna_proto::prost_types;
use stanna_quota::wire;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::state::{Required, Verdict, VerifyCode, VerifyError};
use crate::verifier::Verifier;

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
        let metrics = self.verifier.metrics();
        let verdict = match (r.key.is_empty(), r.session.is_empty()) {
            (false, false) => Err(VerifyError::InvalidArgument {
                field: "session",
                reason: "send either a key or a session, not both".to_owned(),
            }),
            (true, false) => {
                self.verifier
                    .verify_session(&r.session, &r.workspace_id, r.cost)
                    .instrument(span.clone())
                    .await
            }
            _ => match required(&r) {
                Ok(required) => {
                    self.verifier
                        .verify_with(&r.key, &r.workspace_id, r.cost, required)
                        .instrument(span.clone())
                        .await
                }
                Err(e) => Err(e),
            },
        }
        .map_err(|e| {
            let (code, status) = match e {
                VerifyError::InvalidArgument { field, reason } => (
                    "invalid_argument",
                    stanna_grpc::status::invalid_argument(field, &reason),
                ),
                VerifyError::Unavailable(message) => ("unavailable", Status::unavailable(message)),
            };
            span.record("code", code);
            span.record("otel.status_code", "ERROR");
            metrics.verified(code, started.elapsed());
            status
        })?;
        let code = verdict.code.label();
        span.record("code", code);
        metrics.verified(code, started.elapsed());
        if let Some(key) = &verdict.key {
            span.record("key_id", tracing::field::display(&key.key_id));
            span.record("workspace_id", key.workspace());
        }
        Ok(Response::new(response_of(verdict, r.include_metadata)))
    }
}

/// What the request needs of the key's scopes, each name checked (a name no key could hold is
/// the caller's mistake, said as such, not a refusal of the key).
fn required(r: &pb::VerifyRequest) -> Result<Required<'_>, VerifyError> {
    if r.unscoped_only {
        return Ok(Required::UnscopedOnly);
    }
    if r.required_scopes.is_empty() {
        return Ok(Required::Nothing);
    }
    if r.required_scopes.len() > stanna_keys::Scopes::MAX_SCOPES {
        return Err(VerifyError::InvalidArgument {
            field: "required_scopes",
            reason: format!(
                "at most {} scopes, got {}",
                stanna_keys::Scopes::MAX_SCOPES,
                r.required_scopes.len()
            ),
        });
    }
    for (i, name) in r.required_scopes.iter().enumerate() {
        stanna_keys::scopes::check_name(name).map_err(|e| VerifyError::InvalidArgument {
            field: "required_scopes",
            reason: format!("entry {i}: {e}"),
        })?;
    }
    Ok(Required::All(&r.required_scopes))
}

/// A verdict as the contract carries it; the key's metadata only when asked for.
fn response_of(verdict: Verdict, include_metadata: bool) -> pb::VerifyResponse {
    let mut response = pb::VerifyResponse {
        valid: verdict.code == VerifyCode::Valid,
        code: code_to_proto(verdict.code) as i32,
        message: verdict.message.into_owned(),
        windows: verdict.windows.iter().map(wire::window_to_proto).collect(),
        retry_after: verdict
            .retry_after
            .and_then(|d| prost_types::Duration::try_from(d).ok()),
        missing_scope: verdict.missing_scope,
        ..Default::default()
    };
    if let Some(session) = verdict.session {
        response.credential = pb::Credential::Session as i32;
        response.workspace_id = session.workspace.to_string();
        response.user_id = session.user.to_string();
        response.session = Some(Box::new(pb::VerifiedSession {
            id: session.id.to_string(),
            role: session.role.as_str().to_owned(),
            display_name: session.name.clone().unwrap_or_default(),
            email: session.email.clone().unwrap_or_default(),
        }));
    }
    if let Some(key) = verdict.key {
        response.credential = pb::Credential::ApiKey as i32;
        response.key_id = key.key_id.to_string();
        response.workspace_id = key.workspace().to_owned();
        response.user_id = key.user().to_owned();
        response.name = key.name().to_owned();
        // Empty for an unscoped key: nothing is allocated on the usual path.
        response.scopes = key.scopes().names().to_vec();
        if include_metadata && let Some(metadata) = key.metadata() {
            response.metadata = metadata.to_owned();
        }
    }
    response
}

/// The contract's code of a verdict.
pub fn code_to_proto(code: VerifyCode) -> pb::VerifyCode {
    match code {
        VerifyCode::Valid => pb::VerifyCode::Valid,
        VerifyCode::Missing => pb::VerifyCode::Missing,
        VerifyCode::Malformed => pb::VerifyCode::Malformed,
        VerifyCode::NotFound => pb::VerifyCode::NotFound,
        VerifyCode::Inactive => pb::VerifyCode::Inactive,
        VerifyCode::Expired => pb::VerifyCode::Expired,
        VerifyCode::WorkspaceMismatch => pb::VerifyCode::WorkspaceMismatch,
        VerifyCode::RateLimited => pb::VerifyCode::RateLimited,
        VerifyCode::InsufficientScope => pb::VerifyCode::InsufficientScope,
    }
}
