//! The thin tonic adapter for `AuthCheck.Verify`.

use stanna_proto::keys::v1 as pb;
use stanna_proto::keys::v1::auth_check_server::AuthCheck;
use tonic::{Request, Response, Status};

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
        let verdict = self
            .verifier
            .verify(&r.key, &r.workspace_id, r.cost)
            .await
            .map_err(|e| match e {
                VerifyError::InvalidArgument(message) => Status::invalid_argument(message),
                VerifyError::Unavailable(message) => Status::unavailable(message),
            })?;
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
