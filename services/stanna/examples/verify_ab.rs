//! Warm Verify throughput of two `stanna` builds, interleaved in one run: each is started as
//! `stanna serve` (SQLite, in-process quota) on free ports, given the same keys, and driven in
//! alternating phases by the same client, so the machine's drift hits both alike.
//!
//! ```sh
//! STANNA_BIN_A=/path/to/older/stanna STANNA_BIN_B=target/release/stanna \
//!   cargo run --release -p stanna --example verify_ab -- 5
//! ```
//!
//! The argument is the number of rounds (default 5); each round runs A then B (B then A on even
//! rounds) for 3 s each, 32 concurrent callers over one HTTP/2 connection, every call a Verify of
//! one of 256 keys with limits far above what the run sends. Prints req/s per phase and B ÷ A per
//! round, and their median.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stanna_proto::keys::v1 as pb;
use stanna_proto::keys::v1::auth_check_client::AuthCheckClient;
use stanna_proto::keys::v1::key_registry_client::KeyRegistryClient;
use stanna_testkit::free_port;
use tonic::transport::Channel;

const CONCURRENCY: usize = 32;
const PHASE: Duration = Duration::from_secs(3);
/// Enough keys that 10 000 per hour each admits every call of the run.
const KEYS: usize = 256;
const TOKEN: &str = "verify-ab-admin-token-0123456789";

struct Server {
    child: Child,
    _dir: stanna_testkit::TempDir,
    auth: AuthCheckClient<Channel>,
    keys: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(bin: &PathBuf) -> Result<Server, Box<dyn std::error::Error>> {
    let dir = stanna_testkit::TempDir::new();
    let (registry, auth) = (free_port(), free_port());
    let child = Command::new(bin)
        .arg("serve")
        .current_dir(dir.path())
        .env("STANNA_REGISTRY_ADDR", format!("127.0.0.1:{registry}"))
        .env("STANNA_AUTH_CHECK_ADDR", format!("127.0.0.1:{auth}"))
        .env("STANNA_QUOTA_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("STANNA_GATEWAY_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("STANNA_DATABASE_URL", dir.sqlite_url())
        .env("STANNA_METRICS_ADDR", "127.0.0.1:0")
        .env("STANNA_ADMIN_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr.log"))?)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let registry_channel = loop {
        match Channel::from_shared(format!("http://127.0.0.1:{registry}"))?
            .connect()
            .await
        {
            Ok(channel) => break channel,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                let log =
                    std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
                return Err(format!("{} did not start: {e}\n{log}", bin.display()).into());
            }
        }
    };
    let mut admin = KeyRegistryClient::new(registry_channel);
    let window = |name: &str, secs: i64| pb::RateLimit {
        name: name.to_owned(),
        limit: 10_000,
        period: Some(prost_types::Duration {
            seconds: secs,
            nanos: 0,
        }),
    };
    let mut keys = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        let mut request = tonic::Request::new(pb::CreateKeyRequest {
            workspace_id: "ws_bench".into(),
            user_id: format!("user{i}"),
            name: format!("bench {i}"),
            rate_limits: vec![window("burst", 60), window("hourly", 3600)],
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {TOKEN}").parse()?);
        keys.push(admin.create_key(request).await?.into_inner().secret);
    }
    let auth = AuthCheckClient::new(
        Channel::from_shared(format!("http://127.0.0.1:{auth}"))?
            .connect()
            .await?,
    );
    let server = Server {
        child,
        _dir: dir,
        auth,
        keys,
    };
    // Warm every key (the cold path runs argon2 once per key), then the connection.
    let mut warm = server.auth.clone();
    for key in &server.keys {
        let request = pb::VerifyRequest {
            key: key.clone(),
            cost: 1,
            ..Default::default()
        };
        if !warm.verify(request).await?.into_inner().valid {
            return Err("a new key did not verify".into());
        }
    }
    phase(&server, Duration::from_millis(500)).await;
    Ok(server)
}

/// Verify calls per second over `length`.
async fn phase(server: &Server, length: Duration) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|worker| {
            let mut auth = server.auth.clone();
            let keys = server.keys.clone();
            tokio::spawn(async move {
                let (mut done, mut i) = (0u64, worker);
                while start.elapsed() < length {
                    let request = pb::VerifyRequest {
                        key: keys[i % keys.len()].clone(),
                        cost: 1,
                        ..Default::default()
                    };
                    let answer = auth.verify(request).await;
                    if length >= PHASE && !answer.as_ref().is_ok_and(|r| r.get_ref().valid) {
                        panic!("a Verify failed mid-run: {answer:?}");
                    }
                    done += 1;
                    i += CONCURRENCY;
                }
                done
            })
        })
        .collect();
    let mut done = 0;
    for task in tasks {
        done += task.await.expect("bench task");
    }
    done as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = std::env::args().nth(1).map_or(Ok(5), |n| n.parse())?;
    // Absolute: each server runs in a directory of its own.
    let bin = |var: &str, default: &str| {
        let path = PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.to_owned()));
        std::fs::canonicalize(&path).unwrap_or(path)
    };
    let (bin_a, bin_b) = (
        bin("STANNA_BIN_A", "target/release/stanna"),
        bin("STANNA_BIN_B", "target/release/stanna"),
    );
    let a = start(&bin_a).await?;
    let b = start(&bin_b).await?;
    println!(
        "warm Verify, A = {}, B = {}; {CONCURRENCY} callers, {PHASE:?} phases, {KEYS} keys",
        bin_a.display(),
        bin_b.display()
    );
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let (ra, rb) = if round % 2 == 0 {
            let ra = phase(&a, PHASE).await;
            (ra, phase(&b, PHASE).await)
        } else {
            let rb = phase(&b, PHASE).await;
            (phase(&a, PHASE).await, rb)
        };
        ratios.push(rb / ra);
        println!(
            "round {}: A {ra:>8.0} req/s  B {rb:>8.0} req/s  B/A {:.3}",
            round + 1,
            rb / ra
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!("median B/A: {:.3}", ratios[ratios.len() / 2]);
    Ok(())
}
