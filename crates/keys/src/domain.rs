//! Validated domain values. Each is built only through `parse`, which checks its invariants once;
//! raw strings do not cross crate boundaries.
//!
//! Errors here say what is wrong with the value but not which field held it: the caller knows the
//! field's name in its own protocol (`workspace_id` in gRPC, `X-Workspace-Id` in HTTP) and adds it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// An identifier is empty, too long or has a character outside `[A-Za-z0-9_-]`.
    #[error("must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'")]
    Identifier,
    /// A user id is empty, longer than 255 characters, or holds whitespace or a character outside
    /// printable ASCII.
    #[error("must be 1 to 255 printable ASCII characters without spaces")]
    UserId,
    /// A key id is not 12 base62 characters.
    #[error("must be a key id: 12 characters of 0-9, A-Z and a-z")]
    KeyId,
    /// A name is empty after trimming.
    #[error("must not be empty")]
    NameEmpty,
    /// A name is longer than [`KeyName::MAX_CHARS`] characters after trimming.
    #[error("must be at most {max} characters, got {actual}", max = KeyName::MAX_CHARS)]
    NameTooLong {
        /// Characters after trimming.
        actual: usize,
    },
    /// A name holds a control character (newline, tab, escape, …).
    #[error("must not contain control characters (found one at character {position})")]
    NameControl {
        /// 1-based position in the trimmed name.
        position: usize,
    },
    /// A name is only invisible characters (zero-width spaces, joiners, …): it would list as
    /// blank.
    #[error("must have a visible character")]
    NameInvisible,
    /// A name holds a bidirectional override, embedding or isolate control, which can make it
    /// display as something else.
    #[error("must not contain bidirectional text controls (found one at character {position})")]
    NameBidi {
        /// 1-based position in the trimmed name.
        position: usize,
    },
    /// A window's limit is out of range.
    #[error("the limit must be 1 to {max}, got {got}", max = WindowLimit::MAX_LIMIT)]
    WindowLimit {
        /// The limit given.
        got: u32,
    },
    /// A window's period is out of range or not whole milliseconds.
    #[error("the period must be whole milliseconds from 1s to 24h")]
    WindowPeriod,
    /// A `LIMIT/PERIOD` text does not parse.
    #[error("expected LIMIT/PERIOD such as 100/60s (units ms, s, m, h), got {0:?}")]
    WindowSyntax(String),
    /// Metadata is not JSON; where it breaks (never the text itself, which may be anything).
    #[error("must be a JSON object; it does not parse ({0})")]
    MetadataSyntax(String),
    /// Metadata is JSON but not an object.
    #[error("must be a JSON object, got {0}")]
    MetadataNotObject(&'static str),
    /// Metadata is longer than [`KeyMetadata::MAX_BYTES`].
    #[error("must be at most {max} bytes, got {actual}", max = KeyMetadata::MAX_BYTES)]
    MetadataTooLong {
        /// Bytes given.
        actual: usize,
    },
    /// Metadata holds an API key: a secret must not be stored where it is shown again.
    #[error("must not contain an API key (it would be stored and shown in the clear)")]
    MetadataHoldsKey,
    /// A scope name is empty, too long or has a character outside `[a-z0-9:._-]`.
    #[error("a scope must be 1 to 64 characters of a-z, 0-9, ':', '.', '_' or '-'")]
    ScopeSyntax,
    /// More scopes than [`Scopes::MAX_SCOPES`](crate::Scopes::MAX_SCOPES).
    #[error("at most {max} scopes per key, got {got}", max = crate::Scopes::MAX_SCOPES)]
    TooManyScopes {
        /// Scopes given.
        got: usize,
    },
}

/// Characters allowed in workspace and user ids.
fn is_identifier_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

