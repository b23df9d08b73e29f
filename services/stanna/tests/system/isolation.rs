//! The isolation matrix. Every REST route (from the generated OpenAPI document) and every
//! KeyRegistry RPC (from server reflection) has a row here. Callers of workspace A / user A1 are
//! tried against keys of A1, A2 (same workspace, another member) and B (another workspace).
//! Callers are an API key, a member's session, a workspace admin's session, and the admin token
//! scoped to (A, A1) and to (A, any user). Exactly the allowed cells succeed. Every other cell is
//! 404 / NOT_FOUND and changes nothing: the key is read back. A route or RPC without a row fails
//! the test.

use std::collections::BTreeSet;

use http::Method;
use prost::Message as _;
use stanna_proto::keys::v1 as pb;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::sessions::{claims, sign_in, with_session};
use crate::stack::{Reply, Stack};

const A: &str = "ws_iso_a";
const B: &str = "ws_iso_b";
const A1: &str = "iso-a1";
const A2: &str = "iso-a2";
const B1: &str = "iso-b1";

/// Whose key an operation is aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    OwnA1,
    OtherMemberA2,
    OtherWorkspaceB,
}

impl Target {
    const ALL: [Self; 3] = [Self::OwnA1, Self::OtherMemberA2, Self::OtherWorkspaceB];

    fn owner(self) -> (&'static str, &'static str) {
        match self {
            Self::OwnA1 => (A, A1),
            Self::OtherMemberA2 => (A, A2),
            Self::OtherWorkspaceB => (B, B1),
        }
    }
}

/// What is done to one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Get,
    Rename,
    Deactivate,
    Delete,
    Rotate,
}

impl Op {
    const ALL: [Self; 5] = [
        Self::Get,
        Self::Rename,
        Self::Deactivate,
        Self::Delete,
        Self::Rotate,
    ];
}

/// Who calls, always as user A1 of workspace A.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    ApiKey,
    MemberSession,
    AdminSession,
    /// The admin token, scoped to workspace A and user A1 in the request.
    AdminTokenAsA1,
    /// The admin token, scoped to workspace A only (`user_id` empty).
    AdminTokenForA,
}

impl Caller {
    const ALL: [Self; 5] = [
        Self::ApiKey,
        Self::MemberSession,
        Self::AdminSession,
        Self::AdminTokenAsA1,
        Self::AdminTokenForA,
    ];
}

/// The policy: which cells succeed. Another workspace's keys never do. The caller's own always
/// do. Another member's keys:
/// - a workspace admin's session may read, deactivate and delete them, but not rename, reactivate
///   or rotate them: a key its owner turned off is not the admin's to revive;
/// - the admin token scoped to the workspace alone may do everything;
/// - everyone else may do nothing.
fn allowed(caller: Caller, op: Op, target: Target) -> bool {
    match target {
        Target::OtherWorkspaceB => false,
        Target::OwnA1 => true,
        Target::OtherMemberA2 => match caller {
            Caller::ApiKey | Caller::MemberSession | Caller::AdminTokenAsA1 => false,
            Caller::AdminSession => matches!(op, Op::Get | Op::Deactivate | Op::Delete),
            Caller::AdminTokenForA => true,
        },
    }
}

/// How a caller reaches the system.
struct Callers {
    key: String,
    member: String,
    admin: String,
}

impl Callers {
    async fn rest(
        &self,
        stack: &Stack,
        caller: Caller,
        method: Method,
        path: &str,
        body: &str,
    ) -> Reply {
        match caller {
            Caller::ApiKey if method == Method::GET => stack.get_with_key(path, &self.key).await,
            Caller::ApiKey => stack.json_with_key(method, path, &self.key, body).await,
            Caller::MemberSession => {
                with_session(stack, &self.member, method, path, Some(body)).await
            }
            Caller::AdminSession => {
                with_session(stack, &self.admin, method, path, Some(body)).await
            }
            Caller::AdminTokenAsA1 | Caller::AdminTokenForA => unreachable!("gRPC callers"),
        }
    }
}

