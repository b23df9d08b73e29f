//! Search as its users meet it, against the real `stanna serve` (SQLite, or PostgreSQL when
//! `DATABASE_URL` is set): `GET /v1/keys` through curl and `ListKeys` through grpcurl find exactly
//! the keys whose name contains the text (ignoring case), of a status, or unused for some days,
//! across pages; a page token works only for the listing it came from; bad filters are refused
//! naming the field.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use stanna_e2e::{SharedStore, curl_get, grpcurl, grpcurl_call, serve_on_free_ports};
use stanna_testkit::TempDir;

const TOKEN: &str = "e2e-search-admin-token";
const WORKSPACE: &str = "ws_search";

#[test]
fn search_finds_exactly_the_matching_keys_across_pages() {
    const TEST: &str = "search_finds_exactly_the_matching_keys_across_pages";
    let Some(grpcurl) = grpcurl(TEST) else { return };
    let dir = TempDir::new();
    let store = SharedStore::for_test(&dir, TEST);
    let (_stanna, registry, gateway) = serve_on_free_ports(dir.path(), &store, TOKEN, &[]);
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
    let names = [
        "Production Dashboard",
        "production worker",
        "Staging",
        "50% rollout",
        "5000 rollouts",
        "Équipe Paris",
    ];
    let mut made = Vec::new();
    for round in 0..3 {
        for name in names {
            let created = grpc(
                "CreateKey",
                &json!({"workspace_id": WORKSPACE, "user_id": "alice", "name": format!("{name} {round}")}),
            )
            .expect("CreateKey");
            made.push((
                created["key"]["id"].as_str().unwrap().to_owned(),
                created["key"]["name"].as_str().unwrap().to_owned(),
                created["secret"].as_str().unwrap().to_owned(),
            ));
        }
    }
    // Bob's key matches too, but Alice's key lists only Alice's keys.
    grpc(
        "CreateKey",
        &json!({"workspace_id": WORKSPACE, "user_id": "bob", "name": "production bob"}),
    )
    .expect("CreateKey");
    let staging: Vec<_> = made
        .iter()
        .filter(|(_, n, _)| n.starts_with("Staging"))
        .collect();
    for (id, _, _) in &staging[..2] {
        grpc(
            "UpdateKey",
            &json!({"workspace_id": WORKSPACE, "key_id": id, "status": "KEY_STATUS_INACTIVE"}),
        )
        .expect("UpdateKey");
    }
    let key = &made[0].2;
    let base = format!("http://127.0.0.1:{gateway}/v1/keys");
    let matching = |needle: &str| -> BTreeSet<String> {
        made.iter()
            .filter(|(_, n, _)| n.to_lowercase().contains(needle))
            .map(|(id, _, _)| id.clone())
            .collect()
    };
    // Every page of a REST listing with `query`, two keys a page.
    let rest_all = |query: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut token = String::new();
        loop {
            let url = format!("{base}?pageSize=2&{query}{token}");
            let (status, page) = curl_get(&url, key, None);
            assert_eq!(status, 200, "{url}: {page}");
            for k in page["keys"].as_array().unwrap() {
                assert!(
                    seen.insert(k["id"].as_str().unwrap().to_owned()),
                    "listed twice: {k}"
                );
            }
            match page["nextPageToken"].as_str() {
                Some(next) => token = format!("&pageToken={next}"),
                None => return seen,
            }
        }
    };
    assert_eq!(rest_all("nameContains=PRODUCTION"), matching("production"));
    assert_eq!(matching("production").len(), 6);
    assert_eq!(rest_all("nameContains=50%25"), matching("50%"));
    assert_eq!(matching("50%").len(), 3, "% is a plain character");
    assert_eq!(rest_all("nameContains=%C3%A9QUIPE"), matching("équipe"));
    assert_eq!(rest_all("nameContains=nothing+like+it"), BTreeSet::new());
    let inactive: BTreeSet<String> = staging[..2].iter().map(|(id, _, _)| id.clone()).collect();
    assert_eq!(rest_all("status=KEY_STATUS_INACTIVE"), inactive);
    assert_eq!(
        rest_all("nameContains=staging&status=KEY_STATUS_ACTIVE"),
        BTreeSet::from([staging[2].0.clone()])
    );
    assert_eq!(
        rest_all("unusedForDays=1"),
        BTreeSet::new(),
        "every key is new"
    );

    // A token from one listing does not continue another.
    let (_, first) = curl_get(
        &format!("{base}?pageSize=2&nameContains=production"),
        key,
        None,
    );
    let token = first["nextPageToken"].as_str().unwrap();
    let (status, refused) = curl_get(&format!("{base}?pageSize=2&pageToken={token}"), key, None);
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["field"], "pageToken", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("different listing"),
        "{refused}"
    );
    // Bad filters name their field.
    for (query, field) in [
        (format!("nameContains={}", "x".repeat(101)), "nameContains"),
        ("status=SOMETIMES".to_owned(), "status"),
        ("unusedForDays=0".to_owned(), "unusedForDays"),
        ("unusedForDays=36501".to_owned(), "unusedForDays"),
        ("unusedForDays=soon".to_owned(), "unusedForDays"),
    ] {
        let (status, refused) = curl_get(&format!("{base}?{query}"), key, None);
        assert_eq!(status, 400, "{query}: {refused}");
        assert_eq!(refused["error"]["field"], field, "{query}: {refused}");
    }

    // grpcurl: the same search over the whole workspace includes Bob's key.
    let mut ids = BTreeSet::new();
    let mut token = String::new();
    loop {
        let page = grpc(
            "ListKeys",
            &json!({"workspace_id": WORKSPACE, "name_contains": "Production", "page_size": 4, "page_token": token}),
        )
        .expect("ListKeys");
        for k in page["keys"].as_array().into_iter().flatten() {
            ids.insert(k["name"].as_str().unwrap().to_owned());
        }
        match page["nextPageToken"].as_str() {
            Some(next) if !next.is_empty() => token = next.to_owned(),
            _ => break,
        }
    }
    assert_eq!(ids.len(), 7, "{ids:?}");
    assert!(ids.contains("production bob"));
    let refused = grpc(
        "ListKeys",
        &json!({"workspace_id": WORKSPACE, "unused_for_days": 40000}),
    )
    .expect_err("out of range");
    assert!(
        refused.0.contains("InvalidArgument") && refused.1.contains("unused_for_days"),
        "{refused:?}"
    );
}
