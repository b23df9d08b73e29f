//! The public path in split mode: `stanna serve gateway`, `auth-check`, `quota` and `registry`
//! as separate processes, gRPC between them, PostgreSQL (`DATABASE_URL`) and Redis (`REDIS_URL`)
//! behind them — the docker-compose topology on loopback.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::http::{HttpClient, get};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use stanna_e2e::{Stanna, free_port, grpcurl, grpcurl_json, stanna_binary};
use stanna_testkit::TempDir;

const TOKEN: &str = "split-gateway-token-0123456789";

pub(crate) fn start_quota(dir: &TempDir, port: u16, redis: Option<&str>) -> Stanna {
    let mut env = vec![("STANNA_QUOTA_ADDR", format!("127.0.0.1:{port}"))];
    if let Some(redis) = redis {
        env.push(("STANNA_REDIS_URL", redis.to_owned()));
    }
    Stanna::start(dir.path(), &["serve", "quota"], &env, "quota listening on")
}

pub(crate) fn start_registry(dir: &TempDir, port: u16, db: &str) -> Stanna {
    Stanna::start(
        dir.path(),
        &["serve", "registry"],
        &[
            ("STANNA_REGISTRY_ADDR", format!("127.0.0.1:{port}")),
            ("STANNA_DATABASE_URL", db.to_owned()),
            ("STANNA_ADMIN_TOKEN", TOKEN.to_owned()),
            ("STANNA_GATEWAY_TOKEN", stanna_e2e::GATEWAY_TOKEN.to_owned()),
            (
                "STANNA_SESSION_SECRET",
                stanna_e2e::SESSION_SECRET.to_owned(),
            ),
        ],
        "key-registry listening on",
    )
}

pub(crate) fn start_auth_check(dir: &TempDir, port: u16, db: &str, quota_port: u16) -> Stanna {
    start_auth_check_with(dir, port, db, quota_port, &[])
}

/// An auth-check alone, with `extra` settings.
fn start_auth_check_with(
    dir: &TempDir,
    port: u16,
    db: &str,
    quota_port: u16,
    extra: &[(&str, String)],
) -> Stanna {
    let mut env = vec![
        ("STANNA_AUTH_CHECK_ADDR", format!("127.0.0.1:{port}")),
        ("STANNA_DATABASE_URL", db.to_owned()),
        ("STANNA_QUOTA_URL", format!("http://127.0.0.1:{quota_port}")),
    ];
    env.extend(extra.iter().cloned());
    Stanna::start(
        dir.path(),
        &["serve", "auth-check"],
        &env,
        "auth-check listening on",
    )
}

pub(crate) fn start_gateway(
    dir: &TempDir,
    port: u16,
    auth_port: u16,
    registry_port: u16,
) -> Stanna {
    Stanna::start(
        dir.path(),
        &["serve", "gateway"],
        &[
            ("STANNA_GATEWAY_ADDR", format!("127.0.0.1:{port}")),
            (
                "STANNA_AUTH_CHECK_URL",
                format!("http://127.0.0.1:{auth_port}"),
            ),
            (
                "STANNA_REGISTRY_URL",
                format!("http://127.0.0.1:{registry_port}"),
            ),
            ("STANNA_ADMIN_TOKEN", TOKEN.to_owned()),
            ("STANNA_GATEWAY_TOKEN", stanna_e2e::GATEWAY_TOKEN.to_owned()),
            (
                "STANNA_SESSION_SECRET",
                stanna_e2e::SESSION_SECRET.to_owned(),
            ),
        ],
        "gateway listening on",
    )
}

