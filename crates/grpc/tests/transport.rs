//! The client transport's deadline, as a generated client sees it.

use std::time::{Duration, Instant};

use stanna_proto::keys::v1 as pb;
use stanna_proto::keys::v1::auth_check_client::AuthCheckClient;
use stanna_proto::keys::v1::auth_check_server::{AuthCheck, AuthCheckServer};

/// An AuthCheck that never answers in time.
struct Stuck;

#[tonic::async_trait]
impl AuthCheck for Stuck {
    async fn verify(
        &self,
        _: tonic::Request<pb::VerifyRequest>,
    ) -> Result<tonic::Response<pb::VerifyResponse>, tonic::Status> {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Err(tonic::Status::internal("unreachable"))
    }
}

#[tokio::test]
async fn a_call_past_the_deadline_fails_with_deadline_exceeded() {
    let transport = stanna_grpc::with_timeout(
        stanna_grpc::in_memory(AuthCheckServer::new(Stuck)),
        Duration::from_millis(100),
    );
    let started = Instant::now();
    let status = AuthCheckClient::new(transport)
        .verify(pb::VerifyRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
