//! The hardened edge with the real binary and raw sockets: slow-header, silent and idle
//! connections closed within their timeouts while /healthz and authenticated requests keep
//! answering; the connection cap pausing accepts without hurting open connections; one address
//! flooding 401s answered 429; the shipped binary ignoring the benchmarks-only bypass.

use std::time::{Duration, Instant};

use stanna_e2e::Stanna;
use stanna_testkit::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::operability::{all_in_one, create_key, get};

/// Waits for the server to close `stream` (a read returns 0 or fails), at most `cap`; how long
/// that took from `since`, or `None` if it stayed open.
async fn closed_within(stream: &mut TcpStream, since: Instant, cap: Duration) -> Option<Duration> {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::from_std(since + cap);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(since.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

fn start(dir: &TempDir, extra: &[(&'static str, String)]) -> (Stanna, crate::operability::Ports) {
    let (ports, env) = all_in_one(dir.sqlite_url(), extra);
    let stanna = Stanna::start(dir.path(), &["serve"], &env, "gateway listening on");
    (stanna, ports)
}

/// The CI-sized version of the slow-client bar: with `STANNA_HEADER_TIMEOUT=2s` and
/// `STANNA_IDLE_TIMEOUT=3s`, 200 connections dribbling one header every 500 ms are all closed
/// within the header timeout + 1 s of their first byte, one that sends nothing within its own
/// timeout, one idle after a request within the idle timeout + 1 s — and meanwhile /healthz and
/// an authenticated request keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_silent_and_idle_connections_are_closed_within_their_timeouts() {
    let dir = TempDir::new();
    let (_stanna, ports) = start(
        &dir,
        &[
            ("STANNA_HEADER_TIMEOUT", "2s".into()),
            ("STANNA_IDLE_TIMEOUT", "3s".into()),
        ],
    );
    let gateway = format!("127.0.0.1:{}", ports.gateway);
    let key = create_key(ports.registry).await;
    let url = format!("http://{gateway}");

    // One that sends nothing.
    let silent_since = Instant::now();
    let mut silent = TcpStream::connect(&gateway).await.unwrap();
    // One idle after a request on a kept-alive connection.
    let mut idle = TcpStream::connect(&gateway).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 512];
    let n = idle.read(&mut answer).await.unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"), "healthz answered");
    let idle_since = Instant::now();
    // Watched from now on, so a close is seen when it happens.
    let silent_watch = tokio::spawn(async move {
        closed_within(&mut silent, silent_since, Duration::from_secs(10)).await
    });
    let idle_watch =
        tokio::spawn(
            async move { closed_within(&mut idle, idle_since, Duration::from_secs(10)).await },
        );
    // 200 slow-header clients.
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(&gateway).await.unwrap();
        stream
            .write_all(b"GET /v1/me HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push((stream, Instant::now()));
    }
    let dribble = tokio::spawn(async move {
        let mut closes = Vec::new();
        let mut open: Vec<(TcpStream, Instant)> = slow;
        let started = Instant::now();
        while !open.is_empty() && started.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut still = Vec::new();
            for (mut stream, since) in open {
                let mut probe = [0u8; 1024];
                // Closed by the server?
                match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut probe)).await
                {
                    Ok(Ok(0) | Err(_)) => closes.push(since.elapsed()),
                    _ => match stream.write_all(b"X-Slow: 1\r\n").await {
                        Ok(()) => still.push((stream, since)),
                        Err(_) => closes.push(since.elapsed()),
                    },
                }
            }
            open = still;
        }
        (closes, open.len())
    });
    // Meanwhile the gateway keeps answering.
    let mut latencies = Vec::new();
    let probe_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < probe_until {
        let started = Instant::now();
        let (status, _, _) = get(&format!("{url}/healthz"), "").await;
        assert_eq!(status, 200);
        let (status, _, _) = get(&format!("{url}/v1/me"), &key).await;
        assert_eq!(status, 200, "an authenticated request answered");
        latencies.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let silent_closed = silent_watch.await.unwrap();
    let idle_closed = idle_watch.await.unwrap();
    let (closes, left_open) = dribble.await.unwrap();
    latencies.sort();
    println!(
        "slow-header closes after {:?}..{:?}; silent closed after {silent_closed:?}; idle after {idle_closed:?}; healthz+/v1/me pairs p50 {:?} max {:?} over {}",
        closes.iter().min(),
        closes.iter().max(),
        latencies[latencies.len() / 2],
        latencies.last().unwrap(),
        latencies.len()
    );
    assert_eq!(left_open, 0, "every slow-header connection was closed");
    assert_eq!(closes.len(), 200);
    // Seen by a 500 ms probe: within the timeout (2 s) + 1 s, plus the probe's period.
    assert!(
        closes.iter().all(|d| *d <= Duration::from_millis(3500)),
        "slow-header connections closed within 2 s + 1 s: {closes:?}"
    );
    let silent_closed = silent_closed.expect("the silent connection was closed");
    assert!(silent_closed <= Duration::from_secs(3), "{silent_closed:?}");
    let idle_closed = idle_closed.expect("the idle connection was closed");
    assert!(
        idle_closed >= Duration::from_millis(2500) && idle_closed <= Duration::from_secs(4),
        "closed after the idle timeout (3 s), not the header timeout: {idle_closed:?}"
    );
}

