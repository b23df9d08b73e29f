//! The REST API's request and response bodies: serde types in proto3's JSON mapping
//! (lowerCamelCase, enums by name, unset optional fields omitted), each with its OpenAPI schema
//! derived from the same definition (utoipa), and converted from the contract's messages with
//! `From`. Request types refuse unknown fields; `extract.rs` names the field at fault.

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use stanna_proto::keys::v1 as pb;
use utoipa::ToSchema;

use super::json::{Duration, Timestamp};

/// Whether a key may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = KeyStatus)]
pub enum KeyStatusJson {
    /// The key verifies (unless past `expiresAt`).
    #[serde(rename = "KEY_STATUS_ACTIVE")]
    Active,
    /// The key is kept and listed but refused until it is activated again.
    #[serde(rename = "KEY_STATUS_INACTIVE")]
    Inactive,
}

impl KeyStatusJson {
    fn of(status: pb::KeyStatus) -> Self {
        match status {
            pb::KeyStatus::Inactive => Self::Inactive,
            pb::KeyStatus::Active | pb::KeyStatus::Unspecified => Self::Active,
        }
    }

    /// The contract's value.
    pub fn to_proto(self) -> pb::KeyStatus {
        match self {
            Self::Active => pb::KeyStatus::Active,
            Self::Inactive => pb::KeyStatus::Inactive,
        }
    }
}

impl<'de> Deserialize<'de> for KeyStatusJson {
    /// By name, or by number as proto3's JSON mapping allows; never `KEY_STATUS_UNSPECIFIED`.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StatusVisitor;
        const EXPECTED: &str = "must be \"KEY_STATUS_ACTIVE\" or \"KEY_STATUS_INACTIVE\"";
        impl Visitor<'_> for StatusVisitor {
            type Value = KeyStatusJson;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
                match pb::KeyStatus::from_str_name(name) {
                    Some(pb::KeyStatus::Active) => Ok(KeyStatusJson::Active),
                    Some(pb::KeyStatus::Inactive) => Ok(KeyStatusJson::Inactive),
                    _ => Err(E::custom(EXPECTED)),
                }
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                match n {
                    1 => Ok(KeyStatusJson::Active),
                    2 => Ok(KeyStatusJson::Inactive),
                    _ => Err(E::custom(EXPECTED)),
                }
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                u64::try_from(n).map_or_else(|_| Err(E::custom(EXPECTED)), |n| self.visit_u64(n))
            }
        }
        deserializer.deserialize_any(StatusVisitor)
    }
}

/// One rate-limit window of a key.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RateLimit)]
pub struct RateLimitJson {
    /// `burst` or `hourly`.
    #[schema(schema_with = window_name)]
    pub name: String,
    /// Requests admitted per `period`.
    pub limit: u32,
    /// The window's length.
    pub period: Duration,
}

/// The schema of a window's name: one of the product's two windows.
fn window_name() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(["burst", "hourly"]))
        .description(Some("`burst` or `hourly`."))
        .build()
}

/// An API key as every caller sees it after creation: metadata and a masked preview, never the
/// secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = ApiKey)]
pub struct ApiKeyJson {
    /// The public key id (12 characters), also embedded in the key itself.
    pub id: String,
    /// The key's workspace.
    pub workspace_id: String,
    /// The key's owner.
    pub user_id: String,
    /// The name chosen by its creator.
    pub name: String,
    /// `sk-` + the first 4 + `...` + the last 4 characters.
    pub preview: String,
    /// Active or inactive.
    pub status: KeyStatusJson,
    /// When the key was created.
    pub created_at: Timestamp,
    /// When its name or status last changed.
    pub updated_at: Timestamp,
    /// When it was last used successfully; absent if never.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub last_used_at: Option<Timestamp>,
    /// When it stops verifying; absent if never (set on a rotated-out key).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub expires_at: Option<Timestamp>,
    /// Its effective limits: `burst` then `hourly`.
    pub rate_limits: Vec<RateLimitJson>,
    /// The key that replaced this one by rotation (`/v1/keys/{replacedBy}`); absent if it was
    /// not rotated.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub replaced_by: Option<String>,
    /// What the key may do, sorted; empty: its user's full permissions.
    #[schema(schema_with = scope_list)]
    pub scopes: Vec<String>,
}

