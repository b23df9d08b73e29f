//! The gateway alone, over in-process fakes of AuthCheck and KeyRegistry: the committed OpenAPI
//! snapshot, and what only a fake can make a real service answer. Everything a real stack can
//! show is tested against the real stack (`services/stanna/tests/system`).

use std::time::Duration;

use stanna_gateway::{Config, Gateway, GatewayMetrics};
use stanna_proto::keys::v1 as pb;
use stanna_proto::keys::v1::auth_check_server::AuthCheck;
use stanna_proto::keys::v1::key_registry_server::{KeyRegistry, KeyRegistryServer};
use tonic::{Request, Response, Status};

/// An AuthCheck answering every Verify with `answer`.
struct FakeAuthCheck {
    answer: pb::VerifyResponse,
}

#[tonic::async_trait]
impl AuthCheck for FakeAuthCheck {
    async fn verify(
        &self,
        _: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        Ok(Response::new(self.answer.clone()))
    }
}

/// A KeyRegistry refusing every call with `status`.
struct FakeRegistry {
    status: fn() -> Status,
}

#[tonic::async_trait]
impl KeyRegistry for FakeRegistry {
    async fn create_key(
        &self,
        _: Request<pb::CreateKeyRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        Err((self.status)())
    }
    async fn list_keys(
        &self,
        _: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        Err((self.status)())
    }
    async fn get_key(&self, _: Request<pb::GetKeyRequest>) -> Result<Response<pb::ApiKey>, Status> {
        Err((self.status)())
    }
    async fn update_key(
        &self,
        _: Request<pb::UpdateKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        Err((self.status)())
    }
    async fn delete_key(
        &self,
        _: Request<pb::DeleteKeyRequest>,
    ) -> Result<Response<pb::DeleteKeyResponse>, Status> {
        Err((self.status)())
    }
    async fn rotate_key(
        &self,
        _: Request<pb::RotateKeyRequest>,
    ) -> Result<Response<pb::RotateKeyResponse>, Status> {
        Err((self.status)())
    }
    async fn create_session(
        &self,
        _: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        Err((self.status)())
    }
    async fn delete_session(
        &self,
        _: Request<pb::DeleteSessionRequest>,
    ) -> Result<Response<pb::DeleteSessionResponse>, Status> {
        Err((self.status)())
    }
    async fn revoke_sessions(
        &self,
        _: Request<pb::RevokeSessionsRequest>,
    ) -> Result<Response<pb::RevokeSessionsResponse>, Status> {
        Err((self.status)())
    }

    async fn get_key_usage(
        &self,
        _: Request<pb::GetKeyUsageRequest>,
    ) -> Result<Response<pb::GetKeyUsageResponse>, Status> {
        Err((self.status)())
    }

    async fn list_audit_events(
        &self,
        _: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        Err((self.status)())
    }
}

/// A verdict admitting the caller, with the product's two windows.
fn valid() -> pb::VerifyResponse {
    let window = |name: &str, limit, period| pb::Window {
        name: name.into(),
        limit,
        remaining: limit - 1,
        reset_after: Some(prost_types::Duration {
            seconds: period,
            nanos: 0,
        }),
        period: Some(prost_types::Duration {
            seconds: period,
            nanos: 0,
        }),
    };
    pb::VerifyResponse {
        valid: true,
        code: pb::VerifyCode::Valid as i32,
        message: "ok".into(),
        key_id: "AbCdEf012345".into(),
        workspace_id: "ws".into(),
        user_id: "u".into(),
        name: "n".into(),
        windows: vec![window("burst", 100, 60), window("hourly", 1000, 3600)],
        credential: pb::Credential::ApiKey as i32,
        ..Default::default()
    }
}

/// A gateway on an ephemeral port over the fakes; returns its base URL.
async fn serve(answer: pb::VerifyResponse, registry: fn() -> Status) -> String {
    let auth_check: stanna_gateway::AuthCheckConnection =
        stanna_grpc::Connection::InProcess(std::sync::Arc::new(FakeAuthCheck { answer }));
    let registry =
        stanna_grpc::in_memory(KeyRegistryServer::new(FakeRegistry { status: registry }));
    let wiring = stanna_gateway::Wiring {
        auth_check,
        registry,
        readiness: Vec::new(),
        metrics: GatewayMetrics::unregistered(),
        sign_in: None,
    };
    let gateway =
        Gateway::new(&Config::for_tests(), wiring, "fake-admin-token-0123456789").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(stanna_gateway::serve(
        gateway,
        listener,
        std::future::pending(),
    ));
    url
}

/// One GET with an API key; returns status, headers and body.
async fn get(url: &str) -> (u16, http::HeaderMap, String) {
    use http_body_util::BodyExt as _;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let request = http::Request::get(url)
        .header(
            "authorization",
            "Bearer sk-AbCdEf012345xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        )
        .body(http_body_util::Full::default())
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .unwrap()
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// The document the gateway serves is the one committed beside it: an API change shows in
/// review as a change of `services/gateway/openapi.json`. `UPDATE_OPENAPI=1` rewrites it.
#[tokio::test]
async fn the_served_openapi_document_is_the_committed_snapshot() {
    let url = serve(valid(), || Status::unavailable("unused")).await;
    let (status, _, served) = get(&format!("{url}/openapi.json")).await;
    assert_eq!(status, 200);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
    if std::env::var("UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
        std::fs::write(path, &served).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        served == committed,
        "the served OpenAPI document differs from services/gateway/openapi.json: if the change \
         is meant, run `UPDATE_OPENAPI=1 cargo test -p stanna-gateway --test gateway` and review \
         the diff"
    );
}

/// `VERIFY_CODE_UNSPECIFIED` never comes from a real auth-check; should it, the gateway answers
/// 500 `internal` (logged with the request id), never lets the request through.
#[tokio::test]
async fn an_unspecified_verify_code_is_500_internal_and_never_allows() {
    let mut answer = valid();
    answer.code = pb::VerifyCode::Unspecified as i32;
    answer.valid = false;
    let url = serve(answer, || Status::unavailable("unused")).await;
    let (status, headers, body) = get(&format!("{url}/v1/me")).await;
    assert_eq!(status, 500, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"]["code"], "internal");
    assert_eq!(
        json["error"]["request_id"],
        headers["x-request-id"].to_str().unwrap()
    );
}

/// A registry answering with a code the contract does not use there is a bug: 500, no detail.
#[tokio::test]
async fn an_unexpected_registry_answer_is_500_without_its_text() {
    let url = serve(valid(), || Status::data_loss("secret internal detail")).await;
    let (status, _, body) = get(&format!("{url}/v1/keys")).await;
    assert_eq!(status, 500);
    assert!(!body.contains("secret internal detail"), "{body}");
}
