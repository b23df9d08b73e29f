//! Usage per key as its users meet it, against the real `stanna serve` (SQLite, or PostgreSQL
//! when `DATABASE_URL` is set): requests sent through the gateway with curl — admitted,
//! rate-limited, out of workspace, inactive — show up as exactly those counts in
//! `GET /v1/keys/{id}/usage`, `GET /v1/keys/usage`, grpcurl's `GetKeyUsage` and `stanna keys usage`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stanna_e2e::{SharedStore, curl_get, grpcurl, grpcurl_call, run_to_exit, serve_on_free_ports};
use stanna_testkit::TempDir;

const TOKEN: &str = "e2e-usage-admin-token";
const WORKSPACE: &str = "ws_usage";

#[test]
fn usage_counts_what_was_sent_by_outcome() {
    const TEST: &str = "usage_counts_what_was_sent_by_outcome";
    let Some(grpcurl) = grpcurl(TEST) else { return };
    let dir = TempDir::new();
    let store = SharedStore::for_test(&dir, TEST);
    let (_stanna, registry, gateway) = serve_on_free_ports(
        dir.path(),
        &store,
        TOKEN,
        &[("STANNA_LAST_USED_FLUSH", "1s".to_owned())],
    );
    let registry = format!("127.0.0.1:{registry}");
    let grpc = |method: &str, body: &Value| {
        grpcurl_call(
            &grpcurl,
            &registry,
            &format!("stanna.keys.v1.KeyRegistry/{method}"),
            body,
            Some(TOKEN),
        )
    };
    let create = |name: &str, limits: Value| {
        let created = grpc(
            "CreateKey",
            &json!({"workspace_id": WORKSPACE, "user_id": "alice", "name": name, "rate_limits": limits}),
        )
        .expect("CreateKey");
        (
            created["key"]["id"].as_str().unwrap().to_owned(),
            created["secret"].as_str().unwrap().to_owned(),
        )
    };
    let (id, key) = create(
        "Counted",
        json!([{"name": "burst", "limit": 5, "period": "60s"}]),
    );
    let (reader_id, reader) = create("Reader", json!([]));
    let base = format!("http://127.0.0.1:{gateway}");
    let me = format!("{base}/v1/me");

    // What the test sent, tallied from the answers themselves.
    let mut sent = [0u64; 5]; // allowed, rate-limited, inactive, expired, forbidden
    let mut tally = |status: u16, body: &Value| match (status, body["error"]["code"].as_str()) {
        (200, _) => sent[0] += 1,
        (429, _) => sent[1] += 1,
        (401, Some("inactive_api_key")) => sent[2] += 1,
        (403, _) => sent[4] += 1,
        other => panic!("unexpected answer {other:?}: {body}"),
    };
    for _ in 0..8 {
        let (status, body) = curl_get(&me, &key, None);
        tally(status, &body);
    }
    for _ in 0..3 {
        let (status, body) = curl_get(&me, &key, Some("ws_elsewhere"));
        assert_eq!(status, 403, "{body}");
        tally(status, &body);
    }
    grpc(
        "UpdateKey",
        &json!({"workspace_id": WORKSPACE, "key_id": id, "status": "KEY_STATUS_INACTIVE"}),
    )
    .expect("UpdateKey");
    let mut inactive = 0;
    let started = Instant::now();
    while inactive < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never inactive"
        );
        let (status, body) = curl_get(&me, &key, None);
        tally(status, &body);
        if status == 401 {
            inactive += 1;
        }
    }
    // Not a key: nothing to count anywhere.
    let (status, _) = curl_get(&me, "sk-nonsense", None);
    assert_eq!(status, 401);
    assert_eq!(sent[0], 5, "the burst limit admits 5");
    assert!(sent[1] >= 3);
    let expected = json!({
        "allowed": sent[0], "rateLimited": sent[1], "inactive": sent[2], "expired": 0, "forbidden": sent[4],
    });

    // REST: the counts arrive with the next flush (1 s here); poll with a generous cap.
    let url = format!("{base}/v1/keys/{id}/usage?days=1");
    let started = Instant::now();
    let usage = loop {
        let (status, usage) = curl_get(&url, &reader, None);
        assert_eq!(status, 200, "{usage}");
        if usage["keys"][0]["total"] == expected {
            break usage;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "usage never matched what was sent: {usage} vs {expected}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let hours = usage["keys"][0]["hours"].as_array().unwrap();
    assert!(
        !hours.is_empty() && hours.len() <= 2,
        "this hour (and maybe the last): {usage}"
    );
    assert!(
        hours[0]["hour"].as_str().unwrap().ends_with(":00:00Z"),
        "{usage}"
    );

    // Several keys in one request; an id that is not the caller's is left out.
    let (status, many) = curl_get(
        &format!("{base}/v1/keys/usage?keyIds={id},{reader_id},AAAAAAAAAAAA"),
        &reader,
        None,
    );
    assert_eq!(status, 200, "{many}");
    let listed: Vec<&str> = many["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["keyId"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [id.as_str(), reader_id.as_str()]);
    assert_eq!(many["keys"][0]["total"], expected);
    assert!(
        many["keys"][1]["total"]["allowed"].as_u64().unwrap() >= 1,
        "the reader's own calls count: {many}"
    );
    for (query, field) in [
        ("keyIds=", "keyIds"),
        ("keyIds=a&days=31", "days"),
        ("keyIds=a&days=0", "days"),
        ("days=7", "keyIds"),
    ] {
        let (status, refused) = curl_get(&format!("{base}/v1/keys/usage?{query}"), &reader, None);
        assert_eq!(status, 400, "{query}: {refused}");
        assert_eq!(refused["error"]["field"], field, "{query}: {refused}");
    }
    let (status, _) = curl_get(&format!("{base}/v1/keys/AAAAAAAAAAAA/usage"), &reader, None);
    assert_eq!(status, 404);
    let (status, refused) = curl_get(&format!("{base}/v1/keys/not-an-id/usage"), &reader, None);
    assert_eq!(
        (status, &refused["error"]["field"]),
        (400, &json!("id")),
        "{refused}"
    );

    // grpcurl and the CLI say the same.
    let answer = grpc(
        "GetKeyUsage",
        &json!({"workspace_id": WORKSPACE, "key_ids": [id]}),
    )
    .expect("GetKeyUsage");
    let total = &answer["keys"][0]["total"];
    // grpcurl prints uint64 as strings and leaves zeros out (proto3 JSON).
    let n = |name: &str| {
        total[name]
            .as_str()
            .map_or(0, |v| v.parse::<u64>().unwrap())
    };
    assert_eq!(
        [
            n("allowed"),
            n("rateLimited"),
            n("inactive"),
            n("expired"),
            n("forbidden")
        ],
        sent,
        "{answer}"
    );
    let refused = grpc(
        "GetKeyUsage",
        &json!({"workspace_id": WORKSPACE, "key_ids": [id], "start_time": "2020-01-01T00:00:00Z"}),
    )
    .expect_err("beyond the retention");
    assert!(refused.1.contains("30 days"), "{refused:?}");
    let cli = |args: &[&str]| {
        let mut all = vec!["keys", "--registry"];
        let url = format!("http://{registry}");
        all.push(&url);
        all.extend_from_slice(args);
        run_to_exit(
            dir.path(),
            &all,
            &[("STANNA_ADMIN_TOKEN", TOKEN.to_owned())],
        )
    };
    let (code, out) = cli(&["--json", "usage", &id, "-w", WORKSPACE]);
    assert_eq!(code, 0, "{out}");
    let printed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(printed["keys"][0]["total"], expected, "{out}");
    let (code, out) = cli(&["usage", &id, &reader_id, "-w", WORKSPACE]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ALLOWED") && out.contains(&id) && out.contains(&reader_id),
        "{out}"
    );
    let line = out.lines().find(|l| l.starts_with(&id)).unwrap();
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        cells[1..],
        sent.map(|n| n.to_string())
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()[..],
        "{out}"
    );
    let (code, out) = cli(&["usage", &id, "-w", WORKSPACE, "--hourly"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("HOUR") && out.contains(":00:00Z"), "{out}");
    let (code, out) = cli(&["usage", &id, "-w", WORKSPACE, "--days", "31"]);
    assert_eq!(code, 2, "{out}");
}
