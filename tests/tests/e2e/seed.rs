//! `stanna seed` as a load tester meets it: filler keys in the store `STANNA_DATABASE_URL` names
//! (SQLite, or PostgreSQL when `DATABASE_URL` is set), their secrets on standard output only when
//! asked, and every printed secret a working key at the gateway of a `stanna serve` on that store.

use std::process::{Command, Stdio};

use stanna_e2e::{SharedStore, curl_get, run_to_exit, serve_on_free_ports, stanna_binary};
use stanna_testkit::TempDir;

#[test]
fn seeded_keys_verify_through_the_gateway_and_their_secrets_go_to_stdout_only() {
    const TEST: &str = "seeded_keys_verify_through_the_gateway_and_their_secrets_go_to_stdout_only";
    let dir = TempDir::new();
    let store = SharedStore::for_test(&dir, TEST);
    let mut command = Command::new(stanna_binary());
    for (key, _) in std::env::vars() {
        if key.starts_with("STANNA_") {
            command.env_remove(key);
        }
    }
    let out = command
        .args(["seed", "--keys", "250", "--workspace-keys", "120"])
        .args(["--deleted-percent", "20", "--print-secrets"])
        .env("STANNA_DATABASE_URL", store.url())
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run stanna seed");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{stderr}");
    // Keys 0-19, 100-119 and 200-219 of the 250 are stored deleted.
    assert!(
        stderr.contains("seeded 250 keys (190 live, 60 deleted)"),
        "{stderr}"
    );
    let secrets: Vec<&str> = stdout.lines().collect();
    assert_eq!(secrets.len(), 190, "one line per live key");
    assert!(
        secrets
            .iter()
            .all(|s| s.starts_with("sk-") && s.len() == 53)
    );
    assert!(
        secrets.iter().all(|s| !stderr.contains(&s[15..])),
        "no secret on standard error"
    );

    let (_stanna, _registry, gateway) =
        serve_on_free_ports(dir.path(), &store, "e2e-seed-admin-token", &[]);
    let me = format!("http://127.0.0.1:{gateway}/v1/me");
    // The first printed key is the big workspace's, the last one of a 100-key workspace after it.
    for (secret, workspace) in [(secrets[0], "ws_seed_big"), (secrets[189], "ws_seed_1")] {
        let (status, body) = curl_get(&me, secret, None);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["workspaceId"], workspace, "{body}");
    }

    // Bad input is refused by name, before anything is written.
    let (code, printed) = run_to_exit(
        dir.path(),
        &["seed", "--keys", "0"],
        &[("STANNA_DATABASE_URL", store.url())],
    );
    assert_eq!(code, 2, "{printed}");
    assert!(printed.contains("--keys"), "{printed}");
    let (code, printed) = run_to_exit(dir.path(), &["seed", "--keys", "10"], &[]);
    assert_eq!(code, 2, "{printed}");
    assert!(
        printed.contains("STANNA_DATABASE_URL (or --database-url) must be set"),
        "{printed}"
    );
}
