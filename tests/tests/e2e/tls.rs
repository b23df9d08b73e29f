//! TLS everywhere it is expected, with certificates of the test's own CA (rcgen): split mode over
//! mTLS with grpcurl `-cacert/-cert/-key` as the README shows and a client without a certificate
//! refused; the gateway's HTTPS (h2 and HTTP/1.1 by ALPN) reloading its certificate on SIGHUP and
//! on a file change without dropping open connections; `rediss://`; an `https://` upstream
//! trusted through `STANNA_UPSTREAM_CA_FILE`; PostgreSQL `sslmode=require` through the URL.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stanna_e2e::{Stanna, free_port, grpcurl, run_to_exit};
use stanna_testkit::TempDir;
use stanna_testkit::pki::{Issued, TestCa};

use crate::operability::{all_in_one, create_key};

const TOKEN: &str = "tls-admin-token-0123456789";

/// The `STANNA_GRPC_*` settings of one service process: its certificate, the CA it trusts, and
/// client certificates required.
fn mtls_env(ca: &TestCa, own: &Issued) -> Vec<(&'static str, String)> {
    let path = |p: &Path| p.display().to_string();
    vec![
        ("STANNA_GRPC_TLS_CERT_FILE", path(&own.cert_file)),
        ("STANNA_GRPC_TLS_KEY_FILE", path(&own.key_file)),
        ("STANNA_GRPC_CLIENT_CA_FILE", path(&ca.cert_file)),
        ("STANNA_GRPC_CA_FILE", path(&ca.cert_file)),
        ("STANNA_GRPC_CLIENT_CERT_FILE", path(&own.cert_file)),
        ("STANNA_GRPC_CLIENT_KEY_FILE", path(&own.key_file)),
    ]
}

