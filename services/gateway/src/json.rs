//! proto3's JSON mapping for the few messages the REST layer shows, written out by hand.
//!
//! Why not pbjson: it generates serde code for every message, but swapping the well-known types to
//! `pbjson_types` would change `Timestamp`/`Duration` across the whole workspace, and its
//! timestamps end in `+00:00` where the mapping (and our contract) says `Z`. Five small functions
//! here are less than that, and they are tested against the mapping's examples.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use stanna_proto::keys::v1 as pb;

/// An `ApiKey` in proto3 JSON: lowerCamelCase, enums by name, unset optional fields omitted.
pub fn api_key(key: &pb::ApiKey) -> Value {
    let mut object = Map::with_capacity(11);
    object.insert("id".into(), key.id.clone().into());
    object.insert("workspaceId".into(), key.workspace_id.clone().into());
    object.insert("userId".into(), key.user_id.clone().into());
    object.insert("name".into(), key.name.clone().into());
    object.insert("preview".into(), key.preview.clone().into());
    object.insert("status".into(), key.status().as_str_name().into());
    for (name, value) in [
        ("createdAt", &key.created_at),
        ("updatedAt", &key.updated_at),
        ("lastUsedAt", &key.last_used_at),
        ("expiresAt", &key.expires_at),
    ] {
        if let Some(time) = value {
            object.insert(name.into(), timestamp(time).into());
        }
    }
    let limits: Vec<Value> = key
        .rate_limits
        .iter()
        .map(|l| {
            json!({
                "name": l.name,
                "limit": l.limit,
                "period": duration(&l.period),
            })
        })
        .collect();
    object.insert("rateLimits".into(), limits.into());
    Value::Object(object)
}

/// A quota window in proto3 JSON.
pub fn window(window: &pb::Window) -> Value {
    json!({
        "name": window.name,
        "limit": window.limit,
        "remaining": window.remaining,
        "resetAfter": duration(&window.reset_after),
        "period": duration(&window.period),
    })
}

/// RFC 3339 in UTC ending in `Z`, with 0, 3, 6 or 9 fractional digits as the mapping asks.
pub fn timestamp(time: &prost_types::Timestamp) -> String {
    let nanos = u32::try_from(time.nanos).unwrap_or(0);
    DateTime::<Utc>::from_timestamp(time.seconds, nanos)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A duration as the mapping writes it: seconds with 0, 3, 6 or 9 fractional digits and `s`.
pub fn duration(value: &Option<prost_types::Duration>) -> String {
    let d = crate::rate_limit_headers::duration(value);
    let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
    if nanos == 0 {
        format!("{secs}s")
    } else if nanos % 1_000_000 == 0 {
        format!("{secs}.{:03}s", nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        format!("{secs}.{:06}s", nanos / 1_000)
    } else {
        format!("{secs}.{nanos:09}s")
    }
}

/// Parses an RFC 3339 timestamp (any offset; stored as UTC).
///
/// # Errors
/// A message saying what form is expected.
pub fn parse_timestamp(text: &str) -> Result<prost_types::Timestamp, String> {
    let time = DateTime::parse_from_rfc3339(text)
        .map_err(|_| "must be an RFC 3339 timestamp such as \"2027-01-31T12:00:00Z\"".to_owned())?;
    Ok(prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

/// Parses a non-negative proto3 JSON duration such as `"3600s"` or `"1.5s"`.
///
/// # Errors
/// A message saying what form is expected.
pub fn parse_duration(text: &str) -> Result<prost_types::Duration, String> {
    let bad = || "must be a duration in seconds such as \"3600s\" or \"1.5s\"".to_owned();
    let number = text.strip_suffix('s').ok_or_else(bad)?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || fraction.len() > 9
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || (number.contains('.') && fraction.is_empty())
    {
        return Err(bad());
    }
    let seconds: i64 = whole.parse().map_err(|_| bad())?;
    let nanos: i32 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}").parse().map_err(|_| bad())?
    };
    Ok(prost_types::Duration { seconds, nanos })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_end_in_z_with_the_mappings_fraction_digits() {
        let t = |seconds, nanos| timestamp(&prost_types::Timestamp { seconds, nanos });
        assert_eq!(t(1_700_000_000, 0), "2023-11-14T22:13:20Z");
        assert_eq!(t(1_700_000_000, 5_000_000), "2023-11-14T22:13:20.005Z");
        assert_eq!(t(1_700_000_000, 5_000), "2023-11-14T22:13:20.000005Z");
        assert_eq!(t(1_700_000_000, 5), "2023-11-14T22:13:20.000000005Z");
    }

    #[test]
    fn timestamps_parse_with_any_offset() {
        let z = parse_timestamp("2023-11-14T22:13:20Z").unwrap();
        assert_eq!(z.seconds, 1_700_000_000);
        let offset = parse_timestamp("2023-11-15T00:13:20.5+02:00").unwrap();
        assert_eq!((offset.seconds, offset.nanos), (1_700_000_000, 500_000_000));
        for bad in ["", "2023-11-14", "yesterday", "2023-11-14 22:13:20"] {
            assert!(parse_timestamp(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_round_trip_in_the_mappings_form() {
        let d = |seconds, nanos| duration(&Some(prost_types::Duration { seconds, nanos }));
        assert_eq!(d(60, 0), "60s");
        assert_eq!(d(1, 500_000_000), "1.500s");
        assert_eq!(d(0, 1_000), "0.000001s");
        assert_eq!(d(0, 1), "0.000000001s");
        assert_eq!(duration(&None), "0s");
        let p = |s| parse_duration(s).map(|d| (d.seconds, d.nanos));
        assert_eq!(p("3600s"), Ok((3600, 0)));
        assert_eq!(p("1.5s"), Ok((1, 500_000_000)));
        assert_eq!(p("0.000000001s"), Ok((0, 1)));
        for bad in [
            "",
            "s",
            "60",
            "-1s",
            "1.s",
            ".5s",
            "1.0000000001s",
            "1e3s",
            "1 s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
