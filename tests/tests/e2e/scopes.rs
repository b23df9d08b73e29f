//! Scopes as their users meet them, against the real `stanna serve` (SQLite, or PostgreSQL when
//! `DATABASE_URL` is set) with an upstream that echoes what it received: the route map of
//! `STANNA_ROUTE_SCOPES` refuses and allows exactly, every spelling of a path resolves to the one
//! that is forwarded (or is refused), a refusal charges nothing and carries no rate-limit
//! headers, the upstream is told the key's scopes, the key API needs `keys:read` / `keys:write`,
//! and a scoped key can neither give nor touch more than it holds — through curl, grpcurl and the
//! CLI.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;

use serde_json::{Value, json};
use stanna_e2e::{SharedStore, Stanna, free_port, grpcurl, grpcurl_call, run_to_exit};
use stanna_testkit::TempDir;

const TOKEN: &str = "e2e-scopes-admin-token";
const WORKSPACE: &str = "ws_scopes";

const ROUTES: &str = "\
# method  path            scopes (all required)
GET       /v1/analytics   analytics:read
POST      /v1/analytics   analytics:write
*         /v1/admin       admin
GET       /v1/public
";

struct System {
    _stanna: Stanna,
    registry: String,
    auth_check: String,
    gateway: String,
    grpcurl: std::path::PathBuf,
    _store: SharedStore,
    dir: TempDir,
}

impl System {
    fn start(test: &str) -> Option<Self> {
        let grpcurl = grpcurl(test)?;
        let dir = TempDir::new();
        let store = SharedStore::for_test(&dir, test);
        let routes = dir.path().join("routes.txt");
        std::fs::write(&routes, ROUTES).unwrap();
        let upstream = echo_upstream();
        let (registry, auth_check, gateway) = (free_port(), free_port(), free_port());
        let stanna = Stanna::start(
            dir.path(),
            &["serve"],
            &[
                ("STANNA_REGISTRY_ADDR", format!("127.0.0.1:{registry}")),
                ("STANNA_AUTH_CHECK_ADDR", format!("127.0.0.1:{auth_check}")),
                ("STANNA_QUOTA_ADDR", format!("127.0.0.1:{}", free_port())),
                ("STANNA_GATEWAY_ADDR", format!("127.0.0.1:{gateway}")),
                ("STANNA_DATABASE_URL", store.url()),
                ("STANNA_ADMIN_TOKEN", TOKEN.to_owned()),
                ("STANNA_GATEWAY_TOKEN", stanna_e2e::GATEWAY_TOKEN.to_owned()),
                (
                    "STANNA_UPSTREAM_URL",
                    format!("http://127.0.0.1:{upstream}"),
                ),
                ("STANNA_ROUTE_SCOPES", routes.display().to_string()),
            ],
            "gateway listening on",
        );
        Some(Self {
            _stanna: stanna,
            registry: format!("127.0.0.1:{registry}"),
            auth_check: format!("127.0.0.1:{auth_check}"),
            gateway: format!("http://127.0.0.1:{gateway}"),
            grpcurl,
            _store: store,
            dir,
        })
    }

    fn grpc(&self, addr: &str, method: &str, body: &Value) -> Result<Value, (String, String)> {
        grpcurl_call(&self.grpcurl, addr, method, body, Some(TOKEN))
    }

    /// A key made by the admin with `scopes`; (id, secret).
    fn create(&self, name: &str, scopes: &[&str]) -> (String, String) {
        let created = self
            .grpc(
                &self.registry,
                "stanna.keys.v1.KeyRegistry/CreateKey",
                &json!({"workspace_id": WORKSPACE, "user_id": "alice", "name": name, "scopes": scopes}),
            )
            .expect("CreateKey");
        assert_eq!(
            created["key"]["scopes"].as_array().map_or(0, Vec::len),
            scopes.len(),
            "{created}"
        );
        (
            created["key"]["id"].as_str().unwrap().to_owned(),
            created["secret"].as_str().unwrap().to_owned(),
        )
    }

