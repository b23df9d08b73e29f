//! The thin tonic adapter: proto requests in, validated domain values to the [`Registry`], proto
//! responses out, each carrying its request id; who may call is [`crate::caller`]'s.
//!
//! Validation happens here, once, and every refusal names the field as the proto names it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stanna_keys::{
    DomainError, KeyId, KeyMetadata, KeyName, KeyStatus, RateLimits, Scopes, UserId, WindowLimit,
    WorkspaceId,
};
use stanna_proto::keys::v1 as pb;
use stanna_proto::keys::v1::key_registry_server::{KeyRegistry, KeyRegistryServer};
use stanna_store::{
    AuditQuery, KeyChanges, KeyFilter, KeyRecord, LimitChanges, LimitOverrides, PageRequest,
    PageToken, Scope,
};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::caller::{Call, CallerAuth, Credentials};
use crate::error::RegistryError;
use crate::registry::{CreateKey, CreatedKey, Registry};

/// Page size when a ListKeys request leaves it at 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// The largest page a ListKeys request may ask for.
pub const MAX_PAGE_SIZE: u32 = 100;

/// The KeyRegistry service, authenticated: what a server (or an in-memory client) mounts.
pub type AuthenticatedRegistry =
    InterceptedService<KeyRegistryServer<KeyRegistryService>, CallerAuth>;

/// Wraps `registry` in its gRPC server and the credential check.
pub fn authenticated_service(
    registry: Registry,
    credentials: Credentials,
) -> AuthenticatedRegistry {
    KeyRegistryServer::with_interceptor(
        KeyRegistryService { registry },
        CallerAuth::new(credentials),
    )
}

/// What the gateway's credential may not do: set limits or metadata (an admin's call may).
const GATEWAY_NO_LIMITS: &str = "the gateway's credential may not set rate limits or metadata; an admin changes those (stanna keys update)";

/// The KeyRegistry gRPC service over a [`Registry`].
#[derive(Clone)]
pub struct KeyRegistryService {
    /// The core.
    registry: Registry,
}

#[tonic::async_trait]
impl KeyRegistry for KeyRegistryService {
    async fn create_key(
        &self,
        request: Request<pb::CreateKeyRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        let call = Call::of(&request)?;
        let r = request.into_inner();
        call.finish(
            async {
                let create = CreateKey {
                    workspace: WorkspaceId::parse(&r.workspace_id)
                        .map_err(|e| RegistryError::invalid("workspace_id", e))?,
                    user: UserId::parse(&r.user_id)
                        .map_err(|e| RegistryError::invalid("user_id", e))?,
                    name: KeyName::parse(&r.name).map_err(|e| RegistryError::invalid("name", e))?,
                    expires_at: r
                        .expires_at
                        .map(|t| system_time("expires_at", t))
                        .transpose()?,
                    rate_limits: limit_overrides(&r.rate_limits)?,
                    metadata: metadata(Some(&r.metadata))?,
                    scopes: scopes(&r.scopes)?,
                };
                if call.is_gateway()
                    && (create.rate_limits != LimitOverrides::default()
                        || create.metadata.is_some())
                {
                    return Err(RegistryError::Forbidden(GATEWAY_NO_LIMITS));
                }
                let (scope, audit) = self
                    .registry
                    .authorize(&call, create.workspace.clone(), Some(create.user.clone()))
                    .await?;
                let created = self
                    .registry
                    .create_key(create, &scope.within, &audit)
                    .await?;
                Ok(self.created_response(created))
            }
            .await,
        )
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let call = Call::of(&request)?;
        let r = request.into_inner();
        call.finish(
            async {
                let scope = scope(&r.workspace_id, &r.user_id)?;
                let size = page_size(r.page_size)?;
                let after = match r.page_token.as_str() {
                    "" => None,
                    token => Some(
                        PageToken::parse(token)
                            .map_err(|e| RegistryError::invalid("page_token", e))?,
                    ),
                };
                let filter = key_filter(&r)?;
                let (scope, _) = self
                    .registry
                    .authorize(&call, scope.workspace, scope.user)
                    .await?;
                let page = self
                    .registry
                    .list_keys(
                        &Scope::new(scope.workspace, scope.user),
                        PageRequest {
                            size,
                            after,
                            filter,
                        },
                    )
                    .await?;
                let defaults = self.registry.default_limits();
                Ok(pb::ListKeysResponse {
                    keys: page.keys.iter().map(|k| api_key(k, defaults)).collect(),
                    next_page_token: page.next.map(|t| t.to_string()).unwrap_or_default(),
                })
            }
            .await,
        )
    }