/// The schema of a scope list: at most 32 names of 1–64 of `[a-z0-9:._-]`.
fn scope_list() -> utoipa::openapi::Array {
    utoipa::openapi::ArrayBuilder::new()
        .items(
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::Type::String)
                .min_length(Some(1))
                .max_length(Some(64))
                .pattern(Some("^[a-z0-9:._-]{1,64}$")),
        )
        .max_items(Some(32))
        .description(Some(
            "Scopes, each 1–64 of a-z, 0-9, ':', '.', '_', '-'; empty: the user's full permissions.",
        ))
        .build()
}

/// A request's scope list, which may also be `null` (the field is then kept, like an absent one).
fn nullable_scope_list() -> utoipa::openapi::Schema {
    utoipa::openapi::Schema::OneOf(
        utoipa::openapi::OneOfBuilder::new()
            .item(scope_list())
            .item(utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::Null))
            .build(),
    )
}

impl From<&pb::ApiKey> for ApiKeyJson {
    fn from(key: &pb::ApiKey) -> Self {
        let time = |t: &Option<stanna_proto::prost_types::Timestamp>| t.map(Timestamp);
        Self {
            id: key.id.clone(),
            workspace_id: key.workspace_id.clone(),
            user_id: key.user_id.clone(),
            name: key.name.clone(),
            preview: key.preview.clone(),
            status: KeyStatusJson::of(key.status()),
            created_at: Timestamp(key.created_at.unwrap_or_default()),
            updated_at: Timestamp(key.updated_at.unwrap_or_default()),
            last_used_at: time(&key.last_used_at),
            expires_at: time(&key.expires_at),
            rate_limits: key
                .rate_limits
                .iter()
                .map(|l| RateLimitJson {
                    name: l.name.clone(),
                    limit: l.limit,
                    period: Duration::of(l.period),
                })
                .collect(),
            replaced_by: Some(key.replaced_by.clone()).filter(|id| !id.is_empty()),
            scopes: key.scopes.clone(),
        }
    }
}

/// A key just made (or the replacement a rotation made) and its secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
// The name of the hand-written document this one replaced: generated clients keep their types.
#[schema(as = KeyWithSecret)]
pub struct CreatedKeyJson {
    /// The key's metadata, as later calls show it.
    pub key: ApiKeyJson,
    /// The whole key (`sk-…`, 53 characters): shown this once, never again.
    pub secret: String,
}

/// One page of keys, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = KeyPage)]
pub struct KeyListJson {
    /// The keys.
    pub keys: Vec<ApiKeyJson>,
    /// Pass as `pageToken` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next_page_token: Option<String>,
}

/// A window's state after this request was counted.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = Window)]
pub struct WindowJson {
    /// `burst` or `hourly`.
    #[schema(schema_with = window_name)]
    pub name: String,
    /// The window's limit.
    pub limit: u32,
    /// Requests still admitted now.
    pub remaining: u32,
    /// Time until `remaining` is back to `limit`.
    pub reset_after: Duration,
    /// The window's length.
    pub period: Duration,
}

impl From<&pb::Window> for WindowJson {
    fn from(w: &pb::Window) -> Self {
        Self {
            name: w.name.clone(),
            limit: w.limit,
            remaining: w.remaining,
            reset_after: Duration::of(w.reset_after),
            period: Duration::of(w.period),
        }
    }
}

/// Who is calling, and its windows after this request.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = Me)]
pub struct MeJson {
    /// How the caller signed in: `apiKey`, or `session` (the dashboard's cookie).
    #[schema(value_type = String, example = "apiKey")]
    pub credential: &'static str,
    /// The caller's workspace.
    pub workspace_id: String,
    /// The caller's user (the key's owner, or the signed-in user).
    pub user_id: String,
    /// The key's id (API keys only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub key_id: Option<String>,
    /// The key's name (API keys only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub name: Option<String>,
    /// Sessions only: `member` (their own keys) or `admin` (every key of the workspace).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub role: Option<&'static str>,
    /// Sessions only: the user's display name, when the product gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub display_name: Option<String>,
    /// Sessions only: the user's email, when the product gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub email: Option<String>,
    /// Sessions only: the `X-CSRF-Token` every state-changing call of this session must send.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub csrf_token: Option<String>,
    /// Each window's state.
    pub windows: Vec<WindowJson>,
}

