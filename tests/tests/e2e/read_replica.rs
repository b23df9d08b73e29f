//! `STANNA_DATABASE_READ_URL` with the real binary: `stanna serve` on a PostgreSQL primary reads
//! its lookups and change feed from a streaming replica, and a key deactivated while the replica
//! is stuck stops within the promised second all the same. The primary and replica are the
//! test's own (`initdb`, `pg_basebackup`, free ports, removed after); a URL that is not a replica
//! is refused at start without echoing its password.

use std::time::{Duration, Instant};

use stanna_e2e::{Stanna, free_port, run_to_exit};
use stanna_testkit::{OwnPostgresReplication, TempDir};

use crate::operability::{TOKEN, all_in_one};

/// Far above the promised second, so a slow CI machine does not fail it; the figure is printed.
const CAP: Duration = Duration::from_secs(10);

/// The value of the metric line starting with `name` in the text at `url`, 0 when absent.
async fn metric(url: &str, name: &str) -> f64 {
    let (status, _, body) = crate::http::get(&crate::http::client(), url, "").await;
    assert_eq!(status, 200, "{url}");
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_reading_a_replica_revokes_within_a_second_while_the_replica_lags() {
    let test = "a_system_reading_a_replica_revokes_within_a_second_while_the_replica_lags";
    let Some(pg) = OwnPostgresReplication::start(test, 1) else {
        return;
    };
    let dir = TempDir::new();
    let metrics_port = free_port();
    let (ports, env) = all_in_one(
        pg.primary_url(),
        &[
            ("STANNA_DATABASE_READ_URL", pg.replica_url(0)),
            ("STANNA_METRICS_ADDR", format!("127.0.0.1:{metrics_port}")),
        ],
    );
    let mut stanna = Stanna::start(dir.path(), &["serve"], &env, "gateway listening on");
    assert!(
        stanna.output().contains("read replica opened"),
        "{}",
        stanna.output()
    );
    let metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
    let gateway = format!("http://127.0.0.1:{}", ports.gateway);

    let created = crate::admin::create_key(ports.registry, TOKEN, "Replica").await;
    let key = created.key.expect("the created key");
    // The key was created a moment ago: the replica has it once it has replayed, and a miss
    // there would have been asked of the primary anyway.
    let (status, _, body) = crate::http::get(
        &crate::http::client(),
        &format!("{gateway}/v1/me"),
        &created.secret,
    )
    .await;
    assert_eq!(status, 200, "the key verified: {body:?}");
    stanna_testkit::eventually(CAP, "a lookup answered by the replica", || async {
        metric(&metrics, "stanna_replica_lookups_total").await >= 1.0
    })
    .await;

    pg.pause_replay(0).await;
    let fallbacks = metric(&metrics, "stanna_replica_fallbacks_total").await;
    let bearer = format!("Bearer {}", created.secret);
    let (status, _, body) = crate::http::request(
        http::Method::PATCH,
        &format!("{gateway}/v1/keys/{}", key.id),
        &[
            ("authorization", bearer.as_str()),
            ("content-type", "application/json"),
        ],
        r#"{"status": "KEY_STATUS_INACTIVE"}"#,
    )
    .await;
    assert_eq!(status, 200, "the key deactivated itself: {body:?}");
    let deactivated = Instant::now();
    loop {
        let (status, _, _) = crate::http::get(
            &crate::http::client(),
            &format!("{gateway}/v1/me"),
            &created.secret,
        )
        .await;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            deactivated.elapsed() < CAP,
            "the deactivated key still works after {CAP:?} with the replica paused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "refused {:?} after its deactivation, with the replica paused (the promise: 1 s)",
        deactivated.elapsed()
    );
    assert!(
        metric(&metrics, "stanna_replica_fallbacks_total").await > fallbacks,
        "the polls read the primary meanwhile"
    );
    pg.resume_replay(0).await;
    assert!(stanna.terminate(), "exits cleanly");
}

#[test]
fn a_read_url_that_is_not_a_replica_is_refused_without_its_password() {
    let test = "a_read_url_that_is_not_a_replica_is_refused_without_its_password";
    let Some(pg) = OwnPostgresReplication::start(test, 1) else {
        return;
    };
    let dir = TempDir::new();
    // The primary itself, with a password (trust auth ignores it).
    let primary_with_password =
        pg.primary_url()
            .replacen("postgres@", "postgres:replica-pw-4321@", 1);
    let (_, env) = all_in_one(
        pg.primary_url(),
        &[("STANNA_DATABASE_READ_URL", primary_with_password)],
    );
    let (code, printed) = run_to_exit(dir.path(), &["serve"], &env);
    assert_eq!(code, 2, "a refused setting:\n{printed}");
    assert!(
        printed.contains("STANNA_DATABASE_READ_URL (postgres://postgres:***@127.0.0.1:")
            && printed.contains("is not a streaming replica"),
        "{printed}"
    );
    assert!(!printed.contains("replica-pw-4321"), "{printed}");
}