    async fn get_key(
        &self,
        request: Request<pb::GetKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let call = Call::of(&request)?;
        let r = request.into_inner();
        call.finish(
            async {
                let (scope, key_id) = (scope(&r.workspace_id, &r.user_id)?, key_id(&r.key_id)?);
                let (scope, _) = self
                    .registry
                    .authorize(&call, scope.workspace, scope.user)
                    .await?;
                let key = self.registry.get_key(&scope, &key_id).await?;
                Ok(api_key(&key, self.registry.default_limits()))
            }
            .await,
        )
    }

    async fn update_key(
        &self,
        request: Request<pb::UpdateKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let call = Call::of(&request)?;
        let r = request.into_inner();
        call.finish(
            async {
                let (scope, key_id) = (scope(&r.workspace_id, &r.user_id)?, key_id(&r.key_id)?);
                let mut changes = update_changes(&r)?;
                if call.is_gateway() {
                    if changes.rate_limits != LimitChanges::default() || changes.metadata.is_some()
                    {
                        return Err(RegistryError::Forbidden(GATEWAY_NO_LIMITS));
                    }
                    // Across members (an admin's session, no user), a change only restricts:
                    // deactivate, or expire sooner. Renaming, reactivating, scopes stay the
                    // owner's.
                    let restricts = changes.name.is_none()
                        && changes.scopes.is_none()
                        && changes.status.is_none_or(|s| s == KeyStatus::Inactive);
                    if scope.user.is_none() && !restricts {
                        return Err(RegistryError::Forbidden(
                            "across members a session only deactivates a key or moves its expiry earlier",
                        ));
                    }
                    // Through the gateway an expiry only moves earlier: never a rotated-out
                    // key's grace extended, never an expired key revived.
                    changes.expiry_earlier_only = true;
                }
                let (scope, audit) = self
                    .registry
                    .authorize(&call, scope.workspace, scope.user)
                    .await?;
                let key = self
                    .registry
                    .update_key(&scope, &key_id, changes, &audit)
                    .await?;
                Ok(api_key(&key, self.registry.default_limits()))
            }
            .await,
        )
    }

    async fn delete_key(
        &self,
        request: Request<pb::DeleteKeyRequest>,
    ) -> Result<Response<pb::DeleteKeyResponse>, Status> {
        let call = Call::of(&request)?;
        let r = request.into_inner();
        call.finish(
            async {
                let (scope, key_id) = (scope(&r.workspace_id, &r.user_id)?, key_id(&r.key_id)?);
                let (scope, audit) = self
                    .registry
                    .authorize(&call, scope.workspace, scope.user)
                    .await?;
                self.registry.delete_key(&scope, &key_id, &audit).await?;
                Ok(pb::DeleteKeyResponse {})
            }
            .await,
        )
    }