/// `POST /v1/keys`: a new key for the caller's own user, with the default limits.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = CreateKeyRequest)]
pub struct CreateKeyBody {
    /// 1–100 characters after trimming, no control characters.
    #[schema(
        required = true,
        nullable = false,
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: Option<String>,
    /// When the key stops verifying; must be in the future.
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    /// What the key may do. Absent or empty: the caller's own permissions — all of its user's
    /// for a session or an unscoped key, the calling key's scopes for a scoped one (which may
    /// give only scopes it holds).
    #[serde(default)]
    #[schema(schema_with = nullable_scope_list)]
    pub scopes: Option<Vec<String>>,
}

/// `PATCH /v1/keys/{id}`: absent (or null) fields are kept.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = UpdateKeyRequest)]
pub struct UpdateKeyBody {
    /// A new name, under the same rules as at creation.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: Option<String>,
    /// A new status.
    #[serde(default)]
    pub status: Option<KeyStatusJson>,
    /// A new expiry, **earlier** than the current one (any time, if the key has none): the key
    /// API can shorten a key's life, never extend it (nor a rotated-out key's grace). A time
    /// already past stops the key at once.
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    /// New scopes, replacing the key's; `[]` gives the key its user's full permissions (only a
    /// caller with them may). A scoped caller may give only scopes it holds, and change only
    /// keys within its scopes.
    #[serde(default)]
    #[schema(schema_with = nullable_scope_list)]
    pub scopes: Option<Vec<String>>,
}

/// `POST /v1/keys/{id}/rotate`: the body may be empty.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = RotateKeyRequest)]
pub struct RotateKeyBody {
    /// How long the old key keeps working, `"3600s"` or `"1.5s"`, at most 30 days
    /// (`"2592000s"`); absent: it stops at once.
    #[serde(default)]
    // The schema says the range too (a pattern: JSON Schema has no duration type), so a client
    // or a generator reading the document makes only grace periods the API takes.
    #[schema(value_type = Option<String>, examples("3600s"), pattern = "^0*(?:(?:[0-9]|[1-9][0-9]{1,5}|1[0-9]{6}|2[0-4][0-9]{5}|25[0-8][0-9]{4}|259[01][0-9]{3})(?:\\.[0-9]{1,9})?|2592000(?:\\.0{1,9})?)s$")]
    pub grace_period: Option<Duration>,
}

/// `GET /v1/keys` parameters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListKeysQuery {
    /// Keys per page: 0 or absent means 50; at most 100.
    #[serde(default)]
    #[param(value_type = Option<u32>, minimum = 0, maximum = 100)]
    pub page_size: Option<PageSize>,
    /// A `nextPageToken` from the previous page of the same listing (same filters).
    #[serde(default)]
    pub page_token: Option<String>,
    /// Only keys whose name contains this text, ignoring case; `%` and `_` are plain
    /// characters. At most 100 characters.
    #[serde(default)]
    #[param(max_length = 100)]
    pub name_contains: Option<String>,
    /// Only keys with this status. An active key past its `expiresAt` still counts as active.
    #[serde(default)]
    #[param(value_type = Option<KeyStatusJson>)]
    pub status: Option<KeyStatusJson>,
    /// Only keys not used for at least this many days (a key never used counts from its
    /// creation). The instant is fixed by the first page and carried in `nextPageToken`.
    #[serde(default)]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 36500)]
    pub unused_for_days: Option<Days>,
}

/// A whole number from `MIN` to `MAX`, given as a query parameter (text) or a number. The value
/// is not repeated in the refusal (it may be a key pasted in the wrong place), and the range is
/// checked here, where the field is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounded<const MIN: u32, const MAX: u32>(pub u32);