fn healthcheck(target: &str) -> bool {
    Command::new(stanna_binary())
        .args(["healthcheck", target])
        .output()
        .expect("run stanna healthcheck")
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_create_use_exhaust_and_revoke_a_key_through_the_gateway() {
    const TEST: &str = "four_processes_create_use_exhaust_and_revoke_a_key_through_the_gateway";
    let Some(grpcurl) = grpcurl(TEST) else {
        return;
    };
    let redis = stanna_testkit::redis_url(TEST);
    let dir = TempDir::new();
    let store = stanna_e2e::SharedStore::for_test(&dir, TEST);
    let db = store.url();
    let [quota_port, registry_port, auth_port, gateway_port] =
        [free_port(), free_port(), free_port(), free_port()];
    let _quota = start_quota(&dir, quota_port, redis.as_deref());
    let _registry = start_registry(&dir, registry_port, &db);
    let _auth = start_auth_check(&dir, auth_port, &db, quota_port);
    let _gateway = start_gateway(&dir, gateway_port, auth_port, registry_port);
    let gateway = format!("http://127.0.0.1:{gateway_port}");

    // The compose health checks: `stanna healthcheck` against gRPC and HTTP.
    assert!(healthcheck(&format!("127.0.0.1:{registry_port}")));
    assert!(healthcheck(&format!("127.0.0.1:{auth_port}")));
    assert!(healthcheck(&format!("127.0.0.1:{quota_port}")));
    assert!(healthcheck(&gateway));
    assert!(!healthcheck(&format!("http://127.0.0.1:{}", free_port())));

    // An admin creates a key with grpcurl.
    let workspace = format!("ws_{}", stanna_testkit::random_suffix());
    let registry = format!("127.0.0.1:{registry_port}");
    let created = grpcurl_json(
        &grpcurl,
        &registry,
        "stanna.keys.v1.KeyRegistry/CreateKey",
        &format!(r#"{{"workspace_id":"{workspace}","user_id":"alice","name":"Split"}}"#),
        Some(TOKEN),
    );
    let secret = created["secret"].as_str().unwrap().to_owned();

    // The customer uses it through the gateway until the burst is spent.
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let me = format!("{gateway}/v1/me");
    let (status, headers, body) = get(&client, &me, &secret).await;
    assert_eq!(status, 200, "{body:?}");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["workspaceId"], workspace.as_str());
    assert_eq!(headers["x-ratelimit-remaining-burst"], "99");
    // The REST layer in split mode: the key lists itself through the registry process.
    let (status, headers, body) = get(&client, &format!("{gateway}/v1/keys"), &secret).await;
    assert_eq!(status, 200, "{body:?}");
    let listed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(listed["keys"][0]["id"], created["key"]["id"]);
    assert_eq!(headers["x-ratelimit-remaining-burst"], "98");
    for i in 3..=100 {
        let (status, headers, _) = get(&client, &me, &secret).await;
        assert_eq!(status, 200, "request {i}");
        assert_eq!(
            headers["x-ratelimit-remaining-burst"],
            (100 - i).to_string().as_str()
        );
    }
    let (status, headers, body) = get(&client, &me, &secret).await;
    assert_eq!(status, 429, "{body:?}");
    assert!(headers.contains_key("retry-after"));

    // Deleted with grpcurl: refused at the gateway within a second (polled, generous cap).
    let key_id = created["key"]["id"].as_str().unwrap();
    grpcurl_json(
        &grpcurl,
        &registry,
        "stanna.keys.v1.KeyRegistry/DeleteKey",
        &format!(r#"{{"workspace_id":"{workspace}","key_id":"{key_id}"}}"#),
        Some(TOKEN),
    );
    let deleted = Instant::now();
    stanna_testkit::eventually(
        Duration::from_secs(10),
        "refusal of the deleted key at the gateway",
        || async { get(&client, &me, &secret).await.0 == 401 },
    )
    .await;
    println!(
        "split mode: deleted key refused at the gateway after {:?}",
        deleted.elapsed()
    );
    let (status, _, body) = get(&client, &me, &secret).await;
    assert_eq!(status, 401);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error"]["code"], "invalid_api_key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_two_auth_checks_and_two_quotas_on_one_redis_admit_exactly_the_limit() {
    const TEST: &str =
        "two_gateways_two_auth_checks_and_two_quotas_on_one_redis_admit_exactly_the_limit";
    let Some(redis) = stanna_testkit::redis_url(TEST) else {
        return;
    };
    let dir = TempDir::new();
    let store = stanna_e2e::SharedStore::for_test(&dir, TEST);
    let db = store.url();
    let registry_port = free_port();
    let _registry = start_registry(&dir, registry_port, &db);
    let mut processes = Vec::new();
    let mut gateways = Vec::new();
    for _ in 0..2 {
        let (quota_port, auth_port, gateway_port) = (free_port(), free_port(), free_port());
        processes.push(start_quota(&dir, quota_port, Some(&redis)));
        // Closed: a quota call that times out on an overloaded machine is a 503, never an
        // admission the quota did not make (the default, open, would admit it: correct, and
        // not what this test counts).
        processes.push(start_auth_check_with(
            &dir,
            auth_port,
            &db,
            quota_port,
            &[("STANNA_QUOTA_FAIL_MODE", "closed".to_owned())],
        ));
        processes.push(start_gateway(&dir, gateway_port, auth_port, registry_port));
        gateways.push(format!("http://127.0.0.1:{gateway_port}/v1/me"));
    }

    let created = crate::admin::create_key(registry_port, TOKEN, "Concurrent").await;
    let secret = created.secret;

    // 1000 requests at once over HTTP/2: a few connections carry them all, so the open-files
    // limit is never near.
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let client = client.clone();
            let url = gateways[i % 2].clone();
            let secret = secret.clone();
            tokio::spawn(async move { get(&client, &url, &secret).await.0 })
        })
        .collect();
    let mut by_status = std::collections::BTreeMap::new();
    for task in tasks {
        *by_status.entry(task.await.unwrap()).or_insert(0) += 1;
    }
    // Every decision the quota made is exact: 100 admitted. A quota call that timed out (a
    // loaded machine) is a 503 whose admission may or may not have been counted, so the only
    // exact claim then is: never more than 100, and nothing admitted lost track of.
    let admitted = by_status.get(&200).copied().unwrap_or(0);
    let unavailable = by_status.get(&503).copied().unwrap_or(0);
    assert!(
        by_status.keys().all(|s| [200, 429, 503].contains(s)),
        "{by_status:?}"
    );
    assert!(admitted <= 100, "over-admitted: {by_status:?}");
    assert!(
        admitted + unavailable >= 100,
        "under-admitted: {by_status:?}"
    );
    if unavailable == 0 {
        assert_eq!(
            by_status,
            [(200, 100), (429, 900)].into_iter().collect(),
            "two of everything on one Redis admit exactly the burst limit"
        );
    } else {
        println!("{unavailable} quota calls timed out on this machine: {by_status:?}");
    }
}
