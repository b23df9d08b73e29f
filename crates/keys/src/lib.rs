//! The API key and the domain values around it, with no I/O.
//!
//! A key looks like `sk-` + 12-character key id + 32-character secret + 6-character checksum, all
//! base62 (`0-9A-Za-z`), 53 characters in all (docs/keys.md). The key id is public (it appears in
//! previews and URLs); the secret carries ≈190 bits from the OS CSPRNG; the checksum is CRC32 (IEEE)
//! of everything before it, so a mistyped, truncated or made-up key is refused before any I/O.
//!
//! - [`format`]: [`GeneratedKey::generate`], [`PresentedKey::parse`] with a typed
//!   [`MalformedKey`] error, the preview.
//! - [`hash`]: argon2id hashing and constant-time verification of a whole key.
//! - [`domain`]: the validated newtypes that cross crate boundaries ([`WorkspaceId`], [`UserId`],
//!   [`KeyName`], [`WindowLimit`]); [`KeyId`] has its own module, [`key_id`].
//! - [`duration`]: the one text form of durations in settings and limits (`250ms`, `5s`).
//! - [`time`]: the injected [`Clock`] and counts since the epoch.
//! - [`scopes`]: what a key may do ([`Scopes`]; none = the user's full permissions).
//! - [`session`]: dashboard session tokens and roles; [`login`]: the product's login token (JWT).

mod base62;
pub mod domain;
pub mod duration;
pub mod format;
pub mod hash;
pub mod key_id;
pub mod login;
pub mod scopes;
pub mod session;
pub mod time;

pub use domain::{
    DomainError, KeyMetadata, KeyName, KeyStatus, RateLimits, UserId, WindowLimit, WorkspaceId,
    fold_for_search,
};
pub use duration::{DurationSyntax, DurationText, parse_duration};
pub use format::{GeneratedKey, MalformedKey, PresentedKey, preview_of};
pub use hash::{HashError, HashParams, KeyHasher};
pub use key_id::KeyId;
pub use scopes::{Scopes, ScopesError};
pub use session::{NewSession, PresentedSession, Role, SessionId, to_hex};
pub use time::{Clock, system_clock};