fn parse_identifier(value: &str) -> Result<String, DomainError> {
    if value.is_empty() || value.len() > 64 || !value.bytes().all(is_identifier_char) {
        return Err(DomainError::Identifier);
    }
    Ok(value.to_owned())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Checks the identifier rules: 1-64 of `[A-Za-z0-9_-]`.
            ///
            /// # Errors
            /// [`DomainError::Identifier`] when the value breaks them.
            pub fn parse(value: &str) -> Result<Self, DomainError> {
                parse_identifier(value).map(Self)
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

identifier!(
    /// A workspace: the tenant a key belongs to.
    WorkspaceId
);
/// A user inside a workspace: the owner of a key. The product's own subject, so wider than a
/// workspace id: 1–255 printable ASCII characters without whitespace (`auth0|123`,
/// `alice@example.com`, `google-oauth2|1077…` all fit). The one rule for user ids, everywhere.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    /// The longest user id, in bytes (all ASCII).
    pub const MAX_LEN: usize = 255;

    /// Checks the rule: 1–255 of `!`..=`~`.
    ///
    /// # Errors
    /// [`DomainError::UserId`] when the value breaks it.
    pub fn parse(value: &str) -> Result<Self, DomainError> {
        if value.is_empty()
            || value.len() > Self::MAX_LEN
            || !value.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(DomainError::UserId);
        }
        Ok(Self(value.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Text as a case-insensitive name search compares it: Unicode lowercase (`"ÉTÉ"` → `"été"`),
/// done here rather than by the database, whose `LOWER` is ASCII-only on SQLite and follows the
/// server's locale on PostgreSQL. Stored names and search terms fold alike, so the comparison in
/// SQL is a plain substring match.
pub fn fold_for_search(text: &str) -> String {
    text.to_lowercase()
}

/// A key's human-readable name, e.g. "Production Dashboard": trimmed, 1-100 characters, no control
/// characters (they would break listings and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyName(String);

impl KeyName {
    /// The longest name allowed, in characters (not bytes).
    pub const MAX_CHARS: usize = 100;

    /// The name as name search compares it: [`fold_for_search`].
    pub fn folded(&self) -> String {
        fold_for_search(&self.0)
    }

    /// Trims `value` and checks the rules.
    ///
    /// # Errors
    /// [`DomainError::NameEmpty`], [`DomainError::NameTooLong`] or [`DomainError::NameControl`].
    pub fn parse(value: &str) -> Result<Self, DomainError> {
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(DomainError::NameEmpty);
        }
        if let Some(index) = trimmed.chars().position(char::is_control) {
            return Err(DomainError::NameControl {
                position: index + 1,
            });
        }
        if let Some(index) = trimmed.chars().position(is_bidi_control) {
            return Err(DomainError::NameBidi {
                position: index + 1,
            });
        }
        if trimmed.chars().all(is_invisible) {
            return Err(DomainError::NameInvisible);
        }
        let actual = trimmed.chars().count();
        if actual > Self::MAX_CHARS {
            return Err(DomainError::NameTooLong { actual });
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The bidirectional embedding, override and isolate controls (U+202A–U+202E, U+2066–U+2069)
/// and the Arabic letter mark: the characters of "Trojan Source" display tricks.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{061C}')
}

/// Characters that draw nothing: format characters such as zero-width spaces and joiners, word
/// joiners, the byte-order mark, soft hyphens, fillers and variation selectors. (Whitespace is
/// trimmed before this is asked.)
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2060}'..='\u{2064}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{E0000}'..='\u{E007F}'
                | '\u{E0100}'..='\u{E01EF}'
        )
}

/// A key's metadata: a JSON object chosen by its owner (a customer id, a plan), at most
/// [`KeyMetadata::MAX_BYTES`] as given, kept in compact form. Never an API key: metadata is shown
/// with the key and returned by Verify, so a secret pasted into it would be exposed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMetadata(String);

impl KeyMetadata {
    /// The longest metadata accepted, in bytes of the text given.
    pub const MAX_BYTES: usize = 1024;

    /// Checks the rules and compacts the object.
    ///
    /// # Errors
    /// [`DomainError::MetadataTooLong`], [`DomainError::MetadataSyntax`],
    /// [`DomainError::MetadataNotObject`] or [`DomainError::MetadataHoldsKey`].
    pub fn parse(value: &str) -> Result<Self, DomainError> {
        if value.len() > Self::MAX_BYTES {
            return Err(DomainError::MetadataTooLong {
                actual: value.len(),
            });
        }
        let parsed: serde_json::Value = serde_json::from_str(value).map_err(|e| {
            DomainError::MetadataSyntax(format!("line {} column {}", e.line(), e.column()))
        })?;
        let kind = match &parsed {
            serde_json::Value::Object(_) => None,
            serde_json::Value::Null => Some("null"),
            serde_json::Value::Bool(_) => Some("a boolean"),
            serde_json::Value::Number(_) => Some("a number"),
            serde_json::Value::String(_) => Some("a string"),
            serde_json::Value::Array(_) => Some("an array"),
        };
        if let Some(kind) = kind {
            return Err(DomainError::MetadataNotObject(kind));
        }
        // The check reads the parsed form, where JSON escapes are undone; what is stored is the
        // text as written minus whitespace, so numbers keep their digits (serde_json would turn
        // `1e15` into `1000000000000000.0`) and the stored text is never longer than the input.
        if holds_key(&parsed.to_string()) {
            return Err(DomainError::MetadataHoldsKey);
        }
        Ok(Self(minify(value)))
    }

    /// Stored metadata read back as it was written (it was checked when it was stored).
    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    /// The compact JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Valid JSON without the whitespace between tokens (whitespace inside strings is kept).
fn minify(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

/// Whether `text` holds a well-formed API key (prefix, length, alphabet and checksum).
fn holds_key(text: &str) -> bool {
    text.match_indices(crate::format::PREFIX).any(|(at, _)| {
        text.get(at..at + crate::format::KEY_LEN)
            .is_some_and(|candidate| crate::PresentedKey::parse(candidate).is_ok())
    })
}

/// Whether a key may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyStatus {
    /// The key verifies (unless expired).
    Active,
    /// The key is kept and listed but refused.
    Inactive,
}

impl KeyStatus {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Inactive => "inactive",
        }
    }

    /// Reads the stored form back; `None` for anything else.
    pub fn from_stored(value: &str) -> Option<Self> {
        match value {
            "active" => Some(Self::Active),
            "inactive" => Some(Self::Inactive),
            _ => None,
        }
    }
}

/// One rolling window: at most `limit` requests in any span of `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WindowLimit {
    limit: u32,
    /// Whole milliseconds (at most 24 h, 86 400 000): 8 bytes a window instead of 24 with a
    /// `Duration`, in every cached key's state.
    period_ms: u32,
}

