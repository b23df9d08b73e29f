//! `docker-compose.yml` stays valid: Debian's `docker-compose config` accepts it (no Docker engine
//! is needed for that), it names every service, and refuses to run without an admin token.
//! The topology itself runs as processes in `gateway_split.rs`.

use std::path::Path;
use std::process::Command;

fn compose(args: &[&str], token: Option<&str>) -> Option<std::process::Output> {
    compose_files(&["docker-compose.yml"], args, token)
}

fn compose_files(
    files: &[&str],
    args: &[&str],
    token: Option<&str>,
) -> Option<std::process::Output> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut command = Command::new("docker-compose");
    for file in files {
        command.args(["-f", file]);
    }
    command
        .args(args)
        .current_dir(root)
        .env_remove("STANNA_ADMIN_TOKEN")
        .env_remove("STANNA_GATEWAY_TOKEN")
        .env_remove("STANNA_SESSION_SECRET");
    if let Some(token) = token {
        command
            .env("STANNA_ADMIN_TOKEN", token)
            .env("STANNA_GATEWAY_TOKEN", stanna_e2e::GATEWAY_TOKEN)
            .env("STANNA_SESSION_SECRET", stanna_e2e::SESSION_SECRET);
    }
    match command.output() {
        Ok(output) => Some(output),
        Err(_) => {
            stanna_testkit::skip(
                "docker_compose_config_accepts_the_file",
                "docker-compose is not installed (apt-get install docker-compose)",
            );
            None
        }
    }
}

#[test]
fn docker_compose_config_accepts_the_file() {
    let Some(valid) = compose(&["config", "-q"], Some("compose-test-token-0123456789")) else {
        return;
    };
    assert!(
        valid.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&valid.stderr)
    );
    let services = compose(
        &["config", "--services"],
        Some("compose-test-token-0123456789"),
    )
    .unwrap();
    let mut names: Vec<String> = String::from_utf8_lossy(&services.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "auth-check",
            "gateway",
            "jaeger",
            "key-registry",
            "postgres",
            "quota",
            "redis"
        ]
    );
    let without_token = compose(&["config", "-q"], None).unwrap();
    assert!(
        !without_token.status.success()
            && String::from_utf8_lossy(&without_token.stderr).contains("STANNA_ADMIN_TOKEN"),
        "compose refuses to start without STANNA_ADMIN_TOKEN"
    );
}

/// The TLS override merges onto the file: every service gets its certificate and the CA, every
/// URL between them is https://, the gateway serves HTTPS and checks itself over it.
#[test]
fn the_tls_override_turns_on_mtls_for_every_service() {
    let Some(merged) = compose_files(
        &["docker-compose.yml", "docker-compose.tls.yml"],
        &["config"],
        Some("compose-test-token-0123456789"),
    ) else {
        return;
    };
    assert!(
        merged.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&merged.stderr)
    );
    let text = String::from_utf8_lossy(&merged.stdout);
    for service in ["key-registry", "quota", "auth-check", "gateway"] {
        // The service's block: its line, then every line indented deeper than two spaces.
        let block: String = text
            .lines()
            .skip_while(|line| *line != format!("  {service}:"))
            .skip(1)
            .take_while(|line| line.starts_with("   ") || line.is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(!block.is_empty(), "{service} in the merged file:\n{text}");
        for needed in [
            "STANNA_GRPC_TLS_CERT_FILE: /certs/services.pem",
            "STANNA_GRPC_CLIENT_CA_FILE: /certs/ca.pem",
            "STANNA_GRPC_CLIENT_CERT_FILE: /certs/services.pem",
        ] {
            assert!(block.contains(needed), "{service} has {needed}:\n{block}");
        }
        assert!(
            !block.contains("URL: http://"),
            "{service} calls nothing in plaintext:\n{block}"
        );
    }
    for needed in [
        "STANNA_AUTH_CHECK_URL: https://auth-check:50052",
        "STANNA_REGISTRY_URL: https://key-registry:50051",
        "STANNA_QUOTA_URL: https://quota:50053",
        "STANNA_TLS_CERT_FILE: /certs/services.pem",
        "https://127.0.0.1:8080",
    ] {
        assert!(text.contains(needed), "the merged file has {needed}");
    }
}
