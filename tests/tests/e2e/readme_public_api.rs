//! The README's quick start and public-API examples, run as written against the real
//! `stanna serve`: the quick start's grpcurl command creates the key, then every cURL command and
//! the Python example run with it (only the port is changed).

use std::process::Command;

use stanna_e2e::{Stanna, free_port, grpcurl, readme_commands, readme_section};
use stanna_testkit::TempDir;

const TOKEN: &str = "readme-admin-token-0123456789";

fn installed(program: &str, test: &str) -> bool {
    let found = Command::new(program).arg("--version").output().is_ok();
    if !found {
        stanna_testkit::skip(test, &format!("{program} is not installed"));
    }
    found
}

fn sh(command: &str, secret: &str) -> std::process::Output {
    Command::new("sh")
        .args(["-c", command])
        .env("STANNA_ADMIN_TOKEN", TOKEN)
        .env("SECRET", secret)
        .output()
        .expect("run sh")
}

#[test]
fn the_readme_quick_start_curl_and_python_examples_work_as_written() {
    const TEST: &str = "the_readme_quick_start_curl_and_python_examples_work_as_written";
    if grpcurl(TEST).is_none() || !installed("curl", TEST) || !installed("python3", TEST) {
        return;
    }
    let dir = TempDir::new();
    let (registry_port, gateway_port) = (free_port(), free_port());
    let _stanna = Stanna::start(
        dir.path(),
        &["serve"],
        &[
            ("STANNA_REGISTRY_ADDR", format!("127.0.0.1:{registry_port}")),
            (
                "STANNA_AUTH_CHECK_ADDR",
                format!("127.0.0.1:{}", free_port()),
            ),
            ("STANNA_QUOTA_ADDR", format!("127.0.0.1:{}", free_port())),
            ("STANNA_GATEWAY_ADDR", format!("127.0.0.1:{gateway_port}")),
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
    let port = |text: &str| {
        text.replace("127.0.0.1:50051", &format!("127.0.0.1:{registry_port}"))
            .replace("localhost:8080", &format!("127.0.0.1:{gateway_port}"))
    };

    // Quick start: the admin creates the key.
    let create = readme_commands("## Quick start: a key, a request, the headers", "grpcurl");
    assert_eq!(create.len(), 1, "one grpcurl command in the quick start");
    let output = sh(&port(&create[0]), "");
    assert!(output.status.success(), "{output:?}");
    let created: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();

    // Every cURL example.
    let curls = readme_commands("### cURL", "curl");
    assert!(curls.len() >= 4, "{curls:?}");
    let expectations = [
        vec![
            "HTTP/1.1 200",
            "x-ratelimit-remaining-burst: 99",
            "ratelimit-policy",
            "\"userId\":\"alice\"",
        ],
        vec!["\"workspaceId\":\"ws_demo\""],
        vec!["\"secret\":\"sk-", "\"name\":\"Mobile App\""],
        vec!["\"keys\":[", "\"preview\":\"sk-"],
    ];
    for (command, expected) in curls.iter().zip(expectations) {
        let output = sh(&port(command), &secret);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{command}: {output:?}");
        for text in expected {
            assert!(
                stdout.contains(text),
                "{command} printed no {text:?}:\n{stdout}"
            );
        }
        assert!(
            command.contains("POST") || !stdout.contains(&secret),
            "the secret is never echoed"
        );
    }

    // The Python example.
    let section = readme_section("### Python");
    let code = section
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a python block");
    let script = dir.path().join("example.py");
    std::fs::write(&script, code).unwrap();
    let output = Command::new("python3")
        .arg(&script)
        .env("STANNA_API_KEY", &secret)
        .env("STANNA_API_URL", format!("http://127.0.0.1:{gateway_port}"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "python example: {output:?}");
    assert!(stdout.contains("of alice in ws_demo"), "{stdout}");
    assert!(
        stdout.contains("Production Dashboard") && stdout.contains("Mobile App"),
        "{stdout}"
    );

    // And with a bad key it says what is wrong instead of a traceback.
    let output = Command::new("python3")
        .arg(&script)
        .env("STANNA_API_KEY", "sk-not-a-key")
        .env("STANNA_API_URL", format!("http://127.0.0.1:{gateway_port}"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("401 malformed_api_key"),
        "{stderr}"
    );
}
