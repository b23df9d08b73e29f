//! Dashboard sessions: the opaque token a signed-in browser holds in its cookie, and the role a
//! session carries.
//!
//! A token is `ss-` + a 16-character public session id + a 43-character secret, all base62 from
//! the OS CSPRNG (≈ 95 + 256 bits). Only its BLAKE2b-256 digest is stored: the token is random,
//! not a password, so a fast hash loses nothing (no dictionary to try) and a session check costs
//! no argon2. The id finds the row; the digest, compared in constant time, proves the secret.

use std::fmt;

use blake2::{Blake2b256, Digest};
use subtle::ConstantTimeEq;

use crate::base62;

/// What every session token starts with (never `sk-`: a session is not an API key).
pub const PREFIX: &str = "ss-";
/// Characters of the public session id.
pub const ID_LEN: usize = 16;
/// Characters of the secret.
pub const SECRET_LEN: usize = 43;
/// Characters of a whole token.
pub const TOKEN_LEN: usize = PREFIX.len() + ID_LEN + SECRET_LEN;

/// A session's public id: 16 base62 characters, safe to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId([u8; ID_LEN]);

impl SessionId {
    /// Parses a session id.
    ///
    /// # Errors
    /// [`SessionTokenError`] for anything but 16 base62 characters.
    pub fn parse(value: &str) -> Result<Self, SessionTokenError> {
        let bytes: [u8; ID_LEN] = value.as_bytes().try_into().map_err(|_| SessionTokenError)?;
        if !bytes.iter().all(|b| base62::is_digit(*b)) {
            return Err(SessionTokenError);
        }
        Ok(Self(bytes))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only base62 bytes are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A presented session token is not one of ours (the message never repeats it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a session token")]
pub struct SessionTokenError;

/// A presented session token, checked for shape only: its id and the digest of the whole token.
#[derive(Clone, Copy)]
pub struct PresentedSession {
    id: SessionId,
    digest: [u8; 32],
}

impl PresentedSession {
    /// Checks the shape of `token` (no I/O).
    ///
    /// # Errors
    /// [`SessionTokenError`] for anything but `ss-` and 59 base62 characters.
    pub fn parse(token: &str) -> Result<Self, SessionTokenError> {
        let bytes = token.as_bytes();
        if bytes.len() != TOKEN_LEN
            || !token.starts_with(PREFIX)
            || !bytes[PREFIX.len()..].iter().all(|b| base62::is_digit(*b))
        {
            return Err(SessionTokenError);
        }
        let id = SessionId::parse(&token[PREFIX.len()..PREFIX.len() + ID_LEN])?;
        Ok(Self {
            id,
            digest: digest(token),
        })
    }

    /// The public id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// BLAKE2b-256 of the whole token, as stored.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// Whether this token is the one whose digest is `stored` (constant time).
    pub fn matches(&self, stored: &[u8]) -> bool {
        bool::from(self.digest.as_slice().ct_eq(stored))
    }
}

impl fmt::Debug for PresentedSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PresentedSession({})", self.id)
    }
}

/// A new session token: shown once (in the cookie), then only its digest exists.
pub struct NewSession {
    /// The public id.
    pub id: SessionId,
    /// The whole token, for the cookie. Never logged or stored.
    pub token: String,
    /// Its digest, for the store.
    pub digest: [u8; 32],
}

impl NewSession {
    /// Draws a token from the OS CSPRNG.
    ///
    /// # Errors
    /// The OS random source failed (nothing weaker is used instead).
    pub fn generate() -> Result<Self, rand::rngs::SysError> {
        let mut bytes = [0u8; TOKEN_LEN];
        bytes[..PREFIX.len()].copy_from_slice(PREFIX.as_bytes());
        base62::fill_random(&mut bytes[PREFIX.len()..])?;
        let token = String::from_utf8(bytes.to_vec()).unwrap_or_default();
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&bytes[PREFIX.len()..PREFIX.len() + ID_LEN]);
        Ok(Self {
            id: SessionId(id),
            digest: digest(&token),
            token,
        })
    }
}

/// `bytes` as lowercase hex (digests in the store, CSRF tokens, quota subjects): the one encoder.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// BLAKE2b-256 of a token, with a context of its own so it can never collide with another use.
fn digest(token: &str) -> [u8; 32] {
    let mut hasher = Blake2b256::new();
    hasher.update(b"stanna session v1\0");
    hasher.update(token.as_bytes());
    hasher.finalize().into()
}

/// What a signed-in user may do in the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Role {
    /// Sees and manages their own keys.
    #[default]
    Member,
    /// Also sees every member's keys and may deactivate or delete them.
    Admin,
}

impl Role {
    /// `member` or `admin`, as the login token and the store spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Admin => "admin",
        }
    }

    /// Parses `member` or `admin`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "member" => Some(Self::Member),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_parses_to_its_id_and_digest() {
        let new = NewSession::generate().unwrap();
        assert_eq!(new.token.len(), TOKEN_LEN);
        let presented = PresentedSession::parse(&new.token).unwrap();
        assert_eq!(presented.id(), new.id);
        assert!(presented.matches(&new.digest));
        let other = NewSession::generate().unwrap();
        assert!(!presented.matches(&other.digest));
        assert_ne!(new.token, other.token);
    }

    #[test]
    fn anything_else_is_refused_without_echo() {
        let new = NewSession::generate().unwrap();
        let mut wrong_prefix = new.token.clone();
        wrong_prefix.replace_range(..3, "sk-");
        for bad in [
            "",
            "ss-",
            &new.token[..TOKEN_LEN - 1],
            &format!("{}a", new.token),
            &wrong_prefix,
            &format!("{}!", &new.token[..TOKEN_LEN - 1]),
        ] {
            assert!(PresentedSession::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(SessionTokenError.to_string(), "not a session token");
    }

    #[test]
    fn roles_round_trip() {
        for role in [Role::Member, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("owner"), None);
    }
}
