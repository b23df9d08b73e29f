//! The OpenAPI 3.1 document of the public HTTP API, served at `/openapi.json`. It is generated:
//! the schemas come from the REST types' serde definitions (utoipa), the operations from each
//! handler's `#[utoipa::path]`, collected by the same router that serves them; what every
//! authenticated route shares — the two credentials, `X-Workspace-Id`, the rate-limit headers —
//! is added here once. `services/gateway/openapi.json` is its committed snapshot, and a test
//! fails when the served document differs from it, so an API change shows in review.

use serde_json::{Value, json};
use utoipa::OpenApi;

use crate::error::{ErrorBody, ErrorCode};

/// The parts of the document no handler owns.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Stanna Keys public API",
        version = "1.0.0",
        description = "Every request carries an API key (`Authorization: Bearer sk-…` or `X-API-Key: sk-…`) and is limited per key (default: 100 requests per 60 s and 1000 per 3600 s, both rolling). The key API acts inside the key's workspace and as its user. Paths not listed here are forwarded to the product's own API with the same authentication and limits.",
        license(name = "Apache-2.0")
    ),
    servers((url = "http://localhost:8080", description = "`stanna serve` on its defaults")),
    components(schemas(ErrorBody, ErrorCode))
)]
pub struct PublicApi;

/// The rate-limit response headers (README, "Calling the public API").
const RATE_LIMIT_HEADERS: [(&str, &str, &str); 9] = [
    (
        "X-RateLimit-Limit",
        "integer",
        "The binding window's limit (the window with the least left)",
    ),
    (
        "X-RateLimit-Remaining",
        "integer",
        "Requests left in the binding window",
    ),
    (
        "X-RateLimit-Reset",
        "integer",
        "Unix seconds when the binding window is full again",
    ),
    (
        "X-RateLimit-Limit-Burst",
        "integer",
        "The burst window's limit",
    ),
    (
        "X-RateLimit-Remaining-Burst",
        "integer",
        "Requests left in the burst window",
    ),
    (
        "X-RateLimit-Limit-Hourly",
        "integer",
        "The hourly window's limit",
    ),
    (
        "X-RateLimit-Remaining-Hourly",
        "integer",
        "Requests left in the hourly window",
    ),
    (
        "RateLimit-Policy",
        "string",
        "IETF draft: each window's quota and length, e.g. `\"burst\";q=100;w=60, \"hourly\";q=1000;w=3600`",
    ),
    (
        "RateLimit",
        "string",
        "IETF draft: the binding window's remaining and seconds until full, e.g. `\"burst\";r=57;t=23`",
    ),
];

/// Answers for which no quota decision was made, so they carry no rate-limit headers.
const WITHOUT_DECISION: [&str; 4] = ["401", "403", "500", "503"];

/// The served document, pretty-printed, built once.
pub fn document() -> &'static str {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let (_, api) = crate::routes().split_for_parts();
        let mut text = serde_json::to_string_pretty(&complete(api)).unwrap_or_default();
        text.push('\n');
        text
    })
}

/// What a new key's answer leads to (OpenAPI links: clients and stateful testers such as
/// schemathesis follow them from `create_key` / `rotate_key` to the key's other operations).
fn add_links(operation: &mut Value) {
    if operation["operationId"] == "list_keys"
        && let Some(response) = operation["responses"].get_mut("200")
    {
        response["links"] = json!({"NextPage": {
            "operationId": "list_keys",
            "parameters": {"pageToken": "$response.body#/nextPageToken"},
            "description": "The next page, while `nextPageToken` is present; send the same filters (`nameContains`, `status`, `unusedForDays`), since a token continues only its own listing",
        }});
        return;
    }
    let status = match operation["operationId"].as_str() {
        Some("create_key") => "201",
        Some("rotate_key") => "200",
        _ => return,
    };
    let key = json!({"id": "$response.body#/key/id"});
    let link = |operation_id: &str, description: &str| json!({"operationId": operation_id, "parameters": key, "description": description});
    if let Some(response) = operation["responses"].get_mut(status) {
        response["links"] = json!({
            "GetKey": link("get_key", "The key just made"),
            "UpdateKey": link("update_key", "Rename, deactivate or reactivate it"),
            "RotateKey": link("rotate_key", "Rotate it"),
            "DeleteKey": link("delete_key", "Delete it"),
        });
    }
}

