//! Split mode: each service its own `stanna serve NAME` process, gRPC between them, sharing a store
//! (PostgreSQL when `DATABASE_URL` is set, else one SQLite file) and, for quota, Redis when
//! `REDIS_URL` is set.

use stanna_e2e::{Stanna, free_port, grpcurl, grpcurl_json};
use stanna_proto::keys::v1 as pb;
use stanna_proto::keys::v1::quota_client::QuotaClient;
use stanna_testkit::TempDir;

const TOKEN: &str = "split-admin-token-0123456789";

/// Verify through the auth-check process charges the quota process: the charge is found there
/// with Quota/Peek, which charges nothing. (Revocation across processes is tested once, through
/// the gateway, in `gateway_split.rs`.)
#[test]
fn a_verify_at_the_auth_check_process_is_charged_in_the_quota_process() {
    let Some(grpcurl) =
        grpcurl("a_verify_at_the_auth_check_process_is_charged_in_the_quota_process")
    else {
        return;
    };
    let dir = TempDir::new();
    let store = stanna_e2e::SharedStore::for_test(&dir, "split_mode");
    let db = store.url();
    let (registry_port, auth_port, quota_port) = (free_port(), free_port(), free_port());
    let mut quota_env = vec![("STANNA_QUOTA_ADDR", format!("127.0.0.1:{quota_port}"))];
    if let Ok(redis) = std::env::var("REDIS_URL") {
        quota_env.push(("STANNA_REDIS_URL", redis));
    }
    let _quota = Stanna::start(
        dir.path(),
        &["serve", "quota"],
        &quota_env,
        "quota listening on",
    );
    let _registry = Stanna::start(
        dir.path(),
        &["serve", "registry"],
        &[
            ("STANNA_REGISTRY_ADDR", format!("127.0.0.1:{registry_port}")),
            ("STANNA_DATABASE_URL", db.clone()),
            ("STANNA_ADMIN_TOKEN", TOKEN.to_owned()),
            ("STANNA_GATEWAY_TOKEN", stanna_e2e::GATEWAY_TOKEN.to_owned()),
            (
                "STANNA_SESSION_SECRET",
                stanna_e2e::SESSION_SECRET.to_owned(),
            ),
        ],
        "key-registry listening on",
    );
    let _auth = Stanna::start(
        dir.path(),
        &["serve", "auth-check"],
        &[
            ("STANNA_AUTH_CHECK_ADDR", format!("127.0.0.1:{auth_port}")),
            ("STANNA_DATABASE_URL", db),
            ("STANNA_QUOTA_URL", format!("http://127.0.0.1:{quota_port}")),
        ],
        "auth-check listening on",
    );
    let registry = format!("127.0.0.1:{registry_port}");
    let auth = format!("127.0.0.1:{auth_port}");
    let workspace = format!("ws_{}", stanna_testkit::random_suffix());
    let created = grpcurl_json(
        &grpcurl,
        &registry,
        "stanna.keys.v1.KeyRegistry/CreateKey",
        &format!(r#"{{"workspace_id":"{workspace}","user_id":"alice","name":"Split"}}"#),
        Some(TOKEN),
    );
    let secret = created["secret"].as_str().unwrap().to_owned();
    let key_id = created["key"]["id"].as_str().unwrap().to_owned();
    let verify = || {
        grpcurl_json(
            &grpcurl,
            &auth,
            "stanna.keys.v1.AuthCheck/Verify",
            &format!(r#"{{"key":"{secret}"}}"#),
            None,
        )
    };
    let first = verify();
    assert_eq!(first["code"], "VERIFY_CODE_VALID", "{first}");
    assert_eq!(first["windows"][0]["remaining"], 99, "{first}");
    // The quota process itself holds the charge: Peek it there (an in-process quota in the
    // auth-check process would also have answered 99, but the quota process would know nothing).
    let peeked = grpcurl_json(
        &grpcurl,
        &format!("127.0.0.1:{quota_port}"),
        "stanna.keys.v1.Quota/Peek",
        &format!(
            r#"{{"subject":"{key_id}","limits":[{{"name":"burst","limit":100,"period":"60s"}},{{"name":"hourly","limit":1000,"period":"3600s"}}]}}"#
        ),
        None,
    );
    assert_eq!(peeked["allowed"], true, "{peeked}");
    assert_eq!(
        peeked["windows"][0]["remaining"], 99,
        "the quota process decided: {peeked}"
    );
    assert_eq!(peeked["windows"][1]["remaining"], 999, "{peeked}");
    let again = grpcurl_json(
        &grpcurl,
        &format!("127.0.0.1:{quota_port}"),
        "stanna.keys.v1.Quota/Peek",
        &format!(
            r#"{{"subject":"{key_id}","limits":[{{"name":"burst","limit":100,"period":"60s"}},{{"name":"hourly","limit":1000,"period":"3600s"}}]}}"#
        ),
        None,
    );
    assert_eq!(
        again["windows"][0]["remaining"], 99,
        "a Peek charges nothing"
    );
    assert_eq!(
        verify()["windows"][0]["remaining"],
        98,
        "the next Verify charges again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_quota_processes_sharing_one_redis_admit_exactly_the_limit() {
    let Some(redis) =
        stanna_testkit::redis_url("two_quota_processes_sharing_one_redis_admit_exactly_the_limit")
    else {
        return;
    };
    assert_eq!(two_quota_processes_admit(&redis).await, 100);
}

/// The same on a Redis Cluster of the test's own (three masters, three replicas), each quota
/// process given its seed list as `STANNA_REDIS_URL`: exactly the limit again, the subject's
/// state one key on the master of its slot (the spread of many subjects over the masters is
/// `subjects_spread_over_every_master_of_a_redis_cluster` in the quota crate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_quota_processes_on_a_redis_cluster_admit_exactly_the_limit() {
    let Some(cluster) = stanna_testkit::OwnRedisCluster::start(
        "two_quota_processes_on_a_redis_cluster_admit_exactly_the_limit",
    ) else {
        return;
    };
    assert_eq!(two_quota_processes_admit(&cluster.seeds()).await, 100);
    let held: u64 = cluster.masters().iter().map(|&m| cluster.keys_on(m)).sum();
    assert_eq!(held, 1, "one subject, one key, on one master");
}

/// 1000 concurrent Consume calls for one subject (limit 100 per minute), alternating between two
/// `stanna serve quota` processes on `redis_url`: how many were admitted.
async fn two_quota_processes_admit(redis_url: &str) -> usize {
    let dir = TempDir::new();
    let ports = [free_port(), free_port()];
    let _quotas: Vec<Stanna> = ports
        .iter()
        .map(|port| {
            Stanna::start(
                dir.path(),
                &["serve", "quota"],
                &[
                    ("STANNA_QUOTA_ADDR", format!("127.0.0.1:{port}")),
                    ("STANNA_REDIS_URL", redis_url.to_owned()),
                ],
                "quota listening on",
            )
        })
        .collect();
    let mut clients = Vec::new();
    for port in ports {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        clients.push(QuotaClient::new(channel));
    }
    let subject = format!("shared{}", stanna_testkit::random_suffix());
    let limits = vec![
        pb::RateLimit {
            name: "burst".into(),
            limit: 100,
            period: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
        },
        pb::RateLimit {
            name: "hourly".into(),
            limit: 1000,
            period: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
        },
    ];
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let mut client = clients[i % 2].clone();
            let request = pb::ConsumeRequest {
                subject: subject.clone(),
                cost: 1,
                limits: limits.clone(),
            };
            tokio::spawn(async move {
                client
                    .consume(request)
                    .await
                    .expect("consume")
                    .into_inner()
                    .allowed
            })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        admitted += usize::from(task.await.unwrap());
    }
    admitted
}