impl WindowLimit {
    /// The largest limit of one window; it bounds the memory of an exact log (docs/quota.md).
    pub const MAX_LIMIT: u32 = 10_000;
    /// The shortest window.
    pub const MIN_PERIOD: Duration = Duration::from_secs(1);
    /// The longest window.
    pub const MAX_PERIOD: Duration = Duration::from_secs(24 * 3600);

    /// Checks the ranges: limit 1..=10 000, period 1 s..=24 h in whole milliseconds.
    ///
    /// # Errors
    /// [`DomainError::WindowLimit`] or [`DomainError::WindowPeriod`].
    pub fn new(limit: u32, period: Duration) -> Result<Self, DomainError> {
        if limit == 0 || limit > Self::MAX_LIMIT {
            return Err(DomainError::WindowLimit { got: limit });
        }
        if period < Self::MIN_PERIOD
            || period > Self::MAX_PERIOD
            || !period.subsec_nanos().is_multiple_of(1_000_000)
        {
            return Err(DomainError::WindowPeriod);
        }
        Ok(Self {
            limit,
            // Exact: a whole number of milliseconds, at most 86 400 000.
            period_ms: period.as_millis() as u32,
        })
    }

    /// Requests admitted per period.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The window's length.
    pub fn period(&self) -> Duration {
        Duration::from_millis(u64::from(self.period_ms))
    }
}

impl FromStr for WindowLimit {
    type Err = DomainError;

    /// Parses `LIMIT/PERIOD`, e.g. `100/60s`, `1000/1h`, `5/1500ms`; the period is written as
    /// [`crate::parse_duration`] reads it.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let bad = || DomainError::WindowSyntax(value.to_owned());
        let (limit, period) = value.trim().split_once('/').ok_or_else(bad)?;
        let limit: u32 = limit.trim().parse().map_err(|_| bad())?;
        let period = crate::parse_duration(period.trim()).map_err(|_| bad())?;
        Self::new(limit, period)
    }
}

impl fmt::Display for WindowLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.limit, crate::DurationText(self.period()))
    }
}

/// A key's two windows. Every key has exactly these two, named `burst` and `hourly`; an override
/// changes their limits and periods, never their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimits {
    /// The short window (default 100 per 60 s).
    pub burst: WindowLimit,
    /// The long window (default 1000 per 3600 s).
    pub hourly: WindowLimit,
}

impl RateLimits {
    /// The name of the short window.
    pub const BURST: &'static str = "burst";
    /// The name of the long window.
    pub const HOURLY: &'static str = "hourly";

    /// The product's defaults: 100 per minute, 1000 per hour.
    pub fn product_default() -> Self {
        Self {
            burst: WindowLimit {
                limit: 100,
                period_ms: 60_000,
            },
            hourly: WindowLimit {
                limit: 1000,
                period_ms: 3_600_000,
            },
        }
    }

