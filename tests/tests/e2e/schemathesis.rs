//! schemathesis against a real `stanna serve`: the served OpenAPI document, stateful through its
//! links, every check plus our `no_secret_echoed`, once with an API key and once with a dashboard
//! session; each run at least 1 000 requests and not one 5xx (`tests/schemathesis/run.py` does
//! the work and prints the status distribution).

use std::path::Path;
use std::process::Command;

#[test]
fn schemathesis_finds_no_server_error_schema_violation_or_echoed_secret() {
    let has_st = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("st").is_file()));
    if !has_st {
        stanna_testkit::skip(
            "schemathesis_finds_no_server_error_schema_violation_or_echoed_secret",
            "schemathesis is not installed (pip install schemathesis), so this test did not run",
        );
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemathesis/run.py");
    let out = Command::new("python3")
        .arg(script)
        .arg("--stanna")
        .arg(stanna_e2e::stanna_binary())
        .output()
        .expect("run python3");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{printed}");
    assert!(out.status.success(), "schemathesis runs failed:\n{printed}");
}
