//! Extractors for the REST routes whose every refusal is a 400 `invalid_request` naming the field
//! as the client spelled it (the contract's lowerCamelCase; a snake_case spelling is accepted as
//! proto3's JSON parsers do). A body is read as one JSON object; its keys are checked against the
//! fields its type declares (read from the serde derive, so the list is written once), so an
//! unknown field — or one that would act for someone else — is named with the reason; then the
//! object is deserialized with `serde_path_to_error`, which names the field whose value is wrong.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use http::request::Parts;
use serde::de::{self, DeserializeOwned, Visitor};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// A request body type of the REST API.
pub trait RestBody: DeserializeOwned {
    /// Whether an empty body means `{}` (otherwise it is refused).
    const MAY_BE_EMPTY: bool = false;
}

impl RestBody for super::types::CreateKeyBody {}
impl RestBody for super::types::UpdateKeyBody {}
impl RestBody for super::types::RotateKeyBody {
    const MAY_BE_EMPTY: bool = true;
}

/// A JSON body of type `T`; bodies are read as JSON whatever their `Content-Type`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: RestBody> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection| match rejection {
                    BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                        ApiError::PayloadTooLarge
                    }
                    _ => ApiError::invalid("body", "body: could not be read"),
                })?;
        parse_body(&bytes).map(JsonBody)
    }
}

/// Parses a body (see the module's doc for the order of checks).
///
/// # Errors
/// [`ApiError::InvalidRequest`] naming `body` or the field at fault.
pub fn parse_body<T: RestBody>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        if T::MAY_BE_EMPTY {
            return typed(Map::new());
        }
        return Err(ApiError::invalid("body", "body: a JSON object is required"));
    }
    let object = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return Err(ApiError::invalid("body", "body: must be a JSON object")),
        Err(e) => {
            return Err(ApiError::invalid(
                "body",
                format!(
                    "body: not valid JSON (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            ));
        }
    };
    typed(canonical_fields::<T>(object.into_iter())?)
}

/// The query parameters of `T` (percent-decoded).
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let pairs = url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .map(|(name, value)| (name.into_owned(), Value::String(value.into_owned())));
        typed(canonical_fields::<T>(pairs)?).map(QueryParams)
    }
}

/// The key id of a `/v1/keys/{id}` path (checked by the registry); a path segment that does not
/// even decode is a 400 naming `id`.
pub struct KeyIdPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for KeyIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| Self(id))
            .map_err(|_| {
                ApiError::invalid(
                    "id",
                    "id: must be a key id (12 characters of 0-9, A-Z, a-z)",
                )
            })
    }
}

/// Keys renamed to the fields `T` declares (a snake_case spelling of a field is that field); a
/// key `T` does not declare is refused, with why.
fn canonical_fields<T: DeserializeOwned>(
    entries: impl Iterator<Item = (String, Value)>,
) -> Result<Map<String, Value>, ApiError> {
    let fields = fields_of::<T>();
    let mut object = Map::new();
    for (key, value) in entries {
        let name = if fields.contains(&key.as_str()) {
            key
        } else {
            let camel = lower_camel_case(&key);
            if !fields.contains(&camel.as_str()) {
                return Err(refused_field(&key, fields));
            }
            camel
        };
        if object.contains_key(&name) {
            return Err(ApiError::invalid(
                name.clone(),
                format!("{name}: is given twice"),
            ));
        }
        object.insert(name, value);
    }
    Ok(object)
}

/// Deserializes the checked object, naming the field whose value is refused.
fn typed<T: DeserializeOwned>(object: Map<String, Value>) -> Result<T, ApiError> {
    let object = Value::Object(object);
    serde_path_to_error::deserialize(&object).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner().to_string();
        // A required field that is absent is named, not blamed on the whole body or query.
        let missing = inner
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'));
        if let Some(name) = missing
            && field == "."
        {
            return ApiError::invalid(name.to_owned(), format!("{name}: is required"));
        }
        let field = if field == "." {
            "body".to_owned()
        } else {
            field
        };
        let reason = reworded(&inner, object.get(&field));
        ApiError::invalid(field.clone(), format!("{field}: {reason}"))
    })
}

/// serde's `invalid type: integer `5`, expected a string` in the API's words: `must be a
/// string, got a number` (the value is not echoed: it may be long, or a secret pasted by
/// mistake). Other reasons — the types' own, already worded so — pass unchanged.
fn reworded(reason: &str, value: Option<&Value>) -> String {
    let Some((_, expected)) = reason
        .strip_prefix("invalid type: ")
        .or_else(|| reason.strip_prefix("invalid value: "))
        .and_then(|rest| rest.split_once(", expected "))
    else {
        return reason.to_owned();
    };
    let expected = expected.strip_prefix("must be ").unwrap_or(expected);
    let got = match value {
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "a boolean",
        Some(Value::Number(_)) => "a number",
        Some(Value::String(_)) => "a string",
        Some(Value::Array(_)) => "an array",
        Some(Value::Object(_)) => "an object",
        None => return format!("must be {expected}"),
    };
    format!("must be {expected}, got {got}")
}

