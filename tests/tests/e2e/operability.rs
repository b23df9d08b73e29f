//! What an operator hits on day one, with the real binary: settings that cannot work refused at
//! start (exit 2, the variable and flag named, the allowed range given, no secret echoed),
//! readiness that follows a cut store, a stopped auth-check and a stopped Redis and comes back,
//! `stanna healthcheck` over plain HTTP, HTTPS and gRPC (and what it says at the wrong kind of
//! port), an access log in which a 401's request id is found, and a drain that is bounded.

use std::process::Command;
use std::time::{Duration, Instant};

use stanna_e2e::{Stanna, free_port, run_to_exit, stanna_binary};
use stanna_testkit::TempDir;

pub(crate) const TOKEN: &str = "operability-admin-token-0123456789";

/// The ports of an all-in-one process.
pub(crate) struct Ports {
    pub(crate) registry: u16,
    pub(crate) gateway: u16,
}

/// The environment of an all-in-one `stanna serve` on `db`, every listener on a free port.
pub(crate) fn all_in_one(
    db: String,
    extra: &[(&'static str, String)],
) -> (Ports, Vec<(&'static str, String)>) {
    let ports = Ports {
        registry: free_port(),
        gateway: free_port(),
    };
    let mut env = vec![
        (
            "STANNA_REGISTRY_ADDR",
            format!("127.0.0.1:{}", ports.registry),
        ),
        (
            "STANNA_AUTH_CHECK_ADDR",
            format!("127.0.0.1:{}", free_port()),
        ),
        ("STANNA_QUOTA_ADDR", format!("127.0.0.1:{}", free_port())),
        (
            "STANNA_GATEWAY_ADDR",
            format!("127.0.0.1:{}", ports.gateway),
        ),
        ("STANNA_DATABASE_URL", db),
        ("STANNA_ADMIN_TOKEN", TOKEN.to_owned()),
        ("STANNA_GATEWAY_TOKEN", stanna_e2e::GATEWAY_TOKEN.to_owned()),
        (
            "STANNA_SESSION_SECRET",
            stanna_e2e::SESSION_SECRET.to_owned(),
        ),
    ];
    for (key, value) in extra {
        env.retain(|(k, _)| k != key);
        env.push((key, value.clone()));
    }
    (ports, env)
}

/// `stanna healthcheck ARGS`: whether it passed, and what it printed.
fn healthcheck(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let output = Command::new(stanna_binary())
        .arg("healthcheck")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run stanna healthcheck");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// Polls `stanna healthcheck ARGS` (every 100 ms, up to 30 s) until its pass/fail is `want`;
/// what it printed then.
async fn healthcheck_becomes(args: &[&str], want: bool, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (passed, printed) = healthcheck(args, &[]);
        if passed == want {
            return printed;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: `stanna healthcheck {args:?}` still {} after 30 s: {printed}",
            if passed { "passes" } else { "fails" }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates a key through the registry's gRPC port; its secret.
pub(crate) async fn create_key(registry_port: u16) -> String {
    crate::admin::create_key(registry_port, TOKEN, "Operability")
        .await
        .secret
}

/// `GET url` with `key` on a fresh client.
pub(crate) async fn get(url: &str, key: &str) -> (u16, http::HeaderMap, bytes::Bytes) {
    crate::http::get(&crate::http::client(), url, key).await
}

/// A start expected to be refused: `stanna ARGS`, the environment, and what it must say.
type Refusal = (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
);

/// Every setting that cannot work is refused before anything starts: exit code 2, one line
/// naming the variable that was set and its flag, with the allowed range or form.
#[test]
fn settings_that_cannot_work_are_refused_at_start_with_the_variable_named() {
    let dir = TempDir::new();
    let db = format!("sqlite://{}", dir.path().join("refused.db").display());
    let cases: &[Refusal] = &[
        // Bugs of the first reading: each was accepted and then panicked, 503'd or failed later.
        (
            &["serve"],
            &[("STANNA_CHANGE_POLL_INTERVAL", "0s")],
            &[
                "STANNA_CHANGE_POLL_INTERVAL (--change-poll-interval)=0s is refused",
                "from 10ms to 30s",
            ],
        ),
        (
            &["serve"],
            &[("STANNA_LAST_USED_FLUSH", "0ms")],
            &[
                "STANNA_LAST_USED_FLUSH (--last-used-flush)",
                "from 100ms to 3600s",
            ],
        ),
        (
            &["serve"],
            &[("STANNA_MAX_KEYS_PER_USER", "0")],
            &[
                "STANNA_MAX_KEYS_PER_USER (--max-keys-per-user)",
                "whole number from 1 to 100000",
            ],
        ),
        (
            &["serve"],
            &[("STANNA_VERIFY_TIMEOUT", "0s")],
            &[
                "STANNA_VERIFY_TIMEOUT (--verify-timeout)",
                "from 10ms to 60s",
            ],
        ),
        (
            &["serve"],
            &[("STANNA_STALE_IF_ERROR", "2h")],
            &[
                "STANNA_STALE_IF_ERROR (--stale-if-error)",
                "from 0s to 3600s",
            ],
        ),
        (
            &["serve"],
            &[("STANNA_SHUTDOWN_GRACE", "soon")],
            &[
                "STANNA_SHUTDOWN_GRACE (--shutdown-grace)",
                "from 0s to 600s",
            ],
        ),
        (
            &["serve", "registry"],
            &[
                ("STANNA_ADMIN_TOKEN", "token-in-the-environment-0123"),
                ("STANNA_ADMIN_TOKEN_FILE", "/run/secrets/stanna-admin-token"),
            ],
            &["set STANNA_ADMIN_TOKEN or STANNA_ADMIN_TOKEN_FILE, not both"],
        ),
        (
            &["serve"],
            &[("STANNA_ADMIN_TOKEN_FILE", "/nonexistent/stanna-admin-token")],
            &["STANNA_ADMIN_TOKEN_FILE (/nonexistent/stanna-admin-token) cannot be read"],
        ),
        (
            &["serve"],
            &[("STANNA_MAX_BODY_SIZE", "10MB")],
            &["STANNA_MAX_BODY_SIZE (--max-body-size)", "KiB, MiB or GiB"],
        ),
        (
            &["serve"],
            &[("STANNA_UNAUTHENTICATED_RATE_LIMIT", "lots")],
            &[
                "STANNA_UNAUTHENTICATED_RATE_LIMIT",
                "`off` turns the limit off",
            ],
        ),
        (
            &["serve"],
            &[("STANNA_HEADER_TIMEOUT", "0s")],
            &[
                "STANNA_HEADER_TIMEOUT (--header-timeout)",
                "from 1s to 600s",
            ],
        ),
        (
            &["serve"],
            &[("STANNA_MAX_CONNECTIONS", "0")],
            &["STANNA_MAX_CONNECTIONS (--max-connections)", "from 1 to"],
        ),
        (
            &["serve"],
            &[("STANNA_VERIFY_CACHE_SIZE", "0")],
            &[
                "STANNA_VERIFY_CACHE_SIZE (--verify-cache-size)",
                "from 1 to",
            ],
        ),
        (
            &["serve"],
            &[("STANNA_RATE_LIMIT_BURST", "100")],
            &[
                "STANNA_RATE_LIMIT_BURST (--rate-limit-burst)",
                "LIMIT/PERIOD such as 100/60s",
            ],
        ),
        (
            &["serve"],
            &[("STANNA_ARGON2_M_KIB", "4")],
            &["STANNA_ARGON2_M_KIB (--argon2-m-kib)", "from 8 to"],
        ),
        (
            &["serve"],
            &[("STANNA_ARGON2_M_KIB", "8"), ("STANNA_ARGON2_P", "2")],
            &["STANNA_ARGON2_M_KIB (8) must be at least 8 × STANNA_ARGON2_P (2 lanes)"],
        ),
        (
            &["serve"],
            &[("STANNA_LOG_FORMAT", "xml")],
            &[
                "STANNA_LOG_FORMAT (--log-format)=xml is refused",
                "one of text, json",
            ],
        ),
        (
            &["serve"],
            &[("STANNA_ACCESS_LOG", "maybe")],
            &["STANNA_ACCESS_LOG (--access-log)", "one of on, off"],
        ),
        (
            &["serve"],
            &[("STANNA_QUOTA_FAIL_MODE", "sometimes")],
            &[
                "STANNA_QUOTA_FAIL_MODE (--quota-fail-mode)",
                "one of open, closed",
            ],
        ),
        // Addresses and URLs: checked for form, scheme and resolution.
        (
            &["serve"],
            &[("STANNA_GATEWAY_ADDR", "nowhere.invalid:8080")],
            &["STANNA_GATEWAY_ADDR (--gateway-addr)", "does not resolve"],
        ),
        (
            &["serve"],
            &[("STANNA_METRICS_ADDR", "9090")],
            &[
                "STANNA_METRICS_ADDR (--metrics-addr)",
                "host:port such as 127.0.0.1:8080",
            ],
        ),
        (
            &["serve", "gateway"],
            &[("STANNA_AUTH_CHECK_URL", "127.0.0.1:50052")],
            &[
                "STANNA_AUTH_CHECK_URL (--auth-check-url)",
                "write http://127.0.0.1:50052",
            ],
        ),
        (
            &["serve", "gateway"],
            &[("STANNA_REGISTRY_URL", "ftp://127.0.0.1:50051")],
            &[
                "STANNA_REGISTRY_URL (--registry-url)",
                "ftp:// is not supported",
            ],
        ),
        // TLS files: missing, half a pair, not PEM, a plaintext URL where TLS is configured.
        (
            &["serve"],
            &[
                ("STANNA_GRPC_TLS_CERT_FILE", "/nonexistent/cert.pem"),
                ("STANNA_GRPC_TLS_KEY_FILE", "/nonexistent/key.pem"),
            ],
            &["STANNA_GRPC_TLS_CERT_FILE: cannot read /nonexistent/cert.pem"],
        ),
        (
            &["serve"],
            &[("STANNA_GRPC_CLIENT_CERT_FILE", "/etc/hostname")],
            &["STANNA_GRPC_CLIENT_CERT_FILE is set without STANNA_GRPC_CLIENT_KEY_FILE"],
        ),
        (
            &["serve"],
            &[
                ("STANNA_TLS_CERT_FILE", "/etc/hostname"),
                ("STANNA_TLS_KEY_FILE", "/etc/hostname"),
            ],
            &["STANNA_TLS_CERT_FILE: /etc/hostname holds no"],
        ),
        (
            &["serve"],
            &[("STANNA_TLS_CERT_FILE", "/etc/hostname")],
            &["--tls-key-file"],
        ),
        (
            &["serve", "auth-check"],
            &[
                ("STANNA_QUOTA_URL", "http://127.0.0.1:50053"),
                ("STANNA_GRPC_CA_FILE", "/etc/ssl/certs/ca-certificates.crt"),
            ],
            &["STANNA_QUOTA_URL (http://127.0.0.1:50053) is http:// but STANNA_GRPC_CA_FILE"],
        ),
        (
            &["serve"],
            &[
                ("STANNA_REDIS_URL", "rediss://127.0.0.1:6380"),
                ("STANNA_REDIS_CA_FILE", "/etc/hostname"),
            ],
            &["STANNA_REDIS_CA_FILE", "holds no PEM certificate"],
        ),
        (
            &["serve"],
            &[("STANNA_DATABASE_URL", "mysql://root@db/keys")],
            &[
                "STANNA_DATABASE_URL (--database-url) is refused",
                "sqlite://stanna.db or postgres://",
            ],
        ),
        // A read replica: SQLite has none, and a SQLite primary cannot have one.
        (
            &["serve", "auth-check"],
            &[("STANNA_DATABASE_READ_URL", "sqlite://replica.db")],
            &[
                "STANNA_DATABASE_READ_URL (--database-read-url) is refused",
                "SQLite has no replicas",
            ],
        ),
        (
            &["serve"],
            &[(
                "STANNA_DATABASE_READ_URL",
                "postgres://postgres@127.0.0.1:5432/test",
            )],
            &["STANNA_DATABASE_READ_URL is set but STANNA_DATABASE_URL is SQLite"],
        ),
        // Telemetry: an unknown sampler or an endpoint without a scheme.
        (
            &["serve"],
            &[("OTEL_TRACES_SAMPLER", "sometimes")],
            &[
                "OTEL_TRACES_SAMPLER \"sometimes\" is not a sampler",
                "parentbased_traceidratio",
            ],
        ),
        (
            &["serve"],
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4317")],
            &["OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// or https:// URL"],
        ),
        // A gateway alone needs the services it calls.
        (
            &["serve", "gateway"],
            &[("STANNA_ADMIN_TOKEN", "")],
            &[
                "STANNA_ADMIN_TOKEN (--admin-token) is refused",
                "at least 16 characters",
            ],
        ),
        (
            &["serve", "gateway"],
            &[
                ("STANNA_AUTH_CHECK_URL", "http://127.0.0.1:50052"),
                ("STANNA_REGISTRY_URL", "http://127.0.0.1:50051"),
            ],
            &[
                "STANNA_GATEWAY_TOKEN (or STANNA_GATEWAY_TOKEN_FILE) is required when the gateway runs alone",
            ],
        ),
    ];
    for (args, env, says) in cases {
        let mut env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        if !env.iter().any(|(k, _)| *k == "STANNA_DATABASE_URL") {
            env.push(("STANNA_DATABASE_URL", db.clone()));
        }
        // Free ports, so a refusal that comes after binding is not taken over by a busy port.
        for addr in [
            "STANNA_GATEWAY_ADDR",
            "STANNA_REGISTRY_ADDR",
            "STANNA_AUTH_CHECK_ADDR",
            "STANNA_QUOTA_ADDR",
        ] {
            if !env.iter().any(|(k, _)| *k == addr) {
                env.push((addr, format!("127.0.0.1:{}", free_port())));
            }
        }
        let (code, printed) = run_to_exit(dir.path(), args, &env);
        assert_eq!(
            code, 2,
            "{args:?} {env:?} exits 2 (a refused setting):\n{printed}"
        );
        for phrase in *says {
            assert!(
                printed.contains(phrase),
                "{args:?} {env:?} says {phrase:?}:\n{printed}"
            );
        }
        assert!(
            !printed.contains("panicked") && !printed.contains("RUST_BACKTRACE"),
            "a refusal is a sentence, not a panic:\n{printed}"
        );
        assert!(
            !printed.contains("listening on"),
            "nothing started before the refusal:\n{printed}"
        );
    }
}

/// Secrets are never echoed: not by a refusal, not by `--help`, not in the start-up log; and a
/// refused start prints no generated admin token (it would be a token nobody can use).
#[test]
fn no_secret_is_echoed_by_a_refusal_help_or_the_start_up_log() {
    let dir = TempDir::new();
    let db = format!("sqlite://{}", dir.path().join("secrets.db").display());
    let refusals: &[(&str, String, &str)] = &[
        (
            "STANNA_DATABASE_URL",
            "mysql://root:hunter2-db-password@db/keys".into(),
            "hunter2-db-password",
        ),
        (
            "STANNA_ADMIN_TOKEN",
            "short-Secret1".into(),
            "short-Secret1",
        ),
        (
            "STANNA_ADMIN_TOKEN",
            "has a space in it 0123456789".into(),
            "has a space in it",
        ),
        (
            "STANNA_REDIS_URL",
            "mongodb://:redis-pass-1234@cache:6379".into(),
            "redis-pass-1234",
        ),
        (
            "STANNA_DATABASE_READ_URL",
            "mysql://root:replica-pass-1234@replica/keys".into(),
            "replica-pass-1234",
        ),
    ];
    for (var, value, secret) in refusals {
        let mut env = vec![(*var, value.clone())];
        if *var != "STANNA_DATABASE_URL" {
            env.push(("STANNA_DATABASE_URL", db.clone()));
        }
        let (code, printed) = run_to_exit(dir.path(), &["serve"], &env);
        assert_eq!(code, 2, "{var} refused:\n{printed}");
        assert!(printed.contains(var), "names {var}:\n{printed}");
        assert!(
            printed.contains("its value is not shown"),
            "says why the value is missing:\n{printed}"
        );
        assert!(
            !printed.contains(secret),
            "{var}'s value is not echoed:\n{printed}"
        );
    }

    // A refused start with no admin token set prints no generated one.
    let (code, printed) = run_to_exit(
        dir.path(),
        &["serve"],
        &[
            ("STANNA_DATABASE_URL", db.clone()),
            // Refused by the cross-check after parsing, where a token used to be generated.
            ("STANNA_ARGON2_M_KIB", "8".into()),
            ("STANNA_ARGON2_P", "2".into()),
        ],
    );
    assert_eq!(code, 2, "{printed}");
    assert!(
        !printed.to_lowercase().contains("generated"),
        "a refused start generates no admin token:\n{printed}"
    );

    // Redis unreachable under fail-closed: refused, naming the variable, the password masked.
    let (code, printed) = run_to_exit(
        dir.path(),
        &["serve"],
        &[
            ("STANNA_DATABASE_URL", db.clone()),
            (
                "STANNA_REDIS_URL",
                format!("redis://:redis-pass-5678@127.0.0.1:{}", free_port()),
            ),
            ("STANNA_QUOTA_FAIL_MODE", "closed".into()),
        ],
    );
    assert_eq!(code, 2, "{printed}");
    assert!(
        printed.contains("STANNA_REDIS_URL (redis://:***@127.0.0.1:"),
        "{printed}"
    );
    assert!(printed.contains("cannot be reached"), "{printed}");
    assert!(
        !printed.to_lowercase().contains("generated"),
        "a start refused for Redis generates no admin token:\n{printed}"
    );
    assert!(
        !printed.contains("redis-pass-5678"),
        "the Redis password is not echoed:\n{printed}"
    );

    // `--help` with every secret set in the environment shows none of them.
    let help = Command::new(stanna_binary())
        .args(["serve", "--help"])
        .env(
            "STANNA_DATABASE_URL",
            "postgres://app:pg-secret-9876@db:5432/keys",
        )
        .env("STANNA_REDIS_URL", "redis://:redis-secret-9876@cache:6379")
        .env(
            "STANNA_DATABASE_READ_URL",
            "postgres://app:replica-secret-9876@replica:5432/keys",
        )
        .env("STANNA_ADMIN_TOKEN", "admin-secret-9876-0123456789")
        .output()
        .expect("stanna serve --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--database-url") && help.contains("STANNA_REDIS_URL"),
        "{help}"
    );
    for secret in [
        "pg-secret-9876",
        "redis-secret-9876",
        "admin-secret-9876",
        "replica-secret-9876",
    ] {
        assert!(
            !help.contains(secret),
            "--help shows no secret ({secret}):\n{help}"
        );
    }
}

/// A PostgreSQL URL with a password (the shared server trusts it, so the password is ignored
/// there): the process runs and nothing it logs — start-up, health, requests — holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_password_never_reaches_the_log() {
    let Some(database) =
        stanna_testkit::fresh_postgres_database("a_database_password_never_reaches_the_log").await
    else {
        return;
    };
    let with_password = database
        .url()
        .replacen("://", "://postgres:pg-password-4321@", 1)
        .replacen("postgres@", "", 1);
    let dir = TempDir::new();
    let (ports, env) = all_in_one(with_password, &[]);
    let mut stanna = Stanna::start(dir.path(), &["serve"], &env, "gateway listening on");
    let secret = create_key(ports.registry).await;
    let (status, _, body) = get(
        &format!("http://127.0.0.1:{}/v1/me", ports.gateway),
        &secret,
    )
    .await;
    assert_eq!(status, 200, "the key verified: {body:?}");
    assert!(stanna.terminate(), "exits cleanly");
    let output = stanna.output();
    assert!(output.contains("store opened"), "{output}");
    assert!(
        !output.contains("pg-password-4321"),
        "the password is not logged:\n{output}"
    );
}

/// A fresh machine's shape: `localhost` addresses, a SQLite URL without `?mode=rwc` (the file
/// is created), and `stanna healthcheck` — liveness, readiness, gRPC — passing against it; at
/// the wrong kind of port it says which kind it found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localhost_addresses_and_a_plain_sqlite_url_start_and_healthcheck_names_the_wrong_port() {
    let dir = TempDir::new();
    let file = dir.path().join("fresh.db");
    let (registry, gateway) = (free_port(), free_port());
    let _stanna = Stanna::start(
        dir.path(),
        &["serve"],
        &[
            ("STANNA_REGISTRY_ADDR", format!("localhost:{registry}")),
            (
                "STANNA_AUTH_CHECK_ADDR",
                format!("localhost:{}", free_port()),
            ),
            ("STANNA_QUOTA_ADDR", format!("localhost:{}", free_port())),
            ("STANNA_GATEWAY_ADDR", format!("localhost:{gateway}")),
            (
                "STANNA_DATABASE_URL",
                format!("sqlite://{}", file.display()),
            ),
            ("STANNA_ADMIN_TOKEN", TOKEN.to_owned()),
            ("STANNA_GATEWAY_TOKEN", stanna_e2e::GATEWAY_TOKEN.to_owned()),
            (
                "STANNA_SESSION_SECRET",
                stanna_e2e::SESSION_SECRET.to_owned(),
            ),
        ],
        "gateway listening on",
    );
    assert!(file.is_file(), "the SQLite file was created");
    let http = format!("http://localhost:{gateway}");
    let (passed, printed) = healthcheck(&[&http], &[]);
    assert!(passed, "{printed}");
    let printed = healthcheck_becomes(&["--ready", &http], true, "readiness").await;
    assert!(printed.contains("/readyz: 200"), "{printed}");
    let grpc = format!("localhost:{registry}");
    let (passed, printed) = healthcheck(&[&grpc], &[]);
    assert!(passed && printed.contains("SERVING"), "{printed}");

    // The gateway's HTTP port asked for gRPC health, a gRPC port asked over HTTP.
    let (passed, printed) = healthcheck(&[&format!("localhost:{gateway}")], &[]);
    assert!(
        !passed && printed.contains("is it the gateway's HTTP port?"),
        "{printed}"
    );
    let (passed, printed) = healthcheck(&[&format!("http://localhost:{registry}")], &[]);
    assert!(
        !passed && printed.contains("is it a gRPC port?"),
        "{printed}"
    );
    let (passed, printed) = healthcheck(&[&format!("127.0.0.1:{}", free_port())], &[]);
    assert!(
        !passed && printed.contains("no gRPC service answers there"),
        "{printed}"
    );
}

/// `stanna healthcheck https://…` speaks TLS, trusting `SSL_CERT_FILE` when it is set (instead of the
/// system's roots): a Python HTTPS server with a certificate made here answers `/readyz`.
#[test]
fn healthcheck_speaks_https_trusting_ssl_cert_file() {
    const TEST: &str = "healthcheck_speaks_https_trusting_ssl_cert_file";
    let dir = TempDir::new();
    // A CA of the test's own and a certificate for localhost it signs (webpki refuses a
    // self-signed CA certificate used as the server's own).
    let openssl = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .is_ok_and(|o| o.status.success())
    };
    std::fs::write(
        dir.path().join("leaf.ext"),
        "subjectAltName=DNS:localhost\n",
    )
    .unwrap();
    let made = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=Stanna test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]) && openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
    ]) && openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "leaf.ext",
        "-out",
        "cert.pem",
    ]);
    if !made {
        stanna_testkit::skip(
            TEST,
            "openssl could not make a certificate (is it installed?)",
        );
        return;
    }
    std::fs::write(dir.path().join("readyz"), "{\"status\":\"ready\"}").unwrap();
    let port = free_port();
    let server = format!(
        "import http.server, ssl\n\
         s = http.server.HTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler)\n\
         c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain('cert.pem', 'key.pem')\n\
         s.socket = c.wrap_socket(s.socket, server_side=True)\n\
         print('serving', flush=True)\n\
         s.serve_forever()\n"
    );
    let Ok(mut python) = Command::new("python3")
        .args(["-c", &server])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
    else {
        stanna_testkit::skip(TEST, "python3 is not installed");
        return;
    };
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(python.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "serving");
    let url = format!("https://localhost:{port}");
    let cert = dir.path().join("ca.pem");
    let cert = cert.to_str().unwrap();
    let (passed, printed) = healthcheck(&["--ready", &url], &[("SSL_CERT_FILE", cert)]);
    let (untrusted, refused) =
        healthcheck(&["--ready", &url], &[("SSL_CERT_FILE", "/nonexistent")]);
    let _ = python.kill();
    let _ = python.wait();
    assert!(passed && printed.contains("/readyz: 200"), "{printed}");
    assert!(
        !untrusted,
        "a certificate nobody trusts is refused: {refused}"
    );
    assert!(
        refused.contains("certificate"),
        "and the refusal says why: {refused}"
    );
}