/// `curl` with `args`; what it printed on stdout, or its stderr as the error.
fn curl(args: &[&str]) -> Result<String, String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The four services as processes, every gRPC hop over mTLS and the gateway on HTTPS: the keys
/// are created with grpcurl presenting a client certificate, a grpcurl without one (or in
/// plaintext) is refused, and `stanna healthcheck` speaks TLS from the same settings.
#[test]
fn split_mode_runs_over_mtls_and_a_client_without_a_certificate_is_refused() {
    let Some(grpcurl) =
        grpcurl("split_mode_runs_over_mtls_and_a_client_without_a_certificate_is_refused")
    else {
        return;
    };
    let dir = TempDir::new();
    // The file names the README uses.
    let ca = TestCa::new(dir.path(), "ca");
    let services = ca.server("services");
    // admin.pem and admin-key.pem, which the README's grpcurl presents.
    ca.client("admin");
    let store = stanna_e2e::SharedStore::for_test(&dir, "split_mode_over_mtls");
    let db = store.url();
    let (registry_port, auth_port, quota_port, gateway_port) =
        (free_port(), free_port(), free_port(), free_port());
    let tls = mtls_env(&ca, &services);
    let with = |extra: Vec<(&'static str, String)>| {
        let mut env = tls.clone();
        env.extend(extra);
        env
    };
    let session = (
        "STANNA_SESSION_SECRET",
        stanna_e2e::SESSION_SECRET.to_owned(),
    );
    let _quota = Stanna::start(
        dir.path(),
        &["serve", "quota"],
        &with(vec![(
            "STANNA_QUOTA_ADDR",
            format!("127.0.0.1:{quota_port}"),
        )]),
        "quota listening on",
    );
    let _registry = Stanna::start(
        dir.path(),
        &["serve", "registry"],
        &with(vec![
            ("STANNA_REGISTRY_ADDR", format!("127.0.0.1:{registry_port}")),
            ("STANNA_DATABASE_URL", db.clone()),
            ("STANNA_ADMIN_TOKEN", TOKEN.to_owned()),
            ("STANNA_GATEWAY_TOKEN", stanna_e2e::GATEWAY_TOKEN.to_owned()),
            session.clone(),
        ]),
        "key-registry listening on",
    );
    let _auth = Stanna::start(
        dir.path(),
        &["serve", "auth-check"],
        &with(vec![
            ("STANNA_AUTH_CHECK_ADDR", format!("127.0.0.1:{auth_port}")),
            ("STANNA_DATABASE_URL", db),
            (
                "STANNA_QUOTA_URL",
                format!("https://127.0.0.1:{quota_port}"),
            ),
        ]),
        "auth-check listening on",
    );
    let _gateway = Stanna::start(
        dir.path(),
        &["serve", "gateway"],
        &with(vec![
            ("STANNA_GATEWAY_ADDR", format!("127.0.0.1:{gateway_port}")),
            (
                "STANNA_AUTH_CHECK_URL",
                format!("https://127.0.0.1:{auth_port}"),
            ),
            (
                "STANNA_REGISTRY_URL",
                format!("https://127.0.0.1:{registry_port}"),
            ),
            ("STANNA_ADMIN_TOKEN", TOKEN.to_owned()),
            ("STANNA_GATEWAY_TOKEN", stanna_e2e::GATEWAY_TOKEN.to_owned()),
            session,
            (
                "STANNA_TLS_CERT_FILE",
                services.cert_file.display().to_string(),
            ),
            (
                "STANNA_TLS_KEY_FILE",
                services.key_file.display().to_string(),
            ),
        ]),
        "gateway listening on",
    );
    let registry = format!("127.0.0.1:{registry_port}");
    let ca_file = ca.cert_file.display().to_string();
    let body = r#"{"workspace_id":"ws_tls","user_id":"alice","name":"Over mTLS"}"#;
    let bearer = format!("authorization: Bearer {TOKEN}");
    // As the README shows it: its grpcurl commands, run by sh in the directory of the files it
    // names, against this registry.
    let commands = stanna_e2e::readme_commands("## TLS and mTLS", "grpcurl");
    assert!(!commands.is_empty(), "the README shows grpcurl over mTLS");
    let mut secret = None;
    for command in commands {
        let command = command.replace("127.0.0.1:50051", &registry);
        let out = Command::new("sh")
            .args(["-c", &command])
            .current_dir(dir.path())
            .env("STANNA_ADMIN_TOKEN", TOKEN)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Ok(created) = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            && let Some(s) = created["secret"].as_str()
        {
            secret = Some(s.to_owned());
        }
    }
    let secret = secret.expect("the README creates a key over mTLS");

    // No client certificate: the handshake is refused, nothing is created.
    let refused = Command::new(&grpcurl)
        .args(["-cacert", &ca_file, "-H", &bearer, "-d", body, &registry])
        .arg("stanna.keys.v1.KeyRegistry/CreateKey")
        .output()
        .unwrap();
    assert!(!refused.status.success(), "refused without a certificate");
    let plaintext = Command::new(&grpcurl)
        .args(["-plaintext", "-H", &bearer, "-d", body, &registry])
        .arg("stanna.keys.v1.KeyRegistry/CreateKey")
        .output()
        .unwrap();
    assert!(!plaintext.status.success(), "refused in plaintext");
    // A certificate from another CA is refused too.
    let other_dir = TempDir::new();
    let stranger = TestCa::new(other_dir.path(), "other-ca").client("stranger");
    let foreign = Command::new(&grpcurl)
        .args(["-cacert", &ca_file, "-cert"])
        .arg(&stranger.cert_file)
        .arg("-key")
        .arg(&stranger.key_file)
        .args(["-H", &bearer, "-d", body, &registry])
        .arg("stanna.keys.v1.KeyRegistry/CreateKey")
        .output()
        .unwrap();
    assert!(
        !foreign.status.success(),
        "refused with a foreign CA's certificate"
    );

    // The public path: gateway (HTTPS) → auth-check → quota, each hop over mTLS.
    let url = format!("https://127.0.0.1:{gateway_port}/v1/me");
    let key_header = format!("Authorization: Bearer {secret}");
    let written = "%{http_version} %{http_code}";
    let h2 = curl(&[
        "--cacert",
        &ca_file,
        "-o",
        "/dev/null",
        "-w",
        written,
        "-H",
        &key_header,
        &url,
    ])
    .expect("curl over HTTPS");
    assert_eq!(h2, "2 200", "h2 by ALPN, the key valid through every hop");
    let h1 = curl(&[
        "--http1.1",
        "--cacert",
        &ca_file,
        "-o",
        "/dev/null",
        "-w",
        written,
        "-H",
        &key_header,
        &url,
    ])
    .expect("curl over HTTPS with HTTP/1.1");
    assert_eq!(h1, "1.1 200");
    let plain = curl(&[&format!("http://127.0.0.1:{gateway_port}/healthz")]);
    assert!(plain.is_err(), "plain HTTP gets no answer: {plain:?}");

    // stanna healthcheck with the service's own settings; without a client certificate the
    // registry refuses it.
    let (code, printed) = run_to_exit(dir.path(), &["healthcheck", &registry], &tls);
    assert_eq!(code, 0, "{printed}");
    assert!(printed.contains("SERVING"), "{printed}");
    let (code, printed) = run_to_exit(
        dir.path(),
        &["healthcheck", &registry],
        &[("STANNA_GRPC_CA_FILE", ca_file.clone())],
    );
    assert_eq!(code, 1, "no client certificate: {printed}");
}