    fn verify(&self, body: &Value) -> Result<Value, (String, String)> {
        self.grpc(&self.auth_check, "stanna.keys.v1.AuthCheck/Verify", body)
    }
}

/// An upstream that answers every request with its own head (request line and headers) as the
/// body, so a test sees exactly what the gateway forwarded.
fn echo_upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for socket in listener.incoming() {
            let Ok(mut socket) = socket else { return };
            std::thread::spawn(move || {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = socket.read(&mut chunk) else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = buffer.drain(..end + 4).collect();
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
                            head.len()
                        );
                        if socket.write_all(answer.as_bytes()).is_err()
                            || socket.write_all(&head).is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

/// An answer: status, head (lowercased) and body (JSON where it parses, else text).
struct Answer {
    status: u16,
    head: String,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    }

    /// The echoed request head, for a request that reached the upstream.
    fn upstream_saw(&self) -> String {
        self.body.as_str().unwrap_or_default().to_ascii_lowercase()
    }

    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

/// `curl --path-as-is` (the path goes out exactly as written, dots and all).
fn curl(method: &str, url: &str, key: &str, body: Option<&Value>) -> Answer {
    curl_full(method, url, key, body, &[])
}

fn curl_with(method: &str, url: &str, key: &str, headers: &[&str]) -> Answer {
    curl_full(method, url, key, None, headers)
}

fn curl_full(method: &str, url: &str, key: &str, body: Option<&Value>, headers: &[&str]) -> Answer {
    let mut command = Command::new("curl");
    command.args(["-sS", "-i", "--path-as-is", "-X", method]);
    command.args(["-H", &format!("authorization: Bearer {key}")]);
    for header in headers {
        command.args(["-H", header]);
    }
    if let Some(body) = body {
        command.args([
            "-H",
            "content-type: application/json",
            "--data",
            &body.to_string(),
        ]);
    }
    let output = command.arg(url).output().expect("run curl");
    assert!(output.status.success(), "curl failed: {output:?}");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    Answer {
        status: head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        head: head.to_ascii_lowercase(),
        body: serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned())),
    }
}

fn burst_remaining(system: &System, key: &str) -> u64 {
    let me = curl("GET", &format!("{}/v1/me", system.gateway), key, None);
    assert_eq!(me.status, 200, "{}", me.body);
    me.body["windows"][0]["remaining"].as_u64().unwrap()
}

