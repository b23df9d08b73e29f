//! The KeyRegistry over real gRPC: a server on an ephemeral port, a tonic client, a SQLite file.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use stanna_config::SharedConfig;
use stanna_key_registry::Config;
use stanna_keys::PresentedKey;
use stanna_proto::keys::v1 as pb;
use stanna_proto::keys::v1::key_registry_client::KeyRegistryClient;
use stanna_testkit::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const TOKEN: &str = "test-admin-token-0123456789";

/// A running registry and a client for it.
struct Server {
    client: KeyRegistryClient<Channel>,
    addr: std::net::SocketAddr,
    _stop: oneshot::Sender<()>,
    _dir: TempDir,
}

async fn start() -> Server {
    start_with(|_| {}).await
}

async fn start_with(adjust: impl FnOnce(&mut Config)) -> Server {
    let dir = TempDir::new();
    let mut config = Config::for_tests(TOKEN);
    adjust(&mut config);
    let shared = SharedConfig::for_tests(dir.sqlite_url());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let store = stanna_store::KeyStore::connect(&shared.database_url)
        .await
        .unwrap();
    let registry =
        stanna_key_registry::build(&config, &shared, store, stanna_keys::system_clock()).unwrap();
    let credentials = stanna_key_registry::Credentials::new(
        &config.named_admin_tokens(),
        config.gateway_token.as_ref(),
    );
    tokio::spawn(async move {
        stanna_key_registry::serve(registry, credentials, listener, async {
            let _ = stopped.await;
        })
        .await
        .expect("registry runs");
    });
    let client = connect(addr).await;
    Server {
        client,
        addr,
        _stop: stop,
        _dir: dir,
    }
}

/// Connects, retrying while the server finishes starting (migrations run before it listens).
async fn connect(addr: std::net::SocketAddr) -> KeyRegistryClient<Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
    for _ in 0..100 {
        if let Ok(channel) = endpoint.connect().await {
            return KeyRegistryClient::new(channel);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("registry did not come up on {addr}");
}

fn authed<T>(message: T) -> Request<T> {
    with_token(message, &format!("Bearer {TOKEN}"))
}

fn with_token<T>(message: T, value: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", value.parse().unwrap());
    request
}

fn create_request(ws: &str, user: &str, name: &str) -> pb::CreateKeyRequest {
    pb::CreateKeyRequest {
        workspace_id: ws.into(),
        user_id: user.into(),
        name: name.into(),
        ..Default::default()
    }
}

impl Server {
    async fn create(&mut self, ws: &str, user: &str, name: &str) -> pb::CreateKeyResponse {
        self.client
            .create_key(authed(create_request(ws, user, name)))
            .await
            .expect("create")
            .into_inner()
    }

    async fn list(&mut self, ws: &str, user: &str) -> Vec<pb::ApiKey> {
        let request = pb::ListKeysRequest {
            workspace_id: ws.into(),
            user_id: user.into(),
            ..Default::default()
        };
        self.client
            .list_keys(authed(request))
            .await
            .expect("list")
            .into_inner()
            .keys
    }

    async fn get(&mut self, ws: &str, user: &str, id: &str) -> Result<pb::ApiKey, Status> {
        let request = pb::GetKeyRequest {
            workspace_id: ws.into(),
            user_id: user.into(),
            key_id: id.into(),
        };
        self.client
            .get_key(authed(request))
            .await
            .map(|r| r.into_inner())
    }
}

/// The status is INVALID_ARGUMENT naming the field: in its `google.rpc.BadRequest` detail (what
/// programs read) and first in its message (what people read in grpcurl's output).
fn assert_names_invalid_field(status: &Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(&format!("{field}:")),
        "message {:?} should name {field}",
        status.message()
    );
    let (named, _) = stanna_grpc::status::field_violation(status)
        .unwrap_or_else(|| panic!("no BadRequest detail on {status:?}"));
    assert_eq!(named, field, "the BadRequest detail names the field");
}

fn seconds(t: &Option<prost_types::Timestamp>) -> i64 {
    t.as_ref().expect("timestamp set").seconds
}

fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn created_secret_parses_and_never_appears_in_any_later_response() {
    let mut server = start().await;
    let created = server.create("ws1", "alice", "Production Dashboard").await;
    let secret = created.secret.clone();
    assert!(secret.starts_with("sk-"), "secret starts with sk-");
    let parsed = PresentedKey::parse(&secret).expect("the secret is a well-formed key");
    let key = created.key.expect("key metadata");
    assert_eq!(parsed.key_id().as_str(), key.id);
    assert_eq!(
        key.preview,
        format!("sk-{}...{}", &secret[3..7], &secret[49..])
    );

    let mut later = Vec::new();
    later.push(format!("{:?}", server.list("ws1", "").await));
    later.push(format!(
        "{:?}",
        server.get("ws1", "alice", &key.id).await.unwrap()
    ));
    let update = pb::UpdateKeyRequest {
        workspace_id: "ws1".into(),
        key_id: key.id.clone(),
        name: Some("Renamed".into()),
        ..Default::default()
    };
    later.push(format!(
        "{:?}",
        server
            .client
            .update_key(authed(update))
            .await
            .unwrap()
            .into_inner()
    ));
    let rotate = pb::RotateKeyRequest {
        workspace_id: "ws1".into(),
        key_id: key.id.clone(),
        ..Default::default()
    };
    let rotated = server
        .client
        .rotate_key(authed(rotate))
        .await
        .unwrap()
        .into_inner();
    later.push(format!("{:?}", rotated.key));
    later.push(format!("{:?}", server.list("ws1", "alice").await));
    for response in later {
        assert!(
            !response.contains(&secret[15..47]),
            "a later response shows the secret: {response}"
        );
    }
}

#[tokio::test]
async fn listing_shows_preview_created_active_and_no_last_used() {
    let mut server = start().await;
    let before = now_seconds();
    let created = server
        .create("ws1", "alice", "Analytics Script")
        .await
        .key
        .unwrap();
    let keys = server.list("ws1", "alice").await;
    assert_eq!(keys.len(), 1);
    let listed = &keys[0];
    assert_eq!(listed.name, "Analytics Script");
    assert_eq!(listed.preview, created.preview);
    assert!(
        listed.preview.starts_with("sk-")
            && listed.preview.contains("...")
            && listed.preview.len() == 14
    );
    assert_eq!(listed.status, pb::KeyStatus::Active as i32);
    assert!(
        (before - 1..=now_seconds() + 1).contains(&seconds(&listed.created_at)),
        "created now"
    );
    assert_eq!(listed.last_used_at, None, "never used");
    assert_eq!(listed.expires_at, None);
    let limits: Vec<_> = listed
        .rate_limits
        .iter()
        .map(|l| (l.name.as_str(), l.limit, l.period.unwrap().seconds))
        .collect();
    assert_eq!(
        limits,
        [("burst", 100, 60), ("hourly", 1000, 3600)],
        "the default limits"
    );
}

#[tokio::test]
async fn update_renames_and_deactivates_and_reactivates() {
    let mut server = start().await;
    let id = server
        .create("ws1", "alice", "Mobile App")
        .await
        .key
        .unwrap()
        .id;
    let request = pb::UpdateKeyRequest {
        workspace_id: "ws1".into(),
        key_id: id.clone(),
        name: Some("  Mobile App (iOS)  ".into()),
        status: pb::KeyStatus::Inactive as i32,
        ..Default::default()
    };
    let updated = server
        .client
        .update_key(authed(request))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.name, "Mobile App (iOS)", "renamed, trimmed");
    assert_eq!(
        updated.status,
        pb::KeyStatus::Inactive as i32,
        "deactivated"
    );
    let request = pb::UpdateKeyRequest {
        workspace_id: "ws1".into(),
        key_id: id.clone(),
        status: pb::KeyStatus::Active as i32,
        ..Default::default()
    };
    let updated = server
        .client
        .update_key(authed(request))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (updated.name.as_str(), updated.status),
        ("Mobile App (iOS)", pb::KeyStatus::Active as i32)
    );
}

