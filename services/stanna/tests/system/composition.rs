//! The composition root itself: what it refuses to build, and its one shutdown order (stop
//! accepting, let calls finish, stop the background loops, write last-used once more, close the
//! database).

use std::time::{Duration, SystemTime};

use stanna::{BuildError, Listeners, Overrides, ServiceName, Settings, System};
use stanna_auth_check::VerifyCode;
use stanna_proto::keys::v1 as pb;
use stanna_proto::keys::v1::key_registry_client::KeyRegistryClient;
use stanna_testkit::TempDir;

use crate::stack::ADMIN_TOKEN;

#[tokio::test]
async fn a_registry_or_gateway_run_alone_refuses_to_start_without_its_token() {
    // A registry needs an admin token; a gateway its own credential, never an admin's.
    for (service, needs) in [
        (ServiceName::Registry, "STANNA_ADMIN_TOKEN"),
        (ServiceName::Gateway, "STANNA_GATEWAY_TOKEN"),
    ] {
        let dir = TempDir::new();
        let mut settings = Settings::for_tests(dir.sqlite_url(), ADMIN_TOKEN);
        settings.service = Some(service);
        settings.registry.admin_token = None;
        settings.registry.gateway_token = None;
        settings.gateway.auth_check_url = Some("http://127.0.0.1:1".into());
        settings.gateway.registry_url = Some("http://127.0.0.1:1".into());
        let refused = System::build(settings, Overrides::default()).await;
        match refused {
            Err(BuildError::Setting(message)) => assert!(
                message.contains(needs) && message.contains("16"),
                "{service:?}: {message}"
            ),
            Err(other) => panic!("{service:?}: {other:?}"),
            Ok(_) => panic!("{service:?} started without a token"),
        }
    }
}

#[tokio::test]
async fn a_gateway_run_alone_names_the_service_urls_it_needs() {
    let dir = TempDir::new();
    let mut settings = Settings::for_tests(dir.sqlite_url(), ADMIN_TOKEN);
    settings.service = Some(ServiceName::Gateway);
    settings.registry.gateway_token = Some("gateway-token-0123456789".parse().unwrap());
    for (auth_check, registry, missing) in [
        (None, Some("http://127.0.0.1:1"), "STANNA_AUTH_CHECK_URL"),
        (Some("http://127.0.0.1:1"), None, "STANNA_REGISTRY_URL"),
    ] {
        settings.gateway.auth_check_url = auth_check.map(str::to_owned);
        settings.gateway.registry_url = registry.map(str::to_owned);
        match System::build(settings.clone(), Overrides::default()).await {
            Err(BuildError::Setting(message)) => {
                assert!(message.contains(missing), "{message}")
            }
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("a gateway started without {missing}"),
        }
    }
}

/// After the shutdown signal the last uses are written (the flush runs after the loops stop) and
/// the database is closed: SQLite's write-ahead log is folded back into the file.
#[tokio::test]
async fn a_stopped_system_writes_last_used_and_closes_its_database() {
    let dir = TempDir::new();
    let mut settings = Settings::for_tests(dir.sqlite_url(), ADMIN_TOKEN);
    // Far longer than the test: only the final flush can write the use.
    settings.auth_check.last_used_flush = stanna_config::DurationArg(Duration::from_secs(3600));
    let listeners = Listeners::bind(&settings).await.unwrap();
    let system = System::build(settings, Overrides::default()).await.unwrap();
    let verifier = system.verifier().unwrap().clone();
    let mut admin = KeyRegistryClient::new(system.registry_transport().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(system.serve(listeners, async {
        let _ = stopped.await;
    }));
    let mut create = tonic::Request::new(pb::CreateKeyRequest {
        workspace_id: "ws".into(),
        user_id: "u".into(),
        name: "n".into(),
        ..Default::default()
    });
    create.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN_TOKEN}").parse().unwrap(),
    );
    let created = admin.create_key(create).await.unwrap().into_inner();
    let used = verifier.verify(&created.secret, "", 1).await.unwrap();
    assert_eq!(used.code, VerifyCode::Valid);
    assert!(
        dir.path().join("stanna.db-wal").exists(),
        "SQLite keeps a write-ahead log while open"
    );
    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();
    for leftover in ["stanna.db-wal", "stanna.db-shm"] {
        assert!(
            !dir.path().join(leftover).exists(),
            "{leftover} is left after a clean stop"
        );
    }
    let store = stanna_store::KeyStore::connect(&dir.sqlite_url())
        .await
        .unwrap();
    let id = stanna_keys::KeyId::parse(&created.key.unwrap().id).unwrap();
    let found = store.find_by_key_id(&id).await.unwrap().unwrap();
    let last_used = found.last_used_at.expect("the final flush wrote the use");
    assert!(last_used <= SystemTime::now());
    store.close().await.unwrap();
}

/// Keys without limits of their own follow the configured defaults: a system restarted with a
/// smaller default burst window over the same store limits an existing key by it.
#[tokio::test]
async fn a_changed_default_limit_reaches_keys_without_their_own() {
    let dir = TempDir::new();
    let settings = Settings::for_tests(dir.sqlite_url(), ADMIN_TOKEN);
    let first = System::build(settings.clone(), Overrides::default())
        .await
        .unwrap();
    let mut admin = KeyRegistryClient::new(first.registry_transport().unwrap());
    let mut create = tonic::Request::new(pb::CreateKeyRequest {
        workspace_id: "ws".into(),
        user_id: "u".into(),
        name: "n".into(),
        ..Default::default()
    });
    create.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN_TOKEN}").parse().unwrap(),
    );
    let secret = admin.create_key(create).await.unwrap().into_inner().secret;
    let before = first
        .verifier()
        .unwrap()
        .verify(&secret, "", 1)
        .await
        .unwrap();
    assert_eq!(before.windows[0].limit, 100);
    drop(first);

    let mut smaller = settings;
    smaller.shared.rate_limit_burst = "5/60s".parse().unwrap();
    let second = System::build(smaller, Overrides::default()).await.unwrap();
    let after = second
        .verifier()
        .unwrap()
        .verify(&secret, "", 1)
        .await
        .unwrap();
    assert_eq!(after.windows[0].limit, 5, "the new default applies");
    assert_eq!(after.windows[0].remaining, 4);
}