/// Completes `api` (the routes' own document) with what every authenticated route shares.
fn complete(api: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(api).unwrap_or_default();
    let components = &mut doc["components"];
    components["securitySchemes"] = json!({
        "bearer": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer sk-…`"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "session": {
            "type": "apiKey",
            "in": "cookie",
            "name": crate::dashboard::COOKIE,
            "description": "The dashboard's session (key API routes only; `__Host-stanna_session` when the public URL is https). A call that changes something also needs `X-CSRF-Token` (from `GET /v1/me`), `Content-Type: application/json` and an `Origin` of `STANNA_PUBLIC_URL`.",
        },
    });
    components["parameters"] = json!({
        "WorkspaceId": {
            "name": "X-Workspace-Id",
            "in": "header",
            "required": false,
            "description": "The workspace the caller means to act in: a key of another workspace is refused with 403 `workspace_mismatch`.",
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
        }
    });
    let mut headers = serde_json::Map::new();
    for (name, kind, description) in RATE_LIMIT_HEADERS {
        headers.insert(
            name.to_owned(),
            json!({"description": description, "schema": {"type": kind}}),
        );
    }
    headers.insert(
        "XRequestId".to_owned(),
        json!({
            "description": "The request's id (the caller's own `X-Request-Id` if it sent one, else a new one): quote it when reporting a problem; it is in the access log and the traces.",
            "schema": {"type": "string"},
        }),
    );
    components["headers"] = Value::Object(headers);
    doc["security"] = json!([{"bearer": []}, {"apiKey": []}]);
    let Some(paths) = doc["paths"].as_object_mut() else {
        return doc;
    };
    for (path, item) in paths.iter_mut() {
        let public = path == "/healthz" || path == "/readyz" || path == "/openapi.json";
        for operation in item
            .as_object_mut()
            .into_iter()
            .flat_map(|m| m.values_mut())
        {
            // Every answer carries its request id, whatever the route or status.
            let responses = operation["responses"].as_object_mut().into_iter().flatten();
            for (_, response) in responses {
                if let Some(Value::Object(headers)) = response
                    .as_object_mut()
                    .map(|r| r.entry("headers").or_insert_with(|| json!({})))
                {
                    headers.insert(
                        "X-Request-Id".to_owned(),
                        json!({"$ref": "#/components/headers/XRequestId"}),
                    );
                }
            }
            if public {
                operation["security"] = json!([]);
                continue;
            }
            // A key id in the path: the form the registry checks, so generated ids are real ones.
            for parameter in operation
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if parameter["in"] == "path" && parameter["name"] == "id" {
                    parameter["schema"] = json!({
                        "type": "string",
                        "pattern": "^[0-9A-Za-z]{12}$",
                        "minLength": 12,
                        "maxLength": 12,
                    });
                }
            }
            if path.starts_with("/v1/") {
                operation["security"] = json!([{"bearer": []}, {"apiKey": []}, {"session": []}]);
            }
            add_links(operation);
            // The rotate body may be left out (README: no grace period); utoipa marks every
            // request body required.
            if operation["operationId"] == "rotate_key"
                && let Some(body) = operation.get_mut("requestBody")
            {
                body["required"] = json!(false);
            }
            let parameters = operation.as_object_mut().and_then(|o| {
                o.entry("parameters")
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
            });
            if let Some(parameters) = parameters {
                parameters.insert(0, json!({"$ref": "#/components/parameters/WorkspaceId"}));
            }
            let responses = operation["responses"].as_object_mut().into_iter().flatten();
            for (status, response) in responses {
                if WITHOUT_DECISION.contains(&status.as_str()) {
                    continue;
                }
                let headers = response
                    .as_object_mut()
                    .map(|r| r.entry("headers").or_insert_with(|| json!({})));
                if let Some(Value::Object(headers)) = headers {
                    for (name, _, _) in RATE_LIMIT_HEADERS {
                        headers.insert(
                            name.to_owned(),
                            json!({"$ref": format!("#/components/headers/{name}")}),
                        );
                    }
                }
            }
        }
    }
    doc
}