/// A fresh key of `target`'s owner, and its state as the admin reads it.
async fn fresh_key(stack: &Stack, target: Target) -> pb::ApiKey {
    let (workspace, user) = target.owner();
    stack.create_key(workspace, user).await.1
}

/// The key as the admin token reads it, scoped to its own workspace; `None` once deleted.
async fn read_back(stack: &Stack, key: &pb::ApiKey) -> Option<pb::ApiKey> {
    match stack
        .admin()
        .get_key(pb::GetKeyRequest {
            workspace_id: key.workspace_id.clone(),
            user_id: String::new(),
            key_id: key.id.clone(),
        })
        .await
    {
        Ok(found) => Some(found.into_inner()),
        Err(status) if status.code() == tonic::Code::NotFound => None,
        Err(status) => panic!("reading {} back: {status}", key.id),
    }
}

/// Runs `op` as `caller` on `key`. Returns whether it succeeded, and panics unless a refusal is
/// exactly 404 `not_found` / NOT_FOUND.
async fn attempt(
    stack: &Stack,
    callers: &Callers,
    caller: Caller,
    op: Op,
    key: &pb::ApiKey,
) -> bool {
    let id = &key.id;
    if matches!(caller, Caller::AdminTokenAsA1 | Caller::AdminTokenForA) {
        let user_id = if caller == Caller::AdminTokenAsA1 {
            A1
        } else {
            ""
        }
        .to_owned();
        let workspace_id = A.to_owned();
        let key_id = id.clone();
        let mut admin = stack.admin();
        let outcome = match op {
            Op::Get => admin
                .get_key(pb::GetKeyRequest {
                    workspace_id,
                    user_id,
                    key_id,
                })
                .await
                .map(drop),
            Op::Rename => admin
                .update_key(pb::UpdateKeyRequest {
                    workspace_id,
                    user_id,
                    key_id,
                    name: Some("renamed".into()),
                    status: pb::KeyStatus::Unspecified.into(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Op::Deactivate => admin
                .update_key(pb::UpdateKeyRequest {
                    workspace_id,
                    user_id,
                    key_id,
                    name: None,
                    status: pb::KeyStatus::Inactive.into(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Op::Delete => admin
                .delete_key(pb::DeleteKeyRequest {
                    workspace_id,
                    user_id,
                    key_id,
                })
                .await
                .map(drop),
            Op::Rotate => admin
                .rotate_key(pb::RotateKeyRequest {
                    workspace_id,
                    user_id,
                    key_id,
                    grace_period: None,
                })
                .await
                .map(drop),
        };
        return match outcome {
            Ok(()) => true,
            Err(status) => {
                assert_eq!(
                    status.code(),
                    tonic::Code::NotFound,
                    "{caller:?} {op:?}: {status}"
                );
                false
            }
        };
    }
    let path = format!("/v1/keys/{id}");
    let reply = match op {
        Op::Get => callers.rest(stack, caller, Method::GET, &path, "").await,
        Op::Rename => {
            callers
                .rest(stack, caller, Method::PATCH, &path, r#"{"name":"renamed"}"#)
                .await
        }
        Op::Deactivate => {
            callers
                .rest(
                    stack,
                    caller,
                    Method::PATCH,
                    &path,
                    r#"{"status":"KEY_STATUS_INACTIVE"}"#,
                )
                .await
        }
        Op::Delete => callers.rest(stack, caller, Method::DELETE, &path, "").await,
        Op::Rotate => {
            callers
                .rest(stack, caller, Method::POST, &format!("{path}/rotate"), "{}")
                .await
        }
    };
    if reply.status.is_success() {
        return true;
    }
    reply.assert_error(404, "not_found");
    false
}

/// What the key must look like after `op` succeeded (`before` → `after`).
fn assert_effect(op: Op, before: &pb::ApiKey, after: Option<&pb::ApiKey>, cell: &str) {
    match op {
        Op::Get => assert_eq!(after, Some(before), "{cell}: a read changed the key"),
        Op::Rename => assert_eq!(after.map(|k| k.name.as_str()), Some("renamed"), "{cell}"),
        Op::Deactivate => assert_eq!(
            after.map(|k| k.status()),
            Some(pb::KeyStatus::Inactive),
            "{cell}"
        ),
        Op::Delete => assert!(after.is_none(), "{cell}: still there"),
        Op::Rotate => assert!(
            after.is_some_and(|k| !k.replaced_by.is_empty()),
            "{cell}: not rotated: {after:?}"
        ),
    }
}

/// The (method, path) of every operation in the OpenAPI document.
fn openapi_routes() -> BTreeSet<String> {
    let document: serde_json::Value =
        serde_json::from_str(stanna_gateway::openapi::document()).unwrap();
    let mut routes = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    routes
}

/// The methods of KeyRegistry, as server reflection describes them at the registry's port.
async fn reflected_rpcs(stack: &Stack) -> BTreeSet<String> {
    let channel = tonic::transport::Channel::from_shared(stack.registry_url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "stanna.keys.v1.KeyRegistry".into(),
        )),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers
        .message()
        .await
        .unwrap()
        .expect("a reflection answer");
    let Some(MessageResponse::FileDescriptorResponse(files)) = answer.message_response else {
        panic!("no file descriptor for KeyRegistry: {answer:?}");
    };
    let mut rpcs = BTreeSet::new();
    for bytes in files.file_descriptor_proto {
        let file = prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap();
        for service in file.service.iter().filter(|s| s.name() == "KeyRegistry") {
            for method in &service.method {
                rpcs.insert(method.name().to_owned());
            }
        }
    }
    rpcs
}

#[tokio::test]
async fn every_route_and_rpc_lets_exactly_the_allowed_callers_touch_each_key() {
    let stack = Stack::start().await;

    // Every route and RPC has a row: the per-key rows are the matrix below; the others are
    // checked after it, each with what isolates it.
    let per_key_routes = [
        "GET /v1/keys/{id}",
        "PATCH /v1/keys/{id}",
        "DELETE /v1/keys/{id}",
        "POST /v1/keys/{id}/rotate",
    ];
    let other_routes = [
        "GET /v1/keys",            // lists only what the caller may see: checked below
        "POST /v1/keys",           // creates for the caller's own user: checked below
        "GET /v1/me",              // the caller itself: checked below
        "GET /healthz",            // public, no key data
        "GET /readyz",             // public, no key data
        "GET /openapi.json",       // public, no key data
        "GET /v1/keys/{id}/usage", // only a key the caller may see: checked below
        "GET /v1/keys/usage",      // only the keys the caller may see: checked below
        "GET /v1/audit",           // only the events of keys the caller may see: checked below
    ];
    let rows: BTreeSet<String> = per_key_routes
        .iter()
        .chain(&other_routes)
        .map(|r| (*r).to_owned())
        .collect();
    assert_eq!(
        openapi_routes(),
        rows,
        "a route of the OpenAPI document without a row in this matrix, or a row for no route"
    );
    let rpc_rows: BTreeSet<String> = [
        "GetKey",
        "UpdateKey",
        "DeleteKey",
        "RotateKey", // the matrix
        "ListKeys",
        "CreateKey",       // scoped by the request: checked below
        "CreateSession",   // the login token decides who: covered by the sessions tests
        "DeleteSession",   // ends only the presented session: checked below
        "RevokeSessions",  // ends only the named scope's sessions: checked below
        "GetKeyUsage",     // scoped by the request: checked below (through REST)
        "ListAuditEvents", // scoped by the request: checked below (through REST)
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(
        reflected_rpcs(&stack).await,
        rpc_rows,
        "a KeyRegistry RPC without a row in this matrix, or a row for no RPC"
    );

    let mut admin_claims = claims(&stack, A, A1);
    admin_claims.role = Some("admin".into());
    let callers = Callers {
        key: stack.create_key(A, A1).await.0,
        member: sign_in(&stack, &claims(&stack, A, A1)).await,
        admin: sign_in(&stack, &admin_claims).await,
    };

    let mut cells = 0;
    for caller in Caller::ALL {
        for op in Op::ALL {
            for target in Target::ALL {
                let cell = format!("{caller:?} {op:?} on a key of {target:?}");
                let key = fresh_key(&stack, target).await;
                let before = read_back(&stack, &key).await.expect("a fresh key");
                let succeeded = attempt(&stack, &callers, caller, op, &key).await;
                let after = read_back(&stack, &key).await;
                assert_eq!(
                    succeeded,
                    allowed(caller, op, target),
                    "{cell}: succeeded {succeeded}"
                );
                if succeeded {
                    assert_effect(op, &before, after.as_ref(), &cell);
                } else {
                    assert_eq!(after.as_ref(), Some(&before), "{cell}: refused but changed");
                }
                cells += 1;
            }
        }
    }
    assert_eq!(cells, 75);

    // GET /v1/keys and ListKeys: exactly what each caller may see.
    let seen = [
        fresh_key(&stack, Target::OwnA1).await.id,
        fresh_key(&stack, Target::OtherMemberA2).await.id,
        fresh_key(&stack, Target::OtherWorkspaceB).await.id,
    ];
    for (caller, visible) in [
        (Caller::ApiKey, [true, false, false]),
        (Caller::MemberSession, [true, false, false]),
        (Caller::AdminSession, [true, true, false]),
    ] {
        let reply = callers
            .rest(&stack, caller, Method::GET, "/v1/keys?pageSize=100", "")
            .await;
        assert_eq!(reply.status, 200);
        let listed: Vec<String> = reply.json()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_owned())
            .collect();
        for (id, want) in seen.iter().zip(visible) {
            assert_eq!(listed.contains(id), want, "{caller:?} lists {id}: {want}");
        }
        for key in reply.json()["keys"].as_array().unwrap() {
            assert_eq!(
                key["workspaceId"], A,
                "{caller:?} listed another workspace's key"
            );
        }
    }
    // Usage: of exactly the keys each caller may see; one it may not is 404 alone, and left out
    // of a batch (not refused, so nothing tells "not yours" from "not there").
    for (caller, visible) in [
        (Caller::ApiKey, [true, false, false]),
        (Caller::MemberSession, [true, false, false]),
        (Caller::AdminSession, [true, true, false]),
    ] {
        let reply = callers
            .rest(
                &stack,
                caller,
                Method::GET,
                &format!("/v1/keys/usage?keyIds={}", seen.join(",")),
                "",
            )
            .await;
        assert_eq!(reply.status, 200);
        let listed: Vec<String> = reply.json()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["keyId"].as_str().unwrap().to_owned())
            .collect();
        for (id, want) in seen.iter().zip(visible) {
            assert_eq!(
                listed.contains(id),
                want,
                "{caller:?} usage of {id}: {want}"
            );
            let one = callers
                .rest(
                    &stack,
                    caller,
                    Method::GET,
                    &format!("/v1/keys/{id}/usage"),
                    "",
                )
                .await;
            assert_eq!(one.status, if want { 200 } else { 404 }, "{caller:?} {id}");
        }
    }
    // The audit log: the events of exactly the keys each caller may see, for the whole listing
    // and for one key (another's key: an empty history, like an unknown one).
    for (caller, visible) in [
        (Caller::ApiKey, [true, false, false]),
        (Caller::MemberSession, [true, false, false]),
        (Caller::AdminSession, [true, true, false]),
    ] {
        let reply = callers
            .rest(&stack, caller, Method::GET, "/v1/audit?pageSize=100", "")
            .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let keys: Vec<String> = reply.json()["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["keyId"].as_str().map(str::to_owned))
            .collect();
        for (id, want) in seen.iter().zip(visible) {
            assert_eq!(keys.contains(id), want, "{caller:?} audit of {id}: {want}");
            let one = callers
                .rest(
                    &stack,
                    caller,
                    Method::GET,
                    &format!("/v1/audit?keyId={id}"),
                    "",
                )
                .await;
            assert_eq!(one.status, 200);
            let events = one.json()["events"].as_array().unwrap().len();
            assert_eq!(
                events > 0,
                want,
                "{caller:?} history of {id}: {events} events"
            );
        }
    }
    for (user, visible) in [(A1, [true, false, false]), ("", [true, true, false])] {
        let listed = stack
            .admin()
            .list_keys(pb::ListKeysRequest {
                workspace_id: A.into(),
                user_id: user.into(),
                page_size: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .keys;
        for (id, want) in seen.iter().zip(visible) {
            assert_eq!(
                listed.iter().any(|k| &k.id == id),
                want,
                "ListKeys({A}, {user:?}) {id}"
            );
        }
    }

    // POST /v1/keys and GET /v1/me: always the caller's own workspace and user, whatever the
    // body says.
    for caller in [Caller::ApiKey, Caller::MemberSession, Caller::AdminSession] {
        let created = callers
            .rest(
                &stack,
                caller,
                Method::POST,
                "/v1/keys",
                &format!(r#"{{"name":"mine","workspaceId":"{B}","userId":"{A2}"}}"#),
            )
            .await;
        if created.status == 400 {
            // Unknown fields are refused rather than ignored: nothing was created elsewhere.
            created.assert_error(400, "invalid_request");
        } else {
            assert_eq!(created.status, 201, "{caller:?}");
            assert_eq!(created.json()["key"]["workspaceId"], A);
            assert_eq!(created.json()["key"]["userId"], A1);
        }
        let me = callers
            .rest(&stack, caller, Method::GET, "/v1/me", "")
            .await;
        assert_eq!(me.status, 200);
        assert_eq!(
            (
                me.json()["workspaceId"].clone(),
                me.json()["userId"].clone()
            ),
            (A.into(), A1.into())
        );
    }

    // RevokeSessions(A, A2) ends A2's sessions only; DeleteSession ends only the session it is
    // given.
    let a2 = sign_in(&stack, &claims(&stack, A, A2)).await;
    let b1 = sign_in(&stack, &claims(&stack, B, B1)).await;
    let revoked = stack
        .admin()
        .revoke_sessions(pb::RevokeSessionsRequest {
            workspace_id: A.into(),
            user_id: A2.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .revoked;
    assert_eq!(revoked, 1);
    let still = |reply: Reply| reply.status == 200;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while with_session(&stack, &a2, Method::GET, "/v1/me", None)
        .await
        .status
        != 401
    {
        assert!(
            std::time::Instant::now() < deadline,
            "A2's session was not revoked"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(still(
        with_session(&stack, &callers.member, Method::GET, "/v1/me", None).await
    ));
    assert!(still(
        with_session(&stack, &b1, Method::GET, "/v1/me", None).await
    ));
    stack
        .admin()
        .delete_session(pb::DeleteSessionRequest {
            session_token: b1.clone(),
        })
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while with_session(&stack, &b1, Method::GET, "/v1/me", None)
        .await
        .status
        != 401
    {
        assert!(
            std::time::Instant::now() < deadline,
            "B1's session did not end"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(still(
        with_session(&stack, &callers.member, Method::GET, "/v1/me", None).await
    ));
    assert!(still(
        with_session(&stack, &callers.admin, Method::GET, "/v1/me", None).await
    ));
}
