//! An admin's session, as the README shows it: the real `stanna serve` binary driven by the real
//! grpcurl. The grpcurl commands are read from README.md and run as written (only the port is
//! changed), so the README cannot drift from what the system does.

use std::process::Command;

use stanna_e2e::{Stanna, free_port, grpcurl};
use stanna_keys::PresentedKey;
use stanna_testkit::TempDir;

const TOKEN: &str = "e2e-admin-token-0123456789";

/// The grpcurl commands of the README's "Managing keys with grpcurl" section, in order.
fn readme_grpcurl_commands() -> Vec<String> {
    stanna_e2e::readme_commands("## Managing keys with grpcurl", "grpcurl")
}

/// Runs `command` with sh, as a user pasting it would, with the admin token and KEY_ID exported.
fn run_shell(command: &str, key_id: &str, secret: &str) -> (bool, String, String) {
    let output = Command::new("sh")
        .args(["-c", command])
        .env("STANNA_ADMIN_TOKEN", TOKEN)
        .env("KEY_ID", key_id)
        .env("SECRET", secret)
        .output()
        .expect("run sh");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn start_serve(dir: &TempDir, port: u16, token: Option<&str>) -> Stanna {
    start_serve_with_auth_check(dir, port, free_port(), token)
}

fn start_serve_with_auth_check(
    dir: &TempDir,
    port: u16,
    auth_port: u16,
    token: Option<&str>,
) -> Stanna {
    let mut env = vec![
        ("STANNA_REGISTRY_ADDR", format!("127.0.0.1:{port}")),
        ("STANNA_DATABASE_URL", dir.sqlite_url()),
        ("STANNA_AUTH_CHECK_ADDR", format!("127.0.0.1:{auth_port}")),
        ("STANNA_QUOTA_ADDR", format!("127.0.0.1:{}", free_port())),
        ("STANNA_GATEWAY_ADDR", format!("127.0.0.1:{}", free_port())),
    ];
    if let Some(token) = token {
        env.push(("STANNA_ADMIN_TOKEN", token.to_owned()));
    }
    Stanna::start(dir.path(), &["serve"], &env, "key-registry listening on")
}

#[test]
fn the_readme_admin_session_works_against_stanna_serve() {
    if grpcurl("the_readme_admin_session_works_against_stanna_serve").is_none() {
        return;
    }
    let commands = readme_grpcurl_commands();
    let methods = [
        "list",
        "/CreateKey",
        "/ListKeys",
        "/GetKey",
        "/GetKeyUsage",
        "/UpdateKey",
        "/RotateKey",
        "/DeleteKey",
        "Health/Check",
    ];
    for method in methods {
        assert!(
            commands.iter().any(|c| c.contains(method)),
            "the README shows no grpcurl command for {method}"
        );
    }
    let dir = TempDir::new();
    let (port, auth_port) = (free_port(), free_port());
    let _stanna = start_serve_with_auth_check(&dir, port, auth_port, Some(TOKEN));
    let addr = format!("127.0.0.1:{port}");

    let mut key_id = String::new();
    let mut first_secret = String::new();
    let mut secrets = Vec::new();
    for command in commands {
        let command = command
            .replace("127.0.0.1:50051", &addr)
            .replace("127.0.0.1:50052", &format!("127.0.0.1:{auth_port}"));
        let (ok, stdout, stderr) = run_shell(&command, &key_id, &first_secret);
        assert!(
            ok,
            "README command failed: {command}\nstdout: {stdout}\nstderr: {stderr}"
        );
        for secret in &secrets {
            assert!(
                !stdout.contains(secret),
                "a secret reappeared in the output of {command}"
            );
        }
        if command.ends_with(" list") {
            for service in [
                "stanna.keys.v1.KeyRegistry",
                "grpc.health.v1.Health",
                "grpc.reflection.v1alpha.ServerReflection",
            ] {
                assert!(
                    stdout.contains(service),
                    "`grpcurl list` lacks {service}: {stdout}"
                );
            }
        }
        if command.contains("/CreateKey") || command.contains("/RotateKey") {
            let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON response");
            let secret = json["secret"]
                .as_str()
                .expect("a secret in the response")
                .to_owned();
            let parsed = PresentedKey::parse(&secret).expect("the secret is a well-formed key");
            assert_eq!(
                parsed.key_id().as_str(),
                json["key"]["id"].as_str().unwrap()
            );
            if command.contains("/CreateKey") {
                key_id = json["key"]["id"].as_str().unwrap().to_owned();
                first_secret.clone_from(&secret);
                assert_eq!(json["key"]["status"], "KEY_STATUS_ACTIVE");
            }
            secrets.push(secret);
        }
        // grpcurl exits 0 for any answer, a denial included: read what it printed.
        let answer = || -> serde_json::Value {
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{command}: {e}: {stdout}"))
        };
        if command.contains("AuthCheck/Verify") {
            let verdict = answer();
            assert_eq!(verdict["code"], "VERIFY_CODE_VALID", "{verdict}");
            assert_eq!(verdict["keyId"], key_id.as_str(), "{verdict}");
            assert_eq!(verdict["workspaceId"], "ws_demo", "{verdict}");
        }
        if command.trim_end().ends_with("/GetKey") {
            assert_eq!(answer()["id"], key_id.as_str());
        }
        if command.contains("/GetKeyUsage") {
            assert_eq!(answer()["keys"][0]["keyId"], key_id.as_str(), "{stdout}");
        }
        if command.contains("/UpdateKey") && command.contains("\"name\"") {
            assert_eq!(answer()["name"], "Analytics Script", "renamed: {stdout}");
        }
        if command.contains("/RotateKey") {
            // The old key is now listed with an expiry an hour ahead (its grace period).
            let get = format!(
                "grpcurl -plaintext -H \"authorization: Bearer $STANNA_ADMIN_TOKEN\" -d '{{\"workspace_id\": \"ws_demo\", \"key_id\": \"'$KEY_ID'\"}}' {addr} stanna.keys.v1.KeyRegistry/GetKey"
            );
            let (_, old, _) = run_shell(&get, &key_id, "");
            let old: serde_json::Value = serde_json::from_str(&old).unwrap();
            let expires = old["expiresAt"]
                .as_str()
                .expect("the old key has an expiry");
            assert!(expires.ends_with('Z'), "{expires}");
        }
        if command.contains("/UpdateKey") && command.contains("KEY_STATUS_INACTIVE") {
            assert_eq!(
                answer()["status"],
                "KEY_STATUS_INACTIVE",
                "deactivated: {stdout}"
            );
        }
        if command.contains("Health/Check") {
            assert_eq!(answer()["status"], "SERVING");
        }
        if command.contains("/ListKeys") {
            assert!(
                stdout.contains(&key_id) && stdout.contains("sk-") && stdout.contains("..."),
                "listed with a preview: {stdout}"
            );
        }
    }
    // The key the README deleted is gone.
    let get = format!(
        "grpcurl -plaintext -H \"authorization: Bearer $STANNA_ADMIN_TOKEN\" -d '{{\"workspace_id\": \"ws_demo\", \"key_id\": \"'$KEY_ID'\"}}' {addr} stanna.keys.v1.KeyRegistry/GetKey"
    );
    let (ok, stdout, stderr) = run_shell(&get, &key_id, "");
    assert!(
        !ok && stderr.contains("NotFound"),
        "the deleted key is NotFound: {stdout} {stderr}"
    );
}

#[test]
fn serve_without_a_token_prints_one_that_works() {
    let Some(grpcurl) = grpcurl("serve_without_a_token_prints_one_that_works") else {
        return;
    };
    let dir = TempDir::new();
    let port = free_port();
    let mut stanna = start_serve(&dir, port, None);
    let output = stanna.output();
    // The token itself is never printed: the line says where it is kept, as a shell would
    // read it.
    let export = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("export STANNA_ADMIN_TOKEN="))
        .expect("how to read the generated token is printed")
        .to_owned();
    let path = export
        .strip_prefix("$(cat ")
        .and_then(|p| p.strip_suffix(')'))
        .unwrap_or_else(|| panic!("a $(cat FILE) to read: {export}"));
    let token = std::fs::read_to_string(dir.path().join(path))
        .expect("the token file")
        .trim()
        .to_owned();
    assert!(!output.contains(&token), "the token is not in the output");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join(path))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "owner-only");
    let list = |token: &str| {
        Command::new(&grpcurl)
            .args([
                "-plaintext",
                "-H",
                &format!("authorization: Bearer {token}"),
                "-d",
                r#"{"workspace_id":"ws1"}"#,
            ])
            .arg(format!("127.0.0.1:{port}"))
            .arg("stanna.keys.v1.KeyRegistry/ListKeys")
            .output()
            .unwrap()
    };
    assert!(list(&token).status.success(), "the kept token is accepted");
    let refused = list("not-the-token-0123456789");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Unauthenticated"),
        "another token is refused"
    );
    // Everything it printed — after the calls that used the token and after it exited.
    assert!(stanna.terminate(), "a clean stop:\n{}", stanna.output());
    let everything = stanna.output();
    assert_eq!(
        everything.matches(&token).count(),
        0,
        "the token is never printed or logged:\n{everything}"
    );
    // A restart reuses it (no new token, the same file).
    let again = start_serve(&dir, port, None);
    assert!(
        again.output().contains("using the admin token kept in"),
        "{}",
        again.output()
    );
    assert!(list(&token).status.success(), "the kept token still works");
}