/// A page size: 0 (the default) to 100.
pub type PageSize = Bounded<0, 100>;

/// A number of days: 1 to 36 500 (a century).
pub type Days = Bounded<1, 36_500>;

impl<'de, const MIN: u32, const MAX: u32> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BoundedVisitor<const MIN: u32, const MAX: u32>;
        impl<const MIN: u32, const MAX: u32> Visitor<'_> for BoundedVisitor<MIN, MAX> {
            type Value = Bounded<MIN, MAX>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "a whole number from {MIN} to {MAX}")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                text.parse::<u64>()
                    .map_err(|_| E::custom(format!("must be a whole number from {MIN} to {MAX}")))
                    .and_then(|n| self.visit_u64(n))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                u32::try_from(n)
                    .ok()
                    .filter(|n| (MIN..=MAX).contains(n))
                    .map(Bounded)
                    .ok_or_else(|| E::custom(format!("must be a whole number from {MIN} to {MAX}")))
            }
        }
        deserializer.deserialize_any(BoundedVisitor::<MIN, MAX>)
    }
}

/// `GET /v1/keys/{id}/usage` parameters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// How many days up to now: 1 to 30 (usage is kept 30 days); default 7.
    #[serde(default)]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 30)]
    pub days: Option<UsageDays>,
}

/// `GET /v1/keys/usage` parameters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct UsageManyQuery {
    /// 1 to 100 key ids, comma-separated (a page of `GET /v1/keys`). Keys that are not the
    /// caller's are left out of the answer.
    #[param(pattern = r"^[0-9A-Za-z]{12}(,[0-9A-Za-z]{12}){0,99}$")]
    pub key_ids: String,
    /// How many days up to now: 1 to 30; default 7.
    #[serde(default)]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 30)]
    pub days: Option<UsageDays>,
}

/// A usage span in days: 1 to 30.
pub type UsageDays = Bounded<1, 30>;

/// Requests by outcome. Counts are JSON numbers (not proto3's strings for 64-bit integers): a
/// key's requests in 30 days stay far below 2⁵³.
#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = UsageCounts)]
pub struct UsageCountsJson {
    /// Admitted.
    pub allowed: u64,
    /// Refused by a rate limit (429).
    pub rate_limited: u64,
    /// Refused: the key was inactive (401).
    pub inactive: u64,
    /// Refused: the key had expired (401).
    pub expired: u64,
    /// Refused: another workspace, or a scope the key lacks (403).
    pub forbidden: u64,
}

impl From<Option<&pb::UsageCounts>> for UsageCountsJson {
    fn from(c: Option<&pb::UsageCounts>) -> Self {
        c.map_or_else(Self::default, |c| Self {
            allowed: c.allowed,
            rate_limited: c.rate_limited,
            inactive: c.inactive,
            expired: c.expired,
            forbidden: c.forbidden,
        })
    }
}

/// One hour of one key.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = UsageHour)]
pub struct UsageHourJson {
    /// The hour's start.
    pub hour: Timestamp,
    /// What happened in it.
    #[serde(flatten)]
    pub counts: UsageCountsJson,
}

/// One key's usage: the hours with any request (oldest first) and the sum.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = KeyUsage)]
pub struct KeyUsageJson {
    /// The key.
    pub key_id: String,
    /// Hours with any request, oldest first; hours without any are left out.
    pub hours: Vec<UsageHourJson>,
    /// The sum over the range.
    pub total: UsageCountsJson,
}

impl From<&pb::KeyUsage> for KeyUsageJson {
    fn from(k: &pb::KeyUsage) -> Self {
        Self {
            key_id: k.key_id.clone(),
            hours: k
                .hours
                .iter()
                .map(|h| UsageHourJson {
                    hour: Timestamp(h.hour.unwrap_or_default()),
                    counts: h.counts.as_ref().into(),
                })
                .collect(),
            total: k.total.as_ref().into(),
        }
    }
}

