//! `stanna healthcheck ADDR`: asks a service's `grpc.health.v1.Health/Check`, so container images
//! need no separate probe binary.

use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Exits 0 when the server at `addr` answers SERVING within 3 s; errors otherwise.
pub async fn check(addr: &str) -> anyhow::Result<()> {
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
