//! `stanna healthcheck ADDR`: asks a service's `grpc.health.v1.Health/Check` (`host:port`), or the
//! gateway's `GET /healthz` — `/readyz` with `--ready` — at an `http://` or `https://` URL, so
//! container images need no separate probe. Pointed at the wrong kind of port, it says so.

use std::time::Duration;

use http_body_util::BodyExt as _;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How long the whole check may take.
const DEADLINE: Duration = Duration::from_secs(3);

/// Exits 0 when the server at `addr` answers SERVING (gRPC) or 200 (HTTP) within 3 s; errors
/// otherwise, in words.
///
/// # Errors
/// What the server answered, or why there was no answer.
pub async fn check(
    addr: &str,
    ready: bool,
    tls: &stanna_config::GrpcTlsConfig,
) -> anyhow::Result<()> {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        return check_http(addr, ready).await;
    }
    anyhow::ensure!(
        !addr.contains("://"),
        "{addr}: give host:port for a gRPC service, or an http:// or https:// URL for the gateway"
    );
    // The service's own TLS settings tell whether its servers speak TLS (its certificate is
    // set) and what to trust and present.
    let secure = tls.grpc_tls_cert_file.is_some() || tls.grpc_ca_file.is_some();
    let scheme = if secure { "https" } else { "http" };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))?
        .connect_timeout(DEADLINE)
        .timeout(DEADLINE);
    if secure {
        let loaded = stanna_grpc::GrpcTls::load(&stanna_grpc::GrpcTlsFiles {
            ca: tls.grpc_ca_file.as_deref(),
            client_cert: tls.grpc_client_cert_file.as_deref(),
            client_key: tls.grpc_client_key_file.as_deref(),
            ..Default::default()
        })?;
        endpoint = endpoint.tls_config(loaded.client().clone())?;
    }
    let channel = endpoint.connect().await.map_err(|e| {
        anyhow::anyhow!(
            "{addr}: no gRPC service answers there ({})",
            stanna_telemetry::ErrorChain(&e)
        )
    })?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    let status = match answer {
        Ok(response) => response.into_inner().status(),
        // An HTTP server (the gateway) answers with a status and a body that are not gRPC:
        // tonic names the HTTP status, or trips on the body's first byte as a compression flag.
        Err(status)
            if status.code() == tonic::Code::Unimplemented || {
                let message = status.message().to_ascii_lowercase();
                message.contains("http")
                    || message.contains("compression flag")
                    || message.contains("with status")
            } =>
        {
            anyhow::bail!(
                "{addr} does not serve gRPC health: is it the gateway's HTTP port? use `stanna healthcheck http://{addr}`"
            )
        }
        Err(status) => anyhow::bail!("{addr}: health check failed: {}", status.message()),
    };
    anyhow::ensure!(
        status == ServingStatus::Serving,
        "{addr} reports {status:?} (its store or Redis is unreachable, or it is stopping)"
    );
    println!("{addr}: SERVING");
    Ok(())
}

/// The context of a failed exchange on a plain connection that did connect.
const NOT_HTTP1: &str = "no HTTP/1.1 answer";

/// `GET /healthz` (or `/readyz`) over HTTP/1.1, in the clear or over TLS (the system's roots).
async fn check_http(target: &str, ready: bool) -> anyhow::Result<()> {
    let mut url = url::Url::parse(target).map_err(|e| anyhow::anyhow!("{target}: {e}"))?;
    if url.path() == "/" {
        url.set_path(if ready { "/readyz" } else { "/healthz" });
    }
    // An IPv6 host is bracketed in the URL and the Host header, bare for connect and TLS.
    let (host, authority) = match url.host() {
        Some(url::Host::Ipv6(ip)) => (ip.to_string(), format!("[{ip}]")),
        Some(host) => (host.to_string(), host.to_string()),
        None => anyhow::bail!("{target}: no host"),
    };
    let port = url
        .port_or_known_default()
        .ok_or_else(|| anyhow::anyhow!("{target}: no port"))?;
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        let request = http::Request::get(url.path())
            .header(http::header::HOST, format!("{authority}:{port}"))
            .header(http::header::CONNECTION, "close")
            .body(http_body_util::Empty::<bytes::Bytes>::new())?;
        let response = if url.scheme() == "https" {
            let tls = tls_connector()?
                .connect(rustls_pki_types::ServerName::try_from(host.clone())?, tcp)
                .await?;
            send(hyper_util::rt::TokioIo::new(tls), request).await?
        } else {
            // Connected, but no HTTP/1.1 exchange: the server speaks something else. A gRPC
            // (HTTP/2-only) server closes, cancels or answers with HTTP/2 frames — which one
            // depends on timing, so any failure past the connect is read as that.
            send(hyper_util::rt::TokioIo::new(tcp), request)
                .await
                .map_err(|e| e.context(NOT_HTTP1))?
        };
        anyhow::Ok(response)
    };
    let (status, body) = tokio::time::timeout(DEADLINE, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("{url} did not answer within 3 s"))?
        .map_err(|e| {
            if e.downcast_ref::<&str>() == Some(&NOT_HTTP1) {
                let cause: Vec<String> = e.chain().skip(1).map(ToString::to_string).collect();
                let cause = cause.join(": ");
                anyhow::anyhow!(
                    "{url}: no HTTP/1.1 answer: is it a gRPC port? use `stanna healthcheck {authority}:{port}` ({cause})"
                )
            } else {
                anyhow::anyhow!("{url}: {}", stanna_telemetry::ErrorChain(e.as_ref()))
            }
        })?;
    anyhow::ensure!(status == 200, "{url} answered {status}: {body}");
    println!("{url}: 200");
    Ok(())
}

/// One request on a fresh HTTP/1.1 connection over `io`; its status and body.
async fn send<T>(
    io: T,
    request: http::Request<http_body_util::Empty<bytes::Bytes>>,
) -> anyhow::Result<(u16, String)>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// TLS with the system's trusted roots — or, when `SSL_CERT_FILE` / `SSL_CERT_DIR` is set, with
/// those instead (rustls-native-certs' rule, the same as OpenSSL's).
fn tls_connector() -> anyhow::Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}