    async fn rotate_key(
        &self,
        request: Request<pb::RotateKeyRequest>,
    ) -> Result<Response<pb::RotateKeyResponse>, Status> {
        let call = Call::of(&request)?;
        let r = request.into_inner();
        call.finish(
            async {
                let (scope, key_id) = (scope(&r.workspace_id, &r.user_id)?, key_id(&r.key_id)?);
                let grace = match r.grace_period {
                    None => Duration::ZERO,
                    Some(d) => duration("grace_period", d)?,
                };
                if call.is_gateway() && scope.user.is_none() {
                    return Err(RegistryError::Forbidden(
                        "through the gateway a key is rotated by its owner only",
                    ));
                }
                let (scope, audit) = self
                    .registry
                    .authorize(&call, scope.workspace, scope.user)
                    .await?;
                if call.is_gateway() {
                    // An expired key's replacement would have no expiry and keep the old key's
                    // limits and metadata: through the gateway that would revive it. Admins may.
                    let current = self.registry.get_key(&scope, &key_id).await?;
                    if current.is_expired(self.registry.now()) {
                        return Err(RegistryError::ExpiredKey);
                    }
                }
                let created = self
                    .registry
                    .rotate_key(&scope, &key_id, grace, &audit)
                    .await?;
                let created = self.created_response(created);
                Ok(pb::RotateKeyResponse {
                    key: created.key,
                    secret: created.secret,
                })
            }
            .await,
        )
    }

    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        let call = Call::of(&request)?;
        let r = request.into_inner();
        call.finish(
            async {
                if r.login_token.is_empty() {
                    return Err(RegistryError::invalid("login_token", "is required"));
                }
                let created = self
                    .registry
                    .create_session(&r.login_token, &call.request_id)
                    .await?;
                Ok(pb::CreateSessionResponse {
                    session: Some(session_of(&created.session)),
                    session_token: created.token,
                })
            }
            .await,
        )
    }

    async fn delete_session(
        &self,
        request: Request<pb::DeleteSessionRequest>,
    ) -> Result<Response<pb::DeleteSessionResponse>, Status> {
        let call = Call::of(&request)?;
        let r = request.into_inner();
        call.finish(
            async {
                self.registry
                    .delete_session(&r.session_token, &call.request_id)
                    .await?;
                Ok(pb::DeleteSessionResponse {})
            }
            .await,
        )
    }

    async fn revoke_sessions(
        &self,
        request: Request<pb::RevokeSessionsRequest>,
    ) -> Result<Response<pb::RevokeSessionsResponse>, Status> {
        let call = Call::of(&request)?;
        let r = request.into_inner();
        call.finish(
            async {
                let scope = scope(&r.workspace_id, &r.user_id)?;
                if call.is_gateway() {
                    return Err(RegistryError::Forbidden(
                        "only an admin revokes sessions; a session signs itself out",
                    ));
                }
                let (scope, audit) = self
                    .registry
                    .authorize(&call, scope.workspace, scope.user)
                    .await?;
                let revoked = self
                    .registry
                    .revoke_sessions(
                        &stanna_store::SessionScope {
                            workspace: scope.workspace,
                            user: scope.user,
                        },
                        &audit,
                    )
                    .await?;
                Ok(pb::RevokeSessionsResponse {
                    revoked: u32::try_from(revoked).unwrap_or(u32::MAX),
                })
            }
            .await,
        )
    }

    async fn get_key_usage(
        &self,
        request: Request<pb::GetKeyUsageRequest>,
    ) -> Result<Response<pb::GetKeyUsageResponse>, Status> {
        let call = Call::of(&request)?;
        let r = request.into_inner();
        call.finish(self.key_usage(&call, r).await)
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let call = Call::of(&request)?;
        let r = request.into_inner();
        call.finish(self.audit_events(&call, r).await)
    }
}

