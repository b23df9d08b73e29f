//! The opaque list cursor: the position (created_at, key_id) of the last key of a page.
//!
//! It is hex text so clients treat it as opaque and pass it back verbatim; parsing checks every
//! part, so a forged or truncated token is a clear error, never a wrong page.

use std::fmt;

use stanna_keys::KeyId;

/// A position in a listing: continue with keys older than this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken {
    /// The last listed key's creation time, µs since the epoch.
    pub(crate) created_at: i64,
    /// The last listed key's id (the tie-breaker).
    pub(crate) key_id: KeyId,
}

/// The token is not one this server issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a page token returned by a previous ListKeys call")]
pub struct InvalidPageToken;

const VERSION: &str = "v1";

impl PageToken {
    /// Reads a token given by a client.
    ///
    /// # Errors
    /// [`InvalidPageToken`] for anything this server did not issue.
    pub fn parse(token: &str) -> Result<Self, InvalidPageToken> {
        let bytes = decode_hex(token).ok_or(InvalidPageToken)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| InvalidPageToken)?;
        let mut parts = text.split(':');
        let (Some(VERSION), Some(created_at), Some(key_id), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(InvalidPageToken);
        };
        let created_at = created_at.parse::<i64>().map_err(|_| InvalidPageToken)?;
        let key_id = KeyId::parse(key_id).map_err(|_| InvalidPageToken)?;
        Ok(Self { created_at, key_id })
    }
}

impl fmt::Display for PageToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = format!("{VERSION}:{}:{}", self.created_at, self.key_id);
        for b in plain.bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let token = PageToken {
            created_at: 1_764_220_000_123_456,
            key_id: KeyId::parse("AbCdEf012345").unwrap(),
        };
        assert_eq!(PageToken::parse(&token.to_string()), Ok(token));
    }

    #[test]
    fn forged_tokens_are_refused() {
        let good = PageToken {
            created_at: 5,
            key_id: KeyId::parse("AbCdEf012345").unwrap(),
        }
        .to_string();
        for bad in [
            "",
            "zz",
            "abc",
            &good[..good.len() - 2],
            &format!("{good}00"),
            "76323a313a32",
            "é1",
        ] {
            assert_eq!(
                PageToken::parse(bad),
                Err(InvalidPageToken),
                "{bad:?} accepted"
            );
        }
    }
}
