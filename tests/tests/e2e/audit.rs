//! The audit log as its users meet it, against the real `stanna serve` (SQLite, or PostgreSQL
//! when `DATABASE_URL` is set): changes made with grpcurl by a named admin, with curl by an API
//! key, in the dashboard's session and with `stanna keys` by another admin each leave exactly one
//! event naming that actor and the request id the client saw; a refused change leaves none; the
//! database refuses to rewrite or delete an event.

use std::process::Command;

use http::Method;
use serde_json::{Value, json};
use stanna_e2e::{SharedStore, grpcurl, run_to_exit, serve_on_free_ports};
use stanna_testkit::TempDir;

use crate::dashboard_http::{post_token, readme_python_link};
use crate::http::request;

const TOKEN: &str = "e2e-audit-admin-token-0123";
const ALICE: &str = "e2e-audit-alice-token-0123";
const BOB: &str = "e2e-audit-bob-token-012345";
/// The README's sign-in example signs Alice in to this workspace.
const WORKSPACE: &str = "ws_demo";

/// `curl -X METHOD URL` with `headers` and `body`: the status and the JSON answer.
fn curl(method: &str, url: &str, headers: &[String], body: Option<&Value>) -> (u16, Value) {
    let mut command = Command::new("curl");
    command.args(["-s", "-X", method, "-w", "\n%{http_code}"]);
    for header in headers {
        command.args(["-H", header]);
    }
    if let Some(body) = body {
        command.args([
            "-H",
            "Content-Type: application/json",
            "-d",
            &body.to_string(),
        ]);
    }
    let out = command.arg(url).output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("curl prints the status last");
    (
        status.trim().parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_audited_once_under_its_actor_through_every_client() {
    const TEST: &str = "every_change_is_audited_once_under_its_actor_through_every_client";
    let Some(grpcurl) = grpcurl(TEST) else { return };
    let dir = TempDir::new();
    let tokens = dir.path().join("admins");
    std::fs::write(&tokens, format!("# the admins\nalice:{ALICE}\nbob:{BOB}\n")).unwrap();
    let store = SharedStore::for_test(&dir, TEST);
    let (_stanna, registry, gateway) = serve_on_free_ports(
        dir.path(),
        &store,
        TOKEN,
        &[
            ("STANNA_ADMIN_TOKENS_FILE", tokens.display().to_string()),
            (
                "STANNA_SESSION_SECRET",
                stanna_e2e::SESSION_SECRET.to_owned(),
            ),
        ],
    );
    let registry = format!("127.0.0.1:{registry}");
    let base = format!("http://127.0.0.1:{gateway}");

    // grpcurl as alice, with a request id: the answer's headers carry it back.
    let out = Command::new(&grpcurl)
        .args([
            "-plaintext",
            "-v",
            "-H",
            &format!("authorization: Bearer {ALICE}"),
            "-H",
            "x-request-id: e2e-grpcurl-create",
            "-d",
            &json!({"workspace_id": WORKSPACE, "user_id": "alice", "name": "Audited"}).to_string(),
            &registry,
            "stanna.keys.v1.KeyRegistry/CreateKey",
        ])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{printed}");
    assert!(
        printed.contains("x-request-id: e2e-grpcurl-create"),
        "grpcurl shows the request id in the response headers:\n{printed}"
    );
    // The JSON answer, followed by grpcurl's trailers.
    let created: Value =
        serde_json::Deserializer::from_str(&printed[printed.find("\n{").expect("JSON")..])
            .into_iter()
            .next()
            .expect("the answer")
            .unwrap();
    let id = created["key"]["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    let with_key = |request_id: &str| {
        vec![
            format!("Authorization: Bearer {secret}"),
            format!("X-Request-Id: {request_id}"),
        ]
    };

    // curl with the key: a rename, a refused rename, a creation.
    let (status, _) = curl(
        "PATCH",
        &format!("{base}/v1/keys/{id}"),
        &with_key("e2e-rest-rename"),
        Some(&json!({"name": "Renamed by key"})),
    );
    assert_eq!(status, 200);
    let (status, refused) = curl(
        "PATCH",
        &format!("{base}/v1/keys/{id}"),
        &with_key("e2e-rest-refused"),
        Some(&json!({"name": "   "})),
    );
    assert_eq!(status, 400, "{refused}");
    let (status, second) = curl(
        "POST",
        &format!("{base}/v1/keys"),
        &with_key("e2e-rest-create"),
        Some(&json!({"name": "Made by a key"})),
    );
    assert_eq!(status, 201, "{second}");
    let second_id = second["key"]["id"].as_str().unwrap().to_owned();

    // The dashboard's session (the README's sign-in link): a deactivation.
    let link = readme_python_link(&format!("http://localhost:{gateway}"));
    let login = link.split_once("token=").unwrap().1.to_owned();
    let (status, cookie) = post_token(gateway, &login).await;
    assert_eq!(status, 303);
    let (_, _, me) = request(
        Method::GET,
        &format!("{base}/v1/me"),
        &[("cookie", &cookie)],
        "",
    )
    .await;
    let me: Value = serde_json::from_slice(&me).unwrap();
    let csrf = me["csrfToken"].as_str().unwrap().to_owned();
    let origin = format!("http://localhost:{gateway}");
    let (status, _, answer) = request(
        Method::PATCH,
        &format!("{base}/v1/keys/{second_id}"),
        &[
            ("cookie", &cookie),
            ("x-csrf-token", &csrf),
            ("origin", &origin),
            ("content-type", "application/json"),
            ("x-request-id", "e2e-dashboard-deactivate"),
        ],
        r#"{"status":"KEY_STATUS_INACTIVE"}"#,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));

    // The CLI as bob.
    let admin_env = |token: &str| vec![("STANNA_ADMIN_TOKEN", token.to_owned())];
    let url = format!("http://{registry}");
    let (code, printed) = run_to_exit(
        dir.path(),
        &[
            "keys",
            "--registry",
            &url,
            "update",
            &id,
            "-w",
            WORKSPACE,
            "--name",
            "Renamed by bob",
        ],
        &admin_env(BOB),
    );
    assert_eq!(code, 0, "{printed}");

    // Every change once, newest first, under its actor; the refused rename is not there.
    let (status, log) = curl(
        "GET",
        &format!("{base}/v1/audit"),
        &with_key("e2e-read"),
        None,
    );
    assert_eq!(status, 200, "{log}");
    let events = log["events"].as_array().unwrap();
    let seen: Vec<(String, String, String, String)> = events
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor"]["kind"].as_str().unwrap().to_owned(),
                e["actor"]["id"].as_str().unwrap().to_owned(),
                e["requestId"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let session_id = events
        .iter()
        .find(|e| e["action"] == "session.created")
        .and_then(|e| e["sessionId"].as_str())
        .expect("the sign-in is audited")
        .to_owned();
    let row = |action: &str, kind: &str, actor: &str, request: &str| {
        (
            action.to_owned(),
            kind.to_owned(),
            actor.to_owned(),
            request.to_owned(),
        )
    };
    let cli_request = seen[0].3.clone();
    let login_request = seen[2].3.clone();
    assert_eq!(
        seen,
        [
            row("key.updated", "admin", "bob", &cli_request),
            row(
                "key.updated",
                "session",
                &session_id,
                "e2e-dashboard-deactivate"
            ),
            row("session.created", "session", &session_id, &login_request),
            row("key.created", "key", &id, "e2e-rest-create"),
            row("key.updated", "key", &id, "e2e-rest-rename"),
            row("key.created", "admin", "alice", "e2e-grpcurl-create"),
        ],
        "{log:#}"
    );
    assert_eq!(events[4]["before"], json!({"name": "Audited"}));
    assert_eq!(events[4]["after"], json!({"name": "Renamed by key"}));
    assert_eq!(events[1]["after"], json!({"status": "inactive"}));
    assert_eq!(events[1]["actor"]["userId"], "alice");
    assert!(
        !log.to_string().contains(&secret),
        "no secret in the audit log"
    );

    // `stanna keys audit` shows one key's history, the CLI's change included.
    let (code, printed) = run_to_exit(
        dir.path(),
        &[
            "keys",
            "--registry",
            &url,
            "--json",
            "audit",
            "-w",
            WORKSPACE,
            "--key",
            &id,
        ],
        &admin_env(ALICE),
    );
    assert_eq!(code, 0, "{printed}");
    let history: Value = serde_json::from_str(printed.trim()).expect("JSON");
    let actions: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["key.updated", "key.updated", "key.created"]);
    let (code, table) = run_to_exit(
        dir.path(),
        &["keys", "--registry", &url, "audit", "-w", WORKSPACE],
        &admin_env(ALICE),
    );
    assert_eq!(code, 0, "{table}");
    assert!(
        table.contains("admin bob") && table.contains(r#"name: "Audited" → "Renamed by key""#),
        "{table}"
    );

    // Tampering: the database itself refuses to rewrite or delete an event.
    let tamper = [
        "UPDATE audit_events SET actor_id = 'mallory'",
        "DELETE FROM audit_events",
    ];
    for sql in tamper {
        let refused = match &store {
            SharedStore::Postgres(database) => {
                let out = Command::new("psql")
                    .args([database.url(), "-v", "ON_ERROR_STOP=1", "-c", sql])
                    .output()
                    .expect("run psql");
                (
                    !out.status.success(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            }
            SharedStore::Sqlite(url) => {
                let path = url
                    .trim_start_matches("sqlite://")
                    .split('?')
                    .next()
                    .unwrap()
                    .to_owned();
                let out = Command::new("python3")
                    .args([
                        "-c",
                        "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1], timeout=10)\nc.execute(sys.argv[2])\nc.commit()",
                        &path,
                        sql,
                    ])
                    .output()
                    .expect("run python3");
                (
                    !out.status.success(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            }
        };
        assert!(refused.0, "{sql:?} was taken");
        assert!(refused.1.contains("append-only"), "{sql:?}: {}", refused.1);
    }
    let (_, after) = curl(
        "GET",
        &format!("{base}/v1/audit"),
        &with_key("e2e-read-again"),
        None,
    );
    assert_eq!(after["events"], log["events"], "nothing changed");
}
