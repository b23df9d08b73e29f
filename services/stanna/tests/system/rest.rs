//! The REST key API through the real gateway: a key manages its own user's keys in its own
//! workspace and nothing else; every bad body is a 400 naming the field; the answers match the
//! OpenAPI document the gateway serves.

use axum::body::Body;
use http::Method;
use serde_json::{Value, json};
use std::time::Duration;

use crate::stack::{Options, Reply, Stack, eventually};

const WS: &str = "ws-a";
const USER: &str = "user-1";

#[tokio::test]
async fn a_key_creates_lists_gets_renames_deactivates_rotates_and_deletes_its_users_keys() {
    let stack = Stack::start().await;
    let (caller, caller_key) = stack.create_key(WS, USER).await;

    // Create: 201, the secret once, default limits, the caller's workspace and user.
    let created = stack
        .json_with_key(
            Method::POST,
            "/v1/keys",
            &caller,
            r#"{"name":"Analytics Script"}"#,
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert!(created.has_rate_limit_headers());
    let body = created.json();
    let secret = body["secret"].as_str().unwrap().to_owned();
    let id = body["key"]["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("sk-") && secret.len() == 53);
    assert_eq!(body["key"]["workspaceId"], WS);
    assert_eq!(body["key"]["userId"], USER);
    assert_eq!(body["key"]["name"], "Analytics Script");
    assert_eq!(body["key"]["status"], "KEY_STATUS_ACTIVE");
    assert!(body["key"]["createdAt"].as_str().unwrap().ends_with('Z'));
    assert!(
        body["key"].get("lastUsedAt").is_none(),
        "unset fields are omitted"
    );
    assert_eq!(
        body["key"]["rateLimits"],
        json!([{"name":"burst","limit":100,"period":"60s"},{"name":"hourly","limit":1000,"period":"3600s"}])
    );
    // The new key works.
    let me = stack.get_with_key("/v1/me", &secret).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["keyId"], id.as_str());

    // List: newest first, both keys, never a secret.
    let list = stack.get_with_key("/v1/keys", &caller).await;
    assert_eq!(list.status, 200);
    let ids: Vec<String> = list.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, [id.clone(), caller_key.id.clone()]);
    assert!(!String::from_utf8_lossy(&list.body).contains(&secret[3..]));

    // Get and rename (merge: the status stays).
    let got = stack.get_with_key(&format!("/v1/keys/{id}"), &caller).await;
    assert_eq!(got.json()["name"], "Analytics Script");
    let renamed = stack
        .json_with_key(
            Method::PATCH,
            &format!("/v1/keys/{id}"),
            &caller,
            r#"{"name":"Mobile App"}"#,
        )
        .await;
    assert_eq!(renamed.status, 200);
    assert_eq!(renamed.json()["name"], "Mobile App");
    assert_eq!(renamed.json()["status"], "KEY_STATUS_ACTIVE");

    // Deactivate, then the key is refused; the name stays.
    let inactive = stack
        .json_with_key(
            Method::PATCH,
            &format!("/v1/keys/{id}"),
            &caller,
            r#"{"status":"KEY_STATUS_INACTIVE"}"#,
        )
        .await;
    assert_eq!(inactive.json()["status"], "KEY_STATUS_INACTIVE");
    assert_eq!(inactive.json()["name"], "Mobile App");
    eventually(
        Duration::from_secs(10),
        "refusal of the inactive key",
        || async { stack.get_with_key("/v1/me", &secret).await.status == 401 },
    )
    .await;

    // Rotate with a grace period: a new secret, the old key listed with its expiry.
    let rotated = stack
        .json_with_key(
            Method::POST,
            &format!("/v1/keys/{id}/rotate"),
            &caller,
            r#"{"gracePeriod":"3600s"}"#,
        )
        .await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.body);
    let new_id = rotated.json()["key"]["id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, id);
    assert_eq!(rotated.json()["key"]["name"], "Mobile App");
    assert_eq!(
        rotated.json()["key"]["status"],
        "KEY_STATUS_INACTIVE",
        "the replacement of an inactive key is inactive too"
    );
    let old = stack.get_with_key(&format!("/v1/keys/{id}"), &caller).await;
    assert!(old.json()["expiresAt"].as_str().unwrap().ends_with('Z'));
    // Rotating it again is a conflict, naming the replacement.
    let again = stack
        .json_with_key(Method::POST, &format!("/v1/keys/{id}/rotate"), &caller, "")
        .await;
    again.assert_error(409, "conflict");
    let message = again.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.starts_with("id: ") && message.contains(&new_id),
        "the REST spelling, naming the replacement: {message}"
    );

    // Delete: 204, then 404, and deleting twice is 404.
    let deleted = stack
        .call(
            Method::DELETE,
            &format!("/v1/keys/{new_id}"),
            &[("authorization", &format!("Bearer {caller}"))],
            Body::empty(),
        )
        .await;
    assert_eq!(deleted.status, 204);
    assert!(deleted.body.is_empty());
    assert!(deleted.has_rate_limit_headers());
    stack
        .get_with_key(&format!("/v1/keys/{new_id}"), &caller)
        .await
        .assert_error(404, "not_found");
    stack
        .call(
            Method::DELETE,
            &format!("/v1/keys/{new_id}"),
            &[("authorization", &format!("Bearer {caller}"))],
            Body::empty(),
        )
        .await
        .assert_error(404, "not_found");
}