#[tokio::test]
async fn deleted_key_is_not_found_and_deleting_twice_is_not_found() {
    let mut server = start().await;
    let id = server
        .create("ws1", "alice", "Doomed")
        .await
        .key
        .unwrap()
        .id;
    let delete = || pb::DeleteKeyRequest {
        workspace_id: "ws1".into(),
        user_id: "alice".into(),
        key_id: id.clone(),
    };
    server
        .client
        .delete_key(authed(delete()))
        .await
        .expect("first delete");
    assert_eq!(
        server.get("ws1", "", &id).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        server
            .client
            .delete_key(authed(delete()))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert!(server.list("ws1", "").await.is_empty());
}

#[tokio::test]
async fn rotation_gives_a_new_key_and_lists_the_old_one_as_expiring() {
    let mut server = start().await;
    let old = server.create("ws1", "alice", "Rotating").await.key.unwrap();
    let request = pb::RotateKeyRequest {
        workspace_id: "ws1".into(),
        key_id: old.id.clone(),
        grace_period: Some(prost_types::Duration {
            seconds: 3600,
            nanos: 0,
        }),
        ..Default::default()
    };
    let rotated = server
        .client
        .rotate_key(authed(request))
        .await
        .unwrap()
        .into_inner();
    let new = rotated.key.unwrap();
    assert_ne!(new.id, old.id);
    assert_eq!(
        PresentedKey::parse(&rotated.secret)
            .unwrap()
            .key_id()
            .as_str(),
        new.id
    );
    assert_eq!(
        (&new.name, &new.user_id, &new.rate_limits),
        (&old.name, &old.user_id, &old.rate_limits)
    );
    let listed = server.list("ws1", "alice").await;
    assert_eq!(listed.len(), 2);
    let old_listed = listed
        .iter()
        .find(|k| k.id == old.id)
        .expect("old key still listed");
    let expiry = seconds(&old_listed.expires_at);
    assert!(
        (now_seconds() + 3590..=now_seconds() + 3610).contains(&expiry),
        "old key expires after the grace period"
    );
    assert_eq!(
        listed.iter().find(|k| k.id == new.id).unwrap().expires_at,
        None
    );
    let again = pb::RotateKeyRequest {
        workspace_id: "ws1".into(),
        key_id: old.id.clone(),
        ..Default::default()
    };
    let status = server.client.rotate_key(authed(again)).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "a key in its grace period is not rotated twice"
    );
    assert!(
        status.message().contains(&new.id),
        "the message names the replacement: {}",
        status.message()
    );
    let (kind, subject, _) =
        stanna_grpc::status::precondition_violation(&status).expect("a PreconditionFailure");
    assert_eq!(
        (kind.as_str(), subject.as_str()),
        ("ALREADY_ROTATED", "key_id")
    );
}

#[tokio::test]
async fn rotation_without_grace_expires_the_old_key_at_once() {
    let mut server = start().await;
    let old = server.create("ws1", "alice", "Leaked").await.key.unwrap();
    let request = pb::RotateKeyRequest {
        workspace_id: "ws1".into(),
        key_id: old.id.clone(),
        ..Default::default()
    };
    let rotated = server.client.rotate_key(authed(request)).await.unwrap();
    let new_id = rotated.into_inner().key.unwrap().id;
    let old_now = server.get("ws1", "alice", &old.id).await.unwrap();
    assert!(
        seconds(&old_now.expires_at) <= now_seconds(),
        "expired already"
    );
    let again = pb::RotateKeyRequest {
        workspace_id: "ws1".into(),
        key_id: old.id.clone(),
        ..Default::default()
    };
    let status = server.client.rotate_key(authed(again)).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "a rotated-out key cannot be rotated again: {status:?}"
    );
    let (kind, subject, _) =
        stanna_grpc::status::precondition_violation(&status).expect("a PreconditionFailure");
    assert_eq!(
        (kind.as_str(), subject.as_str()),
        ("ALREADY_ROTATED", "key_id")
    );
    assert_eq!(
        old_now.replaced_by, new_id,
        "the rotated-out key names its replacement"
    );
}

