//! Live key changes as an admin makes them (grpcurl's `UpdateKey` with an `update_mask`) and as a
//! key's owner makes them (REST `PATCH`), against the real `stanna serve` on SQLite, or on
//! PostgreSQL when `DATABASE_URL` is set: a limit lowered binds within a second and keeps what was
//! admitted, an expiry moved earlier stops the key, the key API cannot move one later, and
//! metadata reaches Verify only when asked for.

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use stanna_e2e::{SESSION_SECRET, SharedStore, Stanna, free_port, grpcurl, grpcurl_call};
use stanna_testkit::TempDir;

const TOKEN: &str = "e2e-key-changes-admin-token";
/// How long a change may take to reach the gateway before the test calls it a failure: far above
/// the promised second, so a slow CI machine does not fail it, while the figure is printed.
const CAP: Duration = Duration::from_secs(10);

struct System {
    _stanna: Stanna,
    registry: String,
    auth_check: String,
    gateway: String,
    grpcurl: std::path::PathBuf,
    _store: SharedStore,
    _dir: TempDir,
}

impl System {
    fn start(test: &str) -> Option<Self> {
        let grpcurl = grpcurl(test)?;
        let dir = TempDir::new();
        let store = SharedStore::for_test(&dir, test);
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
                ("STANNA_SESSION_SECRET", SESSION_SECRET.to_owned()),
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
            _dir: dir,
        })
    }

    /// An admin call; `Ok(json)` or `Err((grpc code name, message))`.
    fn admin(&self, method: &str, body: &Value) -> Result<Value, (String, String)> {
        grpcurl_call(&self.grpcurl, &self.registry, method, body, Some(TOKEN))
    }

    fn verify(&self, body: &Value) -> Value {
        grpcurl_call(
            &self.grpcurl,
            &self.auth_check,
            "stanna.keys.v1.AuthCheck/Verify",
            body,
            None,
        )
        .expect("Verify answers")
    }

    fn create(&self, body: Value) -> (String, String) {
        let created = self
            .admin("stanna.keys.v1.KeyRegistry/CreateKey", &body)
            .expect("CreateKey");
        (
            created["key"]["id"].as_str().unwrap().to_owned(),
            created["secret"].as_str().unwrap().to_owned(),
        )
    }

    fn update(&self, body: Value) -> Result<Value, (String, String)> {
        self.admin("stanna.keys.v1.KeyRegistry/UpdateKey", &body)
    }
}

/// `curl` a gateway route: status, the headers (lowercased names) and the JSON body.
fn curl(method: &str, url: &str, key: &str, body: Option<&Value>) -> (u16, String, Value) {
    let mut command = Command::new("curl");
    command.args([
        "-sS",
        "-i",
        "-X",
        method,
        "-H",
        &format!("authorization: Bearer {key}"),
    ]);
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
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let json = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()))
    };
    (status, head.to_ascii_lowercase(), json)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// RFC 3339 for `from_now` (negative: in the past), whole seconds.
fn at(from_now: i64) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    stanna_keys::time::rfc3339(
        SystemTime::UNIX_EPOCH + Duration::from_secs((now + from_now) as u64),
    )
}

/// Polls `check` until it holds, for at most [`CAP`]; how long it took.
fn within_cap(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < CAP, "{what}: not seen within {CAP:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    println!("{what}: {took:?}");
    took
}

