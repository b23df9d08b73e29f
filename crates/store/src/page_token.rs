//! The opaque list cursor: the position (created_at, key_id) of the last key of a page, the
//! listing it belongs to, and the absolute cutoff of a "not used for N days" filter.
//!
//! It is hex text so clients treat it as opaque and pass it back verbatim; parsing checks every
//! part, so a forged or truncated token is a clear error, never a wrong page. A token names its
//! listing by a digest of the workspace, user and filters, so a token taken to a different
//! listing is refused instead of silently paging something else; and it carries the first
//! page's cutoff, so "not used since" means the same instant on every page.

use std::fmt;

use blake2::{Blake2b256, Digest};
use stanna_keys::KeyId;

use crate::model::{KeyFilter, Scope};

/// A position in a listing: continue with keys older than this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken {
    /// The last listed key's creation time, µs since the epoch.
    pub(crate) created_at: i64,
    /// The last listed key's id (the tie-breaker).
    pub(crate) key_id: KeyId,
    /// The listing's digest ([`listing_digest`]); `None` for a token of the first format, which
    /// carried none and is still accepted for an unfiltered listing.
    pub(crate) listing: Option<u64>,
    /// The "unused since" cutoff of the first page, µs since the epoch, if the listing has one.
    pub(crate) cutoff: Option<i64>,
}

/// The token is not one this server issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a page token returned by a previous ListKeys call")]
pub struct InvalidPageToken;

const V1: &str = "v1";
const V2: &str = "v2";

impl PageToken {
    /// Reads a token given by a client.
    ///
    /// # Errors
    /// [`InvalidPageToken`] for anything this server did not issue.
    pub fn parse(token: &str) -> Result<Self, InvalidPageToken> {
        let bytes = decode_hex(token).ok_or(InvalidPageToken)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| InvalidPageToken)?;
        let parts: Vec<&str> = text.split(':').collect();
        let (created_at, key_id, listing, cutoff) = match parts.as_slice() {
            [V1, created_at, key_id] => (*created_at, *key_id, None, None),
            [V2, created_at, key_id, listing, cutoff] => {
                let listing = u64::from_str_radix(listing, 16).map_err(|_| InvalidPageToken)?;
                let cutoff = match *cutoff {
                    "-" => None,
                    micros => Some(micros.parse::<i64>().map_err(|_| InvalidPageToken)?),
                };
                (*created_at, *key_id, Some(listing), cutoff)
            }
            _ => return Err(InvalidPageToken),
        };
        let created_at = created_at.parse::<i64>().map_err(|_| InvalidPageToken)?;
        let key_id = KeyId::parse(key_id).map_err(|_| InvalidPageToken)?;
        Ok(Self {
            created_at,
            key_id,
            listing,
            cutoff,
        })
    }

    /// Whether this token was issued for the listing of `scope` under `filter`.
    pub(crate) fn belongs_to(&self, scope: &Scope, filter: &KeyFilter) -> bool {
        match self.listing {
            Some(digest) => digest == listing_digest(scope, filter),
            // A first-format token predates filters and bound nothing: it may continue only an
            // unfiltered listing, as it always did.
            None => filter.is_empty(),
        }
    }
}

impl fmt::Display for PageToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = match self.listing {
            None => format!("{V1}:{}:{}", self.created_at, self.key_id),
            Some(listing) => format!(
                "{V2}:{}:{}:{listing:x}:{}",
                self.created_at,
                self.key_id,
                self.cutoff
                    .map_or_else(|| "-".to_owned(), |c| c.to_string()),
            ),
        };
        for b in plain.bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A 64-bit digest naming one listing: the workspace, the user (if any) and every filter. Not a
/// secret and not a MAC — a token is only a position, and a forged one shows nothing the caller
/// could not list anyway — but two different listings get the same digest with ≈2⁻⁶⁴ odds.
pub(crate) fn listing_digest(scope: &Scope, filter: &KeyFilter) -> u64 {
    let mut hasher = Blake2b256::new();
    // Each part is length-prefixed, so no two different listings encode the same bytes.
    let mut part = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    part(scope.workspace.as_str().as_bytes());
    part(scope.user.as_ref().map_or("", |u| u.as_str()).as_bytes());
    part(filter.name_contains.as_deref().unwrap_or("").as_bytes());
    part(filter.status.map_or("", |s| s.as_str()).as_bytes());
    part(&filter.unused_for_days.unwrap_or(0).to_le_bytes());
    let digest = hasher.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(out)
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 256 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use stanna_keys::{KeyStatus, WorkspaceId};

    use super::*;

    fn token(listing: Option<u64>, cutoff: Option<i64>) -> PageToken {
        PageToken {
            created_at: 1_764_220_000_123_456,
            key_id: KeyId::parse("AbCdEf012345").unwrap(),
            listing,
            cutoff,
        }
    }

    #[test]
    fn tokens_round_trip() {
        for t in [
            token(None, None),
            token(Some(0), None),
            token(Some(u64::MAX), Some(-5)),
            token(Some(0x1234), Some(1_764_220_000_000_000)),
        ] {
            assert_eq!(PageToken::parse(&t.to_string()), Ok(t));
        }
    }

    #[test]
    fn forged_tokens_are_refused() {
        let good = token(Some(7), Some(9)).to_string();
        let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
        for bad in [
            String::new(),
            "zz".to_owned(),
            "abc".to_owned(),
            good[..good.len() - 2].to_owned(),
            format!("{good}00"),
            "76323a313a32".to_owned(),
            "é1".to_owned(),
            hex("v2:1:AbCdEf012345:7"),
            hex("v2:1:AbCdEf012345:xyz:-"),
            hex("v2:1:AbCdEf012345:7:soon"),
            hex("v1:1:AbCdEf012345:7:-"),
            hex("v3:1:AbCdEf012345:7:-"),
        ] {
            assert_eq!(
                PageToken::parse(&bad),
                Err(InvalidPageToken),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn a_token_continues_only_its_own_listing() {
        let ws = |w: &str| Scope::new(WorkspaceId::parse(w).unwrap(), None);
        let named = |n: &str| KeyFilter {
            name_contains: Some(n.to_owned()),
            ..KeyFilter::default()
        };
        let listings = [
            (ws("ws1"), KeyFilter::default()),
            (ws("ws2"), KeyFilter::default()),
            (ws("ws1"), named("prod")),
            (ws("ws1"), named("pro")),
            (
                ws("ws1"),
                KeyFilter {
                    status: Some(KeyStatus::Inactive),
                    ..KeyFilter::default()
                },
            ),
            (
                ws("ws1"),
                KeyFilter {
                    unused_for_days: Some(30),
                    ..KeyFilter::default()
                },
            ),
        ];
        for (i, (scope, filter)) in listings.iter().enumerate() {
            let t = token(Some(listing_digest(scope, filter)), None);
            for (j, (other_scope, other_filter)) in listings.iter().enumerate() {
                assert_eq!(
                    t.belongs_to(other_scope, other_filter),
                    i == j,
                    "{i} vs {j}"
                );
            }
        }
        // A first-format token continues only an unfiltered listing.
        assert!(token(None, None).belongs_to(&ws("ws1"), &KeyFilter::default()));
        assert!(!token(None, None).belongs_to(&ws("ws1"), &named("a")));
    }
}