/// A request head over 32 KiB is answered 431 and its connection closed; one of 20 KiB is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_over_32_kib_is_431() {
    let dir = TempDir::new();
    let (_stanna, ports) = start(&dir, &[]);
    let gateway = format!("127.0.0.1:{}", ports.gateway);
    for (size, want) in [
        (20 * 1024, &b"HTTP/1.1 200"[..]),
        (40 * 1024, &b"HTTP/1.1 431"[..]),
    ] {
        let mut stream = TcpStream::connect(&gateway).await.unwrap();
        let head = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(size)
        );
        let _ = stream.write_all(head.as_bytes()).await;
        let mut answer = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
            .await
            .expect("an answer")
            .unwrap_or(0);
        assert!(
            answer[..n].starts_with(want),
            "{size} bytes of header: {:?}",
            String::from_utf8_lossy(&answer[..n.min(80)])
        );
    }
}

/// `STANNA_MAX_CONNECTIONS=4`: four open connections keep being served; a fifth is not accepted
/// (its request waits) until one of them closes, and is then answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_accepting_pauses_and_open_connections_keep_working() {
    let dir = TempDir::new();
    let (_stanna, ports) = start(&dir, &[("STANNA_MAX_CONNECTIONS", "4".into())]);
    let gateway = format!("127.0.0.1:{}", ports.gateway);
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    async fn ask(stream: &mut TcpStream, request: &[u8]) -> bool {
        stream.write_all(request).await.unwrap();
        let mut answer = [0u8; 512];
        matches!(
            tokio::time::timeout(Duration::from_secs(2), stream.read(&mut answer)).await,
            Ok(Ok(n)) if answer[..n].starts_with(b"HTTP/1.1 200")
        )
    }
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(&gateway).await.unwrap();
        assert!(ask(&mut stream, request).await);
        open.push(stream);
    }
    // The kernel completes the handshake (backlog); the gateway does not accept it yet.
    let mut fifth = TcpStream::connect(&gateway).await.unwrap();
    assert!(
        !ask(&mut fifth, request).await,
        "the fifth was answered past the cap"
    );
    for stream in &mut open {
        assert!(
            ask(stream, request).await,
            "an open connection stopped working"
        );
    }
    drop(open.pop());
    let mut answer = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), fifth.read(&mut answer))
        .await
        .expect("the fifth is served once a connection closes")
        .unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
}

/// `STANNA_UNAUTHENTICATED_RATE_LIMIT=5/60s`: five made-up keys from one address are 401, the
/// sixth is 429 with `Retry-After`, without a Verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_flooding_401s_is_answered_429() {
    let dir = TempDir::new();
    let (_stanna, ports) = start(
        &dir,
        &[("STANNA_UNAUTHENTICATED_RATE_LIMIT", "5/60s".into())],
    );
    let url = format!("http://127.0.0.1:{}/v1/me", ports.gateway);
    for _ in 0..5 {
        let made_up = stanna_keys::GeneratedKey::generate().unwrap().into_secret();
        let (status, _, body) = get(&url, &made_up).await;
        assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    }
    let made_up = stanna_keys::GeneratedKey::generate().unwrap().into_secret();
    let (status, headers, body) = get(&url, &made_up).await;
    assert_eq!(status, 429, "{}", String::from_utf8_lossy(&body));
    assert!(
        String::from_utf8_lossy(&body).contains("failed authentications"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(headers.get("retry-after").is_some());
}

/// The benchmarks-only bypass is not in the shipped binary: `STANNA_BENCH_NO_AUTH=true` changes
/// nothing — a request without a usable key is still 401, and nothing warns of a bypass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_binary_ignores_stanna_bench_no_auth() {
    let dir = TempDir::new();
    let (stanna, ports) = start(&dir, &[("STANNA_BENCH_NO_AUTH", "true".into())]);
    let (status, _, body) = get(&format!("http://127.0.0.1:{}/anything", ports.gateway), "").await;
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("_api_key"));
    assert!(
        !stanna.output().contains("WITHOUT any authentication"),
        "{}",
        stanna.output()
    );
}

/// `STANNA_ADMIN_TOKEN_FILE` (the container-secret convention): the token is read from the file
/// (its trailing newline ignored) and works for KeyRegistry calls; a short one in the file is
/// refused naming the variable and the file, never the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_can_come_from_a_file() {
    let dir = TempDir::new();
    let file = dir.path().join("admin-token");
    std::fs::write(&file, format!("{}\n", crate::operability::TOKEN)).unwrap();
    let (ports, mut env) = all_in_one(dir.sqlite_url(), &[]);
    env.retain(|(k, _)| *k != "STANNA_ADMIN_TOKEN");
    env.push(("STANNA_ADMIN_TOKEN_FILE", file.display().to_string()));
    let stanna = Stanna::start(dir.path(), &["serve"], &env, "gateway listening on");
    let key = create_key(ports.registry).await;
    assert!(
        key.starts_with("sk-"),
        "a registry call with the file's token works"
    );
    assert!(!stanna.output().contains(crate::operability::TOKEN));
    drop(stanna);

    std::fs::write(&file, "short-Secret1\n").unwrap();
    let (code, printed) = stanna_e2e::run_to_exit(dir.path(), &["serve"], &env);
    assert_eq!(code, 2, "{printed}");
    assert!(printed.contains("STANNA_ADMIN_TOKEN_FILE ("), "{printed}");
    assert!(!printed.contains("short-Secret1"), "{printed}");
}
