//! `stanna healthcheck ADDR`: asks a service's `grpc.health.v1.Health/Check` (host:port), or the
//! gateway's `GET /healthz` (an `http://` URL), so container images need no separate probe binary.

use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Exits 0 when the server at `addr` answers SERVING (gRPC) or 200 (HTTP) within 3 s; errors
/// otherwise.
pub async fn check(addr: &str) -> anyhow::Result<()> {
    if let Some(rest) = addr.strip_prefix("http://") {
        return check_http(rest).await;
    }
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(3));
    let mut client = HealthClient::new(endpoint.connect().await?);
    let status = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner()
        .status();
    anyhow::ensure!(
        status == ServingStatus::Serving,
        "{addr} reports {status:?}"
    );
    println!("{addr}: SERVING");
    Ok(())
}

/// `GET /healthz` over plain HTTP/1.1 (`host:port[/path]`, default path `/healthz`).
async fn check_http(target: &str) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (host, path) = match target.find('/') {
        Some(slash) => (&target[..slash], &target[slash..]),
        None => (target, "/healthz"),
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(host).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut head = vec![0; 64];
        let n = stream.read(&mut head).await?;
        head.truncate(n);
        anyhow::Ok(head)
    };
    let head = tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .map_err(|_| anyhow::anyhow!("http://{target} did not answer within 3 s"))??;
    let status_line = String::from_utf8_lossy(&head);
    let status_line = status_line.lines().next().unwrap_or("");
    anyhow::ensure!(
        status_line.starts_with("HTTP/1.1 200") || status_line.starts_with("HTTP/1.0 200"),
        "http://{target} answered {status_line:?}"
    );
    println!("http://{target}: 200");
    Ok(())
}