#[tokio::test]
async fn pagination_across_250_keys_returns_each_key_exactly_once() {
    let mut server = start_with(|c| c.max_keys_per_user = 1000).await;
    let mut created = HashSet::new();
    for i in 0..250 {
        created.insert(
            server
                .create("ws1", "alice", &format!("key {i}"))
                .await
                .key
                .unwrap()
                .id,
        );
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let request = pb::ListKeysRequest {
            workspace_id: "ws1".into(),
            page_size: 100,
            page_token: token.clone(),
            ..Default::default()
        };
        let page = server
            .client
            .list_keys(authed(request))
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        seen.extend(page.keys.into_iter().map(|k| k.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 250, "250 keys listed");
    assert_eq!(
        seen.iter().cloned().collect::<HashSet<_>>(),
        created,
        "each key exactly once"
    );
    let first_page = server.list("ws1", "").await;
    assert_eq!(first_page.len(), 50, "page_size 0 means 50");
    assert_eq!(first_page[0].name, "key 249", "newest first");
}

#[tokio::test]
async fn every_bad_input_is_invalid_argument_naming_the_field() {
    let mut server = start().await;
    let id = server.create("ws1", "alice", "Fine").await.key.unwrap().id;
    let past = prost_types::Timestamp {
        seconds: now_seconds() - 60,
        nanos: 0,
    };
    let window = |name: &str, limit: u32, secs: i64| pb::RateLimit {
        name: name.into(),
        limit,
        period: Some(prost_types::Duration {
            seconds: secs,
            nanos: 0,
        }),
    };
    let creates: Vec<(pb::CreateKeyRequest, &str)> = vec![
        (create_request("", "alice", "n"), "workspace_id"),
        (create_request("ws 1", "alice", "n"), "workspace_id"),
        (
            create_request(&"w".repeat(65), "alice", "n"),
            "workspace_id",
        ),
        (create_request("ws1", "", "n"), "user_id"),
        (create_request("ws1", "al ice", "n"), "user_id"),
        (create_request("ws1", "alice", ""), "name"),
        (create_request("ws1", "alice", "   "), "name"),
        (create_request("ws1", "alice", &"x".repeat(101)), "name"),
        (create_request("ws1", "alice", "line\nbreak"), "name"),
        (
            pb::CreateKeyRequest {
                expires_at: Some(past),
                ..create_request("ws1", "alice", "n")
            },
            "expires_at",
        ),
        (
            pb::CreateKeyRequest {
                rate_limits: vec![window("minute", 10, 60)],
                ..create_request("ws1", "alice", "n")
            },
            "rate_limits[0].name",
        ),
        (
            pb::CreateKeyRequest {
                rate_limits: vec![window("burst", 0, 60)],
                ..create_request("ws1", "alice", "n")
            },
            "rate_limits[0].limit",
        ),
        (
            pb::CreateKeyRequest {
                rate_limits: vec![window("burst", 10_001, 60)],
                ..create_request("ws1", "alice", "n")
            },
            "rate_limits[0].limit",
        ),
        (
            pb::CreateKeyRequest {
                rate_limits: vec![window("hourly", 10, 0)],
                ..create_request("ws1", "alice", "n")
            },
            "rate_limits[0].period",
        ),
        (
            pb::CreateKeyRequest {
                rate_limits: vec![window("burst", 5, 1), window("burst", 6, 2)],
                ..create_request("ws1", "alice", "n")
            },
            "rate_limits[1].name",
        ),
    ];
    for (request, field) in creates {
        let status = server
            .client
            .create_key(authed(request.clone()))
            .await
            .unwrap_err();
        assert_names_invalid_field(&status, field);
    }
    let get = |ws: &str, user: &str, key: &str| pb::GetKeyRequest {
        workspace_id: ws.into(),
        user_id: user.into(),
        key_id: key.into(),
    };
    for (request, field) in [
        (get("ws1", "", "short"), "key_id"),
        (get("ws1", "", ""), "key_id"),
        (get("", "", &id), "workspace_id"),
        (get("ws1", "b d", &id), "user_id"),
    ] {
        let status = server.client.get_key(authed(request)).await.unwrap_err();
        assert_names_invalid_field(&status, field);
    }
    let lists = [
        (
            pb::ListKeysRequest {
                workspace_id: "ws1".into(),
                page_size: 101,
                ..Default::default()
            },
            "page_size",
        ),
        (
            pb::ListKeysRequest {
                workspace_id: "ws1".into(),
                page_token: "not-a-token".into(),
                ..Default::default()
            },
            "page_token",
        ),
    ];
    for (request, field) in lists {
        let status = server.client.list_keys(authed(request)).await.unwrap_err();
        assert_names_invalid_field(&status, field);
    }
    let bad_update = [
        (
            pb::UpdateKeyRequest {
                workspace_id: "ws1".into(),
                key_id: id.clone(),
                name: Some(String::new()),
                ..Default::default()
            },
            "name",
        ),
        (
            pb::UpdateKeyRequest {
                workspace_id: "ws1".into(),
                key_id: id.clone(),
                status: 7,
                ..Default::default()
            },
            "status",
        ),
    ];
    for (request, field) in bad_update {
        let status = server.client.update_key(authed(request)).await.unwrap_err();
        assert_names_invalid_field(&status, field);
    }
    let rotations = [
        (
            prost_types::Duration {
                seconds: -1,
                nanos: 0,
            },
            "grace_period",
        ),
        (
            prost_types::Duration {
                seconds: 31 * 24 * 3600,
                nanos: 0,
            },
            "grace_period",
        ),
    ];
    for (grace, field) in rotations {
        let request = pb::RotateKeyRequest {
            workspace_id: "ws1".into(),
            key_id: id.clone(),
            grace_period: Some(grace),
            ..Default::default()
        };
        let status = server.client.rotate_key(authed(request)).await.unwrap_err();
        assert_names_invalid_field(&status, field);
    }
    assert_eq!(
        server.list("ws1", "").await.len(),
        1,
        "no bad request created anything"
    );
}

#[tokio::test]
async fn missing_or_wrong_token_is_unauthenticated() {
    let mut server = start().await;
    let list = || pb::ListKeysRequest {
        workspace_id: "ws1".into(),
        ..Default::default()
    };
    let attempts = [
        Request::new(list()),
        with_token(list(), "Bearer wrong-token-0123456789"),
        with_token(list(), &format!("Bearer {TOKEN}x")),
        with_token(list(), &format!("Basic {TOKEN}")),
        with_token(list(), TOKEN),
    ];
    for request in attempts {
        let status = server.client.list_keys(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let lowercase_scheme = with_token(list(), &format!("bearer {TOKEN}"));
    server
        .client
        .list_keys(lowercase_scheme)
        .await
        .expect("the scheme is case-insensitive");
}

#[tokio::test]
async fn health_answers_without_a_token() {
    let server = start().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "stanna.keys.v1.KeyRegistry"] {
        let response = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health needs no token")
            .into_inner();
        assert_eq!(
            response.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            "{service:?}"
        );
    }
}

#[tokio::test]
async fn a_key_is_invisible_from_another_workspace_or_user() {
    let mut server = start().await;
    let id = server
        .create("wsA", "alice", "Alice's")
        .await
        .key
        .unwrap()
        .id;
    for (ws, user) in [("wsB", ""), ("wsB", "alice"), ("wsA", "bob")] {
        assert_eq!(
            server.get(ws, user, &id).await.unwrap_err().code(),
            Code::NotFound,
            "get from {ws}/{user}"
        );
        let update = pb::UpdateKeyRequest {
            workspace_id: ws.into(),
            user_id: user.into(),
            key_id: id.clone(),
            name: Some("mine now".into()),
            ..Default::default()
        };
        assert_eq!(
            server
                .client
                .update_key(authed(update))
                .await
                .unwrap_err()
                .code(),
            Code::NotFound,
            "update from {ws}/{user}"
        );
        let delete = pb::DeleteKeyRequest {
            workspace_id: ws.into(),
            user_id: user.into(),
            key_id: id.clone(),
        };
        assert_eq!(
            server
                .client
                .delete_key(authed(delete))
                .await
                .unwrap_err()
                .code(),
            Code::NotFound,
            "delete from {ws}/{user}"
        );
        let rotate = pb::RotateKeyRequest {
            workspace_id: ws.into(),
            user_id: user.into(),
            key_id: id.clone(),
            ..Default::default()
        };
        assert_eq!(
            server
                .client
                .rotate_key(authed(rotate))
                .await
                .unwrap_err()
                .code(),
            Code::NotFound,
            "rotate from {ws}/{user}"
        );
        assert!(
            server.list(ws, user).await.is_empty(),
            "list from {ws}/{user}"
        );
    }
    let intact = server.get("wsA", "alice", &id).await.unwrap();
    assert_eq!(
        (intact.name.as_str(), intact.expires_at),
        ("Alice's", None),
        "untouched by the outsiders"
    );
}

#[tokio::test]
async fn a_user_past_the_key_limit_gets_resource_exhausted_but_can_still_rotate() {
    let mut server = start_with(|c| c.max_keys_per_user = 2).await;
    let first = server.create("ws1", "alice", "one").await.key.unwrap().id;
    server.create("ws1", "alice", "two").await;
    let status = server
        .client
        .create_key(authed(create_request("ws1", "alice", "three")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("2 keys"), "{}", status.message());
    server.create("ws1", "bob", "bob's first").await;
    let rotate = pb::RotateKeyRequest {
        workspace_id: "ws1".into(),
        key_id: first,
        grace_period: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
        ..Default::default()
    };
    server
        .client
        .rotate_key(authed(rotate))
        .await
        .expect("a rotation does not count against the limit");
}

#[tokio::test]
async fn per_key_limits_are_stored_and_shown() {
    let mut server = start().await;
    let request = pb::CreateKeyRequest {
        rate_limits: vec![pb::RateLimit {
            name: "hourly".into(),
            limit: 50,
            period: Some(prost_types::Duration {
                seconds: 1800,
                nanos: 0,
            }),
        }],
        ..create_request("ws1", "alice", "Limited")
    };
    let key = server
        .client
        .create_key(authed(request))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    let limits: Vec<_> = key
        .rate_limits
        .iter()
        .map(|l| (l.name.as_str(), l.limit, l.period.unwrap().seconds))
        .collect();
    assert_eq!(
        limits,
        [("burst", 100, 60), ("hourly", 50, 1800)],
        "override on hourly only; windows keep their names"
    );
}

const ALICE: &str = "alice-admin-token-0123456789";
const BOB: &str = "bob-admin-token-0123456789ab";
const GATEWAY: &str = "gateway-token-0123456789abcd";

/// A registry with the admins `alice` and `bob` (a tokens file's) beside `admin`, and a gateway
/// credential.
async fn start_with_named_admins() -> Server {
    start_with(|config| {
        config.admin_tokens =
            stanna_key_registry::config::parse_named_tokens(&format!("alice:{ALICE}\nbob:{BOB}\n"))
                .unwrap();
        config.gateway_token = Some(GATEWAY.parse().unwrap());
    })
    .await
}

/// `message` with `token` and, when given, the request id.
fn by<T>(token: &str, request_id: Option<&str>, message: T) -> Request<T> {
    let mut request = with_token(message, &format!("Bearer {token}"));
    if let Some(id) = request_id {
        request
            .metadata_mut()
            .insert("x-request-id", id.parse().unwrap());
    }
    request
}

/// `message` as the gateway sends it for the API key `key_id`.
fn for_key<T>(key_id: &str, message: T) -> Request<T> {
    let mut request = by(GATEWAY, None, message);
    request
        .metadata_mut()
        .insert("x-stanna-acting-key", key_id.parse().unwrap());
    request
}

async fn audit(server: &mut Server, ws: &str) -> Vec<pb::AuditEvent> {
    server
        .client
        .list_audit_events(authed(pb::ListAuditEventsRequest {
            workspace_id: ws.into(),
            page_size: 100,
            ..Default::default()
        }))
        .await
        .expect("audit")
        .into_inner()
        .events
}

fn actor(event: &pb::AuditEvent) -> (String, String) {
    let actor = event.actor.clone().unwrap_or_default();
    (actor.kind, actor.id)
}

#[tokio::test]
async fn named_admins_are_told_apart_and_every_change_is_audited_once_under_its_name() {
    let mut server = start_with_named_admins().await;
    let created = server
        .client
        .create_key(by(
            ALICE,
            Some("req-alice-1"),
            create_request("ws1", "u1", "first"),
        ))
        .await
        .unwrap();
    // The request id comes back with the answer.
    assert_eq!(
        created.metadata().get("x-request-id").unwrap(),
        "req-alice-1"
    );
    let key = created.into_inner().key.unwrap();
    // No request id given: one is made up, returned, and recorded.
    let renamed = server
        .client
        .update_key(by(
            BOB,
            None,
            pb::UpdateKeyRequest {
                workspace_id: "ws1".into(),
                key_id: key.id.clone(),
                name: Some("second".into()),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let made_up = renamed
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(made_up.len(), 32, "{made_up}");
    // A refused change (another workspace's key: not found) leaves nothing.
    let refused = server
        .client
        .delete_key(by(
            ALICE,
            Some("req-refused"),
            pb::DeleteKeyRequest {
                workspace_id: "ws2".into(),
                key_id: key.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    assert_eq!(
        refused.metadata().get("x-request-id").unwrap(),
        "req-refused"
    );
    // `admin` (STANNA_ADMIN_TOKEN) deletes it.
    server
        .client
        .delete_key(authed(pb::DeleteKeyRequest {
            workspace_id: "ws1".into(),
            key_id: key.id.clone(),
            ..Default::default()
        }))
        .await
        .unwrap();
    let events = audit(&mut server, "ws1").await;
    let summary: Vec<_> = events
        .iter()
        .map(|e| (e.action.as_str(), actor(e).1, e.request_id.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            ("key.deleted", "admin".to_owned(), summary[0].2.clone()),
            ("key.updated", "bob".to_owned(), made_up),
            ("key.created", "alice".to_owned(), "req-alice-1".to_owned()),
        ]
    );
    assert!(events.iter().all(|e| actor(e).0 == "admin"));
    assert_eq!(events[1].before, r#"{"name":"first"}"#);
    assert_eq!(events[1].after, r#"{"name":"second"}"#);
    // A request id that could hold a key is not recorded: one is made up instead.
    let answer = server
        .client
        .get_key(by(
            ALICE,
            Some("sk-abc"),
            pb::GetKeyRequest {
                workspace_id: "ws1".into(),
                key_id: key.id,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_ne!(answer.metadata().get("x-request-id").unwrap(), "sk-abc");
    // A wrong token is refused as before.
    let wrong = server
        .client
        .list_audit_events(by(
            "not-a-token-of-anyone-01234",
            None,
            pb::ListAuditEventsRequest {
                workspace_id: "ws1".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn the_gateway_credential_acts_only_for_the_key_it_names_and_never_as_an_admin() {
    let mut server = start_with_named_admins().await;
    let bob_key = server.create("ws1", "bob", "bob's").await.key.unwrap();
    server.create("ws1", "carol", "carol's").await;
    let denied = |status: Status, says: &str| {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains(says), "{status:?}");
    };
    // Naming nobody.
    let status = server
        .client
        .list_keys(by(
            GATEWAY,
            None,
            pb::ListKeysRequest {
                workspace_id: "ws1".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    denied(status, "acts only for the API key or session it names");
    // Bob's key acting as carol, or workspace-wide.
    for user in ["carol", ""] {
        let status = server
            .client
            .list_keys(for_key(
                &bob_key.id,
                pb::ListKeysRequest {
                    workspace_id: "ws1".into(),
                    user_id: user.into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        denied(status, "acts only as its own user");
    }
    // Bob's key in another workspace.
    let status = server
        .client
        .list_keys(for_key(
            &bob_key.id,
            pb::ListKeysRequest {
                workspace_id: "ws2".into(),
                user_id: "bob".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    denied(status, "not one of this user's live keys");
    // Limits, metadata, session revocation: an admin's.
    let mut limited = create_request("ws1", "bob", "limited");
    limited.rate_limits = vec![pb::RateLimit {
        name: "burst".into(),
        limit: 1000,
        period: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
    }];
    let status = server
        .client
        .create_key(for_key(&bob_key.id, limited))
        .await
        .unwrap_err();
    denied(status, "may not set rate limits or metadata");
    let status = server
        .client
        .update_key(for_key(
            &bob_key.id,
            pb::UpdateKeyRequest {
                workspace_id: "ws1".into(),
                user_id: "bob".into(),
                key_id: bob_key.id.clone(),
                metadata: Some(r#"{"plan":"enterprise"}"#.into()),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    denied(status, "may not set rate limits or metadata");
    let status = server
        .client
        .revoke_sessions(for_key(
            &bob_key.id,
            pb::RevokeSessionsRequest {
                workspace_id: "ws1".into(),
                user_id: "bob".into(),
            },
        ))
        .await
        .unwrap_err();
    denied(status, "only an admin revokes sessions");
    // Through the gateway an expiry only moves earlier, whatever the request says.
    let soon = SystemTime::now() + Duration::from_secs(3600);
    server
        .client
        .update_key(for_key(
            &bob_key.id,
            pb::UpdateKeyRequest {
                workspace_id: "ws1".into(),
                user_id: "bob".into(),
                key_id: bob_key.id.clone(),
                expires_at: Some(soon.into()),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let later = server
        .client
        .update_key(for_key(
            &bob_key.id,
            pb::UpdateKeyRequest {
                workspace_id: "ws1".into(),
                user_id: "bob".into(),
                key_id: bob_key.id.clone(),
                expires_at: Some((soon + Duration::from_secs(3600)).into()),
                expiry_earlier_only: false,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(later.code(), Code::FailedPrecondition, "{later:?}");
    // What it may do, it does as the key: a key of bob's, audited under bob's key.
    let made = server
        .client
        .create_key(for_key(
            &bob_key.id,
            create_request("ws1", "bob", "made by key"),
        ))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    let events = audit(&mut server, "ws1").await;
    let newest = &events[0];
    assert_eq!(newest.action, "key.created");
    assert_eq!(newest.key_id, made.id);
    let by_key = newest.actor.clone().unwrap();
    assert_eq!(
        (
            by_key.kind.as_str(),
            by_key.id.as_str(),
            by_key.user_id.as_str()
        ),
        ("key", bob_key.id.as_str(), "bob")
    );
    // Refused calls left nothing: carol's, the two admin creations, bob's expiry, his new key.
    assert_eq!(events.len(), 4, "{events:#?}");
    // A deactivated key acts no more.
    server
        .client
        .update_key(authed(pb::UpdateKeyRequest {
            workspace_id: "ws1".into(),
            key_id: bob_key.id.clone(),
            status: pb::KeyStatus::Inactive as i32,
            ..Default::default()
        }))
        .await
        .unwrap();
    let status = server
        .client
        .get_key(for_key(
            &bob_key.id,
            pb::GetKeyRequest {
                workspace_id: "ws1".into(),
                user_id: "bob".into(),
                key_id: made.id,
            },
        ))
        .await
        .unwrap_err();
    denied(status, "not one of this user's live keys");
}

/// Through the gateway an expired key is not rotated (its replacement would have no expiry and
/// keep the old key's limits): 409-to-be, while an admin still may.
#[tokio::test]
async fn the_gateway_cannot_revive_an_expired_key_by_rotating_it() {
    let mut server = start_with_named_admins().await;
    let acting = server.create("ws1", "bob", "acting").await.key.unwrap();
    let mut short = create_request("ws1", "bob", "short-lived");
    short.expires_at = Some((SystemTime::now() + Duration::from_millis(300)).into());
    let short = server
        .client
        .create_key(authed(short))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let rotate = pb::RotateKeyRequest {
        workspace_id: "ws1".into(),
        user_id: "bob".into(),
        key_id: short.id.clone(),
        grace_period: None,
    };
    let refused = server
        .client
        .rotate_key(for_key(&acting.id, rotate.clone()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("expired"), "{refused:?}");
    // Workspace-wide (no user) the gateway's credential rotates nothing.
    let across = server
        .client
        .rotate_key(for_key(
            &acting.id,
            pb::RotateKeyRequest {
                user_id: String::new(),
                ..rotate.clone()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(across.code(), Code::PermissionDenied, "{across:?}");
    server.client.rotate_key(authed(rotate)).await.unwrap();
}