/// Readiness follows the store: with the database cut, gRPC health says NOT_SERVING and
/// `/readyz` 503 with the reason; back when the database is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_a_cut_store_and_comes_back() {
    let Some(database) =
        stanna_testkit::fresh_postgres_database("readiness_follows_a_cut_store_and_comes_back")
            .await
    else {
        return;
    };
    let proxy =
        stanna_testkit::TcpProxy::start(stanna_testkit::socket_addr_of(database.url())).await;
    let through_proxy = stanna_testkit::with_host(database.url(), proxy.addr());
    let dir = TempDir::new();
    let (ports, env) = all_in_one(through_proxy, &[]);
    let _stanna = Stanna::start(dir.path(), &["serve"], &env, "gateway listening on");
    let ready = format!("http://127.0.0.1:{}", ports.gateway);
    let registry = format!("127.0.0.1:{}", ports.registry);
    healthcheck_becomes(&["--ready", &ready], true, "ready at start").await;

    proxy.cut().await;
    let printed = healthcheck_becomes(&["--ready", &ready], false, "not ready, store cut").await;
    assert!(
        printed.contains("503") && printed.contains("store"),
        "{printed}"
    );
    let printed = healthcheck_becomes(&[&registry], false, "registry NOT_SERVING").await;
    assert!(printed.contains("NotServing"), "{printed}");
    let (alive, printed) = healthcheck(&[&ready], &[]);
    assert!(
        alive,
        "liveness stays up while the store is away: {printed}"
    );

    proxy.restore();
    healthcheck_becomes(&["--ready", &ready], true, "ready again").await;
    healthcheck_becomes(&[&registry], true, "registry SERVING again").await;
}