#[test]
fn a_registry_or_gateway_run_alone_refuses_to_start_without_a_token() {
    // A registry needs an admin token; a gateway its own credential (never an admin's).
    for (service, extra, needs) in [
        (
            "registry",
            vec![],
            "STANNA_ADMIN_TOKEN (or STANNA_ADMIN_TOKEN_FILE, or STANNA_ADMIN_TOKENS_FILE) is required",
        ),
        (
            "gateway",
            vec![
                ("STANNA_AUTH_CHECK_URL", "http://127.0.0.1:1"),
                ("STANNA_REGISTRY_URL", "http://127.0.0.1:1"),
            ],
            "STANNA_GATEWAY_TOKEN (or STANNA_GATEWAY_TOKEN_FILE) is required",
        ),
    ] {
        let dir = TempDir::new();
        let output = Command::new(stanna_e2e::stanna_binary())
            .args(["serve", service])
            .current_dir(dir.path())
            .env_remove("STANNA_ADMIN_TOKEN")
            .env_remove("STANNA_GATEWAY_TOKEN")
            .env("STANNA_REGISTRY_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("STANNA_GATEWAY_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("STANNA_METRICS_ADDR", "127.0.0.1:0")
            .envs(extra)
            .output()
            .unwrap();
        assert!(
            !output.status.success(),
            "{service} started without a token"
        );
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(needs),
            "{service}: {output:?}"
        );
    }
}