/// A field the route does not take: named, with why (and, for a mistyped one, the fields the
/// route does take).
fn refused_field(field: &str, known: &[&str]) -> ApiError {
    // A name that may be a secret pasted in the wrong place (`?sk-…`, a key as a JSON member
    // name) is not repeated: errors are logged and shown (found by the `rest_query_and_path`
    // fuzz target).
    // Repeated only when it reads as a field name: up to 32 of `A-Za-z0-9_-`, no run of 20
    // letters and digits (a key's secret has 32).
    let secret_shaped = field.len() > 32
        || !field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        || field
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|run| run.len() >= 20);
    if secret_shaped {
        return ApiError::invalid(
            "unknown",
            format!(
                "a field this route does not take (not repeated here: it does not read as a field name and may be a key) (known: {})",
                known.join(", ")
            ),
        );
    }
    let why = match lower_camel_case(field).as_str() {
        "rateLimits" => {
            "keys made over the API get the default rate limits; an admin sets others".to_owned()
        }
        "workspaceId" | "userId" => {
            "the workspace and user are those of the API key making the request".to_owned()
        }
        _ => format!("unknown field (known: {})", known.join(", ")),
    };
    ApiError::invalid(field, format!("{field}: {why}"))
}

/// `expires_at` → `expiresAt`.
pub(crate) fn lower_camel_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The field names `T`'s serde derive declares, asked of the derive itself: a deserializer that
/// records the `fields` of `deserialize_struct` and stops.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Fields(&'static [&'static str]);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> de::Deserializer<'de> for &mut Fields {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = fields;
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields = Fields(&[]);
    let _ = T::deserialize(&mut fields);
    fields.0
}

/// The request's `X-Request-Id` (the gateway's request-id layer sets one on every request), for
/// the registry call, which records it with every change.
pub struct RequestIdHeader(pub Option<http::HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for RequestIdHeader {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.headers.get(&crate::REQUEST_ID).cloned()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::types::{CreateKeyBody, RotateKeyBody, UpdateKeyBody};
    use super::*;

    fn field_of<T: RestBody + std::fmt::Debug>(body: &str) -> String {
        match parse_body::<T>(body.as_bytes()) {
            Err(ApiError::InvalidRequest { field, message }) => {
                assert!(message.starts_with(&field), "{message}");
                field
            }
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn the_fields_come_from_the_derive() {
        assert_eq!(
            fields_of::<CreateKeyBody>(),
            ["name", "expiresAt", "scopes"]
        );
        assert_eq!(fields_of::<RotateKeyBody>(), ["gracePeriod"]);
    }

    #[test]
    fn each_refusal_names_its_field() {
        assert_eq!(field_of::<CreateKeyBody>(""), "body");
        assert_eq!(field_of::<CreateKeyBody>("{"), "body");
        assert_eq!(field_of::<CreateKeyBody>("[1]"), "body");
        assert_eq!(field_of::<CreateKeyBody>(r#"{"name":5}"#), "name");
        assert_eq!(field_of::<CreateKeyBody>(r#"{"colour":"red"}"#), "colour");
        assert_eq!(
            field_of::<CreateKeyBody>(r#"{"rate_limits":[]}"#),
            "rate_limits"
        );
        assert_eq!(
            field_of::<CreateKeyBody>(r#"{"name":"a","expires_at":"tomorrow"}"#),
            "expiresAt"
        );
        assert_eq!(
            field_of::<CreateKeyBody>(r#"{"expiresAt":null,"expires_at":null}"#),
            "expiresAt"
        );
        assert_eq!(field_of::<UpdateKeyBody>(r#"{"status":"ON"}"#), "status");
        assert_eq!(field_of::<CreateKeyBody>(r#"{"scopes":"a"}"#), "scopes");
        assert_eq!(field_of::<UpdateKeyBody>(r#"{"scopes":[1]}"#), "scopes[0]");
        assert_eq!(field_of::<UpdateKeyBody>(r#"{"status":0}"#), "status");
        assert_eq!(
            field_of::<RotateKeyBody>(r#"{"gracePeriod":"1h"}"#),
            "gracePeriod"
        );
    }

    fn message_of<T: RestBody + std::fmt::Debug>(body: &str) -> String {
        match parse_body::<T>(body.as_bytes()) {
            Err(ApiError::InvalidRequest { message, .. }) => message,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn refusals_are_worded_for_people_without_echoing_the_value() {
        assert_eq!(
            message_of::<CreateKeyBody>(r#"{"name":5}"#),
            "name: must be a string, got a number"
        );
        assert_eq!(
            message_of::<UpdateKeyBody>(r#"{"status":true}"#),
            r#"status: must be "KEY_STATUS_ACTIVE" or "KEY_STATUS_INACTIVE", got a boolean"#
        );
        assert_eq!(
            message_of::<CreateKeyBody>(r#"{"colour":"red"}"#),
            "colour: unknown field (known: name, expiresAt, scopes)"
        );
    }

    #[test]
    fn snake_case_and_empty_bodies_are_read_as_the_mapping_allows() {
        let body: CreateKeyBody =
            parse_body(br#"{"name":"a","expires_at":"2030-01-01T00:00:00Z"}"#).unwrap();
        assert!(body.expires_at.is_some());
        let rotate: RotateKeyBody = parse_body(b" ").unwrap();
        assert!(rotate.grace_period.is_none());
        let update: UpdateKeyBody = parse_body(br#"{"status":2,"name":null}"#).unwrap();
        assert_eq!(
            update.status,
            Some(super::super::types::KeyStatusJson::Inactive)
        );
    }
}