/// Usage of one key or of several, over `[startTime, endTime)` (whole hours).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Usage)]
pub struct UsageJson {
    /// The first hour.
    pub start_time: Timestamp,
    /// The end, exclusive.
    pub end_time: Timestamp,
    /// One entry per key asked for that is the caller's, in the order asked for.
    pub keys: Vec<KeyUsageJson>,
}

impl From<&pb::GetKeyUsageResponse> for UsageJson {
    fn from(r: &pb::GetKeyUsageResponse) -> Self {
        Self {
            start_time: Timestamp(r.start_time.unwrap_or_default()),
            end_time: Timestamp(r.end_time.unwrap_or_default()),
            keys: r.keys.iter().map(KeyUsageJson::from).collect(),
        }
    }
}

/// `GET /v1/audit` parameters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this key's events (and the rotation that made it).
    #[serde(default)]
    #[param(pattern = r"^[0-9A-Za-z]{12}$")]
    pub key_id: Option<String>,
    /// Only events of the last this many days: 1 to 3650; default all that are kept.
    #[serde(default)]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 3650)]
    pub days: Option<AuditDays>,
    /// Events per page: 0 or absent means 50; at most 100.
    #[serde(default)]
    #[param(value_type = Option<u32>, minimum = 0, maximum = 100)]
    pub page_size: Option<PageSize>,
    /// A `nextPageToken` from the previous page of the same listing.
    #[serde(default)]
    pub page_token: Option<String>,
}

/// An audit span in days: 1 to 3650 (the longest retention).
pub type AuditDays = Bounded<1, 3650>;

/// Who made a change.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AuditActor)]
pub struct AuditActorJson {
    /// `admin` (a named admin token), `key` (an API key) or `session` (a dashboard session).
    pub kind: String,
    /// The admin token's name, the key's id or the session's id.
    pub id: String,
    /// The key's or session's user; absent for an admin.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub user_id: Option<String>,
}

/// One change to a key or session.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AuditEvent)]
pub struct AuditEventJson {
    /// Increasing: a later event has a larger id.
    pub id: String,
    /// When.
    pub time: Timestamp,
    /// `key.created`, `key.updated`, `key.rotated`, `key.deleted`, `session.created` or
    /// `session.revoked`.
    pub action: String,
    /// The user who owns the key or the session.
    pub user_id: String,
    /// The key changed; absent for a session event.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub key_id: Option<String>,
    /// A rotation's replacement key.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub related_key_id: Option<String>,
    /// The session changed; absent for a key event.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub session_id: Option<String>,
    /// Who.
    pub actor: AuditActorJson,
    /// The request it was made in (`X-Request-Id`).
    pub request_id: String,
    /// The changed fields before; absent for a creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, nullable = false)]
    pub before: Option<serde_json::Value>,
    /// The changed fields after; absent for a deletion.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, nullable = false)]
    pub after: Option<serde_json::Value>,
}

impl From<&pb::AuditEvent> for AuditEventJson {
    fn from(e: &pb::AuditEvent) -> Self {
        let some = |s: &String| Some(s.clone()).filter(|s| !s.is_empty());
        // The registry writes these as JSON objects; one that does not parse is left out rather
        // than shown as text the client cannot tell from an object.
        let state = |s: &String| serde_json::from_str(s).ok();
        let actor = e.actor.clone().unwrap_or_default();
        Self {
            id: e.id.clone(),
            time: Timestamp(e.time.unwrap_or_default()),
            action: e.action.clone(),
            user_id: e.user_id.clone(),
            key_id: some(&e.key_id),
            related_key_id: some(&e.related_key_id),
            session_id: some(&e.session_id),
            actor: AuditActorJson {
                kind: actor.kind,
                id: actor.id,
                user_id: Some(actor.user_id).filter(|u| !u.is_empty()),
            },
            request_id: e.request_id.clone(),
            before: state(&e.before),
            after: state(&e.after),
        }
    }
}

/// One page of audit events, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AuditPage)]
pub struct AuditListJson {
    /// The events.
    pub events: Vec<AuditEventJson>,
    /// Pass as `pageToken` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next_page_token: Option<String>,
}