#[test]
fn a_limit_lowered_with_grpcurl_binds_at_the_gateway_within_a_second_and_keeps_what_was_admitted() {
    let test = "a_limit_lowered_with_grpcurl_binds_at_the_gateway_within_a_second";
    let Some(system) = System::start(test) else {
        return;
    };
    let (id, secret) = system.create(json!({
        "workspace_id": "ws_live", "user_id": "alice", "name": "live limits"
    }));
    let me = format!("{}/v1/me", system.gateway);
    for _ in 0..5 {
        let (status, head, _) = curl("GET", &me, &secret, None);
        assert_eq!(status, 200);
        assert_eq!(header(&head, "x-ratelimit-limit-burst"), Some("100"));
    }

    // The admin lowers the burst window to 3 a minute: the 5 already admitted count against it.
    let lowered = system
        .update(json!({
            "workspace_id": "ws_live", "key_id": id,
            "rate_limits": [{"name": "burst", "limit": 3, "period": "60s"}],
            "update_mask": {"paths": ["rate_limits"]}
        }))
        .expect("UpdateKey with a mask");
    assert_eq!(lowered["overriddenLimits"], json!(["burst"]));
    assert_eq!(lowered["rateLimits"][0]["limit"], 3);
    assert_eq!(
        lowered["rateLimits"][1]["limit"], 1000,
        "hourly keeps its default"
    );
    let took = within_cap("lowered limit reaches the gateway", || {
        let (status, head, body) = curl("GET", &me, &secret, None);
        match header(&head, "x-ratelimit-limit-burst") {
            Some("3") => {
                assert_eq!(status, 429, "5 admitted already exceed 3: {body}");
                assert_eq!(body["error"]["code"], "rate_limited");
                true
            }
            _ => false,
        }
    });
    assert!(took < CAP);

    // Cleared through the mask (no windows listed): back to the defaults, admitted again.
    let cleared = system
        .update(json!({"workspace_id": "ws_live", "key_id": id, "update_mask": {"paths": ["rate_limits"]}}))
        .expect("clear the overrides");
    assert_eq!(cleared.get("overriddenLimits"), None);
    within_cap("cleared limit reaches the gateway", || {
        let (status, head, _) = curl("GET", &me, &secret, None);
        status == 200 && header(&head, "x-ratelimit-limit-burst") == Some("100")
    });

    // Without a mask, only the windows given change.
    let hourly = system
        .update(json!({
            "workspace_id": "ws_live", "key_id": id,
            "rate_limits": [{"name": "hourly", "limit": 9, "period": "3600s"}]
        }))
        .unwrap();
    assert_eq!(hourly["overriddenLimits"], json!(["hourly"]));
    assert_eq!(hourly["name"], "live limits");
    within_cap("an hourly limit of 9 binds", || {
        let (status, head, _) = curl("GET", &me, &secret, None);
        header(&head, "x-ratelimit-limit-hourly") == Some("9") && status == 429
    });

    // Bad masks and limits are refused, naming the field, and change nothing.
    for (body, field) in [
        (
            json!({"update_mask": {"paths": ["owner"]}}),
            "update_mask.paths[0]",
        ),
        (json!({"update_mask": {"paths": ["name"]}}), "name"),
        (json!({"update_mask": {"paths": ["status"]}}), "status"),
        (
            json!({"rate_limits": [{"name": "burst", "limit": 0, "period": "60s"}]}),
            "rate_limits[0].limit",
        ),
        (
            json!({"rate_limits": [{"name": "daily", "limit": 5, "period": "60s"}]}),
            "rate_limits[0].name",
        ),
    ] {
        let mut body = body;
        body["workspace_id"] = json!("ws_live");
        body["key_id"] = json!(id);
        let (code, message) = system.update(body.clone()).expect_err("refused");
        assert_eq!(code, "InvalidArgument", "{body}: {message}");
        assert!(message.starts_with(field), "{body}: {message}");
    }
    let key = system
        .admin(
            "stanna.keys.v1.KeyRegistry/GetKey",
            &json!({"workspace_id": "ws_live", "key_id": id}),
        )
        .unwrap();
    assert_eq!(key["overriddenLimits"], json!(["hourly"]));
}

