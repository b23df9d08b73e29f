//! `stanna keys …`, the admin CLI, against a real `stanna serve` (SQLite): each command's output
//! (table and `--json`) and exit code (0 done, 1 refused, 2 bad usage), the token read from the
//! state directory a local `stanna serve` keeps it in, and secrets printed once only.

use serde_json::Value;
use stanna_e2e::{Stanna, free_port, run_to_exit};
use stanna_keys::PresentedKey;
use stanna_testkit::TempDir;

struct Cli {
    dir: TempDir,
    registry: String,
    _stanna: Stanna,
}

impl Cli {
    /// `stanna keys --registry … ARGS` in the serve's directory (where its token is kept).
    fn run(&self, args: &[&str]) -> (i32, String) {
        self.run_with(args, &[])
    }

    fn run_with(&self, args: &[&str], env: &[(&str, String)]) -> (i32, String) {
        let mut all = vec!["keys", "--registry", &self.registry];
        all.extend_from_slice(args);
        run_to_exit(self.dir.path(), &all, env)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (code, out) = self.run(&all);
        assert_eq!(code, 0, "stanna keys {args:?}: {out}");
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
    }
}

fn start() -> Cli {
    let dir = TempDir::new();
    let port = free_port();
    // No STANNA_ADMIN_TOKEN: the all-in-one generates one into its state directory, which the
    // CLI run in the same directory reads.
    let stanna = Stanna::start(
        dir.path(),
        &["serve"],
        &[
            ("STANNA_REGISTRY_ADDR", format!("127.0.0.1:{port}")),
            (
                "STANNA_AUTH_CHECK_ADDR",
                format!("127.0.0.1:{}", free_port()),
            ),
            ("STANNA_QUOTA_ADDR", format!("127.0.0.1:{}", free_port())),
            ("STANNA_GATEWAY_ADDR", format!("127.0.0.1:{}", free_port())),
            ("STANNA_DATABASE_URL", dir.sqlite_url()),
        ],
        "gateway listening on",
    );
    Cli {
        registry: format!("http://127.0.0.1:{port}"),
        dir,
        _stanna: stanna,
    }
}

