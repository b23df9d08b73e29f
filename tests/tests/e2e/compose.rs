//! `docker-compose.yml` stays valid: Debian's `docker-compose config` accepts it (no Docker engine
//! is needed for that), it names every service, and refuses to run without an admin token.
//! The topology itself runs as processes in `gateway_split.rs`.

use std::path::Path;
use std::process::Command;

fn compose(args: &[&str], token: Option<&str>) -> Option<std::process::Output> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut command = Command::new("docker-compose");
    command
        .args(["-f", "docker-compose.yml"])
        .args(args)
        .current_dir(root)
        .env_remove("STANNA_ADMIN_TOKEN")
        .env_remove("STANNA_SESSION_SECRET");
    if let Some(token) = token {
        command
            .env("STANNA_ADMIN_TOKEN", token)
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
