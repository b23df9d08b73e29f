//! The JSON forms of the contract's scalar types in the REST API (proto3's JSON mapping):
//! [`Timestamp`] (RFC 3339 in UTC ending in `Z`, with 0, 3, 6 or 9 fractional digits) and
//! [`Duration`] (`"3600s"`, `"1.5s"`). Each carries its hand-written OpenAPI schema, since the
//! serde form is custom.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use stanna_proto::prost_types;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// A point in time: `2027-01-31T12:00:00Z` (any offset is accepted and stored as UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub prost_types::Timestamp);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let nanos = u32::try_from(self.0.nanos).unwrap_or(0);
        let text = DateTime::<Utc>::from_timestamp(self.0.seconds, nanos)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::AutoSi, true);
        serializer.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        let time = DateTime::parse_from_rfc3339(&text).map_err(|_| {
            D::Error::custom("must be an RFC 3339 timestamp such as \"2027-01-31T12:00:00Z\"")
        })?;
        Ok(Self(prost_types::Timestamp {
            seconds: time.timestamp(),
            nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
        }))
    }
}

impl PartialSchema for Timestamp {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some(
                "RFC 3339; answers are in UTC and end in `Z` (0, 3, 6 or 9 fractional digits)",
            ))
            .examples(["2027-01-31T12:00:00Z"])
            .into()
    }
}

impl ToSchema for Timestamp {}

/// A length of time as proto3 JSON writes it: seconds with 0, 3, 6 or 9 fractional digits and an
/// `s`, e.g. `"3600s"` or `"1.5s"`. Never negative here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration(pub prost_types::Duration);

/// What a duration looks like, for the error message and the schema.
const DURATION_FORM: &str = "must be a duration in seconds such as \"3600s\" or \"1.5s\"";

impl Duration {
    /// A duration from the contract (absent reads as zero).
    pub fn of(value: Option<prost_types::Duration>) -> Self {
        Self(value.unwrap_or_default())
    }

    /// Parses the proto3 JSON form.
    fn parse(text: &str) -> Option<prost_types::Duration> {
        let number = text.strip_suffix('s')?;
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !digits(whole)
            || fraction.len() > 9
            || !digits(fraction)
            || (number.contains('.') && fraction.is_empty())
        {
            return None;
        }
        let seconds = whole.parse().ok()?;
        let nanos = if fraction.is_empty() {
            0
        } else {
            format!("{fraction:0<9}").parse().ok()?
        };
        Some(prost_types::Duration { seconds, nanos })
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (secs, nanos) = (self.0.seconds.max(0), self.0.nanos.max(0));
        let text = if nanos == 0 {
            format!("{secs}s")
        } else if nanos % 1_000_000 == 0 {
            format!("{secs}.{:03}s", nanos / 1_000_000)
        } else if nanos % 1_000 == 0 {
            format!("{secs}.{:06}s", nanos / 1_000)
        } else {
            format!("{secs}.{nanos:09}s")
        };
        serializer.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        Self::parse(&text)
            .map(Self)
            .ok_or_else(|| D::Error::custom(DURATION_FORM))
    }
}

impl PartialSchema for Duration {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^[0-9]+(\.[0-9]{1,9})?s$"))
            .description(Some("seconds with up to 9 fractional digits and an `s`"))
            .examples(["3600s"])
            .into()
    }
}

impl ToSchema for Duration {}

#[cfg(test)]
mod tests {
    use super::*;

    fn text<T: Serialize>(value: T) -> String {
        serde_json::to_value(value)
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn timestamps_end_in_z_with_the_mappings_fraction_digits() {
        let t = |seconds, nanos| text(Timestamp(prost_types::Timestamp { seconds, nanos }));
        assert_eq!(t(1_700_000_000, 0), "2023-11-14T22:13:20Z");
        assert_eq!(t(1_700_000_000, 5_000_000), "2023-11-14T22:13:20.005Z");
        assert_eq!(t(1_700_000_000, 5_000), "2023-11-14T22:13:20.000005Z");
        assert_eq!(t(1_700_000_000, 5), "2023-11-14T22:13:20.000000005Z");
    }

    #[test]
    fn timestamps_parse_with_any_offset() {
        let parse = |s: &str| serde_json::from_value::<Timestamp>(s.into()).map(|t| t.0);
        let z = parse("2023-11-14T22:13:20Z").unwrap();
        assert_eq!(z.seconds, 1_700_000_000);
        let offset = parse("2023-11-15T00:13:20.5+02:00").unwrap();
        assert_eq!((offset.seconds, offset.nanos), (1_700_000_000, 500_000_000));
        for bad in ["", "2023-11-14", "yesterday", "2023-11-14 22:13:20"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_round_trip_in_the_mappings_form() {
        let d = |seconds, nanos| text(Duration(prost_types::Duration { seconds, nanos }));
        assert_eq!(d(60, 0), "60s");
        assert_eq!(d(1, 500_000_000), "1.500s");
        assert_eq!(d(0, 1_000), "0.000001s");
        assert_eq!(d(0, 1), "0.000000001s");
        assert_eq!(text(Duration::of(None)), "0s");
        let p = |s: &str| Duration::parse(s).map(|d| (d.seconds, d.nanos));
        assert_eq!(p("3600s"), Some((3600, 0)));
        assert_eq!(p("1.5s"), Some((1, 500_000_000)));
        assert_eq!(p("0.000000001s"), Some((0, 1)));
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
            assert_eq!(p(bad), None, "{bad:?}");
        }
    }
}
