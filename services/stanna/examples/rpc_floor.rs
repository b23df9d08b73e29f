//! The floor of one gRPC hop: empty unary RPCs (`grpc.health.v1.Health/Check`) from a tonic
//! client to a running server, as many at once as asked, for a while. Prints the calls made and
//! this client's own CPU seconds (from `/proc/self/stat`), so a script can add the server's CPU
//! (from its `/proc/PID/stat`) and report client + server CPU per 1000 calls next to what a real
//! hop costs. Used by `services/stanna/bench/split.sh`.
//!
//! ```sh
//! cargo run --release -p stanna --example rpc_floor -- 127.0.0.1:50053 64 8
//! ```

use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: rpc_floor HOST:PORT CONCURRENCY SECONDS";
    let addr = args.next().ok_or(usage)?;
    let concurrency: usize = args.next().ok_or(usage)?.parse()?;
    let seconds: u64 = args.next().ok_or(usage)?.parse()?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let health = HealthClient::new(channel);
    let cpu_before = own_cpu_seconds()?;
    let until = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let mut health = health.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                while Instant::now() < until {
                    let request = HealthCheckRequest {
                        service: String::new(),
                    };
                    match health.check(request).await {
                        Ok(_) => ok += 1,
                        Err(_) => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for worker in workers {
        let (o, f) = worker.await?;
        ok += o;
        failed += f;
    }
    let cpu = own_cpu_seconds()? - cpu_before;
    println!("calls={ok} failed={failed} client_cpu_s={cpu:.3}");
    Ok(())
}

/// User + system CPU time of this process so far (fields 14 and 15 of `/proc/self/stat`, in
/// clock ticks of 1/100 s: Linux's `USER_HZ`).
fn own_cpu_seconds() -> Result<f64, Box<dyn std::error::Error>> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis don't.
    let after = stat.rsplit_once(')').ok_or("unreadable /proc/self/stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks as f64 / 100.0)
}
