//! An admin's KeyRegistry calls from Rust (tonic), for tests that need a key without grpcurl.

use stanna_proto::keys::v1 as pb;
use stanna_proto::keys::v1::key_registry_client::KeyRegistryClient;

/// Creates a key for `alice` in a fresh workspace through the registry at `registry_port`, with
/// `token` as the admin token; the answer (the key and its secret).
pub async fn create_key(registry_port: u16, token: &str, name: &str) -> pb::CreateKeyResponse {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{registry_port}"))
            .unwrap()
            .connect()
            .await
            .expect("connect to the registry");
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .expect("a printable token");
    let mut registry =
        KeyRegistryClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", bearer.clone());
            Ok(r)
        });
    registry
        .create_key(pb::CreateKeyRequest {
            workspace_id: format!("ws_{}", stanna_testkit::random_suffix()),
            user_id: "alice".into(),
            name: name.into(),
            expires_at: None,
            rate_limits: Vec::new(),
            metadata: String::new(),
            ..Default::default()
        })
        .await
        .expect("create a key")
        .into_inner()
}