#[test]
fn routes_refuse_and_allow_exactly_and_no_spelling_of_a_path_slips_past() {
    const TEST: &str = "routes_refuse_and_allow_exactly_and_no_spelling_of_a_path_slips_past";
    let Some(system) = System::start(TEST) else {
        return;
    };
    let (_, full) = system.create("full", &[]);
    let (_, reader) = system.create("reader", &["analytics:read", "keys:read"]);
    let url = |path: &str| format!("{}{path}", system.gateway);

    // Mapped and held: forwarded, and the upstream is told the key's scopes.
    let ok = curl("GET", &url("/v1/analytics?day=1"), &reader, None);
    assert_eq!(ok.status, 200, "{}", ok.body);
    let saw = ok.upstream_saw();
    assert!(saw.starts_with("get /v1/analytics?day=1 "), "{saw}");
    assert!(
        saw.contains("x-stanna-scopes: analytics:read keys:read\r\n"),
        "{saw}"
    );
    let saw = curl("GET", &url("/v1/analytics"), &full, None).upstream_saw();
    assert!(
        saw.contains("x-stanna-scopes: *\r\n"),
        "an unscoped key is `*`: {saw}"
    );

    // Mapped but not held: 403 naming the scope, with the RFC 6750 challenge, no rate-limit
    // headers, and nothing charged.
    let before = burst_remaining(&system, &reader);
    let refused = curl("POST", &url("/v1/analytics"), &reader, Some(&json!({})));
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.code(), "insufficient_scope");
    assert_eq!(refused.body["error"]["scope"], "analytics:write");
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"analytics:write\""),
        "{}",
        refused.body
    );
    assert_eq!(
        refused.header("www-authenticate"),
        Some("bearer realm=\"stanna\", error=\"insufficient_scope\", scope=\"analytics:write\"")
    );
    assert!(!refused.head.contains("ratelimit"), "{}", refused.head);
    let after = burst_remaining(&system, &reader);
    assert_eq!(before - after, 1, "only the second /v1/me was charged");

    // Open routes take any key; unmapped ones only an unscoped key.
    assert_eq!(curl("GET", &url("/v1/public"), &reader, None).status, 200);
    let unmapped = curl("GET", &url("/v1/other"), &reader, None);
    assert_eq!(unmapped.status, 403, "{}", unmapped.body);
    assert_eq!(unmapped.code(), "insufficient_scope");
    assert!(
        unmapped.body["error"].get("scope").is_none(),
        "{}",
        unmapped.body
    );
    assert_eq!(curl("GET", &url("/v1/other"), &full, None).status, 200);

    // Whole segments: /v1/adminx is not /v1/admin (so it is unmapped, refused to the scoped key).
    assert_eq!(
        curl("GET", &url("/v1/adminx"), &reader, None).code(),
        "insufficient_scope"
    );
    let saw = curl("GET", &url("/v1/adminx"), &full, None).upstream_saw();
    assert!(saw.starts_with("get /v1/adminx "), "{saw}");

    // Every spelling of /v1/admin is /v1/admin: refused to the reader for `admin`, and forwarded
    // as /v1/admin for the unscoped key.
    for spelling in [
        "//v1/admin",
        "/v1//admin/",
        "/v1/./admin",
        "/v1/analytics/../admin",
        "/v1/%61dmin",
        "/v1/analytics/%2e%2e/admin/users",
        "/v1/public/../admin",
        "/V1/Admin",
    ] {
        let refused = curl("GET", &url(spelling), &reader, None);
        assert_eq!(refused.status, 403, "{spelling}: {}", refused.body);
        assert_eq!(refused.body["error"]["scope"], "admin", "{spelling}");
        let saw = curl("GET", &url(spelling), &full, None).upstream_saw();
        assert!(
            saw.starts_with("get /v1/admin"),
            "{spelling} went upstream as: {saw}"
        );
        assert!(
            !saw.contains("/.") && !saw.contains("//") && !saw.contains('%'),
            "{saw}"
        );
    }
    // No safe meaning: refused before any key is looked at, for every key.
    for spelling in [
        "/v1%2Fadmin",
        "/v1/x%2f..%2fadmin",
        "/v1\\admin",
        "/../v1/admin",
        "/v1/admin;x",
        "/v1/public/..;/admin",
        "/v1/%252e%252e/admin",
    ] {
        for key in [&reader, &full] {
            let refused = curl("GET", &url(spelling), key, None);
            assert_eq!(refused.status, 400, "{spelling}: {}", refused.body);
            assert_eq!(refused.body["error"]["field"], "path", "{spelling}");
        }
    }

    // A method override could make the upstream run another method than the one mapped: such a
    // request is for unscoped keys only.
    let overridden = curl_with(
        "GET",
        &url("/v1/analytics"),
        &reader,
        &["x-http-method-override: DELETE"],
    );
    assert_eq!(
        (overridden.status, overridden.code()),
        (403, "insufficient_scope")
    );
    let saw = curl_with(
        "GET",
        &url("/v1/analytics"),
        &full,
        &["x-http-method-override: DELETE"],
    );
    assert_eq!(saw.status, 200);

    // Verify with grpcurl: all required scopes, named when missing; a bad name is the caller's
    // mistake.
    let valid = system
        .verify(&json!({"key": reader, "required_scopes": ["analytics:read", "keys:read"]}))
        .unwrap();
    assert_eq!(valid["code"], "VERIFY_CODE_VALID", "{valid}");
    assert_eq!(valid["scopes"], json!(["analytics:read", "keys:read"]));
    let lacking = system
        .verify(&json!({"key": reader, "required_scopes": ["analytics:read", "admin"]}))
        .unwrap();
    assert_eq!(
        lacking["code"], "VERIFY_CODE_INSUFFICIENT_SCOPE",
        "{lacking}"
    );
    assert_eq!(lacking["missingScope"], "admin");
    assert!(
        lacking.get("windows").is_none(),
        "no quota decision: {lacking}"
    );
    let only = system
        .verify(&json!({"key": reader, "unscoped_only": true}))
        .unwrap();
    assert_eq!(only["code"], "VERIFY_CODE_INSUFFICIENT_SCOPE", "{only}");
    let anything = system
        .verify(&json!({"key": full, "required_scopes": ["whatever"], "unscoped_only": true}))
        .unwrap();
    assert_eq!(anything["code"], "VERIFY_CODE_VALID", "{anything}");
    let (code, message) = system
        .verify(&json!({"key": reader, "required_scopes": ["Not A Scope"]}))
        .unwrap_err();
    assert_eq!(code, "InvalidArgument", "{message}");
    assert!(message.contains("required_scopes"), "{message}");
}