impl KeyRegistryService {
    async fn key_usage(
        &self,
        call: &Call,
        r: pb::GetKeyUsageRequest,
    ) -> Result<pb::GetKeyUsageResponse, RegistryError> {
        let scope = scope(&r.workspace_id, &r.user_id)?;
        if r.key_ids.is_empty() || r.key_ids.len() > MAX_USAGE_KEYS {
            return Err(RegistryError::invalid(
                "key_ids",
                format!(
                    "must list 1 to {MAX_USAGE_KEYS} key ids, got {}",
                    r.key_ids.len()
                ),
            ));
        }
        let ids = r
            .key_ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                KeyId::parse(id).map_err(|e| RegistryError::invalid(format!("key_ids[{i}]"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (start, end) = usage_range(
            r.start_time
                .map(|t| system_time("start_time", t))
                .transpose()?,
            r.end_time.map(|t| system_time("end_time", t)).transpose()?,
            self.registry.now(),
        )?;
        let (scope, _) = self
            .registry
            .authorize(call, scope.workspace, scope.user)
            .await?;
        let usage = self
            .registry
            .key_usage(&Scope::new(scope.workspace, scope.user), &ids, start, end)
            .await?;
        let micros = |us: i64| {
            prost_types::Timestamp::from(stanna_keys::time::from_micros_since_epoch(
                u64::try_from(us).unwrap_or(0),
            ))
        };
        let counts = |c: &stanna_store::UsageCounts| pb::UsageCounts {
            allowed: c.allowed(),
            rate_limited: c.rate_limited(),
            inactive: c.inactive(),
            expired: c.expired(),
            forbidden: c.forbidden(),
        };
        Ok(pb::GetKeyUsageResponse {
            keys: usage
                .iter()
                .map(|(id, rows)| {
                    let mut total = stanna_store::UsageCounts::default();
                    let hours = rows
                        .iter()
                        .map(|row| {
                            total.add(&row.counts);
                            pb::UsageHour {
                                hour: Some(micros(row.hour)),
                                counts: Some(counts(&row.counts)),
                            }
                        })
                        .collect();
                    pb::KeyUsage {
                        key_id: id.to_string(),
                        hours,
                        total: Some(counts(&total)),
                    }
                })
                .collect(),
            start_time: Some(micros(start)),
            end_time: Some(micros(end)),
        })
    }

    async fn audit_events(
        &self,
        call: &Call,
        r: pb::ListAuditEventsRequest,
    ) -> Result<pb::ListAuditEventsResponse, RegistryError> {
        let scope = scope(&r.workspace_id, &r.user_id)?;
        let key = match r.key_id.as_str() {
            "" => None,
            id => Some(key_id(id)?),
        };
        let from = r
            .start_time
            .map(|t| system_time("start_time", t))
            .transpose()?
            .map(micros_of);
        let to = r
            .end_time
            .map(|t| system_time("end_time", t))
            .transpose()?
            .map(micros_of);
        if let (Some(from), Some(to)) = (from, to)
            && from >= to
        {
            return Err(RegistryError::invalid(
                "start_time",
                "must be before end_time",
            ));
        }
        let size = page_size(r.page_size)?;
        let listing = audit_listing(&r);
        let before_id = match r.page_token.as_str() {
            "" => None,
            token => Some(parse_audit_token(token, &listing)?),
        };
        let (scope, _) = self
            .registry
            .authorize(call, scope.workspace, scope.user)
            .await?;
        let page = self
            .registry
            .audit_events(&AuditQuery {
                workspace: scope.workspace,
                user: scope.user,
                key,
                from,
                to,
                size,
                before_id,
            })
            .await?;
        Ok(pb::ListAuditEventsResponse {
            events: page.events.iter().map(audit_event).collect(),
            next_page_token: page
                .next
                .map(|id| format!("a1:{id}:{listing}"))
                .unwrap_or_default(),
        })
    }
}

/// A page size: 0 is [`DEFAULT_PAGE_SIZE`], at most [`MAX_PAGE_SIZE`].
fn page_size(size: u32) -> Result<u32, RegistryError> {
    match size {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n > MAX_PAGE_SIZE => Err(RegistryError::invalid(
            "page_size",
            format!("must be at most {MAX_PAGE_SIZE}, got {n}"),
        )),
        n => Ok(n),
    }
}

/// The digest an audit page token carries of whose events it lists (workspace, user, key; 16 hex
/// digits), so a token is refused for another listing instead of silently paging it. The time
/// range is not bound: pages continue below the last event id, and the range given with each
/// page applies to it — so "the last 7 days", recomputed a few seconds later for the next page,
/// still continues.
fn audit_listing(r: &pb::ListAuditEventsRequest) -> String {
    use blake2::Digest as _;
    let mut hasher = blake2::Blake2b512::new();
    for part in [&r.workspace_id, &r.user_id, &r.key_id] {
        hasher.update(part.as_bytes());
        hasher.update([0x1f]);
    }
    stanna_keys::to_hex(&hasher.finalize()[..8])
}

/// Reads `a1:<event id>:<listing>`.
fn parse_audit_token(token: &str, listing: &str) -> Result<i64, RegistryError> {
    let bad = || RegistryError::invalid("page_token", "is not a page token of ListAuditEvents");
    let rest = token.strip_prefix("a1:").ok_or_else(bad)?;
    let (id, digest) = rest.split_once(':').ok_or_else(bad)?;
    let id: i64 = id.parse().map_err(|_| bad())?;
    if digest != listing {
        return Err(RegistryError::invalid(
            "page_token",
            "belongs to a listing with other filters; ask again without it",
        ));
    }
    Ok(id)
}

/// A stored event as the contract shows it.
pub fn audit_event(e: &stanna_store::AuditEvent) -> pb::AuditEvent {
    pb::AuditEvent {
        id: e.id.to_string(),
        time: Some(e.at.into()),
        workspace_id: e.workspace.clone(),
        user_id: e.user.clone(),
        key_id: e.key_id.clone().unwrap_or_default(),
        related_key_id: e.related_key_id.clone().unwrap_or_default(),
        session_id: e.session_id.clone().unwrap_or_default(),
        action: e.action.clone(),
        actor: Some(pb::AuditActor {
            kind: e.actor_kind.clone(),
            id: e.actor_id.clone(),
            user_id: e.actor_user.clone().unwrap_or_default(),
        }),
        request_id: e.request_id.clone(),
        before: e.before.clone().unwrap_or_default(),
        after: e.after.clone().unwrap_or_default(),
    }
}

/// Keys per GetKeyUsage: a page of ListKeys.
const MAX_USAGE_KEYS: usize = 100;

/// The hours a usage request covers, µs since the epoch: `[start, end)` with `start` rounded
/// down and `end` up to whole hours; by default the 7 days up to now; at most the 30 days kept.
fn usage_range(
    start: Option<SystemTime>,
    end: Option<SystemTime>,
    now: SystemTime,
) -> Result<(i64, i64), RegistryError> {
    use stanna_store::usage::HOUR_MICROS;
    const DAY: Duration = Duration::from_secs(86_400);
    let end_at = end.unwrap_or(now);
    let start_at = start.unwrap_or_else(|| end_at.checked_sub(7 * DAY).unwrap_or(end_at));
    let end = stanna_store::hour_of(end_at)
        + if stanna_store::hour_of(end_at) == micros_of(end_at) {
            0
        } else {
            HOUR_MICROS
        };
    let start = stanna_store::hour_of(start_at);
    if start >= end {
        return Err(RegistryError::invalid(
            "start_time",
            "must be before end_time",
        ));
    }
    // 30 days of whole hours, plus the hour rounding may add.
    if end - start > 30 * 24 * HOUR_MICROS + HOUR_MICROS {
        return Err(RegistryError::invalid(
            "start_time",
            "must be at most 30 days before end_time: usage is kept 30 days",
        ));
    }
    Ok((start, end))
}

fn micros_of(t: SystemTime) -> i64 {
    i64::try_from(stanna_keys::time::micros_since_epoch(t)).unwrap_or(i64::MAX)
}

/// A stored session as the contract shows it (never its token or digest).
pub fn session_of(session: &stanna_store::SessionRecord) -> pb::Session {
    pb::Session {
        id: session.id.to_string(),
        workspace_id: session.workspace.to_string(),
        user_id: session.user.to_string(),
        role: session.role.as_str().to_owned(),
        display_name: session.name.clone().unwrap_or_default(),
        email: session.email.clone().unwrap_or_default(),
        created_at: Some(session.created_at.into()),
        expires_at: Some(session.expires_at.into()),
    }
}

impl KeyRegistryService {
    fn created_response(&self, created: CreatedKey) -> pb::CreateKeyResponse {
        pb::CreateKeyResponse {
            key: Some(api_key(&created.key, self.registry.default_limits())),
            secret: created.secret,
        }
    }
}

fn scope(workspace_id: &str, user_id: &str) -> Result<Scope, RegistryError> {
    Ok(Scope::new(
        WorkspaceId::parse(workspace_id).map_err(|e| RegistryError::invalid("workspace_id", e))?,
        match user_id {
            "" => None,
            id => Some(UserId::parse(id).map_err(|e| RegistryError::invalid("user_id", e))?),
        },
    ))
}

/// Reads a list of scopes, naming the entry at fault as `scopes[i]`.
fn scopes(names: &[String]) -> Result<Scopes, RegistryError> {
    Scopes::parse(names).map_err(|e| match e.index {
        Some(i) => RegistryError::invalid(format!("scopes[{i}]"), e.reason),
        None => RegistryError::invalid("scopes", e.reason),
    })
}

fn key_id(value: &str) -> Result<KeyId, RegistryError> {
    KeyId::parse(value).map_err(|e| RegistryError::invalid("key_id", e))
}

/// 9999-12-31T23:59:59Z: the last time RFC 3339 (and so every client) can write.
const LAST_TIME: i64 = 253_402_300_799;

fn system_time(field: &str, t: prost_types::Timestamp) -> Result<SystemTime, RegistryError> {
    if !(0..=LAST_TIME).contains(&t.seconds) || !(0..1_000_000_000).contains(&t.nanos) {
        return Err(RegistryError::invalid(
            field,
            "must be a valid timestamp from 1970 to 9999",
        ));
    }
    Ok(UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos as u32))
}

fn duration(field: &str, d: prost_types::Duration) -> Result<Duration, RegistryError> {
    stanna_proto::convert::std_duration(d)
        .ok_or_else(|| RegistryError::invalid(field, "must be a non-negative duration"))
}

/// The fields an `update_mask` may name.
/// `rate_limits.burst` / `rate_limits.hourly` change one window and leave the other as it is.
const UPDATE_MASK_FIELDS: [&str; 8] = [
    "name",
    "status",
    "expires_at",
    "rate_limits",
    "metadata",
    "rate_limits.burst",
    "rate_limits.hourly",
    "scopes",
];

/// Reads an UpdateKey request into the changes it asks for: with an `update_mask`, exactly the
/// fields it names (a named field left unset is cleared, where it can be); without one, the
/// fields that are set.
fn update_changes(r: &pb::UpdateKeyRequest) -> Result<KeyChanges, RegistryError> {
    let named = match &r.update_mask {
        None => None,
        Some(mask) => {
            if mask.paths.is_empty() {
                return Err(RegistryError::invalid(
                    "update_mask",
                    "names no field; give one or more of name, status, expires_at, rate_limits, metadata, scopes",
                ));
            }
            let mut named = [false; UPDATE_MASK_FIELDS.len()];
            for (i, path) in mask.paths.iter().enumerate() {
                let Some(slot) = UPDATE_MASK_FIELDS.iter().position(|f| f == path) else {
                    // Echoed only when it looks like a field name, never arbitrary input.
                    let shown = if path.len() <= 32
                        && path
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.')
                    {
                        format!("{path:?} ")
                    } else {
                        String::new()
                    };
                    return Err(RegistryError::invalid(
                        format!("update_mask.paths[{i}]"),
                        format!(
                            "{shown}is not a field UpdateKey changes; use name, status, expires_at, rate_limits (or rate_limits.burst, rate_limits.hourly), metadata or scopes"
                        ),
                    ));
                };
                named[slot] = true;
            }
            Some(named)
        }
    };
    // Indexes into UPDATE_MASK_FIELDS.
    const NAME: usize = 0;
    const STATUS: usize = 1;
    const EXPIRES_AT: usize = 2;
    const RATE_LIMITS: usize = 3;
    const METADATA: usize = 4;
    const BURST: usize = 5;
    const HOURLY: usize = 6;
    const SCOPES: usize = 7;
    let in_mask = |field: usize| named.map(|named| named[field]);
    let name = match (in_mask(NAME), &r.name) {
        (Some(false), _) | (None, None) => None,
        (Some(true), None) => {
            return Err(RegistryError::invalid(
                "name",
                "is named in update_mask but not given; a key always has a name",
            ));
        }
        (_, Some(name)) => {
            Some(KeyName::parse(name).map_err(|e| RegistryError::invalid("name", e))?)
        }
    };
    let status = match in_mask(STATUS) {
        Some(false) => None,
        named => match key_status(r.status)? {
            None if named == Some(true) => {
                return Err(RegistryError::invalid(
                    "status",
                    "is named in update_mask but not given; use KEY_STATUS_ACTIVE or KEY_STATUS_INACTIVE",
                ));
            }
            status => status,
        },
    };
    // A field the mask leaves out is ignored, not checked (AIP-134).
    let expiry = || {
        r.expires_at
            .map(|t| system_time("expires_at", t))
            .transpose()
    };
    let expires_at = match in_mask(EXPIRES_AT) {
        Some(true) => Some(expiry()?),
        Some(false) => None,
        None => expiry()?.map(Some),
    };
    let rate_limits = match named {
        Some(named) if !(named[RATE_LIMITS] || named[BURST] || named[HOURLY]) => {
            LimitChanges::default()
        }
        Some(named) => {
            let given = limit_overrides(&r.rate_limits)?;
            LimitChanges {
                burst: (named[RATE_LIMITS] || named[BURST]).then_some(given.burst),
                hourly: (named[RATE_LIMITS] || named[HOURLY]).then_some(given.hourly),
            }
        }
        None => {
            let given = limit_overrides(&r.rate_limits)?;
            LimitChanges {
                burst: given.burst.map(Some),
                hourly: given.hourly.map(Some),
            }
        }
    };
    let metadata = match in_mask(METADATA) {
        Some(true) => Some(metadata(r.metadata.as_deref())?),
        Some(false) => None,
        None => r
            .metadata
            .as_deref()
            .map(|m| metadata(Some(m)))
            .transpose()?,
    };
    let scopes = match in_mask(SCOPES) {
        Some(true) => Some(scopes(&r.scopes)?),
        Some(false) => None,
        None if r.scopes.is_empty() => None,
        None => Some(scopes(&r.scopes)?),
    };
    Ok(KeyChanges {
        name,
        status,
        expires_at,
        expiry_earlier_only: r.expiry_earlier_only,
        rate_limits,
        metadata,
        scopes,
    })
}

/// Reads `metadata`: empty or absent is none.
/// A status given on the wire: `None` for KEY_STATUS_UNSPECIFIED (no change, or no filter).
fn key_status(value: i32) -> Result<Option<KeyStatus>, RegistryError> {
    match pb::KeyStatus::try_from(value) {
        Ok(pb::KeyStatus::Unspecified) => Ok(None),
        Ok(pb::KeyStatus::Active) => Ok(Some(KeyStatus::Active)),
        Ok(pb::KeyStatus::Inactive) => Ok(Some(KeyStatus::Inactive)),
        Err(_) => Err(RegistryError::invalid(
            "status",
            format!("must be KEY_STATUS_ACTIVE or KEY_STATUS_INACTIVE, got {value}"),
        )),
    }
}

/// The longest "not used for" span a listing takes: a century, far past any key's life, so a
/// cutoff in days never overflows a timestamp.
const MAX_UNUSED_FOR_DAYS: u32 = 36_500;

/// A listing's filters, checked.
fn key_filter(r: &pb::ListKeysRequest) -> Result<KeyFilter, RegistryError> {
    let name_contains = match r.name_contains.as_str() {
        "" => None,
        text if text.chars().count() > KeyName::MAX_CHARS => {
            return Err(RegistryError::invalid(
                "name_contains",
                format!(
                    "must be at most {} characters (no name is longer)",
                    KeyName::MAX_CHARS
                ),
            ));
        }
        text => Some(text.to_owned()),
    };
    let status = key_status(r.status)?;
    let unused_for_days = match r.unused_for_days {
        0 => None,
        days if days > MAX_UNUSED_FOR_DAYS => {
            return Err(RegistryError::invalid(
                "unused_for_days",
                format!("must be at most {MAX_UNUSED_FOR_DAYS}, got {days}"),
            ));
        }
        days => Some(days),
    };
    Ok(KeyFilter {
        name_contains,
        status,
        unused_for_days,
    })
}

fn metadata(text: Option<&str>) -> Result<Option<KeyMetadata>, RegistryError> {
    match text {
        None | Some("") => Ok(None),
        Some(text) => KeyMetadata::parse(text)
            .map(Some)
            .map_err(|e| RegistryError::invalid("metadata", e)),
    }
}

/// Reads `rate_limits`: only windows named `burst` and `hourly`, each at most once.
fn limit_overrides(limits: &[pb::RateLimit]) -> Result<LimitOverrides, RegistryError> {
    let mut overrides = LimitOverrides::default();
    for (i, limit) in limits.iter().enumerate() {
        let field = |part: &str| format!("rate_limits[{i}].{part}");
        let period = limit
            .period
            .ok_or_else(|| RegistryError::invalid(field("period"), "is required"))?;
        let period = duration(&field("period"), period)?;
        let window = WindowLimit::new(limit.limit, period).map_err(|e| match e {
            DomainError::WindowLimit { .. } => RegistryError::invalid(field("limit"), e),
            _ => RegistryError::invalid(field("period"), e),
        })?;
        let slot = match limit.name.as_str() {
            RateLimits::BURST => &mut overrides.burst,
            RateLimits::HOURLY => &mut overrides.hourly,
            other => {
                return Err(RegistryError::invalid(
                    field("name"),
                    format!("must be \"burst\" or \"hourly\", got {other:?}"),
                ));
            }
        };
        if slot.replace(window).is_some() {
            return Err(RegistryError::invalid(
                field("name"),
                format!("{:?} is given twice", limit.name),
            ));
        }
    }
    Ok(overrides)
}

/// A stored key as the API shows it, with its effective limits.
pub fn api_key(key: &KeyRecord, defaults: RateLimits) -> pb::ApiKey {
    let limits = key.rate_limits.resolve(defaults);
    pb::ApiKey {
        id: key.key_id.to_string(),
        workspace_id: key.workspace.to_string(),
        user_id: key.user.to_string(),
        name: key.name.as_str().to_owned(),
        preview: key.preview.clone(),
        status: match key.status {
            KeyStatus::Active => pb::KeyStatus::Active,
            KeyStatus::Inactive => pb::KeyStatus::Inactive,
        } as i32,
        created_at: Some(key.created_at.into()),
        updated_at: Some(key.updated_at.into()),
        last_used_at: key.last_used_at.map(Into::into),
        expires_at: key.expires_at.map(Into::into),
        rate_limits: stanna_proto::convert::rate_limits(limits),
        replaced_by: key.replaced_by.map(|id| id.to_string()).unwrap_or_default(),
        metadata: key
            .metadata
            .as_ref()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default(),
        overridden_limits: [
            (RateLimits::BURST, key.rate_limits.burst.is_some()),
            (RateLimits::HOURLY, key.rate_limits.hourly.is_some()),
        ]
        .into_iter()
        .filter(|(_, overridden)| *overridden)
        .map(|(name, _)| name.to_owned())
        .collect(),
        scopes: key.scopes.names().to_vec(),
    }
}