/// Split mode: the gateway is ready only while the auth-check it calls answers SERVING; stopped,
/// `/readyz` names it, and requests meanwhile (503 each) are logged a few times, not once each;
/// started again on the same port, ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_a_stopped_auth_check_and_comes_back() {
    let dir = TempDir::new();
    let db = dir.sqlite_url();
    let [registry, auth, gateway] = [free_port(), free_port(), free_port()];
    let _registry = Stanna::start(
        dir.path(),
        &["serve", "registry"],
        &[
            ("STANNA_REGISTRY_ADDR", format!("127.0.0.1:{registry}")),
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
    let auth_env = [
        ("STANNA_AUTH_CHECK_ADDR", format!("127.0.0.1:{auth}")),
        ("STANNA_DATABASE_URL", db.clone()),
    ];
    let start_auth = || {
        Stanna::start(
            dir.path(),
            &["serve", "auth-check"],
            &auth_env,
            "auth-check listening on",
        )
    };
    let mut auth_check = start_auth();
    let gateway_process = Stanna::start(
        dir.path(),
        &["serve", "gateway"],
        &[
            ("STANNA_GATEWAY_ADDR", format!("127.0.0.1:{gateway}")),
            ("STANNA_AUTH_CHECK_URL", format!("http://127.0.0.1:{auth}")),
            (
                "STANNA_REGISTRY_URL",
                format!("http://127.0.0.1:{registry}"),
            ),
            ("STANNA_ADMIN_TOKEN", TOKEN.to_owned()),
            ("STANNA_GATEWAY_TOKEN", stanna_e2e::GATEWAY_TOKEN.to_owned()),
            (
                "STANNA_SESSION_SECRET",
                stanna_e2e::SESSION_SECRET.to_owned(),
            ),
        ],
        "gateway listening on",
    );
    let ready = format!("http://127.0.0.1:{gateway}");
    healthcheck_becomes(&["--ready", &ready], true, "ready at start").await;
    let secret = create_key(registry).await;
    assert!(auth_check.terminate(), "auth-check exits cleanly");
    let printed = healthcheck_becomes(&["--ready", &ready], false, "not ready").await;
    assert!(
        printed.contains("auth-check"),
        "the reason names auth-check: {printed}"
    );

    // 300 requests while it is away: each a 503, and the log says so a few times, not 300.
    let warnings = || {
        gateway_process
            .output()
            .lines()
            .filter(|l| {
                (l.contains(" WARN ") || l.contains(" ERROR ")) && !l.contains("request method=")
            })
            .count()
    };
    let before = warnings();
    for _ in 0..300 {
        let (status, _, _) = get(&format!("{ready}/v1/me"), &secret).await;
        assert_eq!(status, 503);
    }
    // Each request's warnings come before its access-log line: once the 300th line is out,
    // every warning they caused is too.
    let answered = || {
        gateway_process
            .output()
            .lines()
            .filter(|l| l.contains("path=\"/v1/me\" status=503"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while answered() < 300 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(answered(), 300, "one access-log line per request");
    let logged = warnings() - before;
    assert!(
        logged <= 3,
        "300 identical failures logged {logged} lines:\n{}",
        gateway_process.output()
    );
    let _auth_check = start_auth();
    healthcheck_becomes(&["--ready", &ready], true, "ready again").await;
}

/// The quota service follows its Redis (one of the test's own, stopped and started again): gRPC
/// health NOT_SERVING while it is down, SERVING when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_health_follows_a_stopped_redis_and_comes_back() {
    let Some(mut redis) = stanna_testkit::OwnRedis::start("quota_health_follows_a_stopped_redis")
    else {
        return;
    };
    let dir = TempDir::new();
    let port = free_port();
    let _quota = Stanna::start(
        dir.path(),
        &["serve", "quota"],
        &[
            ("STANNA_QUOTA_ADDR", format!("127.0.0.1:{port}")),
            ("STANNA_REDIS_URL", redis.url()),
        ],
        "quota listening on",
    );
    let quota = format!("127.0.0.1:{port}");
    healthcheck_becomes(&[&quota], true, "SERVING at start").await;
    redis.stop();
    let printed = healthcheck_becomes(&[&quota], false, "NOT_SERVING, Redis stopped").await;
    assert!(printed.contains("NotServing"), "{printed}");
    redis.restart();
    healthcheck_becomes(&[&quota], true, "SERVING again").await;
}

/// The quota service on a Redis Cluster of the test's own: SERVING while the cluster answers —
/// also while one master is dead and its replica takes over (the keys of the other masters are
/// still decided, and every quota process would see the same outage, so taking them all out of
/// rotation would help nobody) — and NOT_SERVING once no node answers, without the redis crate's
/// reconnect chatter in the log (only the health monitor says it, rate-limited).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_health_follows_a_redis_cluster_without_flooding_the_log() {
    let Some(mut cluster) = stanna_testkit::OwnRedisCluster::start(
        "quota_health_follows_a_redis_cluster_without_flooding_the_log",
    ) else {
        return;
    };
    let dir = TempDir::new();
    let port = free_port();
    let quota_process = Stanna::start(
        dir.path(),
        &["serve", "quota"],
        &[
            ("STANNA_QUOTA_ADDR", format!("127.0.0.1:{port}")),
            ("STANNA_REDIS_URL", cluster.seeds()),
        ],
        "quota listening on",
    );
    let quota = format!("127.0.0.1:{port}");
    healthcheck_becomes(&[&quota], true, "SERVING at start").await;
    let master = cluster.masters()[0];
    cluster.kill(master);
    // SERVING at every look until the dead master is out of the map and its replica promoted.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut looks = 0;
    loop {
        let masters = cluster.masters();
        if masters.len() == 3 && !masters.contains(&master) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failover: {masters:?}"
        );
        let (serving, printed) = healthcheck(&[&quota], &[]);
        assert!(serving, "not ready while one master fails over: {printed}");
        looks += 1;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(looks > 0, "the failover was over before the first look");
    healthcheck_becomes(&[&quota], true, "SERVING after the failover").await;
    // Now no node at all: NOT_SERVING, and for five seconds the log gains a few lines, not one
    // per reconnect attempt.
    for p in cluster.ports() {
        cluster.kill(p);
    }
    let printed = healthcheck_becomes(&[&quota], false, "NOT_SERVING, every node gone").await;
    assert!(printed.contains("NotServing"), "{printed}");
    let before = quota_process.output().lines().count();
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let output = quota_process.output();
    let added: Vec<&str> = output.lines().skip(before).collect();
    assert!(
        added.len() <= 6,
        "{} lines in 5 s with the cluster gone:\n{}",
        added.len(),
        added.join("\n")
    );
}

/// A gateway started alone with a gateway token its registry refuses would answer every REST
/// call 503: it does not start, and says which setting to fix, without either token.
#[test]
fn a_gateway_whose_token_the_registry_refuses_does_not_start() {
    let dir = TempDir::new();
    let registry = free_port();
    let _registry = Stanna::start(
        dir.path(),
        &["serve", "registry"],
        &[
            ("STANNA_REGISTRY_ADDR", format!("127.0.0.1:{registry}")),
            ("STANNA_DATABASE_URL", dir.sqlite_url()),
            ("STANNA_ADMIN_TOKEN", TOKEN.to_owned()),
            ("STANNA_GATEWAY_TOKEN", stanna_e2e::GATEWAY_TOKEN.to_owned()),
            (
                "STANNA_SESSION_SECRET",
                stanna_e2e::SESSION_SECRET.to_owned(),
            ),
        ],
        "key-registry listening on",
    );
    let other = "another-gateway-token-9876543210";
    let (code, printed) = run_to_exit(
        dir.path(),
        &["serve", "gateway"],
        &[
            ("STANNA_GATEWAY_ADDR", format!("127.0.0.1:{}", free_port())),
            (
                "STANNA_AUTH_CHECK_URL",
                format!("http://127.0.0.1:{}", free_port()),
            ),
            (
                "STANNA_REGISTRY_URL",
                format!("http://127.0.0.1:{registry}"),
            ),
            ("STANNA_GATEWAY_TOKEN", other.to_owned()),
            (
                "STANNA_SESSION_SECRET",
                stanna_e2e::SESSION_SECRET.to_owned(),
            ),
        ],
    );
    assert_eq!(code, 2, "{printed}");
    assert!(
        printed.contains("STANNA_REGISTRY_URL") && printed.contains("STANNA_GATEWAY_TOKEN"),
        "{printed}"
    );
    assert!(
        !printed.contains(other)
            && !printed.contains(TOKEN)
            && !printed.contains(stanna_e2e::GATEWAY_TOKEN),
        "{printed}"
    );
}

/// One access-log line per request: a 401's `X-Request-Id` finds its line, in text and in JSON
/// (where the line is one object with the fields named); `STANNA_ACCESS_LOG=off` writes none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401s_request_id_finds_its_access_log_line() {
    for (format, access_log) in [("text", "on"), ("json", "on"), ("text", "off")] {
        let dir = TempDir::new();
        let (ports, env) = all_in_one(
            dir.sqlite_url(),
            &[
                ("STANNA_LOG_FORMAT", format.to_owned()),
                ("STANNA_ACCESS_LOG", access_log.to_owned()),
            ],
        );
        let mut stanna = Stanna::start(dir.path(), &["serve"], &env, "gateway listening on");
        let url = format!("http://127.0.0.1:{}/v1/things?secret=q", ports.gateway);
        let (status, headers, _) = get(&url, "sk-not-a-real-key").await;
        assert_eq!(status, 401);
        let id = headers["x-request-id"].to_str().unwrap().to_owned();
        let found = || {
            stanna
                .output()
                .lines()
                .find(|l| l.contains(&id))
                .map(str::to_owned)
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while found().is_none() && access_log == "on" && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let line = found();
        if access_log == "off" {
            // Everything it will ever print: stopped first, so a late line cannot be missed.
            assert!(stanna.terminate(), "exits cleanly");
            let output = stanna.output();
            assert!(
                !output.contains(&id) && !output.contains("request method="),
                "STANNA_ACCESS_LOG=off writes no line:\n{output}"
            );
            continue;
        }
        let line = line.unwrap_or_else(|| panic!("no line holds {id}:\n{}", stanna.output()));
        assert!(
            !line.contains("secret=q"),
            "the query is never logged: {line}"
        );
        if format == "json" {
            let record: serde_json::Value = serde_json::from_str(&line).expect("one JSON object");
            let fields = &record["fields"];
            assert_eq!(fields["message"], "request", "{line}");
            assert_eq!(fields["status"], 401, "{line}");
            assert_eq!(fields["method"], "GET", "{line}");
            assert_eq!(fields["path"], "/v1/things", "{line}");
            assert!(fields["latency_ms"].is_number(), "{line}");
        } else {
            for part in [
                "method=GET",
                "path=\"/v1/things\"",
                "status=401",
                "latency_ms=",
            ] {
                assert!(line.contains(part), "{part} in {line}");
            }
        }
    }
}

/// The drain is bounded: with a request held by a slow upstream, SIGTERM exits within about
/// `STANNA_SHUTDOWN_GRACE` (1 s here), not the upstream's 30 s timeout; with a long grace, a
/// second SIGTERM exits at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_is_bounded_and_a_second_signal_exits_at_once() {
    // An upstream that accepts each connection and never answers.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let arrived = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = arrived.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = upstream.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(socket);
        }
    });
    for (grace, signals, cap) in [
        ("1s", 1, Duration::from_secs(6)),
        ("60s", 2, Duration::from_secs(3)),
    ] {
        let dir = TempDir::new();
        let (ports, env) = all_in_one(
            dir.sqlite_url(),
            &[
                ("STANNA_UPSTREAM_URL", format!("http://{upstream_addr}")),
                ("STANNA_SHUTDOWN_GRACE", grace.to_owned()),
            ],
        );
        let mut stanna = Stanna::start(dir.path(), &["serve"], &env, "gateway listening on");
        let secret = create_key(ports.registry).await;
        let url = format!("http://127.0.0.1:{}/slow", ports.gateway);
        let before = arrived.load(std::sync::atomic::Ordering::SeqCst);
        let in_flight = tokio::spawn(async move { get(&url, &secret).await });
        stanna_testkit::eventually(
            Duration::from_secs(10),
            "the request reaches the upstream",
            || {
                let arrived = arrived.clone();
                async move { arrived.load(std::sync::atomic::Ordering::SeqCst) > before }
            },
        )
        .await;
        let started = Instant::now();
        stanna.signal("TERM");
        if signals == 2 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(
                stanna.wait_for_exit(Duration::ZERO).is_none(),
                "with {grace} of grace the first signal drains: still running\n{}",
                stanna.output()
            );
            stanna.signal("TERM");
        }
        let status = stanna.wait_for_exit(cap);
        assert!(
            status.is_some(),
            "grace {grace}, {signals} signal(s): still running after {cap:?}\n{}",
            stanna.output()
        );
        println!(
            "grace {grace}, {signals} signal(s): exited after {:?}",
            started.elapsed()
        );
        in_flight.abort();
        let output = stanna.output();
        if signals == 1 {
            assert!(
                output.contains("still in flight after STANNA_SHUTDOWN_GRACE"),
                "{output}"
            );
        }
    }
}