#[test]
fn a_scoped_key_manages_only_keys_within_its_scopes() {
    const TEST: &str = "a_scoped_key_manages_only_keys_within_its_scopes";
    let Some(system) = System::start(TEST) else {
        return;
    };
    let (full_id, full) = system.create("full", &[]);
    let (_, reader) = system.create("reader", &["analytics:read", "keys:read"]);
    let (_, writer) = system.create(
        "writer",
        &[
            "analytics:read",
            "analytics:write",
            "keys:read",
            "keys:write",
        ],
    );
    let keys = format!("{}/v1/keys", system.gateway);
    let key_url = |id: &str| format!("{keys}/{id}");

    // keys:read lists; keys:write is needed to change anything.
    assert_eq!(curl("GET", &keys, &reader, None).status, 200);
    let refused = curl("POST", &keys, &reader, Some(&json!({"name": "x"})));
    assert_eq!(
        (refused.status, refused.code()),
        (403, "insufficient_scope")
    );
    assert_eq!(refused.body["error"]["scope"], "keys:write");
    let me = curl("GET", &format!("{}/v1/me", system.gateway), &reader, None);
    assert_eq!(me.status, 200, "a key may always see itself");

    // A key made without scopes gets its maker's; one asking for more is refused; a subset is
    // fine.
    let child = curl("POST", &keys, &writer, Some(&json!({"name": "child"})));
    assert_eq!(child.status, 201, "{}", child.body);
    assert_eq!(
        child.body["key"]["scopes"],
        json!([
            "analytics:read",
            "analytics:write",
            "keys:read",
            "keys:write"
        ])
    );
    let greedy = curl(
        "POST",
        &keys,
        &writer,
        Some(&json!({"name": "g", "scopes": ["admin"]})),
    );
    assert_eq!(
        (greedy.status, greedy.code()),
        (403, "insufficient_scope"),
        "{}",
        greedy.body
    );
    assert_eq!(greedy.body["error"]["scope"], "admin");
    let narrow = curl(
        "POST",
        &keys,
        &writer,
        Some(&json!({"name": "narrow", "scopes": ["analytics:read"]})),
    );
    assert_eq!(narrow.status, 201, "{}", narrow.body);
    let narrow_id = narrow.body["key"]["id"].as_str().unwrap().to_owned();
    assert_eq!(narrow.body["key"]["scopes"], json!(["analytics:read"]));

    // The unscoped key has every permission: the scoped writer can neither rotate, rename,
    // deactivate nor delete it, and each refusal names `*`.
    let rotate = curl(
        "POST",
        &format!("{}/rotate", key_url(&full_id)),
        &writer,
        Some(&json!({})),
    );
    assert_eq!(
        (rotate.status, rotate.code()),
        (403, "insufficient_scope"),
        "{}",
        rotate.body
    );
    assert_eq!(rotate.body["error"]["scope"], "*");
    for body in [
        json!({"name": "mine"}),
        json!({"status": "KEY_STATUS_INACTIVE"}),
    ] {
        let patch = curl("PATCH", &key_url(&full_id), &writer, Some(&body));
        assert_eq!(
            (patch.status, patch.code()),
            (403, "insufficient_scope"),
            "{body}"
        );
    }
    let delete = curl("DELETE", &key_url(&full_id), &writer, None);
    assert_eq!(delete.status, 403, "{}", delete.body);
    assert_eq!(
        curl("GET", &format!("{}/v1/other", system.gateway), &full, None).status,
        200
    );

    // Within its scopes it manages freely: widening a key only up to its own scopes, never to
    // "everything".
    let widen = curl(
        "PATCH",
        &key_url(&narrow_id),
        &writer,
        Some(&json!({"scopes": ["analytics:read", "analytics:write"]})),
    );
    assert_eq!(widen.status, 200, "{}", widen.body);
    assert_eq!(
        widen.body["scopes"],
        json!(["analytics:read", "analytics:write"])
    );
    let unscope = curl(
        "PATCH",
        &key_url(&narrow_id),
        &writer,
        Some(&json!({"scopes": []})),
    );
    assert_eq!(
        (unscope.status, unscope.body["error"]["scope"].clone()),
        (403, json!("*"))
    );
    let rotated = curl(
        "POST",
        &format!("{}/rotate", key_url(&narrow_id)),
        &writer,
        Some(&json!({})),
    );
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    assert_eq!(
        rotated.body["key"]["scopes"],
        json!(["analytics:read", "analytics:write"]),
        "the replacement keeps the scopes"
    );
    let replacement = rotated.body["secret"].as_str().unwrap().to_owned();
    let saw = curl(
        "GET",
        &format!("{}/v1/analytics", system.gateway),
        &replacement,
        None,
    );
    assert!(
        saw.upstream_saw()
            .contains("x-stanna-scopes: analytics:read analytics:write\r\n")
    );

    // The unscoped key may do anything, making a key unscoped included.
    let new_id = rotated.body["key"]["id"].as_str().unwrap().to_owned();
    let freed = curl(
        "PATCH",
        &key_url(&new_id),
        &full,
        Some(&json!({"scopes": []})),
    );
    assert_eq!(freed.status, 200, "{}", freed.body);
    assert_eq!(freed.body["scopes"], json!([]));
    let bad = curl(
        "PATCH",
        &key_url(&new_id),
        &full,
        Some(&json!({"scopes": ["Bad!"]})),
    );
    assert_eq!(
        (bad.status, bad.body["error"]["field"].clone()),
        (400, json!("scopes[0]"))
    );

    // The admin CLI shows and sets scopes; an admin is never held to one.
    cli_sets_and_shows_scopes(&system, &new_id);
}

fn cli_sets_and_shows_scopes(system: &System, key_id: &str) {
    let env = [
        ("STANNA_REGISTRY_URL", format!("http://{}", system.registry)),
        ("STANNA_ADMIN_TOKEN", TOKEN.to_owned()),
        ("STANNA_GATEWAY_TOKEN", stanna_e2e::GATEWAY_TOKEN.to_owned()),
    ];
    let run = |args: &[&str]| run_to_exit(system.dir.path(), args, &env);
    let (code, out) = run(&[
        "keys",
        "update",
        key_id,
        "-w",
        WORKSPACE,
        "--scope",
        "reports:read",
        "--scope",
        "a.b",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("scopes       a.b reports:read"), "{out}");
    let (code, out) = run(&["keys", "get", key_id, "-w", WORKSPACE, "--json"]);
    assert_eq!(code, 0, "{out}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["scopes"], json!(["a.b", "reports:read"]));
    let (code, out) = run(&["keys", "update", key_id, "-w", WORKSPACE, "--unscoped"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("scopes       * (the user's full permissions)"),
        "{out}"
    );
    let (code, out) = run(&["keys", "update", key_id, "-w", WORKSPACE, "--scope", "NO"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("scopes[0]"), "{out}");
}