/// A key rotated with a grace period keeps working until the grace ends, then is refused; its
/// replacement works at once, with the old key's status.
#[tokio::test]
async fn a_rotated_key_works_through_its_grace_and_is_refused_after_it() {
    let stack = Stack::start().await;
    let (old, key) = stack.create_key(WS, USER).await;
    let rotated = stack
        .json_with_key(
            Method::POST,
            &format!("/v1/keys/{}/rotate", key.id),
            &old,
            r#"{"gracePeriod":"60s"}"#,
        )
        .await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.body);
    let replacement = rotated.json();
    assert_eq!(replacement["key"]["status"], "KEY_STATUS_ACTIVE");
    let new = replacement["secret"].as_str().unwrap().to_owned();
    assert_eq!(stack.get_with_key("/v1/me", &new).await.status, 200);
    // The old key's expiry reaches auth-check by its next change poll; within the grace it works.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        stack.get_with_key("/v1/me", &old).await.status,
        200,
        "the old key works during its grace period"
    );
    stack.clock.advance(Duration::from_secs(61));
    let refused = stack.get_with_key("/v1/me", &old).await;
    refused.assert_error(401, "expired_api_key");
    assert_eq!(stack.get_with_key("/v1/me", &new).await.status, 200);
}

#[tokio::test]
async fn a_key_cannot_see_or_touch_another_workspaces_or_another_users_keys() {
    let stack = Stack::start().await;
    let (caller, _) = stack.create_key(WS, USER).await;
    let (_, other_workspace) = stack.create_key("ws-b", USER).await;
    let (_, other_user) = stack.create_key(WS, "user-2").await;
    for target in [&other_workspace.id, &other_user.id] {
        let path = format!("/v1/keys/{target}");
        stack
            .get_with_key(&path, &caller)
            .await
            .assert_error(404, "not_found");
        stack
            .json_with_key(Method::PATCH, &path, &caller, r#"{"name":"mine now"}"#)
            .await
            .assert_error(404, "not_found");
        stack
            .json_with_key(Method::POST, &format!("{path}/rotate"), &caller, "{}")
            .await
            .assert_error(404, "not_found");
        stack
            .call(
                Method::DELETE,
                &path,
                &[("authorization", &format!("Bearer {caller}"))],
                Body::empty(),
            )
            .await
            .assert_error(404, "not_found");
    }
    let listed = stack.get_with_key("/v1/keys", &caller).await.json();
    assert_eq!(listed["keys"].as_array().unwrap().len(), 1, "{listed}");
    // The other keys are untouched.
    let mut admin = stack.admin();
    let still = admin
        .get_key(stanna_proto::keys::v1::GetKeyRequest {
            workspace_id: "ws-b".into(),
            user_id: String::new(),
            key_id: other_workspace.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still.name, "test key");
}

#[tokio::test]
async fn every_bad_body_or_parameter_is_400_naming_the_field() {
    let stack = Stack::start().await;
    let (caller, key) = stack.create_key(WS, USER).await;
    let one = format!("/v1/keys/{}", key.id);
    let rotate = format!("/v1/keys/{}/rotate", key.id);
    let long_name = format!(r#"{{"name":"{}"}}"#, "x".repeat(101));
    let cases: Vec<(Method, &str, &str, &str)> = vec![
        (Method::POST, "/v1/keys", "", "body"),
        (Method::POST, "/v1/keys", "{", "body"),
        (Method::POST, "/v1/keys", "[1]", "body"),
        (Method::POST, "/v1/keys", "{}", "name"),
        (Method::POST, "/v1/keys", r#"{"name":5}"#, "name"),
        (Method::POST, "/v1/keys", r#"{"name":""}"#, "name"),
        (Method::POST, "/v1/keys", &long_name, "name"),
        (
            Method::POST,
            "/v1/keys",
            r#"{"name":"a","rateLimits":[]}"#,
            "rateLimits",
        ),
        (
            Method::POST,
            "/v1/keys",
            r#"{"name":"a","workspaceId":"ws-b"}"#,
            "workspaceId",
        ),
        (
            Method::POST,
            "/v1/keys",
            r#"{"name":"a","userId":"user-2"}"#,
            "userId",
        ),
        (
            Method::POST,
            "/v1/keys",
            r#"{"name":"a","colour":"red"}"#,
            "colour",
        ),
        (
            Method::POST,
            "/v1/keys",
            r#"{"name":"a","expiresAt":"tomorrow"}"#,
            "expiresAt",
        ),
        (
            Method::POST,
            "/v1/keys",
            r#"{"name":"a","expiresAt":"2001-01-01T00:00:00Z"}"#,
            "expiresAt",
        ),
        (Method::PATCH, &one, r#"{"status":"ON"}"#, "status"),
        (Method::PATCH, &one, r#"{"name":""}"#, "name"),
        (Method::PATCH, &one, r#"{"id":"other"}"#, "id"),
        (
            Method::POST,
            &rotate,
            r#"{"gracePeriod":"1h"}"#,
            "gracePeriod",
        ),
        (
            Method::POST,
            &rotate,
            r#"{"gracePeriod":"99999999s"}"#,
            "gracePeriod",
        ),
        (Method::GET, "/v1/keys?pageSize=abc", "", "pageSize"),
        (Method::GET, "/v1/keys?pageSize=1000", "", "pageSize"),
        (Method::GET, "/v1/keys?pageToken=zzz", "", "pageToken"),
        (Method::GET, "/v1/keys?colour=red", "", "colour"),
        (Method::GET, "/v1/keys/not*an*id", "", "id"),
        (Method::GET, "/v1/keys/%FF%FE", "", "id"),
        (Method::DELETE, "/v1/keys/%FF", "", "id"),
    ];
    for (method, path, body, field) in cases {
        let reply = stack
            .json_with_key(method.clone(), path, &caller, body)
            .await;
        reply.assert_error(400, "invalid_request");
        let json = reply.json();
        assert_eq!(
            json["error"]["field"], field,
            "{method} {path} {body}: {json}"
        );
        assert!(
            json["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(field),
            "the message starts with the field: {json}"
        );
        assert!(reply.has_rate_limit_headers(), "a decision was made");
    }
}

#[tokio::test]
async fn a_user_at_the_key_maximum_gets_409_too_many_keys() {
    let stack = Stack::start_with(Options {
        max_keys_per_user: 2,
        ..Options::default()
    })
    .await;
    let (caller, _) = stack.create_key(WS, USER).await;
    let second = stack
        .json_with_key(Method::POST, "/v1/keys", &caller, r#"{"name":"two"}"#)
        .await;
    assert_eq!(second.status, 201);
    stack
        .json_with_key(Method::POST, "/v1/keys", &caller, r#"{"name":"three"}"#)
        .await
        .assert_error(409, "too_many_keys");
}

#[tokio::test]
async fn a_body_over_64_kib_is_413_and_a_wrong_method_405() {
    let stack = Stack::start().await;
    let (caller, _) = stack.create_key(WS, USER).await;
    let huge = format!(r#"{{"name":"{}"}}"#, "x".repeat(70 * 1024));
    stack
        .json_with_key(Method::POST, "/v1/keys", &caller, &huge)
        .await
        .assert_error(413, "payload_too_large");
    // Also on a route that reads no body: refused from its Content-Length, before the handler.
    let bearer = format!("Bearer {caller}");
    stack
        .call(
            Method::GET,
            "/v1/me",
            &[("authorization", &bearer)],
            huge.clone(),
        )
        .await
        .assert_error(413, "payload_too_large");
    let wrong = stack
        .json_with_key(Method::PUT, "/v1/keys", &caller, "{}")
        .await;
    wrong.assert_error(405, "method_not_allowed");
    let mut allowed: Vec<&str> = wrong.header("allow").split(',').map(str::trim).collect();
    allowed.sort_unstable();
    assert_eq!(
        allowed,
        ["GET", "HEAD", "POST"],
        "the Allow header lists the methods"
    );
}

/// With the registry down, a REST call is 503 `unavailable` — and carries no rate-limit headers
/// even though a quota decision was made: a 503 never does.
#[tokio::test]
async fn a_rest_call_with_the_registry_down_is_503_without_rate_limit_headers() {
    let port = crate::stack::closed_port().await;
    let stack = Stack::start_with(Options {
        registry: Some(stanna_grpc::lazy_channel(&format!("http://{port}")).unwrap()),
        ..Options::default()
    })
    .await;
    let (caller, _) = stack.create_key(WS, USER).await;
    let reply = stack
        .json_with_key(Method::POST, "/v1/keys", &caller, r#"{"name":"x"}"#)
        .await;
    reply.assert_error(503, "unavailable");
    reply.assert_no_rate_limit_headers();
}

#[tokio::test]
async fn pages_walk_every_key_once() {
    let stack = Stack::start().await;
    let (caller, _) = stack.create_key(WS, USER).await;
    for i in 0..6 {
        let r = stack
            .json_with_key(
                Method::POST,
                "/v1/keys",
                &caller,
                &format!(r#"{{"name":"k{i}"}}"#),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = stack
            .get_with_key(&format!("/v1/keys?pageSize=4&pageToken={token}"), &caller)
            .await
            .json();
        for key in page["keys"].as_array().unwrap() {
            seen.push(key["id"].as_str().unwrap().to_owned());
        }
        match page.get("nextPageToken") {
            Some(next) => token = next.as_str().unwrap().to_owned(),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (7, 7), "{seen:?}");
}

#[tokio::test]
async fn me_tells_the_caller_who_it_is_and_its_windows() {
    let stack = Stack::start().await;
    let (caller, key) = stack.create_key(WS, USER).await;
    let me = stack.get_with_key("/v1/me", &caller).await.json();
    assert_eq!(me["workspaceId"], WS);
    assert_eq!(me["userId"], USER);
    assert_eq!(me["keyId"], key.id.as_str());
    assert_eq!(me["name"], "test key");
    assert_eq!(me["windows"][0]["name"], "burst");
    assert_eq!(me["windows"][0]["limit"], 100);
    assert_eq!(me["windows"][0]["remaining"], 99);
    assert_eq!(me["windows"][0]["period"], "60s");
    assert_eq!(me["windows"][1]["name"], "hourly");
    assert_eq!(me["windows"][1]["remaining"], 999);
}

// ---------------------------------------------------------------- the OpenAPI document

/// Checks that `reply` is documented for `method path`: its status is listed and its body
/// conforms to the listed schema.
fn documented(doc: &Value, path: &str, method: &str, reply: &Reply) {
    let operation = &doc["paths"][path][method];
    assert!(
        operation.is_object(),
        "{method} {path} is not in the document"
    );
    let status = reply.status.as_u16().to_string();
    let mut response = &operation["responses"][&status];
    assert!(
        response.is_object(),
        "{method} {path} answered {status}, which the document does not list"
    );
    if let Some(reference) = response.get("$ref").and_then(Value::as_str) {
        response = &doc["components"]["responses"]
            [reference.trim_start_matches("#/components/responses/")];
    }
    if let Some(schema) = response.pointer("/content/application~1json/schema") {
        let body = reply.json();
        let errors = schema_errors(doc, schema, &body);
        assert!(
            errors.is_empty(),
            "{method} {path} {status} breaks its schema: {errors:?}\n{body}"
        );
    } else {
        assert!(
            reply.body.is_empty(),
            "{method} {path} {status} has an undocumented body"
        );
    }
}

/// What a real validator finds wrong with `value` under `schema`. The document's schemas are
/// JSON Schema 2020-12 (OpenAPI 3.1): the schema is checked with the document's components beside
/// it, so its `$ref`s resolve, formats (`date-time`) included.
fn schema_errors(doc: &Value, schema: &Value, value: &Value) -> Vec<String> {
    let mut root = schema.clone();
    root["components"] = doc["components"].clone();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("unusable schema {schema}: {e}"));
    validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[tokio::test]
async fn the_served_openapi_document_describes_what_the_server_answers() {
    let stack = Stack::start().await;
    let doc = stack
        .call(Method::GET, "/openapi.json", &[], Body::empty())
        .await
        .json();
    let mut operations: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| format!("{method} {path}"))
        })
        .collect();
    operations.sort();
    assert_eq!(
        operations,
        [
            "delete /v1/keys/{id}",
            "get /healthz",
            "get /openapi.json",
            "get /readyz",
            "get /v1/audit",
            "get /v1/keys",
            "get /v1/keys/usage",
            "get /v1/keys/{id}",
            "get /v1/keys/{id}/usage",
            "get /v1/me",
            "patch /v1/keys/{id}",
            "post /v1/keys",
            "post /v1/keys/{id}/rotate",
        ],
        "the document lists exactly the routes the gateway serves"
    );

    let (caller, _) = stack.create_key(WS, USER).await;
    let bearer = format!("Bearer {caller}");
    let auth = [("authorization", bearer.as_str())];
    let me = stack.get_with_key("/v1/me", &caller).await;
    documented(&doc, "/v1/me", "get", &me);
    // The check itself can fail: an answer with a field the document does not list, or a time
    // that is not RFC 3339, breaks the schema.
    let me_schema =
        &doc["paths"]["/v1/me"]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
    let mut extra = me.json();
    extra["secret"] = json!("sk-…");
    assert!(!schema_errors(&doc, me_schema, &extra).is_empty());
    let key_schema = json!({"$ref": "#/components/schemas/ApiKey"});
    let created = stack
        .json_with_key(Method::POST, "/v1/keys", &caller, r#"{"name":"doc"}"#)
        .await;
    documented(&doc, "/v1/keys", "post", &created);
    let id = created.json()["key"]["id"].as_str().unwrap().to_owned();
    let one = format!("/v1/keys/{id}");
    documented(
        &doc,
        "/v1/keys",
        "get",
        &stack.get_with_key("/v1/keys?pageSize=1", &caller).await,
    );
    documented(
        &doc,
        "/v1/keys/{id}",
        "get",
        &stack.get_with_key(&one, &caller).await,
    );
    documented(
        &doc,
        "/v1/keys/{id}",
        "patch",
        &stack
            .json_with_key(Method::PATCH, &one, &caller, r#"{"name":"renamed"}"#)
            .await,
    );
    let rotated = stack
        .json_with_key(Method::POST, &format!("{one}/rotate"), &caller, "{}")
        .await;
    documented(&doc, "/v1/keys/{id}/rotate", "post", &rotated);
    let mut bad_time = rotated.json()["key"].clone();
    bad_time["createdAt"] = json!("yesterday");
    assert!(!schema_errors(&doc, &key_schema, &bad_time).is_empty());
    let new_one = format!("/v1/keys/{}", rotated.json()["key"]["id"].as_str().unwrap());
    documented(
        &doc,
        "/v1/keys/{id}",
        "delete",
        &stack
            .call(Method::DELETE, &new_one, &auth, Body::empty())
            .await,
    );
    // Errors, too.
    documented(
        &doc,
        "/v1/keys/{id}",
        "get",
        &stack.get_with_key(&new_one, &caller).await,
    );
    documented(
        &doc,
        "/v1/keys",
        "post",
        &stack
            .json_with_key(Method::POST, "/v1/keys", &caller, "{}")
            .await,
    );
    documented(
        &doc,
        "/v1/me",
        "get",
        &stack.call(Method::GET, "/v1/me", &[], Body::empty()).await,
    );
    documented(
        &doc,
        "/healthz",
        "get",
        &stack
            .call(Method::GET, "/healthz", &[], Body::empty())
            .await,
    );
    documented(
        &doc,
        "/readyz",
        "get",
        &stack.call(Method::GET, "/readyz", &[], Body::empty()).await,
    );
}