#[test]
fn an_admin_token_under_16_characters_is_refused() {
    let dir = TempDir::new();
    let output = Command::new(stanna_e2e::stanna_binary())
        .args(["serve"])
        .current_dir(dir.path())
        .env("STANNA_ADMIN_TOKEN", "short-token")
        .output()
        .unwrap();
    assert!(!output.status.success(), "a short token was accepted");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("at least 16 characters"), "{stderr}");
}

#[test]
fn sigterm_stops_serve_cleanly() {
    let dir = TempDir::new();
    let mut stanna = start_serve(&dir, free_port(), Some(TOKEN));
    let wal = dir.path().join("stanna.db-wal");
    assert!(wal.exists(), "SQLite runs in WAL mode while serving");
    assert!(
        stanna.terminate(),
        "exit status 0 after SIGTERM:\n{}",
        stanna.output()
    );
    // The database was closed: its write-ahead log is folded back in, nothing is left beside it.
    assert!(!wal.exists(), "stanna.db-wal left after a clean stop");
    assert!(!dir.path().join("stanna.db-shm").exists());
    assert!(dir.path().join("stanna.db").exists());
}

#[test]
fn services_run_alone_close_their_database_on_sigterm() {
    for (service, addr_var, ready) in [
        (
            "registry",
            "STANNA_REGISTRY_ADDR",
            "key-registry listening on",
        ),
        (
            "auth-check",
            "STANNA_AUTH_CHECK_ADDR",
            "auth-check listening on",
        ),
    ] {
        let dir = TempDir::new();
        let mut stanna = Stanna::start(
            dir.path(),
            &["serve", service],
            &[
                (addr_var, format!("127.0.0.1:{}", free_port())),
                ("STANNA_DATABASE_URL", dir.sqlite_url()),
                ("STANNA_ADMIN_TOKEN", TOKEN.to_owned()),
                ("STANNA_GATEWAY_TOKEN", stanna_e2e::GATEWAY_TOKEN.to_owned()),
                (
                    "STANNA_SESSION_SECRET",
                    stanna_e2e::SESSION_SECRET.to_owned(),
                ),
            ],
            ready,
        );
        let wal = dir.path().join("stanna.db-wal");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !wal.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "{service} never opened the database:\n{}",
                stanna.output()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(stanna.terminate(), "{service}:\n{}", stanna.output());
        assert!(
            !wal.exists(),
            "{service} left stanna.db-wal after a clean stop"
        );
    }
}