    /// Both windows with their names, burst first.
    pub fn named(&self) -> [(&'static str, WindowLimit); 2] {
        [(Self::BURST, self.burst), (Self::HOURLY, self.hourly)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_accept_the_documented_alphabet_only() {
        assert!(WorkspaceId::parse("ws_Prod-01").is_ok());
        for good in [
            "u",
            "auth0|123",
            "alice@example.com",
            "google-oauth2|10769",
            &"u".repeat(255),
        ] {
            assert!(UserId::parse(good).is_ok(), "{good:?} refused");
        }
        for bad in ["", "a b", "a\tb", "\u{e9}", "a\u{7f}", &"u".repeat(256)] {
            assert_eq!(
                UserId::parse(bad),
                Err(DomainError::UserId),
                "{bad:?} accepted"
            );
        }
        for bad in ["", " ws", "ws/1", "ws.1", "wś", &"u".repeat(65)] {
            assert_eq!(
                WorkspaceId::parse(bad),
                Err(DomainError::Identifier),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn names_are_trimmed_and_checked() {
        assert_eq!(
            KeyName::parse("  Mobile App \t").unwrap().as_str(),
            "Mobile App"
        );
        assert_eq!(KeyName::parse("Ünïcödé ✓").unwrap().as_str(), "Ünïcödé ✓");
        assert!(
            KeyName::parse(&"é".repeat(100)).is_ok(),
            "100 two-byte characters are fine"
        );
        assert_eq!(KeyName::parse("   "), Err(DomainError::NameEmpty));
        assert_eq!(
            KeyName::parse(&"x".repeat(101)),
            Err(DomainError::NameTooLong { actual: 101 })
        );
        assert_eq!(
            KeyName::parse("a\nb"),
            Err(DomainError::NameControl { position: 2 })
        );
        assert_eq!(
            KeyName::parse("ab\u{1b}[31m"),
            Err(DomainError::NameControl { position: 3 })
        );
        assert_eq!(
            KeyName::parse("\u{200B}\u{200D}\u{FEFF}"),
            Err(DomainError::NameInvisible),
            "only zero-width characters"
        );
        assert_eq!(
            KeyName::parse("prod\u{202E}gnp.exe"),
            Err(DomainError::NameBidi { position: 5 })
        );
        assert!(
            KeyName::parse("👩\u{200D}💻 team").is_ok(),
            "a joiner inside visible text is fine"
        );
    }

    #[test]
    fn window_limits_parse_limit_slash_period() {
        let parsed: WindowLimit = "100/60s".parse().unwrap();
        assert_eq!(
            (parsed.limit(), parsed.period()),
            (100, Duration::from_secs(60))
        );
        let parsed: WindowLimit = "1000/1h".parse().unwrap();
        assert_eq!(parsed.period(), Duration::from_secs(3600));
        let parsed: WindowLimit = "5/1500ms".parse().unwrap();
        assert_eq!(parsed.to_string(), "5/1500ms");
        assert_eq!(
            "12/10m".parse::<WindowLimit>().unwrap().to_string(),
            "12/600s"
        );
        for bad in [
            "",
            "100",
            "100/",
            "/60s",
            "0/60s",
            "10001/60s",
            "100/60",
            "100/60x",
            "100/0s",
            "100/25h",
            "100/999ms",
            "-1/60s",
        ] {
            assert!(bad.parse::<WindowLimit>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn metadata_is_a_compact_json_object_of_at_most_1024_bytes() {
        let m = KeyMetadata::parse(
            "{ \"plan\" : \"pro plus\",\n \"seats\": [1, 2e15], \"q\": \"a\\\" b\" }",
        )
        .unwrap();
        assert_eq!(
            m.as_str(),
            r#"{"plan":"pro plus","seats":[1,2e15],"q":"a\" b"}"#
        );
        assert_eq!(KeyMetadata::parse("{}").unwrap().as_str(), "{}");
        let padded = format!("{{\"a\":\"{}\"}}", "x".repeat(1024 - 8));
        assert_eq!(padded.len(), 1024);
        assert!(KeyMetadata::parse(&padded).is_ok());
        let over = format!("{{\"a\":\"{}\"}}", "x".repeat(1024 - 7));
        assert_eq!(
            KeyMetadata::parse(&over),
            Err(DomainError::MetadataTooLong { actual: 1025 })
        );
        for (bad, kind) in [
            ("null", "null"),
            ("true", "a boolean"),
            ("3", "a number"),
            ("\"x\"", "a string"),
            ("[]", "an array"),
        ] {
            assert_eq!(
                KeyMetadata::parse(bad),
                Err(DomainError::MetadataNotObject(kind))
            );
        }
        for bad in ["", "{", "{\"a\":}", "{\"a\":1} x"] {
            assert!(
                matches!(KeyMetadata::parse(bad), Err(DomainError::MetadataSyntax(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn metadata_never_holds_an_api_key_even_escaped() {
        let key = crate::GeneratedKey::generate().unwrap().into_secret();
        let plain = format!(r#"{{"note":"{key}"}}"#);
        assert_eq!(
            KeyMetadata::parse(&plain),
            Err(DomainError::MetadataHoldsKey)
        );
        // JSON escapes are undone before the check: \u0073 is "s".
        let escaped = format!(r#"{{"note":"x\u0073{}"}}"#, &key[1..]);
        assert_eq!(
            KeyMetadata::parse(&escaped),
            Err(DomainError::MetadataHoldsKey)
        );
        // Something key-shaped whose checksum does not match is only text.
        let mut near = key.clone().into_bytes();
        near[10] = if near[10] == b'a' { b'b' } else { b'a' };
        let near = String::from_utf8(near).unwrap();
        assert!(KeyMetadata::parse(&format!(r#"{{"note":"{near}"}}"#)).is_ok());
    }
}