#[test]
fn the_readme_cli_commands_work_as_written() {
    let commands = stanna_e2e::readme_commands("## Managing keys with the CLI", "stanna");
    for command in [
        "keys create",
        "keys list",
        "keys get",
        "keys update",
        "keys rotate",
        "keys delete",
        "keys sessions revoke",
    ] {
        assert!(
            commands
                .iter()
                .any(|c| c.starts_with(&format!("stanna {command}"))),
            "the README shows no `stanna {command}`"
        );
    }
    let cli = start();
    let binary = stanna_e2e::stanna_binary();
    let mut key_id = String::new();
    let mut secrets = Vec::new();
    for command in commands {
        // As written, with only the registry's port given (a free one here).
        let command = command.replacen(
            "stanna keys",
            &format!("{} keys --registry {}", binary.display(), cli.registry),
            1,
        );
        let output = std::process::Command::new("sh")
            .args(["-c", &command])
            .current_dir(cli.dir.path())
            .env("KEY_ID", &key_id)
            .env_remove("STANNA_ADMIN_TOKEN")
            .output()
            .expect("run sh");
        let out = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "README command failed: {command}\n{out}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        for secret in &secrets {
            assert!(!out.contains(secret), "a secret reappeared: {command}");
        }
        if command.contains(" keys --registry")
            && (command.contains(" create ") || command.contains(" rotate "))
        {
            let secret = secret_in(&out);
            if key_id.is_empty() {
                key_id = secret[3..15].to_owned();
            }
            secrets.push(secret);
        }
        if command.contains(" update ") {
            assert!(out.contains("hourly 500/3600s (override)"), "{out}");
            assert!(out.contains(r#"metadata     {"plan":"pro"}"#), "{out}");
        }
    }
}

fn secret_in(out: &str) -> String {
    let line = out
        .lines()
        .find(|l| l.starts_with("secret "))
        .unwrap_or_else(|| panic!("no secret line: {out}"));
    let secret = line.trim_start_matches("secret").trim().to_owned();
    PresentedKey::parse(&secret).expect("a well-formed key");
    secret
}

#[test]
fn every_admin_cli_command_prints_what_it_did_and_exits_as_documented() {
    let cli = start();
    let token = std::fs::read_to_string(cli.dir.path().join("stanna-admin-token")).unwrap();

    // create: a table, the secret once, and the sentence that says so.
    let (code, out) = cli.run(&["create", "-w", "ws_cli", "-u", "alice", "-n", "Production"]);
    assert_eq!(code, 0, "{out}");
    let first = secret_in(&out);
    assert!(out.contains("only time the secret is shown"), "{out}");
    assert!(out.contains("status       active"), "{out}");
    let first_id = first[3..15].to_owned();

    let created = cli.json(&[
        "create",
        "-w",
        "ws_cli",
        "-u",
        "bob",
        "-n",
        "Scripted",
        "--burst",
        "20/60s",
        "--metadata",
        "{\"plan\": \"pro\"}",
    ]);
    let second = created["secret"].as_str().unwrap().to_owned();
    let second_id = created["key"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created["key"]["overriddenLimits"],
        serde_json::json!(["burst"])
    );
    assert_eq!(created["key"]["metadata"], "{\"plan\":\"pro\"}");

    // list: a table with both, pages, and every page with --all.
    let (code, out) = cli.run(&["list", "-w", "ws_cli"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("ID"), "{out}");
    assert!(out.contains(&first_id) && out.contains(&second_id), "{out}");
    let (_, out) = cli.run(&["list", "-w", "ws_cli", "--page-size", "1"]);
    assert!(out.contains("more: --page-token "), "{out}");
    let all = cli.json(&["list", "-w", "ws_cli", "--page-size", "1", "--all"]);
    assert_eq!(all["keys"].as_array().unwrap().len(), 2);
    let alice = cli.json(&["list", "-w", "ws_cli", "-u", "alice"]);
    assert_eq!(alice["keys"][0]["id"], first_id.as_str());
    assert_eq!(alice["keys"].as_array().unwrap().len(), 1);

    // get.
    let (code, out) = cli.run(&["get", &second_id, "-w", "ws_cli"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("burst 20/60s (override), hourly 1000/3600s"),
        "{out}"
    );

    // update: what is given changes, the override not mentioned stays, --default-… clears.
    let updated = cli.json(&[
        "update", &second_id, "-w", "ws_cli", "--status", "inactive", "--hourly", "9/1h",
    ]);
    assert_eq!(updated["status"], "KEY_STATUS_INACTIVE");
    assert_eq!(
        updated["overriddenLimits"],
        serde_json::json!(["burst", "hourly"])
    );
    assert_eq!(updated["name"], "Scripted");
    let reset = cli.json(&[
        "update",
        &second_id,
        "-w",
        "ws_cli",
        "--default-burst",
        "--no-metadata",
    ]);
    assert_eq!(reset["overriddenLimits"], serde_json::json!(["hourly"]));
    assert_eq!(reset.get("metadata"), None);
    let (code, out) = cli.run(&["update", &second_id, "-w", "ws_cli"]);
    assert_eq!(code, 2, "nothing to change is bad usage: {out}");
    assert!(out.contains("nothing to change"), "{out}");

    // list filters: by name (ignoring case), by status, by days unused; a bad value is bad usage
    // or a refusal naming the field.
    let found = cli.json(&["list", "-w", "ws_cli", "--name", "SCRIPT"]);
    assert_eq!(found["keys"].as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found["keys"][0]["id"], second_id.as_str());
    let inactive = cli.json(&["list", "-w", "ws_cli", "--status", "inactive"]);
    assert_eq!(inactive["keys"].as_array().unwrap().len(), 1, "{inactive}");
    assert_eq!(inactive["keys"][0]["id"], second_id.as_str());
    let stale = cli.json(&["list", "-w", "ws_cli", "--unused-for-days", "1"]);
    assert_eq!(
        stale["keys"].as_array().unwrap().len(),
        0,
        "both keys are new: {stale}"
    );
    let (code, out) = cli.run(&["list", "-w", "ws_cli", "--status", "gone"]);
    assert_eq!(code, 2, "{out}");
    let (code, out) = cli.run(&["list", "-w", "ws_cli", "--unused-for-days", "40000"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unused_for_days"), "{out}");
    let (_, out) = cli.run(&["list", "-w", "ws_cli", "--page-size", "1"]);
    let page_token = out
        .split("--page-token ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no page token: {out}"))
        .to_owned();
    let (code, out) = cli.run(&[
        "list",
        "-w",
        "ws_cli",
        "--name",
        "x",
        "--page-token",
        &page_token,
    ]);
    assert_eq!(code, 1, "another listing's token is refused: {out}");
    assert!(
        out.contains("page_token") && out.contains("different listing"),
        "{out}"
    );

    // rotate: a new secret once; the old key now expires.
    let (code, out) = cli.run(&["rotate", &first_id, "-w", "ws_cli", "--grace", "1h"]);
    assert_eq!(code, 0, "{out}");
    let rotated = secret_in(&out);
    assert_ne!(rotated, first);
    let old = cli.json(&["get", &first_id, "-w", "ws_cli"]);
    assert_eq!(old["replacedBy"], &rotated[3..15]);
    assert!(old.get("expiresAt").is_some());
    let (code, out) = cli.run(&["rotate", &first_id, "-w", "ws_cli"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FailedPrecondition") && out.contains("already rotated"),
        "{out}"
    );

    // delete, then it is gone: a refusal exits 1 with the code and the registry's words.
    let (code, out) = cli.run(&["delete", &second_id, "-w", "ws_cli"]);
    assert_eq!(
        (code, out.trim()),
        (
            0,
            format!("deleted {second_id}: it is refused everywhere within a second").as_str()
        )
    );
    let (code, out) = cli.run(&["get", &second_id, "-w", "ws_cli"]);
    assert_eq!(code, 1);
    assert!(out.starts_with("error: NotFound: key not found"), "{out}");

    // sessions revoke.
    let (code, out) = cli.run(&["sessions", "revoke", "-w", "ws_cli"]);
    assert_eq!((code, out.trim()), (0, "revoked 0 session(s)"));

    // Bad usage exits 2 before any call; a refused value names itself, not a secret.
    for args in [
        &["create", "-w", "ws_cli", "-u", "alice"][..],
        &[
            "create", "-w", "ws_cli", "-u", "alice", "-n", "x", "--burst", "0/60s",
        ],
        &[
            "create",
            "-w",
            "ws_cli",
            "-u",
            "alice",
            "-n",
            "x",
            "--expires-at",
            "tomorrow",
        ],
        &["update", &first_id, "-w", "ws_cli", "--status", "on"],
        &["rotate", &first_id, "-w", "ws_cli", "--grace", "soon"],
    ] {
        let (code, out) = cli.run(args);
        assert_eq!(code, 2, "{args:?}: {out}");
    }
    // The registry's own refusals exit 1, naming the field.
    let (code, out) = cli.run(&["create", "-w", "ws cli", "-u", "alice", "-n", "x"]);
    assert_eq!(code, 1);
    assert!(out.contains("InvalidArgument: workspace_id:"), "{out}");
    let (code, out) = cli.run(&[
        "create",
        "-w",
        "ws_cli",
        "-u",
        "alice",
        "-n",
        "x",
        "--metadata",
        "[1]",
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("metadata: must be a JSON object"), "{out}");

    // A wrong token is refused (exit 1) and never printed; an unreachable registry says so.
    let wrong = "wrong-admin-token-0123456789";
    let (code, out) = cli.run_with(
        &["list", "-w", "ws_cli"],
        &[("STANNA_ADMIN_TOKEN", wrong.to_owned())],
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("Unauthenticated") && !out.contains(wrong),
        "{out}"
    );
    let (code, out) = run_to_exit(
        cli.dir.path(),
        &[
            "keys",
            "--registry",
            &format!("http://127.0.0.1:{}", free_port()),
            "list",
            "-w",
            "ws_cli",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(out.contains("the key registry does not answer"), "{out}");

    // No secret and no token ever reappears in a later output.
    for args in [
        &["list", "-w", "ws_cli"][..],
        &["get", &first_id, "-w", "ws_cli"],
    ] {
        let (_, out) = cli.run(args);
        for secret in [&first, &second, &rotated, &token.trim().to_owned()] {
            assert!(!out.contains(secret.as_str()), "{args:?} printed a secret");
        }
    }
}
