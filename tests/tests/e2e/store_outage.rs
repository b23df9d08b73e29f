//! When the store goes away, the log says why: the driver's own cause is in the line, not only
//! "database unavailable". auth-check runs alone on a PostgreSQL database of the test's own,
//! reached through a TCP proxy the test cuts.

use std::time::{Duration, Instant};

use stanna_e2e::{Stanna, free_port};
use stanna_testkit::{TcpProxy, TempDir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_database_is_logged_with_the_drivers_cause() {
    let Some(database) =
        stanna_testkit::fresh_postgres_database("a_cut_database_is_logged_with_the_drivers_cause")
            .await
    else {
        return;
    };
    let proxy = TcpProxy::start(stanna_testkit::socket_addr_of(database.url())).await;
    let through_proxy = stanna_testkit::with_host(database.url(), proxy.addr());
    let dir = TempDir::new();
    let port = free_port();
    let auth_check = Stanna::start(
        dir.path(),
        &["serve", "auth-check"],
        &[
            ("STANNA_AUTH_CHECK_ADDR", format!("127.0.0.1:{port}")),
            ("STANNA_DATABASE_URL", through_proxy),
        ],
        "auth-check listening on",
    );
    proxy.cut().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        let output = auth_check.output();
        if let Some(line) = output.lines().find(|l| l.contains("change poll failed")) {
            break line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no failed poll was logged:\n{output}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let cause = line
        .split("database unavailable")
        .nth(1)
        .unwrap_or_else(|| panic!("the line names the failure: {line}"));
    assert!(
        cause.starts_with(": ") && cause.trim_start_matches(": ").len() > 10,
        "the line goes on to name the driver's cause: {line}"
    );
}