#[test]
fn an_expiry_moved_earlier_stops_the_key_and_the_key_api_cannot_move_one_later() {
    let test = "an_expiry_moved_earlier_stops_the_key_and_the_key_api_cannot_move_one_later";
    let Some(system) = System::start(test) else {
        return;
    };
    let (_, caller) = system.create(json!({
        "workspace_id": "ws_exp", "user_id": "bob", "name": "caller"
    }));
    let keys = format!("{}/v1/keys", system.gateway);
    let (status, _, created) = curl(
        "POST",
        &keys,
        &caller,
        Some(&json!({"name": "short-lived", "expiresAt": at(86_400)})),
    );
    assert_eq!(status, 201, "{created}");
    let (id, secret) = (
        created["key"]["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    );
    let url = format!("{keys}/{id}");
    let original = created["key"]["expiresAt"].clone();

    // Later is refused, with the current expiry named, and nothing changes.
    let (status, _, body) = curl(
        "PATCH",
        &url,
        &caller,
        Some(&json!({"expiresAt": at(172_800)})),
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("expiresAt: can only move earlier"),
        "{message}"
    );
    let (_, _, read) = curl("GET", &url, &caller, None);
    assert_eq!(read["expiresAt"], original);
    // Null keeps it; an unknown field is refused as before.
    let (status, _, read) = curl("PATCH", &url, &caller, Some(&json!({"expiresAt": null})));
    assert_eq!((status, &read["expiresAt"]), (200, &original));

    // Earlier is taken; a time already past stops the key at once, everywhere within a second.
    let soon = at(3600);
    let (status, _, body) = curl("PATCH", &url, &caller, Some(&json!({"expiresAt": soon})));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expiresAt"], json!(soon));
    let me = format!("{}/v1/me", system.gateway);
    assert_eq!(curl("GET", &me, &secret, None).0, 200);
    let (status, _, _) = curl("PATCH", &url, &caller, Some(&json!({"expiresAt": at(-60)})));
    assert_eq!(status, 200);
    within_cap("an expiry moved to the past stops the key", || {
        let (status, _, body) = curl("GET", &me, &secret, None);
        status == 401 && body["error"]["code"] == "expired_api_key"
    });

    // Expired stays expired: neither the key API nor an admin revives it.
    let (status, _, body) = curl("PATCH", &url, &caller, Some(&json!({"expiresAt": at(60)})));
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("has expired")
    );
    let (code, message) = system
        .update(json!({"workspace_id": "ws_exp", "key_id": id, "expires_at": at(86_400)}))
        .expect_err("an admin cannot revive an expired key");
    assert_eq!(code, "FailedPrecondition");
    assert!(
        message.starts_with("expires_at: the key has expired"),
        "{message}"
    );
    let (code, _) = system
        .update(json!({"workspace_id": "ws_exp", "key_id": id, "update_mask": {"paths": ["expires_at"]}}))
        .expect_err("nor clear its expiry");
    assert_eq!(code, "FailedPrecondition");

    // A rotated-out key's grace only shortens, for an admin too.
    let (old_id, _) = system.create(json!({
        "workspace_id": "ws_exp", "user_id": "bob", "name": "to rotate"
    }));
    let (status, _, _) = curl(
        "POST",
        &format!("{keys}/{old_id}/rotate"),
        &caller,
        Some(&json!({"gracePeriod": "3600s"})),
    );
    assert_eq!(status, 200);
    for body in [
        json!({"workspace_id": "ws_exp", "key_id": old_id, "expires_at": at(7200)}),
        json!({"workspace_id": "ws_exp", "key_id": old_id, "update_mask": {"paths": ["expires_at"]}}),
    ] {
        let (code, message) = system.update(body).expect_err("no longer grace");
        assert_eq!(code, "FailedPrecondition");
        assert!(message.contains("rotated out"), "{message}");
    }
    let shorter_at = at(600);
    let shorter = system
        .update(json!({"workspace_id": "ws_exp", "key_id": old_id, "expires_at": shorter_at}))
        .expect("a shorter grace");
    assert_eq!(shorter["expiresAt"], json!(shorter_at));

    // A live, never-rotated key: an admin may extend its expiry and clear it.
    let (free_id, _) = system.create(json!({
        "workspace_id": "ws_exp", "user_id": "bob", "name": "admin's", "expires_at": at(600)
    }));
    let later = at(86_400);
    let extended = system
        .update(json!({"workspace_id": "ws_exp", "key_id": free_id, "expires_at": later}))
        .unwrap();
    assert_eq!(extended["expiresAt"], json!(later));
    let cleared = system
        .update(json!({"workspace_id": "ws_exp", "key_id": free_id, "update_mask": {"paths": ["expires_at"]}}))
        .unwrap();
    assert_eq!(cleared.get("expiresAt"), None);
}

#[test]
fn metadata_set_by_an_admin_reaches_verify_only_when_asked_for() {
    let test = "metadata_set_by_an_admin_reaches_verify_only_when_asked_for";
    let Some(system) = System::start(test) else {
        return;
    };
    let (id, secret) = system.create(json!({
        "workspace_id": "ws_meta", "user_id": "carol", "name": "with metadata",
        "metadata": "{ \"plan\": \"pro\", \"customer\": 42 }"
    }));
    let key = system
        .admin(
            "stanna.keys.v1.KeyRegistry/GetKey",
            &json!({"workspace_id": "ws_meta", "key_id": id}),
        )
        .unwrap();
    assert_eq!(
        key["metadata"], r#"{"plan":"pro","customer":42}"#,
        "stored compact"
    );
    let plain = system.verify(&json!({"key": secret}));
    assert_eq!(plain["valid"], true);
    assert_eq!(plain.get("metadata"), None, "not sent unless asked for");
    let asked = system.verify(&json!({"key": secret, "includeMetadata": true}));
    assert_eq!(asked["metadata"], r#"{"plan":"pro","customer":42}"#);

    system
        .update(json!({"workspace_id": "ws_meta", "key_id": id, "metadata": "{\"plan\":\"team\"}"}))
        .unwrap();
    within_cap("new metadata reaches Verify", || {
        system.verify(&json!({"key": secret, "includeMetadata": true}))["metadata"]
            == r#"{"plan":"team"}"#
    });
    let cleared = system
        .update(json!({"workspace_id": "ws_meta", "key_id": id, "update_mask": {"paths": ["metadata"]}}))
        .unwrap();
    assert_eq!(cleared.get("metadata"), None);

    // Refusals name the field and never repeat what was sent (it may be anyone's secret).
    let key_inside = format!(r#"{{"note":"{secret}"}}"#);
    let long = format!(r#"{{"a":"{}"}}"#, "x".repeat(1100));
    for (metadata, reason) in [
        ("[1, 2]", "must be a JSON object, got an array"),
        ("{\"a\":", "must be a JSON object; it does not parse"),
        (long.as_str(), "must be at most 1024 bytes, got 1108"),
        (key_inside.as_str(), "must not contain an API key"),
    ] {
        let (code, message) = system
            .update(json!({"workspace_id": "ws_meta", "key_id": id, "metadata": metadata}))
            .expect_err("refused");
        assert_eq!(code, "InvalidArgument");
        assert!(
            message.starts_with(&format!("metadata: {reason}")),
            "{message}"
        );
        assert!(
            !message.contains(&secret[3..20]),
            "the refusal repeats the input"
        );
    }
}