/// A TLS client that remembers the certificate the server presented.
fn tls_client(ca: &Path) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Every handshake a full one: a resumed session reports the certificate of the session it
    // resumes, not what the server presents now.
    config.resumption = rustls::client::Resumption::disabled();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// An HTTP/1.1 connection over TLS to `port`: its sender and the certificate presented (DER).
async fn connect(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
) -> (
    hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    Vec<u8>,
) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = connector
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    (sender, presented)
}

async fn healthz(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
) -> u16 {
    let request = http::Request::get("/healthz")
        .header(http::header::HOST, "localhost")
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap();
    status
}

/// Waits (at most `cap`) for new handshakes to present `expected`.
async fn presents(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
    expected: &[u8],
    cap: Duration,
) -> bool {
    let deadline = Instant::now() + cap;
    loop {
        let (_, presented) = connect(connector, port).await;
        if presented == expected {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Puts `from`'s pair where the gateway reads its certificate, each file replaced whole (a
/// rename), the key first.
fn install(from: &Issued, cert: &Path, key: &Path) {
    for (source, target) in [(&from.key_file, key), (&from.cert_file, cert)] {
        let staged = target.with_extension("new");
        std::fs::copy(source, &staged).unwrap();
        std::fs::rename(&staged, target).unwrap();
    }
}

/// The gateway's certificate is replaced on SIGHUP and, without a signal, when its files
/// change; a connection opened before keeps working on its old session, and a broken new pair
/// leaves the last good one in service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_reloads_its_certificate_without_dropping_connections() {
    let dir = TempDir::new();
    let ca = TestCa::new(dir.path(), "reload-ca");
    let first = ca.server("first");
    let second = ca.server("second");
    let third = ca.server("third");
    let cert = dir.path().join("gateway.pem");
    let key = dir.path().join("gateway-key.pem");
    install(&first, &cert, &key);
    let (ports, env) = all_in_one(
        dir.sqlite_url(),
        &[
            ("STANNA_TLS_CERT_FILE", cert.display().to_string()),
            ("STANNA_TLS_KEY_FILE", key.display().to_string()),
        ],
    );
    let stanna = Stanna::start(dir.path(), &["serve"], &env, "gateway listening on");
    let connector = tls_client(&ca.cert_file);
    let (mut open, presented) = connect(&connector, ports.gateway).await;
    assert_eq!(presented, first.der, "the first certificate");
    assert_eq!(healthz(&mut open).await, 200);

    install(&second, &cert, &key);
    stanna.signal("HUP");
    assert!(
        presents(
            &connector,
            ports.gateway,
            &second.der,
            Duration::from_secs(10)
        )
        .await,
        "new handshakes get the second certificate after SIGHUP:\n{}",
        stanna.output()
    );
    assert_eq!(
        healthz(&mut open).await,
        200,
        "the connection opened before the reload still works"
    );

    // No signal: the watcher sees the files change.
    install(&third, &cert, &key);
    assert!(
        presents(
            &connector,
            ports.gateway,
            &third.der,
            Duration::from_secs(15)
        )
        .await,
        "new handshakes get the third certificate after the files changed:\n{}",
        stanna.output()
    );

    // A broken certificate file: logged, the third stays in service.
    std::fs::write(&cert, "not a certificate").unwrap();
    stanna.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stanna.output().contains("TLS certificate not reloaded") {
        assert!(
            Instant::now() < deadline,
            "the failed reload is logged:\n{}",
            stanna.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut again, presented) = connect(&connector, ports.gateway).await;
    assert_eq!(presented, third.der, "the last good certificate stays");
    assert_eq!(healthz(&mut again).await, 200);
    assert_eq!(healthz(&mut open).await, 200);
}

/// A TLS upstream of the test's own: answers every request 200 with the `x-forwarded-proto` it
/// got.
async fn tls_upstream(server: &Issued) -> u16 {
    use rustls_pki_types::pem::PemObject as _;
    let chain = rustls_pki_types::CertificateDer::pem_file_iter(&server.cert_file)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&server.key_file).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    |request: http::Request<hyper::body::Incoming>| async move {
                        let proto = request
                            .headers()
                            .get("x-forwarded-proto")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("none")
                            .to_owned();
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(format!(
                                "upstream over TLS; forwarded proto {proto}"
                            ))),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    port
}

/// `rediss://` for the quota (a TLS-only redis-server of the test's own, trusted through
/// `STANNA_REDIS_CA_FILE`) and an `https://` upstream trusted through `STANNA_UPSTREAM_CA_FILE`;
/// without that file the upstream's private CA is not trusted and the answer is 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_and_an_https_upstream_work_with_their_ca_files() {
    let dir = TempDir::new();
    let ca = TestCa::new(dir.path(), "backends-ca");
    let backend = ca.server("backend");
    let Some(redis) = stanna_testkit::OwnRedis::start_tls(
        "rediss_and_an_https_upstream_work_with_their_ca_files",
        &backend.cert_file,
        &backend.key_file,
        &ca.cert_file,
    ) else {
        return;
    };
    let upstream = tls_upstream(&backend).await;
    let ca_file = ca.cert_file.display().to_string();
    let (ports, env) = all_in_one(
        dir.sqlite_url(),
        &[
            ("STANNA_REDIS_URL", redis.url()),
            ("STANNA_REDIS_CA_FILE", ca_file.clone()),
            (
                "STANNA_UPSTREAM_URL",
                format!("https://localhost:{upstream}"),
            ),
            ("STANNA_UPSTREAM_CA_FILE", ca_file),
        ],
    );
    assert!(redis.url().starts_with("rediss://"));
    let stanna = Stanna::start(dir.path(), &["serve"], &env, "gateway listening on");
    let key = create_key(ports.registry).await;
    let base = format!("http://127.0.0.1:{}", ports.gateway);
    let (status, headers, body) = crate::operability::get(&format!("{base}/anything"), &key).await;
    assert_eq!(status, 200, "{body:?}\n{}", stanna.output());
    assert_eq!(
        String::from_utf8_lossy(&body),
        "upstream over TLS; forwarded proto http"
    );
    assert_eq!(
        headers["x-ratelimit-remaining-burst"], "99",
        "decided in the TLS Redis"
    );
    let (status, _, body) = crate::operability::get(&format!("{base}/readyz"), "").await;
    assert_eq!(status, 200, "{body:?}");
    drop(stanna);

    // Mozilla's roots do not include the test CA.
    let untrusted: Vec<(&'static str, String)> = env
        .into_iter()
        .filter(|(k, _)| *k != "STANNA_UPSTREAM_CA_FILE")
        .collect();
    let stanna = Stanna::start(dir.path(), &["serve"], &untrusted, "gateway listening on");
    let (status, _, body) = crate::operability::get(&format!("{base}/anything"), &key).await;
    assert_eq!(status, 502, "{body:?}\n{}", stanna.output());
}

/// `sslmode=require` in a PostgreSQL URL is honoured: the server lists the store's connections
/// as TLS ones.
#[test]
fn a_postgres_url_with_sslmode_require_connects_over_tls() {
    let Some(database) = stanna_testkit::fresh_postgres_database_blocking(
        "a_postgres_url_with_sslmode_require_connects_over_tls",
    ) else {
        return;
    };
    let dir = TempDir::new();
    let separator = if database.url().contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!("{}{separator}sslmode=require", database.url());
    let (ports, env) = all_in_one(url, &[]);
    let stanna = Stanna::start(dir.path(), &["serve"], &env, "gateway listening on");
    let name = database
        .url()
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let admin = std::env::var("DATABASE_URL").unwrap();
    let counted = Command::new("psql")
        .args([
            &admin,
            "-tAc",
            &format!(
                "select count(*) filter (where s.ssl), count(*) from pg_stat_ssl s join pg_stat_activity a using (pid) where a.datname = '{name}'"
            ),
        ])
        .output()
        .expect("psql");
    let counted = String::from_utf8_lossy(&counted.stdout).trim().to_owned();
    let (tls, all) = counted.split_once('|').unwrap_or(("0", "0"));
    assert!(
        all.parse::<u32>().unwrap_or(0) > 0,
        "the store is connected: {counted}\n{}",
        stanna.output()
    );
    assert_eq!(tls, all, "every store connection is TLS: {counted}");
    let _ = ports;
}

/// `deploy/make-certs.sh` (what docker-compose.tls.yml mounts) makes certificates the services
/// accept: a quota process serves mTLS with them, and `stanna healthcheck` with the same
/// settings reaches it.
#[test]
fn the_make_certs_script_makes_certificates_the_services_accept() {
    if Command::new("openssl").arg("version").output().is_err() {
        stanna_testkit::skip(
            "the_make_certs_script_makes_certificates_the_services_accept",
            "openssl is not installed, so this test did not run",
        );
        return;
    }
    let dir = TempDir::new();
    let certs = dir.path().join("certs");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/make-certs.sh");
    let made = Command::new("sh")
        .arg(&script)
        .arg(&certs)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let file = |name: &str| certs.join(name).display().to_string();
    let env = vec![
        ("STANNA_GRPC_TLS_CERT_FILE", file("services.pem")),
        ("STANNA_GRPC_TLS_KEY_FILE", file("services-key.pem")),
        ("STANNA_GRPC_CLIENT_CA_FILE", file("ca.pem")),
        ("STANNA_GRPC_CA_FILE", file("ca.pem")),
        ("STANNA_GRPC_CLIENT_CERT_FILE", file("services.pem")),
        ("STANNA_GRPC_CLIENT_KEY_FILE", file("services-key.pem")),
    ];
    let port = free_port();
    let mut quota_env = env.clone();
    quota_env.push(("STANNA_QUOTA_ADDR", format!("127.0.0.1:{port}")));
    let _quota = Stanna::start(
        dir.path(),
        &["serve", "quota"],
        &quota_env,
        "quota listening on",
    );
    let (code, printed) = run_to_exit(
        dir.path(),
        &["healthcheck", &format!("127.0.0.1:{port}")],
        &env,
    );
    assert_eq!(code, 0, "{printed}");
    // The admin's certificate is a client certificate of the same CA.
    let admin = vec![
        ("STANNA_GRPC_CA_FILE", file("ca.pem")),
        ("STANNA_GRPC_CLIENT_CERT_FILE", file("admin.pem")),
        ("STANNA_GRPC_CLIENT_KEY_FILE", file("admin-key.pem")),
    ];
    let (code, printed) = run_to_exit(
        dir.path(),
        &["healthcheck", &format!("localhost:{port}")],
        &admin,
    );
    assert_eq!(code, 0, "{printed}");
}
